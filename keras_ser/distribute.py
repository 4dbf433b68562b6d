"""Scaling out on TensorFlow's own engines: one `tf.distribute` strategy for every trainer.

A recipe picks the strategy once (``--strategy``, `configure`); it is made the current
strategy of the process (`tf.distribute.experimental_set_strategy`), so every model,
optimiser, metric and `keras.random.SeedGenerator` built afterwards is a distributed
variable, and `keras_ser.training.resumable.fit_resumable` hands its `tf.data` input to
the strategy. Nothing is home-made: the replicas are TensorFlow's, gradients are summed
across replicas by the Keras optimisers (`tf.distribute.ReplicaContext.all_reduce`),
batches are split by `tf.distribute.Strategy.experimental_distribute_dataset`.

What a ``train_step`` must do so that N replicas with global batch B compute what one
replica computes with batch B (checked in ``tests/test_distribute.py``):

* **Losses over the global batch.** Each replica sees B / N examples and the optimiser
  sums the replicas' gradients, so a per-replica mean loss is divided by N before the
  gradient (`scale_loss`, what `tf.nn.compute_average_loss` does with the global batch
  size; Keras's compiled losses do the same). A mean over a data-dependent count (the
  multitask heads' labelled examples) divides by the count summed over the replicas
  (`global_mean`).
* **Random draws.** A `keras.random.SeedGenerator` is one mirrored variable, so every
  replica would draw the *same* noise for different examples. `replica_draw` draws the
  global batch's values and keeps this replica's rows, so replica r's examples get the
  noise one replica would give them (GAN noise, the WGAN-GP mixing weights). Dropout
  masks are still drawn per replica from the same state (Keras's `Dropout` owns its
  generator); tests compare with dropout off.
* **Batch statistics over the global batch.** Every batch-norm layer is built with
  ``synchronized=`` `synchronized_batch_norm` (Keras's `BatchNormalization`, which all-reduces
  its moments, `SyncBatchNormalization` in Keras 2), and the CRNN's masked batch norm sums
  its moments with `all_reduce_sum`. Ioffe & Szegedy's statistics are then the paper's
  batch's, whatever the number of replicas. With one replica both are no-ops.
* **The gradient penalty** (Gulrajani et al. 2017, eq. 3) is a mean over examples of each
  example's critic-gradient norm at its own mix of real and generated input, so it is a
  per-replica mean like any loss term and is scaled with the critic loss; its mixing
  weights come from `replica_draw`.
* **Spectral normalisation** (`keras.layers.SpectralNormalization`): its power iteration
  reads only the kernel and ``u``, which are identical on every replica, so each replica
  computes the same ``u`` and the mirrored assignment keeps them equal; no
  synchronisation is needed (Miyato et al., ICLR 2018, Alg. 1).

``multiworker`` is `tf.distribute.MultiWorkerMirroredStrategy` from ``TF_CONFIG`` (or
`tf.distribute.cluster_resolver.SlurmClusterResolver` inside a Slurm job). Keras 3.15's
``fit`` fails under it (keras-team/keras#20585, see ``../shared/STACK_NOTES.md``), so
`fit_resumable` drives the same ``train_step`` with `custom_fit` (`strategy.run` over the
distributed dataset, the same callbacks); the chief writes checkpoints and results, other
workers write to a scratch folder (`worker_folder`) and restore from the chief's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

STRATEGIES = ("default", "mirrored", "multiworker")
TUNER_ROLES = ("local", "chief", "worker")

#: Non-chief scratch folders -> the chief's run folders (`worker_folder`, `chief_path`).
_SCRATCH: dict = {}


def add_options(p: argparse.ArgumentParser) -> None:
    """The scaling options every recipe has: ``--strategy``, ``--devices``,
    ``--tuner-role``, ``--tuner-address``, ``--data-service``."""
    g = p.add_argument_group("scaling out")
    g.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy of every trainer: default (one device), "
                        "mirrored (all local GPUs, or --devices), multiworker (TF_CONFIG, "
                        "or a Slurm job)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="mirrored: replicas (default: every GPU, else 1 CPU); on a CPU-only "
                        "host N logical CPU devices are made (for testing)")
    g.add_argument("--tuner-role", choices=TUNER_ROLES, default="local",
                   help="distributed KerasTuner search: the chief runs the oracle at "
                        "--tuner-address, workers run trials (default local)")
    g.add_argument("--tuner-address", default=None, metavar="HOST:PORT",
                   help="the oracle's address (default: KERASTUNER_ORACLE_IP/_PORT)")
    g.add_argument("--data-service", default=None, metavar="grpc://HOST:PORT",
                   help="tf.data service dispatcher for the training input pipeline")


def _logical_cpus(n: int) -> list:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        raise RuntimeError(f"cannot split the CPU into {n} logical devices: TensorFlow "
                           f"already initialised its devices ({err}); choose the strategy "
                           "before running any TensorFlow op") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _cluster_resolver():
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if os.environ.get("SLURM_PROCID") is not None:
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    raise ValueError("--strategy multiworker needs TF_CONFIG (a JSON cluster spec and this "
                     "task's type and index) or a Slurm job (SLURM_* variables)")


def make_strategy(name: str = "default", devices: int | None = None):
    """The `tf.distribute.Strategy` of ``name``.

    Args:
        name: ``"default"`` (TensorFlow's default strategy: one device, no wrapping),
            ``"mirrored"`` (`tf.distribute.MirroredStrategy` over ``devices`` local
            devices: GPUs when there are any, else ``devices`` logical CPUs made from
            the one CPU, which is how the tests and this 2-core machine run it) or
            ``"multiworker"`` (`tf.distribute.MultiWorkerMirroredStrategy`, cluster from
            ``TF_CONFIG`` or `SlurmClusterResolver`).
        devices: Mirrored replicas; None: every GPU, or 1 CPU.

    Returns:
        The strategy.

    Raises:
        ValueError: Unknown name, ``devices`` < 1 or more than the GPUs present, or
            ``multiworker`` without a cluster description.
        RuntimeError: Logical CPUs are needed after TensorFlow initialised its devices.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if devices is not None and devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_cluster_resolver())
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if devices is not None and devices > len(gpus):
            raise ValueError(f"--devices {devices}: only {len(gpus)} GPUs are visible")
        names = [f"/gpu:{i}" for i in range(devices or len(gpus))]
    else:
        names = _logical_cpus(devices or 1)
    return tf.distribute.MirroredStrategy(names)


def configure(args) -> object:
    """Make ``args.strategy`` (and ``args.devices``) the process's current strategy and
    hand ``args.data_service`` to the input pipelines; called once by every recipe
    before any TensorFlow work (`keras_ser.experiment.load_corpus`).

    Returns:
        The strategy.

    Raises:
        ValueError, RuntimeError: As `make_strategy`.
    """
    import tensorflow as tf

    name = getattr(args, "strategy", "default") or "default"
    strategy = make_strategy(name, getattr(args, "devices", None))
    if name != "default":
        tf.distribute.experimental_set_strategy(strategy)
    from keras_ser import data

    data.set_data_service(getattr(args, "data_service", None) or None)
    return strategy


def current():
    """The strategy in force (TensorFlow's current one)."""
    import tensorflow as tf

    return tf.distribute.get_strategy()


def num_replicas() -> int:
    """Replicas of the current strategy, over all workers (1 without one)."""
    return int(current().num_replicas_in_sync)


def is_multiworker(strategy=None) -> bool:
    """True when ``strategy`` (default: the current one) spans several workers."""
    import tensorflow as tf

    strategy = strategy or current()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task() -> tuple:
    """``(task_type, task_id)`` of this process in a multi-worker cluster, else
    ``("chief", 0)``."""
    strategy = current()
    resolver = getattr(strategy, "cluster_resolver", None) if is_multiworker(strategy) else None
    if resolver is None or not resolver.task_type:
        return "chief", 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief() -> bool:
    """The process that writes checkpoints and results: the ``chief`` task, or worker 0
    of a cluster without one (TensorFlow's convention); always True on one host."""
    strategy = current()
    if not is_multiworker(strategy):
        return True
    kind, index = task()
    if kind == "chief":
        return True
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return kind == "worker" and index == 0 and "chief" not in spec


def worker_folder(out: str) -> str:
    """Where this process writes the run ``out``: ``out`` itself on the chief, a scratch
    folder ``out/.workers/<type>-<index>`` on other workers (their results are the chief's;
    they restore checkpoints from the chief's folder, `chief_path`)."""
    if is_chief():
        return out
    kind, index = task()
    path = os.path.join(out, ".workers", f"{kind}-{index}")
    os.makedirs(path, exist_ok=True)
    _SCRATCH[os.path.abspath(path)] = os.path.abspath(out)
    return path


def chief_path(path: str) -> str:
    """The chief's counterpart of a path under this worker's scratch folder (unchanged on
    the chief and outside a scratch folder)."""
    full = os.path.abspath(path)
    for scratch, out in _SCRATCH.items():
        if full == scratch or full.startswith(scratch + os.sep):
            return out + full[len(scratch):]
    return path


class ScratchFolder:
    """A temporary folder for a non-chief worker's copy of a collective write (removed
    on exit); on the chief, the real folder."""

    def __init__(self, directory: str):
        self.directory = directory
        self.chief = is_chief()

    def __enter__(self) -> str:
        if self.chief:
            return self.directory
        self._tmp = tempfile.mkdtemp(prefix="keras-ser-worker-")
        return self._tmp

    def __exit__(self, *exc):
        if not self.chief:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return False


# --- what a train_step uses --------------------------------------------------------


def _replica_context():
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def scale_loss(loss):
    """A per-replica mean loss divided by the replicas in sync, so the optimiser's sum
    over replicas is the gradient of the global batch's mean (`tf.nn.
    compute_average_loss` with the global batch size). Identity with one replica.

    Args:
        loss: Scalar tensor, the mean over this replica's examples.
    """
    ctx = _replica_context()
    if ctx is None:
        return loss
    import tensorflow as tf

    return loss / tf.cast(ctx.num_replicas_in_sync, loss.dtype)


def all_reduce_sum(*values):
    """The sums of ``values`` over the replicas (differentiable; identity with one
    replica). Returns a tuple, or the one value."""
    ctx = _replica_context()
    if ctx is not None:
        import tensorflow as tf

        values = tuple(ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(values)))
    return values if len(values) != 1 else values[0]


def global_mean(total, count):
    """A mean over a data-dependent count across the replicas.

    Args:
        total: This replica's sum of the per-example values (scalar).
        count: This replica's number of examples counted (scalar float).

    Returns:
        ``(loss, mean)``: ``loss = total / max(global count, 1)`` is this replica's share
        (the replicas' gradients sum to the global mean's gradient); ``mean`` is the
        global mean itself (the same on every replica, for logging).
    """
    import keras

    global_total, global_count = all_reduce_sum(total, count)
    global_count = keras.ops.maximum(global_count, 1.0)
    return total / global_count, global_total / global_count


def replica_draw(sample, shape, **kwargs):
    """A random draw for this replica's examples that equals the rows one replica
    would draw for them.

    Args:
        sample: A `keras.random` function (``normal``, ``uniform``, ``randint``).
        shape: ``(batch, ...)`` of this replica's draw; ``batch`` is the per-replica
            batch (the global batch split evenly, as `experimental_distribute_dataset`
            does).
        **kwargs: Passed on (``seed=`` a `keras.random.SeedGenerator`, ranges, dtype).

    Returns:
        A tensor of ``shape``: rows ``r * batch .. (r + 1) * batch`` of a draw of
        ``(replicas * batch, ...)``, r this replica's index (over all workers).
    """
    ctx = _replica_context()
    if ctx is None:
        return sample(shape, **kwargs)
    batch = shape[0]
    n = ctx.num_replicas_in_sync
    full = sample((batch * n, *shape[1:]), **kwargs)
    start = ctx.replica_id_in_sync_group * batch
    return full[start:start + batch]


def synchronized_batch_norm() -> bool:
    """True when batch-norm layers built now must all-reduce their moments (the
    current strategy has more than one replica)."""
    return num_replicas() > 1


# --- multi-worker training loop ----------------------------------------------------


def distribute_input(strategy, dataset):
    """``dataset`` split across ``strategy``'s replicas so that every global batch is
    divided the same way whatever the number of workers: auto-sharding by data
    (`tf.data.experimental.AutoShardPolicy.DATA`), so each worker keeps its replicas'
    share of every global batch (with the tf.data service, `--data-service`, the input
    is processed once for all of them)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def custom_fit(model, dataset, *, epochs: int, initial_epoch: int = 0,
               steps_per_epoch: int | None, callbacks=(), verbose=1):
    """``model.fit`` for `tf.distribute.MultiWorkerMirroredStrategy`: the model's own
    ``train_step`` under ``strategy.run`` over the distributed dataset, with Keras's
    callbacks (progress bar, history, checkpoints) called as ``fit`` calls them.

    Args:
        model: A compiled `keras.Model` built under the strategy.
        dataset: Batches of epochs ``initial_epoch .. epochs - 1`` (global batch size).
        epochs, initial_epoch, steps_per_epoch: As ``fit`` (``steps_per_epoch``
            required: the workers must agree on the number of collective steps).
        callbacks: Keras callbacks.
        verbose: 0 (silent), 1 or ``"auto"`` (progress bar) or 2 (a line per epoch).

    Returns:
        The `keras.callbacks.History`.

    Raises:
        ValueError: No ``steps_per_epoch``.

    Why: keras-team/keras#20585 (``fit`` under this strategy fails in Keras 3.15).
    """
    import keras
    import tensorflow as tf

    if steps_per_epoch is None:
        raise ValueError("multi-worker training needs steps_per_epoch")
    strategy = model.distribute_strategy
    iterator = iter(distribute_input(strategy, dataset))
    verbose = 1 if verbose == "auto" else verbose  # as fit

    @tf.function
    def step(it):
        outputs = strategy.run(model.train_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in outputs.items()}

    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList(
        [*callbacks, history], add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    model._initial_epoch = initial_epoch
    callbacks.on_train_begin()
    initial_epoch = model._initial_epoch or initial_epoch
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            callbacks.on_train_batch_begin(batch)
            logs = {k: float(v) for k, v in step(iterator).items()}
            callbacks.on_train_batch_end(batch, logs)
        epoch_logs = dict(logs)
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return history


def tf_config(workers: list, index: int, kind: str = "worker") -> str:
    """A ``TF_CONFIG`` JSON string for ``workers`` (``host:port`` strings), this task
    ``(kind, index)`` (README, "Scaling out")."""
    return json.dumps({"cluster": {"worker": list(workers)},
                       "task": {"type": kind, "index": int(index)}})
