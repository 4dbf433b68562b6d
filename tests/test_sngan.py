"""SN-GAN of Eskimez et al. 2020: Table 1 shapes and counts, the three stages, guards."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import features as kfeatures
from keras_ser.models import sngan
from keras_ser.patches import PatchBank
from keras_ser.training import autoencoder, conditional_gan, ser, stages, wgan_gp


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
    data = speech_bank.dataset(c.batch_size, c.frames, minmax, seed=1)
    keras.utils.set_random_seed(0)
    g = sngan.build_generator(c)
    enc = sngan.build_discriminator(c, "encoder")
    ae = autoencoder.AutoencoderTrainer(enc, g, c)
    ae.compile()
    state = stages.fit_stage(ae, data, stage="ae", directory=str(tmp_path / "ae"), epochs=4,
                             steps_per_epoch=15, verbose=0)
    first, last = _loss_drop(state["history"], "loss")
    assert last < 0.93 * first, (first, last)

    critic = sngan.attach_head(sngan.trunk_of(enc), c, "critic")
    gan = wgan_gp.WGANGPTrainer(g, critic, c)
    gan.compile()
    state = stages.fit_stage(gan, data, stage="wgan", directory=str(tmp_path / "wgan"),
                             epochs=3, steps_per_epoch=15, verbose=0)
    first, last = _loss_drop(state["history"], "d_loss")
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
    critic(data.take(1).get_single_element()["features"], training=True)
    assert abs(sngan.largest_singular_values(critic, normalised=False)["dense"] - 1) < 0.05

    disc = sngan.attach_head(sngan.trunk_of(critic), c, "fake_class")
    ft = conditional_gan.ConditionalGANTrainer(g, disc, c)
    ft.compile()
    state = stages.fit_stage(ft, data, stage="ft", directory=str(tmp_path / "ft"), epochs=3,
                             steps_per_epoch=15, verbose=0)
    first, last = _loss_drop(state["history"], "d_real_loss")
    assert last < first, (first, last)
    samples = conditional_gan.generate(g, [0, 1, 2, -1], seed=0)
    assert samples.shape == (4, 32, 32) and np.abs(samples).max() <= 1.0


def _constant_data(c, value=0.5, nan_after=None):
    patch = np.sin(np.linspace(0, 6, c.frames * c.n_mels)).reshape(c.frames, c.n_mels)
    batch = np.repeat((value * patch)[None].astype(np.float32), c.batch_size, axis=0)

    def gen():
        step = 0
        while True:
            step += 1
            x = batch if nan_after is None or step <= nan_after else batch * np.nan
            yield {"features": x, "label": np.zeros(c.batch_size, np.int32)}

    spec = {"features": tf.TensorSpec(batch.shape, tf.float32),
            "label": tf.TensorSpec([c.batch_size], tf.int32)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _ae(c):
    keras.utils.set_random_seed(1)
    t = autoencoder.AutoencoderTrainer(sngan.build_discriminator(c, "encoder"),
                                       sngan.build_generator(c), c)
    t.compile()
    return t


def test_stage_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    c = _tiny().replace(frames=16, n_mels=16, batch_size=4)
    straight = _ae(c)
    stages.fit_stage(straight, _constant_data(c), stage="ae", directory=str(tmp_path / "a"),
                     epochs=4, steps_per_epoch=3, verbose=0)
    first = _ae(c)
    stages.fit_stage(first, _constant_data(c), stage="ae", directory=str(tmp_path / "b"),
                     epochs=2, steps_per_epoch=3, verbose=0)
    resumed = _ae(c)
    state = stages.fit_stage(resumed, _constant_data(c), stage="ae",
                             directory=str(tmp_path / "b"), epochs=4, steps_per_epoch=3,
                             verbose=0)
    assert state["epochs_done"] == 4 and len(state["history"]) == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A finished stage is not trained again.
    again = _ae(c)
    state = stages.fit_stage(again, _constant_data(c), stage="ae",
                             directory=str(tmp_path / "b"), epochs=4, steps_per_epoch=3,
                             verbose=0)
    for a, b in zip(again.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(tmp_path):
    c = _tiny().replace(frames=16, n_mels=16, batch_size=4)
    trainer = _ae(c)
    folder = str(tmp_path / "ae")
    with pytest.raises(stages.DivergenceError) as info:
        stages.fit_stage(trainer, _constant_data(c, nan_after=4), stage="stage1_autoencoder",
                         directory=folder, epochs=5, steps_per_epoch=3, verbose=0)
    message = str(info.value)
    assert "stage1_autoencoder" in message and "not finite" in message
    assert "epoch 2, step 2" in message and "epoch 1" in message and folder in message
    state = stages.load_stage(_ae(c), folder)
    assert state["epochs_done"] == 1
    assert all(np.isfinite(w).all() for w in _ae(c).get_weights())
    restored = _ae(c)
    stages.load_stage(restored, folder)
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_exploding_loss_is_reported(tmp_path):
    c = _tiny().replace(frames=16, n_mels=16, batch_size=4)
    with pytest.raises(stages.DivergenceError, match="exceeds 0.001"):
        stages.fit_stage(_ae(c), _constant_data(c), stage="ae", directory=str(tmp_path),
                         epochs=1, steps_per_epoch=2, verbose=0, limit=1e-3)


def test_ser_network_scores_files_by_mean_window_probability():
    c = _tiny(n_classes=2).replace(frames=16, n_mels=16, hop_frames=4)
    model = ser.build_ser_network(c)
    assert tuple(model.output.shape[1:]) == (2,)
    rng = np.random.default_rng(0)
    mels = [rng.normal(-40, 10, (n, 16)).astype(np.float32) for n in (10, 16, 27)]
    bank = PatchBank(mels, [0, 1, 1], ["a", "a", "b"], ["u1", "u2", "u3"])
    minmax = bank.minmax()
    patches, owner = bank.windows(16, 4, minmax)
    # 10 frames -> one padded window; 16 -> one; 27 -> starts 0, 4, 8 -> three.
    assert owner.tolist() == [0, 1, 2, 2, 2]
    assert np.all(patches[0, 10:] == -1.0)
    probs = ser.file_probabilities(model, bank, 16, 4, minmax)
    per_window = model.predict(patches, verbose=0)
    np.testing.assert_allclose(probs[2], per_window[2:].mean(axis=0), rtol=1e-5)
    scores = ser.score_files(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 1, 1],
                             ["a", "b"])
    assert scores["ua"] == pytest.approx(0.75) and scores["wa"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


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
