"""Training of the NITK report's per-class DCGAN: BCE, Adam, a discriminator switch.

The report (Sec. 4.1 and 6.1) trains a plain DCGAN with the binary cross-entropy loss:

1. Discriminator step: generated images labelled 0 and real images labelled 1, BCE
   (Sec. 4.1.1). As in the PyTorch DCGAN code the listings come from, the real and the
   generated batch go through the discriminator separately (each is batch-normalised
   with its own statistics) and the two losses are summed.
2. Generator step: new noise, the generated images labelled 1, BCE through the
   discriminator (Sec. 4.1.2; the non-saturating loss).

Batch 128; Adam with learning rates "around 0.00002-0.00005 for the discriminator and
0.00017-0.0002 [for the] generator" (Sec. 6.1): 2e-5 and 2e-4 by default, Adam's
betas (0.5, 0.999) from the DCGAN code the listings come from (our choice; the report
gives none).

Two discriminators: D1 "initially ... so that the discriminator's performance doesn't
overshoot the generator's", then D2 "after some significant decrease in the generator's
loss" (Sec. 6.1). The report gives no rule; ours (`GeneratorLossDropped`): switch at
the end of the first epoch whose mean generator loss is at most ``switch_ratio`` (0.7)
times the highest epoch mean so far, or after ``max_d1_fraction`` (half) of the budget
at the latest. D2 starts from its own initialisation with a new Adam, the generator
keeps its weights (its Adam state restarts with the new trainer, our choice).

Batches are ``(B, 224, 224, 1)`` float32 images in [-1, 1] (`keras_ser.models.nitk_gan.
to_gan_image`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_ser import distribute
from keras_ser.models import nitk_gan
from keras_ser.training.base import GANTrainer
from keras_ser.training.resumable import DivergenceError, PersistentEarlyStopping


@keras.saving.register_keras_serializable(package="keras_ser")
class BCEGANTrainer(GANTrainer):
    """A generator and one discriminator trained with the BCE losses of a DCGAN.

    Args:
        generator: `keras_ser.models.nitk_gan.build_generator` output,
            ``(B, N_z) -> (B, 224, 224, 1)``.
        discriminator: `build_discriminator` output, ``(B, 224, 224, 1) -> (B, 1)``
            probabilities.
        n_z: Noise length N_z (default: the generator's input width).
        seed: Seed of the noise generator.

    Call:
        ``trainer(z)`` -> generated images ``(B, 224, 224, 1)`` in inference mode.

    Reference:
        NITK report, Secs. 4.1.1, 4.1.2 and 6.1; Radford et al., ICLR 2016 (DCGAN).
    """

    NETWORKS = ("generator", "discriminator")
    ARGS = ("n_z", "seed")

    def __init__(self, generator: keras.Model, discriminator: keras.Model,
                 n_z: int | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.n_z = int(n_z or generator.input_shape[-1])
        self.seed = seed
        self.noise = keras.random.SeedGenerator(seed)
        self.trackers = {k: keras.metrics.Mean(name=k)
                         for k in ("d_loss", "g_loss", "d_real", "d_fake")}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, z, training=False):
        """The generator's images of noise ``z``.

        Args:
            z: ``(B, N_z)`` float32 noise.
            training: Batch norm on the batch's statistics (True) or the moving ones.

        Returns:
            ``(B, 224, 224, 1)`` float32 images in [-1, 1] (tanh).
        """
        return self.generator(z, training=training)

    @staticmethod
    def _bce(target: float, probs):
        probs = ops.cast(probs, "float32")
        return ops.mean(keras.losses.binary_crossentropy(ops.full_like(probs, target), probs))

    def train_step(self, data):
        """One discriminator step, then one generator step (the report's Sec. 4.1).

        Args:
            data: ``(B, 224, 224, 1)`` real images in [-1, 1].

        Returns:
            Running means of ``d_loss`` (BCE on real + BCE on generated), ``g_loss``
            (BCE of generated images against the label real), ``d_real`` and ``d_fake``
            (the discriminator's mean output on real and on generated images).
        """
        import tensorflow as tf

        real = data
        batch = ops.shape(real)[0]
        z = distribute.replica_draw(keras.random.normal, (batch, self.n_z), seed=self.noise)
        fake = self.generator(z, training=True)
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            on_real = self.discriminator(real, training=True)
            on_fake = self.discriminator(tf.stop_gradient(fake), training=True)
            d_loss = self._bce(1.0, on_real) + self._bce(0.0, on_fake)
            scaled = distribute.scale_loss(d_loss)
        self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        g_vars = self.generator.trainable_variables
        z = distribute.replica_draw(keras.random.normal, (batch, self.n_z), seed=self.noise)
        with tf.GradientTape() as tape:
            g_loss = self._bce(1.0, self.discriminator(self.generator(z, training=True),
                                                       training=True))
            scaled = distribute.scale_loss(g_loss)
        self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        for key, value in (("d_loss", d_loss), ("g_loss", g_loss),
                           ("d_real", ops.mean(on_real)), ("d_fake", ops.mean(on_fake))):
            self.trackers[key].update_state(value)
        return {k: t.result() for k, t in self.trackers.items()}

    def generate(self, count: int, seed: int, batch_size: int = 64):
        """`generate` with this trainer's generator.

        Args:
            count: Images to make (0 gives an empty array).
            seed: Seed of the standard-normal noise (the same seed, the same images).
            batch_size: Images per forward pass.

        Returns:
            ``(count, 224, 224, 1)`` float32 numpy array in [-1, 1].
        """
        return generate(self.generator, count, seed, batch_size)


def generate(generator: keras.Model, count: int, seed: int, batch_size: int = 64):
    """``count`` images of ``generator`` from seeded standard-normal noise, in inference
    mode (batch norm with its moving statistics).

    Args:
        generator: ``(B, N_z) -> (B, 224, 224, 1)`` (`keras_ser.models.nitk_gan.
            build_generator`).
        count: Images to make (0 gives an empty array).
        seed: Seed of the ``(count, N_z)`` noise, drawn with numpy's ``default_rng``
            (the same seed, the same images).
        batch_size: Images per forward pass.

    Returns:
        ``(count, 224, 224, 1)`` float32 numpy array in [-1, 1].

    Reference:
        NITK report, Sec. 6.1 (images generated per class for augmentation).
    """
    import numpy as np

    n_z = generator.input_shape[-1]
    z = np.random.default_rng(seed).standard_normal((count, n_z)).astype(np.float32)
    parts = [np.asarray(generator(z[i:i + batch_size], training=False))
             for i in range(0, count, batch_size)]
    return np.concatenate(parts) if parts else np.zeros(
        (0, *generator.output_shape[1:]), np.float32)


def adam_optimizers(d_lr: float = 2e-5, g_lr: float = 2e-4, beta_1: float = 0.5) -> dict:
    """The report's Adam optimisers, ready for `BCEGANTrainer.compile`.

    Args:
        d_lr: Discriminator learning rate (report: 2e-5 to 5e-5).
        g_lr: Generator learning rate (report: 1.7e-4 to 2e-4).
        beta_1: Adam's first-moment decay (DCGAN's 0.5, our choice).

    Raises:
        ValueError: A learning rate outside the report's range.

    Reference:
        NITK report, Sec. 6.1.
    """
    if not 2e-5 <= d_lr <= 5e-5 or not 1.7e-4 <= g_lr <= 2e-4:
        raise ValueError(f"the report's learning rates are D in [2e-5, 5e-5] and G in "
                         f"[1.7e-4, 2e-4]; got D {d_lr:g}, G {g_lr:g}")
    return {"d_optimizer": keras.optimizers.Adam(d_lr, beta_1=beta_1, name="d_adam"),
            "g_optimizer": keras.optimizers.Adam(g_lr, beta_1=beta_1, name="g_adam")}


def build_trainer(generator: keras.Model, which: str, config, seed: int,
                  d_lr: float = 2e-5, g_lr: float = 2e-4) -> BCEGANTrainer:
    """A compiled `BCEGANTrainer` of ``generator`` against a new discriminator ``which``.

    Args:
        generator: The class's generator (shared by both stages).
        which: ``"d1"`` or ``"d2"`` (`keras_ser.models.nitk_gan.build_discriminator`).
        config: `NITKGANConfig` or preset name.
        seed: Noise seed.
        d_lr, g_lr: Adam learning rates (`adam_optimizers`).

    Raises:
        ValueError: Unknown discriminator or learning rates outside the report's range.
    """
    discriminator = nitk_gan.build_discriminator(which, config)
    trainer = BCEGANTrainer(generator, discriminator, seed=seed)
    trainer.compile(**adam_optimizers(d_lr, g_lr))
    return trainer


class GeneratorLossDropped(PersistentEarlyStopping):
    """Ends the D1 stage when the generator's loss has dropped (our switch rule).

    Stops training at the end of the first epoch whose mean ``g_loss`` is at most
    ``ratio`` times the highest epoch mean seen so far. Its counters live in the
    checkpoint (`keras_ser.training.resumable.Checkpoint`), so an interrupted stage
    resumes with the same peak. The weights kept are always the last epoch's.

    Args:
        ratio: Fraction of the peak generator loss that counts as "a significant
            decrease" (default 0.7, our choice; the report gives no number).

    Raises:
        ValueError: ``ratio`` outside (0, 1); (at an epoch end) no ``g_loss`` in the logs.
        DivergenceError: (at an epoch end) a NaN or infinite ``g_loss`` or ``d_loss``.

    Reference:
        NITK report, Sec. 6.1 ("After some significant decrease in the generator's loss,
        the training was performed with a ... deeper discriminator").
    """

    def __init__(self, ratio: float = 0.7):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}")
        super().__init__(monitor="g_loss", patience=1, mode="max")
        self.ratio = float(ratio)

    def on_epoch_end(self, epoch, logs=None):
        """Apply the switch rule to the epoch's mean generator loss.

        Args:
            epoch: 0-based epoch index.
            logs: Epoch logs with ``g_loss`` (and usually ``d_loss``), floats.

        Raises:
            ValueError: No ``g_loss`` in the logs.
            DivergenceError: ``g_loss`` or ``d_loss`` is NaN or infinite (this method
                replaces the parent's NaN check, so it makes its own).
        """
        logs = logs or {}
        value = logs.get("g_loss")
        if value is None:
            raise ValueError("'g_loss' is not in the epoch logs of the GAN stage")
        for key in ("g_loss", "d_loss"):
            if key in logs and not math.isfinite(float(logs[key])):
                raise DivergenceError(f"GAN stage diverged: {key} = {float(logs[key])} at "
                                      f"the end of epoch {epoch + 1}; the generator switch "
                                      f"rule cannot use it. Lower the learning rates.")
        value = float(value)
        if self.best is None or not value <= self.best:
            self.best, self.best_epoch = value, epoch
        self.wait = 0
        if value <= self.ratio * self.best and epoch > self.best_epoch:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def improved_at(self, epoch: int) -> bool:
        """Always True: the stage hands its last weights to the next one."""
        return True
