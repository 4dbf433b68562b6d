"""Tests of keras_ser.synthesis (synthetic TFRecords, pooling, Fréchet distance, embed)
and of keras_ser.plots.conditional_grid_png."""

import json
import os

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from scipy import linalg

from keras_ser import plots, synthesis

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
    return synthesis.write_synthetic_records(out_dir, sampler or Sampler(), classes,
                                             per_class, **options)


def _read_all(folders, **kwargs):
    kwargs.setdefault("shuffle", False)
    ds = synthesis.synthetic_dataset(folders, batch_size=kwargs.pop("batch_size", 4),
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

    assert document == synthesis.read_synthetic_metadata(out)
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
    ds = synthesis.synthetic_dataset([tmp_path / "c0", str(tmp_path / "c1")], batch_size=4,
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
    ds = synthesis.synthetic_dataset(str(tmp_path / "s"), batch_size=4, drop_remainder=True)
    assert ds.cardinality().numpy() == 3
    assert ds.element_spec["features"].shape.as_list() == [4, FRAMES, MELS]
    assert len(list(ds)) == 3
    endless = synthesis.synthetic_dataset(str(tmp_path / "s"), batch_size=4, repeat=True)
    assert endless.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    assert len(list(endless.take(10))) == 10


def test_pooling_mismatched_folders_raises_naming_the_folder(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "frames", Sampler(frames=FRAMES + 2), frames=FRAMES + 2)
    _write(tmp_path / "classes", classes=["neutral", "sad", "happy"])
    with pytest.raises(ValueError, match="frames.*differs") as info:
        synthesis.synthetic_dataset([str(tmp_path / "a"), str(tmp_path / "frames")],
                                    batch_size=4)
    assert str(tmp_path / "frames") in str(info.value)
    with pytest.raises(ValueError, match="classes") as info:
        synthesis.synthetic_dataset([str(tmp_path / "a"), str(tmp_path / "classes")],
                                    batch_size=4)
    assert str(tmp_path / "classes") in str(info.value)


def test_missing_metadata_or_shard_raises_file_not_found(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing"):
        synthesis.synthetic_dataset(str(tmp_path / "nothing"), batch_size=4)
    with pytest.raises(FileNotFoundError, match="nothing"):
        synthesis.read_synthetic_metadata(tmp_path / "nothing")
    _write(tmp_path / "s")
    os.remove(tmp_path / "s" / "synthetic-00001-of-00003.tfrecord")
    with pytest.raises(FileNotFoundError, match="00001"):
        synthesis.synthetic_dataset(str(tmp_path / "s"), batch_size=4)
    with pytest.raises(FileExistsError, match="missing"):
        _write(tmp_path / "s")  # resume refuses an incomplete folder


def test_metadata_file_is_plain_json(tmp_path):
    _write(tmp_path / "s", metadata={"gen": {"epoch": np.int64(3), "lr": np.float32(0.5)}})
    with open(tmp_path / "s" / "synthetic.json", encoding="utf-8") as handle:
        stored = json.load(handle)
    assert stored["metadata"] == {"gen": {"epoch": 3.0, "lr": 0.5}}


# --- Fréchet distance -------------------------------------------------------------------


def _exact_samples(mean, cov, n, seed):
    """``n`` rows whose sample mean and np.cov are exactly ``mean`` and ``cov``."""
    mean, cov = np.asarray(mean, float), np.atleast_2d(np.asarray(cov, float))
    d = len(mean)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal columns, each orthogonal to the ones vector
    return mean + np.sqrt(n - 1) * q @ np.linalg.cholesky(cov).T


def _psd_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _closed_form(mean_a, cov_a, mean_b, cov_b):
    """||dmu||^2 + Tr(A + B - 2 (A^1/2 B A^1/2)^1/2), by symmetric eigendecompositions."""
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    diff = np.asarray(mean_a) - np.asarray(mean_b)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def test_exact_samples_helper():
    cov = [[2.0, 0.5], [0.5, 1.0]]
    x = _exact_samples([1.0, -2.0], cov, 50, 0)
    np.testing.assert_allclose(x.mean(axis=0), [1.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=1e-12)


def test_frechet_diagonal_gaussians_by_hand():
    # ||(3, 4)||^2 + (1 - 2)^2 + (2 - 1)^2 with standard deviations (1, 2) and (2, 1).
    a = _exact_samples([0.0, 0.0], np.diag([1.0, 4.0]), 40, 1)
    b = _exact_samples([3.0, 4.0], np.diag([4.0, 1.0]), 60, 2)
    assert synthesis.frechet_distance(a, b) == pytest.approx(27.0, rel=1e-9)
    # One dimension: (m_a - m_b)^2 + (s_a - s_b)^2.
    a1 = _exact_samples([1.5], [[0.25]], 30, 3)
    b1 = _exact_samples([-0.5], [[9.0]], 30, 4)
    assert synthesis.frechet_distance(a1, b1) == pytest.approx(4.0 + 2.5 ** 2, rel=1e-9)


def test_frechet_full_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    m_a, m_b = rng.normal(size=d), rng.normal(size=d)
    l_a, l_b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov_a, cov_b = l_a @ l_a.T + 0.1 * np.eye(d), l_b @ l_b.T + 0.1 * np.eye(d)
    a = _exact_samples(m_a, cov_a, 200, 5)
    b = _exact_samples(m_b, cov_b, 150, 6)
    expected = _closed_form(m_a, cov_a, m_b, cov_b)
    assert synthesis.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # Random (not exactly constructed) samples: the formula on numpy's moments.
    x, y = rng.normal(size=(300, d)) @ l_a, rng.normal(size=(250, d)) + 1.0
    expected = _closed_form(x.mean(0), np.cov(x, rowvar=False),
                            y.mean(0), np.cov(y, rowvar=False))
    assert synthesis.frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_frechet_identity_symmetry_and_mean_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    y = rng.normal(size=(400, 8)) * 1.5
    assert synthesis.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert synthesis.frechet_distance(x, y) == pytest.approx(
        synthesis.frechet_distance(y, x), rel=1e-9)
    shifts = [synthesis.frechet_distance(x, x + s) for s in (0.5, 1.0, 2.0)]
    # A pure shift by s in every one of the 8 dimensions adds exactly 8 s^2.
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)
    assert shifts[0] < shifts[1] < shifts[2]


def test_frechet_singular_covariances_still_finite():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))  # rank <= 4 < d
    value = synthesis.frechet_distance(x, y)
    assert np.isfinite(value) and value > 0


def test_frechet_rejects_bad_inputs(monkeypatch):
    good = np.random.default_rng(3).normal(size=(6, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        synthesis.frechet_distance(good[:1], good)
    with pytest.raises(ValueError, match="widths differ"):
        synthesis.frechet_distance(good, good[:, :2])
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        synthesis.frechet_distance(good, bad)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        synthesis.frechet_distance(good[:, 0], good[:, 0])
    # A non-negligible imaginary part of the square root is an error, a tiny one is not.
    real_sqrtm = linalg.sqrtm
    monkeypatch.setattr(synthesis.linalg, "sqrtm",
                        lambda m: real_sqrtm(m) + 1e-9j * np.eye(len(m)))
    assert synthesis.frechet_distance(good, good) == pytest.approx(0.0, abs=1e-9)
    monkeypatch.setattr(synthesis.linalg, "sqrtm",
                        lambda m: real_sqrtm(m) + 0.5j * np.eye(len(m)))
    with pytest.raises(ValueError, match="imaginary"):
        synthesis.frechet_distance(good, good)


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
