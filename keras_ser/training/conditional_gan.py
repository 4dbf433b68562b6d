"""Stage 3 of Eskimez et al. (Interspeech 2020): conditional fine-tuning with N_c + 1 classes.

The pre-trained critic's output layer is replaced by N_c + 1 softmax units (the N_c
emotions and "fake"). Each step:

* discriminator: sparse categorical cross-entropy of real patches against their
  emotion and of generated patches against the fake class (index N_c);
* generator: fed noise and a one-hot emotion drawn uniformly, trained so that the
  discriminator assigns the intended emotion (cross-entropy against it).

Adam with beta_1 = 0.5, beta_2 = 0.99 as in stage 2; the paper does not give the
fine-tuning learning rates, so `SNGANConfig.ft_g_lr` / ``ft_d_lr`` default to the
stage-2 values.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_ser.models import sngan
from keras_ser.training.wgan_gp import build_adam


def _ce(labels, probs):
    return ops.mean(keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(probs, "float32")))


class ConditionalGANTrainer(keras.Model):
    """Conditional fine-tuning of the SN generator with an N_c + 1 discriminator.

    Args:
        generator: `keras_ser.models.sngan.build_generator` model.
        discriminator: Discriminator with the ``"fake_class"`` head (N_c + 1 softmax),
            e.g. ``attach_head(trunk_of(critic), config, "fake_class")``.
        config: `SNGANConfig` (N_z, N_c, ``ft_g_lr``, ``ft_d_lr``, betas).
        seed: Seed of the noise and of the drawn conditions.

    Batches: dicts with ``"features"`` ``(batch, frames, mels)`` in [-1, 1] and
    ``"label"`` ``(batch,)`` int32 emotion indices in [0, N_c).

    Metrics: ``d_loss`` (real + fake cross-entropy), ``d_real_loss`` (its real-patch
    part: how well the discriminator tells the emotions), ``g_loss``, ``d_real_acc``
    (emotion accuracy of the discriminator on real patches, argmax over the N_c + 1
    outputs), ``g_acc`` (share of generated patches assigned their intended emotion).

    Reference:
        Eskimez et al., Interspeech 2020, Sec. 2.3 ("conditional fine-tuning").
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, config,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config = sngan.get_sngan_preset(config)
        units = int(discriminator.output.shape[-1])
        if units != self.config.n_classes + 1:
            raise ValueError(f"the fine-tuning discriminator needs N_c + 1 = "
                             f"{self.config.n_classes + 1} outputs, got {units}")
        self.generator = generator
        self.discriminator = discriminator
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k)
                         for k in ("d_loss", "d_real_loss", "g_loss", "d_real_acc",
                                   "g_acc")}
        self.built = True

    def compile(self, **kwargs):
        """Create and build ``g_optimizer`` and ``d_optimizer`` (Adam)."""
        super().compile(**kwargs)
        c = self.config
        self.g_optimizer = build_adam(c.ft_g_lr, c, self.generator.trainable_variables,
                                      "g_adam")
        self.d_optimizer = build_adam(c.ft_d_lr, c, self.discriminator.trainable_variables,
                                      "d_adam")

    @property
    def optimizers(self) -> dict:
        """Name -> optimiser, for checkpointing."""
        return {"g": self.g_optimizer, "d": self.d_optimizer}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _conditioned_noise(self, batch):
        z = keras.random.normal((batch, self.config.z_dim), seed=self.seed_generator)
        labels = keras.random.randint((batch,), 0, self.config.n_classes,
                                      seed=self.seed_generator)
        return z, ops.one_hot(labels, self.config.n_classes), labels

    def _step(self, data, training: bool):
        real, labels = data["features"], ops.cast(data["label"], "int32")
        batch = ops.shape(real)[0]
        fake_class = ops.full((batch,), self.config.n_classes, "int32")
        z, cond, wanted = self._conditioned_noise(batch)
        with tf.GradientTape() as tape:
            fake = self.generator([z, cond], training=training)
            p_real = self.discriminator(real, training=training)
            p_fake = self.discriminator(fake, training=training)
            real_loss = _ce(labels, p_real)
            d_loss = real_loss + _ce(fake_class, p_fake)
        if training:
            grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(
                zip(grads, self.discriminator.trainable_variables))
        z, cond, wanted = self._conditioned_noise(batch)
        with tf.GradientTape() as tape:
            fake = self.generator([z, cond], training=training)
            p_gen = self.discriminator(fake, training=False)
            g_loss = _ce(wanted, p_gen)
        if training:
            grads = tape.gradient(g_loss, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        real_acc = ops.mean(ops.cast(ops.argmax(p_real, axis=-1) == labels, "float32"))
        g_acc = ops.mean(ops.cast(ops.argmax(p_gen, axis=-1) == wanted, "float32"))
        for key, value in (("d_loss", d_loss), ("d_real_loss", real_loss), ("g_loss", g_loss),
                           ("d_real_acc", real_acc), ("g_acc", g_acc)):
            self.trackers[key].update_state(value)
        return {k: t.result() for k, t in self.trackers.items()}

    def train_step(self, data):
        """One discriminator update (real -> emotion, generated -> fake), then one
        generator update (generated -> intended emotion); returns the running metrics."""
        return self._step(data, training=True)

    def test_step(self, data):
        """The same losses without updates (inference mode)."""
        return self._step(data, training=False)


def generate(generator: keras.Model, labels, seed: int = 0, batch_size: int = 256,
             z_dim: int = None, n_classes: int = None):
    """Patches of the conditional generator for integer emotion ``labels``.

    Args:
        generator: `build_generator` model (inputs ``[z, condition]``).
        labels: ``(n,)`` ints in [0, N_c); ``-1`` gives the zero condition (stages 1-2).
        seed: Seed of the standard-normal noise.
        batch_size: Patches per generator call.
        z_dim, n_classes: Read from the generator's inputs when ``None``.

    Returns:
        ``(n, frames, mels)`` float32 in [-1, 1].
    """
    import numpy as np

    z_dim = z_dim or int(generator.inputs[0].shape[-1])
    n_classes = n_classes or int(generator.inputs[1].shape[-1])
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(labels), z_dim)).astype(np.float32)
    cond = sngan.condition_vectors(labels, n_classes)
    out = [np.asarray(generator([z[i:i + batch_size], cond[i:i + batch_size]],
                                training=False), np.float32)
           for i in range(0, len(labels), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,) + tuple(generator.output.shape[1:]),
                                                    np.float32)
