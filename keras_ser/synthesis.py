"""Synthetic training sets from a conditional generator, and the Fréchet distance.

Eskimez et al. (2020, "GAN-based data generation for speech emotion recognition",
Interspeech) train an SER network on spectrogram patches drawn from a GAN conditioned
on the emotion, and compare real and generated patches in an SER network's embedding
space. This module covers the three steps around such a generator:

1. `write_synthetic_records` draws ``per_class`` patches of every emotion from a
   sampling function (a centralised generator, or one generator per client) and stores
   them as sharded TFRecords with a ``synthetic.json`` summary. The folder appears
   atomically and a finished folder is reused, so an interrupted run can simply be
   started again.
2. `synthetic_dataset` reads one such folder, or pools several (e.g. the per-client
   folders of a federated run), as batches shaped like those of
   `keras_ser.data.make_dataset`.
3. `embed` runs an embedding model (e.g. `keras_ser.models.sngan.trunk_of` of a
   classifier) over patches, and `frechet_distance` compares Gaussians fitted to two
   embedding sets: the FID of Heusel et al. (2017, "GANs trained by a two time-scale
   update rule converge to a local Nash equilibrium", NeurIPS), computed in an SER
   embedding rather than an Inception one.

Patches are min-max normalised log-mels ``(frames, mels)`` in [-1, 1], time first, as
everywhere in the package (e.g. 64 x 64 or 128 x 128).

Record layout (one `tf.train.Example` per patch):

============  ===========  ==============================================================
key           type         value
============  ===========  ==============================================================
features      float list   ``frames * n_mels`` values, row-major (frame by frame)
frames        int64        ``frames``
n_mels        int64        ``n_mels``
label         int64        class index into ``classes``
emotion       bytes        class name (UTF-8)
source        bytes        the ``source`` string given to the writer (UTF-8)
============  ===========  ==============================================================
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from scipy import linalg

from keras_ser.training.callbacks import atomic_json

AUTOTUNE = tf.data.AUTOTUNE

#: Name of the summary file of a synthetic record folder.
METADATA_FILE = "synthetic.json"
#: Version of the record layout and of ``synthetic.json``.
FORMAT_VERSION = 1
#: Slack allowed beyond [-1, 1] (float rounding of a tanh output, resampling, ...).
RANGE_TOLERANCE = 1e-3
#: Largest imaginary part of sqrt(S_a S_b)'s diagonal, relative to max(1, its largest
#: real diagonal value), that `frechet_distance` discards as numerical noise.
IMAG_TOLERANCE = 1e-3
#: Ridge added to both covariances when sqrt(S_a S_b) is not finite (singular product).
SQRTM_EPS = 1e-6

_REQUIRED_KEYS = ("classes", "per_class", "counts", "frames", "n_mels", "source", "seed",
                  "shards")
_RESUME_KEYS = ("classes", "per_class", "frames", "n_mels", "source", "seed")

PathLike = str | os.PathLike


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _shard_name(index: int, count: int) -> str:
    return f"synthetic-{index:05d}-of-{count:05d}.tfrecord"


def _batch_seed(seed: int, index: int) -> int:
    """A 31-bit seed for batch ``index``, distinct across batches and base seeds."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFFFFFF


def _check_batch(batch, labels: np.ndarray, frames: int, n_mels: int, source: str,
                 index: int) -> np.ndarray:
    """A sampled batch as float32 ``(b, frames, n_mels)``; ValueError naming ``source``."""
    where = f"{source}: sample_fn batch {index} (labels {labels[:8].tolist()}...)"
    array = np.asarray(keras.ops.convert_to_numpy(batch) if tf.is_tensor(batch) else batch)
    # ml_dtypes' bfloat16 / float8 (a mixed-precision generator) have kind "V".
    if array.dtype.kind not in "iuf" and "float" not in array.dtype.name:
        raise ValueError(f"{where} has dtype {array.dtype}; expected real numbers")
    expected = (len(labels), frames, n_mels)
    if array.shape == expected + (1,):
        array = array[..., 0]
    if array.shape != expected:
        raise ValueError(f"{where} has shape {array.shape}; expected {expected} "
                         f"(or with a trailing channel of 1)")
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{where} holds {int((~finite).sum())} non-finite value(s) "
                         "(NaN or inf)")
    low, high = float(array.min()), float(array.max())
    if low < -1.0 - RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ValueError(f"{where} has values in [{low:.4g}, {high:.4g}]; patches must lie "
                         f"in [-1, 1] (tolerance {RANGE_TOLERANCE})")
    return array


def _matches(document: dict, wanted: dict) -> bool:
    return all(document.get(key) == wanted[key] for key in _RESUME_KEYS)


def _complete(folder: str, document: dict) -> bool:
    """Whether every shard that ``document`` lists is present in ``folder``."""
    return all(os.path.isfile(os.path.join(folder, shard["name"]))
               for shard in document["shards"])


def _existing(out_dir: str, wanted: dict) -> dict | None:
    """The finished matching set in ``out_dir``, ``None`` if there is nothing there.

    Raises FileExistsError when ``out_dir`` holds anything else.
    """
    if not os.path.lexists(out_dir):
        return None
    if not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if not os.listdir(out_dir):
        return None
    try:
        document = read_synthetic_metadata(out_dir)
    except (FileNotFoundError, ValueError) as error:
        raise FileExistsError(f"{out_dir}: not empty and not a synthetic record folder "
                              f"({error}); use another folder or delete it") from None
    if not _matches(document, wanted):
        found = {key: document.get(key) for key in _RESUME_KEYS}
        raise FileExistsError(f"{out_dir}: holds a different synthetic set {found}, not "
                              f"{wanted}; use another folder or delete it")
    if not _complete(out_dir, document):
        raise FileExistsError(f"{out_dir}: shards listed in {METADATA_FILE} are missing; "
                              "delete the folder and generate again")
    return document


def write_synthetic_records(out_dir: PathLike,
                            sample_fn: Callable[[np.ndarray, int], np.ndarray],
                            class_names: Sequence[str], per_class: int, *, frames: int,
                            n_mels: int, batch_size: int = 256, shard_size: int = 4096,
                            seed: int = 0, source: str = "generator",
                            metadata: dict | None = None, progress: bool = True) -> dict:
    """Draw ``per_class`` patches of every class and store them as sharded TFRecords.

    Labels are scheduled class-interleaved (0, 1, ..., C-1, 0, 1, ...), so every shard
    and every batch mixes the classes; the schedule is cut into batches of
    ``batch_size`` and ``sample_fn(labels, batch_seed)`` is called once per batch, where
    ``batch_seed`` is a 31-bit integer derived from ``(seed, batch index)`` with
    `numpy.random.SeedSequence` (distinct across batches and across base seeds). With a
    deterministic ``sample_fn`` the same arguments give the same records.

    Every batch is checked before anything of it is written: shape ``(b, frames,
    n_mels)`` (a trailing channel of 1 is dropped), finite values, all within
    [-1 - `RANGE_TOLERANCE`, 1 + `RANGE_TOLERANCE`]. Values are stored as float32,
    unclipped.

    The records are written into a temporary folder beside ``out_dir``, which is
    renamed to ``out_dir`` (`os.replace`) only once every shard and ``synthetic.json``
    are complete: ``out_dir`` either does not exist or holds a finished set, and on any
    error (including one raised by ``sample_fn``) the temporary folder is removed.
    If ``out_dir`` already holds a finished set with the same classes, ``per_class``,
    ``frames``, ``n_mels``, ``source`` and ``seed``, it is returned without calling
    ``sample_fn`` (resume; ``batch_size``, ``shard_size`` and ``metadata`` are not
    compared, the stored ``metadata`` is kept).

    ``synthetic.json`` holds ``format_version``, ``classes``, ``per_class``, ``counts``
    (class name -> records), ``total``, ``frames``, ``n_mels``, ``source``, ``seed``,
    ``batch_size``, ``shards`` (list of ``{"name", "records"}``, names relative to the
    folder) and ``metadata`` (the caller's dict, e.g. the generator checkpoint and
    client id; ``{}`` for ``None``).

    Args:
        out_dir: Target folder; must not exist, be empty, or hold the same set. Its
            parent folder is created as needed.
        sample_fn: ``sample_fn(labels, seed)`` with ``labels`` int64 ``(b,)`` class
            indices and ``seed`` an int; returns float ``(b, frames, n_mels)`` (or
            ``(b, frames, n_mels, 1)``; NumPy array or tensor, also bfloat16) in
            [-1, 1], e.g. a
            conditional generator fed noise from ``seed`` and one-hot ``labels``.
        class_names: Emotion names in class-index order (unique).
        per_class: Patches per class.
        frames: Patch length, frames (first axis).
        n_mels: Mel bands (second axis).
        batch_size: Labels per ``sample_fn`` call.
        shard_size: Records per TFRecord shard.
        seed: Non-negative base seed.
        source: What produced the patches (e.g. ``"central"``, ``"client-3"``): stored
            in every record and ``synthetic.json``, and named in error messages.
        metadata: JSON-serialisable dict stored as ``metadata`` in ``synthetic.json``.
        progress: Show a tqdm progress bar (one step per patch).

    Returns:
        The contents of ``synthetic.json`` (also when resuming).

    Raises:
        ValueError: Bad arguments; or a batch of the wrong shape or dtype, with
            non-finite values or values outside [-1, 1] (the message names ``source``,
            the batch and the problem).
        TypeError: ``metadata`` is not a JSON-serialisable dict, or ``class_names``
            is a single string.
        FileExistsError: ``out_dir`` is not a folder, or holds anything but an empty
            folder or a finished set with the same arguments.
        Exception: Whatever ``sample_fn`` raises (nothing is left behind).

    Reference:
        Eskimez et al., Interspeech 2020, Sec. 3 (training the SER network on
        generated samples).
    """
    from tqdm import tqdm

    out_dir = os.path.abspath(os.fspath(out_dir))
    if isinstance(class_names, (str, bytes)):
        raise TypeError(f"class_names must be a sequence of names, got {class_names!r}")
    classes = [str(name) for name in class_names]
    if not classes:
        raise ValueError("class_names is empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class_names must be unique, got {classes}")
    per_class = _positive_int(per_class, "per_class")
    frames = _positive_int(frames, "frames")
    n_mels = _positive_int(n_mels, "n_mels")
    batch_size = _positive_int(batch_size, "batch_size")
    shard_size = _positive_int(shard_size, "shard_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string, got {source!r}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, default=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata is not JSON-serialisable: {error}") from None

    wanted = {"classes": classes, "per_class": per_class, "frames": frames,
              "n_mels": n_mels, "source": source, "seed": seed}
    done = _existing(out_dir, wanted)
    if done is not None:
        return done

    schedule = np.tile(np.arange(len(classes), dtype=np.int64), per_class)
    total = len(schedule)
    n_shards = -(-total // shard_size)
    shards = [{"name": _shard_name(i, n_shards),
               "records": min(shard_size, total - i * shard_size)} for i in range(n_shards)]
    constant = {
        "frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[frames])),
        "n_mels": tf.train.Feature(int64_list=tf.train.Int64List(value=[n_mels])),
        "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
    }
    per_label = [{
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        "emotion": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    } for i, name in enumerate(classes)]

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(out_dir)}.{uuid.uuid4().hex}.tmp")
    os.mkdir(temp)
    counts = np.zeros(len(classes), np.int64)
    writer = None
    bar = tqdm(total=total, unit="patch", desc=f"{source} -> TFRecord",
               disable=not progress)
    try:
        with bar:
            written = 0
            for index, start in enumerate(range(0, total, batch_size)):
                labels = schedule[start:start + batch_size].copy()
                batch = _check_batch(sample_fn(labels.copy(), _batch_seed(seed, index)),
                                     labels, frames, n_mels, source, index)
                # tolist() once per batch: building FloatLists from Python floats is ~7x
                # faster than from NumPy arrays with the upb protobuf backend.
                rows = batch.reshape(len(labels), -1).tolist()
                for label, row in zip(labels.tolist(), rows):
                    if written % shard_size == 0:
                        if writer is not None:
                            writer.close()
                        name = shards[written // shard_size]["name"]
                        writer = tf.io.TFRecordWriter(os.path.join(temp, name))
                    feature = {"features": tf.train.Feature(
                        float_list=tf.train.FloatList(value=row))}
                    feature.update(constant)
                    feature.update(per_label[label])
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
                    counts[label] += 1
                    written += 1
                bar.update(len(labels))
            writer.close()
            writer = None
        if not (counts == per_class).all():  # the schedule guarantees it; keep it honest
            raise RuntimeError(f"{source}: wrote counts {counts.tolist()}, not {per_class}")
        document = {"format_version": FORMAT_VERSION, **wanted,
                    "counts": {name: int(c) for name, c in zip(classes, counts)},
                    "total": total, "batch_size": batch_size, "shards": shards,
                    "metadata": metadata}
        atomic_json(os.path.join(temp, METADATA_FILE), document)
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        try:
            os.replace(temp, out_dir)
        except OSError:
            # Another process finished the same set first: keep theirs.
            if _existing(out_dir, wanted) is None:
                raise
            shutil.rmtree(temp, ignore_errors=True)
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return read_synthetic_metadata(out_dir)


def read_synthetic_metadata(folder: PathLike) -> dict:
    """The ``synthetic.json`` of a folder written by `write_synthetic_records`.

    Returns:
        The parsed document (see `write_synthetic_records`).

    Raises:
        FileNotFoundError: ``folder`` has no ``synthetic.json``.
        ValueError: The file is not valid JSON or lacks a required key.
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no {METADATA_FILE} (not a folder written by "
                                "write_synthetic_records, or not finished)")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    missing = ([key for key in _REQUIRED_KEYS if key not in document]
               if isinstance(document, dict) else list(_REQUIRED_KEYS))
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return document


def synthetic_dataset(folders: PathLike | Sequence[PathLike], *, batch_size: int,
                      shuffle: bool = True, seed: int = 0, repeat: bool = False,
                      drop_remainder: bool = False,
                      shuffle_buffer: int = 4096) -> tf.data.Dataset:
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

    Args:
        folders: A folder written by `write_synthetic_records`, or a list of them.
        batch_size: Patches per batch.
        shuffle: Shuffle the records (see above).
        seed: Shuffling seed.
        repeat: Repeat forever.
        drop_remainder: Drop the last partial batch (static batch size).
        shuffle_buffer: Records in the shuffle buffer.

    Returns:
        A dataset of dicts: ``features`` ``(batch, frames, n_mels)`` float32 and
        ``label`` ``(batch,)`` int32 class indices into the shared ``classes``. Its
        cardinality is known unless ``repeat``. Feed it to `keras.Model.fit` with
        `keras_ser.data.to_keras`.

    Raises:
        ValueError: No folder, bad option values, or a folder whose classes,
            ``frames`` or ``n_mels`` differ from the first one's (named in the message).
        FileNotFoundError: A folder without ``synthetic.json``, or with a listed shard
            missing.
    """
    if isinstance(folders, (str, bytes, os.PathLike)):
        folders = [folders]
    folders = [os.fspath(folder) for folder in folders]
    if not folders:
        raise ValueError("no synthetic record folder given")
    batch_size = _positive_int(batch_size, "batch_size")
    shuffle_buffer = _positive_int(shuffle_buffer, "shuffle_buffer")
    documents = [read_synthetic_metadata(folder) for folder in folders]
    first = documents[0]
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
            files.append(path)
            total += int(shard["records"])
    frames, n_mels = int(first["frames"]), int(first["n_mels"])
    spec = {"features": tf.io.FixedLenFeature([frames * n_mels], tf.float32),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    if shuffle:
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        ds = tf.data.TFRecordDataset(files)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def parse(serialized):
        example = tf.io.parse_example(serialized, spec)
        return {"features": tf.reshape(example["features"], [-1, frames, n_mels]),
                "label": tf.cast(example["label"], tf.int32)}

    ds = ds.map(tf.autograph.experimental.do_not_convert(parse),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if not repeat:
        batches = total // batch_size if drop_remainder else -(-total // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE)


def _embedding_set(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (n, d) array of embeddings, got shape "
                         f"{array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to fit a covariance, got "
                         f"{array.shape[0]}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has no embedding dimension (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return array


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings.

    With the sample means ``mu`` and the unbiased sample covariances ``S`` (``n - 1``
    in the denominator, as `numpy.cov`) of the rows of ``a`` and ``b``::

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    the squared 2-Wasserstein distance between N(mu_a, S_a) and N(mu_b, S_b), i.e. the
    FID formula of Heusel et al. (2017, eq. after Sec. "Fréchet Inception Distance"),
    here in any embedding space (e.g. the SER network's, for Eskimez et al. 2020). The
    result is in squared embedding units. The matrix square root is
    `scipy.linalg.sqrtm`; when it is not finite (a singular product, e.g. ``n <= d``)
    it is recomputed with `SQRTM_EPS` added to both covariance diagonals. An imaginary
    part from rounding is dropped if no diagonal entry's exceeds `IMAG_TOLERANCE`
    times max(1, the largest real diagonal entry). Rounding below zero returns 0.

    The estimate is biased for small ``n`` (it falls as ``n`` grows); compare
    distances computed from equal numbers of rows.

    Args:
        a: ``(n_a, d)`` array-like of embeddings.
        b: ``(n_b, d)`` array-like of embeddings.

    Returns:
        The distance ``d^2`` as a Python float (>= 0).

    Raises:
        ValueError: An input is not 2-D real numbers, has fewer than 2 rows or
            non-finite values, the widths ``d`` differ, or the square root has a
            non-negligible imaginary part.
    """
    a = _embedding_set(a, "a")
    b = _embedding_set(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: a is {a.shape}, b is {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ridge = SQRTM_EPS * np.eye(cov_a.shape[0])
        root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
        if not np.isfinite(root).all():
            raise ValueError("sqrt(S_a S_b) is not finite, even with a ridge of "
                             f"{SQRTM_EPS}")
    diagonal = np.diagonal(root)
    if np.iscomplexobj(diagonal):
        imaginary = float(np.abs(diagonal.imag).max())
        scale = max(1.0, float(np.abs(diagonal.real).max()))
        if imaginary > IMAG_TOLERANCE * scale:
            raise ValueError(f"sqrt(S_a S_b) has an imaginary part of {imaginary:.3g} on "
                             f"its diagonal (real scale {scale:.3g}): covariances too "
                             "ill-conditioned; use more rows or a smaller embedding")
        diagonal = diagonal.real
    difference = mean_a - mean_b
    distance = (float(difference @ difference) + float(np.trace(cov_a))
                + float(np.trace(cov_b)) - 2.0 * float(diagonal.sum()))
    return max(distance, 0.0)


def embed(model, patches, batch_size: int = 256) -> np.ndarray:
    """Run an embedding model over patches in batches (``model.predict``).

    The channel axis is adapted to a single-input model with a known input rank:
    ``(n, frames, mels, 1)`` patches are squeezed for a ``(frames, mels)`` input and
    ``(n, frames, mels)`` ones get a channel for a ``(frames, mels, 1)`` input.

    Args:
        model: A `keras.Model` (or anything with ``predict``) mapping a batch of
            patches to one embedding tensor, e.g. `keras_ser.models.sngan.trunk_of`
            of the SER classifier.
        patches: ``(n, frames, mels)`` or ``(n, frames, mels, 1)`` array-like in
            [-1, 1].
        batch_size: Patches per ``predict`` batch.

    Returns:
        float32 ``(n, d)``; outputs of higher rank are flattened per patch.

    Raises:
        ValueError: No patch, a non-positive ``batch_size``, or a model with several
            outputs.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    x = np.asarray(keras.ops.convert_to_numpy(patches), np.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"patches must be a non-empty batch, got shape {x.shape}")
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1 and inputs[0].shape is not None:
        rank = len(inputs[0].shape)
        if x.ndim == rank + 1 and x.shape[-1] == 1:
            x = x[..., 0]
        elif x.ndim == rank - 1 and inputs[0].shape[-1] == 1:
            x = x[..., None]
    out = model.predict(x, batch_size=batch_size, verbose=0)
    n_outputs = len(out) if isinstance(out, (list, tuple, dict)) else 1
    if n_outputs != 1:
        raise ValueError(f"the model has {n_outputs} outputs; give a model with one "
                         "embedding output")
    if isinstance(out, (list, tuple)):
        out = out[0]
    elif isinstance(out, dict):
        out = next(iter(out.values()))
    out = np.asarray(out, np.float32)
    return out.reshape(x.shape[0], -1)
