"""ImageNet transfer classifiers (`keras_ser.models.transfer`) and their feature cache."""

import os

import keras
import numpy as np
import pytest

from keras_ser.models import transfer
from keras_ser.protocols import transfer as protocol

CPU = transfer.get_config("cpu")


def _net(name, classes=4, config=CPU, **kwargs):
    keras.utils.set_random_seed(5)
    return transfer.build_transfer(name, classes, config, **kwargs)


def _images(n=6, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 224, 224, 1)).astype(np.float32)


@pytest.mark.parametrize("name,trainable,frozen_shape", [
    ("resnet50_fc", 6, (2048,)), ("vgg16_fc", 6, (2048,)), ("vgg16_half", 16, (8, 8, 512))])
def test_freezing_per_mode(name, trainable, frozen_shape):
    net = _net(name)
    assert net.frozen.trainable_variables == []
    assert net.frozen.output_shape[1:] == frozen_shape
    # Only the head (and the half-frozen network's conv4_2 .. conv5_3) is trained.
    assert len(net.head.trainable_variables) == trainable
    assert len(net.logits.trainable_variables) == trainable
    assert {id(v) for v in net.logits.trainable_variables} == {
        id(v) for v in net.head.trainable_variables}


def test_half_frozen_vgg16_cuts_after_conv4_1_and_drops_channels_as_the_listing():
    net = _net("vgg16_half")
    frozen = [layer.name for layer in net.frozen.layers if "conv" in layer.name]
    assert frozen == ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
                      "block3_conv1", "block3_conv2", "block3_conv3", "block4_conv1"]
    names = [layer.name for layer in net.head.layers]
    for after in ("block4_conv2", "block4_pool", "block5_conv1"):
        assert names[names.index(after) + 1] == f"{after}_dropout"
        assert net.head.get_layer(f"{after}_dropout").rate == 0.4
    assert names.index("block5_conv3") < names.index("block5_pool") < names.index("fc1")


def test_paper_heads_are_the_listing_25088_4096_4096_n():
    vgg = _net("vgg16_fc", classes=14, config="paper")
    assert vgg.frozen.output_shape == (None, 25088)
    assert vgg.head.count_params() == (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 14 + 14)
    assert [vgg.head.get_layer(f"fc{i}_dropout").rate for i in (1, 2)] == [0.5, 0.5]
    half = _net("vgg16_half", classes=14, config="paper")
    assert half.frozen.output_shape == (None, 28, 28, 512)
    convs = 5 * (512 * 512 * 9 + 512)  # conv4_2, conv4_3, conv5_1..3
    assert half.head.count_params() == convs + vgg.head.count_params()
    res = _net("resnet50_fc", classes=14, config="paper")
    assert res.frozen.output_shape == (None, 2048)
    assert res.head.count_params() == (2048 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 14 + 14)
    assert res.frozen.count_params() == 23587712  # keras.applications.ResNet50, no top


@pytest.mark.parametrize("name", ["resnet50_fc", "vgg16_fc", "vgg16_half"])
def test_a_training_step_leaves_the_frozen_variables_unchanged(name):
    net = _net(name)
    model = net.compile(net.logits)
    frozen_before = [v.numpy().copy() for v in net.frozen.variables]
    head_before = [v.numpy().copy() for v in net.head.trainable_variables]
    x = np.repeat(_images(8), 3, axis=-1)
    y = np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    model.train_on_batch(x, y)
    for before, var in zip(frozen_before, net.frozen.variables):
        np.testing.assert_array_equal(before, var.numpy())  # incl. ResNet's BN statistics
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(head_before, net.head.trainable_variables)]
    assert all(changed)


def test_preprocessing_is_each_applications_own():
    x = _images(2)
    rgb = np.concatenate([x, x * 0.5, 255 - x], axis=-1)
    for network, module in (("vgg16", keras.applications.vgg16),
                            ("resnet50", keras.applications.resnet50)):
        layer = transfer.ImageNetPreprocess(network)
        np.testing.assert_allclose(np.asarray(layer(rgb)), module.preprocess_input(rgb.copy()),
                                   atol=1e-4)
        assert transfer.ImageNetPreprocess.from_config(layer.get_config()).network == network
    with pytest.raises(ValueError, match="unknown network"):
        transfer.ImageNetPreprocess("vgg19")


def test_cache_returns_the_uncached_frozen_outputs_and_reuses_them(tmp_path):
    net = _net("vgg16_fc")
    images = _images(5)
    cache = protocol.FeatureCache(str(tmp_path))
    first = cache.features(net, images, batch_size=2)
    direct = np.asarray(net.frozen(np.repeat(images, 3, axis=-1), training=False))
    np.testing.assert_allclose(first, direct, rtol=1e-5, atol=1e-6)
    assert (cache.hits, cache.misses) == (0, 5)
    again = protocol.FeatureCache(str(tmp_path))  # a new process reads the files back
    np.testing.assert_array_equal(again.features(net, images[::-1]), first[::-1])
    assert (again.hits, again.misses) == (5, 0)
    # New weights of the frozen part are a new cache entry, never a stale hit.
    other = _net("vgg16_fc")
    other.frozen.get_layer("vgg16").get_layer("block1_conv1").kernel.assign(
        np.zeros((3, 3, 3, 64), np.float32))
    assert other.frozen_digest() != net.frozen_digest()
    again.features(other, images[:2])
    assert again.misses == 2 and len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("name", ["resnet50_fc", "vgg16_half"])
def test_cached_training_equals_training_the_whole_network(tmp_path, name):
    """One epoch on cached features == one epoch of the full model on images."""
    images = _images(8, seed=3)
    labels = np.arange(8) % 4
    heads = []
    for cached in (True, False):
        net = _net(name, config=CPU.replace(standardise=True, batch_size=4))
        if cached:
            inputs = protocol.FeatureCache(None).features(net, images)
            net.standardise(inputs)
            model = net.compile(net.head)
        else:
            net.standardise(protocol.FeatureCache(None).features(net, images))
            model, inputs = net.compile(net.logits), images
        data, steps = protocol._batches(inputs, labels, 4, 4, seed=1, epochs=(0, 1),
                                        rgb=not cached)
        keras.utils.set_random_seed(9)  # the same dropout masks
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
        heads.append([w.numpy() for w in net.head.weights])
    for a, b in zip(*heads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cache_refuses_three_unequal_channels():
    net = _net("vgg16_fc")
    grey = _images(2)
    cache = protocol.FeatureCache(None)
    np.testing.assert_array_equal(cache.features(net, np.repeat(grey, 3, axis=-1)),
                                  cache.features(net, grey))
    rgb = np.concatenate([grey, grey, grey + 1], axis=-1)
    with pytest.raises(ValueError, match="image 0 has unequal channels"):
        cache.features(net, rgb)
    with pytest.raises(ValueError, match=r"\(n, H, W, 1\)"):
        cache.features(net, grey[..., 0])


def test_cache_memory_maps_big_outputs_with_the_in_memory_values(tmp_path):
    net = _net("vgg16_fc")
    images = _images(5, seed=4)
    plain = protocol.FeatureCache(str(tmp_path / "a")).features(net, images, batch_size=2)
    assert type(plain) is np.ndarray and plain.dtype == np.float32
    # 5 x 2048 float32 = 40960 bytes > 1000: a memory-mapped file, misses then hits.
    mapped_cache = protocol.FeatureCache(str(tmp_path / "b"), memmap_bytes=1000)
    for _ in range(2):
        mapped = mapped_cache.features(net, images, batch_size=2)
        assert isinstance(mapped, np.memmap) and mapped.shape == (5, 2048)
        np.testing.assert_array_equal(np.asarray(mapped), plain)
    assert (mapped_cache.hits, mapped_cache.misses) == (5, 5)
    # The temporary file is unlinked at once; only the entries' folder is left.
    assert os.listdir(tmp_path / "b") == [f"vgg16_fc-{net.frozen_digest()[:16]}"]
    assert protocol.MEMMAP_BYTES == 2 ** 30


def test_standardise_floors_the_variance_of_dead_units():
    net = _net("vgg16_fc", config=CPU.replace(standardise=True))
    feats = np.random.default_rng(1).standard_normal((50, 2048)).astype(np.float32) * 3 + 1
    feats[:, 7] = 0.0
    net.standardise(feats)
    layer = net.head.get_layer("standardise")
    out = np.asarray(layer(feats[:3]))
    np.testing.assert_allclose(out[:, 0], (feats[:3, 0] - feats[:, 0].mean()) / feats[:, 0].std(),
                               rtol=1e-3)
    probe = np.zeros((1, 2048), np.float32)
    probe[0, 7] = 1.0
    assert abs(float(np.asarray(layer(probe))[0, 7])) < 10  # not 1 / sqrt(1e-7)


def test_weights_imagenet_never_downloads_and_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        transfer.build_transfer("vgg16_fc", 4, CPU, weights="imagenet")
    message = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message and "does not download" in message
    with pytest.raises(FileNotFoundError, match="no such file"):
        transfer.build_transfer("resnet50_fc", 4, CPU, weights=str(tmp_path / "none.h5"))
    # A file placed in the Keras cache is what "imagenet" loads.
    keras.utils.set_random_seed(11)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    os.makedirs(tmp_path / "models")
    path = str(tmp_path / "models" / transfer.WEIGHT_FILES["vgg16"][0])
    # The legacy HDF5 layout of the files Keras' applications download.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    net = transfer.build_transfer("vgg16_fc", 4, CPU, weights="imagenet")
    loaded = net.frozen.get_layer("vgg16").get_layer("block5_conv3").kernel.numpy()
    np.testing.assert_array_equal(loaded, base.get_layer("block5_conv3").kernel.numpy())
    with pytest.raises(ValueError, match="not resnet50 weights"):
        transfer.build_transfer("resnet50_fc", 4, CPU, weights=path)


def test_classifier_saves_and_reloads_with_the_same_probabilities(tmp_path):
    net = _net("vgg16_half", config=CPU.replace(standardise=True))
    net.standardise(protocol.FeatureCache(None).features(net, _images(4)))
    x = np.repeat(_images(3, seed=7), 3, axis=-1)
    probs = np.asarray(net.classifier(x))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    path = str(tmp_path / "model.keras")
    net.classifier.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x)), probs, rtol=1e-5, atol=1e-6)


def test_configs_and_names_are_checked():
    with pytest.raises(KeyError, match="known: resnet50_fc, vgg16_fc, vgg16_half"):
        transfer.build_transfer("vgg19_fc", 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        transfer.build_transfer("vgg16_fc", 1, CPU)
    with pytest.raises(ValueError, match="loss"):
        transfer.TransferConfig(loss="mse")
    with pytest.raises(ValueError, match="32 x 32"):
        transfer.TransferConfig(input_size=16)
