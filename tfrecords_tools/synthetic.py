"""A built-in SMOKE-TEST corpus ("smoke"): synthetic speech-like signals, not speech.

The corpus lets the recipes, the converter and the training code run end to end on a
machine without any real recordings. Its signals are made with the source-filter model of
speech production (Fant, G. 1960, *Acoustic Theory of Speech Production*, Mouton): a
harmonic "glottal" source with an f0 contour (declination, syllable accents, drift and
jitter), passed through a cascade of three formant resonators (Klatt, D. H. 1980,
"Software for a cascade/parallel formant synthesizer", JASA 67(3)), shaped into 4-8
"syllables" separated by short pauses, over a little background noise. Nothing in it is
language, and nothing measured on it says anything about human emotional speech; it only
checks that a pipeline can learn a class-dependent acoustic signal.

Speakers differ in base f0 (female ~210 Hz, male ~110 Hz), vocal-tract length (all
formants scaled by ~1.17 for female speakers) and speaking rate. The four classes differ
in the directions commonly reported for acted emotional speech (e.g. Scherer 2003,
"Vocal communication of emotion", Speech Communication 40), with per-utterance random
variation so that their distributions overlap:

============  ========  ========  =========  =======  ========  =====  =========  ==========
class         f0 shift  f0 range  syllable   pause    peak      tilt   formants   valence /
              (st)      (st)      (s)        (s)      (dBFS)                      activation
============  ========  ========  =========  =======  ========  =====  =========  ==========
anger         +5.0      4.0       0.15       0.05     -4        0.9    x1.06      1.8 / 4.4
happiness     +4.0      6.5       0.19       0.07     -7        1.1    x1.04      4.3 / 3.7
neutral       0.0       3.0       0.21       0.08     -10       1.3    x1.00      3.0 / 2.6
sadness       -2.0      1.5       0.27       0.12     -14       1.6    x0.97      2.0 / 1.7
============  ========  ========  =========  =======  ========  =====  =========  ==========

(f0 shift: semitones above the speaker's base f0; f0 range: height of the syllable
accents, semitones; syllable and pause: mean durations at speaking rate 1; peak: peak
level re full scale; tilt: harmonic k has amplitude ``k ** -tilt``; formants: factor on
F1-F3.) Valence and activation are on IEMOCAP's 1-5 scale. Every utterance is rated by
three simulated annotators (``A1``-``A3``), each giving the class's value plus Gaussian
noise (standard deviation `RATING_NOISE`), rounded to an integer and clipped to 1..5;
the records store the ratings and their mean exactly as IEMOCAP's are stored.

On disk (`write_smoke_wavs`)::

    FOLDER/f01_anger_000.wav     speaker f01 (f = female, m = male), class, index
    FOLDER/smoke_labels.json     speakers, classes, and per file the ratings and segments
    FOLDER/README.txt            says that this is a synthetic smoke-test corpus

`SmokeReader` (``python -m tfrecords_tools smoke FOLDER OUT_DIR``) converts such a folder;
`make_smoke_corpus` writes and converts it in one call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

#: Corpus name (the reader's registry name and every record's ``corpus`` field).
CORPUS = "smoke"
#: The classes, in label order.
CLASSES = ("anger", "happiness", "neutral", "sadness")
#: Name of the label file beside the wav files.
LABEL_FILE = "smoke_labels.json"
#: One sentence said wherever the corpus is described (label file, README, stats.json).
NOTE = ("synthetic smoke-test corpus: source-filter speech-like signals (Fant 1960), not "
        "speech; for checking that pipelines run, not for reporting results")
#: Simulated annotators rating every utterance.
#: The banner recipes print and put at the head of their results on this corpus.
BANNER = ("SMOKE-TEST CORPUS: synthetic speech-like signals (source-filter model with "
          "speaker- and emotion-dependent pitch, tempo, energy and formants). Its "
          "numbers only show that the pipeline runs; they say nothing about speech.")

ANNOTATORS = ("A1", "A2", "A3")
#: Standard deviation of an annotator's rating around the class value (1-5 scale).
RATING_NOISE = 0.7
#: Utterance length range, seconds.
MIN_DURATION_S, MAX_DURATION_S = 1.2, 2.5
#: Syllables per utterance.
MIN_SYLLABLES, MAX_SYLLABLES = 4, 8
#: Bumped when the generator changes, so that an old corpus on disk is regenerated.
GENERATOR_VERSION = 1

#: Male average formants F1-F3 in Hz of six vowels (Peterson & Barney 1952, JASA 24(2)).
VOWELS = {
    "i": (270.0, 2290.0, 3010.0),
    "e": (530.0, 1840.0, 2480.0),
    "ae": (660.0, 1720.0, 2410.0),
    "a": (730.0, 1090.0, 2440.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
_BANDWIDTHS_HZ = (70.0, 100.0, 140.0)
_TABLE_SIZE = 2048
_TABLE_PHASE = np.linspace(0.0, 2.0 * np.pi, _TABLE_SIZE + 1)

_NAME = re.compile(r"^(?P<speaker>[fm]\d{2,})_(?P<emotion>[a-z]+)_(?P<index>\d{3,})$")


@dataclasses.dataclass(frozen=True)
class EmotionStyle:
    """How one class is rendered (see the table in the module docstring).

    Attributes:
        f0_shift_st: Mean f0 above the speaker's base f0, semitones.
        f0_range_st: Mean height of the syllable accents, semitones.
        syllable_s: Mean syllable duration at speaking rate 1, seconds.
        pause_s: Mean pause between syllables at speaking rate 1, seconds.
        level_dbfs: Mean peak level, dB re full scale.
        tilt: Spectral tilt of the source: harmonic k has amplitude ``k ** -tilt``.
        formant_factor: Factor on F1-F3 (jaw opening, lip spreading).
        jitter: Relative standard deviation of the fast f0 perturbation.
        breathiness: Aspiration noise relative to the harmonic source.
        valence: Class valence, 1 (negative) to 5 (positive).
        activation: Class activation (arousal), 1 (calm) to 5 (excited).
    """

    f0_shift_st: float
    f0_range_st: float
    syllable_s: float
    pause_s: float
    level_dbfs: float
    tilt: float
    formant_factor: float
    jitter: float
    breathiness: float
    valence: float
    activation: float


#: The rendering of each class in `CLASSES`.
STYLES = {
    "anger": EmotionStyle(5.0, 4.0, 0.15, 0.05, -4.0, 0.9, 1.06, 0.012, 0.02, 1.8, 4.4),
    "happiness": EmotionStyle(4.0, 6.5, 0.19, 0.07, -7.0, 1.1, 1.04, 0.008, 0.03, 4.3, 3.7),
    "neutral": EmotionStyle(0.0, 3.0, 0.21, 0.08, -10.0, 1.3, 1.00, 0.006, 0.04, 3.0, 2.6),
    "sadness": EmotionStyle(-2.0, 1.5, 0.27, 0.12, -14.0, 1.6, 0.97, 0.006, 0.10, 2.0, 1.7),
}


@dataclasses.dataclass(frozen=True)
class SpeakerProfile:
    """One simulated speaker.

    Attributes:
        speaker_id: E.g. ``"f01"`` (first letter: gender).
        gender: ``"female"`` or ``"male"``.
        f0_hz: Base fundamental frequency, Hz (neutral class, before the contour).
        formant_scale: Factor on the male vowel formants (shorter vocal tract: larger).
        rate: Speaking rate; syllables and pauses last ``1 / rate`` times the class mean.
    """

    speaker_id: str
    gender: str
    f0_hz: float
    formant_scale: float
    rate: float


def make_speaker(rng: np.random.Generator, speaker_id: str, gender: str) -> SpeakerProfile:
    """Draw a speaker: base f0, vocal-tract scaling and speaking rate.

    Args:
        rng: Random generator (the only source of randomness).
        speaker_id: Id stored in the records.
        gender: ``"female"`` (f0 ~ N(210, 15) Hz, formants x1.17) or ``"male"``
            (f0 ~ N(110, 10) Hz, formants x1.0); both scales vary by ~3 %.

    Returns:
        A `SpeakerProfile`.

    Raises:
        ValueError: ``gender`` is neither ``"female"`` nor ``"male"``.
    """
    if gender not in ("female", "male"):
        raise ValueError(f"gender must be 'female' or 'male', got {gender!r}")
    female = gender == "female"
    f0 = rng.normal(210.0, 15.0) if female else rng.normal(110.0, 10.0)
    scale = (1.17 if female else 1.0) * rng.normal(1.0, 0.03)
    rate = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2))
    return SpeakerProfile(speaker_id, gender, float(f0), float(scale), rate)


def speaker_profiles(speakers: int, seed: int) -> list:
    """The speakers of a corpus: ``f01, m02, f03, m04, ...`` (odd positions female).

    Args:
        speakers: How many (at least 1); ``ceil(speakers / 2)`` are female.
        seed: Corpus seed; each speaker is drawn from its own stream of it.

    Returns:
        ``[SpeakerProfile, ...]``.

    Raises:
        ValueError: ``speakers`` < 1.
    """
    if speakers < 1:
        raise ValueError(f"need at least one speaker, got {speakers}")
    out = []
    for s in range(speakers):
        gender = "female" if s % 2 == 0 else "male"
        out.append(make_speaker(np.random.default_rng([seed, 0, s]),
                                f"{gender[0]}{s + 1:02d}", gender))
    return out


def _resonator(x: np.ndarray, freq_hz: float, bandwidth_hz: float, sample_rate: int):
    """Klatt's two-pole resonator (unit gain at 0 Hz) applied to ``x``."""
    from scipy.signal import lfilter

    r = math.exp(-math.pi * bandwidth_hz / sample_rate)
    b1 = 2.0 * r * math.cos(2.0 * math.pi * freq_hz / sample_rate)
    b2 = -r * r
    return lfilter([1.0 - b1 - b2], [1.0, -b1, -b2], x)


def _layout(rng, style: EmotionStyle, speaker: SpeakerProfile, tempo: float) -> tuple:
    """``(lead_s, syllables_s, pauses_s, total_s)`` with 4-8 syllables in 1.2-2.5 s."""
    lead, trail = rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25)
    scale = tempo / speaker.rate
    syl = style.syllable_s * scale * rng.lognormal(0.0, 0.2, MAX_SYLLABLES)
    pau = style.pause_s * scale * rng.lognormal(0.0, 0.3, MAX_SYLLABLES - 1)

    def total(n):
        return lead + trail + syl[:n].sum() + pau[:n - 1].sum()

    n = int(rng.integers(MIN_SYLLABLES, MAX_SYLLABLES + 1))
    while n > MIN_SYLLABLES and total(n) > MAX_DURATION_S:
        n -= 1
    while n < MAX_SYLLABLES and total(n) < MIN_DURATION_S:
        n += 1
    syl, pau = syl[:n], pau[:n - 1]
    speech = syl.sum() + pau.sum()
    wanted = min(max(total(n), MIN_DURATION_S), MAX_DURATION_S) - lead - trail
    syl, pau = syl * (wanted / speech), pau * (wanted / speech)
    return lead, syl, pau, lead + wanted + trail


def _smooth_noise(rng, n_samples: int, step: int) -> np.ndarray:
    """Standard normal values every ``step`` samples, linearly interpolated."""
    knots = rng.standard_normal(n_samples // step + 2)
    return np.interp(np.arange(n_samples) / step, np.arange(knots.shape[0]), knots)


def synthesise_utterance(rng: np.random.Generator, speaker_profile: SpeakerProfile,
                         emotion: str, sample_rate: int = 16000) -> tuple:
    """Synthesise one speech-like utterance of a smoke-test class (not speech).

    Source-filter model (Fant 1960): a harmonic source (harmonic k at amplitude
    ``k ** -tilt``, plus aspiration noise) follows an f0 contour made of the speaker's base
    f0, the class's shift, a declination of 1.5-3 semitones, one accent per syllable,
    slow drift and fast jitter. Each syllable is an optional 20-60 ms noise "consonant"
    and a "vowel": the source under a raised-cosine envelope through three cascaded
    formant resonators of one of `VOWELS`, scaled by the speaker's vocal-tract factor and
    the class's formant factor. Syllables are separated by pauses; white noise 45 dB
    under the peak fills the whole signal. Class parameters (`STYLES`) vary randomly per
    utterance, so classes overlap.

    Args:
        rng: Random generator; the result depends only on its state and the arguments.
        speaker_profile: The speaker (`make_speaker`).
        emotion: One of `CLASSES`.
        sample_rate: Hz, at least 8000 (formants and harmonics stay below 0.45 of it).

    Returns:
        ``(waveform, segments)``: ``(samples,)`` float32 in [-1, 1], 1.2-2.5 s long; and
        the syllable spans ``[(start_s, end_s), ...]`` in seconds, sorted, disjoint,
        inside the waveform (4-8 of them).

    Raises:
        ValueError: Unknown ``emotion`` or ``sample_rate`` below 8000.
    """
    waveform, segments, _ = _synthesise(rng, speaker_profile, emotion, sample_rate)
    return waveform, segments


def _synthesise(rng, speaker: SpeakerProfile, emotion: str, sample_rate: int) -> tuple:
    """`synthesise_utterance` that also returns the vowel of each syllable."""
    if emotion not in STYLES:
        raise ValueError(f"unknown smoke-test class {emotion!r}; known: {', '.join(CLASSES)}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    style = STYLES[emotion]
    sr = sample_rate
    nyquist_limit = 0.45 * sr
    # Per-utterance realisation of the class: the source of the overlap between classes.
    tempo = rng.lognormal(0.0, 0.12)
    f0_shift = style.f0_shift_st + rng.normal(0.0, 1.5)
    f0_range = style.f0_range_st * rng.lognormal(0.0, 0.3)
    level = min(style.level_dbfs + rng.normal(0.0, 2.5), -1.0)
    tilt = style.tilt + rng.normal(0.0, 0.15)
    formant_factor = style.formant_factor * rng.normal(1.0, 0.02)

    lead, syl, pau, total = _layout(rng, style, speaker, tempo)
    n_samples = round(float(total) * sr)
    t = np.arange(n_samples) / sr
    starts = lead + np.concatenate([[0.0], np.cumsum(syl[:-1] + pau)])
    ends = starts + syl

    # f0 contour in semitones re the speaker's base f0.
    semitones = f0_shift + rng.uniform(1.5, 3.0) * (0.5 - t / total)
    semitones += 0.3 * _smooth_noise(rng, n_samples, int(0.1 * sr))
    for k, (a, b) in enumerate(zip(starts, ends)):
        height = f0_range * rng.uniform(-0.2, 1.0) * (1.0 if k else 1.2)
        centre, width = rng.uniform(a + 0.3 * (b - a), a + 0.7 * (b - a)), 0.4 * (b - a)
        semitones += height * np.exp(-0.5 * ((t - centre) / width) ** 2)
    jitter = 1.0 + style.jitter * _smooth_noise(rng, n_samples, max(1, int(0.005 * sr)))
    f0 = speaker.f0_hz * 2.0 ** (semitones / 12.0) * jitter
    phase = 2.0 * np.pi * np.cumsum(f0) / sr

    signal = np.zeros(n_samples)
    vowel_names = list(VOWELS)
    labels = []
    for k, (a, b) in enumerate(zip(starts, ends)):
        i0, i1 = round(float(a) * sr), min(round(float(b) * sr), n_samples)
        stress = rng.uniform(0.6, 1.0) * (1.0 - 0.3 * k / len(starts))
        v0 = i0
        if rng.random() < 0.6:  # a noise "consonant" before the vowel
            c1 = min(i0 + int(rng.uniform(0.02, 0.06) * sr), i0 + (i1 - i0) // 3)
            burst = _resonator(rng.standard_normal(c1 - i0),
                               min(rng.uniform(2500.0, 5000.0) * speaker.formant_scale,
                                   nyquist_limit), 1500.0, sr)
            burst *= np.hanning(c1 - i0) * 0.25 * stress / (np.abs(burst).max() + 1e-9)
            signal[i0:c1] += burst
            v0 = c1
        m = i1 - v0
        ph = phase[v0:i1]
        n_harm = min(max(1, int(nyquist_limit / f0[v0:i1].max())), _TABLE_SIZE // 2 - 1)
        # One period of sum_k k**-tilt sin(k phase), tabulated by an inverse FFT and
        # read at the f0 phase.
        spectrum = np.zeros(_TABLE_SIZE // 2 + 1, complex)
        spectrum[1:n_harm + 1] = -0.5j * _TABLE_SIZE * np.arange(1, n_harm + 1) ** -tilt
        table = np.fft.irfft(spectrum, _TABLE_SIZE)
        source = np.interp(np.mod(ph, 2.0 * np.pi), _TABLE_PHASE, np.append(table, table[0]))
        source += (style.breathiness * rng.standard_normal(m) * (1.0 + np.cos(ph))
                   * np.abs(source).max())
        attack, release = max(2, min(int(0.03 * sr), m // 4)), max(2, min(int(0.05 * sr), m // 3))
        envelope = np.ones(m)
        envelope[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
        envelope[m - release:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
        vowel = vowel_names[int(rng.integers(len(vowel_names)))]
        labels.append(vowel)
        tail = min(int(0.04 * sr), n_samples - i1)
        voiced = np.concatenate([source * envelope, np.zeros(tail)])
        for formant, bandwidth in zip(VOWELS[vowel], _BANDWIDTHS_HZ):
            freq = min(formant * speaker.formant_scale * formant_factor, nyquist_limit)
            voiced = _resonator(voiced, freq, bandwidth, sr)
        signal[v0:i1 + tail] += stress * voiced / (np.abs(voiced).max() + 1e-9)

    peak = 10.0 ** (level / 20.0)
    signal *= peak / (np.abs(signal).max() + 1e-12)
    signal += peak * 10.0 ** (-45.0 / 20.0) * rng.standard_normal(n_samples)
    waveform = np.clip(signal, -1.0, 1.0).astype(np.float32)
    segments = [(float(a), float(b)) for a, b in zip(starts, ends)]
    return waveform, segments, labels


def simulate_ratings(rng: np.random.Generator, emotion: str,
                     annotators: int = len(ANNOTATORS)) -> tuple:
    """Valence and activation ratings of simulated annotators for one utterance.

    Args:
        rng: Random generator.
        emotion: One of `CLASSES`.
        annotators: How many ratings of each kind.

    Returns:
        ``(valence_ratings, activation_ratings)``: lists of ``annotators`` floats, each an
        integer 1..5: the class value (`STYLES`) plus N(0, `RATING_NOISE`), rounded and
        clipped.

    Raises:
        ValueError: Unknown ``emotion``.
    """
    if emotion not in STYLES:
        raise ValueError(f"unknown smoke-test class {emotion!r}; known: {', '.join(CLASSES)}")
    style = STYLES[emotion]

    def rate(value):
        noisy = np.rint(value + rng.normal(0.0, RATING_NOISE, annotators))
        return [float(v) for v in np.clip(noisy, 1.0, 5.0)]

    return rate(style.valence), rate(style.activation)


def _generator_params(speakers, per_class, seed, sample_rate) -> dict:
    return {"version": GENERATOR_VERSION, "speakers": int(speakers),
            "per_class": int(per_class), "seed": int(seed), "sample_rate": int(sample_rate)}


def _read_labels(folder: str):
    path = os.path.join(folder, LABEL_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _atomic_json(path: str, document) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
    os.replace(path + ".tmp", path)


def write_smoke_wavs(folder: str, speakers: int = 4, per_class: int = 10, seed: int = 0,
                     sample_rate: int = 16000) -> list:
    """Write the synthetic smoke-test corpus: 16-bit wav files and ``smoke_labels.json``.

    Files are named ``<speaker>_<class>_<index>.wav`` (e.g. ``f01_anger_003.wav``;
    speakers ``f01, m02, f03, ...``). The label file (written last, atomically) holds
    the corpus note, the generator parameters, the class values, the speaker profiles
    and, per file name: ``speaker``, ``gender``, ``emotion``, ``annotators``,
    ``valence_ratings``, ``activation_ratings``, ``segments`` (``[[start_s, end_s],
    ...]``) and ``segment_labels`` (vowel names). Every file has its own random stream
    of ``seed``, so the output is the same on every run. Wav files listed by an earlier
    label file in ``folder`` and not part of this corpus are deleted.

    Args:
        folder: Output folder (created).
        speakers: Number of speakers, at least 1; ``ceil(speakers / 2)`` are female.
        per_class: Utterances per speaker and class, at least 1.
        seed: Corpus seed.
        sample_rate: Hz of the wav files (at least 8000).

    Returns:
        The wav file paths written, sorted.

    Raises:
        ValueError: ``speakers`` or ``per_class`` below 1, or ``sample_rate`` below 8000.
    """
    import soundfile

    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    profiles = speaker_profiles(speakers, seed)
    os.makedirs(folder, exist_ok=True)
    old = _read_labels(folder)
    files, paths = {}, []
    for s, speaker in enumerate(profiles):
        for e, emotion in enumerate(CLASSES):
            for k in range(per_class):
                name = f"{speaker.speaker_id}_{emotion}_{k:03d}.wav"
                waveform, segments, vowels = _synthesise(
                    np.random.default_rng([seed, 1, s, e, k]), speaker, emotion, sample_rate)
                valence, activation = simulate_ratings(
                    np.random.default_rng([seed, 2, s, e, k]), emotion)
                path = os.path.join(folder, name)
                soundfile.write(path, waveform, sample_rate, subtype="PCM_16")
                paths.append(path)
                files[name] = {
                    "speaker": speaker.speaker_id, "gender": speaker.gender,
                    "emotion": emotion, "annotators": list(ANNOTATORS),
                    "valence_ratings": valence, "activation_ratings": activation,
                    "segments": [[round(a, 6), round(b, 6)] for a, b in segments],
                    "segment_labels": vowels,
                }
    if old and isinstance(old.get("files"), dict):
        for name in old["files"]:
            stale = os.path.join(folder, os.path.basename(str(name)))
            if name not in files and _NAME.match(os.path.splitext(name)[0]) \
                    and os.path.isfile(stale):
                os.remove(stale)
    with open(os.path.join(folder, "README.txt"), "w", encoding="utf-8") as f:
        f.write(f"Smoke-test corpus '{CORPUS}': {NOTE}.\n"
                "Written by tfrecords_tools.synthetic.write_smoke_wavs; labels, ratings "
                f"and syllable segments are in {LABEL_FILE}.\n")
    _atomic_json(os.path.join(folder, LABEL_FILE), {
        "corpus": CORPUS, "synthetic": True, "note": NOTE,
        "generator": _generator_params(speakers, per_class, seed, sample_rate),
        "classes": {c: {"valence": STYLES[c].valence, "activation": STYLES[c].activation}
                    for c in CLASSES},
        "speakers": {p.speaker_id: dataclasses.asdict(p) for p in profiles},
        "files": files,
    })
    return sorted(paths)


def _ratings(entry: dict, key: str, count: int) -> list:
    values = entry.get(key)
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"'{key}' must be a list of {count} ratings")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v <= 5.0:
            raise ValueError(f"'{key}' holds {v!r}, not a rating in 1..5")
        out.append(float(v))
    return out


def _segments(entry: dict) -> tuple:
    segments = entry.get("segments")
    if not isinstance(segments, list) or not segments:
        raise ValueError("'segments' must be a non-empty list of [start_s, end_s]")
    out, previous_end = [], 0.0
    for seg in segments:
        if (not isinstance(seg, list) or len(seg) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                           and math.isfinite(x) for x in seg)):
            raise ValueError(f"segment {seg!r} is not [start_s, end_s]")
        start, end = float(seg[0]), float(seg[1])
        if not previous_end <= start < end:
            raise ValueError(f"segment {seg!r} is empty, negative or overlaps the one before")
        out.append((start, end))
        previous_end = end
    labels = entry.get("segment_labels", [""] * len(out))
    if not isinstance(labels, list) or len(labels) != len(out):
        raise ValueError(f"'segment_labels' must list {len(out)} labels")
    return out, [str(x) for x in labels]


@register
class SmokeReader(Reader):
    """The synthetic smoke-test corpus (`write_smoke_wavs`); not speech.

    ``scan`` takes the folder holding ``smoke_labels.json`` and the wav files, or its
    parent when that holds them in ``wav/``. Speaker, class and index come from the file
    name and must agree with the file's label entry, which gives gender, the annotators'
    valence and activation ratings (mean stored as ``valence`` / ``activation``) and the
    syllable segments. Session is the speaker.

    Args:
        generate: Before scanning, write the default corpus (`write_smoke_wavs` with its
            defaults) into the folder when it holds no ``smoke_labels.json``.
    """

    name = CORPUS
    description = "synthetic smoke-test corpus of speech-like signals (not speech)"

    def __init__(self, *, generate: bool = False):
        super().__init__(generate=generate)
        self.generate = generate

    @classmethod
    def add_arguments(cls, parser):
        """``--generate``: write the default smoke corpus into SRC_DIR first if needed."""
        parser.add_argument("--generate", action="store_true",
                            help=f"first write the default smoke corpus into SRC_DIR when it "
                            f"holds no {LABEL_FILE}")

    def options_summary(self) -> dict:
        """No options change the records (``generate`` only writes the source files)."""
        return {}

    def scan(self, root):
        """Yield one `Utterance` per wav file with a valid label entry, else a `Skipped`.

        A file whose name is not ``<speaker>_<class>_<index>``, that has no entry in the
        label file, or whose entry is bad (unknown class, ratings outside 1..5, malformed
        segments, disagreeing speaker or class) is skipped with a reason naming the file
        and the label file; a label entry without its wav file is reported as skipped too.

        Raises:
            FileNotFoundError: Neither ``root`` nor ``root/wav`` holds ``smoke_labels.json``.
            ValueError: The label file is not JSON or has no ``"files"`` object.
        """
        folder = root
        if not os.path.isfile(os.path.join(folder, LABEL_FILE)) and os.path.isfile(
                os.path.join(root, "wav", LABEL_FILE)):
            folder = os.path.join(root, "wav")
        label_path = os.path.join(folder, LABEL_FILE)
        if not os.path.isfile(label_path) and self.generate:
            write_smoke_wavs(root)
        if not os.path.isfile(label_path):
            raise FileNotFoundError(f"{label_path}: missing smoke-test label file (write the "
                                    "corpus with tfrecords_tools.synthetic.write_smoke_wavs "
                                    "or pass --generate)")
        try:
            with open(label_path, encoding="utf-8") as f:
                labels = json.load(f)
        except ValueError as err:
            raise ValueError(f"{label_path}: not valid JSON ({err})") from None
        files = labels.get("files") if isinstance(labels, dict) else None
        if not files or not hasattr(files, "get"):
            raise ValueError(f"{label_path}: no \"files\" entries")
        seen_names = set()
        for path in audio_files(folder):
            name = os.path.basename(path)
            stem = os.path.splitext(name)[0]
            seen_names.add(name)
            match = _NAME.match(stem)
            if not match:
                yield Skipped(path, f"file name '{name}' is not <speaker>_<class>_<index>")
                continue
            entry = files.get(name)
            if entry is None:
                yield Skipped(path, f"no entry for '{name}' in {LABEL_FILE}")
                continue
            if not isinstance(entry, dict):
                yield Skipped(path, f"bad entry for '{name}' in {LABEL_FILE}: not an object")
                continue
            try:
                utt = self._utterance(stem, path, match, entry)
            except ValueError as err:
                yield Skipped(path, f"bad entry for '{name}' in {LABEL_FILE}: {err}")
                continue
            if not self.seen_before(stem):
                yield utt
        for name in sorted(set(files) - seen_names):
            yield Skipped(os.path.join(folder, str(name)),
                          f"listed in {LABEL_FILE} but the audio file is missing")

    def _utterance(self, stem: str, path: str, match, entry):
        """The `Utterance` of one label entry; ValueError says what is wrong with it."""
        speaker, emotion = match.group("speaker"), match.group("emotion")
        if entry.get("emotion") not in CLASSES:
            raise ValueError(f"unknown class {entry.get('emotion')!r}")
        if entry["emotion"] != emotion or entry.get("speaker") != speaker:
            raise ValueError(f"speaker/class {entry.get('speaker')!r}/{entry['emotion']!r} "
                             f"disagree with the file name")
        gender = entry.get("gender")
        if gender not in ("female", "male"):
            raise ValueError(f"gender {gender!r} is not 'female' or 'male'")
        annotators = entry.get("annotators")
        if not isinstance(annotators, list) or not annotators:
            raise ValueError("'annotators' must be a non-empty list")
        valence = _ratings(entry, "valence_ratings", len(annotators))
        activation = _ratings(entry, "activation_ratings", len(annotators))
        segments, segment_labels = _segments(entry)
        return Utterance(
            utterance_id=stem, corpus=self.name, audio_path=path, speaker=speaker,
            session=speaker, gender=gender, emotion=emotion,
            annotators=[str(a) for a in annotators], valence_ratings=valence,
            activation_ratings=activation, valence=float(np.mean(valence)),
            activation=float(np.mean(activation)), text_id=f"{emotion}_{match.group('index')}",
            segments=segments, segment_labels=segment_labels, segment_kind="syllable")


def _wavs_complete(folder: str, params: dict) -> bool:
    labels = _read_labels(folder)
    if not isinstance(labels, dict) or labels.get("generator") != params:
        return False
    files = labels.get("files")
    return isinstance(files, dict) and all(
        os.path.isfile(os.path.join(folder, name)) for name in files)


def make_smoke_corpus(out_dir: str, speakers: int = 4, per_class: int = 10, seed: int = 0,
                      progress: bool = False):
    """Write the synthetic smoke-test corpus and convert it to TFRecords, reusing old output.

    Writes the wav files into ``<out_dir>/wav/`` (`write_smoke_wavs`; skipped when a
    complete corpus of the same parameters is already there) and converts them into
    ``<out_dir>/records/`` with `tfrecords_tools.writer.convert` (finished shards are
    reused; shards of a different earlier smoke corpus there are replaced). ``stats.json``
    and the returned stats gain ``"synthetic": true`` and ``"note"`` saying that the
    corpus is synthetic, not speech. The records folder is what the training code reads.

    Args:
        out_dir: Output folder (created).
        speakers: Number of speakers, at least 1; ``ceil(speakers / 2)`` are female.
        per_class: Utterances per speaker and class, at least 1.
        seed: Corpus seed.
        progress: Show the converter's progress bar.

    Returns:
        The converter's `tfrecords_tools.writer.Report` (``speakers * 4 * per_class``
        records at 16 kHz).

    Raises:
        ValueError: ``speakers`` or ``per_class`` below 1.
        tfrecords_tools.writer.TooManySkipped: Some file could not be converted.
    """
    from tfrecords_tools import writer
    from tfrecords_tools.schema import SAMPLE_RATE

    wav_dir = os.path.join(out_dir, "wav")
    records_dir = os.path.join(out_dir, "records")
    if not _wavs_complete(wav_dir, _generator_params(speakers, per_class, seed, SAMPLE_RATE)):
        write_smoke_wavs(wav_dir, speakers, per_class, seed, SAMPLE_RATE)
    report = writer.convert(SmokeReader(), wav_dir, records_dir, sample_rate=SAMPLE_RATE,
                            max_skipped=0, overwrite=True, progress=progress)
    report.stats["synthetic"] = True
    report.stats["note"] = NOTE
    _atomic_json(os.path.join(records_dir, "stats.json"), report.stats)
    return report


def smoke_records(run_dir: str) -> str:
    """Print `BANNER`, write (or reuse) the smoke corpus under ``<run_dir>/smoke``.

    Returns:
        Its record folder, ``<run_dir>/smoke/records``.
    """
    target = os.path.join(run_dir, "smoke")
    print(BANNER)
    make_smoke_corpus(target)
    return os.path.join(target, "records")
