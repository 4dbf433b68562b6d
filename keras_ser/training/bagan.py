"""Training of the baseline GAN (Chatziagapi et al., Interspeech 2019; BAGAN).

Three steps, after Mariani et al. 2018 (BAGAN) as adapted by Chatziagapi et
al. 2019 to emotional speech:

1. `BaselineAutoencoderTrainer`: encoder (`build_baseline_encoder`) and decoder (the
   generator, `build_baseline_generator`) trained together to reconstruct the training
   patches of every emotion, with a mean absolute error.
2. `fit_class_latents`: encode the training patches and fit one normal
   N(mu_c, Sigma_c) per emotion (`keras_ser.models.bagan.ClassLatents`).
3. `BaselineGANTrainer`: the generator *is* the decoder and the discriminator's trunk
   *is* the encoder's (`build_baseline_discriminator` shares the layers), with a new
   N_c + 1 softmax. Each step draws classes c uniformly and codes z ~ N(mu_c, Sigma_c);
   the discriminator learns real patch -> its class and G(z) -> "fake" (index N_c);
   the generator learns D(G(z)) -> c. Both losses are sparse categorical
   cross-entropies (BAGAN).

From BAGAN's public implementation rather than the paper text: one discriminator
batch of B real and ceil(B / N_c) generated patches (so "fake" is about as frequent as
each emotion), a generator batch of B + ceil(B / N_c), and Adam with beta_1 = 0.5.

Our choices: the autoencoder loss is the mean absolute error (BAGAN's code uses the
mean squared error; we could not check what Chatziagapi et al. used); the generator runs in training
mode (batch statistics) in both GAN updates and the discriminator in inference mode in
the generator update (no dropout, moving batch-norm statistics); class sampling
happens inside the traced step from stored means and Cholesky factors; losses are
taken from float32 logits, so the step also runs under the ``mixed_bfloat16`` policy.

Batches are dicts: ``features`` ``(B, frames, mels)`` float32 in [-1, 1] and ``label``
``(B,)`` int32 emotion in [0, N_c).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_ser import distribute
from keras_ser.models import bagan
from keras_ser.training.base import EncoderDecoderTrainer, GANTrainer


def _f32(x):
    return ops.cast(x, "float32")


@keras.saving.register_keras_serializable(package="keras_ser")
class BaselineAutoencoderTrainer(EncoderDecoderTrainer):
    """BAGAN stage 1: encoder + decoder trained on L1 reconstruction of real patches.

    Args:
        encoder: `keras_ser.models.bagan.build_baseline_encoder` output,
            ``(B, frames, mels) -> (B, N_z)``.
        decoder: `keras_ser.models.bagan.build_baseline_generator` output,
            ``(B, N_z) -> (B, frames, mels)``.
        config: `BaselineConfig` or preset name (learning rate and Adam betas).

    Call:
        ``trainer(features)`` -> ``(B, frames, mels)`` float32 reconstruction.

    Reference:
        Mariani et al. 2018 (autoencoder initialisation); Chatziagapi et al.,
        Interspeech 2019.
    """

    CONFIG = bagan.BaselineConfig

    def __init__(self, encoder: keras.Model, decoder: keras.Model, config="paper", **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.config = bagan.get_baseline_preset(config)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, features, training=False):
        code = self.encoder(features, training=training)
        return _f32(self.decoder(code, training=training))

    def _loss(self, features, training):
        x = _f32(features)
        return ops.mean(ops.abs(self(x, training=training) - x))

    def train_step(self, data):
        """One Adam step on the mean absolute reconstruction error.

        Args:
            data: ``{"features": (B, frames, mels), ...}`` (other keys ignored).

        Returns:
            ``{"loss": running mean L1 error}`` (in units of the [-1, 1] patch scale).
        """
        import tensorflow as tf

        variables = self._ae_variables()
        with tf.GradientTape() as tape:
            loss = self._loss(data["features"], training=True)
            scaled = distribute.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        """Mean absolute reconstruction error in inference mode."""
        self.loss_tracker.update_state(self._loss(data["features"], training=False))
        return {"loss": self.loss_tracker.result()}

def encode(encoder: keras.Model, features, batch_size: int = 256) -> np.ndarray:
    """Autoencoder codes of patches, in inference mode.

    Args:
        encoder: `build_baseline_encoder` output.
        features: ``(n, frames, mels)`` float32 patches in [-1, 1].
        batch_size: Patches per forward pass.

    Returns:
        ``(n, N_z)`` float32.
    """
    features = np.asarray(features, np.float32)
    outs = [np.asarray(encoder(features[i:i + batch_size], training=False), np.float32)
            for i in range(0, len(features), batch_size)]
    if not outs:
        return np.zeros((0, encoder.output.shape[-1]), np.float32)
    return np.concatenate(outs)


def fit_class_latents(encoder: keras.Model, features, labels, config="paper",
                      batch_size: int = 256) -> bagan.ClassLatents:
    """BAGAN stage 2: encode the training patches and fit one normal per class.

    Call it after the autoencoder stage and before the GAN stage (the discriminator
    shares, and so moves, the encoder's trunk).

    Args:
        encoder: The trained encoder.
        features: ``(n, frames, mels)`` training patches.
        labels: ``(n,)`` integer classes in [0, N_c).
        config: `BaselineConfig` or preset name (N_c and the ridge).
        batch_size: Patches per forward pass.

    Raises:
        ValueError: See `ClassLatents.fit` (e.g. a class with fewer than 2 patches).

    Reference:
        Mariani et al. 2018 (class-conditional latent generator).
    """
    config = bagan.get_baseline_preset(config)
    return bagan.ClassLatents.fit(encode(encoder, features, batch_size), labels,
                                  n_classes=config.n_classes, ridge=config.ridge)


@keras.saving.register_keras_serializable(package="keras_ser")
class BaselineGANTrainer(GANTrainer):
    """BAGAN stage 3: N_c + 1 class adversarial training with class-normal inputs.

    Args:
        generator: `build_baseline_generator` output (the trained decoder).
        discriminator: `build_baseline_discriminator` output (needs a ``logits`` layer).
        latents: `ClassLatents` fitted on the training codes (N_c classes, N_z dims).
        config: `BaselineConfig` or preset name (learning rates, Adam betas).
        seed: Seed of the in-graph class and noise draws.

    Call:
        ``trainer(z)`` -> ``generator(z)``, ``(B, frames, mels)`` float32.

    Raises:
        ValueError: The latents' N_c or N_z disagree with the networks.

    Reference:
        Mariani et al. 2018 (adversarial training); Chatziagapi et al., Interspeech 2019.
    """

    NETWORKS = ("generator", "discriminator")
    CONFIG = bagan.BaselineConfig
    ARGS = ("seed",)

    def __init__(self, generator: keras.Model, discriminator: keras.Model,
                 latents, config="paper", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(latents, dict):
            latents = bagan.ClassLatents.from_dict(latents)
        self.generator = generator
        self.discriminator = discriminator
        self.logits_model = bagan.discriminator_logits(discriminator)
        self.config = bagan.get_baseline_preset(config)
        self.latents = latents
        self.seed = seed
        self.n_classes = int(discriminator.output.shape[-1]) - 1
        self.z_dim = int(generator.input.shape[-1])
        if (latents.n_classes, latents.z_dim) != (self.n_classes, self.z_dim):
            raise ValueError(f"latents have N_c={latents.n_classes}, N_z={latents.z_dim}; "
                             f"the networks have N_c={self.n_classes}, N_z={self.z_dim}")
        self.latent_means = self.add_weight(
            shape=latents.means.shape, name="latent_means", trainable=False,
            initializer=keras.initializers.Constant(latents.means.astype(np.float32)))
        self.latent_cholesky = self.add_weight(
            shape=latents.cholesky.shape, name="latent_cholesky", trainable=False,
            initializer=keras.initializers.Constant(latents.cholesky.astype(np.float32)))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = {name: keras.metrics.Mean(name=name)
                          for name in ("d_loss", "g_loss", "d_real_acc", "d_fake_acc")}
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, z, training=False):
        return _f32(self.generator(z, training=training))

    def sample_latent(self, labels):
        """In-graph draws ``z = mu_c + L_c e``, e ~ N(0, I): ``(n,)`` int -> ``(n, N_z)``."""
        labels = ops.cast(labels, "int32")
        noise = distribute.replica_draw(keras.random.normal, (ops.shape(labels)[0], self.z_dim),
                                        seed=self.seed_generator)
        means = ops.take(self.latent_means, labels, axis=0)
        factors = ops.take(self.latent_cholesky, labels, axis=0)
        return means + ops.einsum("nij,nj->ni", factors, noise)

    def _fake_labels(self, n):
        return distribute.replica_draw(keras.random.randint, (n,), minval=0,
                                       maxval=self.n_classes, seed=self.seed_generator,
                                       dtype="int32")

    def _discriminator_terms(self, real, labels, training):
        """D and G losses of one batch; G runs in training mode only when ``training``."""
        batch = ops.shape(real)[0]
        n_fake = (batch + self.n_classes - 1) // self.n_classes
        fake_labels = self._fake_labels(n_fake)
        fake = self.generator(self.sample_latent(fake_labels), training=training)
        patches = ops.concatenate([_f32(real), _f32(fake)], axis=0)
        targets = ops.concatenate([ops.cast(labels, "int32"),
                                   ops.full((n_fake,), self.n_classes, dtype="int32")], axis=0)
        logits = _f32(self.logits_model(patches, training=training))
        d_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
            targets, logits, from_logits=True))
        hits = ops.cast(ops.argmax(logits, axis=-1) == targets, "float32")
        real_acc = ops.mean(hits[:batch])
        fake_acc = ops.mean(hits[batch:])
        return d_loss, real_acc, fake_acc

    def _generator_loss(self, batch, training):
        g_labels = self._fake_labels(batch + (batch + self.n_classes - 1) // self.n_classes)
        fake = self.generator(self.sample_latent(g_labels), training=training)
        # The discriminator runs in training mode here, as in BAGAN's reference code:
        # its batch-norm moving statistics lag far behind early in training, so the
        # inference-mode discriminator would give the generator a stale signal.
        logits = _f32(self.logits_model(fake, training=training))
        return ops.mean(keras.losses.sparse_categorical_crossentropy(
            g_labels, logits, from_logits=True))

    def train_step(self, data):
        """One discriminator update, then one generator update.

        Args:
            data: ``{"features": (B, frames, mels) float32, "label": (B,) int32}``.

        Returns:
            Running means of ``d_loss`` and ``g_loss`` (nats), ``d_real_acc`` (real
            patches assigned their own class) and ``d_fake_acc`` (generated patches
            assigned "fake"), both over the N_c + 1 outputs.
        """
        import tensorflow as tf

        real, labels = data["features"], data["label"]
        d_vars = self.discriminator.trainable_weights
        with tf.GradientTape() as tape:
            d_loss, real_acc, fake_acc = self._discriminator_terms(real, labels, training=True)
            scaled = distribute.scale_loss(d_loss)
        self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        g_vars = self.generator.trainable_weights
        with tf.GradientTape() as tape:
            g_loss = self._generator_loss(ops.shape(real)[0], training=True)
            scaled = distribute.scale_loss(g_loss)
        self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        return self._record(d_loss, g_loss, real_acc, fake_acc)

    def test_step(self, data):
        """The same losses and accuracies without updates, every network in inference mode."""
        real, labels = data["features"], data["label"]
        d_loss, real_acc, fake_acc = self._discriminator_terms(real, labels, training=False)
        g_loss = self._generator_loss(ops.shape(real)[0], training=False)
        return self._record(d_loss, g_loss, real_acc, fake_acc)

    def _record(self, d_loss, g_loss, real_acc, fake_acc):
        values = {"d_loss": d_loss, "g_loss": g_loss, "d_real_acc": real_acc,
                  "d_fake_acc": fake_acc}
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config["latents"] = self.latents.to_dict()
        return config


def generate(generator: keras.Model, latents: bagan.ClassLatents, labels, seed=None,
             batch_size: int = 256) -> np.ndarray:
    """Generated patches of given classes (codes from `ClassLatents.sample`).

    Args:
        generator: Trained `build_baseline_generator` output (run in inference mode).
        latents: The class normals the generator was trained with.
        labels: ``(n,)`` integer classes in [0, N_c).
        seed: Seed of the code draws (same seed, same patches).
        batch_size: Codes per forward pass.

    Returns:
        ``(n, frames, mels)`` float32 in [-1, 1].

    Raises:
        ValueError: A label out of range.
    """
    z = latents.sample(labels, seed=seed)
    out_shape = tuple(generator.output.shape[1:])
    outs = [np.asarray(_f32(generator(z[i:i + batch_size], training=False)))
            for i in range(0, len(z), batch_size)]
    if not outs:
        return np.zeros((0,) + out_shape, np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def _adam(learning_rate, config, name):
    config = bagan.get_baseline_preset(config)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=config.beta_1,
                                 beta_2=config.beta_2, name=name)


def autoencoder_optimizers(config="paper") -> dict:
    """`BaselineAutoencoderTrainer.compile` arguments: Adam at ``config.ae_lr`` with the
    config's betas (BAGAN's reference code: beta_1 = 0.5)."""
    config = bagan.get_baseline_preset(config)
    return {"optimizer": _adam(config.ae_lr, config, "adam_autoencoder")}


def gan_optimizers(config="paper") -> dict:
    """`BaselineGANTrainer.compile` arguments: Adam at ``config.g_lr`` / ``config.d_lr``."""
    config = bagan.get_baseline_preset(config)
    return {"g_optimizer": _adam(config.g_lr, config, "adam_generator"),
            "d_optimizer": _adam(config.d_lr, config, "adam_discriminator")}
