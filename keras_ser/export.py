"""A served emotion classifier that takes raw audio: build, export, reload, predict.

The serving model computes everything from the waveform inside the graph, so a client
sends float32 samples and gets class probabilities back::

    waveform (batch, samples) float32, [-1, 1], at the model's sample rate
      -> CheckWaveform       rank 2, at least one STFT window, else InvalidArgumentError
      -> AudioFeatures       log-mel (batch, frames, mels), dB (`keras_ser.features`)
      -> MinMaxNormalise     corpus min/max -> [-1, 1]
      -> SlidingWindows      (batch, windows, crop_frames, mels)
      -> FoldWindows         (batch * windows, crop_frames, mels)
      -> classifier          (batch * windows, classes) probabilities
      -> MeanOverWindows     (batch, classes): mean of the window probabilities

Source: the classifier is Chang & Scherer (ICASSP 2017)'s CNN over fixed-size log-mel
spectrogram crops; the "chang" preset follows their front end (`features.PRESETS`). Cutting
a whole utterance into overlapping crops and averaging the crops' probabilities is our
choice for utterance-level inference (the paper classifies crops), as is the half-crop hop.

An export (`export_classifier`) is a SavedModel with the signatures ``serve`` and
``serving_default`` (input key ``"waveform"``, float32 ``(batch, samples)``; output key
``"probabilities"``, float32 ``(batch, classes)``), usable by TensorFlow Serving, plus a
``keras_ser.json`` with the class names, sample rate, minimum length and front-end settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_ser import audio as audio_mod
from keras_ser import features as features_mod

METADATA_FILE = "keras_ser.json"
METADATA_FORMAT = "keras_ser.serving"
METADATA_VERSION = 1
INPUT_KEY = "waveform"
OUTPUT_KEY = "probabilities"

__all__ = [
    "CheckWaveform",
    "ExportedClassifier",
    "FoldWindows",
    "MeanOverWindows",
    "MinMaxNormalise",
    "SlidingWindows",
    "build_serving_model",
    "build_window_model",
    "export_classifier",
    "load_exported",
    "predict_files",
    "read_metadata",
    "rest_instances",
    "silence_level",
]


def _as_number_or_list(value):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return float(array)
    if array.ndim == 1:
        return [float(v) for v in array]
    raise ValueError(f"expected a scalar or a 1-D sequence, got shape {array.shape}")


@keras.saving.register_keras_serializable(package="keras_ser")
class CheckWaveform(keras.layers.Layer):
    """Identity on waveforms that fails in the graph on a wrong rank or too few samples.

    A waveform shorter than one STFT window has no frame, so it has no features to
    classify. Both checks are graph ops (`tf.ensure_shape` for the rank,
    `tf.debugging.assert_greater_equal` for the length), so they also guard the exported
    signature and TensorFlow Serving returns their messages. (A reloaded signature checks
    a tensor's dtype but not its rank: without the rank check a ``(samples,)`` tensor
    would run and fail deep inside the STFT.)

    Args:
        min_samples: The fewest samples accepted (``FeatureConfig.window_samples``).
        sample_rate: Hz, to state the minimum in ms in the message.
        **kwargs: Layer arguments (``name``, ...).

    Input shape:
        ``(batch, samples)`` float32.

    Output shape:
        The input, unchanged.

    Raises:
        tf.errors.InvalidArgumentError: (when called) the input is not rank 2 ("Shape of
            tensor ... is not compatible with expected shape [?,?]"), or
            ``samples < min_samples`` ("audio too short: ... at least N samples (M ms
            ...)").
    """

    def __init__(self, min_samples: int, sample_rate: int = 16000, **kwargs):
        super().__init__(**kwargs)
        if int(min_samples) < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.min_samples = int(min_samples)
        self.sample_rate = int(sample_rate)

    def call(self, waveform):
        waveform = tf.ensure_shape(waveform, [None, None], name="check_rank")
        samples = tf.shape(waveform)[1]
        check = tf.debugging.assert_greater_equal(
            samples, tf.constant(self.min_samples, samples.dtype),
            message=(f"audio too short: the model needs at least {self.min_samples} samples "
                     f"({1000.0 * self.min_samples / self.sample_rate:g} ms at "
                     f"{self.sample_rate} Hz, one STFT window) per utterance"))
        with tf.control_dependencies([check] if check is not None else []):
            return tf.identity(waveform)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"min_samples": self.min_samples, "sample_rate": self.sample_rate})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class MinMaxNormalise(keras.layers.Layer):
    """Min-max scaling of features to [-1, 1] with fixed corpus statistics.

    ``y = 2 (x - minimum) / (maximum - minimum) - 1`` (`features.minmax_to_unit`); values
    outside the corpus range map outside [-1, 1] (no clipping).

    Args:
        minimum: Corpus minimum of the features (dB for log-mel), a scalar or one value
            per feature band (broadcast over the last axis).
        maximum: Corpus maximum, same form as ``minimum``.
        **kwargs: Layer arguments.

    Input shape:
        ``(..., feature_dim)`` float.

    Output shape:
        Same as the input.

    Raises:
        ValueError: (at construction) some ``maximum <= minimum``, or they are not
            scalars / 1-D.

    Reference:
        Eskimez et al., Interspeech 2020, Sec. 3.1 (min-max to [-1, 1]).
    """

    def __init__(self, minimum, maximum, **kwargs):
        super().__init__(**kwargs)
        self.minimum = _as_number_or_list(minimum)
        self.maximum = _as_number_or_list(maximum)
        lo, hi = np.asarray(self.minimum), np.asarray(self.maximum)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"minimum and maximum must be finite, got {minimum}, {maximum}")
        if np.any(hi <= lo):
            raise ValueError(f"maximum must exceed minimum, got minimum {minimum}, maximum "
                             f"{maximum}")
        self._min = np.asarray(self.minimum, np.float32)
        self._max = np.asarray(self.maximum, np.float32)

    def call(self, features):
        return features_mod.minmax_to_unit(features, self._min, self._max)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"minimum": self.minimum, "maximum": self.maximum})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class SlidingWindows(keras.layers.Layer):
    """Cut feature sequences into overlapping fixed-length windows (dynamic time axis).

    Windows of ``crop_frames`` frames start at frames ``0, hop, 2 hop, ...`` as long as
    they fit; when the last of them ends before the last frame, one more window ending at
    the last frame is added, so every frame is covered. A sequence shorter than
    ``crop_frames`` is padded at the end with ``pad_value`` to one window. All sequences in
    a batch have the same length (features of equal-length waveforms), so each yields the
    same number of windows::

        frames' = max(frames, crop_frames)
        windows = 1 + (frames' - crop_frames) // hop_frames
                  (+ 1 if (windows - 1) * hop_frames + crop_frames < frames')

    Built from `tf.shape`, `tf.range`, `tf.pad` and `tf.gather`, so it works in graph mode
    with an unknown number of frames (inside `tf.function`, exported signatures).

    Args:
        crop_frames: Window length in frames (the classifier's input width).
        hop_frames: Frames between window starts (>= 1; ``crop_frames`` for no overlap).
        min_frames: Sequences with fewer frames raise (default 1: an empty sequence).
        pad_value: Value of padded frames: the features of silence after normalisation
            (``-1.0`` after min-max when the corpus minimum is the log floor).
        **kwargs: Layer arguments.

    Input shape:
        ``(batch, frames, ...)``, typically ``(batch, frames, mels)``.

    Output shape:
        ``(batch, windows, crop_frames, ...)``.

    Raises:
        ValueError: (at construction) ``crop_frames``, ``hop_frames`` or ``min_frames``
            below 1.
        tf.errors.InvalidArgumentError: (when called) ``frames < min_frames``.
    """

    def __init__(self, crop_frames: int, hop_frames: int, min_frames: int = 1,
                 pad_value: float = -1.0, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("crop_frames", crop_frames), ("hop_frames", hop_frames),
                             ("min_frames", min_frames)):
            if int(value) < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.crop_frames = int(crop_frames)
        self.hop_frames = int(hop_frames)
        self.min_frames = int(min_frames)
        self.pad_value = float(pad_value)

    def window_starts(self, frames):
        """First frame of each window for ``frames`` frames (int or scalar int tensor).

        Args:
            frames: Number of frames of the (unpadded) sequence.

        Returns:
            ``(windows,)`` int32 tensor of start frames.
        """
        frames = tf.convert_to_tensor(frames, tf.int32)
        crop = tf.constant(self.crop_frames, tf.int32)
        length = tf.maximum(frames, crop)
        count = 1 + (length - crop) // self.hop_frames
        starts = tf.range(count, dtype=tf.int32) * self.hop_frames
        last = length - crop
        tail = tf.cast((count - 1) * self.hop_frames < last, tf.int32)
        return tf.concat([starts, tf.fill(tf.reshape(tail, [1]), last)], axis=0)

    def call(self, features):
        rank = len(features.shape)
        if rank < 2:
            raise ValueError(f"SlidingWindows needs (batch, frames, ...), got rank {rank}")
        frames = tf.shape(features)[1]
        check = tf.debugging.assert_greater_equal(
            frames, tf.constant(self.min_frames, tf.int32),
            message=f"sequence too short: fewer than {self.min_frames} frames")
        with tf.control_dependencies([check] if check is not None else []):
            pad = tf.maximum(self.crop_frames - frames, 0)
            paddings = [[0, 0], [0, pad]] + [[0, 0]] * (rank - 2)
            padded = tf.pad(features, paddings,
                            constant_values=tf.cast(self.pad_value, features.dtype))
        starts = self.window_starts(frames)
        indices = starts[:, tf.newaxis] + tf.range(self.crop_frames, dtype=tf.int32)
        return tf.gather(padded, indices, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, self.crop_frames, *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"crop_frames": self.crop_frames, "hop_frames": self.hop_frames,
                       "min_frames": self.min_frames, "pad_value": self.pad_value})
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class FoldWindows(keras.layers.Layer):
    """Merge the batch and window axes: ``(batch, windows, ...)`` -> ``(batch * windows, ...)``.

    Lets a classifier of single windows run on every window of every utterance at once.
    """

    def call(self, windows):
        inner = [d if d is not None else tf.shape(windows)[i + 2]
                 for i, d in enumerate(windows.shape[2:])]
        return tf.reshape(windows, [-1, *inner])

    def compute_output_shape(self, input_shape):
        batch, windows = input_shape[0], input_shape[1]
        merged = batch * windows if batch is not None and windows is not None else None
        return (merged, *input_shape[2:])


@keras.saving.register_keras_serializable(package="keras_ser")
class MeanOverWindows(keras.layers.Layer):
    """Average per-window outputs back to one row per utterance.

    Called on ``[window_outputs, windows]``: ``window_outputs`` is ``(batch * windows, C)``
    in the order `FoldWindows` produced from ``windows`` ``(batch, windows, ...)``; the
    result is ``(batch, C)``, the mean over each utterance's windows. Averaging window
    probabilities is our choice for utterance-level inference (Chang & Scherer 2017
    classify single crops).
    """

    def call(self, inputs):
        outputs, windows = inputs
        lead = tf.shape(windows)[:2]
        per_window = tf.reshape(outputs, tf.concat([lead, tf.shape(outputs)[1:]], axis=0))
        return tf.reduce_mean(per_window, axis=1)

    def compute_output_shape(self, input_shape):
        outputs_shape, windows_shape = input_shape
        return (windows_shape[0], *outputs_shape[1:])


def _feature_config(features: str, sample_rate: int):
    """The preset, with ``sample_rate`` overriding it, and the overrides used."""
    if not isinstance(features, str):
        raise TypeError(f"features must be a preset name of keras_ser.features.PRESETS, got "
                        f"{type(features).__name__}")
    preset = features_mod.get_preset(features)
    overrides = {} if sample_rate == preset.sample_rate else {"sample_rate": int(sample_rate)}
    config = preset.replace(**overrides)
    if config.image_size:
        raise ValueError(f"preset '{features}' produces images, not (frames, bands) "
                         "sequences; sliding windows need a sequence preset")
    return config, overrides


def silence_level(config, minimum, maximum) -> float:
    """Features of digital silence after min-max normalisation (the pad value of crops).

    Silence has mel power 0, floored at ``config.amin``: ``10 log10(amin)`` dB (-100 dB by
    default), normalised with `features.minmax_to_unit`. Equals -1.0 when the corpus
    minimum is that floor.

    Args:
        config: The `features.FeatureConfig` of the front end.
        minimum, maximum: Scalar corpus minimum and maximum, dB.

    Returns:
        The normalised silence value (float).

    Raises:
        ValueError: ``minimum``/``maximum`` are not scalars.
    """
    if np.ndim(minimum) or np.ndim(maximum):
        raise ValueError("per-band minimum/maximum: pass pad_value explicitly")
    if config.n_mfcc:
        raise ValueError("MFCC features have no single silence level: pass pad_value")
    floor_db = 10.0 * np.log10(config.amin)
    return float(2.0 * (floor_db - minimum) / (maximum - minimum) - 1.0)


def _window_front_end(features, minimum, maximum, crop_frames, hop_frames, sample_rate,
                      pad_value):
    config, overrides = _feature_config(features, sample_rate)
    if hop_frames is None:
        hop_frames = max(1, int(crop_frames) // 2)
    if pad_value is None:
        pad_value = silence_level(config, minimum, maximum)
    waveform = keras.Input(shape=(None,), dtype="float32", name=INPUT_KEY)
    checked = CheckWaveform(config.window_samples, config.sample_rate,
                            name="check_waveform")(waveform)
    feats = features_mod.AudioFeatures(features, name="features", **overrides)(checked)
    feats = MinMaxNormalise(minimum, maximum, name="minmax")(feats)
    windows = SlidingWindows(crop_frames, hop_frames, min_frames=1, pad_value=pad_value,
                             name="sliding_windows")(feats)
    return waveform, windows


def build_window_model(*, features: str = "chang", minimum, maximum, crop_frames: int,
                       hop_frames: int | None = None, sample_rate: int = 16000,
                       pad_value: float | None = None) -> keras.Model:
    """The front end of `build_serving_model` alone: waveforms -> normalised crops.

    Lets an evaluation cut every utterance into crops once and then score them with the
    classifier in large batches after every epoch, with the very crops the served model
    uses. Arguments as `build_serving_model`.

    Returns:
        Model: ``"waveform"`` ``(batch, samples)`` float32 -> ``(batch, windows,
        crop_frames, mels)`` float32.

    Raises:
        KeyError, ValueError: As `build_serving_model`.
    """
    waveform, windows = _window_front_end(features, minimum, maximum, crop_frames,
                                          hop_frames, sample_rate, pad_value)
    return keras.Model(waveform, windows, name="windows")


def build_serving_model(classifier: keras.Model, *, features: str = "chang", minimum,
                        maximum, crop_frames: int, hop_frames: int | None = None,
                        class_names: Sequence[str], sample_rate: int = 16000,
                        pad_value: float | None = None,
                        name: str = "serving") -> keras.Model:
    """Wrap a crop classifier into a model from raw waveforms to utterance probabilities.

    The model computes the preset's log-mel in the graph, min-max normalises it with the
    corpus statistics, cuts it into ``crop_frames`` windows every ``hop_frames`` frames
    (`SlidingWindows`), runs ``classifier`` on all windows of all utterances in one call and
    averages the window probabilities per utterance. Source: Chang & Scherer, ICASSP 2017
    (CNN over fixed-size spectrogram crops, the "chang" front end); the window averaging
    and default half-crop hop are our choice.

    Args:
        classifier: Keras model mapping ``(n, crop_frames, mels)`` float32 normalised
            features to ``(n, len(class_names))`` class probabilities.
        features: Feature preset name of `keras_ser.features.PRESETS` (a sequence preset,
            not an image one).
        minimum, maximum: Corpus minimum and maximum of the features (dB), as in training.
        crop_frames: Window length in frames (the classifier's time axis).
        hop_frames: Frames between windows; default ``crop_frames // 2`` (at least 1).
        class_names: Names of the classifier's outputs, in order.
        sample_rate: Hz of the input waveforms; overrides the preset's rate when it
            differs.
        pad_value: Value padding utterances shorter than one window; default the
            normalised features of silence (`silence_level`, -1.0 when ``minimum`` is the
            log floor).
        name: Model name.

    Returns:
        A functional `keras.Model`: input ``"waveform"`` float32 ``(batch, samples)`` in
        [-1, 1] at ``sample_rate``; output a dict ``{"probabilities": (batch, C)}``.
        Waveforms shorter than one STFT window (``FeatureConfig.window_samples`` samples)
        raise `tf.errors.InvalidArgumentError` when the model runs, also once exported.

    Raises:
        KeyError: Unknown preset.
        ValueError: An image preset; ``maximum <= minimum``; bad window sizes; the
            classifier's output width differs from ``len(class_names)``.
    """
    waveform, windows = _window_front_end(features, minimum, maximum, crop_frames,
                                          hop_frames, sample_rate, pad_value)
    flat = FoldWindows(name="fold_windows")(windows)
    window_probs = classifier(flat)
    if window_probs.shape[-1] != len(class_names):
        raise ValueError(f"the classifier outputs {window_probs.shape[-1]} classes but "
                         f"{len(class_names)} class names were given")
    probs = MeanOverWindows(name=OUTPUT_KEY)([window_probs, windows])
    return keras.Model(waveform, {OUTPUT_KEY: probs}, name=name)


def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def export_classifier(serving_model: keras.Model, path: str, *, class_names: Sequence[str],
                      features: str, sample_rate: int, minimum, maximum, crop_frames: int,
                      hop_frames: int | None, extra: dict | None = None,
                      overwrite: bool = False) -> str:
    """Export a serving model as a SavedModel with a ``keras_ser.json`` beside it.

    The SavedModel (``serving_model.export``) has the signatures ``serve`` and
    ``serving_default``: input ``"waveform"`` float32 ``(batch, samples)``, output
    ``"probabilities"`` float32 ``(batch, C)``. ``keras_ser.json`` records the class names,
    sample rate (Hz), ``min_samples`` (and ``min_ms``), the feature preset and its full
    config, the normalisation, the window settings and ``extra``. Everything is written to
    a temporary folder beside ``path`` and renamed into place, so ``path`` is either absent,
    the previous export, or the complete new one.

    Args:
        serving_model: From `build_serving_model`.
        path: Output folder (must not exist unless ``overwrite``).
        class_names: Output names, in order.
        features: Feature preset name the model computes.
        sample_rate: Hz of the model's input.
        minimum, maximum: The normalisation statistics in the model (dB).
        crop_frames, hop_frames: The window settings in the model (``hop_frames=None``:
            ``crop_frames // 2``).
        extra: JSON-serialisable facts to keep (training run, corpus, metrics, ...).
        overwrite: Replace an existing export at ``path``.

    Returns:
        ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: The arguments contradict the model (its class count, its
            `MinMaxNormalise`/`SlidingWindows` settings) or the preset's sample rate
            cannot be overridden; ``extra`` is not JSON-serialisable (TypeError).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    config, overrides = _feature_config(features, sample_rate)
    if hop_frames is None:
        hop_frames = max(1, int(crop_frames) // 2)
    class_names = [str(c) for c in class_names]
    output = serving_model.output
    output = output[OUTPUT_KEY] if isinstance(output, dict) else output
    if output.shape[-1] != len(class_names):
        raise ValueError(f"the model outputs {output.shape[-1]} classes but "
                         f"{len(class_names)} class names were given")
    norm = _layers_of(serving_model, MinMaxNormalise)
    if norm and (np.any(np.asarray(norm[0].minimum) != np.asarray(_as_number_or_list(minimum)))
                 or np.any(np.asarray(norm[0].maximum)
                           != np.asarray(_as_number_or_list(maximum)))):
        raise ValueError(f"minimum/maximum ({minimum}, {maximum}) differ from the model's "
                         f"({norm[0].minimum}, {norm[0].maximum})")
    windows = _layers_of(serving_model, SlidingWindows)
    if windows and (windows[0].crop_frames, windows[0].hop_frames) != (crop_frames, hop_frames):
        raise ValueError(f"crop_frames/hop_frames ({crop_frames}, {hop_frames}) differ from "
                         f"the model's ({windows[0].crop_frames}, {windows[0].hop_frames})")
    fronts = _layers_of(serving_model, features_mod.AudioFeatures)
    if fronts and fronts[0].config != config:
        raise ValueError(f"features '{features}' at {sample_rate} Hz differ from the model's "
                         f"front end ({fronts[0].preset}, {fronts[0].config.sample_rate} Hz)")
    metadata = {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "class_names": class_names,
        "sample_rate": int(config.sample_rate),
        "min_samples": int(config.window_samples),
        "min_ms": 1000.0 * config.window_samples / config.sample_rate,
        "input": {"key": INPUT_KEY, "dtype": "float32", "shape": ["batch", "samples"],
                  "range": [-1.0, 1.0]},
        "output": {"key": OUTPUT_KEY, "dtype": "float32", "shape": ["batch", "classes"]},
        "features": features,
        "feature_overrides": overrides,
        "feature_config": dataclasses.asdict(config),
        "normalisation": {"kind": "minmax", "minimum": _as_number_or_list(minimum),
                          "maximum": _as_number_or_list(maximum), "range": [-1.0, 1.0]},
        "windows": {"crop_frames": int(crop_frames), "hop_frames": int(hop_frames),
                    "pad_value": windows[0].pad_value if windows else None,
                    "aggregation": "mean of window probabilities"},
        "extra": extra,
    }
    text = json.dumps(metadata, indent=2, sort_keys=False)  # TypeError before writing
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=parent)
    old = None
    try:
        serving_model.export(tmp, format="tf_saved_model", verbose=False)
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old",
                                   dir=parent)
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


class ExportedClassifier:
    """The ``serving_default`` signature of a reloaded export, kept alive with its module.

    Calling it is calling the signature: ``exported(waveform=tensor)`` with float32
    ``(batch, samples)`` returns ``{"probabilities": (batch, C)}`` tensors. The module from
    `tf.saved_model.load` is held so the signature's variables stay alive.

    Input checking of a reloaded signature (TF 2.21): a tensor of another dtype raises
    `tf.errors.InvalidArgumentError`; a NumPy array of the wrong rank raises `TypeError`,
    but a NumPy integer array is silently cast to float32 (int16 PCM would be read as
    +-32768 full scale), so check client-side with `keras_ser.audio.check_waveform`.

    Attributes:
        signature: The `ConcreteFunction` ``serving_default``.
        module: The loaded SavedModel object.
    """

    def __init__(self, module, signature):
        self.module = module
        self.signature = signature

    def __call__(self, *args, **kwargs):
        return self.signature(*args, **kwargs)

    @property
    def structured_input_signature(self):
        """The signature's input specs (``((), {"waveform": TensorSpec})``)."""
        return self.signature.structured_input_signature


def read_metadata(path: str) -> dict:
    """Read and check the ``keras_ser.json`` of an export folder (no TensorFlow work).

    Args:
        path: The export folder.

    Returns:
        The metadata dict (see `export_classifier`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a keras-ser export (no ``saved_model.pb`` or
            ``keras_ser.json``, unreadable JSON, an unknown format or a newer version).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model folder")
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"{path}: not an exported model (no saved_model.pb; write one with "
                         "keras_ser.export.export_classifier)")
    if not os.path.isfile(meta_path):
        raise ValueError(f"{path}: a SavedModel without {METADATA_FILE}, not a keras-ser "
                         "export")
    try:
        with open(meta_path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: unreadable metadata ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise ValueError(f"{meta_path}: not keras-ser serving metadata")
    if metadata.get("version", 0) > METADATA_VERSION:
        raise ValueError(f"{meta_path}: metadata version {metadata['version']} is newer than "
                         f"this keras-ser reads ({METADATA_VERSION})")
    return metadata


def load_exported(path: str):
    """Reload an export written by `export_classifier`.

    Args:
        path: The export folder.

    Returns:
        ``(classifier, metadata)``: an `ExportedClassifier` (call it with
        ``waveform=`` a float32 ``(batch, samples)`` tensor; it returns
        ``{"probabilities": (batch, C)}``) and the ``keras_ser.json`` dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a keras-ser export (`read_metadata`), or the
            SavedModel has no ``serving_default`` signature.
    """
    metadata = read_metadata(path)
    module = tf.saved_model.load(os.fspath(path))
    signature = module.signatures.get("serving_default")
    if signature is None:
        raise ValueError(f"{path}: the SavedModel has no serving_default signature")
    return ExportedClassifier(module, signature), metadata


def predict_files(path: str, files: Sequence[str]) -> list:
    """Classify audio files with an export.

    Every file is decoded (`audio.load_waveform`, resampled to the model's rate, mono)
    and checked (`audio.check_waveform`) before any is classified, so a bad file fails
    the call without partial output. Each file is one ``serving_default`` call.

    Args:
        path: Export folder (`export_classifier`).
        files: Audio files (any libsndfile format, rate and channel count).

    Returns:
        One dict per file, in order: ``{"file": str, "probabilities": {class: float},
        "predicted": class}``.

    Raises:
        FileNotFoundError: The model folder or an audio file does not exist.
        ValueError: Not an export; an audio file cannot be decoded, is empty, or is
            shorter than the model's ``min_samples`` (`audio.AudioError` is a ValueError).
    """
    metadata = read_metadata(path)
    rate = int(metadata["sample_rate"])
    batches = []
    for file in files:
        waveform = audio_mod.load_waveform(file, rate)
        try:
            batches.append(audio_mod.check_waveform(waveform, metadata["min_samples"], rate))
        except ValueError as err:
            raise audio_mod.AudioError(f"{file}: {err}") from None
    classifier, metadata = load_exported(path)
    names = metadata["class_names"]
    results = []
    for file, batch in zip(files, batches):
        probs = classifier(waveform=tf.constant(batch))[OUTPUT_KEY].numpy()[0]
        results.append({"file": os.fspath(file),
                         "probabilities": {n: float(p) for n, p in zip(names, probs)},
                         "predicted": names[int(np.argmax(probs))]})
    return results


def _all_ints(rows) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for row in rows for v in row)


def rest_instances(body: str | bytes | dict) -> tf.Tensor:
    """Map a TensorFlow Serving REST predict body onto the signature's input tensor.

    Accepts the row format ``{"instances": [[samples...], ...]}`` (also
    ``{"instances": [{"waveform": [samples...]}, ...]}``) and the columnar format
    ``{"inputs": {"waveform": [[samples...], ...]}}`` or ``{"inputs": [[...], ...]}``.
    JSON numbers become float32, as TensorFlow Serving converts them to the signature's
    dtype.

    Args:
        body: The request body, as JSON text or the parsed dict.

    Returns:
        ``(batch, samples)`` float32 tensor for ``signature(waveform=...)``.

    Raises:
        ValueError: Not JSON or neither key present; instances of different lengths
            (ragged: send them in separate requests, as padding would change the
            prediction); not a list of sample lists; integer PCM (samples beyond +-1 that
            are all integers: divide by 32768); NaN/inf.
    """
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f"request body is not JSON ({err})") from None
    if not isinstance(body, dict):  # a malformed request, not a programming error
        raise ValueError("request body must be a JSON object with 'instances' or "  # noqa: TRY004
                         "'inputs'")
    if "instances" in body:
        rows = body["instances"]
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            if not all(INPUT_KEY in r for r in rows):
                raise ValueError(f"every instance object needs the key '{INPUT_KEY}'")
            rows = [r[INPUT_KEY] for r in rows]
    elif "inputs" in body:
        rows = body["inputs"]
        if isinstance(rows, dict):
            if INPUT_KEY not in rows:
                raise ValueError(f"'inputs' has no key '{INPUT_KEY}' (got {sorted(rows)})")
            rows = rows[INPUT_KEY]
    else:
        raise ValueError("request body has neither 'instances' nor 'inputs'")
    if not isinstance(rows, list) or not rows:
        raise ValueError("expected a non-empty list of instances, each a list of samples")
    if not all(isinstance(r, list) for r in rows):
        raise ValueError("each instance must be a list of float samples (one utterance); "
                         "for one utterance send {\"instances\": [[...samples...]]}")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f"ragged instances: utterances of {lengths} samples in one request; "
                         "the input is a (batch, samples) tensor, so send utterances of "
                         "different lengths in separate requests (padding would change "
                         "the prediction)")
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"instances must hold numbers only ({err})") from None
    if array.ndim != 2:
        raise ValueError(f"instances must be lists of numbers, got nested shape "
                         f"{array.shape}")
    if array.size and np.max(np.abs(array)) > 1.0 and _all_ints(rows):
        raise ValueError("instances look like integer PCM (integers beyond +-1); send float "
                         "samples in [-1, 1]: divide int16 PCM by 32768")
    if not np.all(np.isfinite(array)):
        raise ValueError("instances contain NaN or infinite samples")
    return tf.constant(array.astype(np.float32))
