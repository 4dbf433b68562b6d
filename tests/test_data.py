"""tf.data pipelines over real EmoDB records: splits, patches, masks, oversampling, stats;
epoch-seeded datasets (records and patch banks) and the seeds they derive from."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import augment, data, seeds
from keras_ser import features as F
from keras_ser.patches import PatchBank

CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]


def _labels(ds):
    return np.concatenate([b["label"].numpy() for b in ds])


@pytest.mark.real_data
def test_patch_dataset_holds_the_split_speakers_in_128_frame_patches(emodb_records):
    out, _ = emodb_records
    ds = data.make_dataset(out, classes=CLASSES, speakers=["03", "08"], crop_frames=128,
                           batch_size=16, keep=("speaker", "utterance_id"))
    batches = list(ds)
    assert all(b["features"].shape[1:] == (128, 128) for b in batches)
    speakers = {s for b in batches for s in b["speaker"].numpy()}
    assert speakers == {b"03", b"08"}
    counts = data.label_counts(out, CLASSES, ["03", "08"])
    assert np.bincount(_labels(batches), minlength=7).tolist() == [counts[c] for c in CLASSES]
    assert sum(counts.values()) == 49 + 58


@pytest.mark.real_data
def test_padded_batches_mask_exactly_the_valid_frames(emodb_records):
    out, _ = emodb_records
    cfg = F.get_preset("etienne")
    ds = data.make_dataset(out, classes=CLASSES, speakers=["09"], features=cfg, batch_size=8,
                           keep=("utterance_id",))
    batch = next(iter(ds))
    examples = {e["utterance_id"].numpy(): e for e in data.read_records(out)
                if e["speaker"].numpy() == b"09"}
    for i, uid in enumerate(batch["utterance_id"].numpy()):
        wav = examples[uid]["waveform"]
        frames = cfg.num_frames(int(wav.shape[0]))
        assert int(batch["length"][i]) == frames
        assert batch["mask"][i].numpy().sum() == frames
        alone = F.log_mel_spectrogram(wav[tf.newaxis], cfg).numpy()[0]
        assert np.abs(batch["features"][i, :frames].numpy() - alone).max() < 1e-3


@pytest.mark.real_data
def test_oversampling_doubles_happiness_and_anger_in_the_training_split(emodb_records):
    out, _ = emodb_records
    speakers = ["10", "11", "12"]
    plain = np.bincount(_labels(data.make_dataset(out, classes=CLASSES, speakers=speakers,
                                                  crop_frames=32)), minlength=7)
    doubled = np.bincount(_labels(data.make_dataset(
        out, classes=CLASSES, speakers=speakers, crop_frames=32,
        oversample={"happiness": 2, "anger": 2})), minlength=7)
    factors = np.array([2, 1, 1, 1, 2, 1, 1])
    assert doubled.tolist() == (plain * factors).tolist()
    balanced = np.bincount(_labels(data.make_dataset(
        out, classes=CLASSES, speakers=speakers, crop_frames=32, oversample="balance")),
        minlength=7)
    # "balance" repeats each class round(largest / its count) times.
    factors = np.maximum(1, np.round(plain.max() / plain)).astype(int)
    assert balanced.tolist() == (plain * factors).tolist()


@pytest.mark.real_data
def test_same_seed_gives_the_same_crops_and_each_epoch_new_ones(emodb_records):
    out, _ = emodb_records

    def make(seed):
        return data.make_dataset(out, classes=CLASSES, speakers=["13"], crop_frames=64,
                                 vtlp="example", shuffle=True, seed=seed, batch_size=64)

    ds = make(1)
    first = next(iter(ds))["features"].numpy()
    again = next(iter(make(1)))["features"].numpy()
    second_epoch = next(iter(ds))["features"].numpy()
    assert np.array_equal(first, again)
    assert not np.allclose(first, second_epoch)


@pytest.mark.real_data
def test_epoch_vtlp_warps_every_example_of_an_epoch_by_that_epochs_alpha(emodb_records):
    out, _ = emodb_records
    common = dict(classes=CLASSES, speakers=["14"], crop_frames=64, crop="centre",
                  batch_size=128)
    epochs = list(data.make_dataset(out, vtlp="epoch", seed=2, epochs=(0, 3), **common))
    assert len(epochs) == 3  # all of speaker 14 in one batch per epoch
    for epoch, batch in enumerate(epochs):
        alpha = float(augment.epoch_alpha(2, epoch))
        fixed = next(iter(data.make_dataset(out, vtlp=alpha, **common)))["features"]
        np.testing.assert_allclose(batch["features"].numpy(), fixed.numpy(), atol=1e-4)
    plain = next(iter(data.make_dataset(out, **common)))["features"].numpy()
    assert np.abs(epochs[0]["features"].numpy() - plain).max() > 1.0
    assert np.abs(epochs[0]["features"].numpy() - epochs[1]["features"].numpy()).max() > 1.0


def _by_epoch(ds, per_epoch, *keys):
    """The batches of a multi-epoch dataset, one list per epoch, as NumPy dicts."""
    batches = [{k: b[k].numpy() for k in keys} for b in ds]
    return [batches[i:i + per_epoch] for i in range(0, len(batches), per_epoch)]


def _same(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.real_data
def test_an_epoch_is_the_same_whether_the_dataset_starts_at_it_or_before(emodb_records):
    """Crops, order and VTLP factors of epoch k come from (seed, k) only, also under
    TensorFlow's global seed 0 (which tf.data refuses as a seed tensor)."""
    out, _ = emodb_records
    keras.utils.set_random_seed(0)
    common = dict(classes=CLASSES, speakers=["13"], crop_frames=16, vtlp="example",
                  shuffle=True, seed=4, batch_size=16, keep=("utterance_id",))
    examples = sum(data.label_counts(out, CLASSES, ["13"]).values())
    per_epoch = -(-examples // 16)
    full = data.make_dataset(out, epochs=(0, 3), **common)
    assert data.batches_per_epoch(full, (0, 3)) == per_epoch
    assert int(full.cardinality()) == 3 * per_epoch
    keys = ("features", "utterance_id", "label")
    epochs = _by_epoch(full, per_epoch, *keys)
    assert len(epochs) == 3
    late = _by_epoch(data.make_dataset(out, epochs=(2, 3), **common), per_epoch, *keys)
    assert int(data.make_dataset(out, epochs=(2, 3), **common).cardinality()) == per_epoch
    assert _same(late[0], epochs[2])
    order = [np.concatenate([b["utterance_id"] for b in e]) for e in epochs]
    assert sorted(order[0]) == sorted(order[1]) and len(order[0]) == examples
    assert not np.array_equal(order[0], order[1])
    assert not np.array_equal(order[1], order[2])


def _synthetic_bank():
    rng = np.random.default_rng(0)
    mels = [rng.normal(-40.0, 10.0, (frames, 4)).astype(np.float32)
            for frames in (9, 12, 7, 15, 10)]
    return PatchBank(mels, [0, 1, 1, 0, 2], ["a", "a", "b", "b", "c"],
                     [f"u{i}" for i in range(5)])


def test_patch_bank_epochs_are_the_same_whether_the_dataset_starts_at_them_or_before():
    bank = _synthetic_bank()
    options = dict(batch_size=3, width=6, minmax=(-70.0, -10.0), seed=8, steps=2)
    full = bank.dataset(epochs=(0, 3), **options)
    assert int(full.cardinality()) == 6
    epochs = _by_epoch(full, 2, "features", "label")
    assert [len(e) for e in epochs] == [2, 2, 2]
    late = bank.dataset(epochs=(1, 3), **options)
    assert int(late.cardinality()) == 4
    assert _same(_by_epoch(late, 2, "features", "label")[1], epochs[2])
    assert _same(_by_epoch(late, 2, "features", "label")[0], epochs[1])
    assert not _same(epochs[0], epochs[1]) and not _same(epochs[1], epochs[2])
    with pytest.raises(ValueError, match="epochs needs steps"):
        bank.dataset(3, 6, (-70.0, -10.0), epochs=(0, 1))


def test_derived_seeds_are_fixed_31_bit_and_distinct_for_different_parts():
    assert seeds.derive(7, "fold", 3) == seeds.derive(7, "fold", 3)
    # Strings are hashed with SHA-256, not Python's per-process hash: pinned values.
    assert seeds.derive("fold") == 300582435
    assert seeds.derive(0, "a") == 1954301141
    parts = [(), (0,), (1,), (1, 0), (0, 1), (2 ** 32,), (0, "a"), ("a", 0), ("a",), ("b",),
             (7, "fold", 3), (7, "fold", 4), (7, "row", 3), (np.int64(7), "fold", 3)]
    values = [seeds.derive(*p) for p in parts]
    assert len(set(values)) == len(parts) - 1  # np.int64(7) is the integer 7
    assert values[-1] == values[-4]
    with pytest.raises(ValueError, match="seed parts"):
        seeds.derive(-1)
    with pytest.raises(TypeError, match="ints or strings"):
        seeds.derive(1.5)


@pytest.mark.real_data
def test_corpus_statistics_of_the_converter_match_the_graph_features(emodb_records):
    out, _ = emodb_records
    stats = F.load_feature_stats(out, "eskimez")
    measured = data.feature_statistics(data.make_dataset(out, batch_size=32))
    assert measured["min"] == pytest.approx(stats["min"], abs=0.01)
    assert measured["max"] == pytest.approx(stats["max"], abs=0.01)
    assert measured["mean"] == pytest.approx(stats["mean"], abs=0.01)
    assert measured["std"] == pytest.approx(stats["std"], abs=0.01)
    assert np.abs(measured["band_mean"] - stats["band_mean"]).max() < 0.01


@pytest.mark.real_data
def test_minmax_maps_the_corpus_extremes_to_minus_one_and_one(emodb_records):
    out, _ = emodb_records
    ds = data.make_dataset(out, normalise="minmax", batch_size=64)
    valid = [b["features"].numpy()[b["mask"].numpy()] for b in ds]
    # The corpus extremes of stats.json (within its 0.01 dB) map to -1 and 1.
    assert min(v.min() for v in valid) == pytest.approx(-1.0, abs=1e-3)
    assert max(v.max() for v in valid) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.real_data
def test_to_keras_feeds_a_model_fit(emodb_records):
    import keras

    out, _ = emodb_records
    ds = data.to_keras(data.make_dataset(out, classes=CLASSES, speakers=["15", "16"],
                                         crop_frames=32, normalise="minmax", batch_size=32))
    model = keras.Sequential([keras.Input((32, 128)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(7, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert int(ds.cardinality()) == -(-(55 + 71) // 32)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 2 * 4


@pytest.mark.real_data
def test_bad_options_are_refused(emodb_records, tmp_path):
    out, _ = emodb_records
    with pytest.raises(ValueError, match="crop"):
        data.make_dataset(out, crop="left")
    with pytest.raises(ValueError, match="oversample needs classes"):
        data.make_dataset(out, oversample="balance")
    with pytest.raises(ValueError, match="normalise"):
        data.make_dataset(out, normalise="l2", stats={"min": 0.0, "max": 1.0})
    with pytest.raises(FileNotFoundError, match="no \\*.tfrecord"):
        data.make_dataset(str(tmp_path))


@pytest.mark.real_data
def test_a_labels_mapping_replaces_the_emotion_and_drops_unlisted_records(emodb_records):
    records, _ = emodb_records
    chosen = {"03a01Fa": 4, "03a01Nc": 0, "08a01Lc": 2}
    ds = data.make_dataset(records, classes=["1", "2", "3", "4", "5"], labels=chosen,
                           features="chang", crop_frames=16, batch_size=8,
                           keep=("utterance_id",))
    batch = next(iter(ds))
    got = dict(zip([u.decode() for u in batch["utterance_id"].numpy()],
                   batch["label"].numpy().tolist()))
    assert got == chosen
    with pytest.raises(ValueError, match="outside 0..4"):
        data.make_dataset(records, classes=["1", "2", "3", "4", "5"], labels={"03a01Fa": 5})
    with pytest.raises(ValueError, match=r"1 utterance\(s\) not in the records.*08a01Lb"):
        data.make_dataset(records, classes=["1", "2"], labels={"08a01Lb": 1})
    with pytest.raises(ValueError, match="labels needs classes"):
        data.make_dataset(records, labels={"03a01Fa": 1})
