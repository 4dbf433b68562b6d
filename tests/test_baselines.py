"""The eGeMAPS + linear SVM reference rows, per-speaker z-scoring, the p-value column and
the seeds summary (issue 14)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from keras_ser import baselines, experiment
from keras_ser.experiment import Metric
from keras_ser.folds import Fold

EMODB_CODES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "N": "neutral", "T": "sadness"}
CLASSES = sorted(EMODB_CODES.values())

#: The hand-run pipeline, in its own interpreter: openSMILE reads the released WAV files,
#: scikit-learn's StandardScaler, SVC and recall_score do the rest. Nothing of keras_ser.
HAND_RUN = r"""
import json, os, sys
import numpy as np
import opensmile
from sklearn.metrics import recall_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

wav, folds, grid, codes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), \
    json.loads(sys.argv[4])
smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                        feature_level=opensmile.FeatureLevel.Functionals)
names = sorted(f[:-4] for f in os.listdir(wav) if f.endswith(".wav"))
x = np.vstack([smile.process_file(os.path.join(wav, n + ".wav")).to_numpy() for n in names])
classes = sorted(codes.values())
y = np.array([classes.index(codes[n[5]]) for n in names])
speaker = np.array([n[:2] for n in names])
out = {}
for fold in folds:
    part = {p: np.isin(speaker, fold[p]) for p in ("train", "validation", "test")}
    for how in ("global", "speaker"):
        if how == "global":
            z = StandardScaler().fit(x[part["train"]]).transform(x)
        else:
            z = np.empty_like(x)
            for s in np.unique(speaker):
                z[speaker == s] = StandardScaler().fit_transform(x[speaker == s])
        best, best_ua = None, -1.0
        for c in grid:
            svm = SVC(kernel="linear", C=c, class_weight="balanced")
            svm.fit(z[part["train"]], y[part["train"]])
            ua = recall_score(y[part["validation"]], svm.predict(z[part["validation"]]),
                              average="macro")
            if ua > best_ua:
                best, best_ua = c, ua
        svm = SVC(kernel="linear", C=best, class_weight="balanced")
        svm.fit(z[part["train"]], y[part["train"]])
        pred = svm.predict(z[part["test"]])
        out[f"{fold['name']}/{how}"] = {"c": best, "predictions": dict(
            zip([str(n) for n in np.array(names)[part["test"]]], [int(p) for p in pred]))}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.real_data
def test_baseline_reproduces_a_hand_run_opensmile_sklearn_pipeline(emodb_records, shared_data,
                                                                     tmp_path):
    """Two EmoDB speakers held out (03, then 08): the same C and the same prediction for
    every test utterance as openSMILE + scikit-learn run by hand on the WAV files."""
    pytest.importorskip("opensmile")
    from keras_ser import data

    records, _ = emodb_records
    speakers = sorted({f[:2] for f in os.listdir(os.path.join(shared_data, "emodb", "wav"))})
    folds = [Fold(f"test-{t}", [s for s in speakers if s not in (t, v)], [v], [t])
             for t, v in (("03", "08"), ("08", "09"))]
    utterances = data.Utterances(records, classes=CLASSES)
    cache = str(tmp_path / "egemaps.npz")
    results = baselines.run(str(tmp_path / "run"), utterances, folds, CLASSES, cache=cache)
    hand = subprocess.run(
        [sys.executable, "-c", HAND_RUN, os.path.join(shared_data, "emodb", "wav"),
         json.dumps([f.to_dict() for f in folds]), json.dumps(list(baselines.C_GRID)),
         json.dumps(EMODB_CODES)], capture_output=True, text=True, timeout=900, check=False)
    assert hand.returncode == 0, hand.stderr[-2000:]
    expected = json.loads(hand.stdout)
    assert len(results) == 4
    for r in results:
        want = expected[f"{r['fold']}/{r['normalisation']}"]
        got = dict(zip(r["utterance_ids"], r["predictions"]))
        assert r["c"] == want["c"]
        assert got == want["predictions"]
        assert len(got) > 40  # each EmoDB speaker has 35-71 utterances
        truth = np.array([CLASSES.index(EMODB_CODES[u[5]]) for u in r["utterance_ids"]])
        assert r["test"]["wa"] == pytest.approx(np.mean(truth == np.array(r["predictions"])))
    # Per-speaker z-scoring helps on EmoDB (the reason it is the usual practice there).
    ua = {(r["fold"], r["normalisation"]): r["test"]["ua"] for r in results}
    assert ua[("test-03", "speaker")] > ua[("test-03", "global")]
    # The cache holds every utterance; a second call reads it instead of openSMILE.
    with np.load(cache) as z:
        assert len(z["ids"]) == len(utterances) and z["features"].shape == (len(utterances), 88)
    again = baselines.cached_egemaps(utterances, cache)
    assert np.array_equal(again, baselines.cached_egemaps(utterances, cache))


def test_per_speaker_zscore_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 3.0, (30, 4))
    x[:, 3] = 7.0  # constant feature: centred only
    speakers = np.array(["a"] * 10 + ["b"] * 12 + ["c"] * 8)
    rng.shuffle(speakers)
    got = baselines.zscore_per_speaker(x, speakers)
    for s in "abc":
        rows = x[speakers == s]
        want = (rows - rows.mean(axis=0)) / np.where(rows.std(axis=0) > 0, rows.std(axis=0), 1)
        np.testing.assert_allclose(got[speakers == s], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[speakers == s][:, :3].std(axis=0), 1.0, rtol=1e-12)
    train = np.arange(0, 30, 2)
    glob = baselines.zscore_global(x, train)
    np.testing.assert_allclose(glob[:, :3], (x[:, :3] - x[train, :3].mean(0)) / x[train, :3].std(0))
    with pytest.raises(ValueError, match="global' or 'speaker"):
        baselines.normalise(x, speakers, train, "session")


def test_choose_c_prefers_validation_ua_then_the_smaller_c():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (40, 3)), rng.normal(1, 1, (40, 3))])
    y = np.repeat([0, 1], 40)
    c, scores = baselines.choose_c(x[::2], y[::2], x[1::2], y[1::2], grid=(0.01, 1.0, 100.0))
    assert set(scores) == {0.01, 1.0, 100.0}
    assert scores[c] == max(scores.values())
    assert c == min(k for k, v in scores.items() if v == max(scores.values()))
    # Without validation rows: grouped 3-fold cross-validation on the training rows.
    c2, scores2 = baselines.choose_c(x, y, groups=np.arange(80) % 4, grid=(0.01, 1.0))
    assert c2 in (0.01, 1.0) and all(0.5 < v <= 1.0 for v in scores2.values())


def _entries(values: dict) -> list:
    return [{"row": row, "fold": f"f{k}", "repeat": r, "test": {"ua": v}}
            for row, runs in values.items() for r, folds in enumerate(runs)
            for k, v in enumerate(folds)]


def test_p_value_column_equals_scipy_wilcoxon(tmp_path, capsys):
    """The table's p column against the reference row is scipy's Wilcoxon signed-rank
    p-value on the per-fold differences (networks averaged over their seeds)."""
    reference = [0.70, 0.62, 0.81, 0.55, 0.66, 0.74, 0.59]
    net = [[0.61, 0.64, 0.70, 0.50, 0.60, 0.69, 0.52], [0.63, 0.58, 0.72, 0.54, 0.58, 0.71, 0.50]]
    base = experiment.Reference(["egemaps_global"], _entries({"egemaps_global": [reference]}),
                                "egemaps_global")
    entries = _entries({"cnn": net})
    summary = experiment.write_results(
        str(tmp_path), title="t", header=["h"], entries=entries, rows=["cnn"],
        row_titles={"cnn": "CNN"}, columns=[Metric("ua", "UA")], main=Metric("ua", "UA"),
        folds=entries, smoke=False, started=0.0, baseline=base)
    mean_net = np.mean(net, axis=0)
    p = stats.wilcoxon(mean_net - np.array(reference)).pvalue
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["rows"] == ["egemaps_global", "cnn"] and doc["reference"] == "egemaps_global"
    assert doc["paired_tests_vs_reference"]["cnn"]["p_value"] == pytest.approx(p, abs=1e-15)
    table = (tmp_path / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| CNN |"))
    assert row.split("|")[-2].strip() == f"{p:.3f}"
    assert "p vs reference" in table and baselines.TITLES["egemaps_global"] in table
    # Seeds: std over folds of the seed means, and over seeds of the fold means.
    assert summary["cnn"]["ua"]["std"] == pytest.approx(np.std(mean_net))
    assert summary["cnn"]["ua"]["std_seeds"] == pytest.approx(np.std(np.mean(net, axis=1)))
    assert summary["cnn"]["ua"]["mean"] == pytest.approx(np.mean(net))
    assert "(seeds ± " in row


def test_baseline_rows_are_off_for_the_smoke_corpus_and_need_opensmile(tmp_path, monkeypatch):
    import argparse

    corpus = experiment.Corpus("smoke", str(tmp_path), {}, [], True)
    args = argparse.Namespace(baseline="auto", seed=0)
    assert experiment.baseline_rows(args, corpus, [], str(tmp_path)).rows == []
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import fails
    args.baseline = "egemaps"
    with pytest.raises(experiment.BadInput, match="pip install opensmile"):
        experiment.baseline_rows(args, corpus, [], str(tmp_path))


def test_bad_waveform_is_refused_with_its_index():
    with pytest.raises(ValueError, match="waveform 1 has shape"):
        baselines.egemaps([np.zeros(1600, np.int16), np.zeros((2, 5))], progress=False)


def test_per_speaker_log_mel_normalisation_in_the_pipeline_matches_numpy(tmp_path):
    """``normalise="zscore_speaker"``: each record's log-mels z-scored with its speaker's
    statistics, computed (as `crnn.speaker_statistics` does) over all of that speaker's
    valid frames; equals numpy on the unnormalised features."""
    from keras_ser import data
    from keras_ser.protocols import crnn
    from tfrecords_tools import smoke

    records = smoke.smoke_records(str(tmp_path))
    speakers = ["f01", "m02"]
    own = crnn.speaker_statistics(records, speakers, "etienne")

    def batches(**kw):
        ds = data.make_dataset(records, speakers=speakers, features="etienne", batch_size=8,
                               keep=("speaker",), **kw)
        return [{k: v.numpy() for k, v in b.items()} for b in ds]

    raw = batches()
    normed = batches(normalise="zscore_speaker", stats={"speakers": own})
    frames = {s: [] for s in speakers}
    for b in raw:
        for x, n, s in zip(b["features"], b["length"], b["speaker"]):
            frames[s.decode()].append(x[:n])
    for s in speakers:
        values = np.concatenate(frames[s]).astype(np.float64)
        assert own[s]["mean"] == pytest.approx(values.mean(), rel=1e-4)
        assert own[s]["std"] == pytest.approx(values.std(), rel=1e-4)
    checked = 0
    for a, b in zip(raw, normed):
        for x, y, n, s in zip(a["features"], b["features"], a["length"], a["speaker"]):
            st = own[s.decode()]
            np.testing.assert_allclose(y[:n], (x[:n] - st["mean"]) / st["std"], rtol=1e-5,
                                       atol=1e-5)
            checked += 1
    assert checked == sum(len(f) for f in frames.values()) > 4
    with pytest.raises(Exception, match="no per-speaker statistics"):
        batches(normalise="zscore_speaker", stats={"speakers": {"f01": own["f01"]}})


@pytest.mark.slow
def test_recipe_gets_reference_rows_on_its_own_folds_and_utterances(tmp_path):
    """``--baseline egemaps --speaker-norm`` on a recipe: the two rows first, on the very
    test utterances the networks were scored on, the p column against the per-speaker
    row (the networks' normalisation), and the export taken from a network row, with the
    speakers' statistics in its metadata and the training speakers' in its front end."""
    pytest.importorskip("opensmile")
    from helpers import load_recipe

    out = str(tmp_path / "crnn")
    recipe = load_recipe("crnn_vtlp")
    assert recipe.main(["--baseline", "egemaps", "--speaker-norm", "--variants", "conv_bn",
                        "--max-epochs", "1", "--verbose", "0", "--out", out]) == 0
    doc = json.loads(Path(os.path.join(out, "results.json")).read_text(encoding="utf-8"))
    assert doc["rows"] == ["egemaps_global", "egemaps_speaker", "conv_bn"]
    assert doc["reference"] == "egemaps_speaker"
    for fold in ("test-f01", "test-f03"):
        with np.load(os.path.join(out, "runs", "conv_bn", fold, "predictions.npz")) as z:
            network_ids = sorted(z["utterance_id"].tolist())
        for row in baselines.ROWS:
            result = json.loads(Path(out, "runs", row, fold, "result.json").read_text(
                encoding="utf-8"))
            assert sorted(result["utterance_ids"]) == network_ids
            assert result["c"] in baselines.C_GRID
    table = Path(os.path.join(out, "results.md")).read_text(encoding="utf-8")
    assert baselines.TITLES["egemaps_speaker"] in table and "p vs reference" in table
    meta = json.loads(Path(out, "export", "crnn", "1", "keras_ser.json").read_text(
        encoding="utf-8"))
    assert meta["extra"]["variant"] == "conv_bn" and meta["extra"]["normalisation"] == "speaker"
    fold = json.loads(Path(out, "runs", "conv_bn", meta["extra"]["fold"], "result.json")
                      .read_text(encoding="utf-8"))
    assert meta["extra"]["speaker_statistics"] == fold["speaker_statistics"]
    assert sorted(fold["speaker_statistics"]) == sorted(
        fold["train_speakers"] + fold["validation_speakers"] + fold["test_speakers"])
    assert meta["front_end"]["statistics"] == pytest.approx(fold["normalisation"])
    assert os.path.isfile(baselines.cache_path(os.path.join(out, "smoke", "records")))
    # The export takes the speaker's statistics: with the test speaker's it gives that
    # fold's test predictions; without them it falls back to the training speakers'.
    from keras_ser import data
    from keras_ser.serving import predict

    assert meta["front_end"]["speaker_norm"] is True
    exported = predict.load(os.path.join(out, "export"))
    [speaker] = fold["test_speakers"]
    given = predict.resolve_speaker(exported.metadata, speaker)
    utterances = data.Utterances(os.path.join(out, "smoke", "records"), fold["classes"])
    with np.load(os.path.join(out, "runs", "conv_bn", fold["fold"], "predictions.npz")) as z:
        ids, expected = z["utterance_id"].tolist(), z["probabilities"]
    wave = utterances.waveforms[utterances.ids.index(ids[0])].astype(np.float32)[None] / 32768
    probs, _, _ = exported.classify(wave, given)
    np.testing.assert_allclose(probs[0], expected[0], atol=1e-4)
    fallback, _, _ = exported.classify(wave)
    assert np.abs(fallback[0] - expected[0]).max() > 1e-4
