"""The one way keras-ser writes files: to a temporary name beside the target, then a rename.

A reader (or a run resumed after SIGKILL) therefore sees either the previous file or the
complete new one, never a half-written file. `os.replace` is atomic on one file system,
which the temporary name beside the target guarantees. Folders (an exported SavedModel, a
set of synthetic records) are written into a temporary folder and swapped in with
`replace_folder`.

This module imports nothing heavier than NumPy (Keras is imported only by the functions
that save Keras objects), so the converter in `tfrecords_tools` uses it too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable

__all__ = ["atomic_write", "write_json", "write_text", "save_weights", "save_model",
           "save_npz", "temporary_folder", "replace_folder", "read_json"]


def _temporary_path(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def atomic_write(path, write: Callable[[str], None], suffix: str = "") -> str:
    """Call ``write(temporary_path)``, then rename the result onto ``path``.

    Args:
        path: Target file; its folder is created if missing.
        write: Writes the whole file at the path it is given.
        suffix: Ending the temporary name must keep (Keras checks ``.weights.h5`` and
            ``.keras``; NumPy appends ``.npz`` unless the name ends with it).

    Returns:
        ``path``.

    Raises:
        Whatever ``write`` raises; the temporary file is removed and ``path`` is left as
        it was.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_path(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text(path, text: str) -> str:
    """Write UTF-8 text atomically; returns ``path``."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def _jsonable(value):
    """NumPy scalars and arrays as Python numbers and lists (for `json.dumps`)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return float(value)


def write_json(path, document, indent: int = 1) -> str:
    """Write ``document`` as JSON atomically; NumPy values become numbers or lists.

    Raises:
        TypeError: ``document`` holds something JSON cannot represent (before anything is
            written).
    """
    text = json.dumps(document, indent=indent, default=_jsonable, ensure_ascii=False)
    return write_text(path, text + "\n")


def read_json(path):
    """Read a JSON file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not valid JSON; the message names the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def save_weights(model, path) -> str:
    """``model.save_weights`` atomically (``path`` must end in ``.weights.h5``).

    Keras 3 stores the variables of every optimiser the model holds as an attribute
    beside the layers' weights, so this one file is a training checkpoint.
    """
    return atomic_write(path, lambda tmp: model.save_weights(tmp), suffix=".weights.h5")


def save_model(model, path) -> str:
    """``model.save`` to a ``.keras`` file atomically."""
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def save_npz(path, **arrays) -> str:
    """``numpy.savez`` atomically (``path`` should end in ``.npz``)."""
    import numpy as np

    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def temporary_folder(path) -> str:
    """A new empty folder beside ``path`` to build its contents in (see `replace_folder`)."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".partial",
                            dir=parent)


def replace_folder(tmp: str, path) -> str:
    """Move the finished folder ``tmp`` to ``path``, replacing what was there.

    The old folder is first renamed aside and removed only after the new one is in
    place, so ``path`` is at every moment absent, the old folder or the new one.

    Returns:
        ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    old = None
    if os.path.lexists(path):
        old = f"{tmp}.old"
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path
