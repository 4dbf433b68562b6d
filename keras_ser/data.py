"""TFRecord shards -> `tf.data` pipelines for a fold split: crop, augment, features, batch.

The pipeline of `make_dataset`::

    shards -> parse -> keep the split's speakers and classes -> [cache] -> [oversample]
    -> [shuffle] -> crop (word-centred, random, centre) or keep whole utterances
    -> batch (fixed patches, or padded with a mask) -> VTLP + features on the batch
    -> [normalise] -> prefetch(AUTOTUNE)

Randomness (crop positions, per-example VTLP factors) comes from
`tf.data.Dataset.random` seeds zipped with the examples, so a pipeline with the same seed
gives the same batches, and every epoch draws new crops.

With `set_data_service` (the recipes' ``--data-service grpc://HOST:PORT``) the training
streams of `make_dataset` and `synthetic_dataset` (epoch-seeded or endless) run on a
`tf.data service <https://www.tensorflow.org/api_docs/python/tf/data/experimental/service>`_
worker up to the batched features; the trainer only receives them and prefetches. They
are the batches the local pipeline gives (`service`).
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from keras_ser import augment, seeds
from keras_ser import features as feats
from tfrecords_tools import patch_records
from tfrecords_tools.schema import feature_spec

AUTOTUNE = tf.data.AUTOTUNE

_STRING_FIELDS = ("utterance_id", "speaker", "session", "gender", "emotion", "corpus",
                  "segment_kind", "transcript", "text_id")
_FLOAT_FIELDS = ("valence", "activation", "dominance")


def record_files(records: str | Sequence[str]) -> list:
    """The ``*.tfrecord`` shards of a record folder (or a list of files, checked).

    Raises:
        FileNotFoundError: The folder holds no shard, or a listed file does not exist.
    """
    if isinstance(records, str):
        if os.path.isdir(records):
            files = sorted(glob.glob(os.path.join(records, "*.tfrecord")))
            if not files:
                raise FileNotFoundError(f"{records}: no *.tfrecord shards (convert a corpus "
                                        "with `python -m tfrecords_tools` first)")
            return files
        records = [records]
    missing = [f for f in records if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"record files not found: {missing[:3]}")
    return list(records)


def parse_records(serialized: tf.Tensor) -> dict:
    """Decode a batch of serialised records (`tfrecords_tools.schema`).

    Parsing whole batches with `tf.io.parse_example` is several times faster than one
    record at a time; `decode_record` finishes each example after ``unbatch()``.

    Args:
        serialized: ``(batch,)`` string tensor.

    Returns:
        Dict of ``(batch,)`` tensors: ``pcm`` (raw bytes), ``segments`` as a
        ``(batch, None, 2)`` ragged tensor, and the string and rating fields.
    """
    ex = tf.io.parse_example(serialized, feature_spec())
    start = tf.RaggedTensor.from_sparse(ex["segment_start"])
    end = tf.RaggedTensor.from_sparse(ex["segment_end"])
    out = {"pcm": ex["pcm"], "sample_rate": tf.cast(ex["sample_rate"], tf.int32),
           "segments": tf.stack([start, end], axis=2)}
    for name in _STRING_FIELDS + _FLOAT_FIELDS:
        out[name] = ex[name]
    return out


def decode_record(example: dict) -> dict:
    """Finish one example of `parse_records`.

    Returns:
        Dict with ``waveform`` ``(samples,)`` float32 in [-1, 1] (int16 / 32768);
        ``num_samples`` int32; ``sample_rate`` int32; ``segments`` ``(num_segments, 2)``
        float32 start/end in seconds; the string fields (``utterance_id``, ``speaker``,
        ``session``, ``gender``, ``emotion``, ``corpus``, ``segment_kind``,
        ``transcript``, ``text_id``) and the mean ratings ``valence``, ``activation``,
        ``dominance`` (float32, NaN when unrated).
    """
    out = {k: v for k, v in example.items() if k != "pcm"}
    pcm = tf.io.decode_raw(example["pcm"], tf.int16, little_endian=True)
    out["waveform"] = tf.cast(pcm, tf.float32) / 32768.0
    out["num_samples"] = tf.shape(pcm)[0]
    segments = example["segments"]
    if isinstance(segments, tf.RaggedTensor):
        segments = segments.to_tensor()
    out["segments"] = tf.reshape(segments, [-1, 2])
    return out


def read_records(records: str | Sequence[str], parse_batch: int = 64) -> tf.data.Dataset:
    """Dataset of decoded examples (`decode_record`) from a record folder or shard list."""
    files = record_files(records)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                       num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(parse_batch).map(parse_records, num_parallel_calls=AUTOTUNE,
                                   deterministic=True).unbatch()
    return ds.map(decode_record, num_parallel_calls=AUTOTUNE, deterministic=True)


def record_metadata(records: str | Sequence[str]) -> list:
    """Per-record metadata from the shards' ``.json`` side files (no audio is read).

    Returns:
        List of dicts with ``utterance_id``, ``speaker``, ``session``, ``gender``,
        ``emotion``, ``duration_s``, ``segments``, ``segment_kind``.

    Raises:
        FileNotFoundError: A shard has no side file (it was not written by the converter).
    """
    out = []
    for shard in record_files(records):
        meta = os.path.splitext(shard)[0] + ".json"
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"{meta}: missing metadata of shard {shard}")
        with open(meta, encoding="utf-8") as f:
            out.extend(json.load(f)["records"])
    return out


def label_counts(records, classes: Sequence[str],
                 speakers: Iterable[str] | None = None) -> dict:
    """Records per class among ``speakers`` (all when ``None``), from the side files."""
    speakers = None if speakers is None else set(speakers)
    counts = {c: 0 for c in classes}
    for r in record_metadata(records):
        if (speakers is None or r["speaker"] in speakers) and r["emotion"] in counts:
            counts[r["emotion"]] += 1
    return counts


def _normaliser(normalise: str | None, stats: dict | None):
    if normalise is None:
        return None
    if stats is None:
        raise ValueError(f"normalise={normalise!r} needs feature statistics (stats=...)")
    if normalise == "minmax":
        return lambda x: feats.minmax_to_unit(x, stats["min"], stats["max"])
    if normalise == "zscore":
        return lambda x: feats.zscore(x, stats["mean"], stats["std"])
    if normalise == "zscore_band":
        return lambda x: feats.zscore(x, stats["band_mean"], stats["band_std"])
    if normalise in SPEAKER_NORMALISE:
        return speaker_scale(stats["speakers"], SPEAKER_NORMALISE[normalise])
    raise ValueError(f"normalise must be None, 'minmax', 'zscore', 'zscore_band', "
                     f"'zscore_speaker' or 'minmax_speaker', got {normalise!r}")


#: Per-speaker normalisations of `make_dataset` and the kind each applies.
SPEAKER_NORMALISE = {"zscore_speaker": "zscore", "minmax_speaker": "minmax"}


def speaker_zscore(statistics: dict):
    """`speaker_scale` with ``kind="zscore"``."""
    return speaker_scale(statistics, "zscore")


def speaker_scale(statistics: dict, kind: str = "zscore"):
    """``scale(x, speaker)``: normalise each example with its speaker's own statistics.

    Args:
        statistics: ``{speaker: {"mean", "std"}}`` (``kind="zscore"``; one value along
            time and frequency, as Etienne et al. 2018, eq. 2, but per speaker) or
            ``{speaker: {"min", "max"}}`` (``kind="minmax"``: to [-1, 1] as Eskimez et al.
            2020, Sec. 4.2, but with the speaker's extremes; our variant).
        kind: ``"zscore"`` or ``"minmax"``.

    Returns:
        A function of ``(batch, frames, dim)`` features and ``(batch,)`` speaker strings;
        a speaker missing from ``statistics`` fails the pipeline with its name.

    Raises:
        ValueError: Unknown kind.
    """
    keys = {"zscore": ("mean", "std"), "minmax": ("min", "max")}.get(kind)
    if keys is None:
        raise ValueError(f"kind must be 'zscore' or 'minmax', got {kind!r}")
    names = sorted(statistics)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(names), tf.range(len(names), dtype=tf.int32)), default_value=-1)
    first, second = (tf.constant([float(statistics[n][k]) for n in names], tf.float32)
                     for k in keys)

    def scale(x, speaker):
        where = table.lookup(speaker)
        with tf.control_dependencies([tf.debugging.assert_non_negative(where, message=(
                "a record's speaker has no per-speaker statistics"))]):
            where = tf.identity(where)
        a = tf.gather(first, where)[:, None, None]
        b = tf.gather(second, where)[:, None, None]
        if kind == "zscore":
            return (x - a) / b
        return feats.minmax_to_unit(x, a, b)
    return scale


def speaker_statistics(records, features: str | feats.FeatureConfig,
                       speakers: Iterable[str] | None = None,
                       classes: Sequence[str] | None = None, batch_size: int = 32) -> dict:
    """Each speaker's feature statistics over its valid frames, in one pass.

    For per-speaker normalisation (``normalise="zscore_speaker"`` or
    ``"minmax_speaker"``): one mean, population standard deviation, minimum and maximum
    along time and frequency per speaker, computed like `feature_statistics` on that
    speaker's records alone. No label is used (``classes`` only restricts the records).

    Args:
        records: Record folder(s) or shard files.
        features: Preset name or `FeatureConfig`.
        speakers: Speakers to describe (``None``: all in the records).
        classes: As `make_dataset` (``None``: every record).
        batch_size: Records per pass batch.

    Returns:
        ``{speaker: {"mean", "std", "min", "max"}}`` (floats, dB for log-mels).

    Raises:
        ValueError: A requested speaker without any valid frame (named).
    """
    ds = make_dataset(records, classes=classes, speakers=speakers, features=features,
                      batch_size=batch_size, keep=("speaker",))
    acc = {}
    for batch in ds:
        x = batch["features"].numpy().astype(np.float64)
        mask = batch["mask"].numpy()
        for row, who in enumerate(batch["speaker"].numpy()):
            frames = x[row][mask[row]]
            if not frames.size:
                continue
            a = acc.setdefault(who.decode(), [0, 0.0, 0.0, np.inf, -np.inf])
            a[0] += frames.size
            a[1] += frames.sum()
            a[2] += np.square(frames).sum()
            a[3] = min(a[3], frames.min())
            a[4] = max(a[4], frames.max())
    missing = sorted(set(speakers or ()) - set(acc))
    if missing:
        raise ValueError(f"speakers {missing} have no valid frame in {records}")
    out = {}
    for who, (n, total, total_sq, lo, hi) in sorted(acc.items()):
        mean = total / n
        out[who] = {"mean": float(mean), "std": float(np.sqrt(max(total_sq / n - mean ** 2,
                                                                   0.0))),
                    "min": float(lo), "max": float(hi)}
    return out


# -- tf.data service ------------------------------------------------------------------------

#: The dispatcher set with `set_data_service` (``grpc://HOST:PORT``), or None: local.
_service_address: str | None = None
#: Seconds `service` waits for the dispatcher's port.
_service_connect_timeout = 30.0

_SERVICE_ADDRESS = re.compile(r"grpc://(?P<host>\[[0-9A-Fa-f:.]+\]|"
                              r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")
#: Graph ops that call back into the Python interpreter of the process that built them.
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def parse_service_address(address: str) -> tuple:
    """Check a tf.data service dispatcher address and split it into host and port.

    Args:
        address: ``grpc://HOST:PORT``: a host name, an IPv4 address or a bracketed IPv6
            address (``grpc://[::1]:5050``), and the dispatcher's port (1..65535,
            ``tf.data.experimental.service.DispatcherConfig(port=...)``).

    Returns:
        ``(host, port)``, e.g. ``("localhost", 5050)`` (IPv6 without its brackets).

    Raises:
        ValueError: Anything else: no ``grpc://`` scheme, no port or one out of range, a
            path, spaces, an empty string or a non-string (the message shows the form).
    """
    match = _SERVICE_ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"a tf.data service address is grpc://HOST:PORT with a port in "
                         f"1..65535, e.g. grpc://localhost:5050; got {address!r}")
    return match["host"].strip("[]"), int(match["port"])


def set_data_service(address: str | None, *, connect_timeout: float = 30.0) -> str | None:
    """Run the training input pipelines on a tf.data service from now on (``None``: here).

    The recipes call ``data.set_data_service(args.data_service)`` (``--data-service``)
    once, before they build datasets. Afterwards the training streams of `make_dataset`
    and `synthetic_dataset` -- built with ``epochs``, or repeating without end -- are
    sent to the dispatcher through `service` and come back as the same batches; every
    other dataset (statistics passes, evaluation, `Utterances`) stays in this process.
    Nothing is contacted here; `service` checks that the dispatcher answers.

    Args:
        address: ``grpc://HOST:PORT`` of the dispatcher (`parse_service_address`), e.g.
            ``grpc://localhost:5050``; ``None`` switches the service off (the default:
            every pipeline is the unchanged local one).
        connect_timeout: Seconds `service` waits for the dispatcher's port to accept a
            connection before it raises (TensorFlow itself would retry for an hour).

    Returns:
        The address set before (``None`` if none), e.g. to restore it afterwards.

    Raises:
        ValueError: A malformed address, or a ``connect_timeout`` that is not positive;
            the setting is then left as it was.

    Source: TensorFlow docs, ``tf.data.experimental.service``.
    """
    global _service_address, _service_connect_timeout
    if address is not None:
        parse_service_address(address)
    if not connect_timeout > 0:
        raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
    previous = _service_address
    _service_address, _service_connect_timeout = address, float(connect_timeout)
    return previous


def get_data_service() -> str | None:
    """The dispatcher address set with `set_data_service` (``None``: pipelines run here)."""
    return _service_address


def _python_ops(dataset: tf.data.Dataset) -> list:
    """The ops of ``dataset``'s definition (functions included) that call into Python."""
    # The serialised definition a dispatcher would receive; tf.data has no public
    # accessor for it.
    serialized = dataset._as_serialized_graph(
        external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(serialized.numpy())
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(ops & _PYTHON_OPS)


def _await_dispatcher(address: str, timeout: float) -> None:
    """Return once the dispatcher's port accepts a TCP connection; raise after ``timeout``."""
    host, port = parse_service_address(address)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=min(max(left, 0.1), 2.0)):
                return
        except OSError as error:
            if left <= 0:
                raise ConnectionError(
                    f"no tf.data service dispatcher answers at {address} (waited "
                    f"{timeout:g} s; {error}): start one (README, 'Scaling out') or run "
                    "without --data-service") from error
            time.sleep(min(0.25, max(left, 0.0)))


def service(dataset: tf.data.Dataset, name: str) -> tf.data.Dataset:
    """``dataset`` processed by the tf.data service of `set_data_service` (as is if none).

    The dataset's definition is registered with the dispatcher and read back with
    ``tf.data.experimental.service.distribute`` in processing mode
    ``ShardingPolicy.OFF`` (``"parallel_epochs"``): one worker runs the whole pipeline,
    in the order it runs here, so a seeded deterministic pipeline gives exactly its local
    elements. Its seeds travel with it: ``shuffle`` and `tf.data.Dataset.random` seeds are
    constants of the serialised graph, and the per-epoch seeds of ``epochs=`` are Python
    ints baked in when the pipeline is built. Not ``"distributed_epoch"``
    (``ShardingPolicy.DYNAMIC``): it hands input splits to whichever worker asks first,
    so the order would depend on timing, and `make_dataset`'s shards, zipped with their
    side-file index, would be split apart. Every iteration is its own anonymous job (no
    ``job_name``: readers of a named job share its elements first come, first served,
    and a name switches off tf.distribute's auto-sharding).

    Exactly one worker may serve the dispatcher: in mode OFF each worker produces the
    whole dataset, so with two the trainer would get every element twice. Elements are
    numbered on the worker and the numbers checked here, so duplicates or reordering fail
    the iteration (`tf.errors.InvalidArgumentError`) rather than train. The worker still
    uses every core of its host (the pipelines' parallel maps), and any number of
    trainers can share one dispatcher and worker, each reading its own job. Iterating
    waits until a worker has registered with the dispatcher.

    A job re-creates the pipeline from its definition, so a finite dataset that reshuffles
    on each iteration (``reshuffle_each_iteration=True``) would replay its first order on
    every later iteration; the builders therefore send only streams that are iterated once
    (epoch-seeded or endless).

    Args:
        dataset: A `tf.data.Dataset` without Python code in it.
        name: What the pipeline is, for messages (e.g. ``"make_dataset"``).

    Returns:
        A dataset with the same elements, element spec and cardinality (finite or
        infinite; an unknown one stays unknown).

    Raises:
        ValueError: The dataset calls Python (`tf.data.Dataset.from_generator`,
            `tf.py_function`, `tf.numpy_function`): such functions exist only in this
            process and a remote worker cannot run them. There is deliberately no silent
            fallback to local processing: build the pipeline from TFRecords or tensors, or
            keep it out of the service.
        ConnectionError: Nothing accepts connections at the dispatcher's address within
            the ``connect_timeout`` of `set_data_service`.

    Source: TensorFlow docs of ``tf.data.experimental.service`` (``distribute``,
    ``ShardingPolicy``, ``DispatchServer``, ``WorkerServer``).
    """
    address = _service_address
    if address is None:
        return dataset
    python = _python_ops(dataset)
    if python:
        raise ValueError(
            f"{name}: this dataset calls Python ({', '.join(python)}: Dataset.from_generator, "
            "tf.py_function or tf.numpy_function), which a tf.data service worker cannot "
            "run; build it from TFRecords or tensors, or process it locally (without "
            "--data-service)")
    _await_dispatcher(address, _service_connect_timeout)
    cardinality = int(dataset.cardinality())
    remote = dataset.enumerate().apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.OFF, service=address))
    message = (f"{name}: the tf.data service at {address} sent an element out of order or "
               "twice; in processing mode OFF every worker produces the whole dataset, so "
               "run exactly one worker per dispatcher")

    def in_order(position, numbered):
        sent, element = numbered
        tf.debugging.assert_equal(sent, position, message=message)
        return element

    ds = remote.enumerate().map(tf.autograph.experimental.do_not_convert(in_order))
    if cardinality >= 0 or cardinality == tf.data.INFINITE_CARDINALITY:
        ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
    return ds


def make_dataset(records, *, classes: Sequence[str] | None = None,
                 speakers: Iterable[str] | None = None,
                 features: str | feats.FeatureConfig = "eskimez",
                 crop_frames: int | None = None, crop: str = "word", crop_edge: str = "pad",
                 vtlp=None, oversample=None, labels: dict | None = None,
                 normalise: str | None = None,
                 stats: dict | None = None, batch_size: int = 32, shuffle: bool = False,
                 shuffle_buffer: int = 8192, seed: int = 0, repeat: bool = False,
                 cache: bool = False, drop_remainder: bool = False,
                 keep: Sequence[str] = (), epochs: tuple | None = None,
                 steps: int | None = None, data_service: bool = True) -> tf.data.Dataset:
    """A batched dataset of features for one split.

    Which records belong to the split, and their labels, come from the shards' side files,
    so per-example work touches only serialised strings; parsing, decoding, cropping,
    VTLP and features then run on whole batches.

    Randomness (order, crop positions, VTLP factors) comes from seeds. With ``epochs``
    the dataset holds the batches of several epochs, each drawn from a seed derived from
    ``(seed, epoch)`` (`keras_ser.seeds.epoch_seed`): epoch 7 is the same whether the
    dataset starts at epoch 0 or at epoch 7, which is what lets a killed run resume
    exactly (`keras_ser.training.resumable.fit_resumable`). Without ``epochs`` every
    iteration reshuffles and redraws.

    Args:
        records: Record folder (from the converter) or list of shard files.
        classes: Emotion names in class-index order; records with other labels are
            dropped. ``None`` keeps every record with ``label`` -1 (unlabelled use).
        speakers: Speakers of the split (e.g. ``fold.train``); ``None``: all.
        features: Preset name or `keras_ser.features.FeatureConfig`.
        crop_frames: Patch width in frames: each example is cropped to the waveform
            length giving exactly this many frames. ``None`` keeps whole utterances
            (zero-padded per batch, with a mask).
        crop: ``"word"`` (word-centred random crop, Chang & Scherer 2017, Sec. "Data
            Corpus"), ``"random"`` (uniform centre over the utterance) or ``"centre"``.
        crop_edge: ``"pad"`` or ``"shift"`` (`keras_ser.augment.word_centred_crop`).
        vtlp: ``None``; ``"example"`` (a random factor in [0.9, 1.1) per example);
            ``"epoch"`` (one factor per epoch for every example, `augment.epoch_alpha`;
            Etienne et al. 2018, Sec. 2, first strategy); or a float (a fixed factor).
        oversample: ``None``, ``"balance"`` or ``{class: factor}`` (needs ``classes``);
            factors from the split's counts (`augment.class_counts_factors`).
        labels: ``{utterance_id: class index}`` replacing the emotion as the label, e.g.
            the 5-point level of a mean rating (Chang & Scherer 2017 oversample the
            primary labels, valence levels on IEMOCAP); ``classes`` then names the
            indices and records missing from the mapping are left out (an id that is
            not in the records raises).
        normalise: ``None``, ``"minmax"`` (to [-1, 1], Eskimez et al. 2020, Sec. 4.2),
            ``"zscore"`` (one mean and deviation, Etienne et al. 2018, eq. 2),
            ``"zscore_band"`` (per band, our variant), ``"zscore_speaker"`` (eq. 2's
            z-score with each record's speaker's own mean and deviation, ``stats =
            {"speakers": {speaker: {"mean", "std"}}}``) or ``"minmax_speaker"``
            (min-max with the speaker's own extremes, ``{"min", "max"}`` per speaker;
            both `speaker_scale`, statistics from `speaker_statistics`).
        stats: Feature statistics (`keras_ser.features.load_feature_stats`); when
            ``None`` and ``normalise`` is set, read from the record folder's stats.json.
        batch_size: Examples per batch.
        shuffle, shuffle_buffer: Shuffle examples.
        seed: Seed of shuffling, crops and VTLP factors.
        repeat: Repeat the split (forever, or up to ``steps`` batches per epoch).
        cache: Keep the split's serialised records in memory after the first pass.
        drop_remainder: Drop the last partial batch.
        keep: Extra scalar fields of the schema to pass through (``"speaker"``,
            ``"utterance_id"``, ``"valence"``, ...).
        epochs: ``(first, stop)``: the batches of epochs ``first .. stop - 1``.
        steps: Batches per epoch (a repeated stream is cut to this many per epoch).
        data_service: When a tf.data service is set (`set_data_service`), run a
            training stream -- built with ``epochs``, or repeating without ``steps`` --
            on it up to the batched features (`service`: the same batches); ``False``
            keeps it here. Other datasets always stay here: a service job re-creates
            the pipeline on each iteration, so one that reshuffles per iteration would
            replay its first epoch.

    Returns:
        A dataset of dicts: ``features`` ``(batch, frames, feature_dim)`` float32
        (images: ``(batch, height, width, 3)``), ``label`` ``(batch,)`` int32,
        ``length`` ``(batch,)`` int32 valid frames, ``mask`` ``(batch, frames)`` bool,
        and the ``keep`` fields. Its cardinality is known unless it repeats forever.

    Raises:
        FileNotFoundError: No shards, or a shard without its side file.
        ValueError: Bad option values, or statistics that do not match ``features``.
        ConnectionError: A tf.data service is set and its dispatcher does not answer
            (`service`).
        tf.errors.InvalidArgumentError: (while iterating) a shard's records do not match
            its side file; through a tf.data service, also batches arriving out of order
            or twice (more than one worker, `service`).
    """
    config = feats.get_preset(features)
    if crop not in ("word", "random", "centre"):
        raise ValueError(f"crop must be 'word', 'random' or 'centre', got {crop!r}")
    if crop_edge not in ("pad", "shift"):
        raise ValueError(f"crop_edge must be 'pad' or 'shift', got {crop_edge!r}")
    if oversample is not None and classes is None:
        raise ValueError("oversample needs classes")
    if labels is not None and classes is None:
        raise ValueError("labels needs classes (the names of its class indices)")
    spec = feature_spec()
    bad_keep = [k for k in keep if k not in spec or isinstance(spec[k], tf.io.VarLenFeature)
                or k == "pcm"]
    if bad_keep:
        raise ValueError(f"keep takes scalar schema fields, not {bad_keep}")
    if vtlp is not None and vtlp not in ("example", "epoch"):
        vtlp = float(vtlp)
    files = record_files(records)
    remote = data_service and _service_address is not None and (
        epochs is not None or (repeat and steps is None))
    if remote:
        # A worker resolves relative paths against its own working directory.
        files = [os.path.abspath(f) for f in files]
    if normalise is not None and stats is None:
        if not isinstance(records, str) or not os.path.isdir(records):
            raise ValueError("normalise without stats needs a record folder with stats.json")
        stats = feats.load_feature_stats(records, config)
    scale = _normaliser(normalise, stats)

    metadata = record_metadata(files)
    speaker_set = None if speakers is None else set(speakers)
    class_index = {c: i for i, c in enumerate(classes or ())}
    if labels is not None:
        bad = sorted({int(v) for v in labels.values()} - set(range(len(class_index))))
        if bad:
            raise ValueError(f"labels holds class indices {bad} outside 0..{len(classes) - 1}")
        unknown = sorted(set(labels) - {r["utterance_id"] for r in metadata})
        if unknown:
            raise ValueError(f"labels names {len(unknown)} utterance(s) not in the records, "
                             f"e.g. {unknown[:3]}")
        labels = np.array([labels.get(r["utterance_id"], -1) for r in metadata], np.int32)
    else:
        labels = np.array([class_index.get(r["emotion"], -1) for r in metadata], np.int32)
    selected = np.array([(speaker_set is None or r["speaker"] in speaker_set)
                         and (classes is None or label >= 0)
                         for r, label in zip(metadata, labels)], bool)
    index = tf.data.Dataset.from_tensor_slices({
        "expected_id": tf.constant([r["utterance_id"] for r in metadata], tf.string),
        "label": labels, "chosen": selected})
    base = tf.data.Dataset.zip(tf.data.TFRecordDataset(files), index)
    base = base.filter(lambda serialized, meta: meta["chosen"])
    base = base.map(lambda serialized, meta: {"serialized": serialized, "label": meta["label"],
                                              "expected_id": meta["expected_id"]})
    if cache:
        base = base.cache()
    examples = int(selected.sum())
    factors = None
    if oversample is not None:
        counts = {c: int(((labels == i) & selected).sum()) for c, i in class_index.items()}
        chosen = augment.class_counts_factors(counts, oversample)
        factors = {class_index[c]: f for c, f in chosen.items()}
        examples = sum(counts[c] * chosen[c] for c in counts)
    per_epoch = steps if steps is not None else (
        examples // batch_size if drop_remainder else -(-examples // batch_size))

    def one_epoch(epoch_seed, epoch, reshuffle):
        ds = base
        if factors is not None:
            ds = augment.oversample(ds, lambda ex: ex["label"], factors)
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=reshuffle)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if steps is not None:
            ds = ds.take(steps)
        draws = tf.data.Dataset.random(seed=epoch_seed,
                                       rerandomize_each_iteration=reshuffle).batch(2)
        return tf.data.Dataset.zip(ds, draws, tf.data.Dataset.from_tensors(epoch).repeat())

    if epochs is None:
        ds = one_epoch(seed, tf.constant(0, tf.int64), True)
        count = None if repeat and steps is None else per_epoch
    else:
        first, stop = (int(e) for e in epochs)
        ds = _concatenated_epochs(first, stop, seed,
                                  lambda epoch_seed, e: one_epoch(epoch_seed, e, False))
        count = per_epoch * max(0, stop - first)

    by_speaker = normalise in SPEAKER_NORMALISE
    parse_spec = {k: spec[k] for k in ("pcm", "num_samples", "segment_start", "segment_end",
                                       "utterance_id", *keep, *(["speaker"] if by_speaker
                                                               else []))}
    width = config.samples_for_frames(crop_frames) if crop_frames is not None else None

    def featurise(batch, batch_seed, epoch):
        ex = tf.io.parse_example(batch["serialized"], parse_spec)
        tf.debugging.assert_equal(ex["utterance_id"], batch["expected_id"], message=(
            "a shard's records do not match its side file; re-run the converter"))
        lengths = tf.cast(ex["num_samples"], tf.int32)
        draws = tf.random.experimental.stateless_split(tf.cast(batch_seed, tf.int32), 2)
        if width is not None:
            duration = tf.cast(lengths, tf.float32) / config.sample_rate
            if crop == "word":
                starts = ex["segment_start"]
                segments = tf.stack([starts.values, ex["segment_end"].values], axis=1)
                counts = tf.math.bincount(tf.cast(starts.indices[:, 0], tf.int32),
                                          minlength=tf.shape(lengths)[0], dtype=tf.int32)
            elif crop == "random":
                segments = tf.stack([tf.zeros_like(duration), duration], 1)
                counts = tf.ones_like(lengths)
            else:
                segments = tf.stack([duration / 2.0, duration / 2.0], 1)
                counts = tf.ones_like(lengths)
            _, begins = augment.crop_positions(lengths, segments, counts, width, draws[0],
                                               config.sample_rate, crop_edge)
            pcm = crop_pcm(ex["pcm"], begins, width)
            frames = tf.fill(tf.shape(lengths), crop_frames)
        else:
            pcm = tf.io.decode_raw(ex["pcm"], tf.int16, little_endian=True,
                                   fixed_length=2 * tf.reduce_max(lengths))
            frames = config.num_frames(lengths)
        waveform = tf.cast(pcm, tf.float32) / 32768.0
        alpha = None
        if vtlp == "example":
            alpha = augment.random_alpha(draws[1], tf.shape(lengths))
        elif vtlp == "epoch":
            alpha = augment.epoch_alpha(seed, epoch)
        elif vtlp is not None:
            alpha = tf.constant(vtlp)
        x = feats.compute_features(waveform, config, alpha)
        if by_speaker:
            x = scale(x, ex["speaker"])
        elif scale is not None:
            x = scale(x)
        out = {k: ex[k] for k in keep}
        out.update(features=x, label=batch["label"], length=frames,
                   mask=tf.sequence_mask(frames, tf.shape(x)[1]))
        return out

    # Every branch of featurise is decided in Python, so AutoGraph has nothing to convert;
    # skipping its source transformation saves seconds per pipeline.
    ds = ds.map(tf.autograph.experimental.do_not_convert(featurise),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if remote:
        # The per-example work (parse, crop, decode, VTLP, features, scaling) ends here.
        ds = service(ds, "make_dataset")
    if count is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    return ds.prefetch(AUTOTUNE)


def _concatenated_epochs(first: int, stop: int, seed: int, build) -> tf.data.Dataset:
    """``build(epoch_seed, epoch)`` for the epochs ``first .. stop - 1``, one after another.

    Each epoch's seed (`keras_ser.seeds.epoch_seed`) is computed here and handed to
    ``build`` as a Python int: `tf.data` cannot take a seed tensor (e.g. inside
    ``flat_map``) while TensorFlow's global seed is 0 -- ``keras.utils.set_random_seed(0)``
    -- because its ``get_seed`` then compares the tensor with 0 in Python.
    """
    parts = [build(int(seeds.epoch_seed(seed, e)), tf.constant(e, tf.int64))
             for e in range(first, max(stop, first + 1))]
    ds = parts[0]
    for part in parts[1:]:
        ds = ds.concatenate(part)
    return ds if stop > first else ds.take(0)


def batches_per_epoch(dataset: tf.data.Dataset, epochs: tuple) -> int:
    """Batches of one epoch of a `make_dataset` dataset built with ``epochs``."""
    return int(dataset.cardinality()) // max(1, int(epochs[1]) - int(epochs[0]))


def crop_pcm(pcm: tf.Tensor, begins: tf.Tensor, width: int) -> tf.Tensor:
    """Cut ``width`` samples starting at ``begins`` straight out of serialised int16 PCM.

    Only the crop is decoded, not the utterance: a window starting before the first
    sample is zero-padded at the start, one running past the last sample at the end.

    Args:
        pcm: ``(batch,)`` strings of little-endian int16 samples (the ``pcm`` field).
        begins: ``(batch,)`` int32 first sample of each crop (may be negative; must be
            below the utterance's length).
        width: Crop length, samples.

    Returns:
        ``(batch, width)`` int16.
    """
    begins = tf.cast(begins, tf.int32)
    lead = tf.maximum(-begins, 0)
    zeros = tf.fill(tf.shape(pcm), tf.constant(b"\0" * (2 * width)))
    head = tf.strings.substr(zeros, tf.zeros_like(lead), 2 * lead)
    body = tf.strings.substr(pcm, 2 * tf.maximum(begins, 0), 2 * (width - lead))
    return tf.io.decode_raw(tf.strings.join([head, body]), tf.int16, little_endian=True,
                            fixed_length=2 * width)


def to_keras(dataset: tf.data.Dataset, inputs: str | Sequence[str] = "features",
             targets: str | Sequence[str] = "label") -> tf.data.Dataset:
    """Map the dict batches of `make_dataset` to ``(x, y)`` pairs for `keras.Model.fit`.

    Args:
        inputs, targets: A field name (the tensor itself) or several (a dict of them).
    """
    def pick(batch, names):
        return batch[names] if isinstance(names, str) else {n: batch[n] for n in names}

    return dataset.map(lambda b: (pick(b, inputs), pick(b, targets)),
                       num_parallel_calls=AUTOTUNE)


def feature_statistics(dataset: tf.data.Dataset) -> dict:
    """Statistics of the features of a (training) dataset, over valid frames only.

    Use these for z-score normalisation from the training split alone (Etienne et al.
    2018, eq. 2) rather than the corpus statistics of ``stats.json``.

    Args:
        dataset: Batches from `make_dataset` (with ``normalise=None``).

    Returns:
        Dict with ``min``, ``max``, ``mean``, ``std`` (floats) and ``band_mean``,
        ``band_std``, ``band_min``, ``band_max`` (``(feature_dim,)`` float32).

    Raises:
        ValueError: The dataset holds no valid frame.
    """
    count, total, total_sq, lo, hi = 0, 0.0, 0.0, None, None
    for batch in dataset:
        x = batch["features"].numpy().astype(np.float64)
        mask = batch["mask"].numpy()
        frames = x[mask]
        if frames.size == 0:
            continue
        count += frames.shape[0]
        total = total + frames.sum(axis=0)
        total_sq = total_sq + np.square(frames).sum(axis=0)
        lo = frames.min(axis=0) if lo is None else np.minimum(lo, frames.min(axis=0))
        hi = frames.max(axis=0) if hi is None else np.maximum(hi, frames.max(axis=0))
    if count == 0:
        raise ValueError("no valid frames in the dataset")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    overall_mean = float(mean.mean())
    overall_std = float(np.sqrt(max((total_sq.sum() / (count * mean.size)) - overall_mean ** 2,
                                    0.0)))
    return {"min": float(lo.min()), "max": float(hi.max()), "mean": overall_mean,
            "std": overall_std, "band_mean": mean.astype(np.float32),
            "band_std": std.astype(np.float32), "band_min": lo.astype(np.float32),
            "band_max": hi.astype(np.float32)}


def synthetic_dataset(folders, *, batch_size: int, shuffle: bool = True, seed: int = 0,
                      repeat: bool = False, drop_remainder: bool = False,
                      shuffle_buffer: int = 4096, epochs: tuple | None = None,
                      steps: int | None = None, data_service: bool = True) -> tf.data.Dataset:
    """Batches of patches from one synthetic record folder, or several pooled.

    Pooling the per-client folders of a federated run gives one training set of the
    sum of their records. All folders must share the classes (in the same order),
    ``frames`` and ``n_mels``.

    Without ``shuffle`` the records come folder by folder and shard by shard, in the
    order they were written. With ``shuffle`` the shard order is shuffled, up to 8
    shards are interleaved and a buffer of ``shuffle_buffer`` serialised records is
    shuffled, all reshuffled every epoch and reproducible for a given ``seed``. The
    buffer holds serialised records: about 4 * frames * n_mels bytes each (64 MiB per
    1024 records of 128 x 128).

    With ``epochs = (first, stop)`` the dataset holds ``steps`` batches (the records
    repeated as needed) for each epoch of the range, each epoch shuffled from a seed of
    ``(seed, epoch)``, so a resumed run reads what an uninterrupted one reads.

    Args:
        folders: A folder written by `tfrecords_tools.patch_records.
            write_synthetic_records`, or a list of them.
        batch_size: Patches per batch.
        shuffle: Shuffle the records (see above).
        seed: Shuffling seed.
        repeat: Repeat forever.
        drop_remainder: Drop the last partial batch (static batch size).
        shuffle_buffer: Records in the shuffle buffer.
        epochs: ``(first, stop)`` epochs to hold (needs ``steps``).
        steps: Batches per epoch.
        data_service: When a tf.data service is set (`set_data_service`), run the
            stream -- with ``epochs``, or ``repeat`` -- on it up to the parsed batches
            (`service`: the same batches); ``False`` keeps it here. Without ``epochs``
            or ``repeat`` it always stays here (see `make_dataset`).

    Returns:
        A dataset of dicts: ``features`` ``(batch, frames, n_mels)`` float32 and
        ``label`` ``(batch,)`` int32 class indices into the shared ``classes``. Its
        cardinality is known unless ``repeat``. Feed it to `keras.Model.fit` with
        `to_keras`.

    Raises:
        ValueError: No folder, bad option values, or a folder whose classes,
            ``frames`` or ``n_mels`` differ from the first one's (named in the message).
        FileNotFoundError: A folder without ``synthetic.json``, or with a listed shard
            missing.
        ConnectionError: A tf.data service is set and its dispatcher does not answer
            (`service`).
    """
    if isinstance(folders, (str, bytes, os.PathLike)):
        folders = [folders]
    folders = [os.fspath(folder) for folder in folders]
    if not folders:
        raise ValueError("no synthetic record folder given")
    if batch_size < 1 or shuffle_buffer < 1:
        raise ValueError(f"batch_size and shuffle_buffer must be positive, got "
                         f"{batch_size}, {shuffle_buffer}")
    if epochs is not None and not steps:
        raise ValueError("synthetic_dataset: epochs needs steps (batches per epoch)")
    documents = [patch_records.read_synthetic_metadata(folder) for folder in folders]
    first = documents[0]
    remote = data_service and _service_address is not None and (epochs is not None or repeat)
    files, total = [], 0
    for folder, document in zip(folders, documents):
        for key in ("classes", "frames", "n_mels"):
            if document[key] != first[key]:
                raise ValueError(f"{folder}: {key} {document[key]!r} differs from "
                                 f"{first[key]!r} of {folders[0]}; cannot pool them")
        for shard in document["shards"]:
            path = os.path.join(folder, shard["name"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{folder}: shard {shard['name']} is missing")
            files.append(os.path.abspath(path) if remote else path)
            total += int(shard["records"])
    frames, n_mels = int(first["frames"]), int(first["n_mels"])
    spec = {"features": tf.io.FixedLenFeature([frames * n_mels], tf.float32),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    def records(epoch_seed, reshuffle):
        if not shuffle:
            return tf.data.TFRecordDataset(files)
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.shuffle(len(files), seed=epoch_seed, reshuffle_each_iteration=reshuffle)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=reshuffle)

    if epochs is None:
        ds = records(seed, True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        first, stop = (int(e) for e in epochs)
        ds = _concatenated_epochs(first, stop, seed, lambda epoch_seed, e: records(
            epoch_seed, False).repeat().batch(batch_size, drop_remainder=drop_remainder)
            .take(steps))

    def parse(serialized):
        example = tf.io.parse_example(serialized, spec)
        return {"features": tf.reshape(example["features"], [-1, frames, n_mels]),
                "label": tf.cast(example["label"], tf.int32)}

    ds = ds.map(tf.autograph.experimental.do_not_convert(parse),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if remote:
        ds = service(ds, "synthetic_dataset")
    if epochs is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps * max(0, stop - first)))
    elif not repeat:
        batches = total // batch_size if drop_remainder else -(-total // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE)


class Utterances:
    """Whole utterances of a converted corpus held in memory, for utterance-level scoring.

    Args:
        records: Record folder (or shard list) from the converter.
        classes: Keep only records of these emotions (``None``: all).
        labels: ``{utterance_id: class index}``: keep only these records (e.g. IEMOCAP's
            improvised dialogs) and use these labels instead of the emotion.
        label: What ``classes`` name: ``"emotion"``, or ``"gender_emotion"``
            (``"female_anger"``; the NITK report's 14 classes,
            `tfrecords_tools.master.gender_emotion`; records of unknown gender have none).

    Attributes:
        waveforms: ``(samples,)`` int16 PCM arrays (16 kHz).
        ids, speakers, emotions, genders: Per-utterance strings.
        labels: ``(n,)`` int64 class index (-1 without ``classes`` or ``labels``).
        ratings: ``{"valence": (n,), "activation": (n,)}`` float32 mean ratings (NaN
            where the corpus has none).

    Raises:
        FileNotFoundError: No shards.
        ValueError: Unknown ``label``.
    """

    LABELS = ("emotion", "gender_emotion")

    def __init__(self, records, classes: Sequence[str] | None = None,
                 labels: dict | None = None, label: str = "emotion"):
        from tfrecords_tools.master import gender_emotion

        if label not in self.LABELS:
            raise ValueError(f"label must be one of {self.LABELS}, got {label!r}")
        index = {c: i for i, c in enumerate(classes or ())}
        self.waveforms, self.ids, self.speakers, self.emotions = [], [], [], []
        self.genders = []
        found, ratings = [], {"valence": [], "activation": []}
        for ex in read_records(records):
            uid = ex["utterance_id"].numpy().decode()
            emotion = ex["emotion"].numpy().decode()
            gender = ex["gender"].numpy().decode()
            name = emotion if label == "emotion" else gender_emotion(gender, emotion)
            if labels is not None:
                if uid not in labels:
                    continue
                found.append(int(labels[uid]))
            elif classes is not None:
                if name not in index:
                    continue
                found.append(index[name])
            else:
                found.append(-1)
            self.waveforms.append(np.round(ex["waveform"].numpy() * 32768.0).astype(np.int16))
            self.ids.append(uid)
            self.speakers.append(ex["speaker"].numpy().decode())
            self.emotions.append(emotion)
            self.genders.append(gender)
            for key in ratings:
                ratings[key].append(float(ex[key].numpy()))
        self.labels = np.asarray(found, np.int64)
        self.ratings = {k: np.asarray(v, np.float32) for k, v in ratings.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, speakers) -> np.ndarray:
        """Indices of the utterances of ``speakers``, in corpus order."""
        wanted = set(speakers)
        return np.array([i for i, s in enumerate(self.speakers) if s in wanted], np.int64)

    def select(self, index) -> list:
        """The waveforms at ``index``."""
        return [self.waveforms[i] for i in index]
