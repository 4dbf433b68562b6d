"""The NITK report's per-class DCGAN (`keras_ser.models.nitk_gan`) and its BCE trainer."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ser.models import nitk_gan
from keras_ser.training import bce_gan


def _sides(model, prefix):
    return [layer.output.shape[1] for layer in model.layers if layer.name.startswith(prefix)]


def _torch_conv(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _torch_conv_transpose(n, k, s, p):
    return (n - 1) * s - 2 * p + k


@pytest.mark.parametrize("preset", ["paper", nitk_gan.NITKGANConfig(ngf=8, ndf=4)])
def test_generator_feature_maps_are_the_listings_4_8_18_55_112_224(preset):
    g = nitk_gan.build_generator(preset)
    assert _sides(g, "crop") == [4, 8, 18, 55, 112, 224]
    # The same sides from PyTorch's ConvTranspose2d formula and the listing's (k, s, p).
    n, expected = 1, []
    for _, k, s, p in nitk_gan.GENERATOR_BLOCKS:
        n = _torch_conv_transpose(n, k, s, p)
        expected.append(n)
    assert expected == [4, 8, 18, 55, 112, 224]
    assert g.output_shape == (None, 224, 224, 1)
    out = g(np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)).numpy()
    assert np.abs(out).max() <= 1.0
    width = nitk_gan.get_config(preset).ngf
    assert [layer.output.shape[-1] for layer in g.layers if layer.name.startswith("crop")] == [
        8 * width, 4 * width, 2 * width, width, width, 1]
    assert not any(w.name == "bias" for w in g.weights)


@pytest.mark.parametrize("which,sides", [("d1", [75, 25, 8, 1]),
                                          ("d2", [113, 57, 29, 15, 8, 3, 1])])
def test_discriminator_feature_maps_follow_pytorch_padding(which, sides):
    d = nitk_gan.build_discriminator(which, "paper")
    assert _sides(d, "conv") == sides
    n, expected = 224, []
    for _, k, s, p, _, _ in nitk_gan.DISCRIMINATORS[which]:
        n = _torch_conv(n, k, s, p)
        expected.append(n)
    assert expected == sides
    assert d.output_shape == (None, 1)
    prob = d(np.zeros((2, 224, 224, 1), np.float32)).numpy()
    assert np.all((prob > 0) & (prob < 1))


def test_parameter_counts_of_the_paper_preset_by_hand():
    ngf, ndf, nz = 64, 64, 5
    g = (nz * 8 * ngf * 16 + 8 * ngf * 4 * ngf * 16 + 4 * ngf * 2 * ngf * 36
         + 2 * ngf * ngf * 36 + ngf * ngf * 36 + ngf * 16)
    g_bn = 4 * (8 * ngf + 4 * ngf + 2 * ngf + ngf + ngf)  # gamma, beta, mean, variance
    assert nitk_gan.build_generator("paper").count_params() == g + g_bn == 3765248
    d1 = 36 * ndf + ndf * 4 * ndf * 36 + 4 * ndf * 8 * ndf * 36 + 8 * ndf * 36
    assert nitk_gan.build_discriminator("d1").count_params() == d1 + 4 * 12 * ndf == 5332224
    d2 = (16 * ndf + ndf * 4 * ndf * 16 + 4 * ndf * 8 * ndf * 16 + 8 * ndf * 16 * ndf * 16
          + 16 * ndf * 16 * ndf * 25 * 2 + 16 * ndf * 9)
    d2_bn = 4 * (4 + 8 + 16 * 3) * ndf
    assert nitk_gan.build_discriminator("d2").count_params() == d2 + d2_bn == 63202304


def test_cpu_preset_is_the_64_pixel_geometry_with_its_sides_and_parameter_counts():
    cfg = nitk_gan.get_config("cpu")
    assert (cfg.image_size, cfg.ngf, cfg.ndf, cfg.n_z) == (64, 32, 32, 5)
    g = nitk_gan.build_generator("cpu")
    assert _sides(g, "crop") == [4, 8, 16, 32, 64] and g.output_shape == (None, 64, 64, 1)
    n, expected = 1, []
    for _, k, s, p in nitk_gan.GENERATOR64_BLOCKS:
        n = _torch_conv_transpose(n, k, s, p)
        expected.append(n)
    assert expected == [4, 8, 16, 32, 64]
    for which, sides in (("d1", [21, 7, 2, 1]), ("d2", [32, 16, 8, 4, 1])):
        d = nitk_gan.build_discriminator(which, "cpu")
        assert _sides(d, "conv") == sides and d.output_shape == (None, 1)
        n, expected = 64, []
        for _, k, s, p, _, _ in nitk_gan.GEOMETRIES[64][which]:
            n = _torch_conv(n, k, s, p)
            expected.append(n)
        assert expected == sides
    # Parameters by hand (ngf = ndf = 32; batch norm: gamma, beta, mean, variance).
    f = 32
    gen = 5 * 8 * f * 16 + 8 * f * 4 * f * 16 + 4 * f * 2 * f * 16 + 2 * f * f * 16 + f * 16
    assert g.count_params() == gen + 4 * (8 + 4 + 2 + 1) * f == 711040
    d1 = 36 * f + f * 4 * f * 36 + 4 * f * 8 * f * 36 + 8 * f * 4
    assert nitk_gan.build_discriminator("d1", "cpu").count_params() == d1 + 4 * 12 * f
    d2 = 16 * f + f * 2 * f * 16 + 2 * f * 4 * f * 16 + 4 * f * 8 * f * 16 + 8 * f * 16
    assert nitk_gan.build_discriminator("d2", "cpu").count_params() == d2 + 4 * 14 * f
    d = nitk_gan.build_discriminator("d1", "cpu")
    assert d.get_layer("dropout2").rate == 0.4 and "bn1" not in [x.name for x in d.layers]


def test_d1_has_channel_dropout_after_its_second_convolution_and_no_batch_norm_first():
    d = nitk_gan.build_discriminator("d1")
    names = [layer.name for layer in d.layers]
    assert names.index("dropout2") == names.index("lrelu2") + 1
    assert "bn1" not in names and {"bn2", "bn3"} <= set(names)
    assert d.get_layer("dropout2").rate == 0.4
    d2 = nitk_gan.build_discriminator("d2")
    assert not any("dropout" in layer.name for layer in d2.layers)


def test_explicit_padding_equals_a_pytorch_style_convolution_by_hand():
    # Conv2d(k=6, s=3, p=2) as ZeroPadding2D + valid Conv2D, against numpy.
    d = nitk_gan.build_discriminator("d1", nitk_gan.NITKGANConfig(ngf=8, ndf=4))
    x = np.random.default_rng(1).standard_normal((1, 224, 224, 1)).astype(np.float32)
    y = tf.keras.Model(d.input, d.get_layer("conv1").output)(x).numpy()
    kernel = d.get_layer("conv1").kernel.numpy()
    padded = np.pad(x[0, ..., 0], 2)
    i, j, c = 10, 74, 3
    patch = padded[3 * i:3 * i + 6, 3 * j:3 * j + 6]
    assert y[0, i, j, c] == pytest.approx(float((patch * kernel[..., 0, c]).sum()), abs=1e-5)


def test_configs_refuse_other_image_sizes_and_bad_widths():
    with pytest.raises(ValueError, match="224 or 64, not 128"):
        nitk_gan.NITKGANConfig(image_size=128)
    with pytest.raises(ValueError, match="positive"):
        nitk_gan.NITKGANConfig(ngf=0)
    with pytest.raises(ValueError, match="unknown discriminator"):
        nitk_gan.build_discriminator("d3")
    with pytest.raises(KeyError, match="known: paper, cpu"):
        nitk_gan.get_config("tiny")


def test_image_conversions_round_trip():
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (3, 224, 224, 1)).astype(np.float32)
    rgb = np.repeat(images, 3, axis=-1)
    gan = nitk_gan.to_gan_image(rgb)
    assert gan.shape == (3, 224, 224, 1) and gan.min() >= -1 and gan.max() <= 1
    back = np.asarray(nitk_gan.from_gan_image(gan))
    np.testing.assert_allclose(back, rgb, atol=1e-3)
    # The cpu preset's sizes: antialiased 224 -> 64 keeps a constant image constant and
    # the mean of every 3.5 x 3.5 block; 64 -> 224 comes back in [0, 255], three equal
    # channels.
    small = nitk_gan.to_gan_image(rgb, 64)
    assert small.shape == (3, 64, 64, 1) and isinstance(small, np.ndarray)
    flat = nitk_gan.to_gan_image(np.full((1, 224, 224, 3), 51.0, np.float32), 64)
    np.testing.assert_allclose(flat, 51.0 / 127.5 - 1.0, atol=1e-6)
    assert abs(float(small.mean()) - float(gan.mean())) < 1e-3
    big = np.asarray(nitk_gan.from_gan_image(small, 224))
    assert big.shape == (3, 224, 224, 3) and big.min() >= 0 and big.max() <= 255
    np.testing.assert_array_equal(big[..., 0], big[..., 2])
    ramp = np.linspace(-1, 1, 64, dtype=np.float32)[None, :, None, None] * np.ones(
        (1, 64, 64, 1), np.float32)
    up = np.asarray(nitk_gan.from_gan_image(ramp, 224))[0, :, 100, 0]
    assert np.all(np.diff(up) >= -1e-4) and up[0] < 5 and up[-1] > 250
    view = np.asarray(nitk_gan.spectrogram_view(gan))
    # Time along axis 1, frequency along axis 2 with the bottom image row first.
    assert view.shape == (3, 224, 224)
    assert view[0, 5, 0] == gan[0, 223, 5, 0] and view[0, 5, 223] == gan[0, 0, 5, 0]


def test_bce_trainer_step_matches_the_report_losses_by_hand():
    cfg = nitk_gan.NITKGANConfig(ngf=2, ndf=2)
    g = nitk_gan.build_generator(cfg)
    trainer = bce_gan.build_trainer(g, "d1", cfg, seed=3)
    real = np.random.default_rng(3).uniform(-1, 1, (4, 224, 224, 1)).astype(np.float32)
    d_before = [w.numpy() for w in trainer.discriminator.trainable_weights]
    logs = trainer.train_step(tf.constant(real))
    logs = {k: float(v) for k, v in logs.items()}
    # d_loss = BCE(D(x), 1) + BCE(D(G(z)), 0) with the logged means of D's outputs: for a
    # batch of near-constant outputs, -log(d_real) - log(1 - d_fake) is close to it.
    assert logs["d_loss"] == pytest.approx(-np.log(logs["d_real"]) - np.log(1 - logs["d_fake"]),
                                           rel=0.05)
    assert 0 < logs["g_loss"] < 5
    d_after = [w.numpy() for w in trainer.discriminator.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(d_before, d_after))
    images = trainer.generate(5, seed=1)
    assert images.shape == (5, 224, 224, 1)
    np.testing.assert_array_equal(images, trainer.generate(5, seed=1))


def test_learning_rates_outside_the_reports_range_are_refused():
    with pytest.raises(ValueError, match="2e-5, 5e-5"):
        bce_gan.adam_optimizers(d_lr=1e-4)
    opts = bce_gan.adam_optimizers(5e-5, 1.7e-4)
    assert float(opts["d_optimizer"].learning_rate) == pytest.approx(5e-5)
    assert float(opts["g_optimizer"].beta_1) == pytest.approx(0.5)


class _Model:
    stop_training = False


def test_switch_rule_fires_when_the_generator_loss_falls_to_70_percent_of_its_peak():
    rule = bce_gan.GeneratorLossDropped(0.7)
    rule.set_model(_Model())
    rule.on_train_begin()
    stopped_at = None
    for epoch, g_loss in enumerate([1.0, 2.0, 1.6, 1.41, 1.39, 1.0]):
        rule.on_epoch_end(epoch, {"g_loss": g_loss})
        if rule.model.stop_training:
            stopped_at = epoch
            break
    assert stopped_at == 4 and rule.best == 2.0
    # The counters survive a checkpoint: a resumed stage keeps the peak.
    again = bce_gan.GeneratorLossDropped(0.7)
    again.set_model(_Model())
    again.set_state({**rule.get_state(), "stopped_epoch": 0})
    again.on_train_begin()
    again.on_epoch_end(5, {"g_loss": 1.3})
    assert again.model.stop_training
    with pytest.raises(ValueError, match="ratio"):
        bce_gan.GeneratorLossDropped(1.5)


def _numpy_conv_transpose(x, w, s, p):
    """PyTorch ConvTranspose2d(k, s, p), no bias, by scatter-add: x (h, w, c_in),
    w (k, k, c_out, c_in) -> ((h - 1) s - 2p + k, ..., c_out)."""
    k, h = w.shape[0], x.shape[0]
    side = (h - 1) * s - 2 * p + k
    out = np.zeros((side, side, w.shape[2]))
    for i in range(h):
        for j in range(x.shape[1]):
            for a in range(k):
                for b in range(k):
                    r, c = i * s - p + a, j * s - p + b
                    if 0 <= r < side and 0 <= c < side:
                        out[r, c] += w[a, b] @ x[i, j]
    return out


def _numpy_conv(x, w, s, p):
    """PyTorch Conv2d(k, s, p), no bias: x (h, w, c_in), w (k, k, c_in, c_out)."""
    k = w.shape[0]
    padded = np.pad(x, ((p, p), (p, p), (0, 0)))
    side = (x.shape[0] + 2 * p - k) // s + 1
    out = np.zeros((side, side, w.shape[3]))
    for i in range(side):
        for j in range(side):
            patch = padded[i * s:i * s + k, j * s:j * s + k]
            out[i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    return out


#: The report's 224-pixel geometry at small widths (fast), and the cpu preset's 64.
NARROW = nitk_gan.NITKGANConfig(ngf=4, ndf=4)


@pytest.mark.parametrize("config,block", [(NARROW, 2), (NARROW, 3), ("cpu", 3)])
def test_generator_deconv_and_crop_equal_pytorch_conv_transpose_values(config, block):
    # 224 geometry: block 2 ConvTranspose2d(k=4, s=2, p=1) 4 -> 8, block 3 (k=6, s=2,
    # p=1) 8 -> 18; cpu block 3: (k=4, s=2, p=1) 8 -> 16.
    g = nitk_gan.build_generator(config)
    deconv, crop = g.get_layer(f"deconv{block}"), g.get_layer(f"crop{block}")
    side = nitk_gan.get_config(config).image_size
    _, k, s, p = nitk_gan.GEOMETRIES[side]["generator"][block - 1]
    rng = np.random.default_rng(block)
    deconv.kernel.assign(rng.standard_normal(deconv.kernel.shape).astype(np.float32))
    x = rng.standard_normal((1, *deconv.input.shape[1:])).astype(np.float32)
    y = crop(deconv(x)).numpy()[0]
    expected = _numpy_conv_transpose(x[0].astype(np.float64), deconv.kernel.numpy(), s, p)
    assert y.shape == expected.shape == ((x.shape[1] - 1) * s - 2 * p + k,) * 2 + (
        deconv.filters,)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config,which,block", [(NARROW, "d1", 2), (NARROW, "d2", 6),
                                                 ("cpu", "d1", 2), ("cpu", "d2", 3)])
def test_discriminator_pad_and_conv_equal_pytorch_conv_values(config, which, block):
    # 224: d1 block 2 Conv2d(k=6, s=3, p=2) 75 -> 25, d2 block 6 (k=5, s=2, p=1) 8 -> 3;
    # cpu: d1 block 2 (k=6, s=3, p=2) 21 -> 7, d2 block 3 (k=4, s=2, p=1) 16 -> 8.
    d = nitk_gan.build_discriminator(which, config)
    pad, conv = d.get_layer(f"pad{block}"), d.get_layer(f"conv{block}")
    side = nitk_gan.get_config(config).image_size
    _, k, s, p, _, _ = nitk_gan.GEOMETRIES[side][which][block - 1]
    rng = np.random.default_rng(block)
    conv.kernel.assign(rng.standard_normal(conv.kernel.shape).astype(np.float32))
    x = rng.standard_normal((1, *pad.input.shape[1:])).astype(np.float32)
    y = conv(pad(x)).numpy()[0]
    expected = _numpy_conv(x[0].astype(np.float64), conv.kernel.numpy(), s, p)
    assert y.shape == expected.shape == (_torch_conv(x.shape[1], k, s, p),) * 2 + (
        conv.filters,)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_switch_rule_raises_on_a_nan_or_infinite_loss():
    from keras_ser.training.resumable import DivergenceError

    rule = bce_gan.GeneratorLossDropped(0.7)
    rule.set_model(_Model())
    rule.on_train_begin()
    rule.on_epoch_end(0, {"g_loss": 1.0, "d_loss": 1.2})
    with pytest.raises(DivergenceError, match="g_loss = nan at the end of epoch 2"):
        rule.on_epoch_end(1, {"g_loss": float("nan"), "d_loss": 1.2})
    with pytest.raises(DivergenceError, match="d_loss = inf at the end of epoch 3"):
        rule.on_epoch_end(2, {"g_loss": 0.5, "d_loss": float("inf")})
    assert rule.best == 1.0 and not rule.model.stop_training
