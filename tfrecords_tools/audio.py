"""Decoding, resampling and segmentation of source audio (NumPy side, before TFRecords).

Audio is decoded with soundfile (WAV, FLAC, OGG, ...), downmixed to mono by averaging the
channels, and resampled with soxr (``"HQ"`` quality). tensorflow-io is not used: its
compiled ops do not load on TensorFlow >= 2.18.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np
import soundfile
import soxr


class AudioError(ValueError):
    """A source audio file that cannot be converted; the message names file and problem."""


def load_audio(path: str, sample_rate: int = 16000, start_s: float = 0.0,
               end_s: Optional[float] = None) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate``.

    Args:
        path: Audio file readable by libsndfile (WAV, FLAC, OGG, AIFF, ...).
        sample_rate: Target rate in Hz; soxr resamples when the file's rate differs.
        start_s, end_s: Optional portion of the file, in seconds.

    Returns:
        ``(samples,)`` float32 in [-1, 1].

    Raises:
        AudioError: The file cannot be decoded, holds no samples, or holds NaN/inf.
    """
    try:
        info = soundfile.info(path)
        start = int(round(start_s * info.samplerate))
        stop = None if end_s is None else int(round(end_s * info.samplerate))
        data, rate = soundfile.read(path, start=start, stop=stop, dtype="float32",
                                    always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """Quantise float samples in [-1, 1] to int16, clipping anything outside.

    The inverse used everywhere else is ``pcm / 32768``.

    Args:
        waveform: ``(samples,)`` float array.

    Returns:
        ``(samples,)`` int16 array.
    """
    return np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


def voiced_segments(waveform: np.ndarray, sample_rate: int = 16000, top_db: float = 35.0,
                    frame_ms: float = 25.0, hop_ms: float = 10.0, min_gap_s: float = 0.15,
                    min_length_s: float = 0.1) -> list:
    """Energy-based voiced regions, used as segments when a corpus has no alignment.

    Frames whose RMS energy lies within ``top_db`` of the loudest frame are speech
    (`librosa.effects.split`); regions closer than ``min_gap_s`` are merged and regions
    shorter than ``min_length_s`` dropped. If nothing survives, the whole utterance is
    returned as one region.

    Args:
        waveform: ``(samples,)`` float mono audio.
        sample_rate: Hz.
        top_db: Threshold below the peak frame energy, dB.
        frame_ms, hop_ms: Analysis frame and hop, milliseconds.
        min_gap_s, min_length_s: Merging and pruning thresholds, seconds.

    Returns:
        Sorted list of ``(start_s, end_s)`` inside ``[0, len(waveform) / sample_rate]``.
    """
    import librosa

    duration = waveform.shape[0] / sample_rate
    frame = max(int(round(frame_ms * sample_rate / 1000)), 1)
    hop = max(int(round(hop_ms * sample_rate / 1000)), 1)
    if waveform.shape[0] < frame or not np.any(waveform):
        return [(0.0, duration)]
    intervals = librosa.effects.split(waveform, top_db=top_db, frame_length=frame,
                                      hop_length=hop)
    merged = []
    for start, end in intervals / sample_rate:
        if merged and start - merged[-1][1] < min_gap_s:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    regions = [(float(s), float(min(e, duration))) for s, e in merged if e - s >= min_length_s]
    return regions or [(0.0, duration)]


_NON_WORD_TIER = re.compile(r"phon|pitch|syll|tone|tonic|error|phrase", re.IGNORECASE)
_SILENCE = {"", "sil", "sp", "spn", "<sil>", "<s>", "</s>", "<unk>", "{sl}", "#", "pau"}


def textgrid_words(path: str) -> tuple:
    """Word segments from a Praat TextGrid, parsed with praatIO.

    The tier named ``words``/``word`` is used (case-insensitive); failing that, a tier
    whose name contains "word"; failing that, every interval tier that is not a phone,
    syllable, pitch or phrase tier (e.g. one word tier per speaker), merged. Silence and
    empty intervals are dropped.

    Args:
        path: A long- or short-format TextGrid.

    Returns:
        ``(segments, labels, kind)``: ``[(start_s, end_s), ...]`` sorted by start, their
        labels, and ``"word"`` (or ``"utterance"`` when every interval holds several
        words, i.e. the tier aligns phrases or sentences rather than words).

    Raises:
        AudioError: The file cannot be parsed or has no usable interval tier.
    """
    from praatio import textgrid

    try:
        tg = textgrid.openTextgrid(path, includeEmptyIntervals=False)
    except Exception as err:  # praatio raises many exception types for malformed input
        raise AudioError(f"{path}: cannot parse TextGrid ({err})") from None
    interval_tiers = [n for n in tg.tierNames
                      if type(tg.getTier(n)).__name__ == "IntervalTier"]
    chosen = [n for n in interval_tiers if n.lower() in ("words", "word")]
    chosen = chosen or [n for n in interval_tiers if "word" in n.lower()][:1]
    chosen = chosen or [n for n in interval_tiers if not _NON_WORD_TIER.search(n)]
    if not chosen:
        raise AudioError(f"{path}: no word tier among {list(tg.tierNames)}")
    entries = sorted(
        (float(e.start), float(e.end), e.label)
        for n in chosen for e in tg.getTier(n).entries
        if e.label.strip().lower() not in _SILENCE and e.end > e.start
    )
    if not entries:
        raise AudioError(f"{path}: word tier {chosen} holds no labelled intervals")
    kind = "utterance" if all(len(label.split()) > 1 for _, _, label in entries) else "word"
    return [(s, e) for s, e, _ in entries], [w for _, _, w in entries], kind


def clip_segments(segments: list, labels: list, duration_s: float, source: str) -> tuple:
    """Clip segments to ``[0, duration_s]``, drop empty ones, and check their order.

    Args:
        segments: ``[(start_s, end_s), ...]``.
        labels: One label per segment.
        duration_s: Length of the audio, seconds.
        source: File named in errors.

    Returns:
        ``(segments, labels)`` clipped, sorted, with zero-length segments removed.

    Raises:
        AudioError: A segment starts after the end of the audio (the alignment belongs to
            another recording) or ends before it starts.
    """
    out, out_labels = [], []
    tolerance = 0.05
    for (start, end), label in sorted(zip(segments, labels), key=lambda x: x[0]):
        if end < start:
            raise AudioError(f"{source}: segment '{label}' ends before it starts ({start}, {end})")
        if start > duration_s + tolerance:
            raise AudioError(f"{source}: segment '{label}' starts at {start:.3f} s, after the "
                             f"end of the audio ({duration_s:.3f} s)")
        start, end = max(0.0, start), min(end, duration_s)
        if end > start:
            out.append((start, end))
            out_labels.append(label)
    return out, out_labels


def textgrid_index(folders: list) -> dict:
    """Map audio stems to TextGrid files found anywhere below ``folders``.

    ``x.TextGrid`` serves audio ``x``; ``x_words.TextGrid`` / ``x_word.TextGrid`` serve
    ``x`` too when there is no ``x.TextGrid`` (praatIO's example naming).

    Args:
        folders: Folders searched recursively.

    Returns:
        Dict from stem to the TextGrid path.
    """
    exact, suffixed = {}, {}
    for root in folders:
        for folder, _, files in os.walk(root):
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() != ".textgrid":
                    continue
                path = os.path.join(folder, name)
                exact.setdefault(stem, path)
                for suffix in ("_words", "_word"):
                    if stem.endswith(suffix):
                        suffixed.setdefault(stem[:-len(suffix)], path)
    return {**suffixed, **exact}
