"""Spectral features as TensorFlow graph ops and a Keras layer, with one preset per paper.

Features are computed in the graph (inside `tf.data` and inside exported models) from
float32 waveforms, so a served model that takes raw audio computes exactly what training
saw. The mel filterbank is built once with librosa (a constant in the graph); the STFT,
mel projection, log, DCT and deltas are `tf.signal`/`tf.math` ops. With the same
parameters the log-mel equals ``librosa.power_to_db(librosa.feature.melspectrogram(...))``
to within 0.01 dB wherever the mel power is above 1e-6 (``tests/test_features.py``).

Conventions: waveforms are ``(batch, samples)`` float32 in [-1, 1] (int16 PCM / 32768);
spectrograms are ``(batch, frames, bins)``; a frame starts every ``hop`` samples and
``frames = 1 + (samples - window) // hop`` (no centring) unless ``center=True``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Optional, Union

import keras
import numpy as np
import tensorflow as tf

from keras_ser import augment


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Parameters of a spectral front end, in the units papers state them.

    Attributes:
        sample_rate: Hz.
        window_ms: STFT window (Hann, periodic), milliseconds.
        hop_ms: STFT hop, milliseconds.
        n_fft: FFT size in samples; ``None`` is the next power of two >= the window.
        n_mels: Number of mel bands.
        fmin_hz, fmax_hz: Band edges of the mel filterbank, Hz (``None``: Nyquist).
        mel_scale: ``"slaney"`` (librosa's default, area-normalised) or ``"htk"``
            (HTK formula, unnormalised triangles, as `tf.signal` builds them).
        center: Pad ``n_fft // 2`` zeros on both sides (librosa's default since 0.10), so
            frame ``k`` is centred on sample ``k * hop``.
        amin: Floor of the mel power before the log (``10 log10(max(P, amin))``, dB).
        n_mfcc: If > 0, output this many MFCCs (DCT-II, orthonormal, of the dB log-mel).
        deltas: 0, 1 (append Δ) or 2 (append Δ and ΔΔ); regression over ±2 frames.
        image_size: If set, ``(height, width)``: the log-mel is resized to an image with
            3 identical channels scaled to [0, 255] (ImageNet CNNs).
        reference: The paper and section the preset follows.
    """

    sample_rate: int = 16000
    window_ms: float = 32.0
    hop_ms: float = 16.0
    n_fft: Optional[int] = None
    n_mels: int = 128
    fmin_hz: float = 0.0
    fmax_hz: Optional[float] = None
    mel_scale: str = "slaney"
    center: bool = False
    amin: float = 1e-10
    n_mfcc: int = 0
    deltas: int = 0
    image_size: Optional[tuple] = None
    reference: str = ""

    def __post_init__(self):
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.window_samples > self.fft_size:
            raise ValueError(f"window of {self.window_samples} samples exceeds n_fft "
                             f"{self.fft_size}")
        if self.hop_samples < 1:
            raise ValueError(f"hop of {self.hop_ms} ms is under one sample")
        if not 0 <= self.fmin_hz < self.upper_hz <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin_hz < fmax_hz <= {self.sample_rate / 2} Hz, got "
                             f"{self.fmin_hz}, {self.fmax_hz}")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))

    @property
    def window_samples(self) -> int:
        """STFT window length in samples."""
        return int(round(self.window_ms * self.sample_rate / 1000.0))

    @property
    def hop_samples(self) -> int:
        """STFT hop in samples."""
        return int(round(self.hop_ms * self.sample_rate / 1000.0))

    @property
    def fft_size(self) -> int:
        """FFT length in samples."""
        return self.n_fft or 2 ** math.ceil(math.log2(self.window_samples))

    @property
    def upper_hz(self) -> float:
        """Upper edge of the mel filterbank, Hz."""
        return float(self.fmax_hz if self.fmax_hz is not None else self.sample_rate / 2)

    @property
    def num_bins(self) -> int:
        """Linear-frequency bins of the STFT (``n_fft // 2 + 1``)."""
        return self.fft_size // 2 + 1

    @property
    def feature_dim(self) -> int:
        """Size of the last axis of the features (mels, or MFCCs times 1 + deltas)."""
        base = self.n_mfcc or self.n_mels
        return base * (1 + self.deltas)

    def num_frames(self, num_samples):
        """Frames produced from ``num_samples`` samples (Python int or int tensor)."""
        if self.center:
            return 1 + num_samples // self.hop_samples
        if isinstance(num_samples, (int, np.integer)):
            return max(0, 1 + (num_samples - self.window_samples) // self.hop_samples)
        return tf.maximum(0, 1 + (num_samples - self.window_samples) // self.hop_samples)

    def samples_for_frames(self, frames: int) -> int:
        """Waveform length in samples that yields exactly ``frames`` frames."""
        if self.center:
            return (frames - 1) * self.hop_samples
        return (frames - 1) * self.hop_samples + self.window_samples

    def logmel_params(self) -> dict:
        """The parameters as recorded in ``stats.json`` (`tfrecords_tools.stats`)."""
        return {"sample_rate": self.sample_rate, "window_samples": self.window_samples,
                "hop_samples": self.hop_samples, "n_fft": self.fft_size, "n_mels": self.n_mels,
                "fmin_hz": float(self.fmin_hz), "fmax_hz": self.upper_hz,
                "mel_scale": self.mel_scale, "center": self.center, "amin": self.amin}

    def replace(self, **changes) -> "FeatureConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: Front ends of the five methods. Presets are data: pick one by name with `get_preset`.
PRESETS = {
    "eskimez": FeatureConfig(
        window_ms=32.0, hop_ms=16.0, n_fft=512, n_mels=128,
        reference="Eskimez et al., Interspeech 2020, Sec. 4.2: 32 ms window, 16 ms hop, "
                  "512 FFT bins, 128 mel bands, 128x128 patches; Hann window, Slaney "
                  "mel up to 8 kHz and the 1e-10 power floor are our choice"),
    "chang": FeatureConfig(
        window_ms=64.0, hop_ms=32.0, n_fft=1024, n_mels=128,
        reference="Chang & Scherer, ICASSP 2017, Sec. \"Data Corpus\": 1024-sample "
                  "window, 128 rows (said to span 0-11 kHz, impossible at 16 kHz); the "
                  "128 Slaney log-mel bands up to 8 kHz and the 512-sample hop are our "
                  "choice"),
    "etienne": FeatureConfig(
        window_ms=64.0, hop_ms=32.0, n_fft=1024, n_mels=128, fmax_hz=4000.0,
        reference="Etienne et al. 2018, Sec. 3 and Table 1: 64 ms window, 32 ms shift, "
                  "frequencies up to 4 kHz; 128 log-mel bands are our choice"),
    "etienne_8k": FeatureConfig(
        window_ms=64.0, hop_ms=32.0, n_fft=1024, n_mels=128, fmax_hz=8000.0,
        reference="Etienne et al. 2018, Table 1: the 8 kHz range of the best model; "
                  "128 log-mel bands are our choice"),
    "tu": FeatureConfig(
        window_ms=25.0, hop_ms=10.0, n_fft=512, n_mels=40, fmin_hz=20.0, mel_scale="htk",
        n_mfcc=13, deltas=2,
        reference="Tu et al.: 13 MFCC + delta + delta-delta (39 dims), 25 ms / 10 ms "
                  "frames, energy VAD"),
    "nitk": FeatureConfig(
        window_ms=32.0, hop_ms=16.0, n_fft=512, n_mels=128, image_size=(224, 224),
        reference="NITK report: log-mel spectrogram images at 224x224 for VGG16/ResNet50"),
}


def get_preset(name: Union[str, FeatureConfig]) -> FeatureConfig:
    """The `FeatureConfig` of a preset name (a config passes through unchanged).

    Raises:
        KeyError: Unknown preset; the message lists the known ones.
    """
    if isinstance(name, FeatureConfig):
        return name
    if name not in PRESETS:
        raise KeyError(f"unknown feature preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]


@functools.lru_cache(maxsize=32)
def _mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale) -> np.ndarray:
    import librosa

    weights = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                  fmax=fmax, htk=mel_scale == "htk",
                                  norm="slaney" if mel_scale == "slaney" else None)
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def mel_weights(config: FeatureConfig) -> np.ndarray:
    """The mel filterbank of ``config`` as a ``(num_bins, n_mels)`` float32 matrix.

    Built with `librosa.filters.mel` (Slaney or HTK), so the graph's log-mel matches
    librosa's exactly up to float rounding.
    """
    return _mel_matrix(config.sample_rate, config.fft_size, config.n_mels,
                       float(config.fmin_hz), config.upper_hz, config.mel_scale)


def stft(waveform: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Complex STFT with a periodic Hann window (zero-centred frames if ``config.center``).

    Args:
        waveform: ``(..., samples)`` float32.
        config: Window, hop and FFT size.

    Returns:
        ``(..., frames, n_fft // 2 + 1)`` complex64.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if config.center:
        pad = config.fft_size // 2
        rank = len(waveform.shape)
        waveform = tf.pad(waveform, [[0, 0]] * (rank - 1) + [[pad, pad]])
        # librosa centres a shorter window inside each n_fft frame: drop the samples
        # before the first window and after the last one.
        offset = (config.fft_size - config.window_samples) // 2
        if offset:
            waveform = waveform[..., offset:tf.shape(waveform)[-1] - offset]
    return tf.signal.stft(waveform, frame_length=config.window_samples,
                          frame_step=config.hop_samples, fft_length=config.fft_size,
                          window_fn=tf.signal.hann_window, pad_end=False)


def _power(spectrum: tf.Tensor) -> tf.Tensor:
    return tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))


def power_spectrogram(waveform: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Power STFT ``|X|^2`` (see `stft`).

    Args:
        waveform: ``(..., samples)`` float32.
        config: Window, hop and FFT size.

    Returns:
        ``(..., frames, n_fft // 2 + 1)`` float32.
    """
    return _power(stft(waveform, config))


def power_to_db(power: tf.Tensor, amin: float = 1e-10) -> tf.Tensor:
    """``10 log10(max(power, amin))``, dB relative to full scale (librosa's ``ref=1``)."""
    return (10.0 / math.log(10.0)) * tf.math.log(tf.maximum(power, amin))


def mel_band_edges(config: FeatureConfig) -> np.ndarray:
    """``(n_mels + 2,)`` lower/centre/upper frequencies (Hz) of the mel triangles."""
    import librosa

    return librosa.mel_frequencies(config.n_mels + 2, fmin=float(config.fmin_hz),
                                   fmax=config.upper_hz, htk=config.mel_scale == "htk")


def log_mel_from_power(power: tf.Tensor, config: FeatureConfig,
                       alpha: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Project a power spectrogram on the mel filterbank (VTLP-warped if asked), take dB.

    Args:
        power: ``(batch, frames, num_bins)`` (or ``(frames, num_bins)`` without VTLP).
        config: Filterbank parameters.
        alpha: VTLP factor, scalar or ``(batch,)``; ``None`` for the plain filterbank.

    Returns:
        ``(batch, frames, n_mels)`` log-mel, dB.
    """
    if alpha is None:
        mel = tf.tensordot(power, tf.constant(mel_weights(config)), axes=1)
        return power_to_db(mel, config.amin)
    return _vtlp_log_mel(power, alpha, config)


def _vtlp_log_mel(spectrum: tf.Tensor, alpha, config: FeatureConfig,
                  jit: bool = True) -> tf.Tensor:
    bins = np.arange(config.num_bins, dtype=np.float32) * config.sample_rate / config.fft_size
    fn = _vtlp_log_mel_xla if jit else _vtlp_log_mel_ops
    return fn(spectrum, tf.cast(alpha, tf.float32),
              tf.constant(mel_band_edges(config), tf.float32), tf.constant(bins),
              config.sample_rate / 2.0, config.mel_scale == "slaney", config.amin)


def _vtlp_log_mel_ops(spectrum, alpha, edges, bins, fmax, slaney, amin):
    power = _power(spectrum) if spectrum.dtype.is_complex else spectrum
    weights = augment.vtlp_filterbank(edges, bins, alpha, fmax, slaney_norm=slaney)
    return power_to_db(tf.linalg.matmul(power, weights), amin)


# XLA fuses |X|^2, the per-example warped filterbank and the log into few passes: about
# 1.4x faster per training batch on this CPU than the unfused ops. It compiles once per
# input shape, so inference on utterances of many lengths (scoring, an exported VTLP
# vote) uses the plain ops instead (``jit=False``).
_vtlp_log_mel_xla = tf.function(_vtlp_log_mel_ops, jit_compile=True, reduce_retracing=True)


def log_mel_spectrogram(waveform: tf.Tensor, config: Union[str, FeatureConfig] = "eskimez",
                        alpha: Optional[tf.Tensor] = None, jit: bool = True) -> tf.Tensor:
    """Log-mel spectrogram, optionally with VTLP applied to the power spectrum first.

    Args:
        waveform: ``(batch, samples)`` or ``(samples,)`` float32.
        config: A preset name or `FeatureConfig`.
        alpha: VTLP warp factor, scalar or ``(batch,)``; ``None`` for none (the mel
            filterbank is warped, `keras_ser.augment.vtlp_filterbank`, Etienne et al.
            2018, eq. 1). The warp's f_max is always the Nyquist frequency, not the
            config's ``fmax_hz`` (our choice; the paper only says "upper cut-off
            frequency").
        jit: Compute the warped filterbank with XLA (fast for the fixed shapes of
            training batches; ``False`` for utterances of many lengths).

    Returns:
        ``(batch, frames, n_mels)`` (or ``(frames, n_mels)``), dB.
    """
    config = get_preset(config)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if alpha is None:
        return log_mel_from_power(power_spectrogram(waveform, config), config)
    if len(waveform.shape) == 1:
        return log_mel_spectrogram(waveform[tf.newaxis], config, alpha, jit)[0]
    return _vtlp_log_mel(stft(waveform, config), alpha, config, jit)


def mfcc_from_log_mel(log_mel_db: tf.Tensor, n_mfcc: int) -> tf.Tensor:
    """MFCCs: orthonormal DCT-II of a dB log-mel, first ``n_mfcc`` coefficients.

    Equals ``librosa.feature.mfcc(S=log_mel_db, n_mfcc=n_mfcc)`` (dct_type 2, ortho).

    Args:
        log_mel_db: ``(..., frames, n_mels)``.

    Returns:
        ``(..., frames, n_mfcc)``.
    """
    return tf.signal.dct(log_mel_db, type=2, norm="ortho")[..., :n_mfcc]


def deltas(features: tf.Tensor, width: int = 5) -> tf.Tensor:
    """Regression deltas along time: ``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2)``.

    Edges repeat the first and last frame. With ``width=5`` this equals
    ``librosa.feature.delta(x, width=5, mode="nearest")`` (and HTK's formula, N = 2).

    Args:
        features: ``(..., frames, dims)``.
        width: Odd window length in frames.

    Returns:
        ``(..., frames, dims)``.

    Raises:
        ValueError: ``width`` is not an odd number >= 3.
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f"delta width must be odd and >= 3, got {width}")
    n = width // 2
    first = features[..., :1, :]
    last = features[..., -1:, :]
    padded = tf.concat([first] * n + [features] + [last] * n, axis=-2)
    frames = tf.shape(features)[-2]
    total = tf.zeros_like(features)
    for k in range(1, n + 1):
        ahead = padded[..., n + k:n + k + frames, :]
        behind = padded[..., n - k:n - k + frames, :]
        total += k * (ahead - behind)
    return total / (2.0 * sum(k * k for k in range(1, n + 1)))


def frame_energy_db(waveform: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Log energy per STFT frame (sum of the power spectrum), dB; ``(batch, frames)``."""
    return power_to_db(tf.reduce_sum(power_spectrogram(waveform, config), axis=-1), config.amin)


def energy_vad(waveform: tf.Tensor, config: FeatureConfig,
               threshold_db: float = 30.0) -> tf.Tensor:
    """Energy voice-activity mask: frames within ``threshold_db`` of the loudest frame.

    Used by the speaker-adversarial recipe (Tu et al.) to drop silent frames.

    Args:
        waveform: ``(batch, samples)`` float32.
        config: Frame parameters.
        threshold_db: Frames quieter than the utterance's loudest frame by more than this
            are non-speech.

    Returns:
        ``(batch, frames)`` bool.
    """
    energy = frame_energy_db(waveform, config)
    return energy >= tf.reduce_max(energy, axis=-1, keepdims=True) - threshold_db


def compute_features(waveform: tf.Tensor, config: Union[str, FeatureConfig] = "eskimez",
                     alpha: Optional[tf.Tensor] = None, jit: bool = True) -> tf.Tensor:
    """The features a config describes: log-mel, MFCC (+ deltas), or a 3-channel image.

    Args:
        waveform: ``(batch, samples)`` float32 in [-1, 1].
        config: A preset name or `FeatureConfig`.
        alpha: Optional VTLP factor, scalar or ``(batch,)``.
        jit: XLA for the VTLP filterbank (`log_mel_spectrogram`).

    Returns:
        ``(batch, frames, feature_dim)``; for image configs ``(batch, height, width, 3)``
        in [0, 255] with frequency rising upwards (row 0 is the highest band).
    """
    config = get_preset(config)
    feats = log_mel_spectrogram(waveform, config, alpha, jit)
    if config.n_mfcc:
        feats = mfcc_from_log_mel(feats, config.n_mfcc)
    if config.deltas:
        first = deltas(feats)
        parts = [feats, first] + ([deltas(first)] if config.deltas == 2 else [])
        feats = tf.concat(parts, axis=-1)
    if config.image_size:
        image = tf.reverse(tf.transpose(feats, [0, 2, 1]), axis=[1])[..., tf.newaxis]
        image = tf.image.resize(image, config.image_size, method="bilinear")
        lo = tf.reduce_min(image, axis=[1, 2, 3], keepdims=True)
        hi = tf.reduce_max(image, axis=[1, 2, 3], keepdims=True)
        image = (image - lo) / tf.maximum(hi - lo, 1e-6) * 255.0
        feats = tf.repeat(image, 3, axis=-1)
    return feats


@keras.saving.register_keras_serializable(package="keras_ser")
class AudioFeatures(keras.layers.Layer):
    """Keras layer computing a `FeatureConfig`'s features from raw waveforms, in the graph.

    With ``vtlp_range=(low, high)`` it applies VTLP (Etienne et al. 2018, eq. 1) with a
    random warp factor per example, drawn uniformly from the range, when called with
    ``training=True``; at inference it is the plain front end.

    Args:
        preset: A preset name of `PRESETS` (default ``"eskimez"``).
        vtlp_range: ``(low, high)`` warp factors, or ``None``.
        seed: Seed of the VTLP factors.
        **kwargs: `FeatureConfig` fields overriding the preset (e.g. ``n_mels=64``),
            and Layer arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, samples)`` float32 in [-1, 1] at the config's sample rate.

    Output shape:
        ``(batch, frames, feature_dim)``, ``frames = 1 + (samples - window) // hop``
        (images: ``(batch, height, width, 3)``).

    Example:
        >>> layer = AudioFeatures("eskimez")
        >>> layer(tf.zeros([2, 16000])).shape
        TensorShape([2, 61, 128])

    Reference:
        Presets cite their papers in `FeatureConfig.reference`.
    """

    def __init__(self, preset: str = "eskimez", vtlp_range=None, seed: Optional[int] = None,
                 **kwargs):
        fields = {f.name for f in dataclasses.fields(FeatureConfig)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(**kwargs)
        self.preset = preset
        self.overrides = overrides
        self.config = get_preset(preset).replace(**overrides)
        self.vtlp_range = tuple(vtlp_range) if vtlp_range is not None else None
        self.seed = seed
        self._rng = keras.random.SeedGenerator(seed) if vtlp_range is not None else None

    def call(self, waveform, training=False):
        alpha = None
        if self.vtlp_range is not None and training:
            alpha = keras.random.uniform(tf.shape(waveform)[:1], self.vtlp_range[0],
                                         self.vtlp_range[1], seed=self._rng)
        return compute_features(waveform, self.config, alpha)

    def compute_output_shape(self, input_shape):
        batch, samples = input_shape[0], input_shape[-1]
        if self.config.image_size:
            return (batch, *self.config.image_size, 3)
        frames = None if samples is None else self.config.num_frames(samples)
        return (batch, frames, self.config.feature_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"preset": self.preset, "vtlp_range": self.vtlp_range,
                       "seed": self.seed, **self.overrides})
        return config


def minmax_to_unit(features: tf.Tensor, minimum, maximum) -> tf.Tensor:
    """Min-max scale features to [-1, 1]: ``2 (x - min) / (max - min) - 1``.

    Values outside the corpus range map outside [-1, 1] (no clipping), so a test set is
    never silently altered.

    Reference:
        Eskimez et al., Interspeech 2020, Sec. 4.2 (min-max to [-1, 1] with the minimum
        and maximum of the combined corpora).
    """
    minimum = tf.cast(minimum, features.dtype)
    maximum = tf.cast(maximum, features.dtype)
    return 2.0 * (features - minimum) / (maximum - minimum) - 1.0


def zscore(features: tf.Tensor, mean, std, eps: float = 1e-6) -> tf.Tensor:
    """Standardise features: ``(x - mean) / std`` (scalar or per band).

    Reference:
        Etienne et al. 2018, eq. 2 (one mean and standard deviation over the dataset);
        per-band statistics and the ``eps`` floor on ``std`` are our variant.
    """
    return (features - tf.cast(mean, features.dtype)) / tf.maximum(
        tf.cast(std, features.dtype), eps)


def load_feature_stats(path: str, config: Union[str, FeatureConfig] = "eskimez") -> dict:
    """Read the log-mel statistics from a record folder's ``stats.json``.

    Args:
        path: ``stats.json`` or the folder holding it.
        config: The features the statistics must describe.

    Returns:
        Dict with ``min``, ``max``, ``mean``, ``std`` (floats) and ``band_mean``,
        ``band_std``, ``band_min``, ``band_max`` (``(n_mels,)`` float32 arrays).

    Raises:
        FileNotFoundError: No ``stats.json``.
        ValueError: The file has no log-mel statistics, or they were computed with other
            parameters than ``config`` (the message names each differing parameter).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "stats.json")
    with open(path, encoding="utf-8") as f:
        logmel = json.load(f).get("logmel")
    if not logmel:
        raise ValueError(f"{path}: no log-mel statistics")
    config = get_preset(config)
    expected = config.logmel_params()
    differing = [f"{k}: stats {logmel['params'].get(k)!r} vs features {v!r}"
                 for k, v in expected.items() if logmel["params"].get(k) != v]
    if differing or config.n_mfcc or config.image_size:
        raise ValueError(f"{path}: log-mel statistics do not match these features ("
                         + ("; ".join(differing) or "features are not a plain log-mel") + ")")
    out = {k: float(logmel[k]) for k in ("min", "max", "mean", "std")}
    for k in ("band_mean", "band_std", "band_min", "band_max"):
        out[k] = np.asarray(logmel[k], np.float32)
    return out
