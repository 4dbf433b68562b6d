"""Stage 2 of Eskimez et al. (Interspeech 2020): WGAN-GP pre-training on unlabelled speech.

The critic is the SN discriminator with a single linear output, initialised (like the
generator) from the stage-1 autoencoder; the condition input of the generator stays
zero. One critic step per generator step (Sec. 3.1 of the paper), Adam with
beta_1 = 0.5, beta_2 = 0.99, learning rates 2e-5 (critic) and 2e-6 (generator),
gradient-penalty coefficient 10.

Losses (Gulrajani et al., NeurIPS 2017, Algorithm 1)::

    L_D = E[D(G(z))] - E[D(x)] + lambda * E[(||grad_xhat D(xhat)||_2 - 1)^2],
          xhat = eps * x + (1 - eps) * G(z),  eps ~ U[0, 1] per example
    L_G = -E[D(G(z))]
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_ser import distribute
from keras_ser.models import sngan
from keras_ser.training.base import GANTrainer


def _f32(x):
    return ops.cast(x, "float32")


def gradient_penalty(critic, real, fake, epsilon, training: bool = True):
    """WGAN-GP penalty ``mean((||grad_xhat D(xhat)||_2 - 1)^2)`` (without lambda).

    Args:
        critic: Callable ``(batch, ...) -> (batch, 1)``.
        real, fake: ``(batch, frames, mels)`` float32 patches.
        epsilon: ``(batch,)`` mixing weights in [0, 1]; ``xhat = eps*real + (1-eps)*fake``.
        training: Passed to the critic (``True`` runs the SN power iteration).

    Returns:
        Scalar float32. The gradient norm is taken per example over all patch entries.

    Reference:
        Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017, eq. 3.
    """
    real, fake = _f32(real), _f32(fake)
    eps = ops.reshape(_f32(epsilon), [-1] + [1] * (len(real.shape) - 1))
    mixed = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = _f32(critic(mixed, training=training))
    grads = tape.gradient(scores, mixed)
    norms = ops.sqrt(ops.sum(ops.square(grads), axis=list(range(1, len(real.shape)))) + 1e-12)
    return ops.mean(ops.square(norms - 1.0))


@keras.saving.register_keras_serializable(package="keras_ser")
class WGANGPTrainer(GANTrainer):
    """WGAN-GP trainer of the SN generator and critic.

    Args:
        generator: `keras_ser.models.sngan.build_generator` model (inputs ``[z, condition]``).
        critic: Discriminator with the ``"critic"`` head (1 linear unit).
        config: `SNGANConfig` (N_z, N_c, learning rates, betas, gp_weight).
        n_critic: Critic steps per generator step (paper: 1).
        seed: Seed of the noise and the penalty's mixing weights.

    Batches: dicts with ``"features"`` ``(batch, frames, mels)`` float32 in [-1, 1]
    (other keys ignored), or the tensor itself.

    Metrics: ``d_loss`` (critic loss incl. penalty), ``g_loss``, ``gp`` (penalty before
    lambda), ``w_distance`` (E[D(x)] - E[D(G(z))], the critic's Wasserstein estimate).

    Reference:
        Eskimez et al., Interspeech 2020, Secs. 3.1-3.2, 4.4; Gulrajani et al., NeurIPS 2017.
    """

    NETWORKS = ("generator", "critic")
    CONFIG = sngan.SNGANConfig
    ARGS = ("n_critic", "seed")

    def __init__(self, generator: keras.Model, critic: keras.Model, config,
                 n_critic: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config = sngan.get_sngan_preset(config)
        self.generator = generator
        self.critic = critic
        self.n_critic = int(n_critic)
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.trackers = {k: keras.metrics.Mean(name=k)
                         for k in ("d_loss", "g_loss", "gp", "w_distance")}
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _noise(self, batch):
        z = distribute.replica_draw(keras.random.normal, (batch, self.config.z_dim),
                                    seed=self.seed_generator)
        return z, ops.zeros((batch, self.config.n_classes), "float32")

    def critic_loss(self, real, training: bool = True):
        """Critic loss of one real batch with fresh noise: ``(loss, gp, w_distance)``."""
        batch = ops.shape(real)[0]
        fake = self.generator(self._noise(batch), training=True)
        real_score = _f32(self.critic(real, training=training))
        fake_score = _f32(self.critic(fake, training=training))
        eps = distribute.replica_draw(keras.random.uniform, (batch,), seed=self.seed_generator)
        gp = gradient_penalty(self.critic, real, fake, eps, training=training)
        w = ops.mean(real_score) - ops.mean(fake_score)
        return -w + self.config.gp_weight * gp, gp, w

    def train_step(self, data):
        """``n_critic`` critic updates (loss with gradient penalty), then one generator
        update, on a ``(batch, frames, mels)`` real batch; returns the running metrics."""
        real = data["features"] if isinstance(data, dict) else data
        for _ in range(self.n_critic):
            with tf.GradientTape() as tape:
                d_loss, gp, w = self.critic_loss(real)
                scaled = distribute.scale_loss(d_loss)
            grads = tape.gradient(scaled, self.critic.trainable_variables)
            self.d_optimizer.apply_gradients(zip(grads, self.critic.trainable_variables))
        batch = ops.shape(real)[0]
        with tf.GradientTape() as tape:
            fake = self.generator(self._noise(batch), training=True)
            g_loss = -ops.mean(_f32(self.critic(fake, training=False)))
            scaled = distribute.scale_loss(g_loss)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        for key, value in (("d_loss", d_loss), ("g_loss", g_loss), ("gp", gp),
                           ("w_distance", w)):
            self.trackers[key].update_state(value)
        return {k: t.result() for k, t in self.trackers.items()}

    def test_step(self, data):
        """The losses of a batch without updates (critic in inference mode)."""
        real = data["features"] if isinstance(data, dict) else data
        d_loss, gp, w = self.critic_loss(real, training=False)
        fake = self.generator(self._noise(ops.shape(real)[0]), training=False)
        g_loss = -ops.mean(_f32(self.critic(fake, training=False)))
        for key, value in (("d_loss", d_loss), ("g_loss", g_loss), ("gp", gp),
                           ("w_distance", w)):
            self.trackers[key].update_state(value)
        return {k: t.result() for k, t in self.trackers.items()}


def optimizers(config) -> dict:
    """`WGANGPTrainer.compile` arguments of Eskimez et al. (2020, Sec. 4.4): Adam with
    beta = (0.5, 0.99) and the config's learning rates (paper: G 2e-6, D 2e-5)."""
    config = sngan.get_sngan_preset(config)
    return {"g_optimizer": sngan.adam(config.g_lr, config, "g_adam"),
            "d_optimizer": sngan.adam(config.d_lr, config, "d_adam")}
