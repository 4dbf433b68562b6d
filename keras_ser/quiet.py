"""Keep TensorFlow's start-up chatter off the console.

Importing TensorFlow prints, from C++ and before any Python code can intervene, lines such
as ``WARNING: All log messages before absl::InitializeLog() is called are written to
STDERR``, ``I0000 ... port.cc] oneDNN custom operations are on ...`` and the CPU-feature
guard notice. ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (they are logged before
TensorFlow reads it), so `install` does two things, both before TensorFlow is imported:

- sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it: TensorFlow's later C++ INFO and
  WARNING lines (e.g. "TFRecordDataset `buffer_size` is unspecified", "Local rendezvous is
  aborting") are dropped; its ERROR lines still show, as do Python exceptions;
- puts an import hook in front of ``sys.meta_path`` that, for the one first import of the
  ``tensorflow`` package (by whoever imports it: keras, our modules, a recipe), points file
  descriptor 2 at ``/dev/null`` and restores it as soon as the import returns. Python's own
  ``sys.stderr`` is pointed at the real stderr meanwhile, so Python warnings and tracebacks
  raised during the import still show. Nothing else is redirected: our output, tqdm and
  Keras progress bars and every later message are untouched.

``KERAS_SER_TF_LOGS=1`` (or ``keras-ser --verbose``, which sets it, see `enable_tf_logs`)
turns all of this off and TensorFlow talks as usual. `keras_ser/__init__.py` calls
`install`, so anything that imports ``keras_ser`` (the CLI, every recipe, the tests) before
TensorFlow or Keras is quiet; a script that imports ``keras`` or ``tensorflow`` first gets
TensorFlow's start-up lines.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

ENV = "KERAS_SER_TF_LOGS"
"""Environment variable: ``1`` (or ``true``/``yes``) shows TensorFlow's logs."""

_TOP = "tensorflow"


def tf_logs_enabled() -> bool:
    """True when ``KERAS_SER_TF_LOGS`` asks for TensorFlow's own logs."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _Silenced:
    """Context: file descriptor 2 -> /dev/null, ``sys.stderr`` -> the real stderr."""

    def __enter__(self):
        self.saved = None
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):  # no fd 2 (e.g. a GUI): nothing to do
            if self.saved is not None:
                os.close(self.saved)
                self.saved = None
            return self
        self.python_stderr = sys.stderr
        if sys.stderr is not None and _writes_to_fd2(sys.stderr):
            # Python's messages during the import go to the real stderr. The stream owns
            # its own descriptor (closed with the stream): a logging handler created during
            # the import may keep it and must not write to a closed or reused descriptor.
            try:
                sys.stderr = open(os.dup(self.saved), "w",
                                  encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                  errors="backslashreplace", buffering=1)
            except (OSError, ValueError, TypeError):
                pass  # Python's messages during the import are silenced too
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        if sys.stderr is not self.python_stderr:
            try:
                sys.stderr.flush()
            finally:
                sys.stderr = self.python_stderr
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (OSError, ValueError, AttributeError):
        return False


class _QuietLoader:
    """Wraps the ``tensorflow`` package's loader: runs its module code silenced."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        spec = module.__spec__
        try:
            if tf_logs_enabled():
                self._loader.exec_module(module)
            else:
                with _Silenced():
                    self._loader.exec_module(module)
        finally:  # the module keeps the real loader
            module.__loader__ = self._loader
            if spec is not None:
                spec.loader = self._loader


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and wraps its loader (first time only)."""

    def find_spec(self, name, path=None, target=None):
        if name != _TOP or name in sys.modules:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_finder = _Finder()


def install() -> None:
    """Silence TensorFlow's start-up lines for this process (idempotent; a no-op when
    ``KERAS_SER_TF_LOGS=1`` or once TensorFlow is imported)."""
    if tf_logs_enabled() or _TOP in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def enable_tf_logs() -> None:
    """Show TensorFlow's logs from now on (``--verbose``): sets ``KERAS_SER_TF_LOGS=1``
    (inherited by child processes) and removes the import hook. Effective only before
    TensorFlow is imported; ``TF_CPP_MIN_LOG_LEVEL`` is unset if `install` set it."""
    os.environ[ENV] = "1"
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "2" and not _user_level:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]


_user_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
