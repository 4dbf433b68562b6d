"""The semi-supervised multitask trainer: update paths, fuzzy-label losses, GAN losses,
batch-norm statistics of real speech only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import metrics, tasks
from keras_ser.models import dcgan
from keras_ser.training import multitask_gan
from keras_ser.training.multitask_gan import MultitaskGANTrainer

CONFIG = dcgan.DCGANConfig(crop_frames=16, n_mels=32, filters=4, kernel_size=3, fc_units=8,
                           z_dim=8, batch_size=8, learning_rate=1e-3)
#: The shared conv stack of the discriminator (conv1 has no batch norm).
STACK = ("conv1", "conv2", "conv2_bn", "conv3", "conv3_bn", "conv4", "conv4_bn")
BATCH_NORMS = ("conv2_bn", "conv3_bn", "conv4_bn")


def _trainer(model="multitask_dcgan", primary="emotion"):
    keras.utils.set_random_seed(0)
    heads = dcgan.model_heads(model, primary, 3 if primary == "emotion" else 5)
    adversarial = dcgan.is_adversarial(model)
    d = dcgan.build_discriminator(CONFIG, heads, adversarial=adversarial)
    g = dcgan.build_generator(CONFIG) if adversarial else None
    trainer = MultitaskGANTrainer(d, g, seed=0)
    trainer.compile(**multitask_gan.adam_optimizers(trainer, 1e-3))
    return trainer


def _optimizers(trainer):
    """Every update's optimiser by path name."""
    out = dict(trainer.task_optimizers)
    if trainer.generator is not None:
        out.update(g=trainer.g_optimizer, d=trainer.d_optimizer)
    return out


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32),
            "emotion": rng.integers(0, 3, n).astype(np.int32),
            "valence": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "activation": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "unlabelled": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32)}


def test_each_update_is_given_the_variables_on_its_path():
    trainer = _trainer()
    paths = {k: {v.path for v in vs} for k, vs in trainer._variables_by_path.items()}
    assert set(paths) == {"d", "g", "emotion", "valence", "activation"}
    assert not any("fc" in p or "head_" in p for p in paths["d"])
    assert any("real" in p for p in paths["d"])
    for task in ("emotion", "valence", "activation"):
        heads = {p.split("/")[0] for p in paths[task] if p.startswith("head_")}
        assert heads == {f"head_{task}"}
        assert any(p.startswith("fc/") for p in paths[task])
        assert not any(p.startswith("real/") for p in paths[task])
        assert paths[task] & paths["d"]  # the shared conv stack
    assert not paths["g"] & paths["d"]


def test_one_update_moves_exactly_the_variables_on_its_path():
    trainer = _trainer()
    d, g = trainer.discriminator, trainer.generator

    def weights_of(*layers):
        return {w.path for name in layers for w in d.get_layer(name).trainable_weights}

    expected = {"g": {w.path for w in g.trainable_weights}, "d": weights_of(*STACK, "real")}
    for task in trainer.tasks:
        expected[task] = weights_of(*STACK, "fc", f"head_{task}")
    variables = d.trainable_weights + g.trainable_weights
    batch = {k: tf.constant(v) for k, v in _batch().items()}
    for path, active in _optimizers(trainer).items():
        # A learning rate of 0 makes Adam's step exactly 0, so only `path` may move.
        for opt in _optimizers(trainer).values():
            opt.learning_rate.assign(1e-3 if opt is active else 0.0)
        before = [v.numpy() for v in variables]
        trainer.train_step(batch)
        moved = {v.path for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b)}
        assert moved == expected[path], path


def test_generated_batches_leave_the_batch_norm_statistics_to_real_speech():
    trainer = _trainer()
    d = trainer.discriminator
    for opt in _optimizers(trainer).values():
        opt.learning_rate.assign(0.0)
    statistics = [v for name in BATCH_NORMS
                  for v in (d.get_layer(name).moving_mean, d.get_layer(name).moving_variance)]
    start = [v.numpy() for v in statistics]
    batch = {k: tf.constant(v) for k, v in _batch().items()}
    trainer.train_step(batch)
    after = [v.numpy() for v in statistics]

    def replay(*inputs):
        """Moving statistics after training-mode passes of ``inputs`` from ``start``."""
        for v, s in zip(statistics, start):
            v.assign(s)
        for x in inputs:
            d(x, training=True)
        return [v.numpy() for v in statistics]

    # The step's real passes: labelled + unlabelled crops (discriminator update), then
    # the labelled crops once per task head. Nothing else moved the statistics.
    real = tf.concat([batch["unlabelled"], batch["features"]], axis=0)
    real_only = replay(real, *[batch["features"]] * len(trainer.tasks))
    for got, want in zip(after, real_only):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # A generated batch would have moved them: the check above can fail.
    fake = trainer.generator(tf.random.normal((16, CONFIG.z_dim), seed=1), training=True)
    with_fake = replay(fake, real, *[batch["features"]] * len(trainer.tasks))
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in zip(with_fake, after))
    assert not all(np.array_equal(a, s) for a, s in zip(after, start))


def test_basic_cnn_has_only_its_primary_update_and_no_generator():
    trainer = _trainer("basic_cnn")
    assert set(_optimizers(trainer)) == {"emotion"}
    assert trainer.g_optimizer is None and trainer.d_optimizer is None
    assert trainer.tasks == ["emotion"]
    with pytest.raises(ValueError, match="generator needs"):
        MultitaskGANTrainer(trainer.discriminator, dcgan.build_generator(CONFIG))


def test_compile_names_missing_and_unexpected_optimisers():
    trainer = _trainer("basic_dcgan")
    adam = keras.optimizers.Adam
    with pytest.raises(ValueError, match=r"missing \['d'\], unexpected \[\]"):
        trainer.compile(g_optimizer=adam(), task_optimizers={"emotion": adam()})
    cnn = _trainer("basic_cnn")
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['g'\]"):
        cnn.compile(g_optimizer=adam(), task_optimizers={"emotion": adam()})
    kwargs = multitask_gan.adam_optimizers(trainer, 3e-4)
    assert set(kwargs) == {"g_optimizer", "d_optimizer", "task_optimizers"}
    assert float(kwargs["g_optimizer"].learning_rate) == pytest.approx(3e-4)
    assert kwargs["d_optimizer"].beta_1 == 0.5  # the DCGAN value


def test_fuzzy_cross_entropy_matches_hand_computation_and_skips_unrated_rows():
    trainer = _trainer("multitask_cnn")
    probs = tf.constant([[0.1, 0.1, 0.2, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2],
                         [0.5, 0.1, 0.1, 0.1, 0.2]])
    target = tf.constant([[0, 0, 0, .5, .5], [0, 0, 1, 0, 0], [np.nan] * 5], tf.float32)
    share, loss, acc = trainer._task_loss("valence", probs, target)
    assert float(share) == float(loss)  # one replica: its share is the whole mean
    expected = (-(0.5 * np.log(0.3) + 0.5 * np.log(0.3)) - np.log(0.2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(acc) == pytest.approx(0.5)  # row 1: argmax 3 == 3; row 2: 0 != 2
    _, cat_loss, _ = trainer._task_loss("emotion", tf.constant([[0.7, 0.2, 0.1]]),
                                     tf.constant([1]))
    assert float(cat_loss) == pytest.approx(-np.log(0.2), rel=1e-5)


def test_graph_fuzzy_labels_equal_the_reference_implementation():
    ratings = np.array([1.0, 1.5, 2.25, 3.0, 3.6667, 4.5, 5.0], np.float32)
    got = tasks.fuzzy_labels_tf(tf.constant(ratings)).numpy()
    np.testing.assert_allclose(got, metrics.fuzzy_labels(ratings), atol=1e-5)
    nan_row = tasks.fuzzy_labels_tf(tf.constant([np.nan, 4.5])).numpy()
    assert np.isnan(nan_row[0]).all() and nan_row[1].tolist() == [0, 0, 0, .5, .5]


def _softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("with_unlabelled", [False, True])
def test_gan_losses_are_the_binary_cross_entropies_of_the_paper(with_unlabelled):
    trainer = _trainer("basic_dcgan")
    for opt in _optimizers(trainer).values():
        opt.learning_rate.assign(0.0)
    z = tf.constant(np.random.default_rng(5).standard_normal((16, CONFIG.z_dim)), tf.float32)
    trainer._noise = lambda batch: z[:batch]
    keys = ("features", "emotion") + (("unlabelled",) if with_unlabelled else ())
    batch = {k: tf.constant(v) for k, v in _batch().items() if k in keys}
    logs = trainer.train_step(batch)
    # Nothing moves at a zero learning rate, so the losses can be recomputed by hand.
    # Real crops: the labelled crops, joined by the unlabelled batch when given (labels
    # never reach the GAN). D loss: -log D(x) - log(1 - D(G(z))); G loss: -log D(G(z)),
    # with as many generated crops as real ones.
    real = batch["features"]
    if with_unlabelled:
        real = tf.concat([batch["unlabelled"], real], axis=0)
    logit_real = trainer.discriminator(real, training=True)["real"].numpy()
    fake = trainer.generator(z[:len(real)], training=True)
    logit_fake = trainer.discriminator(fake, training=True)["real"].numpy()
    assert len(logit_fake) == len(logit_real) == (16 if with_unlabelled else 8)
    d_loss = np.mean(_softplus(-logit_real)) + np.mean(_softplus(logit_fake))
    g_loss = np.mean(_softplus(-logit_fake))
    assert float(logs["d_loss"]) == pytest.approx(d_loss, rel=1e-4)
    assert float(logs["g_loss"]) == pytest.approx(g_loss, rel=1e-4)
    assert float(logs["d_real"]) == pytest.approx(np.mean(1 / (1 + np.exp(-logit_real))),
                                                  rel=1e-4)
    assert float(logs["d_fake"]) == pytest.approx(np.mean(1 / (1 + np.exp(-logit_fake))),
                                                  rel=1e-4)
    probs = trainer.discriminator(batch["features"], training=False)["emotion"].numpy()
    assert probs.shape == (8, 3)


def test_a_few_steps_teach_the_discriminator_real_from_generated():
    trainer = _trainer("basic_dcgan")
    data = _batch(32, seed=3)
    data["features"] = np.clip(data["features"] * 0.1 + 0.5, -1, 1)  # a narrow "real" class
    ds = tf.data.Dataset.from_tensor_slices(
        {k: v for k, v in data.items() if k in ("features", "emotion")}).batch(8).repeat(10)
    history = trainer.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert history["d_real"][-1] > history["d_fake"][-1]
    assert np.isfinite(history["g_loss"][-1])
