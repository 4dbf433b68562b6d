"""The layers between a waveform and an utterance's class probabilities.

A served classifier, and every score keras-ser reports, runs the same chain::

    waveform (batch, samples) float32 in [-1, 1]
      -> CheckWaveform      rank 2, at least one STFT window
      -> AudioFeatures      log-mel (batch, frames, mels), dB (`keras_ser.features`);
         or WarpedCopies    (batch, copies, frames, mels): one VTLP warp per copy
      -> VoicedFrames       (features, length): voiced frames only (Kaldi VAD presets)
      -> Normalise          min-max to [-1, 1] or z-score, with training statistics
         or SpeakerNormalise  the same with each utterance's speaker's statistics,
                              a second input (batch, K)
      -> SlidingWindows     (batch, windows, crop_frames, mels)   (crop classifiers)
      -> FoldWindows        (batch * windows, crop_frames, mels)
      -> classifier         (batch * windows, classes)
      -> MeanOverWindows    (batch, classes): mean of the window probabilities
         VoteOverWindows    (batch, classes): share of windows (copies) voting each class

A whole-utterance classifier (the CRNN) skips the windows; with VTLP copies its copies
play the windows' part. `keras_ser.scoring` cuts utterances with these very layers, so a
reported score is what the exported model computes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_ser import features as features_mod


def _number_or_list(value):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return float(array)
    if array.ndim == 1:
        return [float(v) for v in array]
    raise ValueError(f"expected a scalar or a 1-D sequence, got shape {array.shape}")


@keras.saving.register_keras_serializable(package="keras_ser")
class CheckWaveform(keras.layers.Layer):
    """Identity on waveforms that fails in the graph on a wrong rank or too few samples.

    A waveform shorter than one STFT window has no frame to classify. Both checks are
    graph ops (`tf.ensure_shape`, `tf.debugging.assert_greater_equal`), so they guard the
    exported signature too and TensorFlow Serving returns their messages (a reloaded
    signature checks the dtype of a tensor but not its rank).

    Args:
        min_samples: The fewest samples accepted (``FeatureConfig.window_samples``).
        sample_rate: Hz, to state the minimum in ms in the message.

    Input shape:
        ``(batch, samples)`` float32. Output: the input, unchanged.

    Raises:
        ValueError: (at construction) ``min_samples < 1``.
        tf.errors.InvalidArgumentError: (when called) not rank 2, or ``samples <
            min_samples`` ("audio too short: ... at least N samples (M ms ...)").
    """

    def __init__(self, min_samples: int, sample_rate: int = 16000, **kwargs):
        super().__init__(**kwargs)
        if int(min_samples) < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.min_samples = int(min_samples)
        self.sample_rate = int(sample_rate)

    def call(self, waveform):
        waveform = tf.ensure_shape(waveform, [None, None], name="check_rank")
        samples = tf.shape(waveform)[1]
        check = tf.debugging.assert_greater_equal(
            samples, tf.constant(self.min_samples, samples.dtype),
            message=(f"audio too short: the model needs at least {self.min_samples} samples "
                     f"({1000.0 * self.min_samples / self.sample_rate:g} ms at "
                     f"{self.sample_rate} Hz, one STFT window) per utterance"))
        with tf.control_dependencies([check] if check is not None else []):
            return tf.identity(waveform)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"min_samples": self.min_samples, "sample_rate": self.sample_rate})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class WarpedCopies(keras.layers.Layer):
    """Features of fixed VTLP-warped copies of each waveform.

    Copy k is computed with warp factor ``alphas[k]`` (Etienne et al. 2018, eq. 1, the
    mel filterbank warped as in `keras_ser.features.log_mel_spectrogram`); Etienne et al.
    (Sec. 2) classify eleven copies, alpha = 0.90, 0.92, ..., 1.10, and take the
    majority vote (`VoteOverWindows`).

    Args:
        preset: Feature preset name (a sequence preset).
        alphas: The warp factors, one per copy.
        **kwargs: `FeatureConfig` overrides (e.g. ``n_mels``) and layer arguments.

    Call args:
        waveform: ``(batch, samples)`` float32.
        alphas: Optional ``(batch,)`` factors, one copy per row with its own factor
            (an evaluation that warps each utterance differently); default the
            constructor's copies.

    Returns:
        ``(batch, copies, frames, feature_dim)`` (one copy with per-row ``alphas``).

    Raises:
        ValueError: No alpha, or a non-positive one.
    """

    def __init__(self, preset: str, alphas, **kwargs):
        import dataclasses

        fields = {f.name for f in dataclasses.fields(features_mod.FeatureConfig)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(**kwargs)
        self.alphas = [float(a) for a in alphas]
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive warp factors, got {alphas}")
        self.preset = preset
        self.overrides = overrides
        self.config = features_mod.get_preset(preset).replace(**overrides)

    def call(self, waveform, alphas=None):
        if alphas is not None:
            return features_mod.compute_features(waveform, self.config, alphas, jit=False)[:, None]
        copies = len(self.alphas)
        batch = tf.shape(waveform)[0]
        tiled = tf.repeat(waveform, copies, axis=0)
        factors = tf.tile(tf.constant(self.alphas, tf.float32), [batch])
        feats = features_mod.compute_features(tiled, self.config, factors, jit=False)
        return tf.reshape(feats, tf.concat([[batch, copies], tf.shape(feats)[1:]], 0))

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else self.config.num_frames(samples)
        return (input_shape[0], len(self.alphas), frames, self.config.feature_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"preset": self.preset, "alphas": self.alphas, **self.overrides})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class Normalise(keras.layers.Layer):
    """Fixed normalisation of features with training statistics.

    ``kind="minmax"``: ``2 (x - minimum) / (maximum - minimum) - 1`` (Eskimez et al.
    2020, Sec. 4.2; for Chang & Scherer 2017, who give no normalisation, our choice),
    optionally clipped to [-1, 1]. ``kind="zscore"``: ``(x - mean) / std`` (Etienne et
    al. 2018, eq. 2, one mean and deviation). Statistics are scalars or one value per
    feature band (per band: our variant).

    Args:
        kind: ``"minmax"`` or ``"zscore"``.
        statistics: ``{"min", "max"}`` or ``{"mean", "std"}`` (dB for log-mels).
        clip: Clip min-max values to [-1, 1] (what a GAN-trained classifier saw).

    Input/output shape:
        ``(..., feature_dim)``.

    Raises:
        ValueError: (at construction) unknown kind, missing, non-finite or degenerate
            statistics (``max <= min``, ``std <= 0``).
    """

    KEYS = {"minmax": ("min", "max"), "zscore": ("mean", "std")}

    def __init__(self, kind: str, statistics: dict, clip: bool = False, **kwargs):
        super().__init__(**kwargs)
        if kind not in self.KEYS:
            raise ValueError(f"kind must be 'minmax' or 'zscore', got {kind!r}")
        missing = [k for k in self.KEYS[kind] if k not in statistics]
        if missing:
            raise ValueError(f"{kind} normalisation needs statistics {missing}")
        self.kind, self.clip = kind, bool(clip)
        self.statistics = {k: _number_or_list(statistics[k]) for k in self.KEYS[kind]}
        a, b = (np.asarray(self.statistics[k], np.float64) for k in self.KEYS[kind])
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError(f"statistics must be finite, got {self.statistics}")
        if np.any(b <= a) if kind == "minmax" else np.any(b <= 0):
            raise ValueError(f"degenerate {kind} statistics {self.statistics}")
        self._a, self._b = np.float32(a), np.float32(b)

    def call(self, features):
        if self.kind == "zscore":
            return features_mod.zscore(features, self._a, self._b)
        out = features_mod.minmax_to_unit(features, self._a, self._b)
        return tf.clip_by_value(out, -1.0, 1.0) if self.clip else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind, "statistics": self.statistics, "clip": self.clip})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class SpeakerNormalise(keras.layers.Layer):
    """`Normalise` with statistics given per utterance: its speaker's own.

    Called on ``[features, a, b]`` with ``(a, b)`` = ``(mean, std)`` for
    ``kind="zscore"`` or ``(min, max)`` for ``kind="minmax"``, each ``(batch, K)``
    with ``K = 1`` (one value along time and frequency) or ``K = feature_dim`` (per band
    or per dimension). Per-speaker statistics are the usual practice on EmoDB and for
    Kaldi-style speaker CMVN; none of our five papers normalises per speaker (our
    variant; Etienne et al. 2018, eq. 2, use one global mean and deviation).

    Args:
        kind: ``"zscore"`` or ``"minmax"``.
        clip: Clip min-max values to [-1, 1].

    Input shape:
        features ``(batch, ..., feature_dim)`` (rank 3, or 4 with VTLP copies), ``a`` and
        ``b`` ``(batch, K)``.

    Output shape:
        As ``features``.

    Raises:
        ValueError: (at construction) an unknown kind. The values are used as given,
            exactly as `Normalise` uses its fixed ones (``std`` floored at 1e-6, min-max
            unclipped unless ``clip``); `keras_ser.serving.predict.speaker_inputs` rejects
            degenerate ones before they get here.
    """

    def __init__(self, kind: str = "zscore", clip: bool = False, **kwargs):
        super().__init__(**kwargs)
        if kind not in Normalise.KEYS:
            raise ValueError(f"kind must be 'minmax' or 'zscore', got {kind!r}")
        self.kind, self.clip = kind, bool(clip)

    def call(self, inputs):
        features, a, b = inputs
        rank = len(features.shape)
        shape = tf.concat([tf.shape(a)[:1], tf.ones([rank - 2], tf.int32),
                           tf.shape(a)[-1:]], 0)
        a = tf.reshape(tf.cast(a, features.dtype), shape)
        b = tf.reshape(tf.cast(b, features.dtype), shape)
        if self.kind == "zscore":
            return features_mod.zscore(features, a, b)
        out = features_mod.minmax_to_unit(features, a, b)
        return tf.clip_by_value(out, -1.0, 1.0) if self.clip else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind, "clip": self.clip})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class SlidingWindows(keras.layers.Layer):
    """Cut feature sequences into overlapping fixed-length windows (dynamic time axis).

    Windows of ``crop_frames`` frames start at frames ``0, hop, 2 hop, ...`` while they
    fit; when the last of them ends before the last frame, one more window ending at the
    last frame is added, so every frame is covered (our choice). A sequence shorter than
    one window is padded at the end with ``pad_value``::

        frames' = max(frames, crop_frames)
        windows = 1 + (frames' - crop_frames) // hop_frames
                  (+ 1 if (windows - 1) * hop_frames + crop_frames < frames')

    Args:
        crop_frames: Window length in frames (the classifier's time axis).
        hop_frames: Frames between window starts (>= 1).
        min_frames: Sequences with fewer frames raise.
        pad_value: Value of padded frames (the normalised features of silence).

    Input shape:
        ``(batch, frames, ...)``. Output: ``(batch, windows, crop_frames, ...)``.

    Raises:
        ValueError: (at construction) a size below 1.
        tf.errors.InvalidArgumentError: (when called) ``frames < min_frames``.
    """

    def __init__(self, crop_frames: int, hop_frames: int, min_frames: int = 1,
                 pad_value: float = -1.0, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("crop_frames", crop_frames), ("hop_frames", hop_frames),
                             ("min_frames", min_frames)):
            if int(value) < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.crop_frames = int(crop_frames)
        self.hop_frames = int(hop_frames)
        self.min_frames = int(min_frames)
        self.pad_value = float(pad_value)

    def window_starts(self, frames):
        """``(windows,)`` int32 first frame of each window of a ``frames``-frame sequence."""
        frames = tf.convert_to_tensor(frames, tf.int32)
        crop = tf.constant(self.crop_frames, tf.int32)
        length = tf.maximum(frames, crop)
        count = 1 + (length - crop) // self.hop_frames
        starts = tf.range(count, dtype=tf.int32) * self.hop_frames
        last = length - crop
        tail = tf.cast((count - 1) * self.hop_frames < last, tf.int32)
        return tf.concat([starts, tf.fill(tf.reshape(tail, [1]), last)], axis=0)

    def call(self, features):
        rank = len(features.shape)
        if rank < 2:
            raise ValueError(f"SlidingWindows needs (batch, frames, ...), got rank {rank}")
        frames = tf.shape(features)[1]
        check = tf.debugging.assert_greater_equal(
            frames, tf.constant(self.min_frames, tf.int32),
            message=f"sequence too short: fewer than {self.min_frames} frames")
        with tf.control_dependencies([check] if check is not None else []):
            pad = tf.maximum(self.crop_frames - frames, 0)
            paddings = [[0, 0], [0, pad]] + [[0, 0]] * (rank - 2)
            padded = tf.pad(features, paddings,
                            constant_values=tf.cast(self.pad_value, features.dtype))
        starts = self.window_starts(frames)
        indices = starts[:, tf.newaxis] + tf.range(self.crop_frames, dtype=tf.int32)
        return tf.gather(padded, indices, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, self.crop_frames, *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"crop_frames": self.crop_frames, "hop_frames": self.hop_frames,
                       "min_frames": self.min_frames, "pad_value": self.pad_value})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class FoldWindows(keras.layers.Layer):
    """``(batch, windows, ...)`` -> ``(batch * windows, ...)``: one classifier call for all."""

    def call(self, windows):
        inner = [d if d is not None else tf.shape(windows)[i + 2]
                 for i, d in enumerate(windows.shape[2:])]
        return tf.reshape(windows, [-1, *inner])

    def compute_output_shape(self, input_shape):
        batch, windows = input_shape[0], input_shape[1]
        merged = batch * windows if batch is not None and windows is not None else None
        return (merged, *input_shape[2:])


def _per_window(outputs, windows):
    lead = tf.shape(windows)[:2]
    return tf.reshape(outputs, tf.concat([lead, tf.shape(outputs)[1:]], axis=0))


@keras.saving.register_keras_serializable(package="keras_ser")
class VoicedFrames(keras.layers.Layer):
    """Keep each utterance's voiced frames, in order (Kaldi's ``select-voiced-frames``).

    The voicing decision is Kaldi's ``compute-vad`` rule on the log energy in feature
    column ``energy_index`` (C0 of Kaldi MFCCs, `keras_ser.features.kaldi_vad`). Voiced
    frames are moved to the front of each row, the rest of the row is zeroed, and the
    time axis is cut to the longest voiced run of the batch. An utterance with no voiced
    frame keeps all its frames (our choice: Kaldi drops such an utterance, a served model
    must still answer). Tu et al. (ICASSP 2019, Sec. 3.1) remove silences this way
    before statistics pooling.

    Args:
        energy_threshold, energy_mean_scale, frames_context, proportion_threshold:
            ``compute-vad`` options (Kaldi defaults 5.0, 0.5, 0, 0.6).
        energy_index: Feature column holding the log energy (0 for Kaldi MFCCs).

    Input shape:
        ``(batch, frames, dim)`` un-normalised features (C0 in natural-log energy of
        int16-scaled samples, as Kaldi computes it).

    Output:
        ``(features, length)``: ``(batch, voiced_frames, dim)`` float32 and ``(batch,)``
        int32 voiced frames per row.
    """

    def __init__(self, energy_threshold: float = 5.0, energy_mean_scale: float = 0.5,
                 frames_context: int = 0, proportion_threshold: float = 0.6,
                 energy_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.options = {"energy_threshold": float(energy_threshold),
                        "energy_mean_scale": float(energy_mean_scale),
                        "frames_context": int(frames_context),
                        "proportion_threshold": float(proportion_threshold)}
        self.energy_index = int(energy_index)

    def call(self, features):
        voiced = features_mod.kaldi_vad(features[..., self.energy_index], **self.options)
        voiced = tf.logical_or(voiced, tf.logical_not(
            tf.reduce_any(voiced, axis=1, keepdims=True)))
        length = tf.reduce_sum(tf.cast(voiced, tf.int32), axis=1)
        order = tf.argsort(tf.cast(tf.logical_not(voiced), tf.int32), axis=1, stable=True)
        compact = tf.gather(features, order, batch_dims=1)
        keep = tf.sequence_mask(length, tf.shape(features)[1], dtype=features.dtype)
        compact = (compact * keep[..., None])[:, :tf.reduce_max(length)]
        return compact, length

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, input_shape[-1]), (input_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update({**self.options, "energy_index": self.energy_index})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class MeanOverWindows(keras.layers.Layer):
    """Mean of per-window outputs per utterance.

    Called on ``[window_outputs, windows]``: ``(batch * windows, C)`` in `FoldWindows`
    order and the ``(batch, windows, ...)`` tensor they came from; returns ``(batch, C)``.
    Averaging window probabilities is Eskimez et al.'s rule (2020, Sec. 4.3) and our
    choice for Chang & Scherer's crop classifier.
    """

    def call(self, inputs):
        outputs, windows = inputs
        return tf.reduce_mean(_per_window(outputs, windows), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], *input_shape[0][1:])


@keras.saving.register_keras_serializable(package="keras_ser")
class VoteOverWindows(keras.layers.Layer):
    """Share of an utterance's windows (or VTLP copies) whose most probable class is c.

    Called like `MeanOverWindows`; returns ``(batch, C)`` vote shares summing to 1. The
    predicted class is the most voted one, ties going to the tied class of highest
    mean probability (`keras_ser.scoring.decide`; the tie-break is our choice).

    Reference:
        Etienne et al. 2018, Sec. 2 (majority vote over eleven warped copies).
    """

    def call(self, inputs):
        outputs, windows = inputs
        per = _per_window(outputs, windows)
        votes = tf.one_hot(tf.argmax(per, axis=-1), tf.shape(per)[-1], dtype=per.dtype)
        return tf.reduce_mean(votes, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], *input_shape[0][1:])


def silence_level(config, normalise: str, statistics: dict) -> float:
    """The normalised features of digital silence: the pad value of short utterances.

    Silence has mel power 0, floored at ``config.amin``: ``10 log10(amin)`` dB (-100 dB
    by default), then normalised (min-max gives -1.0 when the minimum is the floor).

    Raises:
        ValueError: Per-band statistics or MFCC features (pass the pad value).
    """
    if config.n_mfcc:
        raise ValueError("MFCC features have no single silence level: pass pad_value")
    keys = Normalise.KEYS[normalise]
    a, b = (statistics[k] for k in keys)
    if np.ndim(a) or np.ndim(b):
        raise ValueError("per-band statistics: pass pad_value explicitly")
    floor_db = 10.0 * np.log10(config.amin)
    if normalise == "zscore":
        return float((floor_db - a) / max(b, 1e-6))
    return float(2.0 * (floor_db - a) / (b - a) - 1.0)
