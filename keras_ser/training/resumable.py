"""One resumable way to train every model of keras-ser: `fit_resumable`.

Every trainer (the multitask GAN, the SN-GAN stages, the baseline GAN, the SER network,
the CRNN) is trained by a single ``fit`` call wrapped here, with these callbacks:

* `Checkpoint`, a `keras.callbacks.BackupAndRestore` that writes SIGKILL-safe
  checkpoints: after every epoch the weights (Keras 3's ``save_weights`` stores the
  variables of every optimiser the trainer holds as an attribute, so no separate
  optimiser file is needed) go to a new file, then ``state.json`` -- finished epochs,
  per-epoch logs, the early-stopping state and the names of the last and best weight
  files -- is renamed into place, then older weight files are removed. The state file is
  the single source of truth, so a run killed at any moment resumes from a consistent
  epoch. Unlike its parent it keeps the checkpoint after training (a finished stage is
  recognised, not retrained) and stores the state of other callbacks.
* `PersistentEarlyStopping`, a `keras.callbacks.EarlyStopping` whose counters survive a
  restart; its best epoch's weights are the checkpoint's ``best`` file.
* `Reseed`, which sets every `keras.random.SeedGenerator` of the trainer (GAN noise,
  dropout) from ``(seed, epoch)`` at the start of each epoch (their state is not in
  ``save_weights``).
* `DivergenceGuard`, a `keras.callbacks.TerminateOnNaN` that raises `DivergenceError`
  naming the stage, the loss, the step and the last good checkpoint.

Under a `tf.distribute` strategy (`keras_ser.distribute`, ``--strategy``) the trainer
is built in the strategy's scope and ``fit`` splits every global batch across the
replicas; under `tf.distribute.MultiWorkerMirroredStrategy`, whose Keras ``fit`` is broken
in Keras 3.15 (keras-team/keras#20585), `keras_ser.distribute.custom_fit` runs the same
``train_step`` with the same callbacks. Only the chief keeps checkpoints; the other
workers restore from the chief's folder.

The training data must be a function of the first epoch to train: ``data(first_epoch)``
returns the batches of epochs ``first_epoch .. epochs - 1`` in one dataset, each epoch's
crops, warps and order drawn from seeds derived from ``(seed, epoch)``
(`keras_ser.seeds`). Together with `Reseed`, a resumed run then draws exactly what an
uninterrupted one draws, and gives bit-identical weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_ser import distribute, io, seeds

STATE = "state.json"


class DivergenceError(RuntimeError):
    """A training stage produced a NaN, infinite or exploding loss."""


def is_scalar(value) -> bool:
    """True for a number or a 0-d array/tensor (what epoch logs may hold as a metric)."""
    if isinstance(value, (bool, str, dict, list, tuple)) or value is None:
        return False
    return np.ndim(value) == 0


def _scalars(logs) -> dict:
    return {k: float(v) for k, v in (logs or {}).items() if is_scalar(v)}


def read_state(directory: str) -> dict | None:
    """The ``state.json`` of a checkpoint folder, or None when there is none.

    Raises:
        ValueError: The file is not valid JSON (the message names it).
    """
    path = os.path.join(directory, STATE)
    return io.read_json(path) if os.path.isfile(path) else None


class PersistentEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose counters can be saved and restored.

    Semantics are Keras's (with ``min_delta=0`` a new best must be strictly better;
    training stops once ``patience`` epochs in a row brought none). The best weights are
    not held in memory: `Checkpoint` keeps the best epoch's weight file, and
    `fit_resumable` reloads it at the end (Chang & Scherer 2017, Sec. "Experimental
    Design": restore the weights of the best validation epoch). Counting epochs without
    a new best is our reading of their "5 consecutive iterations with lower accuracy
    values".

    Args:
        monitor: Epoch-log key, e.g. ``"val_ua"``.
        patience: Epochs without a new best before stopping.
        mode: ``"max"`` or ``"min"``.

    Raises:
        ValueError: (at an epoch end) the monitored value is missing or NaN.
    """

    def __init__(self, monitor: str = "val_ua", patience: int = 5, mode: str = "max"):
        super().__init__(monitor=monitor, patience=int(patience), mode=mode,
                         restore_best_weights=False)
        self._restored = None

    def get_state(self) -> dict:
        """JSON-ready counters."""
        best = None if self.best is None or not np.isfinite(self.best) else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch),
                "stopped_epoch": int(self.stopped_epoch), "monitor": self.monitor}

    def set_state(self, state: dict) -> None:
        """Restore `get_state` counters (also across the ``on_train_begin`` reset)."""
        self._restored = dict(state)
        self._apply()

    def _apply(self):
        state = self._restored
        self.wait, self.best_epoch = state["wait"], state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best = state["best"]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored is not None:
            self._apply()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"'{self.monitor}' is not in the epoch logs (keys: "
                             f"{sorted(logs or {})}); add the callback that computes it "
                             "before the early stopping")
        if math.isnan(float(value)):
            raise ValueError(f"'{self.monitor}' is NaN at epoch {epoch + 1}")
        super().on_epoch_end(epoch, logs)

    def improved_at(self, epoch: int) -> bool:
        """True when ``epoch`` (0-based) set the current best."""
        return self.best is not None and self.best_epoch == epoch and self.wait == 0


class Checkpoint(keras.callbacks.BackupAndRestore):
    """Atomic end-of-epoch checkpoint of a trainer, with the state needed to resume.

    Files in ``directory``: ``state.json`` and at most two weight files
    (``epoch-NNNN.weights.h5``, the last and, with early stopping, the best epoch).
    ``state.json`` holds ``epochs_done``, ``history`` (scalar logs per epoch),
    ``last`` and ``best`` (weight file names), ``early_stopping`` (counters) and
    ``stopped`` (early stopping ended the run).

    Args:
        directory: Checkpoint folder (created).
        early_stopping: The run's `PersistentEarlyStopping`, or None; it must come
            before this callback in the callback list.
        stage: Name used in messages.

    Raises:
        ValueError: (on restore) the checkpoint does not fit the model -- another
            configuration wrote it; the message names the folder.
    """

    def __init__(self, directory: str, early_stopping: PersistentEarlyStopping | None = None,
                 stage: str = "training"):
        super().__init__(directory, save_freq="epoch", delete_checkpoint=False)
        self.directory = directory
        # A non-chief worker restores from the chief's checkpoint (`distribute.chief_path`).
        self.source = distribute.chief_path(directory)
        self.early_stopping = early_stopping
        self.stage = stage
        self.state = read_state(self.source) or {
            "epochs_done": 0, "history": [], "last": None, "best": None,
            "early_stopping": None, "stopped": False}
        if early_stopping is not None and self.state["early_stopping"] is not None:
            early_stopping.set_state(self.state["early_stopping"])

    @property
    def epochs_done(self) -> int:
        """Epochs finished and saved."""
        return int(self.state["epochs_done"])

    @property
    def stopped(self) -> bool:
        """True when early stopping ended the saved run."""
        return bool(self.state["stopped"])

    def _load(self, model, name):
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(os.path.join(self.source, name))
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"checkpoint in {self.source} does not match this model "
                             f"({err}); remove the folder to start '{self.stage}' over") from err

    def restore(self, model) -> int:
        """Load the last saved weights (and optimiser state) into ``model``.

        Returns:
            The number of finished epochs (0 when nothing was saved).
        """
        if self.state["last"] is not None:
            self._load(model, self.state["last"])
        return self.epochs_done

    def restore_best(self, model) -> None:
        """Load the best epoch's weights (the last ones without early stopping).

        Raises:
            FileNotFoundError: No epoch has finished.
        """
        name = self.state["best"] or self.state["last"]
        if name is None:
            raise FileNotFoundError(f"{self.source}: no finished epoch to restore")
        self._load(model, name)

    def _load_model(self):
        done = self.restore(self.model)
        self.model._initial_epoch = done or None

    def on_epoch_end(self, epoch, logs=None):
        self._logs = _scalars(logs)
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        epoch = self._current_epoch
        name = f"epoch-{epoch:04d}.weights.h5"
        # Every worker saves (reading distributed variables may be collective); only the
        # chief's copy is kept (`distribute.ScratchFolder`).
        with distribute.ScratchFolder(self.directory) as folder:
            self._write(folder, name, epoch)

    def _write(self, folder, name, epoch):
        io.save_weights(self.model, os.path.join(folder, name))
        state = dict(self.state)
        state["history"] = list(state["history"]) + [getattr(self, "_logs", {})]
        state["epochs_done"], state["last"] = epoch, name
        if self.early_stopping is not None:
            if self.early_stopping.improved_at(epoch - 1):
                state["best"] = name
            state["early_stopping"] = self.early_stopping.get_state()
            state["stopped"] = bool(self.model.stop_training)
        io.write_json(os.path.join(folder, STATE), state)
        self.state = state
        keep = {state["last"], state["best"]}
        for old in os.listdir(folder):
            if old.endswith(".weights.h5") and old not in keep:
                os.remove(os.path.join(folder, old))

    def on_train_end(self, logs=None):
        """Keep the checkpoint: it tells a later run that this stage is done."""


class Reseed(keras.callbacks.Callback):
    """Seed every `keras.random.SeedGenerator` of the model from ``(seed, epoch)``.

    Args:
        seed: The run's seed for this trainer.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        seeds.reseed_generators(self.model, self.seed, epoch)


class DivergenceGuard(keras.callbacks.TerminateOnNaN):
    """Stop with `DivergenceError` when a logged value is NaN, infinite or > ``limit``.

    Checked after every batch and epoch; the message names the stage, the value, where
    it happened and the last good checkpoint, which is left untouched (a checkpoint is
    only written at the end of an epoch whose every step passed).

    Args:
        stage: Stage name for the message.
        checkpoint: Checkpoint folder named in the message.
        limit: Largest allowed absolute value.
        keys: Log keys to check (default: all scalar keys).
    """

    def __init__(self, stage: str, checkpoint: str, limit: float = 1e6,
                 keys: Sequence[str] | None = None):
        super().__init__()
        self.stage, self.checkpoint = stage, checkpoint
        self.limit = float(limit)
        self.keys = tuple(keys) if keys else None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str):
        for key, value in _scalars(logs).items():
            if self.keys is not None and key not in self.keys:
                continue
            if math.isfinite(value) and abs(value) <= self.limit:
                continue
            state = read_state(self.checkpoint)
            done = state["epochs_done"] if state else 0
            kept = (f"the last good checkpoint (epoch {done}) is kept in {self.checkpoint}"
                    if done else f"no epoch had finished, nothing was saved in "
                                 f"{self.checkpoint}")
            problem = ("is not finite" if not math.isfinite(value)
                       else f"exceeds {self.limit:g} in magnitude")
            self.model.stop_training = True
            raise DivergenceError(
                f"stage '{self.stage}' diverged: {key} = {value} {problem} at {where}; "
                f"{kept}. Lower the learning rate or restart the stage from that checkpoint.")

    def on_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"the end of epoch {epoch + 1}")


class LambdaLogs(keras.callbacks.Callback):
    """Add entries to the epoch logs from ``fn(epoch) -> dict`` of scalars.

    Place it before the callbacks that read them (early stopping, checkpoint,
    TensorBoard): Keras hands one logs dict to the callbacks in list order.
    """

    def __init__(self, fn: Callable[[int], dict]):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.fn(epoch))


def fit_resumable(trainer: keras.Model, data: Callable[[int], object], *, directory: str,
                  epochs: int, seed: int, steps_per_epoch: int | None = None,
                  stage: str = "training", early_stopping: PersistentEarlyStopping | None = None,
                  callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                  log_dir: str | None = None, divergence_limit: float | None = None) -> dict:
    """Train ``trainer`` for up to ``epochs`` epochs, resuming from ``directory``.

    A finished run (all epochs done, or stopped early) is not trained again: its last
    weights are loaded and its state returned. With early stopping the best epoch's
    weights are loaded at the end; otherwise the last epoch's.

    Args:
        trainer: A compiled model whose optimisers are built (they are restored).
        data: ``data(first_epoch)`` -> dataset of the batches of epochs
            ``first_epoch .. epochs - 1`` (drawn from seeds of ``(seed, epoch)``), or a
            ``(dataset, steps_per_epoch)`` pair.
        directory: Checkpoint folder of this run.
        epochs: Epoch budget.
        seed: Seed of the trainer's random generators (`Reseed`).
        steps_per_epoch: Batches per epoch (needed when ``data`` spans several epochs).
        stage: Name for messages and the divergence error.
        early_stopping: Optional `PersistentEarlyStopping` (its monitor must be in the
            logs: put the callback computing it in ``callbacks``).
        callbacks: Further callbacks, run before early stopping and the checkpoint.
        verbose: Keras ``fit`` verbosity.
        log_dir: TensorBoard folder (epoch-level scalars), or None.
        divergence_limit: Bound of `DivergenceGuard`; None for no guard.

    Returns:
        The checkpoint state (see `Checkpoint`), restored epochs included.

    Raises:
        DivergenceError: A guarded loss diverged.
        ValueError: The checkpoint does not fit the trainer.
    """
    checkpoint = Checkpoint(directory, early_stopping, stage)
    done = checkpoint.epochs_done
    if done >= epochs or checkpoint.stopped:
        if done:
            checkpoint.restore_best(trainer)
        print(f"[{stage}] finished earlier ({done} epochs); checkpoint {checkpoint.source}")
        return checkpoint.state
    if done:
        print(f"[{stage}] resuming after epoch {done} of {epochs}")
    guard = ([DivergenceGuard(stage, directory, divergence_limit)]
             if divergence_limit is not None else [])
    every = [*guard, Reseed(seed), *callbacks,
             *([early_stopping] if early_stopping is not None else []), checkpoint]
    if log_dir:
        every.append(keras.callbacks.TensorBoard(log_dir, write_graph=False,
                                                 update_freq="epoch"))
    dataset = data(done)
    if isinstance(dataset, tuple):
        dataset, steps_per_epoch = dataset
    try:
        if distribute.is_multiworker(trainer.distribute_strategy):
            distribute.custom_fit(trainer, dataset, epochs=epochs, initial_epoch=done,
                                  steps_per_epoch=steps_per_epoch, callbacks=every,
                                  verbose=verbose)
        else:
            trainer.fit(dataset, epochs=epochs, initial_epoch=done,
                        steps_per_epoch=steps_per_epoch, callbacks=every, verbose=verbose,
                        shuffle=False)
    finally:
        trainer._initial_epoch = None
    checkpoint.restore_best(trainer)
    return checkpoint.state
