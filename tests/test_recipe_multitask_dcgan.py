"""The main recipe end to end on the smoke-test corpus: outputs, search, SIGKILL resume."""

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
from helpers import load_recipe

from keras_ser import cli
from keras_ser.models import dcgan
from tfrecords_tools import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "multitask_dcgan.py")


def _recipe():
    return load_recipe("multitask_dcgan")


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    synthetic.make_smoke_corpus(out)
    return os.path.join(out, "records")


@pytest.mark.slow
def test_default_run_writes_results_tables_grids_and_a_served_model(tmp_path, capsys):
    out = str(tmp_path / "run")
    status = _recipe().main(["--out", out, "--folds", "1", "--models",
                             "basic_cnn,multitask_dcgan", "--max-epochs", "2", "--verbose", "0"])
    assert status == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert set(results["summary"]) == {"basic_cnn", "multitask_dcgan"}
    assert results["config"]["smoke_test_corpus"] is True
    fold = results["folds"][0]
    assert fold["epochs"] == 2 and fold["test"]["emotion_ua"] >= 0
    md = open(os.path.join(out, "results.md")).read()
    assert "SMOKE-TEST CORPUS" in md
    assert "| BasicCNN | 1 |" in md and "| MultitaskDCGAN | 1 |" in md
    assert "UA valence 5-class" in md and "r activation" in md
    assert os.path.getsize(os.path.join(out, "confusion.png")) > 1000
    assert os.path.isfile(os.path.join(out, "config.json"))
    grids = glob.glob(os.path.join(out, "runs", "multitask_dcgan", "*", "grids", "*.png"))
    assert len(grids) == 2
    assert not glob.glob(os.path.join(out, "runs", "basic_cnn", "*", "grids", "*.png"))
    events = glob.glob(os.path.join(out, "runs", "multitask_dcgan", "*", "logs", "**",
                                    "events*"), recursive=True)
    tags = {v.tag for e in events for ev in tf.compat.v1.train.summary_iterator(e)
            for v in ev.summary.value}
    assert "generated" in tags
    assert any("val_primary_ua" in t or "epoch_primary_ua" in t for t in tags), tags

    capsys.readouterr()
    wav = sorted(glob.glob(os.path.join(out, "smoke", "wav", "*.wav")))[0]
    assert cli.main(["predict", os.path.join(out, "export"), wav, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    probs = printed[0]["probabilities"]
    assert set(probs) == {"anger", "happiness", "neutral", "sadness"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)


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
    assert hp["batch_size"] in (16, 32, 64) and 1e-4 <= hp["learning_rate"] <= 1e-3
    with open(os.path.join(out, "results.json")) as f:
        used = json.load(f)["folds"][0]["config"]
    assert used["crop_frames"] == hp["crop_frames"] and used["filters"] == hp["filters"]
    assert used["kernel_size"] == dcgan.tied_kernel_size(hp["crop_frames"])


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_from_the_last_finished_epoch(smoke_records, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, RECIPE, "--data", smoke_records, "--corpus", "smoke", "--out", out,
           "--models", "basic_dcgan", "--folds", "1", "--max-epochs", "6", "--patience", "10",
           "--no-export", "--verbose", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    state_path = glob.escape(out) + "/runs/basic_dcgan/*/ckpt/state.json"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    done = -1
    while time.time() < deadline and proc.poll() is None:
        found = glob.glob(state_path)
        if found:
            try:
                with open(found[0]) as f:
                    done = json.load(f)["epoch"]
            except (OSError, ValueError):
                pass
        if done >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(glob.glob(state_path)[0]) as f:
        saved = json.load(f)["epoch"]
    assert 1 <= saved < 5

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    epochs = [int(m) for m in re.findall(r"^Epoch (\d+)/6", second.stdout, re.M)]
    assert epochs == list(range(saved + 2, 7))
    with open(glob.glob(state_path)[0]) as f:
        state = json.load(f)
    assert len(state["history"]) == 6
    result = json.load(open(glob.glob(os.path.join(out, "runs", "basic_dcgan", "*",
                                                   "result.json"))[0]))
    assert result["epochs"] == 6
    assert np.isfinite(result["test"]["emotion_ua"])


@pytest.mark.slow
@pytest.mark.real_data
def test_valence_primary_with_unlabelled_librispeech(smoke_records, shared_data, tmp_path):
    from keras_ser.training import protocol

    out = str(tmp_path / "valence")
    libri = os.path.join(shared_data, "speech_unlabeled", "LibriSpeech")
    status = _recipe().main(["--data", smoke_records, "--corpus", "smoke", "--out", out,
                             "--primary", "valence", "--unlabelled", libri,
                             "--models", "multitask_dcgan", "--folds", "1",
                             "--max-epochs", "2", "--no-export", "--verbose", "0"])
    assert status == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    unlabelled = results["config"]["unlabelled"]
    assert len(unlabelled) == 1 and os.path.isfile(os.path.join(unlabelled[0], "stats.json"))
    test = results["folds"][0]["test"]
    assert test["primary_ua"] == test["valence_ua5"]
    assert "emotion_ua" not in test and np.isfinite(test["activation_r"])
    md = open(os.path.join(out, "results.md")).read()
    assert "valence mean ratings as fuzzy labels" in md
    assert "Chance UA of the primary task: 20.0%" in md

    spec = protocol.TaskSpec(primary="valence")
    config = protocol.dcgan.get_dcgan_preset("cpu")
    ds = protocol.training_dataset(smoke_records, spec, config, ["f01", "m02"], (-100.0, 40.0),
                                   ["valence", "activation"], unlabelled=unlabelled)
    batch = next(iter(ds))
    assert batch["unlabelled"].shape == (config.batch_size, config.crop_frames, 128)
    assert batch["valence"].shape == (config.batch_size, 5)
    np.testing.assert_allclose(batch["valence"].numpy().sum(1), 1.0, atol=1e-5)
    assert "emotion" not in batch


def test_rating_levels_are_oversampled_when_a_dimension_is_primary(smoke_records):
    from keras_ser.training import protocol

    spec = protocol.TaskSpec(primary="valence")
    corpus = protocol.CorpusAudio(smoke_records, spec)
    levels = corpus.level_labels("valence")
    speakers = ["f01", "m02", "f03"]
    raw = np.bincount([levels[i] for i, s in zip(corpus.ids, corpus.speakers)
                       if s in speakers and i in levels], minlength=5)
    config = protocol.dcgan.get_dcgan_preset("cpu").replace(batch_size=1)
    ds = protocol.training_dataset(smoke_records, spec, config, speakers, (-100.0, 40.0),
                                   ["valence"], levels=levels)
    seen = np.zeros(5, int)
    for batch in ds:
        dist = batch["valence"].numpy()[0]
        seen[int(np.argmax(dist))] += 1  # ties go to the lower level, as level_labels
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
