"""Spectral features as TensorFlow graph ops and a Keras layer, with one preset per paper.

Features are computed in the graph (inside `tf.data` and inside exported models) from
float32 waveforms, so a served model that takes raw audio computes exactly what training
saw. The mel filterbank is built once with librosa (a constant in the graph); the STFT,
mel projection, log, DCT and deltas are `tf.signal`/`tf.math` ops. With the same
parameters the log-mel equals ``librosa.power_to_db(librosa.feature.melspectrogram(...))``
to within 0.01 dB wherever the mel power is above 1e-6 (``tests/test_features.py``).

Configs with ``kaldi=True`` (the ``tu`` preset) compute Kaldi's MFCCs instead
(``compute-mfcc-feats`` with its default options, dither 0, then ``add-deltas``), with
Kaldi's Povey window, mel banks, DCT and lifter; they equal kaldi-native-fbank's
``OnlineMfcc`` to about 1e-3 per coefficient (``tests/test_kaldi_features.py``).
`kaldi_vad` is Kaldi's ``compute-vad`` rule on their C0.

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
        n_mfcc: If > 0, output this many MFCCs (DCT-II, orthonormal, of the dB log-mel;
            with ``kaldi=True`` Kaldi's ``num-ceps``).
        deltas: 0, 1 (append Δ) or 2 (append Δ and ΔΔ); regression over ±2 frames
            (`deltas`; with ``kaldi=True`` Kaldi's ``add-deltas``, `kaldi_deltas`).
        image_size: If set, ``(height, width)``: the log-mel is resized to an image with
            3 identical channels scaled to [0, 255] (ImageNet CNNs).
        kaldi: Compute Kaldi's ``compute-mfcc-feats`` (default options, ``--dither=0``)
            instead of the librosa-style MFCC: per frame of ``window_ms`` every
            ``hop_ms`` (``--snip-edges=true``), samples scaled to int16 range, DC offset
            removed, C0 = natural log of the frame energy before pre-emphasis and
            window (``--raw-energy=true``, ``--energy-floor=0``), pre-emphasis, Povey
            window, power spectrum on ``n_fft`` points (must be the next power of two
            of the window, ``--round-to-power-of-two=true``), ``n_mels`` Kaldi mel bins
            (``1127 ln(1 + f/700)``, ``--low-freq=fmin_hz``, ``--high-freq=fmax_hz``),
            natural log floored at FLT_EPSILON, Kaldi's DCT, lifter. ``mel_scale``,
            ``amin`` are unused; ``center`` and ``image_size`` are refused. Dither 0 is
            our choice (Kaldi's default ``--dither=1.0`` adds Gaussian noise of that
            many int16 steps), so features are deterministic.
        preemphasis: Pre-emphasis coefficient ``--preemphasis-coefficient`` (Kaldi
            default 0.97): ``y[i] = x[i] - p x[i-1]``, ``y[0] = x[0] - p x[0]``.
            Used only when ``kaldi=True``.
        cepstral_lifter: ``--cepstral-lifter`` Q (Kaldi default 22.0): coefficient k
            is scaled by ``1 + (Q/2) sin(pi k / Q)``; 0 disables it. Used only when
            ``kaldi=True``.
        vad: The front end keeps only voiced frames (Kaldi's ``compute-vad`` on C0,
            `kaldi_vad`; applied by the serving/training code, not by
            `compute_features`). Needs ``kaldi=True``.
        reference: The paper and section the preset follows.

    Raises:
        ValueError: An impossible or inconsistent combination (messages name the field).
    """

    sample_rate: int = 16000
    window_ms: float = 32.0
    hop_ms: float = 16.0
    n_fft: int | None = None
    n_mels: int = 128
    fmin_hz: float = 0.0
    fmax_hz: float | None = None
    mel_scale: str = "slaney"
    center: bool = False
    amin: float = 1e-10
    n_mfcc: int = 0
    deltas: int = 0
    image_size: tuple | None = None
    kaldi: bool = False
    preemphasis: float = 0.97
    cepstral_lifter: float = 22.0
    vad: bool = False
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
        if self.kaldi:
            self._check_kaldi()
        if self.vad and not self.kaldi:
            raise ValueError("vad=True needs kaldi=True: the voice-activity rule reads C0 "
                             "as Kaldi's log frame energy")

    def _check_kaldi(self):
        if not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"kaldi=True needs 0 < n_mfcc <= n_mels (Kaldi's num-ceps <= "
                             f"num-mel-bins), got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}")
        if self.n_mels < 3:
            raise ValueError(f"kaldi=True needs n_mels >= 3, got {self.n_mels}")
        padded = 2 ** math.ceil(math.log2(self.window_samples))
        if self.fft_size != padded:
            raise ValueError(f"kaldi=True pads the {self.window_samples}-sample window to "
                             f"{padded} points (round-to-power-of-two); n_fft is "
                             f"{self.fft_size}")
        if self.center or self.image_size:
            raise ValueError("kaldi=True frames without centring (snip-edges) and gives "
                             "no image: center and image_size must be unset")
        if not 0.0 <= self.preemphasis <= 1.0:
            raise ValueError(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if self.cepstral_lifter < 0.0:
            raise ValueError(f"cepstral_lifter must be >= 0, got {self.cepstral_lifter}")

    @property
    def window_samples(self) -> int:
        """STFT window length in samples."""
        return round(self.window_ms * self.sample_rate / 1000.0)

    @property
    def hop_samples(self) -> int:
        """STFT hop in samples."""
        return round(self.hop_ms * self.sample_rate / 1000.0)

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
        """The parameters as recorded in ``stats.json`` (`tfrecords_tools.stats`).

        Raises:
            ValueError: MFCC configs (log-mel statistics cannot describe them).
        """
        if self.n_mfcc or self.kaldi:
            raise ValueError("MFCC features have no log-mel parameters")
        return {"sample_rate": self.sample_rate, "window_samples": self.window_samples,
                "hop_samples": self.hop_samples, "n_fft": self.fft_size, "n_mels": self.n_mels,
                "fmin_hz": float(self.fmin_hz), "fmax_hz": self.upper_hz,
                "mel_scale": self.mel_scale, "center": self.center, "amin": self.amin}

    def replace(self, **changes) -> FeatureConfig:
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
        window_ms=25.0, hop_ms=10.0, n_fft=512, n_mels=23, fmin_hz=20.0, n_mfcc=13,
        deltas=2, kaldi=True, vad=True,
        reference="Tu et al., ICASSP 2019, Sec. 3.1: 13 MFCCs with first and second "
                  "derivatives extracted with Kaldi, energy-based VAD removes silences; "
                  "Kaldi compute-mfcc-feats defaults (25 ms Povey window, 10 ms hop, "
                  "512-point FFT, 23 mel bins from 20 Hz to Nyquist, pre-emphasis 0.97, "
                  "lifter 22, C0 = raw log energy), add-deltas (window 2, order 2) and "
                  "compute-vad defaults (threshold 5.0, mean scale 0.5, context 0, "
                  "proportion 0.6); dither 0 (Kaldi's default is 1.0) is our choice"),
    "nitk": FeatureConfig(
        window_ms=32.0, hop_ms=16.0, n_fft=512, n_mels=128, image_size=(224, 224),
        reference="NITK report, Secs. 4.3.1 and 5.2: one greyscale log spectrogram image "
                  "of 224 x 224 per utterance for the GAN and VGG16/ResNet50; the report "
                  "gives no STFT values: the 32 ms Hann window (512 samples), 16 ms hop "
                  "(256), 512-point FFT, 128 Slaney mel bands to 8 kHz in dB, the whole "
                  "utterance resized bilinearly to 224 x 224 (low frequencies at the "
                  "bottom) and min-max scaled to [0, 255] per image are our choice. "
                  "Mel rather than linear frequency bands is also ours: the report's "
                  "vgg16_half follows its reference [2] (Zhang et al., audio recognition "
                  "with mel spectrograms and CNNs), and its Sec. 4.3.1 asks only for a "
                  "logarithmic scale"),
}


def get_preset(name: str | FeatureConfig) -> FeatureConfig:
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
                       alpha: tf.Tensor | None = None) -> tf.Tensor:
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


def log_mel_spectrogram(waveform: tf.Tensor, config: str | FeatureConfig = "eskimez",
                        alpha: tf.Tensor | None = None, jit: bool = True) -> tf.Tensor:
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


#: Kaldi's floor of energies before the log: ``std::numeric_limits<float>::epsilon()``.
FLT_EPSILON = float(np.finfo(np.float32).eps)


def kaldi_mel_scale(freq_hz):
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)`` (``MelBanks::MelScale``)."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def _kaldi_mel_matrix(sample_rate, n_fft, n_mels, low_hz, high_hz) -> np.ndarray:
    mel_low, mel_high = kaldi_mel_scale(low_hz), kaldi_mel_scale(high_hz)
    delta = (mel_high - mel_low) / (n_mels + 1)
    # Bins 0 .. n_fft/2 - 1 at i * sr / n_fft; the Nyquist bin is left out (weight 0).
    mel = kaldi_mel_scale(np.arange(n_fft // 2) * sample_rate / n_fft)
    weights = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        left, centre, right = mel_low + delta * np.array([m, m + 1, m + 2])
        inside = (mel > left) & (mel < right)
        if not inside.any():
            raise ValueError(f"Kaldi mel bin {m} covers no FFT bin: n_mels={n_mels} is too "
                             f"large for a {n_fft}-point FFT")
        rising = (mel - left) / (centre - left)
        falling = (right - mel) / (right - centre)
        weights[:-1, m] = np.where(inside, np.where(mel <= centre, rising, falling), 0.0)
    return weights.astype(np.float32)


def kaldi_mel_weights(config: FeatureConfig) -> np.ndarray:
    """Kaldi's mel filterbank (``MelBanks``, ``--htk-mode=false``, no VTLN).

    Triangles are linear in Kaldi's mel scale (`kaldi_mel_scale`), ``n_mels + 2`` edges
    evenly spaced in mel from ``fmin_hz`` (``--low-freq``) to ``upper_hz``
    (``--high-freq``); FFT bin ``i < n_fft / 2`` sits at ``i * sample_rate / n_fft`` Hz
    and weighs ``(mel - left) / (centre - left)`` or ``(right - mel) / (right - centre)``
    strictly inside a triangle; the Nyquist bin weighs 0.

    Returns:
        ``(n_fft // 2 + 1, n_mels)`` float32.

    Raises:
        ValueError: A mel bin covers no FFT bin (Kaldi: "num_mel_bins too large").
    """
    return _kaldi_mel_matrix(config.sample_rate, config.fft_size, config.n_mels,
                             float(config.fmin_hz), config.upper_hz)


def kaldi_dct_matrix(n_mels: int, n_mfcc: int, cepstral_lifter: float = 0.0) -> np.ndarray:
    """Kaldi's DCT (``ComputeDctMatrix``), first ``n_mfcc`` rows, times the lifter.

    Row 0 is ``sqrt(1/N)``, row ``k > 0`` is ``sqrt(2/N) cos(pi k (n + 1/2) / N)`` with
    ``N = n_mels``; with ``cepstral_lifter`` Q > 0 row k is scaled by
    ``1 + (Q/2) sin(pi k / Q)`` (``ComputeLifterCoeffs``).

    Returns:
        ``(n_mels, n_mfcc)`` float32, so ``cepstra = log_mel @ matrix``.
    """
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    dct = np.sqrt(2.0 / n_mels) * np.cos(np.pi / n_mels * (n + 0.5) * k)
    dct[0] = np.sqrt(1.0 / n_mels)
    if cepstral_lifter:
        dct *= 1.0 + 0.5 * cepstral_lifter * np.sin(np.pi * k / cepstral_lifter)
    return np.ascontiguousarray(dct.T, dtype=np.float32)


def povey_window(length: int) -> np.ndarray:
    """Kaldi's ``povey`` window: ``(0.5 - 0.5 cos(2 pi i / (length - 1)))^0.85``."""
    i = np.arange(length)
    return ((0.5 - 0.5 * np.cos(2.0 * np.pi * i / (length - 1))) ** 0.85).astype(np.float32)


def kaldi_mfcc(waveform: tf.Tensor, config: str | FeatureConfig = "tu") -> tf.Tensor:
    """Kaldi's ``compute-mfcc-feats`` (its defaults, ``--dither=0``) as graph ops.

    Per frame ``k`` (samples ``k * hop .. k * hop + window - 1``, ``--snip-edges=true``):
    samples times 32768 (Kaldi reads 16-bit PCM as integers), minus the frame mean
    (``--remove-dc-offset``); ``C0 = ln(max(sum x^2, FLT_EPSILON))`` (``--raw-energy``,
    ``--use-energy``, ``--energy-floor=0``); pre-emphasis; Povey window; zero-padding to
    ``n_fft``; power spectrum; `kaldi_mel_weights`; ``ln(max(., FLT_EPSILON))``;
    `kaldi_dct_matrix` with the lifter; C0 replaced by the log energy.

    Args:
        waveform: ``(..., samples)`` float32 in [-1, 1].
        config: A preset name or `FeatureConfig` with ``kaldi=True``.

    Returns:
        ``(..., frames, n_mfcc)`` float32, ``frames = config.num_frames(samples)``.

    Raises:
        ValueError: ``config.kaldi`` is False.

    Reference:
        Kaldi ``src/feat/feature-window.cc``, ``feature-mfcc.cc``,
        ``mel-computations.cc``; Tu et al., ICASSP 2019, Sec. 3.1.
    """
    config = get_preset(config)
    if not config.kaldi:
        raise ValueError("kaldi_mfcc needs a config with kaldi=True")
    samples = tf.convert_to_tensor(waveform, tf.float32) * 32768.0
    frames = tf.signal.frame(samples, config.window_samples, config.hop_samples,
                             pad_end=False)
    frames = frames - tf.reduce_mean(frames, axis=-1, keepdims=True)
    log_energy = tf.math.log(tf.maximum(tf.reduce_sum(tf.square(frames), axis=-1),
                                        FLT_EPSILON))
    p = config.preemphasis
    if p:
        frames = tf.concat([frames[..., :1] * (1.0 - p),
                            frames[..., 1:] - p * frames[..., :-1]], axis=-1)
    frames = frames * tf.constant(povey_window(config.window_samples))
    # Zero-pad explicitly: `rfft` refuses to pad an input with no frames.
    rank = len(frames.shape)
    frames = tf.pad(frames, [[0, 0]] * (rank - 1)
                    + [[0, config.fft_size - config.window_samples]])
    power = _power(tf.signal.rfft(frames, fft_length=[config.fft_size]))
    mel = tf.tensordot(power, tf.constant(kaldi_mel_weights(config)), axes=1)
    log_mel = tf.math.log(tf.maximum(mel, FLT_EPSILON))
    dct = kaldi_dct_matrix(config.n_mels, config.n_mfcc, config.cepstral_lifter)
    cepstra = tf.tensordot(log_mel, tf.constant(dct[:, 1:]), axes=1)
    return tf.concat([log_energy[..., tf.newaxis], cepstra], axis=-1)


def kaldi_delta_filters(order: int = 2, window: int = 2) -> list:
    """Kaldi's delta filters (``DeltaFeatures``): ``order + 1`` arrays, centred.

    Filter 0 is ``[1]``; filter ``i`` is filter ``i - 1`` convolved with
    ``[-window .. window] / sum_j j^2``, ``2 i window + 1`` taps. For the defaults,
    ``[-2, -1, 0, 1, 2] / 10`` and ``[4, 4, 1, -4, -10, -4, 1, 4, 4] / 100``.

    Raises:
        ValueError: ``order < 0`` or ``window < 1``.
    """
    if order < 0 or window < 1:
        raise ValueError(f"need order >= 0 and window >= 1, got {order}, {window}")
    ramp = np.arange(-window, window + 1, dtype=np.float64)
    filters = [np.ones(1)]
    for _ in range(order):
        filters.append(np.convolve(filters[-1], ramp) / np.sum(ramp ** 2))
    return filters


def kaldi_deltas(features: tf.Tensor, order: int = 2, window: int = 2) -> tf.Tensor:
    """Kaldi's ``add-deltas``: the features followed by their ``order`` derivatives.

    Derivative ``i`` applies `kaldi_delta_filters` ``[i]`` to the original features,
    ``d_i[t] = sum_j f_i[j] x[clamp(t + j, 0, T - 1)]`` (edge frames repeat). So ΔΔ is
    not the delta of the delta: they differ within ``2 window`` frames of the edges.

    Args:
        features: ``(..., frames, dims)`` float32.
        order: ``--delta-order`` (Kaldi default 2).
        window: ``--delta-window`` (Kaldi default 2).

    Returns:
        ``(..., frames, dims * (order + 1))``: ``[x, Δ, ΔΔ, ...]`` along the last axis.

    Raises:
        ValueError: ``order < 0`` or ``window < 1``.

    Reference:
        Kaldi ``src/feat/feature-functions.cc`` (``DeltaFeatures``).
    """
    filters = kaldi_delta_filters(order, window)
    features = tf.convert_to_tensor(features, tf.float32)
    if order == 0:
        return features
    reach = order * window
    taps = np.zeros((2 * reach + 1, order), np.float32)
    for i, f in enumerate(filters[1:]):
        half = len(f) // 2
        taps[reach - half:reach + half + 1, i] = f
    frames = tf.shape(features)[-2]
    index = tf.range(frames)[:, tf.newaxis] + tf.range(-reach, reach + 1)[tf.newaxis]
    index = tf.clip_by_value(index, 0, tf.maximum(frames - 1, 0))
    context = tf.gather(features, index, axis=-2)  # (..., frames, taps, dims)
    derivs = tf.einsum("...tkd,ko->...tod", context, tf.constant(taps))
    shape = tf.concat([tf.shape(features)[:-1], [order * tf.shape(features)[-1]]], 0)
    derivs = tf.reshape(derivs, shape)
    return tf.concat([features, derivs], axis=-1)


def kaldi_vad(log_energy: tf.Tensor, lengths: tf.Tensor | None = None,
              energy_threshold: float = 5.0, energy_mean_scale: float = 0.5,
              frames_context: int = 0, proportion_threshold: float = 0.6) -> tf.Tensor:
    """Kaldi's energy voice-activity decision (``compute-vad``, ``ComputeVadEnergy``).

    ``threshold = energy_threshold + energy_mean_scale * mean_t C0[t]`` over the
    utterance's frames; frame t is voiced if, among the frames ``t - frames_context ..
    t + frames_context`` inside the utterance (``den`` of them), the number ``num``
    with ``C0 > threshold`` satisfies ``num >= den * proportion_threshold``. The
    product is in float32 as in Kaldi (``5 * 0.6f == 3.0f``, so 3 of 5 is voiced).
    The context is Kaldi's since its 2016 fix (kaldi-asr/kaldi#697).

    Args:
        log_energy: ``(batch, frames)`` C0 of Kaldi MFCCs (natural-log energy of
            int16-scaled samples, `kaldi_mfcc`).
        lengths: Optional ``(batch,)`` valid frames per row; the mean and the context
            use only those, later frames are False. ``None``: all frames are valid.
        energy_threshold: ``--vad-energy-threshold`` (default 5.0), natural log.
        energy_mean_scale: ``--vad-energy-mean-scale`` (default 0.5).
        frames_context: ``--vad-frames-context`` (default 0), frames each side.
        proportion_threshold: ``--vad-proportion-threshold`` (default 0.6).

    Returns:
        ``(batch, frames)`` bool, True for voiced frames.

    Raises:
        ValueError: ``energy_mean_scale < 0``, ``frames_context < 0`` or
            ``proportion_threshold`` outside (0, 1) (Kaldi asserts the same).

    Reference:
        Kaldi ``src/ivector/voice-activity-detection.cc``; Tu et al., ICASSP 2019,
        Sec. 3.1 ("simple energy-based voice activity detection").
    """
    if energy_mean_scale < 0 or frames_context < 0 or not 0 < proportion_threshold < 1:
        raise ValueError("need energy_mean_scale >= 0, frames_context >= 0 and "
                         f"0 < proportion_threshold < 1, got {energy_mean_scale}, "
                         f"{frames_context}, {proportion_threshold}")
    log_energy = tf.convert_to_tensor(log_energy, tf.float32)
    frames = tf.shape(log_energy)[-1]
    if lengths is None:
        valid = tf.ones_like(log_energy, tf.bool)
    else:
        valid = tf.sequence_mask(lengths, frames)
    count = tf.reduce_sum(tf.cast(valid, tf.float32), axis=-1, keepdims=True)
    total = tf.reduce_sum(tf.where(valid, log_energy, 0.0), axis=-1, keepdims=True)
    threshold = energy_threshold + energy_mean_scale * (total / tf.maximum(count, 1.0))
    above = tf.logical_and(valid, log_energy > threshold)

    def window_sum(mask):
        # Sum of ``mask`` over t - context .. t + context by a zero-padded cumulative sum.
        padded = tf.pad(tf.cast(mask, tf.int32), [[0, 0], [frames_context + 1,
                                                            frames_context]])
        cumulative = tf.cumsum(padded, axis=-1)
        return cumulative[:, 2 * frames_context + 1:] - cumulative[:, :frames]

    num = tf.cast(window_sum(above), tf.float32)
    den = tf.cast(window_sum(valid), tf.float32)
    return tf.logical_and(valid, num >= den * tf.constant(proportion_threshold, tf.float32))


def compute_features(waveform: tf.Tensor, config: str | FeatureConfig = "eskimez",
                     alpha: tf.Tensor | None = None, jit: bool = True) -> tf.Tensor:
    """The features a config describes: log-mel, MFCC (+ deltas), or a 3-channel image.

    Args:
        waveform: ``(batch, samples)`` float32 in [-1, 1].
        config: A preset name or `FeatureConfig`.
        alpha: Optional VTLP factor, scalar or ``(batch,)``.
        jit: XLA for the VTLP filterbank (`log_mel_spectrogram`).

    Returns:
        ``(batch, frames, feature_dim)``; for image configs ``(batch, height, width, 3)``
        in [0, 255] with frequency rising upwards (row 0 is the highest band). Kaldi
        configs give `kaldi_mfcc` followed by `kaldi_deltas` (all frames: voiced-frame
        selection, ``config.vad``, is left to the caller, see `kaldi_vad`).

    Raises:
        ValueError: ``alpha`` with a Kaldi config (VTLP is not implemented there).
    """
    config = get_preset(config)
    if config.kaldi:
        if alpha is not None:
            raise ValueError("VTLP (alpha) is not implemented for Kaldi MFCC configs")
        feats = kaldi_mfcc(waveform, config)
        return kaldi_deltas(feats, order=config.deltas) if config.deltas else feats
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

    def __init__(self, preset: str = "eskimez", vtlp_range=None, seed: int | None = None,
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


def load_feature_stats(path: str, config: str | FeatureConfig = "eskimez") -> dict:
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
    if config.n_mfcc or config.kaldi or config.image_size:
        raise ValueError(f"{path}: log-mel statistics do not match these features "
                         "(features are not a plain log-mel)")
    expected = config.logmel_params()
    differing = [f"{k}: stats {logmel['params'].get(k)!r} vs features {v!r}"
                 for k, v in expected.items() if logmel["params"].get(k) != v]
    if differing:
        raise ValueError(f"{path}: log-mel statistics do not match these features ("
                         + "; ".join(differing) + ")")
    out = {k: float(logmel[k]) for k in ("min", "max", "mean", "std")}
    for k in ("band_mean", "band_std", "band_min", "band_max"):
        out[k] = np.asarray(logmel[k], np.float32)
    return out
