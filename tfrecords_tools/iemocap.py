"""IEMOCAP, the Interactive Emotional Dyadic Motion Capture database.

Reference: Busso et al., "IEMOCAP: interactive emotional dyadic motion capture database",
Language Resources and Evaluation 42(4), 2008.

Release layout (``SRC_DIR`` is ``IEMOCAP_full_release/`` or a folder holding it)::

    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt     labels of every turn of a dialog
    Session1/dialog/transcriptions/Ses01F_impro01.txt    "<turn> [start-end]: text" lines
    Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav          one turn
    Session1/sentences/ForcedAlignment/Ses01F_impro01/Ses01F_impro01_F000.wdseg  its words

A turn name is ``Ses<NN><F|M>_<dialog>_<F|M><NNN>``: the letter after ``Ses<NN>`` is the
gender of the actor wearing the markers, the letter of the final part the gender of the
actor speaking this turn. Each session has one female and one male actor, so the speaker
is ``Ses<NN>`` plus that final letter (``Ses01F_impro01_M000`` -> ``"Ses01M"``).

An EmoEvaluation file is a header comment, then one block per turn separated by blank
lines (fields tab-separated)::

    [6.2901 - 8.2357]  Ses01F_impro01_F000  neu  [2.5000, 2.5000, 2.5000]
    C-E2:  Neutral;  ()
    A-E3:  val 3; act 2; dom  2;  ()

The header gives the majority label (``xxx``: the annotators did not agree) and the mean
valence, activation and dominance (1-5 scale, in that order); ``C-`` lines give each
evaluator's categories, ``A-`` lines each evaluator's dimensional ratings.

Word alignments are Sphinx-3 ``.wdseg`` files with 10 ms frames. Turns without one get
their segments from a TextGrid or from energy-based voiced regions (see
`tfrecords_tools.writer`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from tfrecords_tools.reader import Reader, audio_files, register, require_dir
from tfrecords_tools.schema import Skipped, Utterance

#: Name of the release folder that ``SRC_DIR`` may contain.
RELEASE_DIR = "IEMOCAP_full_release"

#: Majority-label codes of the EmoEvaluation turn headers; "" for "xxx" (no majority).
EMOTION_CODES = {
    "neu": "neutral",
    "ang": "anger",
    "hap": "happiness",
    "exc": "excitement",
    "sad": "sadness",
    "fru": "frustration",
    "fea": "fear",
    "sur": "surprise",
    "dis": "disgust",
    "oth": "other",
    "xxx": "",
}

#: Category names of the ``C-`` evaluator lines (lowercased), as schema words.
VOTE_NAMES = {
    "neutral": "neutral",
    "anger": "anger",
    "happiness": "happiness",
    "excited": "excitement",
    "sadness": "sadness",
    "frustration": "frustration",
    "fear": "fear",
    "surprise": "surprise",
    "disgust": "disgust",
    "other": "other",
}

#: The labels kept by ``--four-class``, the usual IEMOCAP protocol.
FOUR_CLASSES = frozenset({"neutral", "anger", "sadness", "happiness"})

#: Sphinx-3 alignment frames per second (10 ms frames).
FRAMES_PER_SECOND = 100

_SESSION_DIR = re.compile(r"^Session(\d+)$")
_TURN = re.compile(r"^(Ses\d\d)[FM]_.+_([FM])[^_]*$")
_HEADER = re.compile(r"^\[[^\]]*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
_TURN_IN_TEXT = re.compile(r"\bSes\d\d[FM]_\S+")
_EVALUATOR_LINE = re.compile(r"^([AC])-([^:\s]+):(.*)$")
_TRANSCRIPT = re.compile(r"^(Ses\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]:\s*(.*?)\s*$")
_NOISE_TOKEN = re.compile(r"^(<.*>|\+\+.*\+\+)$")
_VARIANT = re.compile(r"\(\d+\)$")


@dataclasses.dataclass
class TurnEvaluation:
    """One turn's block of an EmoEvaluation file.

    Attributes:
        code: The majority-label code of the header, lowercase (a key of `EMOTION_CODES`
            unless the file holds an unknown one).
        valence, activation, dominance: Mean ratings from the header, 1-5 scale.
        annotators: Evaluator ids of the valid ``A-`` lines (``"A-E3:"`` -> ``"E3"``).
        valence_ratings, activation_ratings, dominance_ratings: One rating per annotator.
        votes: Categories of every ``C-`` line as schema words, in file order (an
            evaluator naming several categories contributes several votes).
    """

    code: str
    valence: float
    activation: float
    dominance: float
    annotators: list = dataclasses.field(default_factory=list)
    valence_ratings: list = dataclasses.field(default_factory=list)
    activation_ratings: list = dataclasses.field(default_factory=list)
    dominance_ratings: list = dataclasses.field(default_factory=list)
    votes: list = dataclasses.field(default_factory=list)


def _finite_floats(texts) -> list:
    """Parse every text as a finite float; raises ValueError otherwise."""
    values = [float(t) for t in texts]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"not finite: {values}")
    return values


def parse_ratings(text: str):
    """The ``(valence, activation, dominance)`` of one ``A-`` line's body.

    Args:
        text: What follows ``A-<evaluator>:``, e.g. ``"\\tval 3; act 2; dom  2;\\t()"``
            (any spacing; the parenthesised comment is ignored).

    Returns:
        Three floats (1-5 scale), or ``None`` when a rating is missing or not a number.
    """
    body = text.split("(", 1)[0]
    found = []
    for key in ("val", "act", "dom"):
        match = re.search(rf"\b{key}\s+([^;\s]+)", body)
        if not match:
            return None
        found.append(match.group(1))
    try:
        return tuple(_finite_floats(found))
    except ValueError:
        return None


def parse_votes(text: str) -> list:
    """The categories of one ``C-`` line's body as schema words.

    Args:
        text: What follows ``C-<evaluator>:``, e.g. ``"\\tFrustration; Anger;\\t()"``.
            Categories are separated by ``;``; the parenthesised comment is ignored. Only
            the first word of a category counts (``"Other: annoyed"`` -> ``"other"``).

    Returns:
        Schema words in line order; names not in `VOTE_NAMES` are left out.
    """
    votes = []
    for category in text.split("(", 1)[0].split(";"):
        words = re.split(r"[\s:]+", category.strip().lower())
        if words[0] in VOTE_NAMES:
            votes.append(VOTE_NAMES[words[0]])
    return votes


def read_emo_evaluation(path: str) -> tuple:
    """Parse a ``dialog/EmoEvaluation/<dialog>.txt`` file.

    Lines that are neither a turn header nor an evaluator line (the ``%`` header comment,
    blank lines, other notes) are ignored, as are ``A-`` lines with a missing or malformed
    rating: a bad annotation never stops the conversion.

    Args:
        path: The file.

    Returns:
        ``(evaluations, problems)``: dict from turn name to `TurnEvaluation`, and dict
        from turn name to a ``"<path>:<line>: ..."`` message for turns whose header line
        is malformed (their evaluator lines are dropped).
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    evaluations, problems, current = {}, {}, None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("["):
            current = None
            match = _HEADER.match(text)
            try:
                if not match:
                    raise ValueError
                turn, code, means = match.groups()
                valence, activation, dominance = _finite_floats(means.split(","))
            except ValueError:
                named = _TURN_IN_TEXT.search(text)
                if named:
                    problems.setdefault(named.group(0), f"{path}:{number}: malformed turn "
                                        f"header '{' '.join(text.split())}'")
                continue
            if turn not in evaluations:
                current = evaluations[turn] = TurnEvaluation(code.lower(), valence,
                                                             activation, dominance)
            continue
        match = _EVALUATOR_LINE.match(text)
        if current is None or not match:
            continue
        kind, evaluator, body = match.groups()
        if kind == "C":
            current.votes.extend(parse_votes(body))
            continue
        ratings = parse_ratings(body)
        if ratings is not None:
            current.annotators.append(evaluator)
            current.valence_ratings.append(ratings[0])
            current.activation_ratings.append(ratings[1])
            current.dominance_ratings.append(ratings[2])
    return evaluations, problems


def read_transcriptions(path: str) -> dict:
    """Parse a ``dialog/transcriptions/<dialog>.txt`` file.

    Args:
        path: The file; lines ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``.
            Lines of any other shape are ignored.

    Returns:
        Dict from turn name to its text (surrounding spaces removed).
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        matches = (_TRANSCRIPT.match(line.strip()) for line in f)
        return {m.group(1): m.group(2) for m in matches if m}


def read_wdseg(path: str) -> tuple:
    """Word segments from a Sphinx-3 ``.wdseg`` forced alignment.

    The file holds a header ``SFrm  EFrm    SegAScr Word``, one right-aligned line per
    token, and a final ``Total score: <int>`` line. Frames are 10 ms: a token spans
    ``SFrm / 100`` to ``(EFrm + 1) / 100`` seconds from the start of the turn's wav.
    Silence and noise tokens (``<s>``, ``</s>``, ``<sil>``, any ``<...>`` or ``++...++``)
    are dropped and pronunciation variants lose their number (``WHAT(2)`` -> ``WHAT``).

    Args:
        path: The file.

    Returns:
        ``(segments, labels)``: ``[(start_s, end_s), ...]`` in file order and the words
        as written (upper case); both empty when the file holds no word.

    Raises:
        ValueError: A line is not ``SFrm EFrm SegAScr Word`` with integer frames and
            score, or ends before it starts; the message names file and line.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    segments, labels = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0] == "SFrm" or fields[:2] == ["Total", "score:"]:
            continue
        try:
            if len(fields) != 4:
                raise ValueError
            first, last, _ = (int(v) for v in fields[:3])
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'SFrm EFrm SegAScr Word', got "
                             f"'{' '.join(fields)}'") from None
        if first < 0 or last < first:
            raise ValueError(f"{path}:{number}: frames {first}-{last} do not form a segment")
        if _NOISE_TOKEN.match(fields[3]):
            continue
        segments.append((first / FRAMES_PER_SECOND, (last + 1) / FRAMES_PER_SECOND))
        labels.append(_VARIANT.sub("", fields[3]))
    return segments, labels


def session_folders(root: str) -> list:
    """The ``SessionN`` folders of a release, in session order.

    Args:
        root: ``IEMOCAP_full_release/`` or a folder containing it.

    Returns:
        Paths of the ``Session<N>`` folders found.

    Raises:
        FileNotFoundError: No ``Session<N>`` folder exists; the message names the folder
            searched.
    """
    nested = os.path.join(root, RELEASE_DIR)
    base = nested if os.path.isdir(nested) else root
    if not os.path.isdir(base):
        raise FileNotFoundError(f"{root}: no such corpus folder")
    found = []
    for name in os.listdir(base):
        match = _SESSION_DIR.match(name)
        if match and os.path.isdir(os.path.join(base, name)):
            found.append((int(match.group(1)), name))
    if not found:
        raise FileNotFoundError(f"{base}: no IEMOCAP Session1..Session5 folder (expected "
                                f"{RELEASE_DIR}/SessionN/ or SessionN/ here)")
    return [os.path.join(base, name) for _, name in sorted(found)]


@dataclasses.dataclass
class _Dialog:
    label_file: str
    evaluations: dict | None
    problems: dict
    transcripts: dict


@register
class IEMOCAPReader(Reader):
    """IEMOCAP: one record per sentence wav with labels, ratings, votes, text and words.

    Args:
        merge_excited: Label excitement (``exc``) as happiness.
        four_class: Keep only neutral, anger, sadness and happiness; the others (and
            ``xxx`` turns) are counted in `filtered`, not skipped.
        improvised_only: Keep only the improvised dialogs (name containing ``impro``).

    Reference:
        Busso et al., Language Resources and Evaluation 42(4), 2008.
    """

    name = "iemocap"
    description = ("IEMOCAP (IEMOCAP_full_release/Session1..5: sentences/wav, "
                   "dialog/EmoEvaluation, dialog/transcriptions, ForcedAlignment)")

    def __init__(self, *, merge_excited: bool = False, four_class: bool = False,
                 improvised_only: bool = False):
        super().__init__(merge_excited=bool(merge_excited), four_class=bool(four_class),
                         improvised_only=bool(improvised_only))
        self.merge_excited = bool(merge_excited)
        self.four_class = bool(four_class)
        self.improvised_only = bool(improvised_only)

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--merge-excited``, ``--four-class`` and ``--improvised-only``."""
        parser.add_argument("--merge-excited", action="store_true",
                            help="label excitement (exc) as happiness")
        parser.add_argument("--four-class", action="store_true",
                            help="keep only neutral, anger, sadness and happiness "
                            "(usually with --merge-excited)")
        parser.add_argument("--improvised-only", action="store_true",
                            help="keep only the improvised dialogs (leave out the scripted)")

    def scan(self, root):
        """Yield an `Utterance` per sentence wav, or a `Skipped` saying why not.

        Args:
            root: ``IEMOCAP_full_release/`` or a folder containing it.

        Raises:
            FileNotFoundError: No ``Session<N>`` folder, or a session without
                ``sentences/wav``.
        """
        self.reset()
        for session_dir in session_folders(root):
            wav_dir = require_dir(os.path.join(session_dir, "sentences", "wav"),
                                  "IEMOCAP sentences/wav folder")
            dialogs = {}
            for path in audio_files(wav_dir, (".wav",)):
                found = self._utterance(path, session_dir, dialogs)
                if found is not None:
                    yield found

    def _utterance(self, path: str, session_dir: str, dialogs: dict):
        """An `Utterance`, a `Skipped`, or ``None`` when an option filters the turn out."""
        turn = os.path.splitext(os.path.basename(path))[0]
        match = _TURN.match(turn)
        if not match:
            return Skipped(path, f"'{turn}' is not an IEMOCAP turn name "
                           "(Ses<NN><F|M>_<dialog>_<F|M><NNN>)")
        prefix, letter = match.groups()
        dialog_name = turn.rsplit("_", 1)[0]
        if self.improvised_only and "impro" not in dialog_name:
            self.filter_out("scripted")
            return None
        if dialog_name not in dialogs:
            dialogs[dialog_name] = self._read_dialog(session_dir, dialog_name)
        dialog = dialogs[dialog_name]
        if dialog.evaluations is None:
            return Skipped(path, f"missing label file {dialog.label_file}")
        if turn in dialog.problems:
            return Skipped(path, dialog.problems[turn])
        evaluation = dialog.evaluations.get(turn)
        if evaluation is None:
            return Skipped(path, f"no entry in {dialog.label_file}")
        if evaluation.code not in EMOTION_CODES:
            return Skipped(path, f"unknown emotion code '{evaluation.code}' in "
                           f"{dialog.label_file}")
        emotion = EMOTION_CODES[evaluation.code]
        if self.merge_excited and emotion == "excitement":
            emotion = "happiness"
        if self.four_class and emotion not in FOUR_CLASSES:
            self.filter_out("not in the 4-class subset")
            return None
        utt = Utterance(
            utterance_id=turn, corpus=self.name, audio_path=path,
            speaker=prefix + letter, session=os.path.basename(session_dir),
            gender="female" if letter == "F" else "male", emotion=emotion,
            emotion_votes=list(evaluation.votes), annotators=list(evaluation.annotators),
            valence_ratings=list(evaluation.valence_ratings),
            activation_ratings=list(evaluation.activation_ratings),
            dominance_ratings=list(evaluation.dominance_ratings),
            valence=evaluation.valence, activation=evaluation.activation,
            dominance=evaluation.dominance, transcript=dialog.transcripts.get(turn, ""))
        wdseg = os.path.join(session_dir, "sentences", "ForcedAlignment", dialog_name,
                             turn + ".wdseg")
        if os.path.isfile(wdseg):
            try:
                segments, labels = read_wdseg(wdseg)
            except ValueError as err:
                return Skipped(path, str(err))
            if segments:
                utt.segments, utt.segment_labels, utt.segment_kind = segments, labels, "word"
        return utt

    @staticmethod
    def _read_dialog(session_dir: str, dialog_name: str) -> _Dialog:
        """Labels and transcripts of one dialog (evaluations ``None`` without a label file)."""
        label_file = os.path.join(session_dir, "dialog", "EmoEvaluation", dialog_name + ".txt")
        text_file = os.path.join(session_dir, "dialog", "transcriptions", dialog_name + ".txt")
        transcripts = read_transcriptions(text_file) if os.path.isfile(text_file) else {}
        if not os.path.isfile(label_file):
            return _Dialog(label_file, None, {}, transcripts)
        evaluations, problems = read_emo_evaluation(label_file)
        return _Dialog(label_file, evaluations, problems, transcripts)
