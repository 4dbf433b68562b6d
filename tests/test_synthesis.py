"""Synthetic patch records (tfrecords_tools.patch_records) read back by
keras_ser.data.synthetic_dataset (pooling, epochs), keras_ser.synthesis.embed and
keras_ser.plots.conditional_grid_png."""

import json
import os

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import data, plots, synthesis
from tfrecords_tools import patch_records

CLASSES = ["neutral", "happy", "sad"]
FRAMES, MELS = 6, 4


class Sampler:
    """Deterministic ``sample_fn`` that records its calls.

    Patch values are uniform in [-1, 1] from ``seed``; element [0, 0] encodes the label
    (label / 10) so that labels and patches can be matched after reading back.
    """

    def __init__(self, frames=FRAMES, mels=MELS, fail_at=None):
        self.frames, self.mels, self.fail_at = frames, mels, fail_at
        self.calls = []

    def __call__(self, labels, seed):
        assert labels.dtype == np.int64 and labels.ndim == 1
        assert isinstance(seed, int)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("generator crashed")
        rng = np.random.default_rng(seed)
        out = rng.uniform(-1.0, 1.0, (len(labels), self.frames, self.mels))
        out = out.astype(np.float32)
        out[:, 0, 0] = labels / 10.0
        self.calls.append((labels.copy(), seed, out.copy()))
        return out


def _write(out_dir, sampler=None, **kwargs):
    options = {"frames": FRAMES, "n_mels": MELS, "batch_size": 4, "shard_size": 7,
               "seed": 3, "source": "central", "progress": False}
    options.update(kwargs)
    per_class = options.pop("per_class", 5)
    classes = options.pop("classes", CLASSES)
    return patch_records.write_synthetic_records(out_dir, sampler or Sampler(), classes,
                                             per_class, **options)


def _read_all(folders, **kwargs):
    kwargs.setdefault("shuffle", False)
    ds = data.synthetic_dataset(folders, batch_size=kwargs.pop("batch_size", 4),
                                     **kwargs)
    batches = list(ds.as_numpy_iterator())
    return (np.concatenate([b["features"] for b in batches]),
            np.concatenate([b["label"] for b in batches]), batches)


# --- write / read round trip ------------------------------------------------------------


def test_round_trip_arrays_labels_counts_and_metadata(tmp_path):
    out = tmp_path / "synthetic"
    sampler = Sampler()
    document = _write(out, sampler, metadata={"checkpoint": "g.weights.h5", "epoch": 7})
    # 15 patches in batches of 4: 4 calls, the last with 3 labels.
    assert [len(c[0]) for c in sampler.calls] == [4, 4, 4, 3]
    assert len({c[1] for c in sampler.calls}) == 4  # a distinct seed per batch
    expected = np.concatenate([c[2] for c in sampler.calls])
    expected_labels = np.concatenate([c[0] for c in sampler.calls])

    features, labels, batches = _read_all(str(out))
    assert batches[0]["features"].dtype == np.float32
    assert batches[0]["label"].dtype == np.int32
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(features[:, 0, 0], labels / 10.0, rtol=0, atol=1e-7)
    assert np.bincount(labels).tolist() == [5, 5, 5]

    assert document == patch_records.read_synthetic_metadata(out)
    assert document["classes"] == CLASSES
    assert document["per_class"] == 5
    assert document["counts"] == {"neutral": 5, "happy": 5, "sad": 5}
    assert document["total"] == 15
    assert (document["frames"], document["n_mels"]) == (FRAMES, MELS)
    assert (document["source"], document["seed"]) == ("central", 3)
    assert document["metadata"] == {"checkpoint": "g.weights.h5", "epoch": 7}
    assert document["shards"] == [
        {"name": "synthetic-00000-of-00003.tfrecord", "records": 7},
        {"name": "synthetic-00001-of-00003.tfrecord", "records": 7},
        {"name": "synthetic-00002-of-00003.tfrecord", "records": 1}]
    assert sorted(os.listdir(out)) == sorted([s["name"] for s in document["shards"]]
                                             + ["synthetic.json"])


def test_record_fields_are_row_major_with_names_and_source(tmp_path):
    out = tmp_path / "synthetic"
    sampler = Sampler()
    _write(out, sampler, source="client-2")
    raw = next(iter(tf.data.TFRecordDataset(
        str(out / "synthetic-00000-of-00003.tfrecord")).skip(1))).numpy()
    feature = tf.train.Example.FromString(raw).features.feature
    patch = sampler.calls[0][2][1]
    np.testing.assert_array_equal(np.array(feature["features"].float_list.value, np.float32),
                                  patch.reshape(-1))  # frame by frame
    assert feature["frames"].int64_list.value == [FRAMES]
    assert feature["n_mels"].int64_list.value == [MELS]
    assert feature["label"].int64_list.value == [1]  # class-interleaved schedule
    assert feature["emotion"].bytes_list.value == [b"happy"]
    assert feature["source"].bytes_list.value == [b"client-2"]


def test_same_seed_same_records_and_other_seed_other_records(tmp_path):
    _write(tmp_path / "a", seed=1, progress=True)
    _write(tmp_path / "b", seed=1)
    _write(tmp_path / "c", seed=2)
    a, _, _ = _read_all(str(tmp_path / "a"))
    b, _, _ = _read_all(str(tmp_path / "b"))
    c, _, _ = _read_all(str(tmp_path / "c"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_trailing_channel_and_small_overshoot_accepted(tmp_path):
    def sample(labels, seed):
        out = np.full((len(labels), FRAMES, MELS, 1), 1.0 + 5e-4, np.float32)
        return tf.constant(out)  # a tensor is fine too

    def sample_bf16(labels, seed):
        return tf.fill((len(labels), FRAMES, MELS), tf.constant(-0.5, tf.bfloat16))

    _write(tmp_path / "s", sample)
    features, _, _ = _read_all(str(tmp_path / "s"))
    assert features.shape == (15, FRAMES, MELS)
    np.testing.assert_array_equal(features, np.float32(1.0 + 5e-4))
    _write(tmp_path / "bf16", sample_bf16)  # a mixed-precision generator's output
    np.testing.assert_array_equal(_read_all(str(tmp_path / "bf16"))[0], np.float32(-0.5))


# --- resume and atomicity ---------------------------------------------------------------


def test_resume_returns_stored_set_without_sampling(tmp_path):
    out = tmp_path / "synthetic"
    first = _write(out, Sampler(), metadata={"run": 1})
    before = {name: os.path.getmtime(out / name) for name in os.listdir(out)}
    counter = Sampler()
    second = _write(out, counter, metadata={"run": 2}, batch_size=2)
    assert counter.calls == []
    assert second == first and second["metadata"] == {"run": 1}
    assert {name: os.path.getmtime(out / name) for name in os.listdir(out)} == before
    # A different set in the same folder is refused rather than overwritten.
    with pytest.raises(FileExistsError, match="different"):
        _write(out, Sampler(), seed=4)
    with pytest.raises(FileExistsError, match="different"):
        _write(out, Sampler(), per_class=6)


def test_existing_empty_folder_is_used_and_foreign_folder_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _write(empty)["total"] == 15
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="foreign"):
        _write(foreign)


def test_failure_midway_leaves_no_out_dir_and_no_temp_folder(tmp_path):
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError, match="generator crashed"):
        # shard_size 3: the first shard is complete and the second begun at the failure
        _write(parent / "synthetic", Sampler(fail_at=2), shard_size=3)
    assert sorted(os.listdir(parent)) == ["keep.txt"]
    # After the failure the same call succeeds from scratch.
    assert _write(parent / "synthetic")["total"] == 15
    assert sorted(os.listdir(parent)) == ["keep.txt", "synthetic"]


@pytest.mark.parametrize("problem, make, match", [
    ("nan", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
     "non-finite"),
    ("inf", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, -np.inf, x),
     "non-finite"),
    ("above", lambda x: x * 1.2 + 0.1, r"\[-1, 1\]"),
    ("below", lambda x: np.minimum(x * 1.5, 0.5), r"\[-1, 1\]"),
    ("mels", lambda x: np.concatenate([x, x[..., :1]], axis=-1), "shape"),
    ("rows", lambda x: x[1:], "shape"),
    ("channels", lambda x: np.stack([x, x], axis=-1), "shape"),
    ("dtype", lambda x: x.astype(np.complex64), "dtype"),
])
def test_bad_batch_raises_naming_source(tmp_path, problem, make, match):
    good = Sampler()

    def sample(labels, seed):
        out = good(labels, seed)
        return make(out) if len(good.calls) == 2 else out  # the second batch is bad

    with pytest.raises(ValueError, match=match) as info:
        _write(tmp_path / "s", sample, source="client-7")
    assert "client-7" in str(info.value) and "batch 1" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        _write(tmp_path / "s", classes=["a", "a"])
    with pytest.raises(ValueError, match="per_class"):
        _write(tmp_path / "s", per_class=0)
    with pytest.raises(TypeError, match="sequence"):
        _write(tmp_path / "s", classes="abc")
    with pytest.raises(TypeError, match="JSON"):
        _write(tmp_path / "s", metadata={"x": object()})
    assert os.listdir(tmp_path) == []


# --- pooling ----------------------------------------------------------------------------


def test_pooling_folders_sums_counts_and_keeps_order(tmp_path):
    _write(tmp_path / "c0", per_class=5, source="client-0")
    _write(tmp_path / "c1", per_class=2, source="client-1", seed=9)
    first, first_labels, _ = _read_all(str(tmp_path / "c0"))
    second, second_labels, _ = _read_all(str(tmp_path / "c1"))
    ds = data.synthetic_dataset([tmp_path / "c0", str(tmp_path / "c1")], batch_size=4,
                                     shuffle=False)
    assert ds.cardinality().numpy() == 6  # ceil(21 / 4)
    pooled, labels, _ = _read_all([str(tmp_path / "c0"), str(tmp_path / "c1")])
    assert len(pooled) == 15 + 6
    assert np.bincount(labels).tolist() == [7, 7, 7]
    np.testing.assert_array_equal(pooled, np.concatenate([first, second]))
    np.testing.assert_array_equal(labels, np.concatenate([first_labels, second_labels]))


def test_shuffled_pool_is_a_reproducible_permutation(tmp_path):
    folders = [str(tmp_path / "c0"), str(tmp_path / "c1")]
    _write(folders[0], source="client-0")
    _write(folders[1], source="client-1", seed=9)
    plain, _, _ = _read_all(folders)
    one, labels, _ = _read_all(folders, shuffle=True, seed=5)
    two, _, _ = _read_all(folders, shuffle=True, seed=5)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, plain)
    def order(x):
        return np.lexsort(x.reshape(len(x), -1).T)

    np.testing.assert_array_equal(one[order(one)], plain[order(plain)])
    np.testing.assert_allclose(one[:, 0, 0], labels / 10.0, rtol=0, atol=1e-7)


def test_drop_remainder_and_repeat(tmp_path):
    _write(tmp_path / "s")
    ds = data.synthetic_dataset(str(tmp_path / "s"), batch_size=4, drop_remainder=True)
    assert ds.cardinality().numpy() == 3
    assert ds.element_spec["features"].shape.as_list() == [4, FRAMES, MELS]
    assert len(list(ds)) == 3
    endless = data.synthetic_dataset(str(tmp_path / "s"), batch_size=4, repeat=True)
    assert endless.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    assert len(list(endless.take(10))) == 10


def test_an_epoch_is_the_same_whether_the_dataset_starts_at_it_or_before(tmp_path):
    """With epochs, each epoch holds ``steps`` batches shuffled from (seed, epoch) only,
    also under TensorFlow's global seed 0 (which tf.data refuses as a seed tensor)."""
    folders = [str(tmp_path / "c0"), str(tmp_path / "c1")]
    _write(folders[0], source="client-0")
    _write(folders[1], per_class=2, source="client-1", seed=9)
    keras.utils.set_random_seed(0)

    def epochs(first, stop):
        ds = data.synthetic_dataset(folders, batch_size=4, seed=5, epochs=(first, stop),
                                    steps=3)
        assert int(ds.cardinality()) == 3 * (stop - first)
        batches = [b["features"] for b in ds.as_numpy_iterator()]
        assert [len(b) for b in batches] == [4] * 3 * (stop - first)
        return [np.concatenate(batches[i:i + 3]) for i in range(0, len(batches), 3)]

    full = epochs(0, 3)
    np.testing.assert_array_equal(epochs(2, 3)[0], full[2])
    np.testing.assert_array_equal(epochs(1, 3)[0], full[1])
    assert not np.array_equal(full[0], full[1]) and not np.array_equal(full[1], full[2])
    # 12 of the 21 records per epoch, none twice (the pool is repeated only when used up).
    for epoch in full:
        assert len({row.tobytes() for row in epoch}) == 12
    with pytest.raises(ValueError, match="epochs needs steps"):
        data.synthetic_dataset(folders, batch_size=4, epochs=(0, 1))


def test_pooling_mismatched_folders_raises_naming_the_folder(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "frames", Sampler(frames=FRAMES + 2), frames=FRAMES + 2)
    _write(tmp_path / "classes", classes=["neutral", "sad", "happy"])
    with pytest.raises(ValueError, match="frames.*differs") as info:
        data.synthetic_dataset([str(tmp_path / "a"), str(tmp_path / "frames")],
                                    batch_size=4)
    assert str(tmp_path / "frames") in str(info.value)
    with pytest.raises(ValueError, match="classes") as info:
        data.synthetic_dataset([str(tmp_path / "a"), str(tmp_path / "classes")],
                                    batch_size=4)
    assert str(tmp_path / "classes") in str(info.value)


def test_missing_metadata_or_shard_raises_file_not_found(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing"):
        data.synthetic_dataset(str(tmp_path / "nothing"), batch_size=4)
    with pytest.raises(FileNotFoundError, match="nothing"):
        patch_records.read_synthetic_metadata(tmp_path / "nothing")
    _write(tmp_path / "s")
    os.remove(tmp_path / "s" / "synthetic-00001-of-00003.tfrecord")
    with pytest.raises(FileNotFoundError, match="00001"):
        data.synthetic_dataset(str(tmp_path / "s"), batch_size=4)
    with pytest.raises(FileExistsError, match="missing"):
        _write(tmp_path / "s")  # resume refuses an incomplete folder


def test_metadata_file_is_plain_json(tmp_path):
    _write(tmp_path / "s", metadata={"gen": {"epoch": np.int64(3), "lr": np.float32(0.5)}})
    with open(tmp_path / "s" / "synthetic.json", encoding="utf-8") as handle:
        stored = json.load(handle)
    assert stored["metadata"] == {"gen": {"epoch": 3.0, "lr": 0.5}}


# --- embed ------------------------------------------------------------------------------


def test_embed_matches_numpy_and_adapts_channel():
    inputs = keras.Input((FRAMES, MELS), name="features")
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(5, use_bias=True)
    model = keras.Model(inputs, dense(x))
    rng = np.random.default_rng(0)
    patches = rng.uniform(-1, 1, (23, FRAMES, MELS)).astype(np.float32)
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    expected = patches.reshape(23, -1) @ kernel + bias
    out = synthesis.embed(model, patches, batch_size=4)
    assert out.shape == (23, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(synthesis.embed(model, patches[..., None], batch_size=7),
                               expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        synthesis.embed(model, patches[:0])


# --- conditional_grid_png ---------------------------------------------------------------


def test_conditional_grid_png_grows_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    two = plots.conditional_grid_png(rng.uniform(-1, 1, (3, 2, 16, 8)), ["a", "b"],
                                     tmp_path / "two.png", title="epoch 3")
    four = plots.conditional_grid_png(rng.uniform(-1, 1, (3, 4, 16, 8, 1)),
                                      ["neutral", "happy", "sad", "angry"],
                                      str(tmp_path / "deep" / "four.png"))
    assert four == str(tmp_path / "deep" / "four.png")
    small, large = matplotlib.image.imread(two), matplotlib.image.imread(four)
    assert small.shape[1] < large.shape[1]
    more_rows = matplotlib.image.imread(plots.conditional_grid_png(
        np.zeros((6, 4, 16, 8)), list("abcd"), tmp_path / "rows.png"))
    assert more_rows.shape[0] > large.shape[0]
    assert sorted(os.listdir(tmp_path)) == ["deep", "rows.png", "two.png"]


def test_conditional_grid_rows_are_noise_and_columns_classes(tmp_path, monkeypatch):
    seen = {}
    real_grid = plots.spectrogram_grid

    def spy(images, cols=None, gap=2):
        seen.update(images=np.asarray(images), cols=cols)
        return real_grid(images, cols=cols, gap=gap)

    monkeypatch.setattr(plots, "spectrogram_grid", spy)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 8))
    plots.conditional_grid_png(images, ["a", "b", "c"], tmp_path / "g.png")
    assert seen["cols"] == 3
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(seen["images"][i * 3 + j], images[i, j])


def test_conditional_grid_png_rejects_mismatch_and_rank(tmp_path):
    with pytest.raises(ValueError, match="2 class names for 3"):
        plots.conditional_grid_png(np.zeros((2, 3, 16, 8)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="rank 3"):
        plots.conditional_grid_png(np.zeros((3, 16, 8)), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="channels"):
        plots.conditional_grid_png(np.zeros((2, 3, 16, 8, 2)), list("abc"),
                                   tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plots.conditional_grid_png(np.zeros((0, 3, 16, 8)), list("abc"), tmp_path / "x.png")
    with pytest.raises(TypeError, match="sequence"):
        plots.conditional_grid_png(np.zeros((2, 3, 16, 8)), "abc", tmp_path / "x.png")
    assert os.listdir(tmp_path) == []
