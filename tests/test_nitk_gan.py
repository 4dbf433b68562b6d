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


@pytest.mark.parametrize("preset", ["paper", "cpu"])
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
    d = nitk_gan.build_discriminator("d1", "cpu")
    x = np.random.default_rng(1).standard_normal((1, 224, 224, 1)).astype(np.float32)
    y = tf.keras.Model(d.input, d.get_layer("conv1").output)(x).numpy()
    kernel = d.get_layer("conv1").kernel.numpy()
    padded = np.pad(x[0, ..., 0], 2)
    i, j, c = 10, 74, 3
    patch = padded[3 * i:3 * i + 6, 3 * j:3 * j + 6]
    assert y[0, i, j, c] == pytest.approx(float((patch * kernel[..., 0, c]).sum()), abs=1e-5)


def test_configs_refuse_other_image_sizes_and_bad_widths():
    with pytest.raises(ValueError, match="224 x 224"):
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
