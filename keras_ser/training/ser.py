"""The SER network of Eskimez et al. (Interspeech 2020), trained on real or synthetic patches.

Sec. 4.3 of the paper: the discriminator architecture (Table 1) whose last layer outputs
N_c classes, trained from scratch on the given data; Sec. 4.4: Adam with beta = (0.5,
0.99) like every network of the paper, learning rate 1e-5 decayed by a factor of 10
every 10k iterations. At test time a patch-wide window slides over each file with a hop
of 32 frames and the window probabilities are averaged (`keras_ser.scoring` with the
front end of the export).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_ser.models import sngan


def build_ser_network(config, name: str = "ser_network") -> keras.Model:
    """Table 1 discriminator with an N_c softmax output, compiled for training.

    Args:
        config: `SNGANConfig` (``n_classes``, ``ser_lr``, ``ser_decay_steps``, betas).
        name: Model name.

    Returns:
        Compiled model ``(batch, frames, mels)`` -> ``(batch, N_c)`` probabilities,
        sparse categorical cross-entropy; Adam (beta = (0.5, 0.99)) with the staircase
        decay ``ser_lr * 0.1 ** floor(step / ser_decay_steps)``; the optimiser is built,
        so a checkpoint can be restored before training.

    Reference:
        Eskimez et al., Interspeech 2020, Secs. 4.3-4.4.
    """
    config = sngan.get_sngan_preset(config)
    model = sngan.build_discriminator(config, "classifier", name=name)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.ser_lr, decay_steps=config.ser_decay_steps, decay_rate=0.1, staircase=True)
    model.compile(optimizer=sngan.adam(schedule, config, "ser_adam"),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


def as_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``{"features", "label"}`` batches as ``(features, label)`` tuples for ``fit``."""
    return dataset.map(lambda b: (b["features"], b["label"]),
                       num_parallel_calls=tf.data.AUTOTUNE)
