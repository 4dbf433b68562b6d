"""KerasTuner random search over the hyper-parameters Chang & Scherer (2017) searched.

The paper (Sec. "Experimental Design") picks, per model, the crop width, the conv filter
size (tied to the crop width), the number of filters, the batch size and the learning
rate by random search, with validation accuracy as the objective. `DCGANHyperModel`
does this with KerasTuner's `RandomSearch`: every trial trains one model with the full
protocol of `keras_ser.protocols.multitask_dcgan.train_fold` (early stopping on the
validation speaker) on a single search fold and reports the best validation UA. The
test speaker of that fold is never scored during the search.

The ranges are data (`SEARCH_SPACES`). The paper lists them, but the text we have lost
them; only "number of convolutional filters (step size 4)" survives, so filters move in
steps of 4 and the bounds are ours: crops of 1-4 s at the ``chang`` 32 ms hop.

Distributed search (`TunerCluster`, `run_search`; KerasTuner's "Distributed
hyperparameter tuning" guide, https://keras.io/guides/keras_tuner/distributed_tuning/):
``--tuner-role chief`` runs the oracle, ``--tuner-role worker`` processes (any number,
any host) run trials; both take ``--tuner-address HOST:PORT``. KerasTuner reads the
role and address from ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT``; `tuner_environment` sets them for one search and restores
them afterwards. A recipe searching several rows (models, strategies) serves the k-th
searched row's oracle on ``PORT + k``, one after the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence

import keras_tuner as kt

from keras_ser import io
from keras_ser.models import dcgan

OBJECTIVE = "val_primary_ua"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Ranges of the random search.

    Attributes:
        crop_frames: Crop widths W in frames (multiples of 16); the filter size follows
            with `keras_ser.models.dcgan.tied_kernel_size`.
        filters: ``(min, max)`` filters of the first conv layer, sampled in steps of 4.
        batch_sizes: Batch sizes.
        learning_rate: ``(min, max)`` Adam learning rate, sampled log-uniformly.
    """

    crop_frames: tuple = (32, 48, 64)
    filters: tuple = (4, 16)
    batch_sizes: tuple = (16, 32, 64)
    learning_rate: tuple = (1e-4, 1e-3)


SEARCH_SPACES = {
    "paper": SearchSpace(crop_frames=(32, 48, 64, 96, 128), filters=(16, 128),
                         batch_sizes=(32, 64, 128), learning_rate=(1e-5, 1e-3)),
    "cpu": SearchSpace(),
}


def sample_config(hp: kt.HyperParameters, base: dcgan.DCGANConfig,
                  space: SearchSpace) -> dcgan.DCGANConfig:
    """A `DCGANConfig` with the searched fields drawn from ``hp``.

    Raises:
        ValueError: A sampled crop width that is not a multiple of 16.
    """
    crop = hp.Choice("crop_frames", list(space.crop_frames))
    return base.replace(
        crop_frames=crop, kernel_size=dcgan.tied_kernel_size(crop),
        filters=hp.Int("filters", space.filters[0], space.filters[1], step=4),
        batch_size=hp.Choice("batch_size", list(space.batch_sizes)),
        learning_rate=hp.Float("learning_rate", space.learning_rate[0],
                               space.learning_rate[1], sampling="log"))


class DCGANHyperModel(kt.HyperModel):
    """One of the four models, trained on one fold per trial.

    Args:
        model: One of `keras_ser.models.dcgan.MODELS`.
        base: Preset whose other fields stay fixed.
        space: `SearchSpace`.
        fold: The search fold (its validation speaker scores the trial; its test speaker
            is never scored during the search).
        records, corpus: As `keras_ser.protocols.multitask_dcgan.train_fold`.
        trial_dir: Folder holding one sub-folder per trial configuration.
        max_epochs, patience, seed, unlabelled, minmax: Passed to ``train_fold``.
    """

    def __init__(self, model: str, base: dcgan.DCGANConfig, space: SearchSpace, fold,
                 records: str, corpus, trial_dir: str, *, minmax: tuple,
                 max_epochs: int = 30, patience: int = 5, seed: int = 0,
                 unlabelled: Sequence[str] = (), verbose=0):
        super().__init__(name=model)
        self.model_name = model
        self.base, self.space, self.fold = base, space, fold
        self.records, self.corpus = records, corpus
        self.trial_dir = trial_dir
        self.max_epochs, self.patience, self.seed = max_epochs, patience, seed
        self.unlabelled, self.minmax, self.verbose = unlabelled, minmax, verbose

    def build(self, hp):
        """The compiled trainer of the sampled configuration (KerasTuner API)."""
        from keras_ser.protocols import multitask_dcgan as protocol

        return protocol.build_trainer(self.model_name, sample_config(hp, self.base, self.space),
                                      self.corpus.spec, self.seed)

    def fit(self, hp, model, *args, **kwargs):
        """Train one fold with the sampled configuration; return the best validation UA.

        Each configuration trains in its own resumable folder (named by a hash of the
        configuration) whose ``result.json`` is read back, so an interrupted search
        continues where it stopped.
        """
        from keras_ser.protocols import multitask_dcgan as protocol

        config = sample_config(hp, self.base, self.space)
        key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
        folder = os.path.join(self.trial_dir, key[:12])
        done = os.path.join(folder, "result.json")
        if os.path.isfile(done):
            result = io.read_json(done)
        else:
            result = protocol.train_fold(
                self.model_name, config, self.fold, self.records, self.corpus, folder,
                minmax=self.minmax, max_epochs=self.max_epochs, patience=self.patience,
                seed=self.seed, unlabelled=self.unlabelled, verbose=self.verbose,
                trainer=model)
            io.write_json(done, result)
        return {OBJECTIVE: result["validation"]["primary_ua"]}


#: KerasTuner's variables for distributed tuning, read when a tuner is made.
TUNER_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
#: Seconds a worker waits for the chief's oracle without a sign of the chief: the hour
#: KerasTuner's own client waits for an answer (``keras_tuner``'s ``oracle_client``).
WAIT_SECONDS = 3600
#: Later searches (ports) a waiting worker looks at to tell that its search is over.
MAX_SEARCHES = 8


@dataclasses.dataclass
class TunerCluster:
    """This process's part in a KerasTuner search (`tuner_cluster`).

    Attributes:
        role: ``"local"`` (one process), ``"chief"`` (runs the oracle) or ``"worker"``
            (runs trials for the chief).
        host, port: The chief's address; the k-th search of a run (k = 0, 1, ...) has
            its oracle on ``port + k``.
        tuner_id: ``KERASTUNER_TUNER_ID``: ``"chief"``, or the worker's unique id.
        searches: Searches started so far (the next search's k).
    """

    role: str = "local"
    host: str | None = None
    port: int | None = None
    tuner_id: str | None = None
    searches: int = 0

    @property
    def distributed(self) -> bool:
        """A chief or a worker."""
        return self.role != "local"

    @property
    def worker(self) -> bool:
        """A worker: it runs trials only, the chief keeps the results."""
        return self.role == "worker"

    def address(self, index: int = 0) -> str:
        """``HOST:PORT`` of the ``index``-th search's oracle."""
        return f"{self.host}:{self.port + index}"


def _host_port(host: str, port, what: str) -> tuple:
    """``(host, int port)`` checked; ValueError naming ``what`` otherwise."""
    text = f"{host}:{port}"
    ipv6 = ":" in host
    if (not host or any(c.isspace() for c in host) or not str(port).isdigit()
            or ipv6 and not (host.startswith("[") and host.endswith("]"))
            or not 0 < int(port) < 65536):
        raise ValueError(f"{what}: expected HOST:PORT with a port in 1-65535 (e.g. "
                         f"10.0.0.5:8470, or [::1]:8470 for IPv6), got {text!r}")
    return host, int(port)


def tuner_cluster(role: str = "local", address: str | None = None,
                  environ=None) -> TunerCluster:
    """Map ``--tuner-role``/``--tuner-address`` (or KerasTuner's own variables) to a
    `TunerCluster`.

    ``chief`` and ``worker`` take the chief's address from ``address`` (``HOST:PORT``,
    the same on every process: the chief serves there, workers connect there), else
    from ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``. The chief's id is
    ``"chief"``; a worker's is ``worker-<host>-<pid>``, unique per process. ``local``
    (the default) leaves the environment to the user: without
    ``KERASTUNER_ORACLE_IP`` the search runs in this process; with it, KerasTuner's
    variables decide as KerasTuner does (``KERASTUNER_TUNER_ID`` containing ``chief``
    makes the chief, any other id a worker, which keeps that id: give a restarted
    worker its old id and it resumes the trial it had).

    Args:
        role: ``"local"``, ``"chief"`` or ``"worker"``.
        address: ``HOST:PORT`` (IPv6 hosts in brackets), or None.
        environ: Variables to read (default ``os.environ``).

    Raises:
        ValueError: An unknown role, a malformed address or port, ``address`` with
            role ``local``, a chief or worker without any address, or
            ``KERASTUNER_ORACLE_IP`` set without ``KERASTUNER_TUNER_ID`` or a port.

    Source: KerasTuner, "Distributed hyperparameter tuning"
    (https://keras.io/guides/keras_tuner/distributed_tuning/).
    """
    environ = os.environ if environ is None else environ
    if role not in ("local", "chief", "worker"):
        raise ValueError(f"tuner role {role!r}: expected local, chief or worker")
    ip, port = environ.get("KERASTUNER_ORACLE_IP"), environ.get("KERASTUNER_ORACLE_PORT")
    given = "KERASTUNER_ORACLE_IP/KERASTUNER_ORACLE_PORT"
    if role == "local":
        if address is not None:
            raise ValueError("--tuner-address needs --tuner-role chief or worker")
        if ip is None:
            return TunerCluster()
        tuner_id = environ.get("KERASTUNER_TUNER_ID")
        if not tuner_id:
            raise ValueError("KERASTUNER_ORACLE_IP is set but KERASTUNER_TUNER_ID is not: "
                             "set it to 'chief' on the chief and to a unique id on each "
                             "worker, or use --tuner-role and --tuner-address")
        host, port = _host_port(ip, port or "", given)
        return TunerCluster("chief" if "chief" in tuner_id else "worker", host, port,
                            tuner_id)
    if address is not None:
        host, _, port = address.rpartition(":")
        given = "--tuner-address"
    elif ip is None or port is None:
        raise ValueError(f"--tuner-role {role} needs --tuner-address HOST:PORT (or "
                         "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)")
    else:
        host = ip
    host, port = _host_port(host, port, given)
    # KerasTuner takes any id containing "chief" for the chief: keep it out of hostnames.
    name = socket.gethostname().replace("chief", "chf")
    return TunerCluster(role, host, port,
                        "chief" if role == "chief" else f"worker-{name}-{os.getpid()}")


def cluster_from_args(args, searching) -> TunerCluster:
    """The recipe's `TunerCluster` from ``args.tuner_role``/``args.tuner_address``
    (`tuner_cluster`); a run without a search is always local. A chief's first port
    is checked here, before any data is read.

    Raises:
        keras_ser.experiment.BadInput: `tuner_cluster`'s errors, ``--tuner-role
            chief|worker`` without a search, or a chief whose port is taken.
    """
    from keras_ser.experiment import BadInput

    try:
        cluster = tuner_cluster(args.tuner_role, args.tuner_address)
        if searching and cluster.role == "chief":
            _check_free(cluster, 0)
    except (ValueError, RuntimeError) as err:
        raise BadInput(str(err)) from None
    if not searching:
        if args.tuner_role != "local":
            raise BadInput(f"--tuner-role {args.tuner_role} needs --search")
        return TunerCluster()
    return cluster


@contextlib.contextmanager
def tuner_environment(cluster: TunerCluster, index: int = 0):
    """Set the KerasTuner variables of the ``index``-th search of ``cluster``
    (``KERASTUNER_TUNER_ID``, ``_ORACLE_IP``, ``_ORACLE_PORT`` = port + index) for the
    ``with`` block, then restore them. A local cluster changes nothing.

    KerasTuner reads the variables when a tuner is made and when it searches, so both
    belong in the block.

    Raises:
        ValueError: ``port + index`` above 65535.

    Source: KerasTuner, "Distributed hyperparameter tuning"
    (https://keras.io/guides/keras_tuner/distributed_tuning/).
    """
    if not cluster.distributed:
        yield cluster
        return
    if cluster.port + index > 65535:
        raise ValueError(f"search {index} of the chief at {cluster.address()} needs port "
                         f"{cluster.port + index} (> 65535): choose a lower port")
    saved = {k: os.environ.get(k) for k in TUNER_VARIABLES}
    os.environ.update(KERASTUNER_TUNER_ID=cluster.tuner_id, KERASTUNER_ORACLE_IP=cluster.host,
                      KERASTUNER_ORACLE_PORT=str(cluster.port + index))
    try:
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _listening(host: str, port: int) -> bool:
    """Something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=1.0):
            return True
    except OSError:
        return False


def _check_free(cluster: TunerCluster, index: int) -> None:
    """Raise RuntimeError when the chief cannot serve on its port (gRPC would share a
    port with another server silently: SO_REUSEPORT)."""
    host, port = cluster.host.strip("[]"), cluster.port + index
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as err:
        raise RuntimeError(f"the chief cannot serve its KerasTuner oracle at "
                           f"{cluster.address(index)}: {err} (another chief or program on "
                           "that port? a host that is not this machine's?)") from None


def _await_oracle(cluster: TunerCluster, index: int, poll: float = 1.0) -> bool:
    """Wait for the chief's ``index``-th oracle: True once it listens, False when a
    later one does (that search is over: a worker that joined late skips it).

    Raises:
        TimeoutError: No oracle of the chief for `WAIT_SECONDS`.
    """
    deadline, waiting = time.monotonic() + WAIT_SECONDS, False
    while True:
        if _listening(cluster.host, cluster.port + index):
            return True
        ports = [cluster.port + k for k in range(max(0, index - MAX_SEARCHES),
                                                 index + MAX_SEARCHES + 1) if k != index]
        alive = [p for p in ports if p <= 65535 and _listening(cluster.host, p)]
        if any(p > cluster.port + index for p in alive):
            return False
        if alive:  # the chief is still on an earlier search
            deadline = time.monotonic() + WAIT_SECONDS
        if time.monotonic() > deadline:
            raise TimeoutError(f"tuner worker {cluster.tuner_id}: no KerasTuner oracle at "
                               f"{cluster.address(index)} for {WAIT_SECONDS} s")
        if not waiting:
            print(f"tuner worker {cluster.tuner_id}: waiting for the chief's oracle at "
                  f"{cluster.address(index)}", flush=True)
            waiting = True
        time.sleep(poll)


def run_search(hypermodel: kt.HyperModel, objective: str, directory: str, project: str,
               max_trials: int, seed: int = 0, cluster: TunerCluster | None = None):
    """Run (or resume) one KerasTuner random search, locally or on a cluster.

    The search is ``kt.RandomSearch`` in ``<directory>/<project>``, maximising
    ``objective``. On a `TunerCluster` it is the run's k-th search (k counts the calls
    with that cluster), served on ``port + k``:

    * chief: runs the oracle until ``max_trials`` trials are done and every worker has
      been told to stop (KerasTuner's chief), keeping the trials in
      ``<directory>/<project>`` exactly as a local search does;
    * worker: waits for that oracle, runs trials until the oracle stops it, and trains
      nothing else; when a later oracle already listens, the search is over and it is
      skipped.

    Resuming: the oracle's state (``oracle.json``, ``trial_*/trial.json``) is reloaded
    whichever role wrote it, so a local search can be continued by a chief and back.
    When ``max_trials`` trials have ended, no trial runs and a chief serves nothing:
    re-running a finished chief rewrites its results without any worker (workers
    started for a finished search wait for `WAIT_SECONDS`, then fail). Trials that were
    running when the chief stopped are run again by the next worker that asks.

    Args:
        hypermodel: The `kt.HyperModel` (its ``fit`` returns ``{objective: value}``).
        objective: Metric name, maximised.
        directory, project: Tuner folder and project name.
        max_trials: Trials in total (the chief's value counts).
        seed: Seed of the random search (the same seed gives the same trials locally
            and on a cluster).
        cluster: `tuner_cluster`'s result; None: local.

    Returns:
        The oracle (``trials``, ``get_best_trials``) locally and on the chief; None on
        a worker.

    Raises:
        RuntimeError: The chief's port is taken.
        TimeoutError: A worker found no oracle (`_await_oracle`).
        ValueError: `tuner_environment`'s.

    Source: KerasTuner, "Distributed hyperparameter tuning"
    (https://keras.io/guides/keras_tuner/distributed_tuning/); KerasTuner 1.4
    ``BaseTuner.search`` (the chief serves, workers run trials).
    """
    cluster = cluster or TunerCluster()
    index, cluster.searches = cluster.searches, cluster.searches + 1
    state = os.path.join(directory, project)
    with tuner_environment(cluster, index):
        # KerasTuner reloads the oracle only for the tuner id that saved it ("tuner0"
        # locally, "chief" on a chief): reload it for the other one too.
        own = os.path.join(state, os.environ.get("KERASTUNER_TUNER_ID", "tuner0") + ".json")
        other = (not cluster.worker and not os.path.isfile(own)
                 and os.path.isfile(os.path.join(state, "oracle.json")))
        tuner = kt.RandomSearch(hypermodel, objective=kt.Objective(objective, direction="max"),
                                max_trials=max_trials, seed=seed, directory=directory,
                                project_name=project, overwrite=False)
        if other:
            tuner.oracle.reload()
        if cluster.worker:
            if not _await_oracle(cluster, index):
                print(f"tuner worker {cluster.tuner_id}: search {project!r} is over on the "
                      "chief; skipping it", flush=True)
                return None
            print(f"tuner worker {cluster.tuner_id}: running trials of search {project!r} "
                  f"for the chief at {cluster.address(index)}", flush=True)
            tuner.search()
            return None
        if len(tuner.oracle.end_order) < max_trials:
            if cluster.role == "chief":
                _check_free(cluster, index)
                print(f"tuner chief: serving search {project!r} at "
                      f"{cluster.address(index)}", flush=True)
            tuner.search()
    # Values sent by workers come back in gRPC's order: list them as the space declares
    # them, as a local search does, so best.json reads the same either way.
    rank = {p.name: i for i, p in enumerate(tuner.oracle.hyperparameters.space)}
    for trial in tuner.oracle.trials.values():
        hp = trial.hyperparameters
        hp.values = dict(sorted(hp.values.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return tuner.oracle


def worker_done(cluster: TunerCluster) -> int:
    """Print a worker's one-line closing message; returns the exit status 0.

    A worker ends after its searches: the chief writes ``best.json``, trains the folds
    and writes the results.
    """
    print(f"tuner worker {cluster.tuner_id}: {cluster.searches} search(es) of the chief at "
          f"{cluster.address()} done; the chief trains the folds and writes the results",
          flush=True)
    return 0


def random_search(hypermodel: DCGANHyperModel, directory: str, max_trials: int,
                  seed: int = 0, cluster: TunerCluster | None = None) -> tuple | None:
    """Run (or resume) a KerasTuner random search (`run_search`); save and return the
    best config.

    Args:
        hypermodel: `DCGANHyperModel`.
        directory: Tuner folder; ``<model>/best.json`` (hyper-parameters, config, score)
            is written there. Re-running with the same folder resumes finished trials.
        max_trials: Trials to run in total.
        seed: Seed of the random search.
        cluster: `TunerCluster` of a distributed search (None: local).

    Returns:
        ``(DCGANConfig, best hyper-parameter dict, best validation UA)``; None on a
        tuner worker (the chief writes ``best.json``).

    Raises:
        RuntimeError, TimeoutError, ValueError: `run_search`'s (distributed search).

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design"; Bergstra & Bengio,
        JMLR 2012 (random search).
    """
    oracle = run_search(hypermodel, OBJECTIVE, directory, hypermodel.model_name, max_trials,
                        seed, cluster)
    if oracle is None:
        return None
    best = oracle.get_best_trials(1)[0]
    config = sample_config(best.hyperparameters, hypermodel.base, hypermodel.space)
    io.write_json(os.path.join(directory, hypermodel.model_name, "best.json"), {
        "model": hypermodel.model_name, "hyperparameters": best.hyperparameters.values,
        "config": config.to_dict(), OBJECTIVE: best.score,
        "trials": len(oracle.trials), "search_fold": hypermodel.fold.name})
    return config, best.hyperparameters.values, best.score


def search_model(model: str, base: dcgan.DCGANConfig, preset: str, fold, records: str,
                 corpus, directory: str, settings, minmax: tuple,
                 unlabelled: Sequence[str] = (), seed: int = 0,
                 cluster: TunerCluster | None = None) -> dcgan.DCGANConfig:
    """`random_search` of one model with the preset's `SEARCH_SPACES` entry; prints and
    returns the best configuration (``base`` on a tuner worker, which keeps none).

    Args:
        settings: Schedule with ``max_epochs``, ``patience`` and ``max_trials``.
        cluster: `TunerCluster` of a distributed search (None: local).
        Others: As `DCGANHyperModel`.
    """
    hyper = DCGANHyperModel(model, base, SEARCH_SPACES[preset], fold, records, corpus,
                            os.path.join(directory, "trials", model), minmax=minmax,
                            max_epochs=settings.max_epochs, patience=settings.patience,
                            seed=seed, unlabelled=unlabelled)
    found = random_search(hyper, directory, settings.max_trials, seed=seed, cluster=cluster)
    if found is None:
        return base
    config, hp, score = found
    print(f"{model}: best of {settings.max_trials} trials {hp} (validation UA "
          f"{100 * score:.1f}%)")
    return config
