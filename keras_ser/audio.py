"""Predict-time audio input: decode files and validate waveforms before a served model.

A served classifier (`keras_ser.serving`) takes float32 waveforms ``(batch, samples)`` in
[-1, 1] at one sample rate. These helpers turn any audio file into such a waveform and
reject inputs the model would silently mis-handle (integer PCM, NaN, audio shorter than one
STFT window) with messages that name the problem and the fix.
"""

from __future__ import annotations

import os

import numpy as np

from tfrecords_tools.audio import AudioError, load_audio

__all__ = ["AudioError", "check_waveform", "load_waveform"]


def load_waveform(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decode an audio file to a mono float32 waveform at ``sample_rate``.

    Any format libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF, ...) at any sample rate and
    channel count: channels are averaged to mono, and soxr (``"HQ"``) resamples when the
    file's rate differs (`tfrecords_tools.audio.load_audio`).

    Args:
        path: The audio file.
        sample_rate: Target rate in Hz (the served model's ``sample_rate``).

    Returns:
        ``(samples,)`` float32 in [-1, 1].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        AudioError: (a `ValueError`) ``path`` is a folder, cannot be decoded, holds no
            samples, or holds NaN/inf samples. Every message starts with the path.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such audio file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not an audio file")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate} Hz")
    return load_audio(path, sample_rate)


def check_waveform(waveform, min_samples: int, sample_rate: int = 16000) -> np.ndarray:
    """Validate waveforms for a served model and return them as a float32 batch.

    Args:
        waveform: ``(samples,)`` (one utterance) or ``(batch, samples)`` float array (NumPy,
            a tensor, or nested lists of floats), in [-1, 1].
        min_samples: The fewest samples the model accepts (one STFT window, e.g. the
            export's ``min_samples``).
        sample_rate: Hz, used only to state durations in messages.

    Returns:
        ``(batch, samples)`` C-contiguous float32 (a rank-1 input gets ``batch = 1``).

    Raises:
        TypeError: The dtype is not floating point. Integer PCM (e.g. int16) must be
            scaled first: ``pcm / 32768``.
        ValueError: Rank 0 or above 2; an empty batch; NaN or infinite samples; fewer than
            ``min_samples`` samples (the message gives the length in samples and seconds
            and the minimum in samples and ms).
    """
    array = np.asarray(waveform)
    if array.dtype.kind in "iu":
        raise TypeError(
            f"waveform has integer dtype {array.dtype}; the model takes float32 samples in "
            f"[-1, 1]: convert int16 PCM with `pcm.astype(np.float32) / 32768`")
    if array.dtype.kind != "f":
        raise TypeError(f"waveform must be a float array in [-1, 1], got dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 2:
        raise ValueError(
            f"waveform must be (samples,) or (batch, samples), got rank {array.ndim} with "
            f"shape {array.shape}; pass a multi-channel recording downmixed to mono")
    if array.ndim == 1:
        array = array[np.newaxis]
    if array.shape[0] == 0:
        raise ValueError("waveform batch is empty (shape (0, samples))")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"waveform contains NaN or infinite samples (first at batch "
                         f"{bad[0]}, sample {bad[1]})")
    samples = array.shape[1]
    if samples < min_samples:
        raise ValueError(
            f"audio too short: {samples} samples ({samples / sample_rate:.4f} s at "
            f"{sample_rate} Hz); the model needs at least {min_samples} samples "
            f"({1000.0 * min_samples / sample_rate:g} ms), one STFT window")
    return array
