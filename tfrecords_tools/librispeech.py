"""LibriSpeech read English speech (Panayotov et al., "LibriSpeech: an ASR corpus based on
public domain audio books", ICASSP 2015); unlabelled for emotion.

Release layout::

    LibriSpeech/SPEAKERS.TXT                    "ID | SEX | SUBSET | MINUTES | NAME"
    LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac      16 kHz mono FLAC
    LibriSpeech/test-clean/1089/134686/1089-134686.trans.txt      "<utt id> TRANSCRIPT"

SRC_DIR may be the release folder, a subset folder (``test-clean``) or a speaker folder:
every ``<speaker>-<chapter>-<utterance>.flac`` below it is read. ``SPEAKERS.TXT`` (for the
gender) is looked up in SRC_DIR and up to two parent folders. Records get speaker, session
(the chapter) and transcript; LibriSpeech has no emotion labels.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_SEX = {"F": "female", "M": "male"}


def read_transcripts(path: str) -> dict:
    """Transcripts of one chapter from a ``<speaker>-<chapter>.trans.txt`` file.

    Args:
        path: The file; one ``<utterance id> <TRANSCRIPT>`` per line, UTF-8.

    Returns:
        Dict from utterance id (``"1089-134686-0000"``) to its upper-case transcript; empty
        when the file does not exist.
    """
    if not os.path.isfile(path):
        return {}
    transcripts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.strip().split(maxsplit=1)
            if fields:
                transcripts[fields[0]] = fields[1] if len(fields) > 1 else ""
    return transcripts


def read_speakers(path: str) -> dict:
    """Speaker genders from LibriSpeech's ``SPEAKERS.TXT``.

    Args:
        path: The file; ``;`` starts a comment line, other lines are
            ``ID | SEX | SUBSET | MINUTES | NAME`` with SEX ``F`` or ``M``.

    Returns:
        Dict from speaker id (``"1089"``) to ``"female"`` or ``"male"``; lines with another
        SEX are left out.
    """
    genders = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|")]
            if len(fields) >= 2 and fields[1].upper() in _SEX:
                genders[fields[0]] = _SEX[fields[1].upper()]
    return genders


def find_speakers_file(root: str, levels: int = 2) -> Optional[str]:
    """``SPEAKERS.TXT`` in ``root`` or one of its first ``levels`` parent folders, if any."""
    folder = os.path.abspath(root)
    for _ in range(levels + 1):
        path = os.path.join(folder, "SPEAKERS.TXT")
        if os.path.isfile(path):
            return path
        folder = os.path.dirname(folder)
    return None


@register
class LibriSpeechReader(Reader):
    """LibriSpeech: speaker, chapter (as session), transcript and gender; no emotion."""

    name = "librispeech"
    description = "LibriSpeech (release, subset or speaker folder; unlabelled)"

    def scan(self, root):
        """Yield one unlabelled utterance per ``<speaker>-<chapter>-<utterance>.flac``.

        An utterance missing from its chapter's ``trans.txt`` gets transcript ``""``; a
        speaker missing from ``SPEAKERS.TXT`` (or without that file) gets gender ``""``.

        Args:
            root: The ``LibriSpeech`` folder, a subset folder or a speaker folder.

        Raises:
            FileNotFoundError: ``root`` is not a folder or holds no ``*.flac`` file.
        """
        paths = audio_files(root, (".flac",))
        if not paths:
            raise FileNotFoundError(f"{root}: no LibriSpeech *.flac files below it")
        speakers_file = find_speakers_file(root)
        genders = read_speakers(speakers_file) if speakers_file else {}
        chapters = {}
        for path in paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            match = _NAME.match(stem)
            if not match:
                yield Skipped(path, "file name is not LibriSpeech's "
                                    "<speaker>-<chapter>-<utterance>.flac")
                continue
            speaker, chapter, _ = match.groups()
            trans = os.path.join(os.path.dirname(path), f"{speaker}-{chapter}.trans.txt")
            if trans not in chapters:
                chapters[trans] = read_transcripts(trans)
            yield Utterance(utterance_id=stem, corpus=self.name, audio_path=path,
                            speaker=speaker, session=chapter, gender=genders.get(speaker, ""),
                            transcript=chapters[trans].get(stem, ""))
