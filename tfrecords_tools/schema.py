"""The one `tf.train.Example` schema every corpus is written in.

A record holds one utterance: its 16-bit PCM samples and everything known about it. All
strings are stored as bytes features and every field is present in every record (empty
string, empty list or NaN when a corpus does not provide it), so a single record can be
read without any corpus-specific code.

Fields (name: feature type; meaning):

- ``pcm``: bytes; little-endian int16 samples, mono.
- ``sample_rate``: int64; Hz (16000 after conversion).
- ``num_samples``: int64; number of samples in ``pcm``.
- ``utterance_id``, ``corpus``, ``path``: bytes; unique id, corpus name, source file
  relative to the corpus root.
- ``speaker``, ``session``, ``gender``: bytes; gender is ``"female"``, ``"male"`` or ``""``.
- ``emotion``: bytes; the corpus label as a lowercase English word (``"anger"``,
  ``"happiness"``, ...), ``""`` when unlabelled or when annotators did not agree.
- ``emotion_votes``: bytes list; per-annotator categorical labels, when the corpus has them.
- ``valence_ratings``, ``activation_ratings``, ``dominance_ratings``: float lists, one
  rating per annotator (IEMOCAP: 1-5 scale); ``annotators``: bytes list naming them.
- ``valence``, ``activation``, ``dominance``: float; mean rating, NaN when not rated.
- ``transcript``, ``text_id``, ``intensity``: bytes.
- ``segment_start``, ``segment_end``: float lists, seconds from the start of ``pcm``;
  word, syllable or voiced-region segments, sorted, non-overlapping, inside the audio.
- ``segment_label``: bytes list (the word or syllable; empty for voiced regions).
- ``segment_kind``: bytes; ``"word"``, ``"syllable"``, ``"utterance"`` or ``"voiced"``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

#: Sample rate of every converted record, Hz.
SAMPLE_RATE = 16000

EMOTIONS = (
    "anger", "boredom", "calm", "contempt", "disgust", "excitement", "fear",
    "frustration", "happiness", "neutral", "other", "sadness", "surprise",
)
"""Label vocabulary shared by the readers (lowercase English words)."""

SEGMENT_KINDS = ("word", "syllable", "utterance", "voiced")

_STRING_FIELDS = (
    "utterance_id", "corpus", "path", "speaker", "session", "gender", "emotion",
    "transcript", "text_id", "intensity", "segment_kind",
)
_STRING_LIST_FIELDS = ("emotion_votes", "annotators", "segment_label")
_FLOAT_LIST_FIELDS = (
    "valence_ratings", "activation_ratings", "dominance_ratings",
    "segment_start", "segment_end",
)
_FLOAT_FIELDS = ("valence", "activation", "dominance")


@dataclasses.dataclass
class Utterance:
    """Metadata of one utterance, as a corpus reader finds it (everything but the audio).

    Readers fill what their corpus provides; the writer decodes ``audio_path``, resolves
    segments (given, else from ``textgrid``, else energy-based voiced regions) and writes
    the record.

    Attributes:
        utterance_id: Unique id within the conversion (also used to order records).
        corpus: Corpus name, e.g. ``"emodb"``.
        audio_path: Absolute path of the source audio file.
        path: ``audio_path`` relative to the corpus root (stored in the record).
        speaker, session, gender, emotion, transcript, text_id, intensity: See the
            module docstring.
        emotion_votes, annotators, valence_ratings, activation_ratings,
            dominance_ratings: Per-annotator labels and ratings.
        valence, activation, dominance: Mean ratings, NaN when not rated.
        segments: ``[(start_s, end_s), ...]`` or ``None`` when the reader has none.
        segment_labels: One label per segment (may be empty strings).
        segment_kind: One of `SEGMENT_KINDS` when ``segments`` is given.
        textgrid: Path of a Praat TextGrid to take word segments from, or ``None``.
        chunk_seconds: Split a long recording into chunks of this many seconds
            (records ``<id>_c0000``, ``<id>_c0001``, ...), or ``None`` to keep it whole.
    """

    utterance_id: str
    corpus: str
    audio_path: str
    path: str = ""
    speaker: str = ""
    session: str = ""
    gender: str = ""
    emotion: str = ""
    emotion_votes: list = dataclasses.field(default_factory=list)
    annotators: list = dataclasses.field(default_factory=list)
    valence_ratings: list = dataclasses.field(default_factory=list)
    activation_ratings: list = dataclasses.field(default_factory=list)
    dominance_ratings: list = dataclasses.field(default_factory=list)
    valence: float = math.nan
    activation: float = math.nan
    dominance: float = math.nan
    transcript: str = ""
    text_id: str = ""
    intensity: str = ""
    segments: Optional[list] = None
    segment_labels: Optional[list] = None
    segment_kind: str = ""
    textgrid: Optional[str] = None
    chunk_seconds: Optional[float] = None


@dataclasses.dataclass
class Skipped:
    """A source file that was not converted, and why.

    Attributes:
        path: The offending file (audio or label file).
        reason: One line saying what is wrong, e.g. ``"unknown emotion code 'X'"``.
    """

    path: str
    reason: str


def _bytes(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]))


def _floats(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _ints(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def serialize(utt: Utterance, pcm: np.ndarray, sample_rate: int) -> bytes:
    """Serialise one utterance and its samples to a `tf.train.Example`.

    Args:
        utt: Metadata; ``segments`` must already be resolved (a list, possibly empty).
        pcm: ``(samples,)`` int16 mono samples.
        sample_rate: Hz.

    Returns:
        The serialised Example.

    Raises:
        ValueError: ``pcm`` is not 1-D int16, or segments and labels disagree in length.
    """
    import tensorflow as tf

    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"{utt.audio_path}: pcm must be 1-D int16, got {pcm.dtype} {pcm.shape}")
    segments = utt.segments or []
    labels = utt.segment_labels if utt.segment_labels is not None else [""] * len(segments)
    if len(labels) != len(segments):
        raise ValueError(f"{utt.audio_path}: {len(segments)} segments but {len(labels)} labels")
    feature = {
        "pcm": _bytes([pcm.astype("<i2").tobytes()]),
        "sample_rate": _ints([sample_rate]),
        "num_samples": _ints([pcm.shape[0]]),
        "segment_start": _floats([s for s, _ in segments]),
        "segment_end": _floats([e for _, e in segments]),
        "segment_label": _bytes(labels),
    }
    for name in _STRING_FIELDS:
        feature[name] = _bytes([getattr(utt, name)])
    for name in ("emotion_votes", "annotators"):
        feature[name] = _bytes(getattr(utt, name))
    for name in ("valence_ratings", "activation_ratings", "dominance_ratings"):
        feature[name] = _floats(getattr(utt, name))
    for name in _FLOAT_FIELDS:
        feature[name] = _floats([getattr(utt, name)])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec():
    """The parsing spec for `tf.io.parse_single_example` / `tf.io.parse_example`.

    Returns:
        Dict from field name to `tf.io.FixedLenFeature` (scalars) or
        `tf.io.VarLenFeature` (lists, parsed as `tf.SparseTensor`).
    """
    import tensorflow as tf

    spec = {
        "pcm": tf.io.FixedLenFeature([], tf.string),
        "sample_rate": tf.io.FixedLenFeature([], tf.int64),
        "num_samples": tf.io.FixedLenFeature([], tf.int64),
    }
    for name in _STRING_FIELDS:
        spec[name] = tf.io.FixedLenFeature([], tf.string)
    for name in _STRING_LIST_FIELDS:
        spec[name] = tf.io.VarLenFeature(tf.string)
    for name in _FLOAT_LIST_FIELDS:
        spec[name] = tf.io.VarLenFeature(tf.float32)
    for name in _FLOAT_FIELDS:
        spec[name] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def read_example(serialized: bytes) -> dict:
    """Decode one serialised record into Python values (for tools and tests, not tf.data).

    Args:
        serialized: A record as written by `serialize`.

    Returns:
        Dict with every schema field; ``pcm`` as a ``(samples,)`` int16 array, lists as
        Python lists, strings as `str`.
    """
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    f = ex.features.feature
    out = {"pcm": np.frombuffer(f["pcm"].bytes_list.value[0], dtype="<i2").astype(np.int16),
           "sample_rate": f["sample_rate"].int64_list.value[0],
           "num_samples": f["num_samples"].int64_list.value[0]}
    for name in _STRING_FIELDS:
        out[name] = f[name].bytes_list.value[0].decode("utf-8")
    for name in _STRING_LIST_FIELDS:
        out[name] = [v.decode("utf-8") for v in f[name].bytes_list.value]
    for name in _FLOAT_LIST_FIELDS:
        out[name] = list(f[name].float_list.value)
    for name in _FLOAT_FIELDS:
        out[name] = f[name].float_list.value[0]
    return out
