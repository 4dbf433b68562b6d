"""Stage 1 of Eskimez et al. (Interspeech 2020): autoencoder pre-training with an L1 loss.

The discriminator, with its last layer replaced by N_z linear units, is the encoder; the
generator is the decoder, fed the code and an N_c vector of zeros as its condition. The
L1 distance between a patch and its reconstruction is minimised with Adam (lr 5e-5 and
beta = (0.5, 0.99), Sec. 4.4 of the paper: the same betas for every network). Both
networks keep their weights for stage 2 (`WGANGPTrainer`): the critic re-uses the
encoder's trunk, the generator is the decoder itself.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_ser import distribute
from keras_ser.models import sngan
from keras_ser.training.base import EncoderDecoderTrainer


@keras.saving.register_keras_serializable(package="keras_ser")
class AutoencoderTrainer(EncoderDecoderTrainer):
    """L1 autoencoder from the SN discriminator (encoder) and generator (decoder).

    Args:
        encoder: Discriminator with the ``"encoder"`` head: ``(batch, frames, mels) ->
            (batch, N_z)``.
        decoder: `keras_ser.models.sngan.build_generator` model (inputs ``[z, condition]``).
        config: `SNGANConfig` (N_c, ``ae_lr``).

    Batches: dicts with ``"features"`` ``(batch, frames, mels)`` in [-1, 1], or the tensor.

    Metrics: ``loss`` (mean absolute reconstruction error, in normalised units).

    Reference:
        Eskimez et al., Interspeech 2020, Sec. 3.2 ("Pre-Training: Reconstruction Loss"), 4.4.
    """

    CONFIG = sngan.SNGANConfig

    def __init__(self, encoder: keras.Model, decoder: keras.Model, config, **kwargs):
        super().__init__(**kwargs)
        self.config = sngan.get_sngan_preset(config)
        self.encoder = encoder
        self.decoder = decoder
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def reconstruct(self, patches, training: bool = False):
        """``decoder([encoder(x), 0])``: ``(batch, frames, mels)`` reconstructions."""
        code = self.encoder(patches, training=training)
        zeros = ops.zeros((ops.shape(patches)[0], self.config.n_classes), code.dtype)
        return self.decoder([code, zeros], training=training)

    def l1(self, patches, training: bool = False):
        """Mean absolute reconstruction error of a batch (scalar float32)."""
        recon = ops.cast(self.reconstruct(patches, training=training), "float32")
        return ops.mean(ops.abs(ops.cast(patches, "float32") - recon))

    def train_step(self, data):
        """One Adam update of encoder and decoder on the L1 loss of a ``(batch, frames,
        mels)`` batch; returns ``{"loss": running mean}``."""
        x = data["features"] if isinstance(data, dict) else data
        variables = self._ae_variables()
        with tf.GradientTape() as tape:
            loss = self.l1(x, training=True)
            scaled = distribute.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        """The L1 loss of a batch without updates."""
        x = data["features"] if isinstance(data, dict) else data
        self.loss_tracker.update_state(self.l1(x, training=False))
        return {"loss": self.loss_tracker.result()}


def optimizers(config) -> dict:
    """`AutoencoderTrainer.compile` arguments of Eskimez et al. (2020, Sec. 4.4): Adam at
    the config's ``ae_lr`` (paper: 5e-5) with beta = (0.5, 0.99), as for every network."""
    config = sngan.get_sngan_preset(config)
    return {"optimizer": sngan.adam(config.ae_lr, config, "ae_adam")}
