"""recipes/speaker_adversarial.py (Tu et al. 2019) end to end, and its protocol's parts.

Pinned numbers come from the seeded TINY run on this machine (the recipe is
deterministic; compared to 1e-6). They only say the pipeline is unchanged.
"""

import json
import os

import keras
import numpy as np
import pytest
import scipy.stats
from helpers import assert_export_matches_reported, load_recipe, write_iemocap_release

from keras_ser import experiment
from keras_ser.protocols import adversarial as protocol


def _recipe():
    return load_recipe("speaker_adversarial")


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


TINY = ["--folds", "2", "--max-epochs", "2", "--verbose", "0"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tu") / "run")
    recipe = _recipe()
    assert recipe.main(TINY + ["--out", out]) == 0
    return recipe, out


#: Test accuracy per (variant, fold) of the TINY run (seed 0).
PINNED = {"ser_only/test-f01": 0.3, "ser_only/test-f03": 0.425, "mtl/test-f01": 0.35,
          "mtl/test-f03": 0.4, "dat/test-f01": 0.35, "dat/test-f03": 0.5,
          "cgt/test-f01": 0.25, "cgt/test-f03": 0.425}


@pytest.mark.slow
def test_smoke_run_writes_the_four_variant_table_probe_and_paired_tests(smoke_run):
    _, out = smoke_run
    doc = _json(os.path.join(out, "results.json"))
    assert doc["rows"] == ["ser_only", "mtl", "dat", "cgt"] and doc["repeats"] == 1
    assert doc["protocol"] == "loso-speaker"
    for r in doc["folds"]:
        assert r["epochs"] == 2 and r["best_epoch"] in (1, 2)
        assert r["config"]["strategy"] == r["row"]
        # Speaker labels: the fold's training speakers only.
        assert r["model_config"]["num_speakers"] == len(r["train_speakers"])
        assert not set(r["train_speakers"]) & set(r["test_speakers"] + r["validation_speakers"])
        conf = np.array(r["test"]["confusion"])
        assert conf.sum() == r["test"]["n"]
        assert r["test"]["wa"] == pytest.approx(np.trace(conf) / conf.sum())
        assert 0.0 <= r["test"]["speaker_probe"] <= 1.0
        assert r["test"]["speaker_probe_chance"] == pytest.approx(0.5)
        assert r["test"]["validation_wa"] == r["validation"]["wa"]
        assert len(r["normalisation"]["mean"]) == 39
        run = os.path.join(out, "runs", r["row"], r["fold"])
        assert os.path.getsize(os.path.join(run, "tsne.png")) > 1000
        emb = np.load(os.path.join(run, "embeddings.npz"))
        assert emb["embedding"].shape[1] == 512
        assert set(emb["speaker"]) == set(r["test_speakers"] + r["validation_speakers"])
    got = {f"{r['row']}/{r['fold']}": r["test"]["wa"] for r in doc["folds"]}
    assert got == pytest.approx(PINNED, abs=1e-6)
    tests = doc["paired_tests_vs_ser_only"]["wa"]
    assert set(tests) == {"mtl", "dat", "cgt"} and all(t["folds"] == 2 for t in tests.values())
    with open(os.path.join(out, "results.md"), encoding="utf-8") as f:
        text = f.read()
    assert "SER_SR_DAT" in text and "Speaker probe accuracy" in text
    assert "against SER_only (paired over folds)" in text and "SMOKE-TEST" in text


@pytest.mark.slow
def test_export_takes_waveforms_and_gives_the_reported_scores(smoke_run):
    _, out = smoke_run
    meta = _json(os.path.join(out, "export", "speaker_adversarial", "1", "keras_ser.json"))
    row, fold = meta["extra"]["variant"], meta["extra"]["fold"]
    result = _json(os.path.join(out, "runs", row, fold, "result.json"))
    assert meta["front_end"]["features"] == "tu" and meta["front_end"]["normalise"] == "zscore"
    count = assert_export_matches_reported(out, os.path.join(out, "smoke", "records"),
                                           os.path.join(out, "runs", row, fold,
                                                        "predictions.npz"),
                                           result["test"], score_key="wa")
    assert count == result["test"]["n"]


@pytest.mark.slow
def test_speaker_norm_normalises_each_speaker_with_its_own_statistics(tmp_path):
    """``--speaker-norm``: speaker CMVN per dimension (each speaker's own voiced-frame
    statistics, test speaker included), the per-speaker reference row, and an export
    whose ``serve_speaker`` signature reproduces the fold's test predictions with the
    recorded statistics of the test speaker, and with statistics estimated from the
    test speaker's own files."""
    from keras_ser import data

    out = str(tmp_path / "run")
    assert _recipe().main(["--folds", "1", "--variants", "ser_only", "--max-epochs", "1",
                           "--speaker-norm", "--baseline", "none", "--verbose", "0",
                           "--out", out]) == 0
    result = _json(os.path.join(out, "runs", "ser_only", "test-f01", "result.json"))
    own = result["speaker_statistics"]
    assert sorted(own) == sorted(result["train_speakers"] + result["validation_speakers"]
                                 + result["test_speakers"])
    records = os.path.join(out, "smoke", "records")
    utterances = data.Utterances(records)
    bank = protocol.FeatureBank(utterances)
    [test] = result["test_speakers"]
    frames = np.concatenate([bank.arrays[i] for i in utterances.indices([test])])
    np.testing.assert_allclose(own[test]["mean"], frames.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(own[test]["std"], frames.std(axis=0), rtol=1e-5, atol=1e-6)
    assert np.abs(np.array(own[test]["mean"]) - np.array(result["normalisation"]["mean"])
                  ).max() > 0.1  # the speaker's own differ from the pooled ones
    meta = _json(os.path.join(out, "export", "speaker_adversarial", "1", "keras_ser.json"))
    assert meta["speaker_inputs"]["shape"] == ["batch", 39]
    assert meta["extra"]["speaker_statistics"] == own
    predictions = os.path.join(out, "runs", "ser_only", "test-f01", "predictions.npz")
    for speaker in (test, "files"):
        assert assert_export_matches_reported(out, records, predictions, result["test"],
                                              score_key="wa", speaker=speaker, atol=1e-4) \
            == result["test"]["n"]
    config = _json(os.path.join(out, "config.json"))
    assert config["variants"]["ser_only"]["speaker_norm"] is True


@pytest.mark.slow
def test_rerun_reads_finished_folds_back(smoke_run):
    recipe, out = smoke_run
    result = os.path.join(out, "runs", "dat", "test-f01", "result.json")
    stamp = os.path.getmtime(result)
    before = _json(os.path.join(out, "results.json"))
    assert recipe.main(TINY + ["--out", out, "--no-export"]) == 0
    assert os.path.getmtime(result) == stamp
    assert _json(os.path.join(out, "results.json")) == before


@pytest.mark.slow
def test_repeats_and_search(tmp_path):
    """``--repeats 2`` trains each fold twice with different seeds and summarises over
    both; ``--search 2`` draws λ by KerasTuner and trains the row with the best one."""
    out = str(tmp_path / "run")
    assert _recipe().main(["--folds", "1", "--variants", "ser_only,dat", "--repeats", "2",
                           "--search", "2", "--max-epochs", "1", "--verbose", "0",
                           "--no-export", "--out", out]) == 0
    doc = _json(os.path.join(out, "results.json"))
    assert [(r["row"], r["repeat"]) for r in doc["folds"]] == [
        ("ser_only", 0), ("dat", 0), ("ser_only", 1), ("dat", 1)]
    assert os.path.isfile(os.path.join(out, "runs", "dat", "test-f01-run2", "result.json"))
    assert doc["summary"]["dat"]["wa"]["folds"] == [doc["folds"][1]["test"]["wa"],
                                                    doc["folds"][3]["test"]["wa"]]
    best = _json(os.path.join(out, "search", "dat", "best.json"))
    assert best["trials"] == 2
    low, high = protocol.SEARCH_SPACE["grl_lambda"]
    assert low <= best["hyperparameters"]["grl_lambda"] <= high
    assert doc["folds"][1]["config"]["grl_lambda"] == best["hyperparameters"]["grl_lambda"]
    assert not os.path.exists(os.path.join(out, "search", "ser_only"))


@pytest.mark.slow
def test_iemocap_fold_rule_improvised_only_excitement_merged(tmp_path):
    """IEMOCAP: one fold per session (female validates, male tests; ``--swap`` adds the
    other order), improvised turns only, excitement counted as happiness, four classes."""
    data = write_iemocap_release(str(tmp_path / "corpus"),
                                 improvised=("neu", "hap", "exc", "ang", "sad", "fru"),
                                 seconds=0.6)
    out = str(tmp_path / "run")
    assert _recipe().main(["--corpus", "iemocap", "--data", data, "--baseline", "none", "--out", out,
                           "--variants", "ser_only", "--max-epochs", "1", "--verbose", "0",
                           "--no-export"]) == 0
    config = _json(os.path.join(out, "config.json"))
    assert config["classes"] == ["happiness", "sadness", "anger", "neutral"]
    assert config["protocol"] == "loso-session"
    folds = _json(os.path.join(out, "folds.json"))["folds"]
    assert [(f["train"], f["validation"], f["test"]) for f in folds] == [
        (["Ses02F", "Ses02M"], ["Ses01F"], ["Ses01M"]),
        (["Ses01F", "Ses01M"], ["Ses02F"], ["Ses02M"])]
    doc = _json(os.path.join(out, "results.json"))
    for fold in doc["folds"]:
        # 5 improvised turns per speaker: neu, hap, exc (as happiness), ang, sad; no fru,
        # no scripted turn.
        assert fold["test"]["n"] == 5 and fold["validation"]["n"] == 5
        assert np.array(fold["test"]["confusion"]).sum(axis=1).tolist() == [2, 1, 1, 1]
        assert fold["model_config"]["num_speakers"] == 2
    swapped = str(tmp_path / "swap")
    assert _recipe().main(["--corpus", "iemocap", "--data", data, "--out", swapped,
                           "--baseline", "none", "--swap", "--folds", "1", "--variants", "ser_only",
                           "--max-epochs", "1", "--verbose", "0", "--no-export"]) == 0
    pairs = [(f["validation"][0], f["test"][0])
             for f in _json(os.path.join(swapped, "folds.json"))["folds"]]
    assert pairs == [("Ses01F", "Ses01M"), ("Ses01M", "Ses01F"),
                     ("Ses02F", "Ses02M"), ("Ses02M", "Ses02F")]


@pytest.mark.parametrize("argv", [
    ["--variants", "adversarial"],
    ["--repeats", "0"],
    ["--folds", "zz9"],
    ["--data", "somewhere"],
    ["--classes", "anger,joy"],
])
def test_bad_options_exit_with_status_2(tmp_path, argv, capsys):
    assert _recipe().main(argv + ["--out", str(tmp_path / "run"), "--verbose", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def test_speaker_probe_separable_versus_random_embeddings():
    rng = np.random.default_rng(0)
    speakers = np.repeat(["a", "b", "c"], 20)
    centres = {"a": 0.0, "b": 5.0, "c": -5.0}
    separable = rng.normal(size=(60, 8)) + np.array([centres[s] for s in speakers])[:, None]
    assert protocol.speaker_probe(separable, speakers)["accuracy"] == 1.0
    noise = protocol.speaker_probe(rng.normal(size=(60, 8)), speakers)
    assert noise["chance"] == pytest.approx(1 / 3) and noise["accuracy"] < 0.6
    with pytest.raises(ValueError, match="2 speakers"):
        protocol.speaker_probe(separable[:5], ["a"] * 5)


def test_paired_tests_average_repeats_and_match_scipy():
    """Per fold, repeats are averaged; the p-value is scipy's Wilcoxon on the differences."""
    base = [0.50, 0.60, 0.55, 0.70, 0.40, 0.65]
    gain = [0.10, 0.05, -0.02, 0.08, 0.12, 0.03]
    entries = []
    for k, (b, g) in enumerate(zip(base, gain)):
        entries.append({"row": "ser_only", "fold": f"f{k}", "test": {"wa": b}})
        # Two repeats of the DAT row whose mean is b + g.
        for shift in (-0.01, 0.01):
            entries.append({"row": "dat", "fold": f"f{k}", "test": {"wa": b + g + shift}})
    tests = experiment.paired_tests(entries, ["ser_only", "dat"], "ser_only", "wa")
    t = tests["dat"]
    assert t["folds"] == 6 and (t["wins"], t["losses"]) == (5, 1)
    assert t["mean_difference"] == pytest.approx(np.mean(gain))
    assert t["std_difference"] == pytest.approx(np.std(gain))
    assert t["p_value"] == pytest.approx(scipy.stats.wilcoxon(gain).pvalue)
    md = experiment.paired_tests_markdown(tests, "SER_only", experiment.Metric("wa", "Acc"),
                                          {"dat": "SER_SR_DAT"})
    assert f"| SER_SR_DAT | 6 | {100 * np.mean(gain):+.1f} ± {100 * np.std(gain):.1f} | 5 / 1" \
        in md


@pytest.mark.slow
def test_interrupted_fold_resumes_to_the_same_history(tmp_path, monkeypatch):
    """A DAT fold interrupted after epoch 1 of 2 and run again ends with the history (losses,
    validation accuracy, λ of the Ganin schedule) of a fold run without interruption."""
    from keras_ser import data
    from keras_ser.folds import Fold
    from keras_ser.models import xvector
    from keras_ser.training import resumable
    from tfrecords_tools import smoke

    records = smoke.smoke_records(str(tmp_path))
    classes = ["anger", "happiness", "neutral", "sadness"]
    utterances = data.Utterances(records, classes=classes)
    bank = protocol.FeatureBank(utterances)
    fold = Fold("test-f01", ["m02", "m04"], ["f03"], ["f01"])
    net = xvector.get_config("cpu")
    config = protocol.TrainConfig(strategy="dat", max_epochs=2, batch_size=8, seed=3)

    def run(folder):
        keras.utils.set_random_seed(11)
        return protocol.train_fold(net, config, fold, classes, folder, utterances=utterances,
                                   bank=bank, verbose=0, evaluate=False)

    class Interrupt(resumable.LambdaLogs):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    once = run(whole)
    with monkeypatch.context() as patch:
        patch.setattr(protocol, "LambdaLogs", Interrupt)
        with pytest.raises(KeyboardInterrupt):
            run(split)
    assert len(resumable.read_state(os.path.join(split, "ckpt"))["history"]) == 1
    resumed = run(split)
    history = resumable.read_state(os.path.join(split, "ckpt"))["history"]
    reference = resumable.read_state(os.path.join(whole, "ckpt"))["history"]
    # Equal up to float32 rounding: on one CI run the logged total loss of epoch 2 differed
    # in its last bit (2.2295020 vs 2.2295022) while both of its terms were identical.
    assert len(history) == len(reference) == 2
    for ours, theirs in zip(history, reference):
        assert ours.keys() == theirs.keys()
        assert ours == pytest.approx(theirs, rel=1e-6, abs=0)
    assert resumed["validation"] == once["validation"]
    lambdas = [h["grl_lambda"] for h in history]
    assert 0.0 < lambdas[0] < lambdas[1] <= config.grl_lambda
