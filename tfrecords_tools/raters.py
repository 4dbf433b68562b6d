"""Simulated annotators who rate the valence and activation of smoke-test utterances.

IEMOCAP has several annotators rate every utterance on 1-5 scales and stores both the
separate ratings and their mean. The smoke-test corpus (`tfrecords_tools.smoke`) copies
that layout. Each of its utterances gets one rating per annotator in `ANNOTATORS` for
each dimension. A rating is the class's value from `tfrecords_tools.voice.STYLES` plus
Gaussian noise with standard deviation `RATING_NOISE`, rounded to an integer and
clipped to 1..5. Because of the noise, the mean of the ratings is often not a whole
number and varies around the class value, as a real corpus's does.
"""

from __future__ import annotations

import numpy as np

from tfrecords_tools.voice import STYLES

#: The simulated annotators who rate every utterance.
ANNOTATORS = ("A1", "A2", "A3")
#: Standard deviation of a rating around the class value, in points of the 1-5 scale.
RATING_NOISE = 0.7


def simulate_ratings(rng: np.random.Generator, emotion: str,
                     annotators: int = len(ANNOTATORS)) -> tuple:
    """Valence and activation ratings of simulated annotators for one utterance.

    Args:
        rng: Random generator; the ratings depend only on its state and the arguments.
        emotion: A class name, i.e. a key of `tfrecords_tools.voice.STYLES`.
        annotators: How many ratings of each kind.

    Returns:
        ``(valence_ratings, activation_ratings)``: lists of ``annotators`` floats, each an
        integer 1..5: the class value (`STYLES`) plus N(0, `RATING_NOISE`), rounded and
        clipped.

    Raises:
        ValueError: Unknown ``emotion``.
    """
    if emotion not in STYLES:
        raise ValueError(f"unknown smoke-test class {emotion!r}; known: {', '.join(STYLES)}")
    style = STYLES[emotion]

    def rate(value):
        noisy = np.rint(value + rng.normal(0.0, RATING_NOISE, annotators))
        return [float(v) for v in np.clip(noisy, 1.0, 5.0)]

    return rate(style.valence), rate(style.activation)

