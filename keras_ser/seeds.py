"""Seeds derived from where a random draw happens: (run seed, fold, row, stage, epoch).

A run that is killed and resumed must draw exactly the numbers an uninterrupted run
draws. Nothing random in keras-ser therefore carries state from one epoch to the next:
every draw is seeded by `derive` from the run's ``--seed`` and the names and counters of
the place it happens in (the fold, the model or variant, the training stage, the epoch,
the batch), so the draws of epoch 7 are the same whether epochs 0-6 ran in this process
or in one that was killed.

`derive` maps any tuple of integers and strings to a 31-bit integer through NumPy's
`SeedSequence` (strings are first hashed with SHA-256, so the result does not depend on
Python's per-process string hashing). `epoch_seed` does the same inside a `tf.data`
graph for an epoch index that is a tensor.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["derive", "epoch_seed", "reseed_generators"]


def _word(part) -> int:
    if isinstance(part, (bool, np.bool_)):
        return int(part)
    if isinstance(part, (int, np.integer)):
        value = int(part)
        if not 0 <= value < 2 ** 64:
            raise ValueError(f"seed parts must be in [0, 2**64), got {value}")
        return value
    if isinstance(part, str):
        return int.from_bytes(hashlib.sha256(part.encode("utf-8")).digest()[:8], "little")
    raise TypeError(f"seed parts are ints or strings, got {type(part).__name__}")


def derive(*parts) -> int:
    """A seed in ``[0, 2**31)`` determined by ``parts`` (ints >= 0 and strings).

    Different parts give unrelated seeds (NumPy `SeedSequence` hashing), the same parts
    always the same seed, in any process.

    Raises:
        ValueError: An integer part outside ``[0, 2**64)``.
        TypeError: A part that is neither an integer nor a string.
    """
    # SeedSequence splits an int into as many 32-bit words as it needs and ignores
    # trailing zero words, so (2**32,) would equal (0, 1) and (5, 0) equal (5,): give
    # every part two words and end with the number of parts.
    words = [w for p in parts for w in divmod(_word(p), 2 ** 32)] + [len(parts)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFFFFFF


def epoch_seed(seed: int, epoch):
    """In-graph seed of ``epoch`` (an int64 scalar tensor) for a pipeline seeded ``seed``.

    Used inside `tf.data` functions, where the epoch is a tensor: `tf.random.experimental.
    stateless_fold_in` pairs the epoch with the base seed (it leaves the first word as it
    is and puts the epoch in the second), and a stateless draw from that pair mixes both.

    Returns:
        int64 scalar tensor in ``[0, 2**31)``.
    """
    import tensorflow as tf

    base = tf.constant([derive(seed), 0], tf.int64)
    mixed = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))
    return tf.random.stateless_uniform([], mixed, minval=0, maxval=2 ** 31, dtype=tf.int64)


def reseed_generators(model, seed: int, epoch: int) -> int:
    """Set every `keras.random.SeedGenerator` of ``model`` to a state derived from
    ``(seed, epoch, position)``.

    Keras keeps the state of a `SeedGenerator` (the noise of a GAN trainer, a dropout
    mask) in a variable that ``save_weights`` does not store; reseeding at the start of
    each epoch makes the draws of an epoch independent of what ran before it.

    Returns:
        The number of generators reseeded.
    """
    states = [v for v in model.variables if v.name == "seed_generator_state"]
    for position, state in enumerate(states):
        state.assign(np.array([derive(seed, epoch, position), 0], state.dtype))
    return len(states)
