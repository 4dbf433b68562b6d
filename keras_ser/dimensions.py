"""Valence and activation (arousal) levels for corpora labelled with categories only.

Chang & Scherer (2017) train on IEMOCAP's annotator ratings of valence and activation
(1-5). Acted corpora such as EmoDB carry only an emotion category per utterance. To
train and score the dimensional heads there, each category is placed on the two 5-point
scales by its position in Russell's circumplex of affect (Russell, "A circumplex model of
affect", J. Pers. Soc. Psychol. 39(6), 1980, Fig. 1-2: anger, fear and happiness high in
arousal; sadness and boredom low; anger, fear, disgust, sadness and boredom unpleasant;
happiness pleasant) -- the same quadrants as the binary valence/arousal groupings of
EmoDB used by Schuller et al., "Acoustic emotion recognition: a benchmark comparison of
performances", ASRU 2009. The exact levels within a quadrant (e.g. 4.5 vs 5) are our
choice; a half level becomes a fuzzy label split between two levels.

These targets are derived from the category, so on EmoDB the dimensional heads learn a
coarsening of the emotion label, not independent annotations: results say so.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

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

REFERENCE = ("Russell 1980 circumplex quadrants (as in Schuller et al., ASRU 2009); "
             "levels within a quadrant are keras-ser's choice")


def dimension_levels(classes: Sequence[str], dimension: str) -> np.ndarray:
    """Mean rating (1-5) of ``dimension`` for each class name, from `CIRCUMPLEX_LEVELS`.

    Args:
        classes: Emotion category names in class-index order.
        dimension: ``"valence"`` or ``"activation"``.

    Returns:
        ``(len(classes),)`` float32 levels.

    Raises:
        ValueError: Unknown dimension, or a class without a documented placement (the
            message lists them; pass ratings from the corpus instead).
    """
    if dimension not in ("valence", "activation"):
        raise ValueError(f"dimension must be 'valence' or 'activation', got {dimension!r}")
    missing = [c for c in classes if c not in CIRCUMPLEX_LEVELS]
    if missing:
        raise ValueError(f"no valence/activation placement for {missing}; known classes: "
                         f"{sorted(CIRCUMPLEX_LEVELS)}")
    column = 0 if dimension == "valence" else 1
    return np.array([CIRCUMPLEX_LEVELS[c][column] for c in classes], np.float32)
