"""Semi-supervised multitask DCGAN training (Chang & Scherer, ICASSP 2017).

`MultitaskGANTrainer` owns one `train_step` for all four models of the paper; which
updates run follows from the discriminator's outputs and whether a generator is given:

1. generator (DCGAN models): binary cross-entropy of D(G(z)) against 1, i.e. the
   generator is scored on generated samples classified as real; z ~ N(0, I) of size N_z
   (our choice; the paper gives no noise distribution);
2. discriminator (DCGAN models): binary cross-entropy with real = 1 on a batch of real
   crops and generated = 0 on fresh samples G(z). The real crops are the labelled batch
   without its labels, joined by a batch of unlabelled speech when there is one: the
   paper's unlabelled data are "audio from the AMI and IEMOCAP datasets" (Sec. "Data
   Corpus"), the labelled corpus's audio included;
3. one update per task head in order (primary first, then valence, activation):
   cross-entropy between the head's softmax and the target distribution -- one-hot for a
   categorical label, the fuzzy label for a mean rating (4.5 -> [0, 0, 0, .5, .5]).

The order -- generator, discriminator, then the task heads -- follows the paper's
description of its training loop.

Each update has its own optimiser, given to `MultitaskGANTrainer.compile`
(`adam_optimizers` builds the defaults: Adam with the config's learning rate and
beta_1 = 0.5, the DCGAN value of Radford et al. 2016; Chang & Scherer do not name an
optimiser), and moves only the variables on its path: the conv stack is shared by every
update, the ``fc`` layer by the task updates, each head by its own update.

Batches are dicts: ``features`` ``(batch, W, M)`` labelled crops; one target per head
(``(batch,)`` int class for a categorical head, ``(batch, 5)`` distribution for a
rating head, rows of NaN for unrated examples, which are left out of that loss); and
optionally ``unlabelled`` ``(batch_u, W, M)`` crops that feed only the GAN path.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from keras_ser import distribute
from keras_ser.models import dcgan
from keras_ser.training.base import Trainer


@keras.saving.register_keras_serializable(package="keras_ser")
class MultitaskGANTrainer(Trainer):
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
        convolutional generative adversarial networks", ICASSP 2017, Secs. "Related
        Work" and "Multitask Deep Convolutional Generative Adversarial Network".
    """

    NETWORKS = ("discriminator", "generator")
    ARGS = ("categorical", "seed")

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
        self.seed = seed
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

    def compile(self, g_optimizer=None, d_optimizer=None, task_optimizers=None, **kwargs):
        """Take one optimiser per update, keras-io style, and build each on its variables.

        Args:
            g_optimizer, d_optimizer: The generator's and the real/fake discriminator's
                (DCGAN models only).
            task_optimizers: ``{task: optimiser}`` for every head.

        Raises:
            ValueError: An update without its optimiser, or one given for an update the
                model does not have.

        Building the optimisers here lets a checkpoint restore their state before the
        first step (`keras_ser.training.resumable`).
        """
        super().compile(optimizer=None, **kwargs)
        given = dict(task_optimizers or {})
        if g_optimizer is not None:
            given["g"] = g_optimizer
        if d_optimizer is not None:
            given["d"] = d_optimizer
        missing = sorted(set(self._variables_by_path) - set(given))
        extra = sorted(set(given) - set(self._variables_by_path))
        if missing or extra:
            raise ValueError(f"optimisers needed for {sorted(self._variables_by_path)}; "
                             f"missing {missing}, unexpected {extra}")
        self.g_optimizer, self.d_optimizer = given.get("g"), given.get("d")
        self.task_optimizers = {t: given[t] for t in self.tasks}
        for path, opt in self._optimizers().items():
            opt.build(self._variables_by_path[path])

    def get_compile_config(self):
        if not self.compiled:
            return None
        config = {"task_optimizers": {t: keras.optimizers.serialize(o)
                                      for t, o in self.task_optimizers.items()}}
        if self.generator is not None:
            config.update(g_optimizer=keras.optimizers.serialize(self.g_optimizer),
                          d_optimizer=keras.optimizers.serialize(self.d_optimizer))
        return config

    def compile_from_config(self, config):
        config = dict(config)
        tasks = {t: keras.optimizers.deserialize(o)
                 for t, o in config.pop("task_optimizers").items()}
        self.compile(task_optimizers=tasks,
                     **{k: keras.optimizers.deserialize(v) for k, v in config.items()})

    def _optimizers(self) -> dict:
        out = dict(self.task_optimizers)
        if self.generator is not None:
            out.update(g=self.g_optimizer, d=self.d_optimizer)
        return out

    def call(self, features, training=False):
        return self.discriminator(features, training=training)[self.primary]

    def _noise(self, batch):
        return distribute.replica_draw(keras.random.normal, (batch, self.z_dim),
                                       seed=self.seed_generator)

    def _apply(self, path, tape, loss):
        """One optimiser update of ``path``'s variables; ``loss`` is this replica's
        share of the global batch's loss (`keras_ser.distribute`)."""
        variables = self._variables_by_path[path]
        grads = tape.gradient(loss, variables)
        self._optimizers()[path].apply(grads, variables)

    def _task_loss(self, task, probs, target):
        """Mean cross-entropy over the examples with a target, of all replicas.

        Returns:
            ``(share, loss, accuracy)``: this replica's share of the loss (its
            gradients summed over the replicas are the global mean's), the global mean
            cross-entropy and the argmax accuracy over the labelled examples.
        """
        eps = keras.config.epsilon()
        if task in self.categorical:
            classes = ops.shape(probs)[-1]
            valid = ops.cast(target >= 0, "float32")
            dist = ops.one_hot(ops.maximum(target, 0), classes)
        else:
            valid = ops.cast(ops.all(ops.isfinite(target), axis=-1), "float32")
            dist = ops.where(ops.isfinite(target), target, 0.0)
        ce = -ops.sum(dist * ops.log(ops.clip(probs, eps, 1.0)), axis=-1)
        count = ops.sum(valid)
        share, loss = distribute.global_mean(ops.sum(ce * valid), count)
        hit = ops.cast(ops.argmax(probs, -1) == ops.argmax(dist, -1), "float32")
        _, accuracy = distribute.global_mean(ops.sum(hit * valid), count)
        return share, loss, accuracy

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
            real = x if "unlabelled" not in data else ops.concatenate(
                [data["unlabelled"], x], axis=0)
            batch = ops.shape(real)[0]
            with tf.GradientTape() as tape:
                dcgan.freeze_moving_statistics(self.discriminator, True)
                d_gen = self.discriminator(self.generator(self._noise(batch), training=True),
                                           training=True)["real"]
                dcgan.freeze_moving_statistics(self.discriminator, False)
                g_loss = ops.mean(keras.losses.binary_crossentropy(
                    ops.ones_like(d_gen), d_gen, from_logits=True))
                g_share = distribute.scale_loss(g_loss)
            self._apply("g", tape, g_share)
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
                d_share = distribute.scale_loss(d_loss)
            self._apply("d", tape, d_share)
            logs.update(d_loss=d_loss, g_loss=g_loss,
                        d_real=ops.mean(ops.sigmoid(d_real)),
                        d_fake=ops.mean(ops.sigmoid(d_fake)))
        for task in self.tasks:
            with tf.GradientTape() as tape:
                probs = self.discriminator(x, training=True)[task]
                share, loss, acc = self._task_loss(task, probs, data[task])
            self._apply(task, tape, share)
            logs[f"{task}_loss"], logs[f"{task}_acc"] = loss, acc
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """Task losses and argmax accuracies of a batch of labelled crops (no GAN terms)."""
        outputs = self.discriminator(data["features"], training=False)
        for task in self.tasks:
            _, loss, acc = self._task_loss(task, outputs[task], data[task])
            self._trackers[f"{task}_loss"].update_state(loss)
            self._trackers[f"{task}_acc"].update_state(acc)
        return {m.name: m.result() for m in self.metrics
                if not m.name.startswith(("d_", "g_"))}


def adam_optimizers(trainer: MultitaskGANTrainer, learning_rate: float,
                    beta_1: float = 0.5) -> dict:
    """Keyword arguments of `MultitaskGANTrainer.compile`: one Adam per update.

    beta_1 = 0.5 is the DCGAN value (Radford et al. 2016); the learning rate is searched
    per model (Chang & Scherer 2017, Sec. "Experimental Design").
    """
    def adam(name):
        return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1,
                                     name=f"adam_{name}")

    out = {"task_optimizers": {t: adam(t) for t in trainer.tasks}}
    if trainer.generator is not None:
        out.update(g_optimizer=adam("g"), d_optimizer=adam("d"))
    return out
