"""recipes/sngan_synthetic.py end to end on the smoke-test corpus (tiny budgets)."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import load_recipe

from keras_ser import synthesis
from keras_ser.models import sngan
from keras_ser.training import autoencoder, stages, wgan_gp


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


@pytest.mark.slow
def test_smoke_run_writes_table_synthetic_sets_figures_and_generators(smoke_run):
    recipe, out = smoke_run
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    classes = results["classes"]
    assert classes == ["anger", "happiness", "neutral", "sadness"]
    (fold,) = results["folds"]
    assert fold["test_speakers"] == [fold["fold"]]
    assert fold["fold"] not in fold["train_speakers"]
    # The pre-training pool excludes the tested speaker.
    assert fold["fold"] not in results["config"]["pretrain_corpus_speakers"]
    scores = fold["scores"]
    assert set(scores) == {"real", "baseline", "centralised", "per_client"}
    for cond, s in scores.items():
        assert 0.0 <= s["macro_f1"] <= 1.0 and s["files"] == 40
        assert np.sum(s["confusion"]) == 40
        if cond != "real":
            expected = s["macro_f1"] / scores["real"]["macro_f1"] \
                if scores["real"]["macro_f1"] > 0 else None
            assert s["tstr"] == pytest.approx(expected)
    assert set(fold["frechet"]) == {"pretrained", "centralised", "per_client", "baseline",
                                    "real_test"}
    assert all(v >= 0 and np.isfinite(v) for v in fold["frechet"].values())
    # Synthetic sets: K per emotion centralised and baseline, K / clients from each client.
    fdir = os.path.join(out, "folds", fold["fold"])
    central = synthesis.read_synthetic_metadata(os.path.join(fdir, "synthetic", "centralised"))
    assert central["counts"] == {c: 10 for c in classes} or \
        list(central["counts"].values()) == [10] * 4
    for k in (1, 2):
        meta = synthesis.read_synthetic_metadata(os.path.join(fdir, "synthetic", f"client{k}"))
        assert sum(meta["counts"].values() if isinstance(meta["counts"], dict)
                   else meta["counts"]) == 4 * 5
    batch = next(iter(synthesis.synthetic_dataset(
        [os.path.join(fdir, "synthetic", "client1"), os.path.join(fdir, "synthetic", "client2")],
        batch_size=40, shuffle=False)))
    assert batch["features"].shape == (40, 64, 64)
    assert np.bincount(batch["label"].numpy(), minlength=4).tolist() == [10, 10, 10, 10]
    # Figures 2 and 3, stage grids, TensorBoard logs, markdown table.
    for png in ("real_vs_generated.png", "same_noise_per_emotion.png"):
        with open(os.path.join(fdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(os.path.join(out, "pretrain", "stage2", "grids"))
    assert os.listdir(os.path.join(out, "logs", "pretrain", "stage2"))
    with open(os.path.join(out, "results.md"), encoding="utf-8") as f:
        md = f.read()
    assert "SMOKE-TEST CORPUS" in md and "TSTR" in md and "Fréchet" in md
    # The fine-tuned generator is a loadable conditional model.
    g = keras.models.load_model(os.path.join(fdir, "centralised", "generator.keras"))
    z = np.zeros((2, g.inputs[0].shape[-1]), np.float32)
    cond = np.eye(4, dtype=np.float32)[:2]
    patch = np.asarray(g([z, cond]))
    assert patch.shape == (2, 64, 64) and np.abs(patch).max() <= 1.0
    assert not np.allclose(patch[0], patch[1])  # the condition matters
    # The pre-trained generator handed to fine-tuning is the stage-2 (WGAN-GP) one, not
    # the stage-1 autoencoder's decoder.
    config = sngan.SNGANConfig.from_dict(results["config"]["config"])
    trainer = wgan_gp.WGANGPTrainer(sngan.build_generator(config),
                                    sngan.build_discriminator(config, "critic"), config)
    trainer.compile()
    stages.load_stage(trainer, os.path.join(out, "pretrain", "stage2", "checkpoint"))
    saved = keras.models.load_model(os.path.join(out, "pretrain", "generator.keras"))
    for a, b in zip(trainer.generator.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    ae = autoencoder.AutoencoderTrainer(sngan.build_discriminator(config, "encoder"),
                                        sngan.build_generator(config), config)
    ae.compile()
    stages.load_stage(ae, os.path.join(out, "pretrain", "stage1", "checkpoint"))
    assert not all(np.array_equal(a, b) for a, b in zip(ae.decoder.get_weights(),
                                                         saved.get_weights()))
    # Stage checkpoints record the budget: 6 iterations in epochs of 3.
    with open(os.path.join(out, "pretrain", "stage2", "checkpoint", "state.json")) as f:
        assert json.load(f)["epochs_done"] == 2


@pytest.mark.slow
def test_rerun_resumes_without_training_again(smoke_run, capsys):
    recipe, out = smoke_run
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        before = json.load(f)
    capsys.readouterr()
    assert recipe.main(TINY + ["--out", out]) == 0
    printed = capsys.readouterr().out
    assert "[stage1_autoencoder] finished earlier" in printed
    assert "[stage2_wgan_gp] finished earlier" in printed
    assert "finished earlier" in printed.split("== fold")[-1]
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        after = json.load(f)
    assert after["folds"] == before["folds"]


@pytest.mark.slow
def test_bad_options_exit_2_with_a_message(smoke_run, capsys):
    recipe, out = smoke_run
    assert recipe.main(TINY[2:] + ["--folds", "zz", "--out", out]) == 2
    assert "unknown fold" in capsys.readouterr().err
    assert recipe.main(TINY + ["--classes", "anger,joy", "--out", out]) == 2
    assert "joy" in capsys.readouterr().err
    assert recipe.main(["--data", out, "--out", out]) == 2
    assert "--corpus" in capsys.readouterr().err


def test_iemocap_folds_leave_one_session_out_and_sessions_are_clients():
    recipe = _recipe()
    stats = {"speakers": {f"Ses0{i}{g}": {"session": f"Ses0{i}",
                                          "gender": "female" if g == "F" else "male"}
                          for i in range(1, 6) for g in "FM"}}
    folds = recipe.select_folds("iemocap", stats, None)
    assert [f[0] for f in folds] == [f"session{i}" for i in range(1, 6)]
    name, train, held = folds[0]
    assert held == ["Ses01F", "Ses01M"] and len(train) == 8 and not set(train) & set(held)
    clients = recipe.client_groups("iemocap", train, stats, clients=3)
    assert clients == [[f"Ses0{i}F", f"Ses0{i}M"] for i in range(2, 6)]
    assert recipe.select_folds("iemocap", stats, "Ses03M")[0][0] == "session3"
    assert [f[0] for f in recipe.select_folds("iemocap", stats, "2")] == ["session1", "session2"]


def test_speaker_folds_put_the_validation_speaker_into_training():
    recipe = _recipe()
    stats = {"speakers": {s: {"session": s, "gender": "male"} for s in ("03", "08", "09", "10")}}
    folds = recipe.select_folds("emodb", stats, "08,10")
    assert [(f[0], f[1], f[2]) for f in folds] == [
        ("08", ["03", "09", "10"], ["08"]), ("10", ["03", "08", "09"], ["10"])]
    groups = recipe.client_groups("emodb", folds[0][1], stats, clients=2)
    assert groups == [["03", "09"], ["10"]]
    with pytest.raises(ValueError, match="unknown fold"):
        recipe.select_folds("emodb", stats, "11")
