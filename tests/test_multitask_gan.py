"""The semi-supervised multitask trainer: update paths, fuzzy-label losses, GAN losses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import metrics
from keras_ser.models import dcgan
from keras_ser.training import protocol
from keras_ser.training.multitask_gan import MultitaskGANTrainer

CONFIG = dcgan.DCGANConfig(crop_frames=16, n_mels=32, filters=4, kernel_size=3, fc_units=8,
                           z_dim=8, batch_size=8, learning_rate=1e-3)


def _trainer(model="multitask_dcgan", primary="emotion"):
    keras.utils.set_random_seed(0)
    heads = dcgan.model_heads(model, primary, 3 if primary == "emotion" else 5)
    adversarial = dcgan.is_adversarial(model)
    d = dcgan.build_discriminator(CONFIG, heads, adversarial=adversarial)
    g = dcgan.build_generator(CONFIG) if adversarial else None
    trainer = MultitaskGANTrainer(d, g, seed=0)
    trainer.compile(learning_rate=1e-3)
    return trainer


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32),
            "emotion": rng.integers(0, 3, n).astype(np.int32),
            "valence": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "activation": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
            "unlabelled": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32)}


def test_each_update_moves_only_the_variables_on_its_path():
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


def test_basic_cnn_has_only_its_primary_update_and_no_generator():
    trainer = _trainer("basic_cnn")
    assert set(trainer.update_optimizers) == {"emotion"}
    assert trainer.tasks == ["emotion"]
    with pytest.raises(ValueError, match="generator needs"):
        MultitaskGANTrainer(trainer.discriminator, dcgan.build_generator(CONFIG))


def test_fuzzy_cross_entropy_matches_hand_computation_and_skips_unrated_rows():
    trainer = _trainer("multitask_cnn")
    probs = tf.constant([[0.1, 0.1, 0.2, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2, 0.2],
                         [0.5, 0.1, 0.1, 0.1, 0.2]])
    target = tf.constant([[0, 0, 0, .5, .5], [0, 0, 1, 0, 0], [np.nan] * 5], tf.float32)
    loss, acc = trainer._task_loss("valence", probs, target)
    expected = (-(0.5 * np.log(0.3) + 0.5 * np.log(0.3)) - np.log(0.2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(acc) == pytest.approx(0.5)  # row 1: argmax 3 == 3; row 2: 0 != 2
    cat_loss, _ = trainer._task_loss("emotion", tf.constant([[0.7, 0.2, 0.1]]),
                                     tf.constant([1]))
    assert float(cat_loss) == pytest.approx(-np.log(0.2), rel=1e-5)


def test_graph_fuzzy_labels_equal_the_reference_implementation():
    ratings = np.array([1.0, 1.5, 2.25, 3.0, 3.6667, 4.5, 5.0], np.float32)
    got = protocol.fuzzy_labels_tf(tf.constant(ratings)).numpy()
    np.testing.assert_allclose(got, metrics.fuzzy_labels(ratings), atol=1e-5)
    nan_row = protocol.fuzzy_labels_tf(tf.constant([np.nan, 4.5])).numpy()
    assert np.isnan(nan_row[0]).all() and nan_row[1].tolist() == [0, 0, 0, .5, .5]


def _softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("with_unlabelled", [False, True])
def test_gan_losses_are_the_binary_cross_entropies_of_the_paper(with_unlabelled):
    trainer = _trainer("basic_dcgan")
    for opt in trainer.update_optimizers.values():
        opt.learning_rate.assign(0.0)
    z = tf.constant(np.random.default_rng(5).standard_normal((8, CONFIG.z_dim)), tf.float32)
    trainer._noise = lambda batch: z
    keys = ("features", "emotion") + (("unlabelled",) if with_unlabelled else ())
    batch = {k: tf.constant(v) for k, v in _batch().items() if k in keys}
    logs = trainer.train_step(batch)
    # Nothing moves at a zero learning rate, so the losses can be recomputed by hand.
    # Real crops: the unlabelled batch when given (labels never reach the GAN), else the
    # labelled crops. D loss: -log D(x) - log(1 - D(G(z))); G loss: -log D(G(z)).
    real = batch["unlabelled"] if with_unlabelled else batch["features"]
    logit_real = trainer.discriminator(real, training=True)["real"].numpy()
    fake = trainer.generator(z, training=True)
    logit_fake = trainer.discriminator(fake, training=True)["real"].numpy()
    d_loss = np.mean(_softplus(-logit_real)) + np.mean(_softplus(logit_fake))
    g_loss = np.mean(_softplus(-logit_fake))
    assert float(logs["d_loss"]) == pytest.approx(d_loss, rel=1e-4)
    assert float(logs["g_loss"]) == pytest.approx(g_loss, rel=1e-4)
    assert float(logs["d_real"]) == pytest.approx(np.mean(1 / (1 + np.exp(-logit_real))),
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
