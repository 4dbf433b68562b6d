"""Crowd-sourced Emotional Multimodal Actors Dataset (CREMA-D).

Reference:
    Cao, H., Cooper, D. G., Keutmann, M. K., Gur, R. C., Nenkova, A. & Verma, R. (2014).
    CREMA-D: Crowd-sourced emotional multimodal actors dataset. IEEE Transactions on
    Affective Computing 5(4), 377-390.

Release layout (SRC_DIR may also be the ``AudioWAV`` folder itself)::

    CREMA-D/AudioWAV/1001_DFA_ANG_XX.wav
    CREMA-D/VideoDemographics.csv      ActorID,Age,Sex,Race,Ethnicity

A file name is ``<actor>_<sentence>_<emotion>_<level>``: actor 1001-1091; one of twelve
sentence codes (`SENTENCES`); emotion ANG, DIS, FEA, HAP, NEU or SAD; level LO, MD, HI
or XX (unspecified). The emotion is the one the actor was asked to portray, not the
crowd-sourced perceived label. Speaker sex comes from ``VideoDemographics.csv`` when it
is found (in SRC_DIR or its parent) or given; otherwise gender is left empty.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Optional

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
FIRST_ACTOR, LAST_ACTOR = 1001, 1091
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

_NAME = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{2})$")


def parse_file_name(stem: str) -> dict:
    """Decode ``<actor>_<sentence>_<emotion>_<level>``.

    Args:
        stem: File name without folder and extension, e.g. ``"1001_DFA_ANG_XX"``.

    Returns:
        Dict with ``speaker`` (``"1001"``..``"1091"``), ``text_id`` (sentence code),
        ``transcript``, ``emotion`` (a word of `tfrecords_tools.schema.EMOTIONS`) and
        ``intensity`` (``"low"``, ``"medium"``, ``"high"`` or ``"unspecified"``).

    Raises:
        ValueError: The name has another shape or holds an unknown actor, sentence,
            emotion or level code; the message is the one-line reason recorded in
            ``skipped.tsv``.
    """
    match = _NAME.match(stem)
    if not match:
        raise ValueError("file name is not CREMA-D's <actor>_<sentence>_<emotion>_<level>")
    actor, sentence, emotion, level = match.groups()
    sentence, emotion, level = sentence.upper(), emotion.upper(), level.upper()
    if not FIRST_ACTOR <= int(actor) <= LAST_ACTOR:
        raise ValueError(f"unknown actor '{actor}' (expected {FIRST_ACTOR}-{LAST_ACTOR})")
    if sentence not in SENTENCES:
        raise ValueError(f"unknown sentence code '{sentence}'")
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion code '{emotion}'")
    if level not in LEVELS:
        raise ValueError(f"unknown emotion level code '{level}'")
    return {"speaker": actor, "text_id": sentence, "transcript": SENTENCES[sentence],
            "emotion": EMOTIONS[emotion], "intensity": LEVELS[level]}


def read_demographics(path: str) -> dict:
    """Speaker sex from the release's ``VideoDemographics.csv``.

    Args:
        path: CSV with a header naming at least ``ActorID`` and ``Sex`` (``Male`` or
            ``Female``; other values give ``""``).

    Returns:
        Dict from actor id (``"1001"``) to ``"male"``, ``"female"`` or ``""``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The header lacks ``ActorID`` or ``Sex``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such CREMA-D demographics file")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.DictReader(f)
        columns = [c.strip() for c in rows.fieldnames or []]
        missing = [c for c in ("ActorID", "Sex") if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                             f"(found {', '.join(columns) or 'none'})")
        sexes = {}
        for row in rows:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            sex = row["Sex"].lower()
            sexes[row["ActorID"]] = sex if sex in ("male", "female") else ""
    return sexes


@register
class CremaDReader(Reader):
    """CREMA-D: actor, sentence, portrayed emotion and level from the file name.

    Speaker and session are the actor id; ``text_id`` is the sentence code and the
    transcript its sentence; intensity is the level. A second copy of a file name
    already read is counted under ``filtered["duplicate"]``.

    Args:
        demographics: Path of ``VideoDemographics.csv``; ``None`` looks for it in the
            corpus folder and its parent and leaves gender empty when it is not there.
        **options: Passed to `tfrecords_tools.reader.Reader`.

    Reference:
        Cao et al. (2014), IEEE Trans. Affective Computing 5(4), 377-390.
    """

    name = "cremad"
    description = "CREMA-D (AudioWAV/1001_DFA_ANG_XX.wav, VideoDemographics.csv)"

    def __init__(self, demographics: Optional[str] = None, **options):
        super().__init__(demographics=demographics, **options)
        self.demographics = demographics

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--demographics``."""
        parser.add_argument("--demographics", default=None, metavar="PATH",
                            help=f"{DEMOGRAPHICS_FILE} giving each actor's sex (default: "
                            "looked for in SRC_DIR and its parent; gender empty if absent)")

    def _demographics_path(self, root: str) -> Optional[str]:
        if self.demographics is not None:
            return self.demographics
        for folder in (root, os.path.dirname(os.path.abspath(root))):
            candidate = os.path.join(folder, DEMOGRAPHICS_FILE)
            if os.path.isfile(candidate):
                return candidate
        return None

    def scan(self, root):
        """Yield an `Utterance` per ``.wav`` in ``root/AudioWAV`` (else ``root``), or a `Skipped`.

        Args:
            root: The release folder, or its ``AudioWAV`` folder.

        Raises:
            FileNotFoundError: ``root`` is not a folder, or ``demographics`` was given
                and does not exist.
            ValueError: The demographics file lacks the ``ActorID`` or ``Sex`` column.
        """
        wav_dir = os.path.join(root, "AudioWAV")
        paths = audio_files(wav_dir if os.path.isdir(wav_dir) else root, (".wav",))
        demographics_path = self._demographics_path(root)
        sexes = read_demographics(demographics_path) if demographics_path else {}
        for path in paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            try:
                fields = parse_file_name(stem)
            except ValueError as err:
                yield Skipped(path, str(err))
                continue
            utterance_id = stem.upper()
            if self.seen_before(utterance_id):
                continue
            yield Utterance(
                utterance_id=utterance_id, corpus=self.name, audio_path=path,
                speaker=fields["speaker"], session=fields["speaker"],
                gender=sexes.get(fields["speaker"], ""), emotion=fields["emotion"],
                transcript=fields["transcript"], text_id=fields["text_id"],
                intensity=fields["intensity"])
