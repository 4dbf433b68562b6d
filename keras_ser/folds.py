"""Cross-validation folds over speakers, kept as data: built from ``stats.json``, saved as JSON.

A fold names the speakers it trains, validates and tests on, so a result always says
exactly which speakers it held out (as EmoBox's fold files do). Protocols:

- ``"loso-session"``: leave one session out. Each session holds two speakers (IEMOCAP:
  one female, one male); the fold validates on one and tests on the other, and trains on
  every other session (5 folds for IEMOCAP; Chang & Scherer 2017, Sec. "Experimental
  Design", say only that one speaker validates: the female one by default is our choice).
- ``"loso-session-swap"``: the same, each session also with the two speakers swapped, so
  every speaker is tested once (10 folds for IEMOCAP; Etienne et al. 2018, Sec. 3).
- ``"loso-speaker"``: leave one speaker out; the next speaker validates (10 folds for EmoDB).
- ``"kfold"``: k folds over speakers; the next fold's test speakers validate.

In every fold the three parts are disjoint and together hold every speaker. A fold file::

    {"protocol": "loso-session", "corpus": "iemocap",
     "folds": [{"name": "session1-test-Ses01M", "train": ["Ses02F", ...],
                "validation": ["Ses01F"], "test": ["Ses01M"]}, ...]}

Speaker ids are strings (as in ``stats.json``); other ids are converted with `str`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.model_selection import KFold

#: The three parts of a fold, in file order.
PARTS = ("train", "validation", "test")
#: Protocol names understood by `folds_from_stats`.
PROTOCOLS = ("loso-session", "loso-session-swap", "loso-speaker", "kfold")
#: How `leave_one_speaker_out` picks the validation speaker.
VALIDATION_RULES = ("next", "next-same-gender", "next-other-gender")


def _speaker_list(value, what: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list of speaker ids, got {value!r}")
    return sorted(str(speaker) for speaker in value)


@dataclasses.dataclass
class Fold:
    """One split of the speakers into train, validation and test.

    Args:
        name: Fold name, unique within a protocol (e.g. ``"session1-test-Ses01M"``).
        train: Training speakers.
        validation: Validation speakers (model selection, early stopping).
        test: Test speakers.

    The speaker lists are stored as sorted lists of strings.

    Raises:
        ValueError: A part is a single string or not iterable.
    """

    name: str
    train: list
    validation: list
    test: list

    def __post_init__(self):
        self.name = str(self.name)
        for part in PARTS:
            setattr(self, part, _speaker_list(getattr(self, part), f"fold '{self.name}' {part}"))

    def part(self, name: str) -> set:
        """The speaker set of ``"train"``, ``"validation"`` or ``"test"``.

        Raises:
            ValueError: ``name`` is not one of the three parts.
        """
        if name not in PARTS:
            raise ValueError(f"unknown fold part '{name}'; expected one of {PARTS}")
        return set(getattr(self, name))

    def only_speaker(self, name: str) -> str:
        """The one speaker of part ``name``, for per-speaker normalisation, which scores a
        part with its speaker's own statistics.

        Raises:
            ValueError: The part holds no speaker or several (the message lists them).
        """
        speakers = sorted(self.part(name))
        if len(speakers) != 1:
            raise ValueError(f"per-speaker normalisation scores one {name} speaker per fold; "
                             f"fold {self.name} has {speakers}")
        return speakers[0]

    def speakers(self) -> set:
        """Every speaker of the fold (the union of its three parts)."""
        return set(self.train) | set(self.validation) | set(self.test)

    def check(self) -> None:
        """Check the parts are disjoint, list no speaker twice, and the test is non-empty.

        Raises:
            ValueError: Naming the fold and the offending speakers.
        """
        if not self.test:
            raise ValueError(f"fold '{self.name}' has no test speaker")
        for part in PARTS:
            speakers = getattr(self, part)
            repeated = sorted({s for s in speakers if speakers.count(s) > 1})
            if repeated:
                raise ValueError(f"fold '{self.name}' lists {part} speaker(s) {repeated} twice")
        for i, first in enumerate(PARTS):
            for second in PARTS[i + 1:]:
                shared = sorted(self.part(first) & self.part(second))
                if shared:
                    raise ValueError(f"fold '{self.name}' puts speaker(s) {shared} in both "
                                     f"{first} and {second}")

    def to_dict(self) -> dict:
        """``{"name", "train", "validation", "test"}`` with list values (JSON-ready)."""
        return {"name": self.name, **{part: list(getattr(self, part)) for part in PARTS}}

    @classmethod
    def from_dict(cls, entry: Mapping) -> "Fold":
        """Inverse of `to_dict`.

        Raises:
            ValueError: ``entry`` is not a mapping, or lacks the name or a part list.
        """
        if not isinstance(entry, Mapping):
            raise ValueError(f"a fold must be an object with name, {', '.join(PARTS)}; "
                             f"got {entry!r}")
        if "name" not in entry:
            raise ValueError("fold has no 'name'")
        for part in PARTS:
            if part not in entry:
                raise ValueError(f"fold '{entry['name']}' has no '{part}' list")
        return cls(entry["name"], *(entry[part] for part in PARTS))


def _speaker_ids(speakers) -> list:
    """Sorted string ids from a mapping (its keys) or an iterable; no repeats."""
    if isinstance(speakers, (str, bytes)) or not isinstance(speakers, Iterable):
        raise ValueError(f"speakers must be a collection of speaker ids, got {speakers!r}")
    ids = [str(s) for s in speakers]
    repeated = sorted({s for s, n in collections.Counter(ids).items() if n > 1})
    if repeated:
        raise ValueError(f"speaker id(s) {repeated} listed more than once")
    return sorted(ids)


def _str_mapping(mapping, what: str) -> dict:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping speaker -> value, got "
                         f"{type(mapping).__name__}")
    return {str(k): str(v) for k, v in mapping.items()}


def _repeated_names(folds: list) -> list:
    return sorted(name for name, n in collections.Counter(f.name for f in folds).items() if n > 1)


def _check_folds(folds: list, speakers: Iterable) -> list:
    """Builder invariants: parts disjoint and non-empty, union = all speakers, unique names."""
    everyone = set(speakers)
    repeated = _repeated_names(folds)
    if repeated:
        raise ValueError(f"fold name(s) {repeated} used more than once")
    for fold in folds:
        fold.check()
        for part in PARTS:
            if not getattr(fold, part):
                raise ValueError(f"fold '{fold.name}' has no {part} speaker")
        if fold.speakers() != everyone:
            raise ValueError(f"fold '{fold.name}' misses speaker(s) "
                             f"{sorted(everyone - fold.speakers())} and adds "
                             f"{sorted(fold.speakers() - everyone)}")
    return folds


def _validation_first(session: str, members: list, genders, validation_gender: str) -> tuple:
    """``(validation, test)`` speakers of a two-speaker session for the first order."""
    if genders is None:
        return members[0], members[1]
    missing = [m for m in members if m not in genders]
    if missing:
        raise ValueError(f"session '{session}': no gender given for speaker(s) {missing}")
    chosen = [m for m in members if genders[m] == validation_gender]
    if len(chosen) != 1:
        raise ValueError(
            f"session '{session}': speakers {members} have genders "
            f"{[genders[m] for m in members]}; exactly one must be '{validation_gender}' to "
            "validate first (pass genders=None to validate on the first in sorted order)")
    test = members[1] if chosen[0] == members[0] else members[0]
    return chosen[0], test


def leave_one_session_out(speakers: Mapping, swap: bool = False, genders: Mapping = None,
                          validation_gender: str = "female") -> list:
    """Leave-one-session-out folds: one speaker of the session validates, the other tests.

    Sessions are taken in sorted order; fold names read ``"session{k}-test-{speaker}"``
    with k the 1-based position of the session in that order. With ``swap`` the two orders
    of a session follow each other.

    Args:
        speakers: Mapping speaker -> session; every session must hold exactly two speakers.
        swap: Also yield each session with validation and test speakers swapped (two folds
            per session, every speaker tested once; Etienne et al. 2018, Sec. 3, Table 2).
        genders: Mapping speaker -> gender. When given, the speaker of
            ``validation_gender`` validates in the first order; otherwise the first speaker
            in sorted order does.
        validation_gender: Gender that validates in the first order (default female:
            our choice; Chang & Scherer 2017 only say "one speaker's audio is used as a
            validation set").

    Returns:
        ``sessions`` folds (``2 * sessions`` with ``swap``); each trains on every other
        session's speakers.

    Raises:
        ValueError: Fewer than two sessions; a session without exactly two speakers (names
            the session and its speakers); with ``genders``, a session without exactly one
            speaker of ``validation_gender`` or a speaker without a gender.

    Reference:
        Etienne, Fidanza, Petrovskii, Devillers & Schmauch, "CNN+LSTM architecture for
        speech emotion recognition with data augmentation", 2018, Sec. 3 and Table 2.
    """
    sessions_of = _str_mapping(speakers, "speakers")
    gender_of = None if genders is None else _str_mapping(genders, "genders")
    members = collections.defaultdict(list)
    for speaker, session in sessions_of.items():
        members[session].append(speaker)
    sessions = sorted(members)
    if len(sessions) < 2:
        raise ValueError(f"leave-one-session-out needs at least two sessions, got {sessions}")
    folds = []
    for k, session in enumerate(sessions, 1):
        pair = sorted(members[session])
        if len(pair) != 2:
            raise ValueError(f"session '{session}' holds {len(pair)} speaker(s) {pair}; "
                             "leave-one-session-out needs exactly two (one validates, one tests)")
        validation, test = _validation_first(session, pair, gender_of, validation_gender)
        train = [s for s, other in sessions_of.items() if other != session]
        orders = [(validation, test), (test, validation)] if swap else [(validation, test)]
        for val, tst in orders:
            folds.append(Fold(f"session{k}-test-{tst}", train, [val], [tst]))
    return _check_folds(folds, sessions_of)


def leave_one_speaker_out(speakers, validation: str = "next", genders: Mapping = None) -> list:
    """Leave-one-speaker-out folds: each speaker tested once, a neighbour validates.

    Speakers are taken in sorted order; the fold testing speaker i is named
    ``"test-{speaker}"`` and validates on the first speaker after i (cyclically) that
    satisfies ``validation``. With ``"next"`` every speaker is validated exactly once.

    Args:
        speakers: Speaker ids, or a mapping whose keys are speaker ids; at least three.
        validation: ``"next"``, ``"next-same-gender"`` or ``"next-other-gender"``.
        genders: Mapping speaker -> gender; required by the two gender rules.

    Returns:
        One fold per speaker, in sorted speaker order; train = all other speakers.

    Raises:
        ValueError: Fewer than three speakers; unknown rule; a gender rule without a
            gender for every speaker, or a speaker with no other speaker of the required
            gender relation.
    """
    ids = _speaker_ids(speakers)
    if validation not in VALIDATION_RULES:
        raise ValueError(f"unknown validation rule '{validation}'; expected one of "
                         f"{VALIDATION_RULES}")
    if len(ids) < 3:
        raise ValueError(f"leave-one-speaker-out needs at least three speakers, got {ids}")
    gender_of = None
    if validation != "next":
        if genders is None:
            raise ValueError(f"validation='{validation}' needs a genders mapping")
        gender_of = _str_mapping(genders, "genders")
        missing = [s for s in ids if s not in gender_of]
        if missing:
            raise ValueError(f"no gender given for speaker(s) {missing}")
    folds = []
    for i, test in enumerate(ids):
        candidates = [ids[(i + step) % len(ids)] for step in range(1, len(ids))]
        if validation == "next-same-gender":
            candidates = [c for c in candidates if gender_of[c] == gender_of[test]]
        elif validation == "next-other-gender":
            candidates = [c for c in candidates if gender_of[c] != gender_of[test]]
        if not candidates:
            raise ValueError(f"speaker '{test}' ({gender_of[test]}) has no speaker to validate "
                             f"on under '{validation}'")
        train = [s for s in ids if s not in (test, candidates[0])]
        folds.append(Fold(f"test-{test}", train, [candidates[0]], [test]))
    return _check_folds(folds, ids)


def speaker_kfold(speakers, k: int, seed: int = 0) -> list:
    """K folds over speakers: test speakers partitioned, the next fold's test validates.

    The speakers (sorted) are shuffled with ``seed`` and split into k test groups of
    sizes differing by at most one (`sklearn.model_selection.KFold`). Fold i, named
    ``"fold{i+1}"``, tests on group i, validates on group i + 1 (cyclically) and trains
    on the rest, so every speaker is tested once and validated once.

    Args:
        speakers: Speaker ids, or a mapping whose keys are speaker ids.
        k: Number of folds, 3 <= k <= number of speakers.
        seed: Shuffling seed.

    Returns:
        k folds.

    Raises:
        ValueError: ``k`` out of range.
    """
    ids = _speaker_ids(speakers)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 3 <= k <= len(ids):
        raise ValueError(f"k must be an integer from 3 to the number of speakers "
                         f"({len(ids)}), got {k!r}")
    splitter = KFold(n_splits=int(k), shuffle=True, random_state=seed)
    groups = [[ids[j] for j in test] for _, test in splitter.split(np.arange(len(ids)))]
    folds = []
    for i, test in enumerate(groups):
        validation = groups[(i + 1) % len(groups)]
        train = [s for s in ids if s not in test and s not in validation]
        folds.append(Fold(f"fold{i + 1}", train, validation, test))
    return _check_folds(folds, ids)


def _read_json(path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def folds_from_stats(stats, protocol: str, **kwargs) -> list:
    """Build the folds of a protocol from the ``"speakers"`` entry of ``stats.json``.

    Sessions and genders come from each speaker's entry. For the session protocols the
    genders are passed on unless ``genders`` is given in ``kwargs`` (``genders=None``
    validates on the first speaker of a session in sorted order).

    Args:
        stats: The ``stats.json`` document, or its path.
        protocol: One of `PROTOCOLS`: ``"loso-session"``, ``"loso-session-swap"``,
            ``"loso-speaker"`` or ``"kfold"``.
        **kwargs: Passed on to `leave_one_session_out`, `leave_one_speaker_out` or
            `speaker_kfold` (which needs ``k``).

    Returns:
        The folds.

    Raises:
        ValueError: Unknown protocol, no ``"speakers"`` entry, a speaker entry without a
            session, or any error of the builder.
    """
    if isinstance(stats, (str, os.PathLike)):
        where = str(stats)
        stats = _read_json(stats)
    else:
        where = "stats"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; expected one of {PROTOCOLS}")
    entries = stats.get("speakers") if isinstance(stats, Mapping) else None
    if not isinstance(entries, Mapping) or not entries:
        raise ValueError(f"{where}: no 'speakers' entry (speaker -> session, gender, ...)")
    genders = {s: e["gender"] for s, e in entries.items() if "gender" in e}
    if len(genders) != len(entries):
        genders = None
    if protocol in ("loso-session", "loso-session-swap"):
        missing = [s for s, e in entries.items() if "session" not in e]
        if missing:
            raise ValueError(f"{where}: speaker(s) {missing} have no session")
        kwargs.setdefault("genders", genders)
        sessions = {s: e["session"] for s, e in entries.items()}
        return leave_one_session_out(sessions, swap=protocol == "loso-session-swap", **kwargs)
    if protocol == "loso-speaker":
        kwargs.setdefault("genders", genders)
        return leave_one_speaker_out(list(entries), **kwargs)
    return speaker_kfold(list(entries), **kwargs)


def select(folds: list, chosen=None) -> list:
    """The folds a ``--folds`` option names: all, the first N, or the named ones.

    Args:
        folds: The protocol's folds, in order.
        chosen: ``None`` (all); a count N (``3`` or ``"3"``: the first N); or
            comma-separated names, each a fold name, a test speaker, or a fold-name
            prefix before ``-`` (``"session2"`` names both folds of session 2). Folds
            keep the protocol's order and appear once.

    Returns:
        The selected folds.

    Raises:
        ValueError: A count outside 1..len(folds), or a name matching no fold (the
            message lists the fold names and test speakers).
    """
    if chosen is None or chosen == "":
        return list(folds)
    text = str(chosen).strip()
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(folds):
            raise ValueError(f"--folds {n}: choose 1..{len(folds)} folds")
        return list(folds[:n])
    names = [c.strip() for c in text.split(",") if c.strip()]

    def matches(fold, name):
        return name == fold.name or name in fold.test or fold.name.startswith(f"{name}-")

    unknown = [n for n in names if not any(matches(f, n) for f in folds)]
    if unknown:
        raise ValueError(f"--folds: unknown fold(s) {unknown}; folds: "
                         f"{[f.name for f in folds]}; test speakers: "
                         f"{sorted({s for f in folds for s in f.test})}")
    return [f for f in folds if any(matches(f, n) for n in names)]


def save_folds(path, folds: list, protocol: str, corpus: str = None) -> None:
    """Write folds as JSON ``{"protocol", "corpus", "folds": [...]}``, atomically
    (`keras_ser.io.write_json`), so a reader never sees a partial file.

    Args:
        path: Destination ``.json`` file; its folder is created if missing.
        folds: `Fold` objects.
        protocol: Protocol name (e.g. one of `PROTOCOLS`).
        corpus: Corpus name, or None.

    Raises:
        ValueError: No folds, repeated fold names, or a fold fails `Fold.check`.
    """
    from keras_ser import io

    if not folds:
        raise ValueError("no folds to save")
    repeated = _repeated_names(folds)
    if repeated:
        raise ValueError(f"fold name(s) {repeated} used more than once")
    for fold in folds:
        fold.check()
    io.write_json(path, {"protocol": protocol, "corpus": corpus,
                         "folds": [fold.to_dict() for fold in folds]}, indent=2)


def load_folds(path) -> tuple:
    """Read and check a fold file written by `save_folds` (or by hand).

    Args:
        path: The ``.json`` file.

    Returns:
        ``(folds, meta)``: the list of `Fold` and the document without its ``"folds"``
        (``{"protocol": ..., "corpus": ...}``).

    Raises:
        ValueError: Naming the file (and the fold): not JSON, no non-empty ``"folds"``
            list, a fold without name or part lists, parts that overlap, an empty test
            part, or repeated fold names.
    """
    document = _read_json(path)
    if not isinstance(document, Mapping) or not isinstance(document.get("folds"), list) \
            or not document["folds"]:
        raise ValueError(f"{path}: not a fold file (expected an object with a non-empty "
                         "'folds' list)")
    folds = []
    for index, entry in enumerate(document["folds"]):
        try:
            fold = Fold.from_dict(entry)
            fold.check()
        except ValueError as err:
            raise ValueError(f"{path}: folds[{index}]: {err}") from None
        folds.append(fold)
    repeated = _repeated_names(folds)
    if repeated:
        raise ValueError(f"{path}: fold name(s) {repeated} used more than once")
    meta = {key: value for key, value in document.items() if key != "folds"}
    return folds, meta
