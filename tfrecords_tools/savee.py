"""Surrey Audio-Visual Expressed Emotion database (SAVEE).

Reference:
    Haq, S. & Jackson, P. J. B. (2009). Speaker-dependent audio-visual emotion
    recognition. Proc. AVSP 2009, 53-58; Haq, S. & Jackson, P. J. B. (2010). Multimodal
    emotion recognition. In W. Wang (ed.), Machine Audition: Principles, Algorithms and
    Systems, IGI Global, 398-423. University of Surrey.

Release layouts (both accepted, also mixed)::

    AudioData/DC/a01.wav      folder per speaker, as released by the University of Surrey
    ALL/DC_a01.wav            flat, speaker as prefix (the Kaggle copy)

Four male speakers (DC, JE, JK, KL) read TIMIT sentences in seven emotions, named by a
prefix: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise,
followed by the sentence number (01-15, neutral 01-30). The sentence texts are not in
the file names, so records carry ``text_id`` (e.g. ``"sa03"``) but no transcript.
"""

from __future__ import annotations

import os
import re

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

#: Emotion prefixes; the letters of a name are read whole, so ``sa``/``su`` never
#: fall back to a one-letter prefix.
EMOTION_PREFIXES = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}
SPEAKERS = ("DC", "JE", "JK", "KL")

_FLAT = re.compile(r"^([A-Za-z]{2})_([A-Za-z]+)(\d+)$")
_IN_FOLDER = re.compile(r"^([A-Za-z]+)(\d+)$")


def parse_file_name(stem: str, folder: str = "") -> dict:
    """Decode a SAVEE file name, flat (``DC_sa03``) or inside a speaker folder (``sa03``).

    Args:
        stem: File name without folder and extension.
        folder: Name of the folder holding the file; the speaker when the name has no
            speaker prefix.

    Returns:
        Dict with ``speaker`` (``"DC"``, ``"JE"``, ``"JK"`` or ``"KL"``), ``text_id``
        (lowercase prefix and the number as written, e.g. ``"sa03"``) and ``emotion``
        (a word of `tfrecords_tools.schema.EMOTIONS`).

    Raises:
        ValueError: The name has another shape, or names an unknown speaker or emotion
            prefix; the message is the one-line reason recorded in ``skipped.tsv``.
    """
    flat, in_folder = _FLAT.match(stem), _IN_FOLDER.match(stem)
    if flat:
        speaker, prefix, number = flat.groups()
        speaker = speaker.upper()
    elif in_folder:
        prefix, number = in_folder.groups()
        speaker = folder.upper()
        if speaker not in SPEAKERS:
            raise ValueError(f"name has no speaker prefix and folder '{folder}' is not a "
                             f"SAVEE speaker ({', '.join(SPEAKERS)})")
    else:
        raise ValueError("file name is not SAVEE's <prefix><number> or "
                         "<speaker>_<prefix><number>")
    if speaker not in SPEAKERS:
        raise ValueError(f"unknown speaker '{speaker}'")
    prefix = prefix.lower()
    if prefix not in EMOTION_PREFIXES:
        raise ValueError(f"unknown emotion prefix '{prefix}'")
    return {"speaker": speaker, "text_id": prefix + number, "emotion": EMOTION_PREFIXES[prefix]}


@register
class SaveeReader(Reader):
    """SAVEE: speaker, emotion and sentence id from folder and file name.

    Records are named ``<speaker>_<text_id>`` (``DC_sa03``); speaker and session are the
    speaker, gender is ``"male"``. When both layouts are present the second copy of an
    utterance is counted under ``filtered["duplicate"]``.

    Reference:
        Haq & Jackson (2009), Proc. AVSP; Haq & Jackson (2010), Machine Audition,
        University of Surrey.
    """

    name = "savee"
    description = "SAVEE (AudioData/DC/a01.wav or flat DC_a01.wav)"

    def scan(self, root):
        """Yield an `Utterance` per ``.wav`` under ``root``, or a `Skipped`.

        Args:
            root: The release folder (``AudioData`` above it, or the flat folder).

        Raises:
            FileNotFoundError: ``root`` is not a folder.
        """
        for path in audio_files(root, (".wav",)):
            stem = os.path.splitext(os.path.basename(path))[0]
            try:
                fields = parse_file_name(stem, os.path.basename(os.path.dirname(path)))
            except ValueError as err:
                yield Skipped(path, str(err))
                continue
            utterance_id = f"{fields['speaker']}_{fields['text_id']}"
            if self.seen_before(utterance_id):
                continue
            yield Utterance(
                utterance_id=utterance_id, corpus=self.name, audio_path=path,
                speaker=fields["speaker"], session=fields["speaker"], gender="male",
                emotion=fields["emotion"], text_id=fields["text_id"])
