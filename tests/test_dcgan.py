"""The DCGAN stack of Chang & Scherer (2017): shapes, parameter counts, heads, batch norm."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser.models import dcgan


def _shapes(model):
    return {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)}


def test_paper_discriminator_halves_the_patch_at_each_conv_layer_and_counts_parameters():
    config = dcgan.get_dcgan_preset("paper")
    d = dcgan.build_discriminator(config, {"valence": 5, "activation": 5})
    shapes = _shapes(d)
    assert shapes["to_image"] == (64, 128, 1)
    assert shapes["conv1"] == (32, 64, 64)
    assert shapes["conv2"] == (16, 32, 128)
    assert shapes["conv3"] == (8, 16, 256)
    assert shapes["conv4"] == (4, 8, 512)
    assert shapes["flatten"] == (16384,)
    assert shapes["real"] == (1,)
    assert shapes["fc"] == (512,)
    assert shapes["head_valence"] == shapes["head_activation"] == (5,)
    counts = {layer.name: layer.count_params() for layer in d.layers}
    # 8x8 filters (W / 8 of the 64-frame crop); bias only on conv1 (the others feed BN).
    assert config.kernel_size == 8
    assert counts["conv1"] == 8 * 8 * 1 * 64 + 64
    assert counts["conv2"] == 8 * 8 * 64 * 128
    assert counts["conv3"] == 8 * 8 * 128 * 256
    assert counts["conv4"] == 8 * 8 * 256 * 512
    assert counts["conv2_bn"] == 4 * 128
    assert counts["real"] == 16384 + 1
    assert counts["fc"] == 16384 * 512 + 512
    assert counts["head_valence"] == 513 * 5
    assert d.count_params() == sum(counts.values()) == 19_428_427
    assert not any(isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D))
                   for layer in d.layers)


def test_paper_generator_mirrors_the_discriminator():
    config = dcgan.get_dcgan_preset("paper")
    g = dcgan.build_generator(config)
    shapes = _shapes(g)
    assert shapes["project_reshape"] == (4, 8, 512)
    assert shapes["deconv1"] == (8, 16, 256)
    assert shapes["deconv2"] == (16, 32, 128)
    assert shapes["deconv3"] == (32, 64, 64)
    assert shapes["deconv4"] == (64, 128, 1)
    assert shapes["patch"] == (64, 128)
    counts = {layer.name: layer.count_params() for layer in g.layers}
    assert counts["project"] == 100 * 4 * 8 * 512
    assert counts["deconv1"] == 8 * 8 * 512 * 256  # no bias: batch norm follows
    assert counts["deconv4"] == 8 * 8 * 64 + 1
    assert g.count_params() == 12_656_385
    out = g(tf.random.normal([3, 100]), training=False).numpy()
    assert out.shape == (3, 64, 128)
    assert np.abs(out).max() <= 1.0


def test_cpu_preset_keeps_the_topology_at_reduced_width():
    paper, cpu = dcgan.get_dcgan_preset("paper"), dcgan.get_dcgan_preset("cpu")
    d_paper = dcgan.build_discriminator(paper, {"emotion": 7})
    d_cpu = dcgan.build_discriminator(cpu, {"emotion": 7})
    names = [layer.name for layer in d_paper.layers]
    assert names == [layer.name for layer in d_cpu.layers]
    assert _shapes(d_cpu)["conv4"] == (2, 8, 64)
    assert d_cpu.count_params() < d_paper.count_params() / 50


def test_tied_kernel_size_is_an_eighth_of_the_crop_width():
    sizes = [dcgan.tied_kernel_size(w) for w in (16, 32, 48, 64, 128)]
    assert sizes == [2, 4, 6, 8, 16]
    assert dcgan.tied_kernel_size(8) == 2  # never below 2
    assert dcgan.get_dcgan_preset("cpu").kernel_size == 4


def test_config_rejects_crops_the_generator_cannot_mirror():
    with pytest.raises(ValueError, match="multiples of 16"):
        dcgan.DCGANConfig(crop_frames=40)
    with pytest.raises(KeyError, match="known: paper, cpu"):
        dcgan.get_dcgan_preset("gpu")


def test_the_four_models_differ_only_in_heads_and_the_adversarial_output():
    heads = {m: dcgan.model_heads(m, "valence", 5) for m in dcgan.MODELS}
    assert heads["basic_cnn"] == heads["basic_dcgan"] == {"valence": 5}
    assert heads["multitask_cnn"] == heads["multitask_dcgan"] == {"valence": 5, "activation": 5}
    assert dcgan.model_heads("multitask_cnn", "emotion", 7) == {
        "emotion": 7, "valence": 5, "activation": 5}
    assert [dcgan.is_adversarial(m) for m in dcgan.MODELS] == [False, False, True, True]
    with pytest.raises(ValueError, match="unknown model"):
        dcgan.model_heads("resnet", "valence", 5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dcgan.build_discriminator("cpu", {"valence": 1})


def test_frozen_batch_norm_normalises_with_batch_statistics_but_keeps_moving_averages():
    layer = dcgan.GANBatchNormalization(momentum=0.5)
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (64, 4)), tf.float32)
    layer(x, training=False)
    before = layer.moving_mean.numpy().copy()
    layer.freeze_moving_statistics = True
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(layer.moving_mean.numpy(), before)
    expected = (x.numpy() - x.numpy().mean(0)) / np.sqrt(x.numpy().var(0) + layer.epsilon)
    np.testing.assert_allclose(y, expected, atol=1e-4)
    layer.freeze_moving_statistics = False
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.5 * before + 0.5 * x.numpy().mean(0),
                               rtol=1e-5)


def test_classifier_shares_weights_and_round_trips_through_keras_file(tmp_path):
    d = dcgan.build_discriminator("cpu", {"emotion": 7, "valence": 5}, adversarial=True)
    clf = dcgan.classifier(d, "emotion")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 128)).astype(np.float32)
    np.testing.assert_allclose(clf(x).numpy(), d(x)["emotion"].numpy(), atol=1e-6)
    path = os.path.join(tmp_path, "clf.keras")
    clf.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again(x).numpy(), clf(x).numpy(), atol=1e-6)
    assert any(isinstance(layer, dcgan.GANBatchNormalization) for layer in again.layers)
    with pytest.raises(KeyError, match="no head 'activation'"):
        dcgan.classifier(d, "activation")
    joined = dcgan.all_heads_classifier(d, ["emotion", "valence"])
    assert tuple(joined(x).shape) == (2, 12)
