"""recipes/sngan_synthetic.py end to end on the smoke-test corpus (tiny budgets).

Pinned numbers come from the seeded TINY run on this machine (the recipe is
deterministic; compared to 1e-6). They only say the pipeline is unchanged.
"""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import assert_export_matches_reported, load_recipe

from keras_ser import data, folds
from keras_ser.features import get_preset
from keras_ser.models import sngan
from keras_ser.patches import PatchBank
from keras_ser.protocols import sngan as protocol
from keras_ser.training import resumable
from tfrecords_tools import patch_records


def _recipe():
    return load_recipe("sngan_synthetic")


TINY = ["--folds", "1", "--clients", "2", "--ae-steps", "6", "--wgan-steps", "6",
        "--ft-steps", "6", "--ser-steps", "12", "--baseline-ae-steps", "6",
        "--baseline-gan-steps", "6", "--per-class", "10", "--steps-per-epoch", "3",
        "--verbose", "0"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sngan") / "run")
    recipe = _recipe()
    assert recipe.main(TINY + ["--out", out]) == 0
    return recipe, out


def _results(out):
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_smoke_run_writes_table_synthetic_sets_figures_and_generators(smoke_run):
    _, out = smoke_run
    results = _results(out)
    assert results["classes"] == ["anger", "happiness", "neutral", "sadness"]
    (fold,) = results["folds"]
    assert fold["fold"] == "test-f01" and fold["test_speakers"] == ["f01"]
    assert "f01" not in fold["train_speakers"] and "f03" in fold["train_speakers"]
    assert results["rows"] == ["real", "baseline", "centralised", "per_client",
                               "real+baseline", "real+centralised", "real+per_client"]
    scores = fold["scores"]
    for cond, s in scores.items():
        assert s["n"] == 40 and np.sum(s["confusion"]) == 40
    assert {c: round(s["macro_f1"], 6) for c, s in scores.items()} == PINNED_F1
    assert scores["real"]["tstr"] is None
    assert scores["baseline"]["tstr"] == pytest.approx(
        scores["baseline"]["macro_f1"] / scores["real"]["macro_f1"])
    for cond in ("real+baseline", "real+centralised", "real+per_client"):
        assert scores[cond]["tstr"] is None
        assert scores[cond]["gain_f1"] == pytest.approx(
            scores[cond]["macro_f1"] - scores["real"]["macro_f1"])
        assert results["paired_tests_vs_real"][cond]["folds"] == 1
    assert scores["real"]["gain_f1"] is None
    assert set(fold["frechet"]) == {"pretrained", "centralised", "per_client", "baseline",
                                    "real_test"}
    assert fold["frechet"]["real_test"] < fold["frechet"]["pretrained"]
    # The range is that of the pre-training pool and the labelled training speakers (here
    # the same three speakers: the smoke corpus has no unlabelled speech).
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    bank = PatchBank.from_records(os.path.join(out, "smoke", "records"), get_preset(
        "eskimez").replace(n_mels=64), classes=results["classes"])
    assert config["minmax_db"] == pytest.approx(list(bank.subset(["f03", "m02", "m04"]).minmax()))
    fdir = os.path.join(out, "folds", fold["fold"])
    central = patch_records.read_synthetic_metadata(os.path.join(fdir, "synthetic",
                                                                 "centralised"))
    assert central["counts"] == {c: 10 for c in results["classes"]}
    for k in (1, 2):
        meta = patch_records.read_synthetic_metadata(os.path.join(fdir, "synthetic",
                                                                  f"client{k}"))
        assert meta["total"] == 4 * 5
    batch = next(iter(data.synthetic_dataset(
        [os.path.join(fdir, "synthetic", "client1"), os.path.join(fdir, "synthetic", "client2")],
        batch_size=40, shuffle=False)))
    assert batch["features"].shape == (40, 64, 64)
    assert np.bincount(batch["label"].numpy(), minlength=4).tolist() == [10, 10, 10, 10]
    for png in ("real_vs_generated.png", "same_noise_per_emotion.png"):
        with open(os.path.join(fdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(os.path.join(out, "pretrain", "stage2", "grids"))
    assert os.listdir(os.path.join(out, "logs", "pretrain", "stage2"))
    md = Path(os.path.join(out, "results.md")).read_text(encoding="utf-8")
    assert "SMOKE-TEST CORPUS" in md and "TSTR" in md and "Fréchet" in md
    g = keras.models.load_model(os.path.join(fdir, "centralised", "generator.keras"))
    patch = np.asarray(g([np.zeros((2, 64), np.float32), np.eye(4, dtype=np.float32)[:2]]))
    assert patch.shape == (2, 64, 64) and np.abs(patch).max() <= 1.0
    assert not np.allclose(patch[0], patch[1])  # the condition matters
    # Stage 2 ran 6 iterations in epochs of 3, and the saved generator is stage 2's.
    state = resumable.read_state(os.path.join(out, "pretrain", "stage2", "checkpoint"))
    assert state["epochs_done"] == 2 and len(state["history"]) == 2


#: Macro-F1 per training set of the TINY run (seed 0).
PINNED_F1 = {"real": 0.1, "baseline": 0.1, "centralised": 0.1, "per_client": 0.1,
             "real+baseline": 0.1, "real+centralised": 0.1, "real+per_client": 0.1}


@pytest.mark.slow
def test_export_is_tf_serving_layout_and_gives_the_reported_scores(smoke_run):
    _, out = smoke_run
    assert os.path.isfile(os.path.join(out, "export", "sngan_ser", "1", "saved_model.pb"))
    fold = _results(out)["folds"][0]
    count = assert_export_matches_reported(
        out, os.path.join(out, "smoke", "records"),
        os.path.join(out, "folds", fold["fold"], "predictions.npz"), fold["scores"]["real"],
        key="real")
    assert count == 40


@pytest.mark.slow
def test_rerun_resumes_without_training_again(smoke_run, capsys):
    recipe, out = smoke_run
    before = _results(out)
    capsys.readouterr()
    assert recipe.main(TINY + ["--out", out]) == 0
    printed = capsys.readouterr().out
    assert "[stage1_autoencoder] finished earlier" in printed
    assert "[stage2_wgan_gp] finished earlier" in printed
    assert "fold 1/1 test-f01: finished earlier" in printed
    assert _results(out) == before


@pytest.mark.slow
def test_bad_options_exit_2_with_a_message(smoke_run, capsys):
    recipe, out = smoke_run
    assert recipe.main(TINY[2:] + ["--folds", "zz", "--out", out]) == 2
    assert "unknown fold" in capsys.readouterr().err
    assert recipe.main(TINY + ["--classes", "anger,joy", "--out", out]) == 2
    assert "joy" in capsys.readouterr().err
    assert recipe.main(["--data", out, "--out", out]) == 2
    assert "--corpus" in capsys.readouterr().err


def test_iemocap_holds_out_whole_sessions_and_sessions_are_clients():
    stats = {"speakers": {f"Ses0{i}{g}": {"session": f"Ses0{i}",
                                          "gender": "female" if g == "F" else "male"}
                          for i in range(1, 6) for g in "FM"}}
    every = folds.folds_from_stats(stats, "loso-session")
    train, held = protocol.split(every[0], "iemocap")
    assert held == ["Ses01F", "Ses01M"] and len(train) == 8
    assert protocol.client_groups("iemocap", train, stats, clients=3) == [
        [f"Ses0{i}F", f"Ses0{i}M"] for i in range(2, 6)]
    assert [f.name for f in folds.select(every, "Ses03M")] == ["session3-test-Ses03M"]


def test_speaker_folds_put_the_validation_speaker_into_training():
    stats = {"speakers": {s: {"session": s, "gender": "male"} for s in ("03", "08", "09", "10")}}
    chosen = folds.select(folds.folds_from_stats(stats, "loso-speaker"), "08,10")
    assert [protocol.split(f, "emodb") for f in chosen] == [
        (["03", "09", "10"], ["08"]), (["03", "08", "09"], ["10"])]
    assert protocol.client_groups("emodb", ["03", "09", "10"], stats, 2) == [["03", "09"],
                                                                             ["10"]]


def test_paper_budgets_and_optimisers_follow_the_paper():
    """Sec. 4.4: 200K pre-training iterations; Adam (0.5, 0.99) for every network, the
    autoencoder and the SER network included; fine-tuning at the GAN rates."""
    paper = protocol.BUDGETS["paper"]
    assert (paper.ae_steps, paper.wgan_steps, paper.per_class) == (200_000, 200_000, 40_000)
    config = sngan.get_sngan_preset("paper")
    assert (config.ft_g_lr, config.ft_d_lr) == (config.g_lr, config.d_lr) == (2e-6, 2e-5)
    from keras_ser.training import autoencoder, ser

    ae = autoencoder.optimizers(config)["optimizer"]
    ser_net = ser.build_ser_network(sngan.get_sngan_preset("cpu", n_classes=4))
    for opt in (ae, ser_net.optimizer):
        assert (opt.beta_1, opt.beta_2) == (0.5, 0.99)


def test_real_plus_synthetic_batches_are_half_real_half_synthetic():
    import tensorflow as tf

    from keras_ser.protocols import sngan as protocol

    real = tf.data.Dataset.from_tensor_slices({
        "features": np.zeros((6, 2, 4, 3), np.float32),
        "label": np.array([[0, 1], [1, 1], [2, 0], [0, 0], [3, 3], [1, 2]], np.int32)})
    synthetic = tf.data.Dataset.from_tensor_slices({
        "features": np.ones((6, 2, 4, 3), np.float32),
        "label": np.array([[3, 3]] * 6, np.int64)})
    batches = list(protocol.mixed_batches(real, synthetic))
    assert len(batches) == 6
    for k, b in enumerate(batches):
        assert b["features"].shape == (4, 4, 3) and b["label"].dtype == tf.int32
        assert b["features"].numpy()[:2].max() == 0 and b["features"].numpy()[2:].min() == 1
        assert b["label"].numpy().tolist()[2:] == [3, 3]


@pytest.mark.slow
def test_budget_study_runs_each_point_and_writes_table_plot_and_times(tmp_path):
    study = load_recipe("sngan_budget_study")
    out = str(tmp_path / "study")
    argv = ["--scales", "0.5,1", "--out", out, "--folds", "1", "--ser-steps", "6",
            "--per-class", "4", "--steps-per-epoch", "3", "--verbose", "0"]
    assert study.main(argv) == 0
    doc = _results_file(os.path.join(out, "budget_study.json"))
    steps = [(p["ae_steps"], p["wgan_steps"], p["ft_steps"]) for p in doc["points"]]
    assert steps == [(20, 20, 15), (40, 40, 30)]  # the smoke budgets x 0.5 and x 1
    for p in doc["points"]:
        run = _results(os.path.join(out, f"x{p['scale']:g}"))
        scores = run["folds"][0]["scores"]
        assert p["gain_f1"]["folds"] == [scores["real+centralised"]["gain_f1"]]
        assert p["tstr"]["folds"] == [scores["centralised"]["tstr"]]
        assert p["fd"]["folds"] == [run["folds"][0]["frechet"]["centralised"]]
        assert p["seconds"] > 0
        assert run["rows"][:4] == ["real", "centralised", "per_client", "real+centralised"]
    with open(os.path.join(out, "budget_study.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = Path(os.path.join(out, "budget_study.md")).read_text(encoding="utf-8")
    assert "| 20 / 20 / 15 |" in md and "| 40 / 40 / 30 |" in md and " min |" in md
    assert study.main(argv) == 0  # a re-run reads every point back
    assert _results_file(os.path.join(out, "budget_study.json")) == doc


def _results_file(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
