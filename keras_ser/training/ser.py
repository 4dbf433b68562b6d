"""The SER network of Eskimez et al. (Interspeech 2020) trained on real or synthetic patches.

Sec. 3.3 of the paper: the discriminator architecture (Table 1) with an N_c-unit softmax
output, trained from scratch with Adam at lr 1e-5, multiplied by 0.1 every 10k
iterations, on real patches or on synthetic patches only; at test time a patch-wide
window slides over each file with a hop of 32 frames and the window probabilities are
averaged per file. The result is reported as macro-F1 over files (with UA and WA here
too); the TSTR ratio (train synthetic, test real) is the synthetic-only macro-F1 divided
by the real-data macro-F1.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_ser import metrics
from keras_ser.models import sngan
from keras_ser.patches import PatchBank


def build_ser_network(config, name: str = "ser_network") -> keras.Model:
    """Table 1 discriminator with an N_c softmax output, compiled for training.

    Args:
        config: `SNGANConfig` (``n_classes``, ``ser_lr``, ``ser_decay_steps``).
        name: Model name.

    Returns:
        Compiled model ``(batch, frames, mels)`` -> ``(batch, N_c)`` probabilities; Adam
        with a staircase decay ``ser_lr * 0.1 ** floor(step / ser_decay_steps)``; its
        optimiser is built (so a checkpoint can be restored before training).
    """
    config = sngan.get_sngan_preset(config)
    model = sngan.build_discriminator(config, "classifier", name=name)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.ser_lr, decay_steps=config.ser_decay_steps, decay_rate=0.1, staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


def as_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``{"features", "label"}`` batches as ``(features, label)`` tuples for ``fit``."""
    return dataset.map(lambda b: (b["features"], b["label"]),
                       num_parallel_calls=tf.data.AUTOTUNE)


def file_probabilities(model: keras.Model, bank: PatchBank, width: int, hop: int,
                       minmax: tuple, batch_size: int = 256) -> np.ndarray:
    """Mean window probabilities per file.

    Args:
        model: Patch classifier ``(batch, width, mels) -> (batch, N_c)``.
        bank: The test files' log-mels.
        width: Window (patch) width in frames.
        hop: Window hop in frames (paper: 32).
        minmax: Normalisation extremes in dB.

    Returns:
        ``(files, N_c)`` float32.
    """
    patches, owner = bank.windows(width, hop, minmax)
    probs = model.predict(patches, batch_size=batch_size, verbose=0)
    out = np.zeros((len(bank), probs.shape[1]), np.float64)
    np.add.at(out, owner, probs)
    out /= np.bincount(owner, minlength=len(bank))[:, None]
    return out.astype(np.float32)


def score_files(probs: np.ndarray, labels: np.ndarray, class_names) -> dict:
    """Macro-F1, UA, WA, per-class recall and confusion of file-level probabilities."""
    labels = np.asarray(labels, np.int64)
    pred = probs.argmax(axis=1)
    n = len(class_names)
    return {"macro_f1": metrics.macro_f1(labels, pred, labels=list(range(n))),
            "ua": metrics.unweighted_accuracy(labels, pred),
            "wa": metrics.weighted_accuracy(labels, pred),
            "recall": metrics.per_class_recall(labels, pred, n).tolist(),
            "confusion": metrics.confusion(labels, pred, n).tolist(),
            "files": len(labels)}
