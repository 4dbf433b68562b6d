"""LJ Speech, one female reader of non-fiction books (Ito & Johnson, "The LJ Speech
Dataset", 2017); unlabelled for emotion.

Release layout::

    LJSpeech-1.1/metadata.csv        "LJ001-0001|raw transcript|normalized transcript"
    LJSpeech-1.1/wavs/LJ001-0001.wav 22.05 kHz mono 16-bit (the writer resamples to 16 kHz)

``metadata.csv`` has no header and no quoting (transcripts contain ``"`` characters), so it
is read with quoting disabled. The transcript stored is the normalized one (numbers and
abbreviations spelled out), or the raw one when the normalized column is empty. A wav under
``wavs/`` that metadata.csv does not list is still converted, with transcript ``""``.
"""

from __future__ import annotations

import csv
import os

from tfrecords_tools.reader import Reader, register, require_dir
from tfrecords_tools.schema import Skipped, Utterance

SPEAKER = "LJ"
GENDER = "female"


def read_metadata(path: str) -> list:
    """Rows of LJSpeech's ``metadata.csv``.

    Args:
        path: The file; UTF-8, ``|``-separated ``id|transcript|normalized transcript``, no
            header, no quoting.

    Returns:
        ``[(line_number, id, transcript), ...]`` in file order, the transcript being the
        normalized one, else the raw one, else ``""``; blank lines are left out.
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        lines = csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)
        for row in lines:
            if not row or not row[0].strip():
                continue
            raw = row[1].strip() if len(row) > 1 else ""
            normalized = row[2].strip() if len(row) > 2 else ""
            rows.append((lines.line_num, row[0].strip(), normalized or raw))
    return rows


@register
class LJSpeechReader(Reader):
    """LJ Speech: speaker ``"LJ"``, gender ``"female"``, normalized transcript; no emotion."""

    name = "ljspeech"
    description = "LJ Speech (metadata.csv + wavs/; unlabelled)"

    def scan(self, root):
        """Yield one unlabelled utterance per wav, transcribed from ``metadata.csv``.

        A metadata row whose wav is missing is skipped (the expected wav path is reported);
        a row repeating an earlier id is skipped too.

        Args:
            root: The ``LJSpeech-1.1`` folder.

        Raises:
            FileNotFoundError: ``root/metadata.csv`` or ``root/wavs`` is missing.
        """
        metadata = os.path.join(root, "metadata.csv")
        if not os.path.isfile(metadata):
            raise FileNotFoundError(f"{metadata}: missing LJSpeech metadata.csv")
        wav_dir = require_dir(os.path.join(root, "wavs"), "LJSpeech wavs/ folder")
        listed = {}
        for line, utterance_id, transcript in read_metadata(metadata):
            wav = os.path.join(wav_dir, utterance_id + ".wav")
            if utterance_id in listed:
                yield Skipped(metadata, f"line {line}: '{utterance_id}' already listed on "
                                        f"line {listed[utterance_id]}")
                continue
            listed[utterance_id] = line
            if not os.path.isfile(wav):
                yield Skipped(wav, "listed in metadata.csv but missing")
                continue
            yield self._utterance(utterance_id, wav, transcript)
        for name in sorted(os.listdir(wav_dir)):
            utterance_id, ext = os.path.splitext(name)
            if ext.lower() == ".wav" and not name.startswith(".") and utterance_id not in listed:
                yield self._utterance(utterance_id, os.path.join(wav_dir, name), "")

    def _utterance(self, utterance_id: str, wav: str, transcript: str) -> Utterance:
        return Utterance(utterance_id=utterance_id, corpus=self.name, audio_path=wav,
                         speaker=SPEAKER, gender=GENDER, transcript=transcript)
