"""Callbacks shared by the trainers: resumable early stopping on a validation score.

`ResumableEarlyStopping` joins three things Keras keeps apart, because they must agree
after an interruption: the epoch counter, the early-stopping state (best score, epochs
without improvement, best weights) and the model and optimiser state. Everything is
written atomically at the end of every epoch, so a run killed at any moment (SIGKILL
included) resumes from its last finished epoch with the same patience count and the
same best weights.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import keras
import numpy as np


def atomic_json(path: str, document) -> None:
    """Write ``document`` as JSON to ``path`` through a temporary file and a rename.

    NumPy scalars are written as floats; a reader never sees a half-written file.
    """
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1, default=float)
    os.replace(tmp, path)


def _save_weights(model: keras.Model, path: str) -> None:
    tmp = f"{path[:-len('.weights.h5')]}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def _optimizer_arrays(optimizers: dict) -> dict:
    return {f"{name}/{i}": np.asarray(v.numpy())
            for name, opt in optimizers.items() for i, v in enumerate(opt.variables)}


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Early stopping on a validation score with per-epoch checkpoints for resuming.

    After every epoch: if ``logs[monitor]`` is a new best (strictly greater with
    ``mode="max"``) the weights are saved as the best ones and the patience count
    resets; after ``patience`` consecutive epochs without a new best, training stops.
    At the end of training the best weights are restored (Chang & Scherer 2017,
    Sec. 3.3: stop after 5 epochs without improvement of validation accuracy, keep the
    best model).

    Call `restore` before ``fit`` and pass its return value as ``initial_epoch``.

    Args:
        directory: Checkpoint folder (created): ``state.json``, ``last.weights.h5``,
            ``best.weights.h5``, ``optimizers.npz``.
        monitor: Key of the epoch logs to maximise or minimise (e.g. ``"val_ua"``).
        patience: Epochs without a new best before stopping.
        mode: ``"max"`` or ``"min"``.
        optimizers: Name -> optimiser whose variables are checkpointed too (they must be
            built before `restore`).

    Raises:
        ValueError: Unknown mode; (at epoch end) the monitored key is missing or NaN.
    """

    def __init__(self, directory: str, monitor: str = "val_ua", patience: int = 5,
                 mode: str = "max", optimizers: Optional[dict] = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = directory
        self.monitor = monitor
        self.patience = int(patience)
        self.mode = mode
        self.optimizers = optimizers or {}
        self.state = {"epoch": -1, "best": None, "best_epoch": None, "wait": 0,
                      "stopped": False, "history": []}

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def finished(self) -> bool:
        """True when a restored run had already stopped early."""
        return bool(self.state["stopped"])

    def restore(self, model: keras.Model) -> int:
        """Load the last checkpoint into ``model`` and the optimisers, if there is one.

        Returns:
            The epoch to start from (0 for a fresh run).

        Raises:
            ValueError: The checkpoint does not fit the model or optimisers (e.g. a
                different configuration wrote it); the message names the folder.
        """
        os.makedirs(self.directory, exist_ok=True)
        state_path = self._path("state.json")
        if not os.path.isfile(state_path):
            return 0
        with open(state_path, encoding="utf-8") as f:
            self.state = json.load(f)
        try:
            model.load_weights(self._path("last.weights.h5"))
            if self.optimizers:
                arrays = np.load(self._path("optimizers.npz"))
                for name, opt in self.optimizers.items():
                    for i, v in enumerate(opt.variables):
                        v.assign(arrays[f"{name}/{i}"])
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"checkpoint in {self.directory} does not match this model "
                             f"({err}); remove the folder to start over") from err
        return int(self.state["epoch"]) + 1

    def _better(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"'{self.monitor}' is not in the epoch logs "
                             f"(keys: {sorted(logs)}); add the callback that computes it first")
        value = float(logs[self.monitor])
        if math.isnan(value):
            raise ValueError(f"'{self.monitor}' is NaN at epoch {epoch + 1}")
        if self._better(value):
            self.state.update(best=value, best_epoch=epoch, wait=0)
            _save_weights(self.model, self._path("best.weights.h5"))
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch
        self.state["history"].append({k: float(v) for k, v in logs.items()
                                      if np.ndim(v) == 0})
        if self.state["wait"] >= self.patience:
            self.state["stopped"] = True
            self.model.stop_training = True
        _save_weights(self.model, self._path("last.weights.h5"))
        if self.optimizers:
            tmp = self._path("optimizers.tmp.npz")
            np.savez(tmp, **_optimizer_arrays(self.optimizers))
            os.replace(tmp, self._path("optimizers.npz"))
        atomic_json(self._path("state.json"), self.state)

    def restore_best(self, model: keras.Model) -> None:
        """Load the best weights into ``model``.

        Raises:
            FileNotFoundError: No epoch has finished yet.
        """
        path = self._path("best.weights.h5")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no best weights yet (no finished epoch)")
        model.load_weights(path)

    def on_train_end(self, logs=None):
        if os.path.isfile(self._path("best.weights.h5")):
            self.restore_best(self.model)


class LambdaLogs(keras.callbacks.Callback):
    """Adds entries to the epoch logs from a function of the epoch.

    Place it before callbacks that read those entries (early stopping, TensorBoard):
    Keras hands the same logs dict to the callbacks in list order.

    Args:
        fn: ``fn(epoch) -> dict`` of scalar logs, e.g. ``{"val_ua": 0.61}``.
    """

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.fn(epoch))
