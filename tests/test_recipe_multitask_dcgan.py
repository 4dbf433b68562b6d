"""The main recipe end to end on the smoke-test corpus: outputs, export, search, exact resume.

Pinned numbers come from seeded smoke runs on this machine; the recipe is deterministic
(two runs, or a run killed and resumed, give bit-identical results.json), so they are
compared to 1e-6. They only say the pipeline is unchanged, nothing about speech.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_export_matches_reported, load_recipe

from keras_ser import cli, tasks
from keras_ser.models import dcgan
from keras_ser.protocols import multitask_dcgan as protocol
from tfrecords_tools import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "multitask_dcgan.py")
TINY = ["--folds", "1", "--models", "basic_cnn,multitask_dcgan", "--max-epochs", "2",
        "--verbose", "0"]


def _recipe():
    return load_recipe("multitask_dcgan")


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    smoke.make_smoke_corpus(out)
    return os.path.join(out, "records")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multitask") / "run")
    assert _recipe().main(TINY + ["--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return out, json.load(f)


@pytest.mark.slow
def test_smoke_run_writes_the_papers_table_grids_logs_and_pinned_scores(smoke_run):
    out, results = smoke_run
    assert results["rows"] == ["basic_cnn", "multitask_dcgan"]
    assert [(f["row"], f["fold"], f["epochs"]) for f in results["folds"]] == [
        ("basic_cnn", "test-f01", 2), ("multitask_dcgan", "test-f01", 2)]
    assert "seconds" not in results["folds"][0]
    with open(os.path.join(out, "timing.json"), encoding="utf-8") as f:
        assert set(json.load(f)["folds"]) == {"basic_cnn/test-f01", "multitask_dcgan/test-f01"}
    pinned = {key: results["summary"][key.split("/")[0]][key.split("/")[1]]["mean"]
              for key in PINNED}
    assert pinned == pytest.approx(PINNED, abs=1e-6)
    test = results["folds"][1]["test"]
    assert np.sum(test["emotion_confusion"]) == test["emotion_n"] == 40
    md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
    assert "SMOKE-TEST CORPUS" in md and "| BasicCNN | 1 |" in md
    assert "UA valence 3-class (pooled decisions)" in md
    assert "UA valence 3-class (pooled probabilities)" in md
    assert os.path.getsize(os.path.join(out, "confusion.png")) > 1000
    grids = glob.glob(os.path.join(out, "runs", "multitask_dcgan", "*", "grids", "*.png"))
    assert len(grids) == 2
    assert not glob.glob(os.path.join(out, "runs", "basic_cnn", "*", "grids", "*.png"))
    events = glob.glob(os.path.join(out, "runs", "multitask_dcgan", "*", "logs", "**",
                                    "events*"), recursive=True)
    tags = {v.tag for e in events for ev in tf.compat.v1.train.summary_iterator(e)
            for v in ev.summary.value}
    assert "generated" in tags and "epoch_primary_ua" in tags


#: Mean over the one fold of the TINY run (seed 0).
PINNED = {"basic_cnn/emotion_ua": 0.275, "basic_cnn/emotion_wa": 0.275,
          "multitask_dcgan/emotion_ua": 0.45, "multitask_dcgan/valence_ua5": 0.1622222222222222,
          "multitask_dcgan/activation_ua3_decisions": 0.49430199430199423}


def test_per_speaker_minmax_in_the_pipeline_matches_numpy(smoke_records):
    """``normalise="minmax_speaker"``: each crop min-max scaled with its speaker's own
    extremes (`keras_ser.data.speaker_statistics`, which equal numpy's over the
    speaker's unnormalised frames)."""
    from keras_ser import data

    spec = tasks.TaskSpec("emotion", emotions=list(smoke.CLASSES))
    own = protocol.speaker_minmax(smoke_records, spec)
    assert sorted(own) == ["f01", "f03", "m02", "m04"]

    def batches(**kw):
        ds = data.make_dataset(smoke_records, features=spec.features, batch_size=16,
                               keep=("speaker",), **kw)
        return [{k: v.numpy() for k, v in b.items()} for b in ds]

    raw = batches()
    frames = {}
    for b in raw:
        for x, n, who in zip(b["features"], b["length"], b["speaker"]):
            frames.setdefault(who.decode(), []).append(x[:n])
    for who, parts in frames.items():
        values = np.concatenate(parts)
        assert (own[who]["min"], own[who]["max"]) == pytest.approx(
            (values.min(), values.max()), abs=1e-4)
    normed = batches(normalise="minmax_speaker", stats={"speakers": own})
    for a, b in zip(raw, normed):
        for x, y, n, who in zip(a["features"], b["features"], a["length"], a["speaker"]):
            lo, hi = own[who.decode()]["min"], own[who.decode()]["max"]
            np.testing.assert_allclose(y[:n], 2 * (x[:n] - lo) / (hi - lo) - 1, atol=1e-4)
    spread = {who: own[who]["max"] - own[who]["min"] for who in own}
    assert max(spread.values()) - min(spread.values()) > 0.5  # the speakers differ


@pytest.mark.slow
def test_speaker_norm_run_and_its_export(smoke_records, tmp_path):
    """``--speaker-norm``: every fold speaker's own extremes (the unlabelled speakers'
    too), recorded in the fold result and the export, whose ``serve_speaker`` signature
    reproduces the fold's test predictions with the test speaker's recorded extremes and
    with extremes estimated from its own files."""
    out = str(tmp_path / "run")
    wav = os.path.join(os.path.dirname(smoke_records), "wav")
    assert _recipe().main(["--data", smoke_records, "--corpus", "smoke", "--folds", "1",
                           "--models", "multitask_dcgan", "--max-epochs", "1",
                           "--speaker-norm", "--unlabelled", wav, "--verbose", "0",
                           "--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        [fold] = json.load(f)["folds"]
    spec = tasks.TaskSpec("emotion", emotions=list(smoke.CLASSES))
    own = protocol.speaker_minmax(smoke_records, spec)
    assert fold["speaker_statistics"] == {s: own[s] for s in sorted(
        fold["train_speakers"] + fold["validation_speakers"] + fold["test_speakers"])}
    with open(os.path.join(out, "export", "multitask_dcgan", "1", "keras_ser.json")) as f:
        meta = json.load(f)
    assert meta["speaker_inputs"]["keys"] == ["speaker_min", "speaker_max"]
    assert meta["front_end"]["pad_value"] == pytest.approx(-100.0)
    predictions = os.path.join(out, "runs", "multitask_dcgan", fold["fold"], "predictions.npz")
    [test] = fold["test_speakers"]
    for speaker in (test, "files"):
        assert assert_export_matches_reported(
            out, smoke_records, predictions, {"ua": fold["test"]["emotion_ua"]},
            key="emotion", speaker=speaker, atol=1e-4) == 40


@pytest.mark.slow
def test_export_is_tf_serving_layout_and_gives_the_reported_scores(smoke_run, capsys):
    out, results = smoke_run
    assert os.path.isfile(os.path.join(out, "export", "multitask_dcgan", "1", "saved_model.pb"))
    with open(os.path.join(out, "export", "multitask_dcgan", "1", "keras_ser.json")) as f:
        extra = json.load(f)["extra"]
    fold = next(f for f in results["folds"] if f["row"] == extra["model"])
    predictions = os.path.join(out, "runs", extra["model"], fold["fold"], "predictions.npz")
    count = assert_export_matches_reported(out, os.path.join(out, "smoke", "records"),
                                           predictions, {"ua": fold["test"]["emotion_ua"]},
                                           key="emotion")
    assert count == 40
    capsys.readouterr()
    wav = sorted(glob.glob(os.path.join(out, "smoke", "wav", "*.wav")))[0]
    assert cli.main(["predict", os.path.join(out, "export"), wav, "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 1  # JSON Lines: one object per file
    assert set(printed[0]["probabilities"]) == set(smoke.CLASSES)
    assert sum(printed[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_two_trial_random_search_saves_and_uses_the_best_hyperparameters(smoke_records,
                                                                          tmp_path):
    out = str(tmp_path / "search_run")
    status = _recipe().main(["--data", smoke_records, "--corpus", "smoke", "--out", out,
                             "--models", "basic_cnn", "--folds", "1", "--search",
                             "--max-trials", "2", "--max-epochs", "2", "--patience", "1",
                             "--no-export", "--verbose", "0"])
    assert status == 0
    with open(os.path.join(out, "search", "basic_cnn", "best.json")) as f:
        best = json.load(f)
    assert best["trials"] == 2
    trial_scores = []
    for path in glob.glob(os.path.join(out, "search", "trials", "basic_cnn", "*",
                                       "result.json")):
        with open(path) as f:
            trial_scores.append(json.load(f)["validation"]["primary_ua"])
    assert len(trial_scores) == 2
    assert best["val_primary_ua"] == pytest.approx(max(trial_scores))
    hp = best["hyperparameters"]
    assert hp["crop_frames"] in (32, 48, 64) and hp["filters"] % 4 == 0
    with open(os.path.join(out, "results.json")) as f:
        used = json.load(f)["folds"][0]["config"]
    assert used["crop_frames"] == hp["crop_frames"] and used["filters"] == hp["filters"]
    assert used["kernel_size"] == hp["crop_frames"] // 8


def _epochs_done(out):
    found = glob.glob(os.path.join(glob.escape(out), "runs", "basic_dcgan", "*", "ckpt",
                                   "state.json"))
    try:
        with open(found[0]) as f:
            return json.load(f)["epochs_done"]
    except (IndexError, OSError, ValueError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_fold_then_rerun_gives_the_uninterrupted_results_json(smoke_records,
                                                                           tmp_path):
    """Killed with SIGKILL after 2 epochs of the DCGAN, re-run: the whole results.json
    equals that of a run never interrupted (noise, crops and order are drawn from seeds
    of (seed, fold, epoch); weights and optimiser state come back from the checkpoint)."""
    args = ["--data", smoke_records, "--corpus", "smoke", "--models", "basic_dcgan",
            "--folds", "1", "--max-epochs", "4", "--patience", "10", "--no-export",
            "--verbose", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    first = subprocess.run([sys.executable, RECIPE, "--out", whole] + args, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, RECIPE, "--out", killed] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _epochs_done(killed) < 2:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = _epochs_done(killed)
    assert 2 <= saved < 4
    second = subprocess.run([sys.executable, RECIPE, "--out", killed] + args, env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming after epoch {saved} of 4" in second.stdout
    assert [int(m) for m in re.findall(r"^Epoch (\d+)/4", second.stdout, re.M)] == \
        list(range(saved + 1, 5))
    with open(os.path.join(whole, "results.json")) as a, \
            open(os.path.join(killed, "results.json")) as b:
        assert json.load(a) == json.load(b)


@pytest.mark.slow
@pytest.mark.real_data
def test_valence_primary_with_unlabelled_librispeech(smoke_records, shared_data, tmp_path):
    out = str(tmp_path / "valence")
    libri = os.path.join(shared_data, "speech_unlabeled", "LibriSpeech")
    status = _recipe().main(["--data", smoke_records, "--corpus", "smoke", "--out", out,
                             "--primary", "valence", "--unlabelled", libri,
                             "--models", "multitask_dcgan", "--folds", "1",
                             "--max-epochs", "2", "--no-export", "--verbose", "0"])
    assert status == 0
    with open(os.path.join(out, "config.json")) as f:
        unlabelled = json.load(f)["unlabelled"]
    assert len(unlabelled) == 1 and os.path.isfile(os.path.join(unlabelled[0], "stats.json"))
    with open(os.path.join(out, "results.json")) as f:
        test = json.load(f)["folds"][0]["test"]
    assert test["primary_ua"] == test["valence_ua5"]
    assert "emotion_ua" not in test and np.isfinite(test["activation_r"])
    md = open(os.path.join(out, "results.md")).read()
    assert "valence mean ratings as fuzzy labels" in md and "chance UA 20.0%" in md

    spec = tasks.TaskSpec(primary="valence")
    config = dcgan.get_dcgan_preset("cpu")
    data = protocol.training_data(smoke_records, spec, config, ["f01", "m02"], (-100.0, 40.0),
                                  ["valence", "activation"], seed=0, epochs=1,
                                  unlabelled=unlabelled)
    ds, steps = data(0)
    batch = next(iter(ds))
    assert batch["unlabelled"].shape == (config.batch_size, config.crop_frames, 128)
    assert batch["valence"].shape == (config.batch_size, 5)
    np.testing.assert_allclose(batch["valence"].numpy().sum(1), 1.0, atol=1e-5)
    assert "emotion" not in batch and steps == int(ds.cardinality())


def test_rating_levels_are_oversampled_when_a_dimension_is_primary(smoke_records):
    spec = tasks.TaskSpec(primary="valence")
    corpus = protocol.Corpus(smoke_records, spec)
    levels = corpus.level_labels("valence")
    speakers = ["f01", "m02", "f03"]
    utt = corpus.utterances
    raw = np.bincount([levels[i] for i, s in zip(utt.ids, utt.speakers)
                       if s in speakers and i in levels], minlength=5)
    config = dcgan.get_dcgan_preset("cpu").replace(batch_size=1)
    ds, _ = protocol.training_data(smoke_records, spec, config, speakers, (-100.0, 40.0),
                                   ["valence"], seed=0, epochs=1, levels=levels)(0)
    seen = np.zeros(5, int)
    for batch in ds:
        seen[int(np.argmax(batch["valence"].numpy()[0]))] += 1  # ties: the lower level
    present = raw > 0
    assert seen[present].min() > raw[present].min()
    assert (seen[present].max() / seen[present].min()) < (raw[present].max() / raw[present].min())
    assert set(np.flatnonzero(seen)) == set(np.flatnonzero(raw))


def test_bad_data_gets_a_clear_error_and_exit_status_2(tmp_path, capsys):
    recipe = _recipe()
    assert recipe.main(["--corpus", "emodb", "--data", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "o")]) == 2
    assert "missing EmoDB wav/ folder" in capsys.readouterr().err
    assert recipe.main(["--corpus", "emodbx", "--data", str(tmp_path),
                        "--out", str(tmp_path / "o")]) == 2
    assert "unknown corpus 'emodbx'" in capsys.readouterr().err
    assert recipe.main(["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--data needs --corpus" in capsys.readouterr().err
    assert recipe.main(["--models", "basic_rnn", "--out", str(tmp_path / "o")]) == 2
    assert "unknown --models ['basic_rnn']" in capsys.readouterr().err
