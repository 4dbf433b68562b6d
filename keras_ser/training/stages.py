"""Running one GAN training stage: per-epoch checkpoints, resuming, divergence guard.

The SN-GAN stages (`AutoencoderTrainer`, `WGANGPTrainer`, `ConditionalGANTrainer`) and
the baseline's stages train for a fixed number of iterations, not to an early-stopping
criterion, so their checkpoint is simpler than `ResumableEarlyStopping`'s: after every
epoch (``steps_per_epoch`` iterations) the trainer's weights (all sub-models), its
optimisers' variables and ``state.json`` (finished epochs, per-epoch logs) are written
atomically. `fit_stage` resumes from the last finished epoch and skips a finished stage.

`DivergenceGuard` stops a stage whose running loss becomes NaN, infinite or larger than
a bound: it raises `DivergenceError` naming the stage, the loss, the epoch and step and
the last good checkpoint, which it leaves untouched (a checkpoint is only written at
the end of an epoch whose every step passed the guard).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import keras
import numpy as np

from keras_ser.training.callbacks import _optimizer_arrays, _save_weights, atomic_json

STATE = "state.json"
WEIGHTS = "last.weights.h5"
OPTIMIZERS = "optimizers.npz"


class DivergenceError(RuntimeError):
    """A training stage produced a NaN, infinite or exploding loss."""


class DivergenceGuard(keras.callbacks.Callback):
    """Raise `DivergenceError` when a logged loss is not finite or exceeds ``limit``.

    Args:
        stage: Stage name for the message.
        checkpoint: Checkpoint folder named in the message.
        limit: Largest allowed absolute value of any logged scalar.
        keys: Log keys to check (default: every key).
    """

    def __init__(self, stage: str, checkpoint: str, limit: float = 1e6,
                 keys: Sequence[str] | None = None):
        super().__init__()
        self.stage = stage
        self.checkpoint = checkpoint
        self.limit = float(limit)
        self.keys = tuple(keys) if keys else None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str):
        for key, value in (logs or {}).items():
            if self.keys is not None and key not in self.keys:
                continue
            if np.ndim(value) != 0:
                continue
            value = float(value)
            if math.isfinite(value) and abs(value) <= self.limit:
                continue
            last = _finished_epochs(self.checkpoint)
            kept = (f"the last good checkpoint (epoch {last}) is kept in {self.checkpoint}"
                    if last else f"no epoch had finished, nothing was saved in "
                                 f"{self.checkpoint}")
            problem = "is not finite" if not math.isfinite(value) else \
                f"exceeds {self.limit:g} in magnitude"
            self.model.stop_training = True
            raise DivergenceError(
                f"stage '{self.stage}' diverged: {key} = {value} {problem} at {where}; "
                f"{kept}. Lower the learning rate or restart the stage from that checkpoint.")

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"the end of epoch {epoch + 1}")


def _finished_epochs(directory: str) -> int:
    path = os.path.join(directory, STATE)
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["epochs_done"])


class StageCheckpoint(keras.callbacks.Callback):
    """Atomic end-of-epoch checkpoint of a trainer and its optimisers.

    Args:
        directory: Checkpoint folder (created).
        optimizers: Name -> optimiser (the trainer's ``optimizers`` property).
        state: The state dict to continue (from `load_stage`), or ``None``.
    """

    def __init__(self, directory: str, optimizers: dict, state: dict | None = None):
        super().__init__()
        self.directory = directory
        self.optimizers = optimizers
        self.state = state or {"epochs_done": 0, "history": []}

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        _save_weights(self.model, os.path.join(self.directory, WEIGHTS))
        tmp = os.path.join(self.directory, "optimizers.tmp.npz")
        np.savez(tmp, **_optimizer_arrays(self.optimizers))
        os.replace(tmp, os.path.join(self.directory, OPTIMIZERS))
        self.state["epochs_done"] = epoch + 1
        self.state["history"].append({k: float(v) for k, v in (logs or {}).items()
                                      if np.ndim(v) == 0})
        atomic_json(os.path.join(self.directory, STATE), self.state)


def load_stage(trainer: keras.Model, directory: str, optimizers: dict | None = None) -> dict:
    """Restore a trainer (weights and optimisers) from ``directory`` if it holds a checkpoint.

    ``optimizers`` defaults to the trainer's ``optimizers`` property (name -> optimiser).

    Returns:
        The checkpoint state ``{"epochs_done": int, "history": [...]}`` (zero epochs and
        an empty history when there is none).

    Raises:
        ValueError: The checkpoint does not fit the trainer (another configuration wrote
            it); the message names the folder.
    """
    path = os.path.join(directory, STATE)
    if not os.path.isfile(path):
        return {"epochs_done": 0, "history": []}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    try:
        trainer.load_weights(os.path.join(directory, WEIGHTS))
        arrays = np.load(os.path.join(directory, OPTIMIZERS))
        for name, opt in (optimizers or trainer.optimizers).items():
            for i, v in enumerate(opt.variables):
                v.assign(arrays[f"{name}/{i}"])
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"checkpoint in {directory} does not match this stage ({err}); "
                         f"remove the folder to start the stage over") from err
    return state


def fit_stage(trainer: keras.Model, dataset, *, stage: str, directory: str, epochs: int,
              steps_per_epoch: int, callbacks: Sequence = (), verbose="auto",
              log_dir: str | None = None, limit: float = 1e6,
              optimizers: dict | None = None) -> dict:
    """Train one stage for ``epochs * steps_per_epoch`` iterations, resumably.

    Args:
        trainer: A compiled trainer with an ``optimizers`` dict property.
        dataset: Endless ``tf.data.Dataset`` of training batches.
        stage: Name for messages and logs.
        directory: Checkpoint folder of this stage.
        epochs, steps_per_epoch: The iteration budget.
        callbacks: Extra callbacks (spectrogram grids, ...).
        verbose: Keras ``fit`` verbosity (progress bar by default).
        log_dir: TensorBoard folder; ``None`` for none.
        limit: `DivergenceGuard` bound on the absolute value of every logged scalar.
        optimizers: Name -> built optimiser to checkpoint (default: the trainer's
            ``optimizers`` property; a plain compiled model passes
            ``{"opt": model.optimizer}``).

    Returns:
        The stage state: ``epochs_done`` and per-epoch ``history`` (restored epochs
        included).

    Raises:
        DivergenceError: A loss became NaN/inf or exceeded ``limit`` (the last good
            checkpoint is kept).
        ValueError: An existing checkpoint does not fit the trainer.
    """
    optimizers = optimizers or trainer.optimizers
    state = load_stage(trainer, directory, optimizers)
    done = int(state["epochs_done"])
    if done >= epochs:
        print(f"[{stage}] finished earlier ({done} epochs); checkpoint {directory}")
        return state
    if done:
        print(f"[{stage}] resuming after epoch {done} of {epochs}")
    checkpoint = StageCheckpoint(directory, optimizers, state)
    all_callbacks = [DivergenceGuard(stage, directory, limit=limit), *callbacks, checkpoint]
    if log_dir:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False,
                                                         update_freq="epoch"))
    trainer.fit(dataset, epochs=epochs, initial_epoch=done, steps_per_epoch=steps_per_epoch,
                callbacks=all_callbacks, verbose=verbose)
    return checkpoint.state
