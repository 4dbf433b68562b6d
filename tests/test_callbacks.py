"""Resumable early stopping: patience, best weights, and resuming after an interruption."""

import json
import os

import keras
import numpy as np
import pytest

from keras_ser.training.callbacks import LambdaLogs, ResumableEarlyStopping


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    return x, x @ np.array([[1.0], [-2.0], [0.5]], np.float32)


def _scores(values):
    return LambdaLogs(lambda epoch: {"val_score": values[epoch]})


def test_stops_after_patience_epochs_without_a_new_best_and_restores_the_best(tmp_path):
    model = _model()
    x, y = _data()
    values = [0.1, 0.5, 0.4, 0.5, 0.3, 0.45, 0.2, 0.9, 0.9, 0.9]
    snapshots = []
    stopper = ResumableEarlyStopping(str(tmp_path), "val_score", patience=3,
                                     optimizers={"adam": model.optimizer})
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: snapshots.append(model.get_weights()))
    stopper.restore(model)
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[_scores(values), keep, stopper])
    # Best 0.5 at epoch 2; 0.4, 0.5 (not strictly better), 0.3 -> stop after epoch 5.
    assert len(history.history["loss"]) == 5
    assert stopper.state["best_epoch"] == 1 and stopper.state["stopped"]
    for got, want in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_allclose(got, want)


def test_resume_continues_from_the_last_epoch_with_model_and_optimiser_state(tmp_path):
    x, y = _data()
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    full = _model()
    full.fit(x, y, epochs=6, batch_size=8, shuffle=False, verbose=0)

    first = _model()
    stopper = ResumableEarlyStopping(str(tmp_path), "val_score", patience=5,
                                     optimizers={"adam": first.optimizer})
    assert stopper.restore(first) == 0
    first.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0,
              callbacks=[_scores(values), stopper])

    second = _model()  # a new process: fresh weights and optimiser
    resumed = ResumableEarlyStopping(str(tmp_path), "val_score", patience=5,
                                     optimizers={"adam": second.optimizer})
    start = resumed.restore(second)
    assert start == 3
    second.fit(x, y, epochs=6, initial_epoch=start, batch_size=8, shuffle=False, verbose=0,
               callbacks=[_scores(values), resumed])
    # Same weights as six uninterrupted epochs (the Adam moments were restored too).
    for got, want in zip(second.get_weights(), full.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with open(os.path.join(tmp_path, "state.json")) as f:
        state = json.load(f)
    assert [round(h["val_score"], 2) for h in state["history"]] == values
    assert not any(name.endswith(".tmp") or ".tmp." in name for name in os.listdir(tmp_path))


def test_a_checkpoint_from_another_model_is_refused_with_the_folder_named(tmp_path):
    model = _model()
    x, y = _data()
    stopper = ResumableEarlyStopping(str(tmp_path), "val_score", patience=2)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[_scores([0.3]), stopper])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=str(tmp_path)):
        ResumableEarlyStopping(str(tmp_path), "val_score").restore(other)


def test_missing_or_nan_monitored_value_raises(tmp_path):
    model = _model()
    x, y = _data()
    with pytest.raises(ValueError, match="'val_score' is not in the epoch logs"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[ResumableEarlyStopping(str(tmp_path), "val_score")])
    with pytest.raises(ValueError, match="NaN"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[_scores([float("nan")]),
                             ResumableEarlyStopping(str(tmp_path / "b"), "val_score")])
