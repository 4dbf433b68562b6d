"""Stage 3 of Eskimez et al. (Interspeech 2020): conditional fine-tuning with N_c + 1 classes.

The pre-trained critic's output layer is replaced by N_c + 1 softmax units (the N_c
emotions and "fake"). Each step:

* discriminator: sparse categorical cross-entropy of real patches against their
  emotion and of generated patches against the fake class (index N_c) (Sec. 3.2: "we
  use the sparse categorical cross-entropy loss");
* generator: fed noise and a one-hot emotion drawn uniformly, trained so that the
  discriminator assigns the intended emotion (cross-entropy against it). The paper
  gives only the discriminator's loss; this generator loss, the uniform conditions and
  z ~ N(0, I) are our choice, in the spirit of the N_c + 1 discriminators the paper
  cites (Mariani et al. 2018; Chatziagapi et al. 2019).

Adam with beta = (0.5, 0.99) and learning rates 2e-6 (G) / 2e-5 (D) "throughout GAN
training (both pre-training and fine-tuning)" (Sec. 4.4), `optimizers`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_ser import distribute
from keras_ser.models import sngan
from keras_ser.training.base import GANTrainer


def _ce(labels, probs):
    return ops.mean(keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(probs, "float32")))


@keras.saving.register_keras_serializable(package="keras_ser")
class ConditionalGANTrainer(GANTrainer):
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
        Eskimez et al., Interspeech 2020, Sec. 3.2 ("Fine-Tuning").
    """

    NETWORKS = ("generator", "discriminator")
    CONFIG = sngan.SNGANConfig
    ARGS = ("seed",)

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
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k)
                         for k in ("d_loss", "d_real_loss", "g_loss", "d_real_acc",
                                   "g_acc")}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _conditioned_noise(self, batch):
        z = distribute.replica_draw(keras.random.normal, (batch, self.config.z_dim),
                                    seed=self.seed_generator)
        labels = distribute.replica_draw(keras.random.randint, (batch,), minval=0,
                                         maxval=self.config.n_classes,
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
            scaled = distribute.scale_loss(d_loss)
        if training:
            grads = tape.gradient(scaled, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(
                zip(grads, self.discriminator.trainable_variables))
        z, cond, wanted = self._conditioned_noise(batch)
        with tf.GradientTape() as tape:
            fake = self.generator([z, cond], training=training)
            p_gen = self.discriminator(fake, training=False)
            g_loss = _ce(wanted, p_gen)
            scaled = distribute.scale_loss(g_loss)
        if training:
            grads = tape.gradient(scaled, self.generator.trainable_variables)
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


def optimizers(config) -> dict:
    """`ConditionalGANTrainer.compile` arguments: Adam, beta = (0.5, 0.99), the config's
    fine-tuning learning rates (paper: the pre-training ones, G 2e-6 and D 2e-5,
    "throughout GAN training (both pre-training and fine-tuning)", Sec. 4.4)."""
    config = sngan.get_sngan_preset(config)
    return {"g_optimizer": sngan.adam(config.ft_g_lr, config, "g_adam"),
            "d_optimizer": sngan.adam(config.ft_d_lr, config, "d_adam")}
