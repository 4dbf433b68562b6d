"""TFRecord shards -> `tf.data` pipelines for a fold split: crop, augment, features, batch.

The pipeline of `make_dataset`::

    shards -> parse -> keep the split's speakers and classes -> [cache] -> [oversample]
    -> [shuffle] -> crop (word-centred, random, centre) or keep whole utterances
    -> batch (fixed patches, or padded with a mask) -> VTLP + features on the batch
    -> [normalise] -> prefetch(AUTOTUNE)

Randomness (crop positions, per-example VTLP factors) comes from
`tf.data.Dataset.random` seeds zipped with the examples, so a pipeline with the same seed
gives the same batches, and every epoch draws new crops.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from keras_ser import augment, features as feats
from tfrecords_tools.schema import feature_spec

AUTOTUNE = tf.data.AUTOTUNE

_STRING_FIELDS = ("utterance_id", "speaker", "session", "gender", "emotion", "corpus",
                  "segment_kind", "transcript", "text_id")
_FLOAT_FIELDS = ("valence", "activation", "dominance")


def record_files(records: Union[str, Sequence[str]]) -> list:
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


def read_records(records: Union[str, Sequence[str]], parse_batch: int = 64) -> tf.data.Dataset:
    """Dataset of decoded examples (`decode_record`) from a record folder or shard list."""
    files = record_files(records)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                       num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(parse_batch).map(parse_records, num_parallel_calls=AUTOTUNE,
                                   deterministic=True).unbatch()
    return ds.map(decode_record, num_parallel_calls=AUTOTUNE, deterministic=True)


def record_metadata(records: Union[str, Sequence[str]]) -> list:
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
                 speakers: Optional[Iterable[str]] = None) -> dict:
    """Records per class among ``speakers`` (all when ``None``), from the side files."""
    speakers = None if speakers is None else set(speakers)
    counts = {c: 0 for c in classes}
    for r in record_metadata(records):
        if (speakers is None or r["speaker"] in speakers) and r["emotion"] in counts:
            counts[r["emotion"]] += 1
    return counts


def _string_table(keys: Sequence[str]) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(keys), tf.string),
                                            tf.range(len(keys), dtype=tf.int32)),
        default_value=-1)


def _normaliser(normalise: Optional[str], stats: Optional[dict]):
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
    raise ValueError(f"normalise must be None, 'minmax', 'zscore' or 'zscore_band', "
                     f"got {normalise!r}")


def make_dataset(records, *, classes: Optional[Sequence[str]] = None,
                 speakers: Optional[Iterable[str]] = None,
                 features: Union[str, feats.FeatureConfig] = "eskimez",
                 crop_frames: Optional[int] = None, crop: str = "word", crop_edge: str = "pad",
                 vtlp=None, oversample=None, normalise: Optional[str] = None,
                 stats: Optional[dict] = None, batch_size: int = 32, shuffle: bool = False,
                 shuffle_buffer: int = 4096, seed: int = 0, repeat: bool = False,
                 cache: bool = False, drop_remainder: bool = False,
                 keep: Sequence[str] = ()) -> tf.data.Dataset:
    """A batched dataset of features for one split.

    Args:
        records: Record folder (from the converter) or list of shard files.
        classes: Emotion names in class-index order; records with other labels are
            dropped. ``None`` keeps every record with ``label`` -1 (unlabelled use).
        speakers: Speakers of the split (e.g. ``fold.part("train")``); ``None``: all.
        features: Preset name or `keras_ser.features.FeatureConfig`.
        crop_frames: Patch width in frames: each example is cropped to the waveform
            length giving exactly this many frames. ``None`` keeps whole utterances
            (padded per batch, with a mask).
        crop: ``"word"`` (word-centred random crop, Chang & Scherer 2017), ``"random"``
            (uniform centre over the utterance) or ``"centre"`` (deterministic middle).
        crop_edge: ``"pad"`` or ``"shift"`` (`keras_ser.augment.word_centred_crop`).
        vtlp: ``None``; ``"example"`` (a random factor in [0.9, 1.1) per example); an
            `keras_ser.augment.EpochAlpha` (one factor per epoch); or a float (a fixed
            factor, e.g. for test-time voting over `augment.VTLP_TTA_ALPHAS`).
        oversample: ``None``, ``"balance"`` or ``{class: factor}`` (needs ``classes``);
            factors from the split's counts (`augment.class_counts_factors`).
        normalise: ``None``, ``"minmax"`` (to [-1, 1], Eskimez et al. 2020), ``"zscore"``
            or ``"zscore_band"`` (Etienne et al. 2018, eq. 2).
        stats: Feature statistics (`keras_ser.features.load_feature_stats`); when
            ``None`` and ``normalise`` is set, read from the record folder's stats.json.
        batch_size: Examples per batch.
        shuffle, shuffle_buffer: Shuffle examples (reshuffled every epoch).
        seed: Seed of shuffling, crops and VTLP factors.
        repeat: Repeat forever.
        cache: Keep decoded, filtered waveforms in memory after the first epoch.
        drop_remainder: Drop the last partial batch.
        keep: Extra per-example fields to pass through (``"speaker"``, ``"valence"``, ...).

    Returns:
        A dataset of dicts: ``features`` ``(batch, frames, feature_dim)`` float32
        (images: ``(batch, height, width, 3)``), ``label`` ``(batch,)`` int32,
        ``length`` ``(batch,)`` int32 valid frames, ``mask`` ``(batch, frames)`` bool,
        and the ``keep`` fields.

    Raises:
        FileNotFoundError: No shards.
        ValueError: Bad option values, or statistics that do not match ``features``.
    """
    config = feats.get_preset(features)
    if crop not in ("word", "random", "centre"):
        raise ValueError(f"crop must be 'word', 'random' or 'centre', got {crop!r}")
    if oversample is not None and classes is None:
        raise ValueError("oversample needs classes")
    files = record_files(records)
    if normalise is not None and stats is None:
        if not isinstance(records, str) or not os.path.isdir(records):
            raise ValueError("normalise without stats needs a record folder with stats.json")
        stats = feats.load_feature_stats(records, config)
    scale = _normaliser(normalise, stats)

    ds = read_records(files)
    if speakers is not None:
        speaker_table = _string_table(sorted(set(speakers)))
        ds = ds.filter(lambda ex: speaker_table.lookup(ex["speaker"]) >= 0)
    if classes is not None:
        class_table = _string_table(list(classes))
        ds = ds.map(lambda ex: {**ex, "label": class_table.lookup(ex["emotion"])},
                    num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.filter(lambda ex: ex["label"] >= 0)
    else:
        ds = ds.map(lambda ex: {**ex, "label": tf.constant(-1, tf.int32)})
    wanted = {"waveform", "num_samples", "segments", "label", *keep}
    ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k in wanted})
    if cache:
        ds = ds.cache()
    if oversample is not None:
        counts = label_counts(files, classes, speakers)
        factors = augment.class_counts_factors(counts, oversample)
        ds = augment.oversample(ds, lambda ex: ex["label"],
                                {list(classes).index(c): f for c, f in factors.items()})
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    def _example_alpha(seed_pair):
        return augment.random_alpha(tf.random.experimental.stateless_fold_in(seed_pair, 1))

    if crop_frames is not None:
        width = config.samples_for_frames(crop_frames)

        def cut(ex, s):
            seed_pair = tf.cast(s, tf.int32)
            wav = ex["waveform"]
            if crop == "word":
                segments = ex["segments"]
            elif crop == "random":
                segments = tf.zeros([0, 2])
            else:
                middle = tf.cast(tf.shape(wav)[0], tf.float32) / 2.0 / config.sample_rate
                segments = tf.reshape(tf.stack([middle, middle]), [1, 2])
            piece, _, _ = augment.word_centred_crop(wav, segments, width, seed_pair,
                                                    config.sample_rate, crop_edge)
            out = {k: v for k, v in ex.items() if k not in ("waveform", "segments")}
            out["waveform"] = piece
            out["length"] = tf.constant(crop_frames, tf.int32)
            out["alpha"] = _example_alpha(seed_pair)
            return out

        ds = ds.map(cut, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        def whole(ex, s):
            out = {k: v for k, v in ex.items() if k != "segments"}
            out["length"] = config.num_frames(ex["num_samples"])
            out["alpha"] = _example_alpha(tf.cast(s, tf.int32))
            return out

        ds = ds.map(whole, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)

    def featurise(batch):
        alpha = None
        if vtlp == "example":
            alpha = batch["alpha"]
        elif isinstance(vtlp, augment.EpochAlpha):
            alpha = vtlp.value()
        elif vtlp is not None:
            alpha = tf.constant(float(vtlp))
        x = feats.compute_features(batch["waveform"], config, alpha)
        if scale is not None:
            x = scale(x)
        out = {k: v for k, v in batch.items()
               if k not in ("waveform", "alpha", "num_samples")}
        out["features"] = x
        frames = tf.shape(x)[1]
        out["mask"] = tf.sequence_mask(batch["length"], frames)
        return out

    if vtlp is not None and vtlp != "example" and not isinstance(vtlp, augment.EpochAlpha):
        float(vtlp)  # a fixed factor must be a number; raises ValueError otherwise
    ds = ds.map(featurise, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def to_keras(dataset: tf.data.Dataset, inputs: Union[str, Sequence[str]] = "features",
             targets: Union[str, Sequence[str]] = "label") -> tf.data.Dataset:
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
