"""Load any keras-ser export and classify audio files with it.

`resolve` accepts what a user has at hand: the run's ``export/`` base folder (holding one
model), a model folder ``export/<name>`` (its highest version is used) or a version
folder ``export/<name>/<version>``. `load` returns the reloaded ``serving_default``
signature and the export's ``keras_ser.json``; `predict_files` decodes, checks and
classifies files with the decision rule the export records (argmax, or the majority vote
of the VTLP copies), failing on the first bad file; `classify_files` classifies many files
(`expand_inputs`: files, folders, ``@lists``) in batches, each file getting its result or
its own error (``keras-ser predict``).

Exports of per-speaker normalised models (``speaker_inputs`` in the metadata) also take
the speaker's statistics: given as numbers, looked up among the fold speakers the export
recorded, or estimated from the files themselves (`estimate_speaker_statistics`: all
files from one speaker, transductive, as in training). Without them the export falls
back to the training speakers' pooled statistics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_ser import audio as audio_mod
from keras_ser import io
from keras_ser.serving.builders import (
    OUTPUT_KEY,
    VOTES_KEY,
    FrontEnd,
    build_units_model,
    decide,
)
from keras_ser.serving.layers import Normalise
from keras_ser.serving.savedmodel import (
    METADATA_FILE,
    METADATA_FORMAT,
    METADATA_VERSION,
    SPEAKER_SIGNATURE,
    versions,
)


def _is_version(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def resolve(path: str) -> str:
    """The version folder an export path names.

    Args:
        path: A version folder, a model folder (highest version taken) or a base folder
            holding exactly one model folder.

    Returns:
        The version folder (holding ``saved_model.pb``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: No export below ``path``, or a base folder with several models (the
            message lists them).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model folder")
    if _is_version(path):
        return path
    found = versions(path)
    if found:
        return os.path.join(path, str(found[-1]))
    models = sorted(d for d in (os.listdir(path) if os.path.isdir(path) else [])
                    if versions(os.path.join(path, d)))
    if len(models) == 1:
        return resolve(os.path.join(path, models[0]))
    if models:
        raise ValueError(f"{path}: holds several models {models}; name one, e.g. "
                         f"{os.path.join(path, models[0])}")
    raise ValueError(f"{path}: not an exported model (no saved_model.pb, and no numeric "
                     "version folder below it; recipes export to <run>/export/<name>/<n>)")


def read_metadata(path: str) -> dict:
    """The checked ``keras_ser.json`` of an export (any path `resolve` accepts).

    Raises:
        FileNotFoundError, ValueError: As `resolve`; a SavedModel without keras-ser
            metadata, unreadable metadata, or a newer metadata version.
    """
    folder = resolve(path)
    meta_path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise ValueError(f"{folder}: a SavedModel without {METADATA_FILE}, not a keras-ser "
                         "export")
    try:
        metadata = io.read_json(meta_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_path}: unreadable metadata ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise ValueError(f"{meta_path}: not keras-ser serving metadata")
    if metadata.get("version", 0) > METADATA_VERSION:
        raise ValueError(f"{meta_path}: metadata version {metadata['version']} is newer than "
                         f"this keras-ser reads ({METADATA_VERSION})")
    metadata["path"] = folder
    return metadata


class ExportedClassifier:
    """The ``serving_default`` signature of a reloaded export, kept alive with its module.

    ``exported(waveform=tensor)`` with float32 ``(batch, samples)`` returns
    ``{"probabilities": (batch, C)[, "votes": (batch, C)]}``. A reloaded signature
    checks a tensor's dtype but casts a NumPy integer array silently (int16 PCM would be
    read as +-32768 full scale): check client-side with `keras_ser.audio.check_waveform`.

    Attributes:
        signature: The ``serving_default`` `ConcreteFunction`.
        module: The loaded SavedModel object (holds the variables).
        metadata: The export's ``keras_ser.json``.
    """

    def __init__(self, module, signature, metadata: dict):
        self.module, self.signature, self.metadata = module, signature, metadata

    def __call__(self, *args, **kwargs):
        return self.signature(*args, **kwargs)

    @property
    def front(self) -> FrontEnd:
        """The export's `FrontEnd`."""
        return FrontEnd.from_dict(self.metadata["front_end"])

    def classify(self, waveforms, speaker: dict | None = None) -> tuple:
        """``(probabilities (n, C), votes (n, C) or None, predicted (n,))`` of a float32
        ``(n, samples)`` batch, under the export's decision rule.

        Args:
            waveforms: ``(n, samples)`` float32 in [-1, 1].
            speaker: The speaker's statistics for a per-speaker export, as
                `resolve_speaker` returns them (``{input key: (K,)}``), or None for the
                fallback.

        Raises:
            ValueError: ``speaker`` given to an export without a ``serve_speaker``
                signature.
        """
        waveforms = tf.constant(waveforms, tf.float32)
        if speaker is None:
            out = self.signature(waveform=waveforms)
        else:
            signature = self.module.signatures.get(SPEAKER_SIGNATURE)
            if signature is None:
                raise ValueError(f"{self.metadata['path']}: no {SPEAKER_SIGNATURE} signature")
            n = int(waveforms.shape[0])
            out = signature(waveform=waveforms, **{
                key: tf.constant(np.tile(np.asarray(value, np.float32)[None], (n, 1)))
                for key, value in speaker.items()})
        probs = out[OUTPUT_KEY].numpy()
        votes = out[VOTES_KEY].numpy() if VOTES_KEY in out else None
        return probs, votes, decide(probs, votes)


def load(path: str) -> ExportedClassifier:
    """Reload an export (any path `resolve` accepts).

    Raises:
        FileNotFoundError, ValueError: As `read_metadata`; no ``serving_default``
            signature.
    """
    metadata = read_metadata(path)
    module = tf.saved_model.load(metadata["path"])
    signature = module.signatures.get("serving_default")
    if signature is None:
        raise ValueError(f"{metadata['path']}: the SavedModel has no serving_default signature")
    return ExportedClassifier(module, signature, metadata)


def speaker_inputs(metadata: dict, statistics: dict) -> dict:
    """Check a speaker's statistics against a per-speaker export and name them as its
    ``serve_speaker`` inputs.

    Args:
        metadata: The export's ``keras_ser.json`` (`read_metadata`).
        statistics: ``{"mean", "std"}`` (z-score exports) or ``{"min", "max"}`` (min-max
            exports); each a number or K numbers (K in ``speaker_inputs.shape``; a number
            is repeated K times).

    Returns:
        ``{input key: (K,) float32}``, e.g. ``{"speaker_mean": ..., "speaker_std": ...}``.

    Raises:
        ValueError: The export takes no speaker statistics; missing, non-finite or
            degenerate values (``std <= 0``, ``max <= min``); the wrong number of values.
    """
    where = metadata.get("path", "the export")
    spec = metadata.get("speaker_inputs")
    if not spec:
        raise ValueError(f"{where}: this model was trained with global normalisation; it "
                         "takes no speaker statistics")
    kind = metadata["front_end"]["normalise"]
    names, width = Normalise.KEYS[kind], int(spec["shape"][1])
    missing = [n for n in names if n not in statistics]
    if missing:
        raise ValueError(f"{where}: {kind} speaker statistics need {list(names)}, missing "
                         f"{missing}")
    values = []
    for name in names:
        value = np.asarray(statistics[name], np.float64).reshape(-1)
        if value.size == 1:
            value = np.repeat(value, width)
        if value.size != width:
            raise ValueError(f"{where}: speaker {name} needs 1 or {width} values, got "
                             f"{value.size}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{where}: speaker {name} is not finite: {value.tolist()}")
        values.append(value.astype(np.float32))
    if np.any(values[1] <= 0) if kind == "zscore" else np.any(values[1] <= values[0]):
        raise ValueError(f"{where}: degenerate speaker statistics {dict(zip(names, values))}")
    return dict(zip(spec["keys"], values))


def estimate_speaker_statistics(waveforms: Sequence[np.ndarray], front: FrontEnd) -> dict:
    """One speaker's feature statistics from its utterances, as training computed them.

    The features are the front end's own before normalisation (log-mels, or the voiced
    MFCC frames of a VAD preset), pooled over every frame of every utterance: one mean and
    population standard deviation over time and frequency for scalar statistics
    (`keras_ser.data.feature_statistics`), one per dimension for per-band statistics
    (`keras_ser.protocols.adversarial.FeatureBank.statistics`); min and max likewise.

    Args:
        waveforms: 1-D float32 arrays in [-1, 1] at ``front.sample_rate``, one speaker's.
        front: The export's `FrontEnd` (``speaker_norm``).

    Returns:
        ``{"mean", "std"}`` or ``{"min", "max"}``: floats, or lists of ``feature_dim``.

    Raises:
        ValueError: No waveform, or no frame (e.g. no voiced frame) in any of them.
    """
    if not len(waveforms):
        raise ValueError("estimating a speaker's statistics needs at least one utterance")
    units = build_units_model(front.unnormalised())
    frames = []
    for wave in waveforms:
        out = units(tf.constant(np.asarray(wave, np.float32)[None]), training=False)
        if isinstance(out, dict):
            out = out["features"][:, :int(out["length"][0])]
        frames.append(out.numpy()[0].astype(np.float64))
    frames = np.concatenate(frames)
    if not frames.size:
        raise ValueError("the utterances hold no frame to estimate statistics from")
    per_band = front.speaker_width > 1
    axis = 0 if per_band else None
    if front.normalise == "zscore":
        values = {"mean": frames.mean(axis=axis), "std": frames.std(axis=axis)}
    else:
        values = {"min": frames.min(axis=axis), "max": frames.max(axis=axis)}
    return {k: (v.tolist() if per_band else float(v)) for k, v in values.items()}


def resolve_speaker(metadata: dict, speaker, waveforms=None) -> dict | None:
    """The speaker statistics a request asks for.

    Args:
        metadata: The export's metadata.
        speaker: None (fallback statistics); ``"files"`` (estimate them from
            ``waveforms``, all one speaker's); a speaker id recorded in the export
            (``extra.speaker_statistics``: the fold's speakers); or a dict of values.
        waveforms: The request's waveforms, for ``"files"``.

    Returns:
        ``{input key: (K,) float32}`` for `ExportedClassifier.classify`, or None.

    Raises:
        ValueError: As `speaker_inputs`; an unknown speaker id (the message lists the
            known ones).
    """
    if speaker is None:
        return None
    front = FrontEnd.from_dict(metadata["front_end"])
    if not metadata.get("speaker_inputs"):
        speaker_inputs(metadata, {})  # raises: not a per-speaker export
    if isinstance(speaker, dict):
        statistics = speaker
    elif speaker == "files":
        statistics = estimate_speaker_statistics(waveforms, front)
    else:
        known = metadata.get("extra", {}).get("speaker_statistics") or {}
        if str(speaker) not in known:
            raise ValueError(f"{metadata.get('path', 'the export')}: no statistics of speaker "
                             f"{speaker!r}; the export knows {sorted(known)} (or estimate "
                             "them from the files)")
        statistics = known[str(speaker)]
    return speaker_inputs(metadata, statistics)


def predict_files(path: str, files: Sequence[str], speaker=None) -> list:
    """Classify audio files with an export.

    Every file is decoded (`keras_ser.audio.load_waveform`: any libsndfile format, rate
    and channel count, resampled to the model's rate, mono) and checked before any is
    classified, so a bad file fails the call without partial output.

    Args:
        path: Any export path `resolve` accepts.
        files: Audio files.
        speaker: For a per-speaker export: None (the training speakers' fallback
            statistics), ``"files"`` (all files are one speaker's: estimate the
            statistics from them), a speaker id the export recorded, or
            ``{"mean", "std"}`` / ``{"min", "max"}`` values (`resolve_speaker`).

    Returns:
        One dict per file, in order: ``{"file", "probabilities": {class: p},
        "predicted": class}`` (and ``"votes"`` for a vote export; ``"speaker_statistics"``
        when given).

    Raises:
        FileNotFoundError: The model folder or an audio file does not exist.
        ValueError: Not an export; a file cannot be decoded, is empty or is shorter than
            the model's ``min_samples`` (`keras_ser.audio.AudioError` is a ValueError);
            bad speaker statistics (`resolve_speaker`).
    """
    metadata = read_metadata(path)
    rate = int(metadata["sample_rate"])
    waves = []
    for file in files:
        waveform = audio_mod.load_waveform(file, rate)
        try:
            waves.append(audio_mod.check_waveform(waveform, metadata["min_samples"], rate))
        except ValueError as err:
            raise audio_mod.AudioError(f"{file}: {err}") from None
    given = resolve_speaker(metadata, speaker, [w[0] for w in waves])
    model = load(path)
    names = model.metadata["class_names"]
    results = []
    for file, wave in zip(files, waves):
        probs, votes, predicted = model.classify(wave, given)
        entry = {"file": os.fspath(file),
                 "probabilities": {n: float(p) for n, p in zip(names, probs[0])},
                 "predicted": names[int(predicted[0])]}
        if given is not None:
            entry["speaker_statistics"] = {k: v.tolist() for k, v in given.items()}
        if votes is not None:
            entry["votes"] = {n: float(v) for n, v in zip(names, votes[0])}
        results.append(entry)
    return results


# --- many inputs: folders, @lists, per-file errors, batches ------------------------------

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64", ".sd2", ".voc", ".nist", ".sph", ".htk",
    ".ircam", ".sf", ".paf", ".pvf", ".svx", ".8svx", ".xi", ".avr", ".wve", ".mpc", ".sds"})
"""File extensions (lower case) a folder is searched for: the formats libsndfile (hence
`keras_ser.audio.load_waveform`) reads, except headerless RAW and MATLAB files."""


_NO_AUDIO = "no audio file in this folder (searched recursively for .wav, .flac, .ogg, ...)"


def expand_inputs(inputs: Sequence[str]) -> list:
    """The files ``keras-ser predict`` is given, expanded.

    Each input is a file (kept as given, whatever its extension), a folder (searched
    recursively, sorted, for files with an `AUDIO_EXTENSIONS` extension; hidden entries
    skipped) or ``@LIST`` (a text file with one path per line, each a file or folder as
    above, taken as written, i.e. relative to the current directory; blank lines and lines
    starting with ``#`` are skipped, a line starting with ``@`` is a path, not a nested
    list).

    Returns:
        ``[(path, error)]`` in input order: ``error`` is None, or a message for an input
        that names no file (an unreadable list, a folder without audio); missing files are
        left to the decoder, which reports them per file.
    """
    out = []

    def add(path: str) -> None:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, n) for n in sorted(names)
                             if not n.startswith(".") and
                             os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS)
            if found:
                out.extend((f, None) for f in found)
            else:
                out.append((path, _NO_AUDIO))
        else:
            out.append((path, None))

    for item in inputs:
        item = os.fspath(item)
        if not item.startswith("@") or len(item) == 1:
            add(item)
            continue
        try:
            with open(item[1:], encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            out.append((item, f"cannot read the list ({getattr(err, 'strerror', None) or err})"))
            continue
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                add(line)
    return out


def _message(file: str, err: BaseException) -> str:
    """One line: an error's message without the leading ``<file>: `` it may carry."""
    text = " ".join(str(err).split()) or type(err).__name__
    prefix = f"{file}: "
    return text.removeprefix(prefix)


def _decode(file: str, metadata: dict):
    """A checked ``(samples,)`` float32 waveform at the export's rate, or an error
    message."""
    rate = int(metadata["sample_rate"])
    try:
        waveform = audio_mod.load_waveform(file, rate)
        return audio_mod.check_waveform(waveform, metadata["min_samples"], rate)[0]
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        return _message(file, err)


def _entries(model: ExportedClassifier, files, decoded, given, batch_size: int) -> list:
    """Per-file result dicts of decoded files (waveforms or error messages), in order.

    Waveforms of equal length are classified together, up to ``batch_size`` at a time
    (a batch of unequal lengths would need padding, which changes a window-averaging
    model's answer); a batch that fails is retried file by file.
    """
    names = model.metadata["class_names"]
    results = [{"file": os.fspath(f), "error": d} if isinstance(d, str) else None
               for f, d in zip(files, decoded)]
    by_length = {}
    for i, d in enumerate(decoded):
        if not isinstance(d, str):
            by_length.setdefault(int(d.shape[0]), []).append(i)

    def fill(batch):
        probs, votes, predicted = model.classify(np.stack([decoded[i] for i in batch]), given)
        for row, i in enumerate(batch):
            entry = {"file": os.fspath(files[i]),
                     "predicted": names[int(predicted[row])],
                     "probabilities": {n: float(p) for n, p in zip(names, probs[row])}}
            if votes is not None:
                entry["votes"] = {n: float(v) for n, v in zip(names, votes[row])}
            if given is not None:
                entry["speaker_statistics"] = {k: v.tolist() for k, v in given.items()}
            results[i] = entry

    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            try:
                fill(batch)
            except (tf.errors.OpError, ValueError, TypeError, MemoryError) as err:
                if len(batch) == 1:
                    results[batch[0]] = {"file": os.fspath(files[batch[0]]),
                                         "error": _message(files[batch[0]], err)}
                    continue
                for i in batch:
                    try:
                        fill([i])
                    except (tf.errors.OpError, ValueError, TypeError, MemoryError) as one:
                        results[i] = {"file": os.fspath(files[i]),
                                      "error": _message(files[i], one)}
    return results


def classify_files(path: str, files: Sequence[str], speaker=None, batch_size: int = 16,
                   chunk: int = 256):
    """Classify many audio files, each on its own: a bad file costs only its own result.

    Unlike `predict_files`, a file that is missing, undecodable, empty or shorter than the
    export's ``min_samples`` does not fail the call: its result holds an ``"error"``.
    Files are decoded ``chunk`` at a time and their results yielded in order, so a long
    list streams (with ``speaker="files"`` every file is decoded first: the statistics
    are estimated from all the good files, and only from them).

    Args:
        path: Any export path `resolve` accepts.
        files: Audio file paths (see `expand_inputs` for folders and lists).
        speaker: As `predict_files`.
        batch_size: The most waveforms per model call (equal-length files are batched;
            results do not depend on it).
        chunk: Files decoded per step when streaming.

    Returns:
        An iterator over one dict per file, in order: ``{"file", "predicted",
        "probabilities": {class: p}}`` (plus ``"votes"`` for a vote export and
        ``"speaker_statistics"`` when speaker statistics were given), or ``{"file",
        "error": message}``.

    Raises:
        FileNotFoundError, ValueError: Raised before any result: the export is missing
            or unusable, ``batch_size < 1``, or the speaker option does not fit the export
            (or, for ``"files"``, no statistics can be estimated from the good files).
    """
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    batch_size, chunk = int(batch_size), max(int(chunk), 1)
    files = [os.fspath(f) for f in files]
    metadata = read_metadata(path)
    given = None
    if speaker is not None and speaker != "files":
        given = resolve_speaker(metadata, speaker)
    elif speaker == "files" and not metadata.get("speaker_inputs"):
        speaker_inputs(metadata, {})  # raises: not a per-speaker export
    model = load(path)
    if speaker == "files":
        decoded = [_decode(f, metadata) for f in files]
        good = [d for d in decoded if not isinstance(d, str)]
        if good:
            given = resolve_speaker(metadata, "files", good)
        return iter(_entries(model, files, decoded, given, batch_size))

    def stream():
        for start in range(0, len(files), chunk):
            part = files[start:start + chunk]
            yield from _entries(model, part, [_decode(f, metadata) for f in part], given,
                                batch_size)

    return stream()
