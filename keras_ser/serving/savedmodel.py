"""Write a serving model as a SavedModel in TensorFlow Serving's layout.

TensorFlow Serving watches a *base path* holding one folder per model version, each named
by a positive integer, and refuses a base path without one::

    export/                       base path (one per run)
      <model_name>/               --model_base_path=export/<model_name>
        1/                        a version: saved_model.pb, variables/, keras_ser.json
        2/

`export_model` writes the next version (or a given one) atomically: everything goes to a
temporary folder beside it, which is renamed into place once complete. The SavedModel
has the signatures ``serve`` and ``serving_default``: input ``"waveform"`` float32
``(batch, samples)``; outputs ``"probabilities"`` float32 ``(batch, classes)`` and, for
a VTLP-vote model, ``"votes"``. ``keras_ser.json`` beside ``saved_model.pb`` records the
class names, the sample rate, the shortest accepted input, the `FrontEnd` and the
decision rule (TensorFlow Serving ignores the file).

A model trained on per-speaker normalised features (``FrontEnd.speaker_norm``) gets a
second signature, ``serve_speaker``: the waveform plus the speaker's statistics
(``speaker_mean`` and ``speaker_std``, or ``speaker_min`` and ``speaker_max``, float32
``(batch, K)``). ``serve``/``serving_default`` take the waveform alone and fall back to
the training speakers' pooled statistics, so every client written for the other
exports works unchanged; the metadata's ``speaker_inputs`` says which is which.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_ser import io
from keras_ser.serving.builders import INPUT_KEY, OUTPUT_KEY, VOTES_KEY, FrontEnd
from keras_ser.serving.layers import Normalise

METADATA_FILE = "keras_ser.json"
METADATA_FORMAT = "keras_ser.serving"
METADATA_VERSION = 2
#: The signature taking the speaker's statistics (per-speaker front ends only).
SPEAKER_SIGNATURE = "serve_speaker"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def versions(model_dir: str) -> list:
    """The numeric version folders of ``model_dir``, ascending (``[]`` if none)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and int(d) > 0 and os.path.isdir(os.path.join(model_dir, d)))


def export_model(serving_model: keras.Model, base: str, name: str, *, class_names,
                 front: FrontEnd, extra: dict | None = None, version: int | None = None) -> str:
    """Export ``serving_model`` to ``base/name/<version>/``.

    Args:
        serving_model: From `keras_ser.serving.builders.build_serving_model`.
        base: The base folder (e.g. ``<run>/export``).
        name: Model name (letters, digits, ``_.-``), TensorFlow Serving's ``--model_name``.
        class_names: Output names, in order.
        front: The `FrontEnd` inside the model.
        extra: JSON-ready facts to keep (recipe, fold, corpus, scores).
        version: Version number; default one above the highest present (1 at first).
            An existing version is replaced.

    Returns:
        The version folder.

    Raises:
        ValueError: A bad name or version, or ``class_names`` that do not fit the model.
        TypeError: ``extra`` is not JSON-serialisable (nothing is written).
    """
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    model_dir = os.path.join(os.path.abspath(base), name)
    version = version if version is not None else (versions(model_dir) or [0])[-1] + 1
    if int(version) < 1:
        raise ValueError(f"TensorFlow Serving versions are positive integers, got {version}")
    outputs = serving_model.output
    width = (outputs[OUTPUT_KEY] if isinstance(outputs, dict) else outputs).shape[-1]
    class_names = [str(c) for c in class_names]
    if width != len(class_names):
        raise ValueError(f"the model outputs {width} classes but {len(class_names)} class "
                         "names were given")
    config = front.config
    metadata = {
        "format": METADATA_FORMAT, "version": METADATA_VERSION,
        "model_name": name, "model_version": int(version),
        "class_names": class_names,
        "sample_rate": int(config.sample_rate),
        "min_samples": int(config.window_samples),
        "min_ms": 1000.0 * config.window_samples / config.sample_rate,
        "input": {"key": INPUT_KEY, "dtype": "float32", "shape": ["batch", "samples"],
                  "range": [-1.0, 1.0]},
        "outputs": {key: {"dtype": "float32", "shape": ["batch", "classes"]}
                    for key in (outputs if isinstance(outputs, dict) else {OUTPUT_KEY: 0})},
        "decision": (f"majority vote over the {'VTLP copies' if front.warps else 'windows'} "
                     "(votes), ties to the highest mean probability" if VOTES_KEY in outputs
                     else "argmax of probabilities"),
        "front_end": front.to_dict(),
        "feature_config": dataclasses.asdict(config),
        "extra": extra or {},
    }
    if front.speaker_norm:
        keys, width = front.speaker_keys, front.speaker_width
        metadata["speaker_inputs"] = {
            "signature": SPEAKER_SIGNATURE, "keys": list(keys),
            "shape": ["batch", width], "dtype": "float32",
            "fallback": {key: front.statistics[stat] for key, stat in
                         zip(keys, Normalise.KEYS[front.normalise])},
            "note": ("serving_default uses the fallback (the training speakers' pooled "
                     f"statistics); {SPEAKER_SIGNATURE} takes the speaker's own, computed "
                     "as keras_ser.serving.predict.estimate_speaker_statistics does")}
    text = json.dumps(metadata, indent=2)
    target = os.path.join(model_dir, str(int(version)))
    tmp = io.temporary_folder(target)
    try:
        if front.speaker_norm:
            _write_speaker_archive(serving_model, front, tmp)
        else:
            serving_model.export(tmp, format="tf_saved_model", verbose=False)
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        io.replace_folder(tmp, target)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_speaker_archive(serving_model: keras.Model, front: FrontEnd, path: str) -> None:
    """Write a per-speaker serving model with its two signatures (see the module)."""
    keys, width = front.speaker_keys, front.speaker_width
    fallback = [np.full((width,), front.statistics[stat], np.float32)
                for stat in Normalise.KEYS[front.normalise]]
    wave_spec = tf.TensorSpec((None, None), tf.float32, name=INPUT_KEY)
    stat_specs = [tf.TensorSpec((None, width), tf.float32, name=key) for key in keys]

    def serve(waveform):
        n = tf.shape(waveform)[0]
        given = {key: tf.tile(tf.constant(value)[None], [n, 1])
                 for key, value in zip(keys, fallback)}
        return serving_model({INPUT_KEY: waveform, **given}, training=False)

    def serve_speaker(waveform, first, second):
        return serving_model({INPUT_KEY: waveform, keys[0]: first, keys[1]: second},
                             training=False)

    archive = keras.export.ExportArchive()
    archive.track(serving_model)
    archive.add_endpoint("serve", serve, input_signature=[wave_spec])
    archive.add_endpoint(SPEAKER_SIGNATURE, serve_speaker,
                         input_signature=[wave_spec, *stat_specs])
    archive.write_out(path, verbose=False)
