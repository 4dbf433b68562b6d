"""Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS).

Reference:
    Livingstone, S. R. & Russo, F. A. (2018). The Ryerson Audio-Visual Database of
    Emotional Speech and Song (RAVDESS): A dynamic, multimodal set of facial and vocal
    expressions in North American English. PLoS ONE 13(5): e0196391.

Release layout (the audio-only zips; SRC_DIR may also hold the ``Actor_NN`` folders
directly, as in the Kaggle copy)::

    Audio_Speech_Actors_01-24/Actor_01/03-01-05-02-01-01-01.wav
    Audio_Song_Actors_01-24/Actor_01/03-02-05-02-01-01-01.wav

File names are seven two-digit fields ``MM-VC-EE-II-SS-RR-AA``: modality (01 full-AV,
02 video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral,
02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity
(01 normal, 02 strong; neutral has no strong), statement (01 "Kids are talking by the
door", 02 "Dogs are sitting by the door"), repetition (01, 02) and actor (01-24; odd
actors are male, even actors female). Only ``.wav`` files are read; the video files of
the audio-visual zips are ignored.
"""

from __future__ import annotations

import os
import re

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

MODALITIES = {"01": "full-AV", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}
REPETITIONS = ("01", "02")
ACTORS = tuple(f"{n:02d}" for n in range(1, 25))

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_ACTOR_DIR = re.compile(r"^actor_(\d\d)$", re.IGNORECASE)


def parse_file_name(stem: str) -> dict:
    """Decode the seven fields of a RAVDESS file name.

    Args:
        stem: File name without folder and extension, e.g. ``"03-01-05-02-01-01-01"``.

    Returns:
        Dict with ``channel`` (``"speech"``/``"song"``), ``emotion`` (a word of
        `tfrecords_tools.schema.EMOTIONS`), ``intensity`` (``"normal"``/``"strong"``),
        ``statement`` (code), ``transcript``, ``repetition``, ``actor`` (``"01"``..
        ``"24"``) and ``gender``.

    Raises:
        ValueError: The name does not have seven two-digit fields, a field holds an
            unknown code, the file is not audio-only, or it is a strong neutral; the
            message is the one-line reason recorded in ``skipped.tsv``.
    """
    match = _NAME.match(stem)
    if not match:
        raise ValueError("file name is not RAVDESS's MM-VC-EE-II-SS-RR-AA (seven 2-digit codes)")
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality code '{modality}'")
    if modality != "03":
        raise ValueError(f"modality {modality} ({MODALITIES[modality]}) is not audio-only (03)")
    checks = ((channel, VOCAL_CHANNELS, "vocal channel"), (emotion, EMOTIONS, "emotion"),
              (intensity, INTENSITIES, "intensity"), (statement, STATEMENTS, "statement"),
              (repetition, REPETITIONS, "repetition"), (actor, ACTORS, "actor"))
    for code, known, field in checks:
        if code not in known:
            raise ValueError(f"unknown {field} code '{code}'")
    if emotion == "01" and intensity == "02":
        raise ValueError("intensity 02 (strong) does not exist for emotion 01 (neutral)")
    return {
        "channel": VOCAL_CHANNELS[channel],
        "emotion": EMOTIONS[emotion],
        "intensity": INTENSITIES[intensity],
        "statement": statement,
        "transcript": STATEMENTS[statement],
        "repetition": repetition,
        "actor": actor,
        "gender": "male" if int(actor) % 2 else "female",
    }


@register
class RavdessReader(Reader):
    """RAVDESS audio: emotion, intensity, statement and actor from the file name.

    Speaker and session are the actor (``"01"``..``"24"``); gender follows the actor's
    parity. Song files are counted in ``stats.json`` under ``filtered["song"]`` unless
    ``include_song`` is set. A second copy of a file name already read (the Kaggle copy
    ships every actor twice) is counted under ``filtered["duplicate"]``.

    Args:
        include_song: Also convert the sung utterances (vocal channel 02).
        **options: Passed to `tfrecords_tools.reader.Reader`.

    Reference:
        Livingstone & Russo (2018), PLoS ONE 13(5): e0196391, Table 1 (file naming).
    """

    name = "ravdess"
    description = "RAVDESS audio (Audio_Speech_Actors_01-24/Actor_NN/*.wav or Actor_NN/)"

    def __init__(self, include_song: bool = False, **options):
        super().__init__(include_song=include_song, **options)
        self.include_song = include_song

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--include-song``."""
        parser.add_argument("--include-song", action="store_true",
                            help="also convert the song files (default: speech only)")

    def scan(self, root):
        """Yield an `Utterance` per audio-only ``.wav`` under ``root``, or a `Skipped`.

        Args:
            root: Folder holding ``Actor_NN`` folders, directly or one level down.

        Raises:
            FileNotFoundError: ``root`` is not a folder or holds no ``Actor_NN`` folder.
        """
        paths = audio_files(root, (".wav",))
        if not any(_ACTOR_DIR.match(d) for _, dirs, _ in os.walk(root) for d in dirs):
            raise FileNotFoundError(f"{root}: no RAVDESS Actor_NN folder found")
        for path in paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            folder = os.path.basename(os.path.dirname(path))
            try:
                fields = parse_file_name(stem)
            except ValueError as err:
                yield Skipped(path, str(err))
                continue
            folder_actor = _ACTOR_DIR.match(folder)
            if not folder_actor:
                yield Skipped(path, f"not inside an Actor_NN folder (found '{folder}')")
                continue
            if folder_actor.group(1) != fields["actor"]:
                yield Skipped(path, f"actor {fields['actor']} in the file name but the "
                                    f"file is in folder {folder}")
                continue
            if fields["channel"] == "song" and not self.include_song:
                self.filter_out("song")
                continue
            if self.seen_before(stem):
                continue
            actor = fields["actor"]
            yield Utterance(
                utterance_id=stem, corpus=self.name, audio_path=path, speaker=actor,
                session=actor, gender=fields["gender"], emotion=fields["emotion"],
                transcript=fields["transcript"], text_id=fields["statement"],
                intensity=fields["intensity"])
