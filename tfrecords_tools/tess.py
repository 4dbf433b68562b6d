"""Toronto Emotional Speech Set (TESS).

Reference:
    Dupuis, K. & Pichora-Fuller, M. K. (2010). Toronto Emotional Speech Set (TESS).
    University of Toronto, Psychology Department. https://doi.org/10.5683/SP2/E8H2MF

Release layout (one folder per talker and emotion; the case of folder and file names is
inconsistent in the release, e.g. ``OAF_Fear``, ``YAF_pleasant_surprised``)::

    TESS Toronto emotional speech set data/OAF_angry/OAF_back_angry.wav
    TESS Toronto emotional speech set data/OAF_Pleasant_surprise/OAF_back_ps.wav

Two female talkers, OAF (older adult female, aged 64) and YAF (younger adult female,
aged 26), say "Say the word <word>" for 200 target words in seven emotions: angry,
disgust, fear, happy, neutral, pleasant surprise (file suffix ``ps``) and sad. Labels
are read from the file name, ``<TALKER>_<word>_<emotion>``, case-insensitively.
"""

from __future__ import annotations

import os
import re

from tfrecords_tools.reader import Reader, audio_files, register
from tfrecords_tools.schema import Skipped, Utterance

#: File-name emotion suffixes (lowercased) and the spellings of the folder names.
EMOTIONS = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "neutral": "neutral",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
    "sad": "sadness",
}
#: Talker code -> age in years; both talkers are female.
TALKERS = {"OAF": 64, "YAF": 26}

_WORD = re.compile(r"^[a-z']+$")


def parse_file_name(stem: str) -> dict:
    """Decode ``<TALKER>_<word>_<emotion>`` (any case) into talker, word and emotion.

    Args:
        stem: File name without folder and extension, e.g. ``"OAF_back_ps"``.

    Returns:
        Dict with ``speaker`` (``"OAF"``/``"YAF"``), ``word`` (lowercase) and
        ``emotion`` (a word of `tfrecords_tools.schema.EMOTIONS`).

    Raises:
        ValueError: The name has another shape, or names an unknown talker or emotion;
            the message is the one-line reason recorded in ``skipped.tsv``.
    """
    parts = stem.lower().split("_")
    if len(parts) < 3:
        raise ValueError("file name is not TESS's <TALKER>_<word>_<emotion>")
    speaker = parts[0].upper()
    if len(parts) >= 4 and "_".join(parts[-2:]) in EMOTIONS:
        code, word_parts = "_".join(parts[-2:]), parts[1:-2]
    else:
        code, word_parts = parts[-1], parts[1:-1]
    word = "_".join(word_parts)
    if not _WORD.match(word):
        raise ValueError(f"file name is not TESS's <TALKER>_<word>_<emotion> (word '{word}')")
    if speaker not in TALKERS:
        raise ValueError(f"unknown talker '{stem.split('_')[0]}' (expected OAF or YAF)")
    if code not in EMOTIONS:
        raise ValueError(f"unknown emotion '{code}'")
    return {"speaker": speaker, "word": word, "emotion": EMOTIONS[code]}


@register
class TessReader(Reader):
    """TESS: talker, target word and emotion from the file name.

    Records are named ``<TALKER>_<word>_<emotion word>`` (``OAF_back_surprise`` for
    ``OAF_back_ps.wav``) whatever the case of the file name; speaker and session are
    the talker, gender is ``"female"``, ``text_id`` the word and the transcript
    ``"Say the word <word>"``. A second copy of an utterance already read (the Kaggle
    copy ships the set twice) is counted under ``filtered["duplicate"]``.

    Reference:
        Dupuis & Pichora-Fuller (2010), Toronto Emotional Speech Set, University of
        Toronto.
    """

    name = "tess"
    description = "Toronto Emotional Speech Set (OAF_angry/OAF_back_angry.wav, ...)"

    def scan(self, root):
        """Yield an `Utterance` per ``.wav`` under ``root``, or a `Skipped`.

        Args:
            root: The unpacked release (any depth of folders above the wavs).

        Raises:
            FileNotFoundError: ``root`` is not a folder.
        """
        for path in audio_files(root, (".wav",)):
            stem = os.path.splitext(os.path.basename(path))[0]
            try:
                fields = parse_file_name(stem)
            except ValueError as err:
                yield Skipped(path, str(err))
                continue
            utterance_id = f"{fields['speaker']}_{fields['word']}_{fields['emotion']}"
            if self.seen_before(utterance_id):
                continue
            yield Utterance(
                utterance_id=utterance_id, corpus=self.name, audio_path=path,
                speaker=fields["speaker"], session=fields["speaker"], gender="female",
                emotion=fields["emotion"], text_id=fields["word"],
                transcript=f"Say the word {fields['word']}")
