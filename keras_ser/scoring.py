"""Utterance scores computed exactly as the exported model computes them.

Every score keras-ser reports -- the validation score that picks the epoch, the test
score in the results table -- comes from a `Scorer`: it cuts each utterance with the
serving front end (`keras_ser.serving.builders.build_units_model`: checks, features,
normalisation, windows or VTLP copies), runs the classifier on all windows of all
utterances in large batches and combines them per utterance with the export's rule (mean
probability, or majority vote). `prepare` does the cutting once, so a validation set is
featurised once per fold, not once per epoch. A test in ``tests/test_scoring.py`` checks
that each recipe's reported scores equal those of its exported SavedModel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_ser import features as features_mod
from keras_ser.serving.builders import FrontEnd, build_units_model, decide


@dataclasses.dataclass
class Units:
    """What a `Scorer` classifies: every window (or copy) of a set of utterances.

    Attributes:
        arrays: One float32 array per unit: ``(crop_frames, dim)`` windows, or
            ``(frames, dim)`` whole utterances (lengths differ).
        owner: ``(units,)`` index of the utterance each unit belongs to.
        count: Number of utterances.
    """

    arrays: list
    owner: np.ndarray
    count: int


@dataclasses.dataclass
class Scores:
    """Per-utterance outputs: ``probabilities`` ``(n, C)`` (mean over units), ``votes``
    ``(n, C)`` vote shares (None without a vote) and ``predicted`` ``(n,)``."""

    probabilities: np.ndarray
    votes: np.ndarray | None
    predicted: np.ndarray


class Scorer:
    """Scores utterances with a classifier behind a `FrontEnd`.

    Args:
        classifier: Keras model: ``(n, crop_frames, dim)`` windows -> ``(n, C)``
            probabilities for a windowed front end; ``{"features": (n, frames, dim),
            "length": (n,)}`` -> ``(n, C)`` for whole utterances (the padding must not
            change the output, as for `keras_ser.models.crnn.CRNN`).
        front: The front end (the same one the export is built with).
        batch_size: Units per classifier call.
    """

    def __init__(self, classifier, front: FrontEnd, batch_size: int = 256):
        self.classifier, self.front, self.batch_size = classifier, front, int(batch_size)
        self.units_model = build_units_model(front)
        self._cut = tf.function(lambda w: self.units_model(w, training=False),
                                input_signature=[tf.TensorSpec([1, None], tf.float32)])
        check = self.units_model.get_layer("check_waveform")
        normalise = None if front.image else self.units_model.get_layer("normalise")
        windows = self.units_model.get_layer("sliding_windows") if front.windowed else None
        config = front.config

        def warped(w, a):
            # The same check and windows as `_cut`: a too-short utterance must raise, not
            # become a unit of zero frames, and a crop classifier must see its windows.
            x = normalise(features_mod.compute_features(check(w), config, a, jit=False))
            return windows(x)[0] if windows is not None else x

        self._warped = tf.function(warped, input_signature=[tf.TensorSpec([1, None], tf.float32),
                                                            tf.TensorSpec([1], tf.float32)])
        dim = config.feature_dim
        if front.image:
            self._forward = tf.function(
                lambda x: classifier(x, training=False),
                input_signature=[tf.TensorSpec([None, *config.image_size, 3], tf.float32)])
        elif front.windowed:
            self._forward = tf.function(
                lambda x: classifier(x, training=False),
                input_signature=[tf.TensorSpec([None, front.crop_frames, dim], tf.float32)])
        else:
            self._forward = tf.function(
                lambda x, n: classifier({"features": x, "length": n}, training=False),
                input_signature=[tf.TensorSpec([None, None, dim], tf.float32),
                                 tf.TensorSpec([None], tf.int32)])

    @staticmethod
    def _float(waveform) -> np.ndarray:
        w = np.asarray(waveform)
        if w.dtype.kind in "iu":
            return (w.astype(np.float32) / 32768.0)[None]
        return w.astype(np.float32)[None]

    def prepare(self, waveforms: Sequence[np.ndarray], alphas=None) -> Units:
        """Cut utterances into the units the classifier sees.

        Args:
            waveforms: ``(samples,)`` arrays, int16 PCM or float in [-1, 1].
            alphas: Optional VTLP factor per utterance (one warped copy each, e.g. the
                validation set of Etienne et al.'s second strategy); replaces the front
                end's copies.

        Raises:
            tf.errors.InvalidArgumentError: An utterance shorter than one STFT window.
            ValueError: ``alphas`` with a voice-activity front end.
        """
        if alphas is not None and self.front.config.vad:
            raise ValueError("VTLP factors cannot be combined with a voice-activity front end")
        arrays, owner = [], []
        for i, w in enumerate(waveforms):
            if alphas is not None:
                cut = self._warped(self._float(w), tf.constant([alphas[i]], tf.float32))
                units = cut.numpy()
            else:
                cut = self._cut(self._float(w))
                if isinstance(cut, dict):  # voiced frames only (Tu et al.'s VAD)
                    units = cut["features"].numpy()[:, :int(cut["length"].numpy()[0])]
                else:
                    units = cut.numpy()[0]
                    if not (self.front.windowed or self.front.warps):
                        units = units[None]
            arrays.extend(units)
            owner.extend([i] * len(units))
        return Units(arrays, np.asarray(owner, np.int64), len(waveforms))

    def unit_outputs(self, units: Units, forward=None) -> np.ndarray:
        """``forward`` (default: the classifier) on every unit, in unit order.

        Args:
            units: From `prepare`.
            forward: A function with the classifier's inputs (windows, or
                ``(features, length)`` of whole utterances) returning ``(n, D)``
                tensors, e.g. an embedding network; default the classifier's
                probabilities.

        Returns:
            ``(units, D)`` float32.
        """
        forward = forward or self._forward
        if self.front.windowed or self.front.image:
            stacked = np.stack(units.arrays)
            return np.concatenate([np.asarray(forward(stacked[i:i + self.batch_size]))
                                   for i in range(0, len(stacked), self.batch_size)])
        lengths = np.array([len(a) for a in units.arrays], np.int32)
        order = np.argsort(lengths, kind="stable")
        out = [None] * len(units.arrays)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            longest = int(lengths[chosen].max())
            batch = np.zeros((len(chosen), longest, units.arrays[0].shape[-1]), np.float32)
            for row, k in enumerate(chosen):
                batch[row, :lengths[k]] = units.arrays[k]
            probs = np.asarray(forward(batch, lengths[chosen]))
            for row, k in enumerate(chosen):
                out[k] = probs[row]
        return np.stack(out)

    def __call__(self, units: Units) -> Scores:
        """Per-utterance scores of prepared units (see `Scores`)."""
        per_unit = self.unit_outputs(units)
        counts = np.bincount(units.owner, minlength=units.count)[:, None]
        probs = np.zeros((units.count, per_unit.shape[1]), np.float64)
        np.add.at(probs, units.owner, per_unit)
        probs = (probs / counts).astype(np.float32)
        votes = None
        if self.front.aggregate == "vote":
            hits = np.eye(per_unit.shape[1])[per_unit.argmax(axis=1)]
            votes = np.zeros_like(probs, dtype=np.float64)
            np.add.at(votes, units.owner, hits)
            votes = (votes / counts).astype(np.float32)
        return Scores(probs, votes, decide(probs, votes))

    def score(self, waveforms: Sequence[np.ndarray], alphas=None) -> Scores:
        """`prepare` and call in one go."""
        return self(self.prepare(waveforms, alphas))
