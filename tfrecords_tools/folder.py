"""Generic corpora laid out as folders: one folder per emotion, or plain unlabelled speech.

Two readers live here:

``folder``: labelled audio sorted into one folder per emotion::

    SRC_DIR/angry/03a01Wa.wav
    SRC_DIR/Happy/speaker_1/take2.flac      nested folders below a label folder are fine
    SRC_DIR/ps/OAF_back_ps.wav               "ps" (pleasant surprise) -> "surprise"

The label folder's name is mapped to a word of `tfrecords_tools.schema.EMOTIONS` through
`LABEL_SYNONYMS`; files in a folder whose name maps to nothing are skipped, unless
``--any-label`` keeps the folder name itself as the label.

``speech``: every audio file below SRC_DIR, unlabelled (emotion ``""``), e.g. a folder of
read speech used to pre-train a generator. Word alignments come from ``<stem>.TextGrid``
files, which the writer finds anywhere below SRC_DIR.

Both readers take the speaker from the file name with ``--speaker-regex``.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

_SYNONYMS = {
    "anger": ("angry", "anger", "ang"),
    "happiness": ("happy", "joy", "happiness", "hap"),
    "sadness": ("sad", "sadness"),
    "fear": ("fearful", "fear", "afraid"),
    "surprise": ("surprised", "surprise", "ps", "pleasant_surprise"),
    "disgust": ("disgusted", "disgust"),
    "neutral": ("neutral", "neu"),
    "calm": ("calm",),
    "boredom": ("bored", "boredom"),
    "excitement": ("excited", "excitement"),
    "frustration": ("frustrated", "frustration"),
    "contempt": ("contempt",),
    "other": ("other",),
}

#: Normalised label spelling (see `normalise_label_name`) -> word of `EMOTIONS`.
LABEL_SYNONYMS = {alias: word for word, aliases in _SYNONYMS.items() for alias in aliases}


def normalise_label_name(name: str) -> str:
    """Lowercase and strip a label, and join its words with ``_`` ("Pleasant Surprise")."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def map_label(name: str) -> Optional[str]:
    """Map a corpus's label spelling to a word of `tfrecords_tools.schema.EMOTIONS`.

    Args:
        name: A label as found on disk, e.g. ``"Angry"``, ``"hap"``, ``"pleasant surprise"``.

    Returns:
        The `EMOTIONS` word (``"anger"``, ``"happiness"``, ``"surprise"``), or ``None`` when
        the spelling is not in `LABEL_SYNONYMS`.
    """
    return LABEL_SYNONYMS.get(normalise_label_name(name))


def compile_speaker_regex(pattern: Optional[str]) -> Optional[re.Pattern]:
    """Compile a ``--speaker-regex`` option.

    Args:
        pattern: A Python regular expression searched in file stems, or ``None``/``""``.

    Returns:
        The compiled expression, or ``None`` when no pattern is given.

    Raises:
        ValueError: The pattern is not a valid regular expression.
    """
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--speaker-regex '{pattern}' is not a valid regular expression "
                         f"({err})") from None


def speaker_from_stem(regex: re.Pattern, stem: str) -> Optional[str]:
    """The speaker named in a file stem by a ``--speaker-regex``.

    The expression is searched anywhere in the stem (anchor it with ``^`` to match from the
    start). The speaker is the named group ``speaker`` if the expression has one, else group
    1, else the whole match.

    Args:
        regex: A compiled expression from `compile_speaker_regex`.
        stem: File name without folder and extension, e.g. ``"03a01Wa"``.

    Returns:
        The speaker, or ``None`` when the expression does not match or its group is empty.
    """
    match = regex.search(stem)
    if not match:
        return None
    if "speaker" in regex.groupindex:
        speaker = match.group("speaker")
    elif regex.groups:
        speaker = match.group(1)
    else:
        speaker = match.group(0)
    return speaker or None


def path_id(relative_path: str) -> str:
    """An utterance id from a relative path: extension dropped, folders joined by ``__``."""
    return os.path.splitext(relative_path)[0].replace(os.sep, "__").replace("/", "__")


def _add_speaker_regex_argument(parser, unmatched: str) -> None:
    parser.add_argument(
        "--speaker-regex", default=None, metavar="REGEX",
        help="regular expression searched in each file name (without extension); the "
        "speaker is its named group 'speaker', else group 1, else the whole match; "
        f"a file it does not match {unmatched}")


@register
class FolderReader(Reader):
    """Labelled audio sorted into one folder per emotion: ``SRC_DIR/<label>/**/*.wav``.

    Args:
        speaker_regex: Regular expression giving the speaker from each file stem (see
            `speaker_from_stem`); files it does not match are skipped. ``None``: speaker
            ``""`` for every file.
        any_label: Keep a label folder whose name is not in `LABEL_SYNONYMS` under its own
            name (lowercased) instead of skipping its files.

    Raises:
        ValueError: ``speaker_regex`` is not a valid regular expression.
    """

    name = "folder"
    description = "one folder per emotion: SRC_DIR/<label>/**/*.wav (any audio extension)"

    def __init__(self, speaker_regex: Optional[str] = None, any_label: bool = False):
        super().__init__(speaker_regex=speaker_regex, any_label=any_label)
        self._speaker_regex = compile_speaker_regex(speaker_regex)

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--speaker-regex`` and ``--any-label``."""
        _add_speaker_regex_argument(parser, "is skipped")
        parser.add_argument(
            "--any-label", action="store_true",
            help="use the name of a label folder that is not a known emotion (lowercased) "
            "as the label instead of skipping its files")

    def scan(self, root):
        """Yield one utterance per audio file in a label folder (see the class docstring).

        Args:
            root: Folder holding the label folders.

        Raises:
            FileNotFoundError: ``root`` is not a folder.
        """
        seen = {}
        for path in audio_files(root):
            relative = os.path.relpath(path, root)
            folder, _, inside = relative.partition(os.sep)
            if not inside:
                yield Skipped(path, "not inside a label folder")
                continue
            label = map_label(folder)
            if label is None:
                if not self.options["any_label"]:
                    yield Skipped(path, f"unknown label folder '{folder}'")
                    continue
                label = folder.strip().lower()
            speaker = ""
            stem = os.path.splitext(os.path.basename(path))[0]
            if self._speaker_regex is not None:
                speaker = speaker_from_stem(self._speaker_regex, stem)
                if speaker is None:
                    yield Skipped(path, f"file name '{stem}' does not match --speaker-regex "
                                        f"'{self.options['speaker_regex']}'")
                    continue
            utterance_id = path_id(os.path.join(label, inside))
            if utterance_id in seen:
                yield Skipped(path, f"utterance id '{utterance_id}' already used by "
                                    f"{seen[utterance_id]}")
                continue
            seen[utterance_id] = path
            yield Utterance(utterance_id=utterance_id, corpus=self.name, audio_path=path,
                            speaker=speaker, emotion=label)


@register
class SpeechReader(Reader):
    """Unlabelled speech: every audio file below SRC_DIR (recursively), emotion ``""``.

    Word segments come from ``<stem>.TextGrid`` (or ``<stem>_words.TextGrid``) files found
    by the writer below SRC_DIR or ``--textgrids``; otherwise energy-based voiced regions.

    Args:
        speaker_regex: Regular expression giving the speaker from each file stem (see
            `speaker_from_stem`); files it does not match get speaker ``""``.

    Raises:
        ValueError: ``speaker_regex`` is not a valid regular expression.
    """

    name = "speech"
    description = "unlabelled speech: every audio file below SRC_DIR (TextGrids by stem)"

    def __init__(self, speaker_regex: Optional[str] = None):
        super().__init__(speaker_regex=speaker_regex)
        self._speaker_regex = compile_speaker_regex(speaker_regex)

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--speaker-regex``."""
        _add_speaker_regex_argument(parser, "gets speaker ''")

    def scan(self, root):
        """Yield one unlabelled utterance per audio file below ``root``.

        The utterance id is the path relative to ``root`` without extension, folders joined
        by ``__`` (``mfa/wav/cold_corpus.wav`` -> ``mfa__wav__cold_corpus``). Two files that
        differ only in extension would share an id; the second one is skipped.

        Args:
            root: Any folder of audio files.

        Raises:
            FileNotFoundError: ``root`` is not a folder.
        """
        seen = {}
        for path in audio_files(root):
            utterance_id = path_id(os.path.relpath(path, root))
            if utterance_id in seen:
                yield Skipped(path, f"utterance id '{utterance_id}' already used by "
                                    f"{seen[utterance_id]}")
                continue
            seen[utterance_id] = path
            speaker = ""
            if self._speaker_regex is not None:
                stem = os.path.splitext(os.path.basename(path))[0]
                speaker = speaker_from_stem(self._speaker_regex, stem) or ""
            yield Utterance(utterance_id=utterance_id, corpus=self.name, audio_path=path,
                            speaker=speaker)
