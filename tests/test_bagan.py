"""Baseline GAN (Chatziagapi et al. 2019 / BAGAN): shapes, parameter counts, class
normals, autoencoder and GAN steps, weight sharing, saving."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser.models import bagan, sngan
from keras_ser.training import bagan as train_bagan

#: Small test size: 32 x 32 patches, the "cpu" widths.
SMALL = bagan.get_baseline_preset("cpu", frames=32, n_mels=32, batch_size=16)


def _shapes(model):
    return {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)}


def _conv(k, c_in, c_out, bias):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def _smooth_patterns(n, frames, mels, seed=0):
    """Products of slow sinusoids along time and frequency, in [-0.8, 0.8]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, frames)[None, :, None]
    f = np.linspace(0.0, 1.0, mels)[None, None, :]
    freq = rng.uniform(0.5, 2.0, (n, 2, 1, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 2, 1, 1))
    x = 0.8 * np.sin(2 * np.pi * freq[:, 0] * t + phase[:, 0]) * np.cos(
        2 * np.pi * freq[:, 1] * f + phase[:, 1])
    return x.astype(np.float32)


def _dataset(x, y, batch):
    return tf.data.Dataset.from_tensor_slices({"features": x, "label": y}).shuffle(
        len(x), seed=0).batch(batch, drop_remainder=True).repeat()


def _small_networks(config=SMALL):
    generator = bagan.build_baseline_generator(config)
    encoder = bagan.build_baseline_encoder(config)
    return generator, encoder, bagan.build_baseline_discriminator(encoder, config)


def _latents(config=SMALL, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((8 * config.n_classes, config.z_dim))
    return bagan.ClassLatents.fit(codes, np.arange(len(codes)) % config.n_classes,
                                  n_classes=config.n_classes)


# --- networks --------------------------------------------------------------------------

def test_paper_generator_shapes_and_parameter_count():
    config = bagan.get_baseline_preset("paper")
    g = bagan.build_baseline_generator(config)
    shapes = _shapes(g)
    assert shapes["project_reshape"] == (8, 8, 512)
    assert shapes["deconv1"] == (16, 16, 256)
    assert shapes["deconv2"] == (32, 32, 128)
    assert shapes["deconv3"] == (64, 64, 64)
    assert shapes["deconv4"] == (128, 128, 1)
    assert shapes["patch"] == (128, 128)
    assert sum(isinstance(layer, keras.layers.Conv2DTranspose) for layer in g.layers) == 4
    k, z = 5, 128
    counts = {layer.name: layer.count_params() for layer in g.layers}
    assert counts["project"] == z * 8 * 8 * 512
    assert counts["deconv1"] == _conv(k, 512, 256, False)
    assert counts["deconv4"] == _conv(k, 64, 1, True)
    expected = (z * 8 * 8 * 512 + _bn(512)
                + _conv(k, 512, 256, False) + _bn(256)
                + _conv(k, 256, 128, False) + _bn(128)
                + _conv(k, 128, 64, False) + _bn(64)
                + _conv(k, 64, 1, True))
    assert g.count_params() == expected


def test_paper_encoder_and_discriminator_shapes_parameter_counts_and_outputs():
    config = bagan.get_baseline_preset("paper")
    e = bagan.build_baseline_encoder(config)
    d = bagan.build_baseline_discriminator(e, config)
    shapes = _shapes(e)
    assert shapes["conv1"] == (64, 64, 64)
    assert shapes["conv2"] == (32, 32, 128)
    assert shapes["conv3"] == (16, 16, 256)
    assert shapes["conv4"] == (8, 8, 512)
    assert shapes["embedding"] == (8 * 8 * 512,)
    assert shapes["code"] == (128,)
    assert _shapes(d)["class_probs"] == (config.n_classes + 1,)
    k = 5
    trunk = (_conv(k, 1, 64, True)
             + _conv(k, 64, 128, False) + _bn(128)
             + _conv(k, 128, 256, False) + _bn(256)
             + _conv(k, 256, 512, False) + _bn(512))
    assert e.count_params() == trunk + 8 * 8 * 512 * 128 + 128
    assert d.count_params() == trunk + 8 * 8 * 512 * (config.n_classes + 1) + config.n_classes + 1
    assert "conv1_bn" not in shapes and "conv2_bn" in shapes
    probs = d(np.zeros((2, 128, 128), np.float32), training=False)
    assert probs.dtype == "float32"
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)


def test_config_validation_round_trip_and_preset_matching_the_sngan():
    with pytest.raises(ValueError, match="multiple of 16"):
        bagan.get_baseline_preset("cpu", frames=40)
    with pytest.raises(KeyError, match="known"):
        bagan.get_baseline_preset("nope")
    config = bagan.get_baseline_preset("paper")
    assert bagan.BaselineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    cpu = bagan.preset_for("cpu")
    s = sngan.get_sngan_preset("cpu")
    for field in ("frames", "n_mels", "z_dim", "n_classes", "batch_size"):
        assert getattr(cpu, field) == getattr(s, field)
    assert cpu.d_widths == bagan.BASELINE_PRESETS["cpu"].d_widths
    custom = bagan.preset_for(sngan.get_sngan_preset("paper", n_classes=7, frames=64))
    assert (custom.n_classes, custom.frames, custom.d_widths) == (7, 64, (64, 128, 256, 512))


def test_discriminator_shares_the_encoder_weights():
    _, e, d = _small_networks()
    assert d.get_layer("conv3") is e.get_layer("conv3")
    x = _smooth_patterns(4, SMALL.frames, SMALL.n_mels)
    before = np.asarray(d(x, training=False))
    kernel = e.get_layer("conv1").kernel
    kernel.assign(kernel.numpy() + 0.5)
    after = np.asarray(d(x, training=False))
    assert np.abs(after - before).max() > 1e-4


# --- class normals ---------------------------------------------------------------------

def test_class_latents_match_numpy_mean_and_covariance_plus_ridge():
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((90, 5)) @ rng.standard_normal((5, 5)) + 3.0
    labels = np.repeat([0, 1, 2], 30)
    latents = bagan.ClassLatents.fit(codes, labels, ridge=1e-3)
    assert latents.means.shape == (3, 5) and latents.covariances.shape == (3, 5, 5)
    for c in range(3):
        own = codes[labels == c]
        cov = np.cov(own.T)
        np.testing.assert_allclose(latents.means[c], own.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(latents.covariances[c],
                                   cov + 1e-3 * np.trace(cov) / 5 * np.eye(5), rtol=1e-10)
        factor = latents.cholesky[c]
        np.testing.assert_allclose(factor @ factor.T, latents.covariances[c], rtol=1e-10)
    # More dimensions than codes: the ridge still gives a Cholesky factor.
    wide = bagan.ClassLatents.fit(rng.standard_normal((6, 10)), [0, 0, 0, 1, 1, 1])
    assert np.all(np.linalg.eigvalsh(wide.covariances) > 0)


def test_class_latent_samples_have_the_class_mean_and_covariance():
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    means = np.array([[0.0, 0.0, 0.0], [5.0, -2.0, 1.0]])
    latents = bagan.ClassLatents(means, np.stack([np.eye(3), cov]))
    z = latents.sample(np.ones(20000, int), seed=7)
    assert z.shape == (20000, 3) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), means[1], atol=0.05)
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.06)
    np.testing.assert_array_equal(latents.sample([0, 1, 1], seed=3),
                                  latents.sample([0, 1, 1], seed=3))
    assert not np.allclose(latents.sample([0, 1, 1], seed=3), latents.sample([0, 1, 1], seed=4))
    with pytest.raises(ValueError):
        latents.sample([2])


def test_class_with_one_code_is_rejected_by_name():
    codes = np.random.default_rng(0).standard_normal((5, 3))
    with pytest.raises(ValueError, match="class 2"):
        bagan.ClassLatents.fit(codes, [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="class 3 has 0"):
        bagan.ClassLatents.fit(np.vstack([codes, codes[:1]]), [0, 0, 1, 1, 2, 2], n_classes=4)


@pytest.mark.parametrize("ext", [".json", ".npz"])
def test_class_latents_save_and_load_round_trip(tmp_path, ext):
    latents = _latents(seed=2)
    path = str(tmp_path / f"latents{ext}")
    latents.save(path)
    assert os.listdir(tmp_path) == [f"latents{ext}"]  # no temporary file left
    loaded = bagan.ClassLatents.load(path)
    np.testing.assert_array_equal(loaded.means, latents.means)
    np.testing.assert_array_equal(loaded.covariances, latents.covariances)
    np.testing.assert_array_equal(loaded.counts, latents.counts)
    np.testing.assert_array_equal(loaded.sample([0, 3], seed=1), latents.sample([0, 3], seed=1))
    with pytest.raises(ValueError, match="json or .npz"):
        latents.save(str(tmp_path / "latents.txt"))


# --- training --------------------------------------------------------------------------

def test_autoencoder_l1_loss_decreases_on_smooth_patterns():
    keras.utils.set_random_seed(0)
    x = _smooth_patterns(64, SMALL.frames, SMALL.n_mels)
    g, e, _ = _small_networks()
    trainer = train_bagan.BaselineAutoencoderTrainer(e, g, SMALL)
    trainer.compile(**train_bagan.autoencoder_optimizers(SMALL.replace(ae_lr=2e-3)))
    history = trainer.fit(_dataset(x, np.zeros(64, np.int32), 16), steps_per_epoch=10,
                          epochs=6, verbose=0).history["loss"]
    assert history[-1] < 0.75 * history[0]
    # Better than the all-zero patch after training, in inference mode.
    trainer.reset_metrics()
    final = float(trainer.test_step({"features": tf.constant(x)})["loss"])
    recon = np.asarray(trainer(x))
    assert final == pytest.approx(np.abs(recon - x).mean(), rel=1e-4)
    assert final < 0.8 * np.abs(x).mean()
    # The fitted class normals live in the code space of this encoder.
    labels = np.arange(64) % SMALL.n_classes
    latents = train_bagan.fit_class_latents(e, x, labels, SMALL)
    codes = train_bagan.encode(e, x, batch_size=24)
    np.testing.assert_allclose(latents.means[1], codes[labels == 1].mean(axis=0), atol=1e-5)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_gan_step_moves_both_networks_and_reports_metrics(policy):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        g, e, d = _small_networks()
        trainer = train_bagan.BaselineGANTrainer(g, d, _latents(), SMALL, seed=0)
        trainer.compile(**train_bagan.gan_optimizers(SMALL))
        g_before = [w.numpy() for w in g.trainable_weights]
        d_before = [w.numpy() for w in d.trainable_weights]
        x = _smooth_patterns(16, SMALL.frames, SMALL.n_mels)
        y = (np.arange(16) % SMALL.n_classes).astype(np.int32)
        # One eager step; the traced step is exercised by the next test.
        logs = trainer.train_step({"features": tf.constant(x), "label": tf.constant(y)})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert set(logs) == {"d_loss", "g_loss", "d_real_acc", "d_fake_acc"}
    # Losses and accuracies come out in float32 under either policy (the values are
    # checked by hand in the next test).
    assert all(v.dtype == "float32" and np.isfinite(float(v)) for v in logs.values())
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(g_before, g.trainable_weights))
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(d_before, d.trainable_weights))
    assert trainer.g_optimizer.iterations.numpy() == trainer.d_optimizer.iterations.numpy() == 1
    # The encoder's own code layer is not part of the GAN.
    assert not any(w is v for w in e.get_layer("code").weights for v in d.trainable_weights)


def _cross_entropy(logits, targets):
    """Mean softmax cross-entropy of float64 logits against integer targets."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(targets)), targets]))


def test_gan_losses_are_the_n_plus_one_class_cross_entropies_recomputed_by_hand():
    keras.utils.set_random_seed(3)
    config = SMALL.replace(dropout=0.0)
    g, _, d = _small_networks(config)
    latents = _latents(config)
    trainer = train_bagan.BaselineGANTrainer(g, d, latents, config, seed=0)
    # At learning rate 0 no weight moves, so the step's losses can be recomputed.
    trainer.compile(**train_bagan.gan_optimizers(config.replace(g_lr=0.0, d_lr=0.0)))
    state = trainer.seed_generator.state.numpy()
    x = _smooth_patterns(16, config.frames, config.n_mels)
    y = (np.arange(16) % config.n_classes).astype(np.int32)
    logs = trainer.train_step({"features": tf.constant(x), "label": tf.constant(y)})

    # The same draws in the same order from a generator in the same state: the classes
    # of ceil(16 / N_c) = 4 generated patches and their codes z = mu_c + L_c e, then
    # 16 + 4 classes and codes for the generator update.
    draws = keras.random.SeedGenerator(0)
    draws.state.assign(state)

    def codes(n):
        labels = keras.random.randint((n,), 0, config.n_classes, seed=draws, dtype="int32")
        e = keras.random.normal((n, config.z_dim), seed=draws).numpy()
        labels = labels.numpy()
        z = latents.means[labels] + np.einsum("nij,nj->ni", latents.cholesky[labels], e)
        return labels, z.astype(np.float32)

    fake_labels, z = codes(4)
    fake = g(z, training=True)
    logits = trainer.logits_model(tf.concat([x, fake], axis=0), training=True).numpy()
    targets = np.concatenate([y, np.full(4, config.n_classes)])
    g_labels, z = codes(20)
    g_logits = trainer.logits_model(g(z, training=True), training=True).numpy()
    hits = logits.argmax(axis=1) == targets
    assert float(logs["d_loss"]) == pytest.approx(_cross_entropy(logits, targets), rel=1e-5)
    assert float(logs["g_loss"]) == pytest.approx(_cross_entropy(g_logits, g_labels), rel=1e-5)
    assert float(logs["d_real_acc"]) == pytest.approx(hits[:16].mean())
    assert float(logs["d_fake_acc"]) == pytest.approx(hits[16:].mean())


def test_discriminator_then_generator_learn_their_targets():
    keras.utils.set_random_seed(1)
    config = SMALL.replace(dropout=0.0)
    g, _, d = _small_networks(config)
    trainer = train_bagan.BaselineGANTrainer(g, d, _latents(config), config, seed=1)
    trainer.compile(**train_bagan.gan_optimizers(config.replace(g_lr=0.0, d_lr=2e-3)))
    # One constant level per class: trivially separable real classes.
    y = (np.arange(64) % config.n_classes).astype(np.int32)
    x = np.broadcast_to((y[:, None, None] - 1.5) / 2.5,
                        (64, config.frames, config.n_mels)).astype(np.float32)
    # Training-mode running means over each 10-step epoch (batch statistics).
    logs = trainer.fit(_dataset(x, y, 16), steps_per_epoch=10, epochs=2, verbose=0).history
    assert logs["d_real_acc"][-1] > 0.9 and logs["d_fake_acc"][-1] > 0.9
    assert logs["d_loss"][-1] < 0.5 * logs["d_loss"][0]
    # The generator was not updated (g_lr = 0), so its loss only grows as D learns.
    assert logs["g_loss"][-1] > logs["g_loss"][0]
    # Checked directly on D's outputs too: real -> its class, generated -> N_c (the last
    # column), on a batch shaped like the training ones (16 real + 4 generated).
    fake_labels = np.arange(4) % config.n_classes
    fake = g(trainer.sample_latent(fake_labels), training=True)
    probs = np.asarray(d(tf.concat([x[:16], fake], axis=0), training=True))
    np.testing.assert_array_equal(probs[:16].argmax(-1), y[:16])
    np.testing.assert_array_equal(probs[16:].argmax(-1), config.n_classes)
    # Now the other way round: a fixed D, and G learns D(G(z_c)) -> c.
    trainer.d_optimizer.learning_rate.assign(0.0)
    trainer.g_optimizer.learning_rate.assign(2e-3)
    trainer.reset_metrics()
    g_logs = trainer.fit(_dataset(x, y, 16), steps_per_epoch=10, epochs=2, verbose=0).history
    assert g_logs["g_loss"][-1] < 0.5 * logs["g_loss"][-1]
    assert g_logs["d_fake_acc"][-1] < 0.5 and g_logs["d_real_acc"][-1] > 0.9
    labels = np.arange(32) % config.n_classes
    fake = g(trainer.sample_latent(labels), training=True)
    assert np.mean(np.asarray(d(fake, training=False)).argmax(-1) == labels) > 0.75


def test_in_graph_latent_draws_follow_the_class_normals():
    latents = _latents(seed=3)
    g, _, d = _small_networks()
    trainer = train_bagan.BaselineGANTrainer(g, d, latents, SMALL, seed=5)
    z = np.asarray(trainer.sample_latent(np.full(20000, 2, np.int32)))
    np.testing.assert_allclose(z.mean(axis=0), latents.means[2], atol=0.08)
    np.testing.assert_allclose(np.cov(z.T), latents.covariances[2], atol=0.1)
    with pytest.raises(ValueError, match="N_c"):
        train_bagan.BaselineGANTrainer(g, d, _latents(SMALL.replace(n_classes=3)), SMALL)


def test_generate_is_reproducible_and_in_range():
    g, _, _ = _small_networks()
    latents = _latents()
    labels = np.array([0, 1, 2, 3, 3, 2, 1])
    out = train_bagan.generate(g, latents, labels, seed=4, batch_size=3)
    assert out.shape == (7, SMALL.frames, SMALL.n_mels) and out.dtype == np.float32
    assert np.abs(out).max() <= 1.0
    np.testing.assert_allclose(out, train_bagan.generate(g, latents, labels, seed=4), atol=1e-6)
    assert not np.allclose(out, train_bagan.generate(g, latents, labels, seed=5))
    assert train_bagan.generate(g, latents, [], seed=0).shape == (0, SMALL.frames, SMALL.n_mels)


def test_networks_and_trainers_save_and_load(tmp_path):
    keras.utils.set_random_seed(2)
    g, e, d = _small_networks()
    x = _smooth_patterns(3, SMALL.frames, SMALL.n_mels)
    z = _latents().sample([0, 1, 2], seed=0)
    for model, inputs in ((g, z), (e, x), (d, x)):
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(inputs, training=False), model(inputs, training=False),
                                   atol=1e-6)
    ae = train_bagan.BaselineAutoencoderTrainer(e, g, SMALL)
    ae.compile(**train_bagan.autoencoder_optimizers(SMALL))
    ae.save(str(tmp_path / "ae.keras"))
    ae2 = keras.models.load_model(str(tmp_path / "ae.keras"))
    assert isinstance(ae2, train_bagan.BaselineAutoencoderTrainer)
    assert ae2.config == SMALL
    # It comes back compiled with the same optimiser, ready to train on.
    assert ae2.optimizer.get_config() == ae.optimizer.get_config()
    np.testing.assert_allclose(ae2(x), ae(x), atol=1e-6)
    gan = train_bagan.BaselineGANTrainer(g, d, _latents(), SMALL, seed=3)
    gan.compile(**train_bagan.gan_optimizers(SMALL))
    gan.save(str(tmp_path / "gan.keras"))
    gan2 = keras.models.load_model(str(tmp_path / "gan.keras"))
    assert isinstance(gan2, train_bagan.BaselineGANTrainer)
    np.testing.assert_allclose(gan2.latent_cholesky.numpy(), gan.latent_cholesky.numpy())
    assert gan2.seed == 3
    for name in ("g_optimizer", "d_optimizer"):
        assert getattr(gan2, name).get_config() == getattr(gan, name).get_config()
    np.testing.assert_allclose(gan2.latents.covariances, gan.latents.covariances)
    np.testing.assert_allclose(gan2(z), gan(z), atol=1e-6)
