"""Semi-supervised multitask DCGAN training (Chang & Scherer, ICASSP 2017).

`MultitaskGANTrainer` owns one `train_step` for all four models of the paper; which
updates run follows from the discriminator's outputs and whether a generator is given:

1. generator (DCGAN models): binary cross-entropy of D(G(z)) against 1, i.e. the
   generator is scored on generated samples classified as real; z ~ N(0, I) of size N_z;
2. discriminator (DCGAN models): binary cross-entropy with real = 1 on a batch of real
   crops (unlabelled speech, or the labelled batch without its labels) and generated = 0
   on fresh samples G(z);
3. one update per task head in order (primary first, then valence, activation):
   cross-entropy between the head's softmax and the target distribution -- one-hot for a
   categorical label, the fuzzy label for a mean rating (4.5 -> [0, 0, 0, .5, .5]).

The order -- generator, discriminator, then the task heads -- follows the paper's
description of its training loop.

Each update has its own Adam optimiser (learning rate from the config, beta_1 = 0.5,
Radford et al. 2016) and moves only the variables on its path: the conv stack is shared
by every update, the ``fc`` layer by the task updates, each head by its own update.

Batches are dicts: ``features`` ``(batch, W, M)`` labelled crops; one target per head
(``(batch,)`` int class for a categorical head, ``(batch, 5)`` distribution for a
rating head, rows of NaN for unrated examples, which are left out of that loss); and
optionally ``unlabelled`` ``(batch_u, W, M)`` crops that feed the GAN path only.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from keras_ser.models import dcgan


@keras.saving.register_keras_serializable(package="keras_ser")
class MultitaskGANTrainer(keras.Model):
    """BasicCNN / MultitaskCNN / BasicDCGAN / MultitaskDCGAN trainer.

    Args:
        discriminator: `keras_ser.models.dcgan.build_discriminator` output; its task
            heads (all outputs except ``"real"``) are trained in dict order, the first
            one being the primary task.
        generator: `keras_ser.models.dcgan.build_generator` output, or ``None`` for the
            CNN models (then the discriminator must have no ``"real"`` output).
        categorical: Names of heads whose targets are class indices; the others take
            target distributions (fuzzy labels).
        seed: Seed of the noise z.

    Call:
        ``trainer(features)`` -> the primary head's ``(batch, classes)`` probabilities.

    Raises:
        ValueError: A generator without a ``"real"`` output, or the reverse.

    Reference:
        Chang & Scherer, "Learning representations of emotional speech with deep
        convolutional generative adversarial networks", ICASSP 2017, Sec. 2-3.
    """

    def __init__(self, discriminator: keras.Model, generator: Optional[keras.Model] = None,
                 categorical=("emotion",), seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        outputs = list(discriminator.output)
        adversarial = "real" in outputs
        if adversarial != (generator is not None):
            raise ValueError("a generator needs a discriminator with a 'real' output and "
                             "the other way round")
        self.discriminator = discriminator
        self.generator = generator
        self.tasks = [t for t in outputs if t != "real"]
        self.primary = self.tasks[0] if self.tasks else None
        self.categorical = tuple(categorical)
        self.z_dim = generator.input.shape[-1] if generator is not None else None
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._variables_by_path = self._split_variables()
        self._trackers = {}
        names = (["d_loss", "g_loss", "d_real", "d_fake"] if adversarial else [])
        for task in self.tasks:
            names += [f"{task}_loss", f"{task}_acc"]
        for name in names:
            self._trackers[name] = keras.metrics.Mean(name=name)
        # The wrapped networks are built functional models, so the trainer is too.
        self.built = True

    def _split_variables(self) -> dict:
        shared, fc, real, heads = [], [], [], {t: [] for t in self.tasks}
        for layer in self.discriminator.layers:
            weights = layer.trainable_weights
            if layer.name == "real":
                real += weights
            elif layer.name == "fc":
                fc += weights
            elif layer.name.startswith("head_"):
                heads[layer.name[len("head_"):]] += weights
            else:
                shared += weights
        paths = {}
        if self.generator is not None:
            paths["d"] = shared + real
            paths["g"] = list(self.generator.trainable_weights)
        for task in self.tasks:
            paths[task] = shared + fc + heads[task]
        return paths

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(self, learning_rate: float = 2e-4, beta_1: float = 0.5, **kwargs):
        """One Adam optimiser per update (discriminator, generator, each head).

        The optimisers are built at once on their variables, so their state can be
        saved and restored before the first step (`keras_ser.training.callbacks`).
        """
        super().compile(**kwargs)
        self.update_optimizers = {
            path: keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1,
                                        name=f"adam_{path}")
            for path in self._variables_by_path}
        for path, opt in self.update_optimizers.items():
            opt.build(self._variables_by_path[path])

    def call(self, features, training=False):
        return self.discriminator(features, training=training)[self.primary]

    def _noise(self, batch):
        return keras.random.normal((batch, self.z_dim), seed=self.seed_generator)

    def _apply(self, path, tape, loss):
        variables = self._variables_by_path[path]
        grads = tape.gradient(loss, variables)
        self.update_optimizers[path].apply(grads, variables)

    def _task_loss(self, task, probs, target):
        """Mean cross-entropy over examples with a target; accuracy of the argmax."""
        eps = keras.config.epsilon()
        if task in self.categorical:
            classes = ops.shape(probs)[-1]
            valid = ops.cast(target >= 0, "float32")
            dist = ops.one_hot(ops.maximum(target, 0), classes)
        else:
            valid = ops.cast(ops.all(ops.isfinite(target), axis=-1), "float32")
            dist = ops.where(ops.isfinite(target), target, 0.0)
        ce = -ops.sum(dist * ops.log(ops.clip(probs, eps, 1.0)), axis=-1)
        count = ops.maximum(ops.sum(valid), 1.0)
        loss = ops.sum(ce * valid) / count
        hit = ops.cast(ops.argmax(probs, -1) == ops.argmax(dist, -1), "float32")
        return loss, ops.sum(hit * valid) / count

    def train_step(self, data):
        """Generator, discriminator, then one update per task head, in turn.

        Args:
            data: Dict batch (see the module docstring): ``features`` ``(batch, W, M)``,
                one target per head, optional ``unlabelled`` ``(batch_u, W, M)``.

        Returns:
            Running means of ``d_loss``, ``g_loss``, ``d_real``/``d_fake`` (mean
            D(x), D(G(z))), and ``<task>_loss``/``<task>_acc`` per head.

        Raises:
            KeyError: A head's target is missing from the batch.
        """
        import tensorflow as tf

        x = data["features"]
        logs = {}
        if self.generator is not None:
            real = data.get("unlabelled", x)
            batch = ops.shape(real)[0]
            with tf.GradientTape() as tape:
                dcgan.freeze_moving_statistics(self.discriminator, True)
                d_gen = self.discriminator(self.generator(self._noise(batch), training=True),
                                           training=True)["real"]
                dcgan.freeze_moving_statistics(self.discriminator, False)
                g_loss = ops.mean(keras.losses.binary_crossentropy(
                    ops.ones_like(d_gen), d_gen, from_logits=True))
            self._apply("g", tape, g_loss)
            with tf.GradientTape() as tape:
                fake = self.generator(self._noise(batch), training=True)
                d_real = self.discriminator(real, training=True)["real"]
                dcgan.freeze_moving_statistics(self.discriminator, True)
                d_fake = self.discriminator(fake, training=True)["real"]
                dcgan.freeze_moving_statistics(self.discriminator, False)
                d_loss = (ops.mean(keras.losses.binary_crossentropy(
                    ops.ones_like(d_real), d_real, from_logits=True)) +
                    ops.mean(keras.losses.binary_crossentropy(
                        ops.zeros_like(d_fake), d_fake, from_logits=True)))
            self._apply("d", tape, d_loss)
            logs.update(d_loss=d_loss, g_loss=g_loss,
                        d_real=ops.mean(ops.sigmoid(d_real)),
                        d_fake=ops.mean(ops.sigmoid(d_fake)))
        for task in self.tasks:
            with tf.GradientTape() as tape:
                probs = self.discriminator(x, training=True)[task]
                loss, acc = self._task_loss(task, probs, data[task])
            self._apply(task, tape, loss)
            logs[f"{task}_loss"], logs[f"{task}_acc"] = loss, acc
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """Task losses and argmax accuracies of a batch of labelled crops (no GAN terms)."""
        outputs = self.discriminator(data["features"], training=False)
        for task in self.tasks:
            loss, acc = self._task_loss(task, outputs[task], data[task])
            self._trackers[f"{task}_loss"].update_state(loss)
            self._trackers[f"{task}_acc"].update_state(acc)
        return {m.name: m.result() for m in self.metrics
                if not m.name.startswith(("d_", "g_"))}

    def get_config(self):
        config = super().get_config()
        config.update({
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "generator": (keras.saving.serialize_keras_object(self.generator)
                          if self.generator is not None else None),
            "categorical": list(self.categorical)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        if config.get("generator") is not None:
            config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        return cls(**config)
