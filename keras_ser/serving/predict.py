"""Load any keras-ser export and classify audio files with it.

`resolve` accepts what a user has at hand: the run's ``export/`` base folder (holding one
model), a model folder ``export/<name>`` (its highest version is used) or a version
folder ``export/<name>/<version>``. `load` returns the reloaded ``serving_default``
signature and the export's ``keras_ser.json``; `predict_files` decodes, checks and
classifies files with the decision rule the export records (argmax, or the majority vote
of the VTLP copies).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

from keras_ser import audio as audio_mod
from keras_ser import io
from keras_ser.serving.builders import OUTPUT_KEY, VOTES_KEY, decide
from keras_ser.serving.savedmodel import (METADATA_FILE, METADATA_FORMAT, METADATA_VERSION,
                                          versions)


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

    def classify(self, waveforms) -> tuple:
        """``(probabilities (n, C), votes (n, C) or None, predicted (n,))`` of a float32
        ``(n, samples)`` batch, under the export's decision rule."""
        out = self.signature(waveform=tf.constant(waveforms, tf.float32))
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


def predict_files(path: str, files: Sequence[str]) -> list:
    """Classify audio files with an export.

    Every file is decoded (`keras_ser.audio.load_waveform`: any libsndfile format, rate
    and channel count, resampled to the model's rate, mono) and checked before any is
    classified, so a bad file fails the call without partial output.

    Returns:
        One dict per file, in order: ``{"file", "probabilities": {class: p},
        "predicted": class}`` (and ``"votes"`` for a vote export).

    Raises:
        FileNotFoundError: The model folder or an audio file does not exist.
        ValueError: Not an export; a file cannot be decoded, is empty or is shorter than
            the model's ``min_samples`` (`keras_ser.audio.AudioError` is a ValueError).
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
    model = load(path)
    names = model.metadata["class_names"]
    results = []
    for file, wave in zip(files, waves):
        probs, votes, predicted = model.classify(wave)
        entry = {"file": os.fspath(file),
                 "probabilities": {n: float(p) for n, p in zip(names, probs[0])},
                 "predicted": names[int(predicted[0])]}
        if votes is not None:
            entry["votes"] = {n: float(v) for n, v in zip(names, votes[0])}
        results.append(entry)
    return results
