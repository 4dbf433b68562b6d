"""recipes/crnn_vtlp.py end to end: smoke corpus, an IEMOCAP-layout fixture, bad options.

Pinned numbers come from the seeded TINY run on this machine (the recipe is
deterministic; compared to 1e-6). They only say the pipeline is unchanged.
"""

import json
import os

import keras
import numpy as np
import pytest
from helpers import assert_export_matches_reported, load_recipe, write_iemocap_release

from keras_ser.models import crnn


def _recipe():
    return load_recipe("crnn_vtlp")


TINY = ["--folds", "1", "--variants", "oversampling,vtlp", "--max-epochs", "2",
        "--verbose", "0"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("crnn") / "run")
    recipe = _recipe()
    assert recipe.main(TINY + ["--out", out]) == 0
    return recipe, out


def _tags(log_dir):
    import tensorflow as tf

    tags = set()
    for root, _, files in os.walk(log_dir):
        for name in files:
            if "tfevents" in name:
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    tags.update(v.tag for v in event.summary.value)
    return tags


#: Test scores of the TINY run (seed 0).
PINNED = {"oversampling/wa": 0.3, "oversampling/ua": 0.3, "vtlp/wa": 0.325, "vtlp/ua": 0.325}


@pytest.mark.slow
def test_smoke_run_writes_the_ablation_table_votes_and_gradient_norm_logs(smoke_run):
    """One fold with and without VTLP: table, an 11-copy vote, Figure 3 logs, a model."""
    _, out = smoke_run
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["protocol"] == "loso-speaker" and doc["rows"] == ["oversampling", "vtlp"]
    plain, vtlp = doc["folds"]
    assert plain["config"]["oversample"] == ["happiness", "anger"]
    assert plain["config"]["vtlp"] == "none" and vtlp["config"]["vtlp"] == "example"
    assert plain["model_config"]["recurrent_bn"] is False
    assert plain["model_config"]["conv_bn"] is False
    assert "copies" not in plain["test"] and vtlp["test"]["copies"] == 11
    for r in doc["folds"]:
        assert r["test_speakers"] == ["f01"] and r["validation_speakers"] == ["f03"]
        assert r["epochs"] == 2 and r["best_epoch"] in (1, 2)
        conf = np.array(r["test"]["confusion"])
        assert conf.sum() == r["test"]["n"] == 40
        assert r["test"]["wa"] == pytest.approx(np.trace(conf) / conf.sum())
    assert {f"{r['row']}/{k}": r["test"][k] for r in doc["folds"] for k in ("wa", "ua")} == \
        pytest.approx(PINNED, abs=1e-6)
    assert doc["summary"]["vtlp"]["single_ua"]["folds"] == [vtlp["test_single"]["ua"]]
    text = open(os.path.join(out, "results.md"), encoding="utf-8").read()
    assert "## Test results" in text and "## Test UA per fold" in text and "SMOKE-TEST" in text
    assert "| test-f01 |" in text
    run = os.path.join(out, "runs", "vtlp", "test-f01")
    tags = _tags(os.path.join(run, "logs"))
    for group in ("conv", "recurrent", "dense"):
        assert f"epoch_grad_norm_{group}" in tags
    assert {"epoch_ua", "epoch_wa"} <= _tags(os.path.join(run, "logs", "validation"))
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    assert isinstance(model, crnn.CRNN) and model.config.num_classes == 4


@pytest.mark.slow
def test_export_is_tf_serving_layout_and_gives_the_reported_scores(smoke_run):
    _, out = smoke_run
    with open(os.path.join(out, "export", "crnn", "1", "keras_ser.json"), encoding="utf-8") as f:
        meta = json.load(f)
    row, fold = meta["extra"]["variant"], meta["extra"]["fold"]
    with open(os.path.join(out, "runs", row, fold, "result.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert (meta["front_end"]["aggregate"] == "vote") == (result["config"]["vtlp"] == "example")
    count = assert_export_matches_reported(out, os.path.join(out, "smoke", "records"),
                                           os.path.join(out, "runs", row, fold,
                                                        "predictions.npz"), result["test"])
    assert count == 40


@pytest.mark.slow
def test_rerun_reads_finished_folds_back(smoke_run):
    """A second invocation trains nothing: the fold results and model files stay as they were."""
    recipe, out = smoke_run
    result = os.path.join(out, "runs", "oversampling", "test-f01", "result.json")
    model = os.path.join(out, "runs", "oversampling", "test-f01", "model.keras")
    stamps = (os.path.getmtime(result), os.path.getmtime(model))
    before = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    assert recipe.main(TINY + ["--out", out, "--no-export"]) == 0
    assert (os.path.getmtime(result), os.path.getmtime(model)) == stamps
    assert json.load(open(os.path.join(out, "results.json"), encoding="utf-8")) == before


@pytest.mark.parametrize("argv", [
    ["--variants", "nope"],
    ["--folds", "zz9"],
    ["--folds", "99"],
    ["--conv-layers", "7"],
    ["--lstm-layers", "0"],
    ["--data", "somewhere"],
    ["--classes", "anger,joy"],
])
def test_bad_options_exit_with_status_2(tmp_path, argv, capsys):
    """Unknown variants, folds, sizes, classes, or --data without --corpus: status 2."""
    assert _recipe().main(argv + ["--out", str(tmp_path / "run"), "--verbose", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def test_missing_corpus_folder_is_named(tmp_path, capsys):
    """A --data folder that does not exist: status 2 and the path in the message."""
    missing = str(tmp_path / "no_such_emodb")
    assert _recipe().main(["--corpus", "emodb", "--data", missing,
                           "--out", str(tmp_path / "run")]) == 2
    assert "no_such_emodb" in capsys.readouterr().err


@pytest.mark.slow
def test_iemocap_protocol_improvised_four_classes_swapped_session_folds(tmp_path):
    """IEMOCAP: 2 folds per session (validation/test swapped), improvised turns only,
    the four emotions only (frustration and the scripted dialogs are left out)."""
    data = write_iemocap_release(str(tmp_path / "corpus"))
    out = str(tmp_path / "run")
    assert _recipe().main(["--corpus", "iemocap", "--data", data, "--baseline", "none", "--out", out,
                           "--folds", "Ses01F", "--variants", "baseline",
                           "--max-epochs", "1", "--verbose", "0"]) == 0
    config = json.load(open(os.path.join(out, "config.json"), encoding="utf-8"))
    assert config["classes"] == ["neutral", "happiness", "anger", "sadness"]
    assert config["protocol"] == "loso-session-swap" and config["improvised_only"]
    folds = json.load(open(os.path.join(out, "folds.json"), encoding="utf-8"))
    pairs = sorted((f["validation"][0], f["test"][0]) for f in folds["folds"])
    assert pairs == [("Ses01F", "Ses01M"), ("Ses01M", "Ses01F"),
                     ("Ses02F", "Ses02M"), ("Ses02M", "Ses02F")]
    doc = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    (fold,) = doc["folds"]
    assert fold["test_speakers"] == ["Ses01F"] and fold["validation_speakers"] == ["Ses01M"]
    # Ses01F: 4 improvised turns of the four emotions; not fru, not the 2 scripted ones.
    assert fold["test"]["n"] == 4
    assert fold["validation"]["n"] == 4
    assert np.array(fold["test"]["confusion"]).sum(axis=1).tolist() == [1, 1, 1, 1]


@pytest.mark.slow
def test_epoch_vtlp_draws_one_alpha_per_epoch_and_an_interrupted_fold_resumes(tmp_path):
    """``vtlp="epoch"``: every epoch's α is the seeded draw of that epoch, logged; a fold
    stopped after epoch 1 and run again to 2 epochs has the weights and history of a fold
    run to 2 epochs at once."""
    from keras_ser import augment, data
    from keras_ser.folds import Fold
    from keras_ser.protocols import crnn as protocol
    from keras_ser.training import resumable
    from tfrecords_tools import smoke

    records = smoke.smoke_records(str(tmp_path))
    classes = ["anger", "happiness", "neutral", "sadness"]
    utterances = data.Utterances(records, classes=classes)
    fold = Fold("test-f01", train=["m02", "m04"], validation=["f03"], test=["f01"])
    model_config = crnn.get_config("cpu", num_classes=4, conv_filters=(4, 4),
                                   conv_strides=((2, 2), (1, 2)), lstm_units=4)
    config = protocol.TrainConfig(vtlp="epoch", max_epochs=1, seed=3, patience=5)

    def run(folder, epochs):
        keras.utils.set_random_seed(7)
        return protocol.train_fold(model_config, config.replace(max_epochs=epochs), fold,
                                   records, classes, folder, utterances=utterances, verbose=0)

    stopped = str(tmp_path / "stopped")
    assert run(stopped, 1)["epochs"] == 1
    epoch1 = resumable.read_state(os.path.join(stopped, "ckpt"))["history"][0]
    resumed, whole = run(stopped, 2), run(str(tmp_path / "whole"), 2)
    history = resumable.read_state(os.path.join(stopped, "ckpt"))["history"]
    assert len(history) == 2 and history[0] == epoch1
    assert history == resumable.read_state(os.path.join(str(tmp_path / "whole"), "ckpt"))[
        "history"]
    assert resumed["test"] == whole["test"]
    expected = [float(augment.epoch_alpha(3, e)) for e in (0, 1)]
    assert [h["vtlp_alpha"] for h in history] == pytest.approx(expected, abs=1e-6)
    assert expected[0] != pytest.approx(expected[1])
    assert all(0.9 <= a < 1.1 for a in expected)
