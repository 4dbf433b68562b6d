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
                 vtlp=None, oversample=None, labels: Optional[dict] = None,
                 normalise: Optional[str] = None,
                 stats: Optional[dict] = None, batch_size: int = 32, shuffle: bool = False,
                 shuffle_buffer: int = 8192, seed: int = 0, repeat: bool = False,
                 cache: bool = False, drop_remainder: bool = False,
                 keep: Sequence[str] = ()) -> tf.data.Dataset:
    """A batched dataset of features for one split.

    Which records belong to the split, and their labels, come from the shards' side files,
    so per-example work touches only serialised strings; parsing, decoding, cropping,
    VTLP and features then run on whole batches.

    Args:
        records: Record folder (from the converter) or list of shard files.
        classes: Emotion names in class-index order; records with other labels are
            dropped. ``None`` keeps every record with ``label`` -1 (unlabelled use).
        speakers: Speakers of the split (e.g. ``fold.part("train")``); ``None``: all.
        features: Preset name or `keras_ser.features.FeatureConfig`.
        crop_frames: Patch width in frames: each example is cropped to the waveform
            length giving exactly this many frames. ``None`` keeps whole utterances
            (zero-padded per batch, with a mask).
        crop: ``"word"`` (word-centred random crop, Chang & Scherer 2017), ``"random"``
            (uniform centre over the utterance) or ``"centre"`` (deterministic middle).
        crop_edge: ``"pad"`` or ``"shift"`` (`keras_ser.augment.word_centred_crop`).
        vtlp: ``None``; ``"example"`` (a random factor in [0.9, 1.1) per example); an
            `keras_ser.augment.EpochAlpha` (one factor per epoch); or a float (a fixed
            factor, e.g. for test-time voting over `augment.VTLP_TTA_ALPHAS`).
        oversample: ``None``, ``"balance"`` or ``{class: factor}`` (needs ``classes``);
            factors from the split's counts (`augment.class_counts_factors`).
        labels: ``{utterance_id: class index}`` replacing the emotion as the label, e.g.
            the 5-point level of a mean rating (Chang & Scherer 2017 oversample the
            primary labels, valence levels on IEMOCAP); ``classes`` then names the
            indices and records missing from the mapping are left out (an id that is
            not in the records raises).
        normalise: ``None``, ``"minmax"`` (to [-1, 1], Eskimez et al. 2020), ``"zscore"``
            or ``"zscore_band"`` (Etienne et al. 2018, eq. 2).
        stats: Feature statistics (`keras_ser.features.load_feature_stats`); when
            ``None`` and ``normalise`` is set, read from the record folder's stats.json.
        batch_size: Examples per batch.
        shuffle, shuffle_buffer: Shuffle examples (reshuffled every epoch).
        seed: Seed of shuffling, crops and VTLP factors.
        repeat: Repeat forever.
        cache: Keep the split's serialised records in memory after the first epoch.
        drop_remainder: Drop the last partial batch.
        keep: Extra scalar fields of the schema to pass through (``"speaker"``,
            ``"utterance_id"``, ``"valence"``, ...).

    Returns:
        A dataset of dicts: ``features`` ``(batch, frames, feature_dim)`` float32
        (images: ``(batch, height, width, 3)``), ``label`` ``(batch,)`` int32,
        ``length`` ``(batch,)`` int32 valid frames, ``mask`` ``(batch, frames)`` bool,
        and the ``keep`` fields. Its cardinality is known unless ``repeat``.

    Raises:
        FileNotFoundError: No shards, or a shard without its side file.
        ValueError: Bad option values, or statistics that do not match ``features``.
        tf.errors.InvalidArgumentError: (while iterating) a shard's records do not match
            its side file.
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
    if vtlp is not None and vtlp != "example" and not isinstance(vtlp, augment.EpochAlpha):
        vtlp = float(vtlp)
    files = record_files(records)
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
    ds = tf.data.Dataset.zip(tf.data.TFRecordDataset(files), index)
    ds = ds.filter(lambda serialized, meta: meta["chosen"])
    ds = ds.map(lambda serialized, meta: {"serialized": serialized, "label": meta["label"],
                                          "expected_id": meta["expected_id"]})
    if cache:
        ds = ds.cache()
    examples = int(selected.sum())
    if oversample is not None:
        counts = {c: int(((labels == i) & selected).sum()) for c, i in class_index.items()}
        factors = augment.class_counts_factors(counts, oversample)
        ds = augment.oversample(ds, lambda ex: ex["label"],
                                {class_index[c]: f for c, f in factors.items()})
        examples = sum(counts[c] * factors[c] for c in counts)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    parse_spec = {k: spec[k] for k in ("pcm", "num_samples", "segment_start", "segment_end",
                                       "utterance_id", *keep)}
    width = config.samples_for_frames(crop_frames) if crop_frames is not None else None

    def featurise(batch, batch_seed):
        ex = tf.io.parse_example(batch["serialized"], parse_spec)
        tf.debugging.assert_equal(ex["utterance_id"], batch["expected_id"], message=(
            "a shard's records do not match its side file; re-run the converter"))
        lengths = tf.cast(ex["num_samples"], tf.int32)
        seeds = tf.random.experimental.stateless_split(tf.cast(batch_seed, tf.int32), 2)
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
            _, begins = augment.crop_positions(lengths, segments, counts, width, seeds[0],
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
            alpha = augment.random_alpha(seeds[1], tf.shape(lengths))
        elif isinstance(vtlp, augment.EpochAlpha):
            alpha = vtlp.value()
        elif vtlp is not None:
            alpha = tf.constant(vtlp)
        x = feats.compute_features(waveform, config, alpha)
        if scale is not None:
            x = scale(x)
        out = {k: ex[k] for k in keep}
        out.update(features=x, label=batch["label"], length=frames,
                   mask=tf.sequence_mask(frames, tf.shape(x)[1]))
        return out

    # Every branch of featurise is decided in Python, so AutoGraph has nothing to convert;
    # skipping its source transformation saves seconds per pipeline.
    ds = ds.map(tf.autograph.experimental.do_not_convert(featurise),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if not repeat:
        batches = examples // batch_size if drop_remainder else -(-examples // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE)


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
