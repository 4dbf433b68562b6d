"""What the models predict: emotion categories, 5-point valence/activation levels, fuzzy labels.

Chang & Scherer (ICASSP 2017, Sec. "Data Corpus") train on IEMOCAP's annotator ratings of
valence and activation (1-5) and encode the mean rating as a "fuzzy" distribution over
the five levels (4.5 -> ``[0, 0, 0, .5, .5]``; splitting other means linearly is our
choice); acted corpora such as EmoDB carry only a
category per utterance. `TaskSpec` says which head is primary and where each head's
targets come from; `fuzzy_labels_tf` is the in-graph encoding of the mean ratings.

For category-only corpora each category is placed on the two scales by its position in
Russell's circumplex of affect (Russell, "A circumplex model of affect", J. Pers. Soc.
Psychol. 39(6), 1980, Fig. 1-2: anger, fear and happiness high in arousal; sadness and
boredom low; anger, fear, disgust, sadness and boredom unpleasant; happiness pleasant),
the quadrants of the binary valence/arousal groupings of EmoDB in Schuller et al.,
"Acoustic emotion recognition: a benchmark comparison of performances", ASRU 2009. The
levels within a quadrant (e.g. 4.5 vs 5) are our choice; a half level becomes a fuzzy
label split between two levels. Such targets are a coarsening of the category, not
independent annotations, and results say so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: Rating dimensions with a head of their own (Chang & Scherer 2017, Sec. "Multitask
#: Deep Convolutional Generative Adversarial Network").
DIMENSIONS = ("valence", "activation")
#: Points of the IEMOCAP rating scale (Chang & Scherer 2017, Sec. "Data Corpus").
RATING_LEVELS = 5
#: Class names of a rating head.
LEVEL_NAMES = ("1", "2", "3", "4", "5")
#: Category -> (valence, activation) on 1 (negative / calm) .. 5 (positive / excited).
CIRCUMPLEX_LEVELS = {
    "anger": (1.5, 5.0),
    "fear": (1.5, 4.5),
    "happiness": (5.0, 4.0),
    "surprise": (4.0, 4.5),
    "excitement": (4.5, 4.5),
    "neutral": (3.0, 3.0),
    "disgust": (1.5, 3.0),
    "boredom": (2.5, 1.5),
    "sadness": (1.5, 1.5),
    "frustration": (2.0, 3.5),
    "calm": (3.5, 1.5),
}

#: How the derived levels are cited in results.
CIRCUMPLEX_REFERENCE = ("Russell 1980 circumplex quadrants (as in Schuller et al., ASRU "
                        "2009); levels within a quadrant are keras-ser's choice")


def dimension_levels(classes: Sequence[str], dimension: str) -> np.ndarray:
    """Mean rating (1-5) of ``dimension`` for each class name, from `CIRCUMPLEX_LEVELS`.

    Args:
        classes: Emotion category names in class-index order.
        dimension: ``"valence"`` or ``"activation"``.

    Returns:
        ``(len(classes),)`` float32 levels.

    Raises:
        ValueError: Unknown dimension, or a class without a placement (the message
            lists them; use a corpus with ratings instead).
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be 'valence' or 'activation', got {dimension!r}")
    missing = [c for c in classes if c not in CIRCUMPLEX_LEVELS]
    if missing:
        raise ValueError(f"no valence/activation placement for {missing}; known classes: "
                         f"{sorted(CIRCUMPLEX_LEVELS)}")
    column = DIMENSIONS.index(dimension)
    return np.array([CIRCUMPLEX_LEVELS[c][column] for c in classes], np.float32)


@dataclasses.dataclass
class TaskSpec:
    """What the heads predict and where their targets come from.

    Attributes:
        primary: ``"emotion"`` (categories, e.g. EmoDB's 7), ``"valence"`` or
            ``"activation"`` (the 5-point mean rating as a fuzzy label; the paper's
            setting on IEMOCAP, with the other dimension auxiliary).
        emotions: Category names in class-index order (the records kept); ``None``
            keeps every record (dimensional primary task).
        features: Feature preset of the log-mel crops (``"chang"``).
        derive_dimensions: Fill missing ratings from the category with
            `dimension_levels`.

    Raises:
        ValueError: Unknown primary task, or ``"emotion"`` without class names.
    """

    primary: str = "emotion"
    emotions: Sequence[str] | None = None
    features: str = "chang"
    derive_dimensions: bool = True

    def __post_init__(self):
        if self.primary not in ("emotion",) + DIMENSIONS:
            raise ValueError(f"primary must be 'emotion', 'valence' or 'activation', got "
                             f"{self.primary!r}")
        if self.primary == "emotion" and not self.emotions:
            raise ValueError("primary='emotion' needs the emotion class names")
        self.emotions = list(self.emotions) if self.emotions else None

    @property
    def class_names(self) -> list:
        """Names of the primary head's classes."""
        return list(self.emotions) if self.primary == "emotion" else list(LEVEL_NAMES)

    def dimension_table(self, dimension: str) -> np.ndarray | None:
        """Per-category levels used for unrated records, or ``None``."""
        if not (self.derive_dimensions and self.emotions):
            return None
        return dimension_levels(self.emotions, dimension)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def fuzzy_labels_tf(ratings, levels: int = RATING_LEVELS):
    """Graph version of `keras_ser.metrics.fuzzy_labels`: ``(n,)`` -> ``(n, levels)``.

    Ratings are clipped to [1, levels]; a NaN rating (unrated) gives a row of NaN, which
    the trainer leaves out of that head's loss.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Data Corpus" (fuzzy labels; the linear
        split of means other than x.5 is our choice).
    """
    import tensorflow as tf

    r = tf.clip_by_value(tf.cast(ratings, tf.float32), 1.0, float(levels))
    finite = tf.math.is_finite(r)
    r = tf.where(finite, r, 1.0)
    upper = tf.minimum(tf.floor(r), levels - 1.0)
    fraction = r - upper
    index = tf.cast(upper, tf.int32)
    dist = (tf.one_hot(index - 1, levels) * (1.0 - fraction)[:, None]
            + tf.one_hot(index, levels) * fraction[:, None])
    return tf.where(finite[:, None], dist, np.nan)
