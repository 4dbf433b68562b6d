"""Augmentation in the graph: word-centred random crops, VTLP, class oversampling.

All functions are TensorFlow ops usable inside `tf.data` maps and Keras layers.
"""

from __future__ import annotations

from typing import Callable, Mapping, Union

import numpy as np
import tensorflow as tf

#: The eleven warp factors of test-time VTLP voting, 0.90, 0.92, ..., 1.10
#: (Etienne et al. 2018, Sec. 2).
VTLP_TTA_ALPHAS = tuple(round(0.9 + 0.02 * k, 2) for k in range(11))
#: Range of the random warp factor (Etienne et al. 2018, Sec. 2; Jaitly & Hinton 2013).
VTLP_RANGE = (0.9, 1.1)
#: Boundary frequency of the piecewise-linear warp as a fraction of f_max (Etienne et
#: al. 2018, eq. 1: f0 / f_max = 0.9).
VTLP_F0_RATIO = 0.9


def vtlp_warp(freq_hz, alpha, fmax_hz: float, f0_ratio: float = VTLP_F0_RATIO):
    """The VTLP frequency map G(f) of Etienne et al. 2018, eq. 1.

    ``G(f) = alpha f`` for ``f <= f0``, and above ``f0`` the straight line from
    ``(f0, alpha f0)`` to ``(f_max, f_max)``, with ``f0 = f0_ratio * f_max``; so
    ``f_max`` maps to itself and ``alpha = 1`` is the identity.

    Args:
        freq_hz: Frequencies, Hz (NumPy array or tensor).
        alpha: Warp factor (broadcasts against ``freq_hz``), typically in (0.9, 1.1).
        fmax_hz: Upper frequency f_max, Hz (the paper's "upper cut-off frequency";
            `keras_ser.features` passes the Nyquist frequency, our choice).
        f0_ratio: f0 / f_max (paper: 0.9).

    Returns:
        Warped frequencies, Hz, same type as the input.
    """
    f0 = f0_ratio * fmax_hz
    lower = alpha * freq_hz
    upper = alpha * f0 + (fmax_hz - alpha * f0) * (freq_hz - f0) / (fmax_hz - f0)
    if isinstance(freq_hz, np.ndarray) or np.isscalar(freq_hz):
        return np.where(freq_hz <= f0, lower, upper)
    return tf.where(freq_hz <= f0, lower, upper)


def vtlp_filterbank(band_edges_hz, bin_freqs_hz, alpha, fmax_hz: float,
                    f0_ratio: float = VTLP_F0_RATIO, slaney_norm: bool = True) -> tf.Tensor:
    """Mel filterbank seen through the VTLP warp: ``W[f, m] = T_m(G(f))``.

    Band ``m`` collects the energy of every STFT bin ``f`` whose warped frequency
    ``G(f)`` (eq. 1) falls inside its triangle ``T_m``, so energy at ``f`` lands where
    ``G(f)`` lies on the mel axis: a 1 kHz tone shows up at 1.1 kHz with ``alpha = 1.1``.
    Warping the filterbank (rather than resampling the spectrum) loses no energy where
    the warp compresses frequencies and leaves no holes where it stretches them. With
    ``alpha = 1`` this is the plain filterbank (librosa's construction).

    Args:
        band_edges_hz: ``(n_mels + 2,)`` lower/centre/upper frequencies of the triangles.
        bin_freqs_hz: ``(bins,)`` centre frequency of each STFT bin.
        alpha: Warp factor, scalar or ``(batch,)``.
        fmax_hz: f_max of eq. 1, Hz (bins above it are not warped).
        f0_ratio: f0 / f_max (paper: 0.9).
        slaney_norm: Scale each triangle by ``2 / (upper - lower)`` (librosa's Slaney
            normalisation); ``False`` for HTK-style unit-peak triangles.

    Returns:
        ``(batch, bins, n_mels)`` float32 weights.

    Reference:
        Etienne et al. 2018, Sec. 2, eq. 1; Jaitly & Hinton, "Vocal tract length
        perturbation (VTLP) improves speech recognition", ICML WDLASL 2013.
    """
    edges = tf.cast(band_edges_hz, tf.float32)
    freqs = tf.cast(bin_freqs_hz, tf.float32)
    alpha = tf.reshape(tf.cast(alpha, tf.float32), [-1, 1])
    warped = vtlp_warp(freqs[tf.newaxis], alpha, fmax_hz, f0_ratio)
    warped = tf.where(freqs[tf.newaxis] <= fmax_hz, warped, freqs[tf.newaxis] + 0.0 * alpha)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    g = warped[:, :, tf.newaxis]
    rising = (g - lower) / (centre - lower)
    falling = (upper - g) / (upper - centre)
    weights = tf.maximum(0.0, tf.minimum(rising, falling))
    if slaney_norm:
        weights = weights * (2.0 / (upper - lower))
    return weights


def random_alpha(seed, shape=(), low: float = VTLP_RANGE[0], high: float = VTLP_RANGE[1]):
    """Warp factors drawn uniformly from ``[low, high)`` with a stateless seed.

    Args:
        seed: ``(2,)`` int seed (`tf.random.stateless_uniform`).
        shape: Output shape.

    Returns:
        float32 tensor of ``shape``.
    """
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def epoch_alpha(seed: int, epoch, low: float = VTLP_RANGE[0], high: float = VTLP_RANGE[1]):
    """The VTLP warp factor every training example of ``epoch`` shares.

    Drawn uniformly from ``[low, high)`` with a stateless generator seeded by ``(seed,
    epoch)`` (`keras_ser.seeds.epoch_seed`), so it can be computed inside a `tf.data`
    graph where the epoch is a tensor, and again eagerly to log it; a resumed run draws
    the same factors.

    Args:
        seed: The run's data seed.
        epoch: Epoch index (int or int64 scalar tensor).
        low, high: Range of the factor.

    Returns:
        float32 scalar tensor.

    Reference:
        Etienne et al. 2018, Sec. 2 (first strategy: one factor per epoch for all
        training examples, none for the validation set).
    """
    from keras_ser import seeds

    value = seeds.epoch_seed(seed, tf.cast(epoch, tf.int64))
    return tf.random.stateless_uniform([], tf.stack([value, tf.constant(7, tf.int64)]),
                                       minval=low, maxval=high)


def crop_positions(lengths: tf.Tensor, segments: tf.Tensor, counts: tf.Tensor, width: int,
                   seed, sample_rate: int = 16000, edge: str = "pad"):
    """Where the word-centred crops of a batch start (see `word_centred_crop`).

    Args:
        lengths: ``(batch,)`` valid samples per utterance.
        segments: ``(total_segments, 2)`` float32 start/end in seconds of every
            utterance's segments, utterance after utterance (a ragged batch's values).
        counts: ``(batch,)`` segments per utterance; an utterance without segments uses
            its whole length.
        width: Crop length, samples.
        seed: ``(2,)`` int seed of this batch.
        sample_rate: Hz.
        edge: ``"pad"`` or ``"shift"``.

    Returns:
        ``(centres, begins)``: ``(batch,)`` int32 chosen centre and first sample of each
        crop (negative when the crop is zero-padded at the start).

    Raises:
        ValueError: ``edge`` is not ``"pad"`` or ``"shift"``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Data Corpus" (random word-centred crops;
        the handling of utterance edges is our choice).
    """
    if edge not in ("pad", "shift"):
        raise ValueError(f"edge must be 'pad' or 'shift', got {edge!r}")
    lengths = tf.cast(lengths, tf.int32)
    counts = tf.cast(counts, tf.int32)
    has = counts > 0
    draws = tf.random.stateless_uniform(tf.stack([tf.shape(lengths)[0], 2]), seed)
    pick = tf.minimum(tf.cast(draws[:, 0] * tf.cast(tf.maximum(counts, 1), tf.float32),
                              tf.int32), tf.maximum(counts, 1) - 1)
    values = tf.reshape(tf.cast(segments, tf.float32), [-1, 2])
    values = tf.concat([values, tf.zeros([1, 2])], axis=0)  # a safe index for empty rows
    row_starts = tf.cumsum(counts, exclusive=True)
    index = tf.where(has, row_starts + pick, tf.shape(values)[0] - 1)
    duration = tf.cast(lengths, tf.float32) / sample_rate
    start = tf.where(has, tf.gather(values[:, 0], index), 0.0)
    end = tf.minimum(tf.where(has, tf.gather(values[:, 1], index), duration), duration)
    centre_s = start + (end - start) * draws[:, 1]
    centres = tf.minimum(tf.cast(tf.round(centre_s * sample_rate), tf.int32), lengths - 1)
    begins = centres - width // 2
    if edge == "shift":
        begins = tf.clip_by_value(begins, 0, tf.maximum(lengths - width, 0))
    return centres, begins


def word_centred_crops(waveforms: tf.Tensor, lengths: tf.Tensor, segments: tf.Tensor,
                       counts: tf.Tensor, width: int, seed, sample_rate: int = 16000,
                       edge: str = "pad"):
    """Batched word-centred random crops of waveforms held in a padded tensor.

    Args:
        waveforms: ``(batch, max_samples)``, zero beyond each length.
        lengths, segments, counts, width, seed, sample_rate, edge: As in `crop_positions`.

    Returns:
        ``(crops, centres, begins)``: ``(batch, width)`` crops in the waveforms' dtype and
        the `crop_positions` results.

    Raises:
        ValueError: ``edge`` is not ``"pad"`` or ``"shift"``.
    """
    centres, begins = crop_positions(lengths, segments, counts, width, seed, sample_rate,
                                     edge)
    padded = tf.pad(waveforms, [[0, 0], [width, width]])
    positions = begins[:, tf.newaxis] + width + tf.range(width)[tf.newaxis]
    return tf.gather(padded, positions, batch_dims=1), centres, begins


def word_centred_crop(waveform: tf.Tensor, segments: tf.Tensor, width: int, seed,
                      sample_rate: int = 16000, edge: str = "pad"):
    """Crop a fixed-width window centred on a random point of a random segment.

    A segment (word or syllable) is chosen uniformly, then a centre uniformly inside it,
    and ``width`` samples around that centre are cut out. With ``edge="pad"`` the window
    is always centred exactly on that point, zero-padded where it passes the start or end
    of the utterance (also when the utterance is shorter than ``width``). With
    ``edge="shift"`` the window is moved inside the utterance instead (the centre stays
    inside the window but not in its middle); only utterances shorter than ``width`` are
    padded (at the end). An utterance without segments uses its whole length as one.

    Args:
        waveform: ``(samples,)`` float32.
        segments: ``(num_segments, 2)`` float32 start and end, seconds.
        width: Crop length, samples.
        seed: ``(2,)`` int seed for `tf.random.stateless_uniform`.
        sample_rate: Hz.
        edge: ``"pad"`` or ``"shift"``.

    Returns:
        ``(crop, centre, start)``: ``(width,)`` crop; the chosen centre (sample index in
        the utterance, int32); the first sample of the crop in the utterance (int32,
        negative when padded at the start).

    Raises:
        ValueError: ``edge`` is not ``"pad"`` or ``"shift"``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Data Corpus" (random word-centred crops;
        the handling of utterance edges is our choice).
    """
    waveform = tf.convert_to_tensor(waveform)
    segments = tf.reshape(tf.cast(segments, tf.float32), [-1, 2])
    crops, centres, begins = word_centred_crops(
        waveform[tf.newaxis], tf.shape(waveform)[:1], segments, tf.shape(segments)[:1],
        width, seed, sample_rate, edge)
    return crops[0], centres[0], begins[0]


def class_counts_factors(counts: Mapping[str, int], factors: Union[str, Mapping[str, float]]):
    """Integer repetition factors per class for oversampling.

    Args:
        counts: Examples per class in the training split.
        factors: ``"balance"`` (each class repeated ``round(max_count / count)`` times),
            or a mapping from class to factor for named classes (others 1; paper: 2 for
            happiness and anger, Etienne et al. 2018, Sec. 2 and Table 1). The
            ``"balance"`` rule is our choice.

    Returns:
        Dict class -> int factor >= 1.

    Raises:
        ValueError: A named class is not in ``counts``, or a factor is below 1.
    """
    if factors == "balance":
        largest = max(counts.values())
        return {c: max(1, int(round(largest / n))) if n else 1 for c, n in counts.items()}
    unknown = sorted(set(factors) - set(counts))
    if unknown:
        raise ValueError(f"oversampling names classes not in the data: {unknown}")
    out = {c: 1 for c in counts}
    for c, f in factors.items():
        if f < 1:
            raise ValueError(f"oversampling factor of '{c}' must be >= 1, got {f}")
        out[c] = int(round(f))
    return out


def oversample(dataset: tf.data.Dataset, label_fn: Callable, factors: Mapping[int, int]):
    """Repeat every example ``factors[label]`` times (before shuffling).

    Args:
        dataset: Dataset of examples.
        label_fn: Maps an example to its int32 class index.
        factors: Class index -> repetition count (missing classes: 1).

    Returns:
        The oversampled dataset (deterministic: each example and its copies in a row).
    """
    size = max(factors) + 1 if factors else 1
    table = tf.constant([int(factors.get(k, 1)) for k in range(size)], tf.int64)

    def repeat(example):
        label = tf.cast(label_fn(example), tf.int64)
        count = tf.where((label >= 0) & (label < size),
                         tf.gather(table, tf.clip_by_value(label, 0, size - 1)),
                         tf.constant(1, tf.int64))
        return tf.data.Dataset.from_tensors(example).repeat(count)

    return dataset.flat_map(tf.autograph.experimental.do_not_convert(repeat))
