"""fit_resumable and its callbacks: atomic checkpoints, persistent early stopping, the
divergence guard, and bit-identical resume of every trainer after a kill."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import io, metrics, seeds
from keras_ser.models import bagan, crnn, dcgan, sngan
from keras_ser.patches import PatchBank
from keras_ser.protocols import crnn as crnn_protocol
from keras_ser.training import autoencoder, conditional_gan, multitask_gan, ser, wgan_gp
from keras_ser.training import bagan as bagan_training
from keras_ser.training.resumable import (STATE, Checkpoint, DivergenceError, LambdaLogs,
                                          PersistentEarlyStopping, fit_resumable, read_state)

# --- a small regression model for the callbacks ----------------------------------------

STEPS, BATCH = 4, 8
TRUE_W = np.array([[1.0], [-2.0], [0.5]], np.float32)


def _dense(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _regression(stop, nan_at=None, seed=0):
    """``data(first)`` of fit_resumable: the batches of epochs ``first .. stop - 1``, each
    epoch drawn from ``seeds.derive(seed, epoch)``; ``nan_at=(epoch, step)`` (0-based)
    turns that batch into NaN."""
    def data(first):
        xs = []
        for epoch in range(first, stop):
            x = np.random.default_rng(seeds.derive(seed, epoch)).normal(
                size=(STEPS * BATCH, 3)).astype(np.float32)
            if nan_at is not None and nan_at[0] == epoch:
                x[nan_at[1] * BATCH:(nan_at[1] + 1) * BATCH] = np.nan
            xs.append(x)
        x = np.concatenate(xs)
        return tf.data.Dataset.from_tensor_slices((x, x @ TRUE_W)).batch(BATCH)
    return data


def _fit(model, folder, epochs, stop=None, nan_at=None, **kwargs):
    kwargs.setdefault("stage", "regression")
    return fit_resumable(model, _regression(stop or epochs, nan_at), directory=str(folder),
                         epochs=epochs, seed=0, steps_per_epoch=STEPS, verbose=0, **kwargs)


def _scores(values):
    return LambdaLogs(lambda epoch: {"val_score": values[epoch]})


class _EpochSnapshots(keras.callbacks.Callback):
    """Weights at every epoch end and the checkpoint folder at every epoch start (when
    the previous epoch's checkpoint is complete)."""

    def __init__(self, folder):
        super().__init__()
        self.folder = str(folder)
        self.weights, self.files, self.logs = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.files.append(_contents(self.folder))

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(_values(self.model.weights))
        self.logs.append({k: float(v) for k, v in logs.items()})


def _contents(folder):
    """``{file name: bytes}`` of a folder (empty when it does not exist)."""
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(_values(got), _values(want)):
        assert np.array_equal(a, b)


# --- (a) Checkpoint --------------------------------------------------------------------

def test_checkpoint_names_its_one_weight_file_in_state_json_without_early_stopping(tmp_path):
    model = _dense()
    snaps = _EpochSnapshots(tmp_path)
    state = _fit(model, tmp_path, 3, callbacks=[snaps])
    assert sorted(os.listdir(tmp_path)) == ["epoch-0003.weights.h5", STATE]
    assert state == read_state(str(tmp_path)) == io.read_json(str(tmp_path / STATE))
    assert (state["epochs_done"], state["last"], state["best"], state["stopped"]) == (
        3, "epoch-0003.weights.h5", None, False)
    # The history holds each epoch's logs as fit reported them; the folder never held
    # more than the one weight file of the last finished epoch.
    assert state["history"] == snaps.logs
    assert [sorted(f) for f in snaps.files] == [
        [], ["epoch-0001.weights.h5", STATE], ["epoch-0002.weights.h5", STATE]]


def test_checkpoint_keeps_only_the_last_and_the_best_weight_files(tmp_path):
    model = _dense()
    snaps = _EpochSnapshots(tmp_path)
    values = [0.1, 0.6, 0.4, 0.3]  # best at epoch 2
    state = _fit(model, tmp_path, 4, callbacks=[_scores(values), snaps],
                 early_stopping=PersistentEarlyStopping("val_score", patience=5))
    assert (state["last"], state["best"]) == ("epoch-0004.weights.h5", "epoch-0002.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.weights.h5", "epoch-0004.weights.h5",
                                            STATE]
    assert [sorted(f) for f in snaps.files] == [
        [], ["epoch-0001.weights.h5", STATE], ["epoch-0002.weights.h5", STATE],
        ["epoch-0002.weights.h5", "epoch-0003.weights.h5", STATE]]
    # fit_resumable leaves the best epoch's weights in the model.
    _assert_same(model.weights, snaps.weights[1])


def test_checkpoint_restores_weights_optimiser_iterations_and_slots_after_a_restart(tmp_path):
    trained = _dense()
    _fit(trained, tmp_path, 2)
    fresh = _dense(seed=1)  # a new process: other initial weights, an unused optimiser
    assert not np.array_equal(fresh.weights[0], trained.weights[0])
    assert int(fresh.optimizer.iterations) == 0
    assert Checkpoint(str(tmp_path)).restore(fresh) == 2
    _assert_same(fresh.weights, trained.weights)
    assert int(fresh.optimizer.iterations) == int(trained.optimizer.iterations) == 2 * STEPS
    # Adam's first and second moments of every weight.
    assert len(fresh.optimizer.variables) == 2 + 2 * len(fresh.trainable_weights)
    _assert_same(fresh.optimizer.variables, trained.optimizer.variables)


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_usable(tmp_path,
                                                                          monkeypatch):
    model = _dense()
    _fit(model, tmp_path, 2, stop=4)
    saved = _contents(str(tmp_path))
    epoch2 = _values(model.weights)

    def torn_write(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a weight file")
        raise OSError("disk full")

    # Killed while writing the weights of epoch 3: nothing of it is visible.
    monkeypatch.setattr(model, "save_weights", torn_write)
    with pytest.raises(OSError, match="disk full"):
        _fit(model, tmp_path, 3, stop=4)
    assert _contents(str(tmp_path)) == saved
    monkeypatch.undo()

    # Killed while renaming state.json into place: the old state still names epoch 2.
    replace = os.replace

    def no_state(src, dst):
        if os.path.basename(dst) == STATE:
            raise OSError("killed")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", no_state)
    with pytest.raises(OSError, match="killed"):
        _fit(_dense(), tmp_path, 3, stop=4)
    monkeypatch.undo()
    assert read_state(str(tmp_path)) == io.read_json(str(tmp_path / STATE))
    assert read_state(str(tmp_path))["last"] == "epoch-0002.weights.h5"
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    fresh = _dense(seed=3)
    assert Checkpoint(str(tmp_path)).restore(fresh) == 2
    _assert_same(fresh.weights, epoch2)
    # A resumed run replaces the orphaned file of epoch 3 with its own.
    state = _fit(_dense(), tmp_path, 4)
    assert state["epochs_done"] == 4
    assert sorted(os.listdir(tmp_path)) == ["epoch-0004.weights.h5", STATE]


def test_a_checkpoint_of_another_model_is_refused_with_the_folder_named(tmp_path):
    _fit(_dense(), tmp_path, 1)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=f"checkpoint in {re.escape(str(tmp_path))} does "
                                         "not match this model"):
        Checkpoint(str(tmp_path), stage="regression").restore(other)


# --- (b) PersistentEarlyStopping -------------------------------------------------------

#: Best 0.5 at epoch 2; 0.4, 0.5 (equal: not a strict improvement), 0.3 -> stop after 5.
SCORES = [0.1, 0.5, 0.4, 0.5, 0.3, 0.45, 0.2, 0.9, 0.9, 0.9]


def test_stops_after_patience_epochs_without_a_strict_improvement_leaving_the_best(tmp_path):
    model = _dense()
    snaps = _EpochSnapshots(tmp_path)
    state = _fit(model, tmp_path, 10, callbacks=[_scores(SCORES), snaps],
                 early_stopping=PersistentEarlyStopping("val_score", patience=3))
    assert state["epochs_done"] == len(snaps.weights) == 5 and state["stopped"]
    assert state["early_stopping"] == {"wait": 3, "best": 0.5, "best_epoch": 1,
                                       "stopped_epoch": 4, "monitor": "val_score"}
    assert state["best"] == "epoch-0002.weights.h5"
    assert [h["val_score"] for h in state["history"]] == SCORES[:5]
    _assert_same(model.weights, snaps.weights[1])
    assert not np.array_equal(snaps.weights[1][0], snaps.weights[4][0])


def test_early_stopping_counters_survive_a_restart(tmp_path):
    straight = _dense()
    want = _fit(straight, tmp_path / "straight", 10, callbacks=[_scores(SCORES)],
                early_stopping=PersistentEarlyStopping("val_score", patience=3))
    first = _fit(_dense(), tmp_path / "resumed", 3, stop=10, callbacks=[_scores(SCORES)],
                 early_stopping=PersistentEarlyStopping("val_score", patience=3))
    assert first["early_stopping"] == {"wait": 1, "best": 0.5, "best_epoch": 1,
                                       "stopped_epoch": 0, "monitor": "val_score"}
    # A new process: fresh model, fresh callback; the checkpoint hands it the counters.
    stopper = PersistentEarlyStopping("val_score", patience=3)
    Checkpoint(str(tmp_path / "resumed"), stopper)
    assert stopper.get_state() == first["early_stopping"]
    resumed = _dense()
    got = _fit(resumed, tmp_path / "resumed", 10, callbacks=[_scores(SCORES)],
               early_stopping=PersistentEarlyStopping("val_score", patience=3))
    assert got == want
    _assert_same(resumed.weights, straight.weights)


def test_a_finished_run_is_not_trained_again(tmp_path):
    model = _dense()
    want = _fit(model, tmp_path, 10, callbacks=[_scores(SCORES)],
                early_stopping=PersistentEarlyStopping("val_score", patience=3))
    files = _contents(str(tmp_path))
    again = _dense(seed=5)
    counter = _EpochSnapshots(tmp_path)
    got = _fit(again, tmp_path, 10, callbacks=[_scores(SCORES), counter],
               early_stopping=PersistentEarlyStopping("val_score", patience=3))
    assert got == want and counter.weights == []
    assert _contents(str(tmp_path)) == files
    _assert_same(again.weights, model.weights)


def test_missing_or_nan_monitored_value_raises(tmp_path):
    with pytest.raises(ValueError, match="'val_score' is not in the epoch logs"):
        _fit(_dense(), tmp_path / "a", 1,
             early_stopping=PersistentEarlyStopping("val_score"))
    with pytest.raises(ValueError, match="'val_score' is NaN at epoch 1"):
        _fit(_dense(), tmp_path / "b", 1, callbacks=[_scores([float("nan")])],
             early_stopping=PersistentEarlyStopping("val_score"))


# --- (c) DivergenceGuard ---------------------------------------------------------------

def test_a_nan_loss_raises_naming_stage_key_and_last_good_epoch(tmp_path):
    model = _dense()
    folder = str(tmp_path / "ckpt")
    snaps = _EpochSnapshots(folder)
    with pytest.raises(DivergenceError) as info:
        _fit(model, folder, 4, stage="stage1_autoencoder", nan_at=(1, 1),
             callbacks=[snaps], divergence_limit=1e6)
    message = str(info.value)
    assert message.startswith("stage 'stage1_autoencoder' diverged: loss = nan is not finite"
                              " at epoch 2, step 2;")
    assert f"the last good checkpoint (epoch 1) is kept in {folder}" in message
    # The checkpoint of epoch 1 is byte for byte what it was before epoch 2 started.
    assert _contents(folder) == snaps.files[1]
    assert sorted(snaps.files[1]) == ["epoch-0001.weights.h5", STATE]
    restored = _dense(seed=4)
    assert Checkpoint(folder).restore(restored) == 1
    _assert_same(restored.weights, snaps.weights[0])


def test_a_loss_beyond_the_limit_raises_before_anything_is_saved(tmp_path):
    with pytest.raises(DivergenceError) as info:
        _fit(_dense(), tmp_path, 2, stage="ae", divergence_limit=1e-3)
    message = str(info.value)
    assert "stage 'ae' diverged: loss = " in message
    assert "exceeds 0.001 in magnitude at epoch 1, step 1" in message
    assert f"no epoch had finished, nothing was saved in {tmp_path}" in message
    assert os.listdir(tmp_path) == []


# --- (d) exact resume of every trainer -----------------------------------------------

EPOCHS = 3
RUN_SEED = 11


class _Killed(Exception):
    pass


class _KillDuringEpoch(keras.callbacks.Callback):
    """Raises after the first step of an epoch (0-based): the process dies after the
    previous epoch's checkpoint and before this one's, with a step of it trained in
    memory only."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch:
            raise _Killed(f"killed in epoch {self.epoch + 1}")


def _optimiser_variables(trainer):
    found = [trainer.optimizer] + [getattr(trainer, n, None)
                                   for n in ("g_optimizer", "d_optimizer")]
    found += list(getattr(trainer, "task_optimizers", {}).values())
    out, seen = [], set()
    for opt in found:
        if opt is not None and id(opt) not in seen:
            seen.add(id(opt))
            out += _values(opt.variables)
    return out


def _assert_exact_resume(tmp_path, build, data, steps, eagerly=True):
    """3 epochs straight == 2 epochs, a kill during epoch 3, and a resume by a freshly
    built trainer: the same weights and optimiser state, bit for bit.

    ``eagerly`` skips tracing the train step three times (a fresh trainer traces anew),
    which costs more than the 13 steps themselves; what a resume restores -- variables,
    optimiser slots, generator seeds, the epoch's batches -- is the same in both modes.
    """
    def run(folder, callbacks=()):
        keras.utils.set_random_seed(5)
        trainer = build()
        trainer.run_eagerly = eagerly
        initial = _values(trainer.weights)
        state = fit_resumable(trainer, data, directory=str(tmp_path / folder), epochs=EPOCHS,
                              seed=RUN_SEED, steps_per_epoch=steps, verbose=0,
                              callbacks=list(callbacks))
        return trainer, state, initial

    straight, want, initial = run("straight")
    with pytest.raises(_Killed):
        run("resumed", [_KillDuringEpoch(2)])
    assert read_state(str(tmp_path / "resumed"))["epochs_done"] == 2
    resumed, got, _ = run("resumed")
    assert got["epochs_done"] == EPOCHS and got["history"] == want["history"]
    _assert_same(resumed.weights, straight.weights)
    _assert_same(_optimiser_variables(resumed), _optimiser_variables(straight))
    # Training moved the weights, so the comparison is not between two initialisations.
    assert not all(np.array_equal(a, b) for a, b in zip(initial, _values(straight.weights)))


# Tiny SN-GAN: 16 x 16 patches, narrow layers, 3 emotions.
SN = sngan.get_sngan_preset("cpu", frames=16, n_mels=16, z_dim=8, n_classes=3, dense_units=16,
                            g_widths=(8, 8, 4, 4, 4, 4, 4, 4), d_widths=(4, 4, 4, 4, 8, 8, 8, 8),
                            batch_size=4)
BA = bagan.get_baseline_preset("cpu", frames=16, n_mels=16, z_dim=8, n_classes=3,
                               d_widths=(4, 4, 8, 8), g_widths=(8, 8, 4, 4), kernel_size=3,
                               batch_size=4)
DC = dcgan.DCGANConfig(crop_frames=16, n_mels=16, filters=4, kernel_size=2, fc_units=8,
                       z_dim=8, batch_size=4, learning_rate=1e-3)
PATCH_STEPS = 1


@pytest.fixture(scope="module")
def bank():
    """Random "log-mels" (dB) of 9 utterances of 3 emotions, 12 to 40 frames long."""
    rng = np.random.default_rng(0)
    mels = [rng.normal(-40.0, 12.0, (n, 16)).astype(np.float32)
            for n in rng.integers(12, 41, 9)]
    return PatchBank(mels, np.arange(9) % 3, ["a", "b", "c"] * 3,
                     [f"u{i}" for i in range(9)])


def _patches(bank, pairs=False):
    def data(first):
        ds = bank.dataset(4, 16, bank.minmax(), seed=3, epochs=(first, EPOCHS),
                          steps=PATCH_STEPS)
        return ser.as_pairs(ds) if pairs else ds
    return data


def _multitask_gan():
    heads = dcgan.model_heads("multitask_dcgan", "emotion", 3)
    trainer = multitask_gan.MultitaskGANTrainer(dcgan.build_discriminator(DC, heads),
                                                dcgan.build_generator(DC), seed=1)
    trainer.compile(**multitask_gan.adam_optimizers(trainer, 1e-3))
    return trainer


def _labelled_crops(first):
    parts = []
    for epoch in range(first, EPOCHS):
        rng = np.random.default_rng(seeds.derive(4, epoch))
        n = PATCH_STEPS * 4
        parts.append({
            "features": rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32),
            "emotion": rng.integers(0, 3, n).astype(np.int32),
            "valence": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "activation": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "unlabelled": rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32)})
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return tf.data.Dataset.from_tensor_slices(joined).batch(4)


def _wgan_gp():
    critic = sngan.build_discriminator(SN, "critic")
    trainer = wgan_gp.WGANGPTrainer(sngan.build_generator(SN), critic, SN, seed=1)
    trainer.compile(**wgan_gp.optimizers(SN))
    return trainer


def _conditional_gan():
    trainer = conditional_gan.ConditionalGANTrainer(
        sngan.build_generator(SN), sngan.build_discriminator(SN, "fake_class"), SN, seed=1)
    trainer.compile(**conditional_gan.optimizers(SN))
    return trainer


def _autoencoder():
    trainer = autoencoder.AutoencoderTrainer(sngan.build_discriminator(SN, "encoder"),
                                             sngan.build_generator(SN), SN)
    trainer.compile(**autoencoder.optimizers(SN))
    return trainer


def _baseline_autoencoder():
    trainer = bagan_training.BaselineAutoencoderTrainer(
        bagan.build_baseline_encoder(BA), bagan.build_baseline_generator(BA), BA)
    trainer.compile(**bagan_training.autoencoder_optimizers(BA))
    return trainer


def _baseline_gan():
    encoder = bagan.build_baseline_encoder(BA)
    codes = np.random.default_rng(2).standard_normal((12, BA.z_dim))
    latents = bagan.ClassLatents.fit(codes, np.arange(12) % 3, n_classes=3)
    trainer = bagan_training.BaselineGANTrainer(
        bagan.build_baseline_generator(BA), bagan.build_baseline_discriminator(encoder, BA),
        latents, BA, seed=1)
    trainer.compile(**bagan_training.gan_optimizers(BA))
    return trainer


#: Tiny CRNN: 16 mels, 2 blocks, 5 LSTM units (as in test_crnn.py).
CRNN_TINY = crnn.get_config("cpu", n_mels=16, num_classes=3, conv_filters=(4, 4),
                            conv_strides=((2, 2), (1, 2)), lstm_units=5)


def _crnn():
    return crnn_protocol.build_model(CRNN_TINY, crnn_protocol.TrainConfig())


def _utterances(first):
    """Padded z-scored "log-mels" of 12 frames with 6 to 12 valid, per-epoch seeded."""
    feats, lengths, labels = [], [], []
    for epoch in range(first, EPOCHS):
        rng = np.random.default_rng(seeds.derive(6, epoch))
        n = PATCH_STEPS * 4
        length = rng.integers(6, 13, n).astype(np.int32)
        x = rng.normal(size=(n, 12, 16)).astype(np.float32)
        x[np.arange(12)[None, :] >= length[:, None]] = 0.0
        feats.append(x), lengths.append(length), labels.append(rng.integers(0, 3, n))
    inputs = {"features": np.concatenate(feats), "length": np.concatenate(lengths)}
    targets = np.concatenate(labels).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(4)


@pytest.mark.slow
@pytest.mark.parametrize("build, data", [
    (_multitask_gan, lambda bank: _labelled_crops),
    (_wgan_gp, _patches),
    (_conditional_gan, _patches),
    (_autoencoder, _patches),
    (_baseline_autoencoder, _patches),
    (_baseline_gan, _patches),
    (lambda: ser.build_ser_network(SN), lambda bank: _patches(bank, pairs=True)),
    (_crnn, lambda bank: _utterances),
], ids=["multitask_dcgan", "wgan_gp", "conditional_gan", "sngan_autoencoder",
        "baseline_autoencoder", "baseline_gan", "ser_network", "crnn"])
def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
        tmp_path, bank, build, data):
    _assert_exact_resume(tmp_path, build, data(bank), PATCH_STEPS)


@pytest.mark.slow
def test_a_resumed_traced_train_step_ends_with_the_weights_of_an_uninterrupted_one(
        tmp_path, bank):
    # The compiled (graph) path of real runs, on the cheapest trainer with dropout and
    # batch norm: the dropout generators are reseeded inside the traced step too.
    _assert_exact_resume(tmp_path, _baseline_autoencoder, _patches(bank), PATCH_STEPS,
                         eagerly=False)
