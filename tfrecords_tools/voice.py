"""A source-filter voice that renders speech-like signals with an emotional style (not speech).

The model follows the source-filter theory of speech production (Fant, G. 1960, *Acoustic
Theory of Speech Production*, Mouton). The source is harmonic, like the glottal pulses
of voiced speech, and follows an f0 contour built from declination, one accent per
syllable, slow drift and jitter. The filter is a cascade of three formant resonators
(Klatt, D. H. 1980, "Software for a cascade/parallel formant synthesizer", JASA 67(3)).
An utterance is 4-8 such "syllables" separated by short pauses, over a little
background noise. None of this is language. The signals only give a pipeline a
class-dependent acoustic pattern to learn; nothing measured on them says anything
about human emotional speech.

Speakers (`make_speaker`) differ in base f0 (female ~210 Hz, male ~110 Hz), in
vocal-tract length (female formants are ~1.17 times the male ones) and in speaking rate.
The four styles (`STYLES`) move the acoustics in the directions usually reported for
acted emotional speech (e.g. Scherer, K. R. 2003, "Vocal communication of emotion",
Speech Communication 40). Every utterance draws its own variation around its style, so
the classes overlap:

============  ========  ========  =========  =======  ========  =====  =========  ==========
class         f0 shift  f0 range  syllable   pause    peak      tilt   formants   valence /
              (st)      (st)      (s)        (s)      (dBFS)                      activation
============  ========  ========  =========  =======  ========  =====  =========  ==========
anger         +5.0      4.0       0.15       0.05     -4        0.9    x1.06      1.8 / 4.4
happiness     +4.0      6.5       0.19       0.07     -7        1.1    x1.04      4.3 / 3.7
neutral       0.0       3.0       0.21       0.08     -10       1.3    x1.00      3.0 / 2.6
sadness       -2.0      1.5       0.27       0.12     -14       1.6    x0.97      2.0 / 1.7
============  ========  ========  =========  =======  ========  =====  =========  ==========

Column meanings:

* f0 shift: semitones above the speaker's base f0.
* f0 range: height of the syllable accents, in semitones.
* syllable, pause: mean durations at speaking rate 1.
* peak: peak level relative to full scale.
* tilt: harmonic k has amplitude ``k ** -tilt``.
* formants: the factor applied to F1-F3.

Valence and activation do not change the sound. They are each class's value on
IEMOCAP's 1-5 scale, and `tfrecords_tools.raters` simulates annotators who rate around
them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: Utterance length range, seconds.
MIN_DURATION_S, MAX_DURATION_S = 1.2, 2.5
#: Syllables per utterance.
MIN_SYLLABLES, MAX_SYLLABLES = 4, 8

#: Male average formants F1-F3 in Hz of six vowels (Peterson & Barney 1952, JASA 24(2)).
VOWELS = {
    "i": (270.0, 2290.0, 3010.0),
    "e": (530.0, 1840.0, 2480.0),
    "ae": (660.0, 1720.0, 2410.0),
    "a": (730.0, 1090.0, 2440.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
# Formant bandwidths of F1-F3 in Hz, kept the same for every vowel, speaker and style.
_BANDWIDTHS_HZ = (70.0, 100.0, 140.0)
# Samples in one tabulated period of the harmonic source. It has room for
# _TABLE_SIZE // 2 - 1 harmonics, and the harmonic count is capped there.
_TABLE_SIZE = 2048
_TABLE_PHASE = np.linspace(0.0, 2.0 * np.pi, _TABLE_SIZE + 1)


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
        valence: Class valence, 1 (negative) to 5 (positive). The sound ignores it;
            simulated annotators rate around it (`tfrecords_tools.raters`).
        activation: Class activation (arousal), 1 (calm) to 5 (excited); used like
            ``valence``.
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


#: The style of each class, by class name (the classes of `tfrecords_tools.smoke`).
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
        emotion: A class name, i.e. a key of `STYLES`.
        sample_rate: Hz, at least 8000 (formants and harmonics stay below 0.45 of it).

    Returns:
        ``(waveform, segments)``: ``(samples,)`` float32 in [-1, 1], 1.2-2.5 s long; and
        the syllable spans ``[(start_s, end_s), ...]`` in seconds, sorted, disjoint,
        inside the waveform (4-8 of them).

    Raises:
        ValueError: Unknown ``emotion`` or ``sample_rate`` below 8000.
    """
    waveform, segments, _ = synthesise_with_vowels(rng, speaker_profile, emotion, sample_rate)
    return waveform, segments


def synthesise_with_vowels(rng: np.random.Generator, speaker_profile: SpeakerProfile,
                           emotion: str, sample_rate: int = 16000) -> tuple:
    """`synthesise_utterance` that also names the vowel of each syllable.

    Takes the same random draws as `synthesise_utterance`, so one ``rng`` state gives
    the same waveform from both.

    Args:
        rng: Random generator; the result depends only on its state and the arguments.
        speaker_profile: The speaker (`make_speaker`).
        emotion: A class name, i.e. a key of `STYLES`.
        sample_rate: Hz, at least 8000.

    Returns:
        ``(waveform, segments, vowels)``: the waveform and the syllable spans in seconds
        as `synthesise_utterance` returns them, and the name of the syllable's vowel
        (a key of `VOWELS`) for each span.

    Raises:
        ValueError: Unknown ``emotion`` or ``sample_rate`` below 8000.
    """
    if emotion not in STYLES:
        raise ValueError(f"unknown smoke-test class {emotion!r}; known: {', '.join(STYLES)}")
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

    lead, syl, pau, total = _layout(rng, style, speaker_profile, tempo)
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
    f0 = speaker_profile.f0_hz * 2.0 ** (semitones / 12.0) * jitter
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
                               min(rng.uniform(2500.0, 5000.0) * speaker_profile.formant_scale,
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
            freq = min(formant * speaker_profile.formant_scale * formant_factor, nyquist_limit)
            voiced = _resonator(voiced, freq, bandwidth, sr)
        signal[v0:i1 + tail] += stress * voiced / (np.abs(voiced).max() + 1e-9)

    peak = 10.0 ** (level / 20.0)
    signal *= peak / (np.abs(signal).max() + 1e-12)
    signal += peak * 10.0 ** (-45.0 / 20.0) * rng.standard_normal(n_samples)
    waveform = np.clip(signal, -1.0, 1.0).astype(np.float32)
    segments = [(float(a), float(b)) for a, b in zip(starts, ends)]
    return waveform, segments, labels

