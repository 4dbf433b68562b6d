"""Any corpus described by a CSV manifest: one row per audio file.

SRC_DIR is the CSV file itself, or a folder holding ``manifest.csv``::

    path,label,speaker,session,gender,transcript,valence,activation,dominance
    wav/spk1_001.wav,angry,spk1,s1,F,Kids are talking by the door,2.5,4.0,3.5
    /data/other/clip.flac,,spk2,,m,,,,

Only ``path`` is required: relative to the CSV's folder, or absolute. The label column is
``label`` or ``emotion`` (the first present), mapped to `tfrecords_tools.schema.EMOTIONS`
with the synonyms of `tfrecords_tools.folder.LABEL_SYNONYMS`; an empty cell means
unlabelled. ``gender`` accepts female/male/f/m/woman/man (any case). ``valence``,
``activation`` and ``dominance`` are mean ratings on the corpus's own scale (empty: not
rated). Header names are matched case-insensitively; other columns are ignored. The file is
UTF-8 (a byte-order mark is allowed), comma-separated, with standard CSV quoting.
"""

from __future__ import annotations

import csv
import math
import os

from tfrecords_tools.folder import map_label, path_id
from tfrecords_tools.reader import Reader, register
from tfrecords_tools.schema import Skipped, Utterance

MANIFEST_NAME = "manifest.csv"

_GENDERS = {"female": "female", "f": "female", "woman": "female", "w": "female",
            "male": "male", "m": "male", "man": "male"}
_TEXT_COLUMNS = ("speaker", "session", "transcript")
_NUMBER_COLUMNS = ("valence", "activation", "dominance")


def find_manifest(src: str) -> str:
    """The manifest CSV named by SRC_DIR: the file itself, or ``<folder>/manifest.csv``.

    Raises:
        FileNotFoundError: ``src`` is neither a file nor a folder holding ``manifest.csv``.
    """
    if os.path.isfile(src):
        return src
    path = os.path.join(src, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing CSV manifest (give the CSV file or a folder "
                                f"holding {MANIFEST_NAME})")
    return path


def _number(text: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


@register
class CsvReader(Reader):
    """Audio files listed in a CSV manifest with optional label, speaker and ratings.

    Args:
        any_label: Keep a label that is not in `tfrecords_tools.folder.LABEL_SYNONYMS`
            (lowercased) instead of skipping the row.
    """

    name = "csv"
    description = "CSV manifest: path[,label|emotion,speaker,session,gender,transcript,...]"

    def __init__(self, any_label: bool = False):
        super().__init__(any_label=any_label)

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--any-label``."""
        parser.add_argument(
            "--any-label", action="store_true",
            help="keep labels that are not a known emotion (lowercased) instead of "
            "skipping their rows")

    def scan(self, root):
        """Yield one utterance per manifest row, or why the row was skipped.

        A row is skipped when its audio file is missing, its label or gender is unknown, a
        rating is not a number, or it lists a file already listed.

        Args:
            root: The CSV file, or a folder holding ``manifest.csv``.

        Raises:
            FileNotFoundError: No manifest at ``root``.
            ValueError: The CSV has no header row or no ``path`` column (the message names
                the file and lists its columns).
        """
        csv_path = find_manifest(root)
        base = os.path.dirname(os.path.abspath(csv_path))
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if not header:
                raise ValueError(f"{csv_path}: empty manifest, expected a header row with a "
                                 "'path' column")
            columns = [c.strip().lower() for c in header]
            if "path" not in columns:
                raise ValueError(f"{csv_path}: no 'path' column; columns are {header}")
            label_column = next((c for c in ("label", "emotion") if c in columns), None)
            seen = {}
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{os.path.basename(csv_path)} line {rows.line_num}"
                if len(row) > len(columns):
                    yield Skipped(csv_path, f"{where}: {len(row)} fields but the header has "
                                            f"{len(columns)}")
                    continue
                cells = dict(zip(columns, [c.strip() for c in row] + [""] * len(columns)))
                item = self._row(cells, base, label_column, where, csv_path)
                if isinstance(item, Utterance):
                    if item.utterance_id in seen:
                        item = Skipped(item.audio_path, f"{where}: already listed on line "
                                                        f"{seen[item.utterance_id]}")
                    else:
                        seen[item.utterance_id] = rows.line_num
                yield item

    def _row(self, cells: dict, base: str, label_column: str | None, where: str,
             csv_path: str):
        if not cells["path"]:
            return Skipped(csv_path, f"{where}: empty path")
        audio_path = os.path.normpath(os.path.join(base, cells["path"]))
        if not os.path.isfile(audio_path):
            return Skipped(audio_path, f"listed in {where} but missing")
        emotion = cells.get(label_column, "") if label_column else ""
        if emotion:
            mapped = map_label(emotion)
            if mapped is None and not self.options["any_label"]:
                return Skipped(audio_path, f"{where}: unknown label '{emotion}'")
            emotion = mapped or emotion.lower()
        gender = cells.get("gender", "")
        if gender:
            if gender.lower() not in _GENDERS:
                return Skipped(audio_path, f"{where}: unknown gender '{gender}' (expected "
                                           "female, male, f or m)")
            gender = _GENDERS[gender.lower()]
        ratings = {}
        for column in _NUMBER_COLUMNS:
            try:
                ratings[column] = _number(cells.get(column, ""))
            except ValueError:
                return Skipped(audio_path, f"{where}: {column} '{cells[column]}' is not a "
                                           "number")
        relative = os.path.relpath(audio_path, base)
        if relative.split(os.sep, 1)[0] == os.pardir:
            relative = audio_path.lstrip(os.sep)
        return Utterance(utterance_id=path_id(relative), corpus=self.name,
                         audio_path=audio_path, emotion=emotion, gender=gender,
                         **{c: cells.get(c, "") for c in _TEXT_COLUMNS}, **ratings)
