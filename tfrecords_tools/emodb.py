"""Berlin Database of Emotional Speech (EmoDB; Burkhardt et al., Interspeech 2005).

Release layout::

    emodb/wav/03a01Fa.wav        speaker 03, text a01, emotion letter F, version a
    emodb/silb/03a01Fa.silb      syllable onsets: "onset_seconds<TAB>syllable", "." ends
    emodb/labsilb/03a01Fa.labsilb  the same onsets in xlabel format (fallback)

Each syllable runs from its onset to the next onset; the final "." onset closes the last
syllable. When both syllable files are missing or empty the writer falls back to energy-
based voiced segments.
"""

from __future__ import annotations

import os
import re

from tfrecords_tools.reader import Reader, audio_files, register, require_dir
from tfrecords_tools.schema import Skipped, Utterance

#: Emotion letters of the German names (Sec. 2 of the release's documentation).
EMOTION_LETTERS = {
    "W": "anger",       # Ärger (Wut)
    "L": "boredom",     # Langeweile
    "E": "disgust",     # Ekel
    "A": "fear",        # Angst
    "F": "happiness",   # Freude
    "T": "sadness",     # Trauer
    "N": "neutral",
}
MALE_SPEAKERS = {"03", "10", "11", "12", "15"}
FEMALE_SPEAKERS = {"08", "09", "13", "14", "16"}

_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def read_syllable_onsets(path: str) -> list:
    """Syllable onsets from a ``.silb`` or ``.labsilb`` file.

    Args:
        path: The file; Latin-1 text. ``.silb``: ``onset<TAB>syllable`` per line.
            ``.labsilb``: xlabel header up to a ``#`` line, then ``onset -1 syllable ...``.

    Returns:
        ``[(onset_s, syllable), ...]`` in file order ("." marks the end of speech); empty
        when the file is empty.

    Raises:
        ValueError: A line's onset is not a number (message names file and line).
    """
    with open(path, encoding="latin-1") as f:
        lines = f.read().splitlines()
    if path.endswith(".labsilb"):
        if "#" not in [line.strip() for line in lines]:
            return []
        lines = lines[[line.strip() for line in lines].index("#") + 1:]
    onsets = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            onset = float(fields[0])
        except ValueError:
            raise ValueError(f"{path}:{number}: onset '{fields[0]}' is not a number") from None
        label = fields[-1] if path.endswith(".silb") else fields[2] if len(fields) > 2 else ""
        onsets.append((onset, label))
    return onsets


def syllable_segments(onsets: list) -> tuple:
    """Turn onsets into ``(segments, labels)``: syllable k spans onset k to onset k+1."""
    segments, labels = [], []
    for (start, label), (end, _) in zip(onsets[:-1], onsets[1:]):
        if label != "." and end > start:
            segments.append((start, end))
            labels.append(label)
    return segments, labels


@register
class EmoDBReader(Reader):
    """EmoDB: emotion from the file name's letter, speaker, gender, text id, syllables."""

    name = "emodb"
    description = "Berlin EmoDB (wav/, silb/, labsilb/)"

    def scan(self, root):
        """Yield one `Utterance` per ``wav/*.wav`` (or a `Skipped` naming the problem).

        Raises:
            FileNotFoundError: ``root`` has no ``wav/`` folder.
        """
        wav_dir = require_dir(os.path.join(root, "wav"), "EmoDB wav/ folder")
        for path in audio_files(wav_dir):
            stem = os.path.splitext(os.path.basename(path))[0]
            match = _NAME.match(stem)
            if not match:
                yield Skipped(path, "file name is not EmoDB's <speaker><text><emotion><version>")
                continue
            speaker, text_id, letter, _ = match.groups()
            if letter not in EMOTION_LETTERS:
                yield Skipped(path, f"unknown emotion letter '{letter}'")
                continue
            if speaker not in MALE_SPEAKERS | FEMALE_SPEAKERS:
                yield Skipped(path, f"unknown speaker '{speaker}'")
                continue
            utt = Utterance(
                utterance_id=stem, corpus=self.name, audio_path=path, speaker=speaker,
                session=speaker, gender="male" if speaker in MALE_SPEAKERS else "female",
                emotion=EMOTION_LETTERS[letter], text_id=text_id)
            try:
                self._add_syllables(root, stem, utt)
            except ValueError as err:
                yield Skipped(path, str(err))
                continue
            yield utt

    @staticmethod
    def _add_syllables(root: str, stem: str, utt: Utterance) -> None:
        for folder, ext in (("silb", ".silb"), ("labsilb", ".labsilb")):
            path = os.path.join(root, folder, stem + ext)
            if not os.path.isfile(path):
                continue
            segments, labels = syllable_segments(read_syllable_onsets(path))
            if segments:
                utt.segments, utt.segment_labels, utt.segment_kind = segments, labels, "syllable"
                return
