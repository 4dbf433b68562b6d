"""A built-in SMOKE-TEST corpus ("smoke") of synthetic speech-like signals, not speech.

With this corpus the recipes, the converter and the training code can run end to end on
a machine that has no real recordings. `tfrecords_tools.voice` renders every utterance
as one of four emotional styles spoken by one of several simulated speakers.
`tfrecords_tools.raters` gives it valence and activation ratings from simulated
annotators, stored the way IEMOCAP stores its ratings. The corpus only checks that a
pipeline can learn a class-dependent acoustic signal. Nothing measured on it says
anything about human emotional speech.

On disk (`write_smoke_wavs`)::

    FOLDER/f01_anger_000.wav     speaker f01 (f = female, m = male), class, index
    FOLDER/smoke_labels.json     speakers, classes, and per file the ratings and segments
    FOLDER/README.txt            says that this is a synthetic smoke-test corpus

`SmokeReader` (``python -m tfrecords_tools smoke FOLDER OUT_DIR``) converts such a
folder. `make_smoke_corpus` writes and converts one in a single call, and
`smoke_records` does that for a recipe's run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from keras_ser.io import write_json
from tfrecords_tools.raters import ANNOTATORS, simulate_ratings
from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance
from tfrecords_tools.voice import STYLES, speaker_profiles, synthesise_with_vowels

#: Corpus name (the reader's registry name and every record's ``corpus`` field).
CORPUS = "smoke"
#: The classes, in label order.
CLASSES = ("anger", "happiness", "neutral", "sadness")
#: Name of the label file beside the wav files.
LABEL_FILE = "smoke_labels.json"
#: One sentence said wherever the corpus is described (label file, README, stats.json).
NOTE = ("synthetic smoke-test corpus: source-filter speech-like signals (Fant 1960), not "
        "speech; for checking that pipelines run, not for reporting results")
#: The banner recipes print and put at the head of their results on this corpus.
BANNER = ("SMOKE-TEST CORPUS: synthetic speech-like signals (source-filter model with "
          "speaker- and emotion-dependent pitch, tempo, energy and formants). Its "
          "numbers only show that the pipeline runs; they say nothing about speech.")

#: Bumped when the generator changes, so that an old corpus on disk is regenerated.
GENERATOR_VERSION = 1

# The stem of every file the corpus writes: <speaker>_<class>_<index>.
_NAME = re.compile(r"^(?P<speaker>[fm]\d{2,})_(?P<emotion>[a-z]+)_(?P<index>\d{3,})$")


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


def write_smoke_wavs(folder: str, speakers: int = 4, per_class: int = 10, seed: int = 0,
                     sample_rate: int = 16000) -> list:
    """Write the synthetic smoke-test corpus: 16-bit wav files and ``smoke_labels.json``.

    Files are named ``<speaker>_<class>_<index>.wav`` (e.g. ``f01_anger_003.wav``;
    speakers ``f01, m02, f03, ...``). The label file (written last, atomically) holds
    the corpus note, the generator parameters, the class values, the speaker profiles
    and, per file name: ``speaker``, ``gender``, ``emotion``, ``annotators``,
    ``valence_ratings``, ``activation_ratings``, ``segments`` (``[[start_s, end_s],
    ...]``) and ``segment_labels`` (vowel names). Waveforms come from
    `tfrecords_tools.voice.synthesise_with_vowels` and ratings from
    `tfrecords_tools.raters.simulate_ratings`. Every file has its own random stream of
    ``seed``, so the output is the same on every run. Wav files listed by an earlier
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
                waveform, segments, vowels = synthesise_with_vowels(
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
                "Written by tfrecords_tools.smoke.write_smoke_wavs; labels, ratings "
                f"and syllable segments are in {LABEL_FILE}.\n")
    write_json(os.path.join(folder, LABEL_FILE), {
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
                                    "corpus with tfrecords_tools.smoke.write_smoke_wavs "
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
    write_json(os.path.join(records_dir, "stats.json"), report.stats)
    return report


def smoke_records(run_dir: str) -> str:
    """Print `BANNER`, then write (or reuse) the default smoke corpus for a recipe run.

    Args:
        run_dir: The recipe's run folder; the corpus goes to ``<run_dir>/smoke``
            (`make_smoke_corpus` with its defaults).

    Returns:
        The record folder, ``<run_dir>/smoke/records``.

    Raises:
        tfrecords_tools.writer.TooManySkipped: Some file could not be converted.
    """
    target = os.path.join(run_dir, "smoke")
    print(BANNER)
    make_smoke_corpus(target)
    return os.path.join(target, "records")
