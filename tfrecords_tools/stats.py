"""Corpus statistics written to ``stats.json``: counts, hours, and log-mel statistics.

The log-mel statistics (minimum, maximum, mean, standard deviation, overall and per mel
band) are those used to normalise features: min-max to [-1, 1] (Eskimez et al. 2020,
Sec. 4.2) and z-score (Etienne et al. 2018, eq. 2, one mean and deviation; the
per-band statistics are for our variant). They are computed with librosa on
the int16 samples exactly as stored, with the parameters recorded next to them, so
`keras_ser.features` can check that a model's features match before using them.
"""

from __future__ import annotations

import collections
import math

import numpy as np

#: The default log-mel (Eskimez et al. 2020, Sec. 4.2: 32 ms window, 16 ms hop, 512 FFT
#: bins, 128 mel bands); the Hann window, Slaney mel bands 0-8 kHz, power 2, no
#: centring and dB with a 1e-10 floor are our choice.
DEFAULT_LOGMEL = {
    "sample_rate": 16000,
    "window_samples": 512,
    "hop_samples": 256,
    "n_fft": 512,
    "n_mels": 128,
    "fmin_hz": 0.0,
    "fmax_hz": 8000.0,
    "mel_scale": "slaney",
    "center": False,
    "amin": 1e-10,
}


def log_mel_librosa(waveform: np.ndarray, params: dict = DEFAULT_LOGMEL) -> np.ndarray:
    """Reference log-mel spectrogram computed with librosa.

    Args:
        waveform: ``(samples,)`` float audio in [-1, 1] at ``params["sample_rate"]``.
        params: Parameters as in `DEFAULT_LOGMEL`.

    Returns:
        ``(frames, n_mels)`` float32, dB (``10 log10(max(mel power, amin))``); zero frames
        when the audio is shorter than one window.
    """
    import librosa

    if waveform.shape[0] < params["window_samples"]:
        return np.zeros((0, params["n_mels"]), np.float32)
    mel = librosa.feature.melspectrogram(
        y=waveform.astype(np.float32), sr=params["sample_rate"], n_fft=params["n_fft"],
        hop_length=params["hop_samples"], win_length=params["window_samples"],
        window="hann", center=params["center"], power=2.0, n_mels=params["n_mels"],
        fmin=params["fmin_hz"], fmax=params["fmax_hz"],
        htk=params["mel_scale"] == "htk", norm="slaney" if params["mel_scale"] == "slaney" else None)
    db = librosa.power_to_db(mel, ref=1.0, amin=params["amin"], top_db=None)
    return db.T.astype(np.float32)


class FeatureMoments:
    """Running minimum, maximum, sum and sum of squares of log-mel frames, per band.

    Args:
        n_bands: Number of mel bands.
    """

    def __init__(self, n_bands: int):
        self.count = 0
        self.sum = np.zeros(n_bands)
        self.sumsq = np.zeros(n_bands)
        self.min = np.full(n_bands, np.inf)
        self.max = np.full(n_bands, -np.inf)

    def add(self, frames: np.ndarray) -> None:
        """Accumulate ``(frames, n_bands)`` values."""
        if frames.shape[0] == 0:
            return
        frames = frames.astype(np.float64)
        self.count += frames.shape[0]
        self.sum += frames.sum(axis=0)
        self.sumsq += np.square(frames).sum(axis=0)
        self.min = np.minimum(self.min, frames.min(axis=0))
        self.max = np.maximum(self.max, frames.max(axis=0))

    def merge(self, other: FeatureMoments) -> None:
        """Add another accumulator's values into this one."""
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    def to_json(self) -> dict:
        """Serialisable state (for a shard's metadata file)."""
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist(),
                "min": self.min.tolist(), "max": self.max.tolist()}

    @classmethod
    def from_json(cls, state: dict) -> FeatureMoments:
        """Inverse of `to_json`."""
        out = cls(len(state["sum"]))
        out.count = state["count"]
        for key in ("sum", "sumsq", "min", "max"):
            setattr(out, key, np.asarray(state[key], dtype=np.float64))
        return out

    def summary(self, params: dict) -> dict:
        """Overall and per-band min, max, mean and standard deviation (population).

        Raises:
            ValueError: No frame was accumulated.
        """
        if self.count == 0:
            raise ValueError("no log-mel frames were accumulated")
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - np.square(mean), 0.0)
        total_mean = self.sum.sum() / (self.count * len(self.sum))
        total_var = max(self.sumsq.sum() / (self.count * len(self.sum)) - total_mean ** 2, 0.0)
        return {
            "params": dict(params),
            "frames": int(self.count),
            "min": float(self.min.min()), "max": float(self.max.max()),
            "mean": float(total_mean), "std": float(math.sqrt(total_var)),
            "band_min": self.min.tolist(), "band_max": self.max.tolist(),
            "band_mean": mean.tolist(), "band_std": np.sqrt(var).tolist(),
        }


#: The record fields `CorpusCounts` counts, each under its own key of ``stats.json``.
COUNTED_FIELDS = ("emotion", "speaker", "session", "gender")


class CorpusCounts:
    """The counts and hours of ``stats.json``, accumulated one record at a time.

    Only counters (one entry per distinct label, speaker, session and gender) are kept,
    never the records, so memory does not grow with the number of records. Durations
    are added in the order the records arrive; the converter feeds them in shard order,
    so every way of writing the same shards (one process, sliced jobs, workers) gives
    the same float.

    Attributes:
        records: Records added.
        seconds: Their total duration, seconds.
    """

    def __init__(self):
        self.records = 0
        self.seconds = 0
        self._counts = {key: collections.Counter() for key in COUNTED_FIELDS}
        self._speakers = {}

    def add(self, record: dict) -> None:
        """Count one record's metadata.

        Args:
            record: Dict with ``speaker``, ``session``, ``gender``, ``emotion`` and
                ``duration_s`` (seconds), as in a shard's side file.

        Raises:
            KeyError: One of those keys is missing.
        """
        self.records += 1
        self.seconds += record["duration_s"]
        for key in COUNTED_FIELDS:
            self._counts[key][record[key]] += 1
        entry = self._speakers.setdefault(record["speaker"], {
            "session": record["session"], "gender": record["gender"], "records": 0,
            "emotion": {}})
        entry["records"] += 1
        entry["emotion"][record["emotion"]] = entry["emotion"].get(record["emotion"], 0) + 1

    def document(self, moments: FeatureMoments, skipped: int, corpus: str) -> dict:
        """The ``stats.json`` document of the records added so far.

        Args:
            moments: Log-mel accumulator over the same records.
            skipped: Number of skipped source files.
            corpus: Corpus name.

        Returns:
            Dict with ``corpus``, ``records``, ``hours``, ``skipped``, counts per
            ``emotion`` / ``speaker`` / ``session`` / ``gender`` (sorted by key),
            ``speakers`` (speaker -> session and gender of its first record, record
            count, per-emotion counts) and ``logmel`` (`FeatureMoments.summary`, or
            ``None`` when no frame was accumulated).
        """
        document = {"corpus": corpus, "records": self.records,
                    "hours": self.seconds / 3600.0, "skipped": skipped}
        for key in COUNTED_FIELDS:
            document[key] = dict(sorted(self._counts[key].items()))
        document["speakers"] = {name: {**entry, "emotion": dict(entry["emotion"])}
                                for name, entry in sorted(self._speakers.items())}
        document["logmel"] = moments.summary(DEFAULT_LOGMEL) if moments.count else None
        return document


def corpus_stats(records, moments: FeatureMoments, skipped: int, corpus: str) -> dict:
    """Aggregate per-record metadata into the ``stats.json`` document.

    Args:
        records: Iterable (a list or a one-pass generator) of dicts with ``speaker``,
            ``session``, ``gender``, ``emotion`` and ``duration_s``, one per written record.
        moments: Log-mel accumulator over all records.
        skipped: Number of skipped source files.
        corpus: Corpus name.

    Returns:
        Dict with ``records``, ``hours``, counts per ``emotion`` / ``speaker`` /
        ``session`` / ``gender``, ``speakers`` (speaker -> session, gender, count,
        per-emotion counts), ``skipped`` and ``logmel`` (see `FeatureMoments.summary`);
        see `CorpusCounts.document`.
    """
    counts = CorpusCounts()
    for record in records:
        counts.add(record)
    return counts.document(moments, skipped, corpus)
