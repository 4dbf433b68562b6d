"""What every keras-ser trainer shares: serialisation, and compile with its optimisers.

A trainer is a `keras.Model` wrapping the networks it trains and owning the
``train_step``. Subclasses name their networks, their preset class and other
constructor arguments; `Trainer.get_config` / `from_config` then serialise them all, so a
trainer saves to ``.keras`` and reloads in a fresh process. `GANTrainer.compile` takes
the generator's and the discriminator's optimisers (keras-io style) and builds them at
once, so a checkpoint (`keras_ser.training.resumable`) can restore their state before the
first step; `EncoderDecoderTrainer.compile` does the same with one optimiser. Both store their
optimisers' configuration, so a reloaded trainer comes back compiled.
"""

from __future__ import annotations

import keras


class Trainer(keras.Model):
    """Base trainer: `get_config`/`from_config` from three class attributes.

    Attributes:
        NETWORKS: Names of the constructor arguments (and attributes) holding the
            wrapped Keras models; ``None`` values are kept as ``None``.
        CONFIG: The preset dataclass of the ``config`` argument (with ``to_dict`` /
            ``from_dict``), or ``None`` for a trainer without one.
        ARGS: Other constructor arguments stored as attributes of the same name (JSON
            values).
    """

    NETWORKS: tuple = ()
    CONFIG = None
    ARGS: tuple = ()

    def get_config(self):
        config = super().get_config()
        for name in self.NETWORKS:
            network = getattr(self, name)
            config[name] = (None if network is None
                            else keras.saving.serialize_keras_object(network))
        if self.CONFIG is not None:
            config["config"] = self.config.to_dict()
        for name in self.ARGS:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls.NETWORKS:
            if config.get(name) is not None:
                config[name] = keras.saving.deserialize_keras_object(config[name])
        if cls.CONFIG is not None:
            config["config"] = cls.CONFIG.from_dict(config["config"])
        return cls(**config)


class GANTrainer(Trainer):
    """A trainer of a generator (``NETWORKS[0]``) and a discriminator (``NETWORKS[1]``)."""

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Take the generator's and the discriminator's optimisers and build them on
        their networks' variables (the trainer modules' ``optimizers`` give the papers')."""
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        generator, discriminator = (getattr(self, n) for n in self.NETWORKS[:2])
        self.g_optimizer.build(generator.trainable_variables)
        self.d_optimizer.build(discriminator.trainable_variables)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {"g_optimizer": keras.optimizers.serialize(self.g_optimizer),
                "d_optimizer": keras.optimizers.serialize(self.d_optimizer)}

    def compile_from_config(self, config):
        self.compile(**{k: keras.optimizers.deserialize(v) for k, v in config.items()})


class EncoderDecoderTrainer(Trainer):
    """A trainer of an ``encoder`` and a ``decoder`` with one optimiser."""

    NETWORKS = ("encoder", "decoder")

    def _ae_variables(self):
        return list(self.encoder.trainable_variables) + list(self.decoder.trainable_variables)

    def compile(self, optimizer, **kwargs):
        """Take the optimiser and build it on the encoder's and decoder's variables."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self._ae_variables())

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {"optimizer": keras.optimizers.serialize(self.optimizer)}

    def compile_from_config(self, config):
        self.compile(optimizer=keras.optimizers.deserialize(config["optimizer"]))
