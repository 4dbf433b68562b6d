"""Corpus readers: the common interface and the registry behind ``python -m tfrecords_tools``.

A reader walks a corpus as released on disk and yields one `Utterance` per audio file it
can label, or a `Skipped` naming the file and the reason. It never decodes audio; the
writer does that once for every reader.
"""

from __future__ import annotations

import argparse
import os
from typing import Iterator, Union

from tfrecords_tools.schema import Skipped, Utterance

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")

READERS: dict = {}


class Reader:
    """Base class of the corpus readers.

    Subclasses set `name` and `description`, may declare command-line options in
    `add_arguments` (their values arrive as keyword arguments of ``__init__``), and
    implement `scan`.

    Attributes:
        name: Corpus name used on the command line and in every record's ``corpus`` field.
        filtered: Counts of utterances left out on purpose by an option (e.g. IEMOCAP's
            4-class subset), by reason; reported in ``stats.json``, not as skips.
        description: One line for ``--help``.
        chunk_seconds: Default length in seconds of the chunks long recordings are cut
            into, or ``None`` to keep each recording whole.
    """

    name = ""
    description = ""
    chunk_seconds = None

    def __init__(self, **options):
        self.options = options
        self.filtered = {}
        self._seen = set()

    def reset(self) -> None:
        """Forget the counts and ids of an earlier scan (the writer calls this first)."""
        self.filtered = {}
        self._seen = set()

    def seen_before(self, utterance_id: str) -> bool:
        """True, and counted under ``filtered["duplicate"]``, for an id already yielded.

        Some copies of the acted corpora ship every file twice (e.g. two layouts side by
        side); the first copy in sorted path order is kept.
        """
        if utterance_id in self._seen:
            self.filter_out("duplicate")
            return True
        self._seen.add(utterance_id)
        return False

    def filter_out(self, reason: str) -> None:
        """Count one utterance left out on purpose (not an error) under ``reason``."""
        self.filtered[reason] = self.filtered.get(reason, 0) + 1

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare the reader's own command-line options (none by default)."""

    def scan(self, root: str) -> Iterator[Union[Utterance, Skipped]]:
        """Yield every utterance of the corpus under ``root``, or why a file was skipped.

        Args:
            root: The corpus folder as released.

        Raises:
            FileNotFoundError: ``root`` does not look like the corpus (a required folder or
                file is missing), with the missing path in the message.
        """
        raise NotImplementedError

    def options_summary(self) -> dict:
        """The options this reader was created with, recorded in ``plan.json``."""
        return dict(sorted(self.options.items()))


def register(cls):
    """Class decorator adding a `Reader` subclass to `READERS` under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    READERS[cls.name] = cls
    return cls


def get_reader(name: str, **options) -> Reader:
    """Create the reader registered as ``name``.

    Raises:
        KeyError: No such reader; the message lists the known ones.
    """
    load_all()
    if name not in READERS:
        raise KeyError(f"unknown corpus '{name}'; known: {', '.join(sorted(READERS))}")
    return READERS[name](**options)


def load_all() -> dict:
    """Import every reader module so that it registers itself; returns `READERS`."""
    from tfrecords_tools import (  # noqa: F401  (imported for registration)
        ami, cremad, emodb, folder, iemocap, librispeech, ljspeech, manifest, ravdess,
        savee, smoke, tess,
    )
    return READERS


def audio_files(root: str, extensions=AUDIO_EXTENSIONS) -> list:
    """All audio files below ``root`` (recursively), sorted by path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such corpus folder")
    found = []
    for folder, _, files in os.walk(root):
        found.extend(os.path.join(folder, f) for f in files
                     if f.lower().endswith(extensions) and not f.startswith("."))
    return sorted(found)


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a folder, else raise naming what was expected there.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: missing {what}")
    return path
