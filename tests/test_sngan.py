"""SN-GAN of Eskimez et al. 2020: Table 1 shapes and counts, the losses of the three
stages recomputed by hand, training on real speech, the SER network."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import features as kfeatures
from keras_ser import synthesis
from keras_ser.models import sngan
from keras_ser.patches import PatchBank
from keras_ser.training import autoencoder, conditional_gan, ser, wgan_gp
from keras_ser.training.resumable import fit_resumable


def _count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def _dense(cin, cout):
    return cin * cout + cout


def test_paper_generator_table1_shapes_and_parameters():
    c = sngan.get_sngan_preset("paper")
    g = sngan.build_generator(c)
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in g.layers}
    assert shapes["z_condition"] == (132,)
    assert shapes["dense1_sn"] == (4096,)
    assert shapes["dense2_sn"] == (32768,)
    assert shapes["reshape"] == (8, 8, 512)
    widths = [512, 512, 256, 256, 128, 128, 64, 64, 1]
    sizes = [8, 8, 16, 16, 32, 32, 64, 64, 128]
    for i, (w, s) in enumerate(zip(widths, sizes)):
        assert shapes[f"conv{i + 1}_sn"] == (s, s, w), f"conv{i + 1}"
    for i, s in enumerate((16, 32, 64, 128)):
        assert shapes[f"up{i + 1}"][:2] == (s, s)
    assert shapes["patch"] == (128, 128)
    # Per layer, from Table 1 by hand.
    assert _count(g.get_layer("dense1_sn")) == _dense(132, 4096)
    assert _count(g.get_layer("dense2_sn")) == _dense(4096, 32768)
    cins = [512, 512, 512, 256, 256, 128, 128, 64, 64]
    for i, (cin, cout) in enumerate(zip(cins, widths)):
        assert _count(g.get_layer(f"conv{i + 1}_sn")) == _conv(3, cin, cout)
    expected = (_dense(132, 4096) + _dense(4096, 32768)
                + sum(_conv(3, a, b) for a, b in zip(cins, widths)))
    assert _count(g) == expected == 141_838_785
    # Spectral norm on every conv and dense layer; no batch norm, no dropout.
    assert len(sngan.spectral_layers(g)) == 11
    assert not [x for x in g.layers if isinstance(x, (keras.layers.BatchNormalization,
                                                       keras.layers.Dropout))]
    assert g.get_layer("conv9_sn").layer.activation is keras.activations.tanh


def test_paper_discriminator_table1_shapes_parameters_and_heads():
    c = sngan.get_sngan_preset("paper")
    d = sngan.build_discriminator(c, "critic")
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in d.layers}
    widths = [64, 64, 128, 128, 256, 256, 512, 512]
    sizes = [128, 64, 64, 32, 32, 16, 16, 8]
    for i, (w, s) in enumerate(zip(widths, sizes)):
        assert shapes[f"conv{i + 1}_sn"] == (s, s, w), f"conv{i + 1}"
        stride = d.get_layer(f"conv{i + 1}_sn").layer.strides
        assert stride == ((2, 2) if i % 2 else (1, 1))
    assert shapes["flatten"] == (32768,)
    assert shapes[sngan.EMBEDDING] == (4096,)
    convs = sum(_conv(3, a, b) for a, b in zip([1] + widths[:-1], widths))
    trunk = convs + _dense(32768, 4096)
    assert _count(d) == trunk + _dense(4096, 1) == 138_910_145
    assert len(sngan.spectral_layers(d)) == 10
    trunk_model = sngan.trunk_of(d)
    for head, units in (("encoder", 128), ("fake_class", 5), ("classifier", 4)):
        h = sngan.attach_head(trunk_model, c, head)
        assert tuple(h.output.shape[1:]) == (units,)
        assert _count(h) == trunk + _dense(4096, units)
    # attach_head shares the trunk's weights instead of copying them.
    assert h.get_layer("conv1_sn") is d.get_layer("conv1_sn")
    with pytest.raises(ValueError, match="unknown discriminator head"):
        sngan.head_units(c, "critics")


def test_cpu_preset_keeps_the_topology():
    paper, cpu = sngan.get_sngan_preset("paper"), sngan.get_sngan_preset("cpu")
    for build in (sngan.build_generator, lambda c: sngan.build_discriminator(c)):
        a, b = build(paper), build(cpu)
        assert [type(x).__name__ for x in a.layers] == [type(x).__name__ for x in b.layers]
    assert tuple(sngan.build_generator(cpu).output.shape[1:]) == (cpu.frames, cpu.n_mels)
    with pytest.raises(ValueError, match="multiple of 16"):
        sngan.get_sngan_preset("cpu", frames=40)
    with pytest.raises(KeyError, match="unknown SN-GAN preset"):
        sngan.get_sngan_preset("gpu")


def test_gradient_penalty_matches_hand_computation():
    # Tiny critic D(x) = (w . x + b)^2: grad_x D = 2 (w . x + b) w.
    rng = np.random.default_rng(3)
    inputs = keras.Input((3, 2))
    flat = keras.layers.Flatten()(inputs)
    lin = keras.layers.Dense(1, name="lin")(flat)
    critic = keras.Model(inputs, keras.layers.Lambda(lambda t: t ** 2)(lin))
    w = rng.standard_normal((6, 1)).astype(np.float32)
    b = np.float32(0.3)
    critic.get_layer("lin").set_weights([w, np.array([b])])
    real = rng.standard_normal((4, 3, 2)).astype(np.float32)
    fake = rng.standard_normal((4, 3, 2)).astype(np.float32)
    eps = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    got = float(wgan_gp.gradient_penalty(critic, tf.constant(real), tf.constant(fake),
                                         tf.constant(eps)))
    mixed = eps[:, None, None] * real + (1 - eps[:, None, None]) * fake
    s = mixed.reshape(4, 6) @ w[:, 0] + b
    norms = 2 * np.abs(s) * np.linalg.norm(w)
    assert got == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-5)
    assert got > 0.1  # the construction is not degenerate


def _tiny(n_classes=3):
    return sngan.get_sngan_preset("cpu", frames=32, n_mels=32, n_classes=n_classes,
                                  batch_size=16)


#: 16 x 16 patches and narrow layers: the losses below are recomputed in a second.
NARROW = sngan.get_sngan_preset("cpu", frames=16, n_mels=16, z_dim=8, n_classes=3,
                                dense_units=16, g_widths=(8, 8, 4, 4, 4, 4, 4, 4),
                                d_widths=(4, 4, 4, 4, 8, 8, 8, 8), batch_size=4)


def test_the_optimiser_helpers_give_the_papers_adam():
    paper = sngan.get_sngan_preset("paper")
    expected = {(autoencoder, "optimizer"): 5e-5,
                (wgan_gp, "g_optimizer"): 2e-6, (wgan_gp, "d_optimizer"): 2e-5,
                (conditional_gan, "g_optimizer"): 2e-6, (conditional_gan, "d_optimizer"): 2e-5}
    for (module, key), lr in expected.items():
        opt = module.optimizers(paper)[key]
        assert isinstance(opt, keras.optimizers.Adam), (module.__name__, key)
        assert (float(opt.learning_rate), opt.beta_1, opt.beta_2) == pytest.approx(
            (lr, 0.5, 0.99)), (module.__name__, key)


def _frozen(config, **rates):
    """The config with the given learning rates set to 0: no weight moves in a step,
    except that spectral normalisation rescales kernels in every training-mode call."""
    return config.replace(**{name: 0.0 for name in rates})


def _snapshot(*models):
    return [(v, v.numpy()) for m in models for v in m.variables]


def _restore(snapshot):
    for variable, value in snapshot:
        variable.assign(value)


def _patches(n, config, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, config.frames, config.n_mels)).astype(np.float32)


def test_wgan_gp_losses_recomputed_by_hand():
    c = NARROW
    keras.utils.set_random_seed(0)
    g, critic = sngan.build_generator(c), sngan.build_discriminator(c, "critic")
    trainer = wgan_gp.WGANGPTrainer(g, critic, c, seed=0)
    trainer.compile(**wgan_gp.optimizers(_frozen(c, g_lr=0, d_lr=0)))
    state = trainer.seed_generator.state.numpy()
    before = _snapshot(g, critic)
    real = _patches(4, c)
    logs = {k: float(v) for k, v in trainer.train_step(tf.constant(real)).items()}

    # Replay from the same weights, power-iteration vectors and noise state: z, the
    # critic on real and generated patches, eps, the penalty on the interpolates; then a
    # fresh z for the generator update. The training-mode calls come in the step's order
    # because each one advances spectral normalisation.
    _restore(before)
    draws = keras.random.SeedGenerator(0)
    draws.state.assign(state)
    zeros = tf.zeros((4, c.n_classes))
    fake = g([keras.random.normal((4, c.z_dim), seed=draws), zeros], training=True).numpy()
    real_score = critic(real, training=True).numpy()[:, 0]
    fake_score = critic(fake, training=True).numpy()[:, 0]
    eps = keras.random.uniform((4,), seed=draws).numpy()[:, None, None]
    mixed = tf.constant(eps * real + (1.0 - eps) * fake)
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = critic(mixed, training=True)
    grads = tape.gradient(scores, mixed).numpy().astype(np.float64)
    gp = np.mean((np.sqrt((grads ** 2).sum(axis=(1, 2))) - 1.0) ** 2)
    d_loss = fake_score.mean() - real_score.mean() + 10.0 * gp
    z = keras.random.normal((4, c.z_dim), seed=draws)
    g_loss = -critic(g([z, zeros], training=True), training=False).numpy().mean()

    assert c.gp_weight == 10.0 and gp > 1e-2  # the penalty term is not negligible
    assert logs["gp"] == pytest.approx(gp, rel=1e-5)
    assert logs["w_distance"] == pytest.approx(real_score.mean() - fake_score.mean(),
                                               rel=1e-5, abs=1e-7)
    assert logs["d_loss"] == pytest.approx(d_loss, rel=1e-5, abs=1e-7)
    assert logs["g_loss"] == pytest.approx(g_loss, rel=1e-5, abs=1e-7)


def _sparse_ce(probs, labels):
    probs = np.asarray(probs, np.float64)
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def test_conditional_gan_losses_recomputed_by_hand():
    c = NARROW
    keras.utils.set_random_seed(1)
    g, disc = sngan.build_generator(c), sngan.build_discriminator(c, "fake_class")
    trainer = conditional_gan.ConditionalGANTrainer(g, disc, c, seed=0)
    trainer.compile(**conditional_gan.optimizers(_frozen(c, ft_g_lr=0, ft_d_lr=0)))
    state = trainer.seed_generator.state.numpy()
    before = _snapshot(g, disc)
    real = _patches(4, c, seed=1)
    labels = np.array([0, 2, 1, 2], np.int32)
    logs = trainer.train_step({"features": tf.constant(real), "label": tf.constant(labels)})
    logs = {k: float(v) for k, v in logs.items()}

    # Replay: z and the intended emotions, G([z, onehot]), D on real (-> emotion) and
    # generated (-> fake class N_c = 3) patches; then fresh z and emotions for the
    # generator update, scored by D in inference mode against the intended emotions.
    _restore(before)
    draws = keras.random.SeedGenerator(0)
    draws.state.assign(state)

    def conditioned(n):
        z = keras.random.normal((n, c.z_dim), seed=draws)
        wanted = keras.random.randint((n,), 0, c.n_classes, seed=draws).numpy()
        condition = tf.constant(sngan.condition_vectors(wanted, c.n_classes))
        return g([z, condition], training=True), wanted

    fake, _ = conditioned(4)
    p_real = disc(real, training=True).numpy()
    p_fake = disc(fake, training=True).numpy()
    generated, wanted = conditioned(4)
    p_gen = disc(generated, training=False).numpy()
    real_loss = _sparse_ce(p_real, labels)

    assert p_real.shape == (4, c.n_classes + 1)
    assert logs["d_real_loss"] == pytest.approx(real_loss, rel=1e-5)
    assert logs["d_loss"] == pytest.approx(real_loss + _sparse_ce(p_fake, [3] * 4), rel=1e-5)
    assert logs["g_loss"] == pytest.approx(_sparse_ce(p_gen, wanted), rel=1e-5)
    assert logs["d_real_acc"] == pytest.approx(np.mean(p_real.argmax(1) == labels))
    assert logs["g_acc"] == pytest.approx(np.mean(p_gen.argmax(1) == wanted))


@pytest.fixture(scope="module")
def speech_bank(emodb_records):
    """Real log-mels: EmoDB speakers 03 and 08 (emotions) at the tiny preset's 32 mels."""
    feats = kfeatures.get_preset("eskimez").replace(n_mels=32)
    return PatchBank.from_records(emodb_records[0], feats,
                                  classes=["anger", "neutral", "sadness"],
                                  speakers=["03", "08"])


def _loss_drop(history, key):
    return history[0][key], history[-1][key]


@pytest.mark.slow
@pytest.mark.real_data
def test_each_stage_lowers_its_loss_on_real_speech(speech_bank, tmp_path):
    c = _tiny().replace(ae_lr=1e-3, g_lr=2e-4, d_lr=4e-4, ft_g_lr=2e-4, ft_d_lr=4e-4)
    minmax = speech_bank.minmax()
    steps = 15

    def fit(trainer, stage, epochs):
        def data(first):
            return speech_bank.dataset(c.batch_size, c.frames, minmax, seed=1,
                                       epochs=(first, epochs), steps=steps)
        return fit_resumable(trainer, data, directory=str(tmp_path / stage), epochs=epochs,
                             seed=1, steps_per_epoch=steps, stage=stage, verbose=0)

    keras.utils.set_random_seed(0)
    g = sngan.build_generator(c)
    enc = sngan.build_discriminator(c, "encoder")
    ae = autoencoder.AutoencoderTrainer(enc, g, c)
    ae.compile(**autoencoder.optimizers(c))
    first, last = _loss_drop(fit(ae, "ae", 4)["history"], "loss")
    assert last < 0.93 * first, (first, last)

    critic = sngan.attach_head(sngan.trunk_of(enc), c, "critic")
    gan = wgan_gp.WGANGPTrainer(g, critic, c)
    gan.compile(**wgan_gp.optimizers(c))
    first, last = _loss_drop(fit(gan, "wgan", 3)["history"], "d_loss")
    assert last < first - 0.5, (first, last)
    # Spectral normalisation keeps every layer's largest singular value near 1.
    for net in (critic, g):
        sigmas = sngan.largest_singular_values(net)
        assert len(sigmas) == len(sngan.spectral_layers(net))
        for name, sigma in sigmas.items():
            assert abs(sigma - 1.0) < 0.05, (net.name, name, sigma)
    # The stored kernels sit within one optimiser step of the unit sphere ...
    raw = sngan.largest_singular_values(critic, normalised=False)
    assert all(abs(s - 1.0) < 0.5 for s in raw.values()), raw
    # ... and a kernel blown up 3x is normalised back: the property is not trivial.
    k = critic.get_layer("dense_sn").layer.kernel
    k.assign(k * 3.0)
    assert sngan.largest_singular_values(critic, normalised=False)["dense"] > 2.5
    batch = speech_bank.dataset(c.batch_size, c.frames, minmax, seed=2).take(1)
    critic(batch.get_single_element()["features"], training=True)
    assert abs(sngan.largest_singular_values(critic, normalised=False)["dense"] - 1) < 0.05

    # Fine-tuning with the generator held (learning rate 0): with both networks moving,
    # 45 steps settle nothing about either (whether the discriminator's loss falls then
    # depends on the seed); held, the new N_c + 1 head must learn real emotions against
    # generated patches. The generator's update is checked by hand above.
    disc = sngan.attach_head(sngan.trunk_of(critic), c, "fake_class")
    ft = conditional_gan.ConditionalGANTrainer(g, disc, c)
    ft.compile(**conditional_gan.optimizers(c.replace(ft_g_lr=0.0)))
    history = fit(ft, "ft", 3)["history"]
    first, last = _loss_drop(history, "d_loss")
    assert last < first, (first, last)
    first, last = _loss_drop(history, "d_real_acc")
    assert last > first, (first, last)
    samples = synthesis.generate(g, [0, 1, 2, -1], seed=0)
    assert samples.shape == (4, 32, 32) and np.abs(samples).max() <= 1.0


def test_ser_network_is_the_table1_classifier_with_a_staircase_decayed_adam():
    c = NARROW.replace(n_classes=2, ser_lr=1e-3, ser_decay_steps=10)
    keras.utils.set_random_seed(0)
    model = ser.build_ser_network(c)
    assert tuple(model.output.shape[1:]) == (2,)
    assert model.get_layer("head_classifier_sn").layer.activation is keras.activations.softmax
    opt = model.optimizer
    assert (opt.beta_1, opt.beta_2) == (0.5, 0.99)
    # Built on every trainable variable, so a checkpoint can restore it before step 1.
    slots = [v for v in opt.variables if v.path.endswith(("_momentum", "_velocity"))]
    assert len(slots) == 2 * len(model.trainable_variables)
    rates = []
    for step in (0, 9, 10, 25):
        opt.iterations.assign(step)
        rates.append(float(opt.learning_rate))
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5], rel=1e-6)
    x = _patches(3, c)
    batches = tf.data.Dataset.from_tensor_slices(
        {"features": x, "label": np.array([0, 1, 1], np.int32), "length": [16] * 3}).batch(3)
    features, label = ser.as_pairs(batches).get_single_element()
    np.testing.assert_array_equal(features.numpy(), x)
    assert label.numpy().tolist() == [0, 1, 1]


def test_generator_saves_loads_and_exports(tmp_path):
    c = _tiny()
    g = sngan.build_generator(c)
    z = np.random.default_rng(0).standard_normal((2, c.z_dim)).astype(np.float32)
    cond = sngan.condition_vectors([0, 2], c.n_classes)
    before = np.asarray(g([z, cond], training=False))
    g.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    np.testing.assert_allclose(np.asarray(loaded([z, cond], training=False)), before,
                               atol=1e-6)
    g.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_allclose(served.serve([z, cond]).numpy(), before, atol=1e-5)
