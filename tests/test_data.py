"""tf.data pipelines over real EmoDB records: splits, patches, masks, oversampling, stats."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ser import augment, data, features as F

CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]

pytestmark = pytest.mark.real_data


def _labels(ds):
    return np.concatenate([b["label"].numpy() for b in ds])


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
    assert balanced.max() / balanced.min() < plain.max() / plain.min()


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


def test_epoch_alpha_applies_one_factor_to_every_example(emodb_records):
    out, _ = emodb_records
    epoch_alpha = augment.EpochAlpha(seed=2)
    alpha = epoch_alpha.set_epoch(3)
    common = dict(classes=CLASSES, speakers=["14"], crop_frames=64, crop="centre",
                  batch_size=64)
    warped = next(iter(data.make_dataset(out, vtlp=epoch_alpha, **common)))["features"]
    fixed = next(iter(data.make_dataset(out, vtlp=alpha, **common)))["features"]
    plain = next(iter(data.make_dataset(out, **common)))["features"]
    assert np.abs(warped.numpy() - fixed.numpy()).max() < 1e-4
    assert np.abs(warped.numpy() - plain.numpy()).max() > 1.0


def test_corpus_statistics_of_the_converter_match_the_graph_features(emodb_records):
    out, _ = emodb_records
    stats = F.load_feature_stats(out, "eskimez")
    measured = data.feature_statistics(data.make_dataset(out, batch_size=32))
    assert measured["min"] == pytest.approx(stats["min"], abs=0.01)
    assert measured["max"] == pytest.approx(stats["max"], abs=0.01)
    assert measured["mean"] == pytest.approx(stats["mean"], abs=0.01)
    assert measured["std"] == pytest.approx(stats["std"], abs=0.01)
    assert np.abs(measured["band_mean"] - stats["band_mean"]).max() < 0.01


def test_minmax_normalised_patches_lie_in_minus_one_to_one(emodb_records):
    out, _ = emodb_records
    ds = data.make_dataset(out, classes=CLASSES, crop_frames=128, normalise="minmax",
                           vtlp="example", batch_size=64)
    lo = min(float(tf.reduce_min(b["features"])) for b in ds)
    hi = max(float(tf.reduce_max(b["features"])) for b in ds)
    assert -1.0 - 1e-4 <= lo < -0.9
    assert 0.5 < hi <= 1.0 + 0.05


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
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


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
