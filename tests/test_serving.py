"""Served classifiers from raw audio: the serving layers, the models a `FrontEnd` builds,
TensorFlow Serving's export layout and the reloaded SavedModel."""

import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import soundfile
import tensorflow as tf
from helpers import tiny_crop_classifier as tiny_classifier
from helpers import write_tone

from keras_ser import audio, augment, features
from keras_ser.models import crnn
from keras_ser.serving import builders, layers, predict, rest, savedmodel

CLASSES = ["anger", "boredom", "neutral"]
CROP, HOP = 16, 8
MELS = 128  # the "chang" preset
MIN_SAMPLES = 1024  # its 64 ms window at 16 kHz
#: Tiny CRNN: 16 mels, 2 blocks (time stride 2), 5 LSTM units.
TINY_CRNN = {"n_mels": 16, "num_classes": len(CLASSES), "conv_filters": (4, 4),
             "conv_strides": ((2, 2), (1, 2)), "lstm_units": 5}


def ramp(batch, frames, mels=3):
    """x[b, t, m] = 100 b + 10 t + m + 1: every frame distinct, none equal to a pad value."""
    b, t, m = np.meshgrid(np.arange(batch), np.arange(frames), np.arange(mels), indexing="ij")
    return (100.0 * b + 10.0 * t + m + 1).astype(np.float32)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """Speech-like tones as files and as the waveforms decoded from them."""
    folder = tmp_path_factory.mktemp("tones")
    specs = {"long": (1.0, 220.0, 0), "other": (1.0, 330.0, 1), "short": (0.3, 180.0, 2),
             "mid": (0.7, 260.0, 3)}
    files = {k: write_tone(str(folder / f"{k}.wav"), seconds=s, freq=f, seed=seed)
             for k, (s, f, seed) in specs.items()}
    return SimpleNamespace(files=files,
                           waves={k: audio.load_waveform(p) for k, p in files.items()})


# --- SlidingWindows ----------------------------------------------------------------------

@pytest.mark.parametrize("frames, starts, padded", [
    (1, [0], 3),            # shorter than a crop: one window, padded at the end
    (3, [0], 1),
    (4, [0], 0),            # exactly one crop
    (8, [0, 2, 4], 0),      # windows end exactly at the last frame: no tail window
    (9, [0, 2, 4, 5], 0),   # frame 8 uncovered by [4, 8): tail window [5, 9)
    (11, [0, 2, 4, 6, 7], 0),
])
def test_sliding_windows_count_and_contents(frames, starts, padded):
    layer = layers.SlidingWindows(crop_frames=4, hop_frames=2, pad_value=-7.5)
    x = ramp(2, frames)
    out = layer(tf.constant(x)).numpy()
    assert out.shape == (2, len(starts), 4, 3)
    np.testing.assert_array_equal(layer.window_starts(frames).numpy(), starts)
    source = np.concatenate([x, np.full((2, padded, 3), -7.5, np.float32)], axis=1)
    for w, s in enumerate(starts):
        np.testing.assert_array_equal(out[:, w], source[:, s:s + 4])
    assert np.sum(out == -7.5) == 2 * padded * 3


def test_sliding_windows_without_overlap_and_default_pad_value():
    layer = layers.SlidingWindows(crop_frames=4, hop_frames=4)
    out = layer(tf.constant(ramp(1, 10))).numpy()
    # starts 0, 4 and the tail window 6..9
    np.testing.assert_array_equal(out[0, :, 0, 0], [1.0, 41.0, 61.0])
    short = layer(tf.constant(ramp(1, 2))).numpy()
    np.testing.assert_array_equal(short[0, 0, 2:], -1.0)


def test_sliding_windows_inside_tf_function_with_dynamic_time():
    layer = layers.SlidingWindows(crop_frames=4, hop_frames=2)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def windows(x):
        return layer(x)

    for frames, count in ((2, 1), (4, 1), (9, 4), (30, 14)):
        x = ramp(3, frames)
        out = windows(tf.constant(x)).numpy()
        assert out.shape == (3, count, 4, 3)
        np.testing.assert_array_equal(out[:, -1, -1], x[:, -1] if frames >= 4 else -1.0)
    assert windows.experimental_get_tracing_count() == 1
    concrete = windows.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, None, 4, 3]


def test_sliding_windows_rejects_too_few_frames_and_bad_sizes():
    layer = layers.SlidingWindows(crop_frames=4, hop_frames=2, min_frames=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than 3 frames"):
        layer(tf.constant(ramp(1, 2)))
    with pytest.raises(ValueError, match="hop_frames must be >= 1"):
        layers.SlidingWindows(crop_frames=4, hop_frames=0)
    with pytest.raises(ValueError, match="crop_frames must be >= 1"):
        layers.SlidingWindows(crop_frames=0, hop_frames=2)


# --- Normalise, silence level, aggregation -----------------------------------------------

def test_minmax_normalise_maps_the_training_range_to_unit_and_clips_on_request():
    x = tf.constant([[-80.0, -30.0, 20.0, -100.0, 45.0]])
    plain = layers.Normalise("minmax", {"min": -80.0, "max": 20.0})
    np.testing.assert_allclose(plain(x).numpy(), [[-1.0, 0.0, 1.0, -1.4, 1.5]], atol=1e-6)
    clipped = layers.Normalise("minmax", {"min": -80.0, "max": 20.0}, clip=True)
    np.testing.assert_allclose(clipped(x).numpy(), [[-1.0, 0.0, 1.0, -1.0, 1.0]], atol=1e-6)
    per_band = layers.Normalise("minmax", {"min": np.array([-80.0, 0.0]), "max": [20.0, 10.0]})
    np.testing.assert_allclose(per_band(tf.constant([[20.0, 5.0], [-30.0, 0.0]])).numpy(),
                               [[1.0, 0.0], [0.0, -1.0]], atol=1e-6)
    assert per_band.get_config()["statistics"] == {"min": [-80.0, 0.0], "max": [20.0, 10.0]}


def test_zscore_normalise_with_scalar_and_per_band_statistics():
    scalar = layers.Normalise("zscore", {"mean": -30.0, "std": 25.0, "min": -99.0})
    np.testing.assert_allclose(scalar(tf.constant([[-80.0, -30.0, 20.0, -100.0]])).numpy(),
                               [[-2.0, 0.0, 2.0, -2.8]], atol=1e-6)
    # only the statistics of its kind are kept
    assert scalar.get_config()["statistics"] == {"mean": -30.0, "std": 25.0}
    per_band = layers.Normalise("zscore", {"mean": [-40.0, -20.0], "std": [10.0, 4.0]})
    np.testing.assert_allclose(per_band(tf.constant([[-20.0, -20.0], [-40.0, -28.0]])).numpy(),
                               [[2.0, 0.0], [0.0, -2.0]], atol=1e-6)


@pytest.mark.parametrize("kind, statistics, clip", [
    ("minmax", {"min": -80.0, "max": 20.0}, False),
    ("minmax", {"min": [-80.0, -70.0], "max": [20.0, 0.0]}, True),
    ("zscore", {"mean": -35.5, "std": 12.25}, False),
    ("zscore", {"mean": [-40.0, -20.0], "std": [10.0, 4.0]}, False),
])
def test_normalise_config_round_trip(kind, statistics, clip):
    layer = layers.Normalise(kind, statistics, clip, name="norm")
    config = json.loads(json.dumps(layer.get_config()))
    clone = layers.Normalise.from_config(config)
    assert (clone.kind, clone.statistics, clone.clip) == (kind, statistics, clip)
    x = tf.constant([[-90.0, -10.0], [-35.0, 30.0]])
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("kind, statistics, message", [
    ("robust", {"min": 0.0, "max": 1.0}, "kind must be 'minmax' or 'zscore'"),
    ("minmax", {"min": 0.0}, r"minmax normalisation needs statistics \['max'\]"),
    ("zscore", {"min": 0.0, "max": 1.0}, r"needs statistics \['mean', 'std'\]"),
    ("minmax", {"min": 5.0, "max": 5.0}, "degenerate minmax statistics"),
    ("minmax", {"min": [0.0, 3.0], "max": [1.0, 2.0]}, "degenerate minmax statistics"),
    ("zscore", {"mean": 0.0, "std": 0.0}, "degenerate zscore statistics"),
    ("zscore", {"mean": float("nan"), "std": 1.0}, "statistics must be finite"),
])
def test_normalise_rejects_unknown_kinds_and_bad_statistics(kind, statistics, message):
    with pytest.raises(ValueError, match=message):
        layers.Normalise(kind, statistics)


def test_silence_level_is_the_normalised_amin_floor():
    chang = features.get_preset("chang")  # amin 1e-10: silence is -100 dB
    assert layers.silence_level(chang, "minmax", {"min": -100.0, "max": 20.0}) == -1.0
    assert layers.silence_level(chang, "minmax", {"min": -80.0, "max": 20.0}) == \
        pytest.approx(-1.4)
    assert layers.silence_level(chang, "zscore", {"mean": -40.0, "std": 20.0}) == \
        pytest.approx(-3.0)
    with pytest.raises(ValueError, match="per-band statistics"):
        layers.silence_level(chang, "minmax", {"min": [-80.0, -90.0], "max": [0.0, 0.0]})
    with pytest.raises(ValueError, match="MFCC"):
        layers.silence_level(features.get_preset("tu"), "zscore", {"mean": 0.0, "std": 1.0})
    # The front end pads with it, clipped like the features when they are clipped.
    stats = {"min": -80.0, "max": 20.0}
    assert builders.FrontEnd("chang", stats, crop_frames=8).pad_value == pytest.approx(-1.4)
    assert builders.FrontEnd("chang", stats, crop_frames=8, clip=True).pad_value == -1.0
    assert builders.FrontEnd("chang", stats, crop_frames=8).hop_frames == 4


def test_mean_and_vote_over_windows_by_hand():
    # 2 utterances x 3 windows, 3 classes, in FoldWindows order
    window_probs = tf.constant([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1],
                                [0.1, 0.1, 0.8], [0.4, 0.5, 0.1], [0.9, 0.05, 0.05]])
    windows = tf.zeros([2, 3, 4, 5])
    folded = layers.FoldWindows()(windows)
    assert folded.shape == (6, 4, 5)
    mean = layers.MeanOverWindows()([window_probs, windows]).numpy()
    np.testing.assert_allclose(mean, [[0.3, 1.6 / 3, 0.5 / 3], [1.4 / 3, 0.65 / 3, 0.95 / 3]],
                               atol=1e-6)
    votes = layers.VoteOverWindows()([window_probs, windows]).numpy()
    np.testing.assert_allclose(votes, [[1 / 3, 2 / 3, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


def test_decide_takes_the_most_voted_class_and_breaks_ties_by_mean_probability():
    probabilities = np.array([[0.50, 0.30, 0.20],   # votes a clear winner: class 1
                              [0.20, 0.50, 0.30],   # tie 0/2: class 2 has more probability
                              [0.30, 0.60, 0.10],   # tie 0/2: class 1, untied, cannot win
                              [0.34, 0.33, 0.33]])  # three-way tie: highest probability
    votes = np.array([[0.2, 0.6, 0.2], [0.5, 0.0, 0.5], [0.5, 0.0, 0.5], [1 / 3] * 3],
                     np.float32)
    np.testing.assert_array_equal(builders.decide(probabilities, votes), [1, 2, 0, 0])
    np.testing.assert_array_equal(builders.decide(probabilities), [0, 1, 1, 0])


# --- WarpedCopies, CheckWaveform, FrontEnd ------------------------------------------------

def test_warped_copies_are_the_features_at_each_warp_factor(tones):
    alphas = (0.9, 1.0, 1.1)
    layer = layers.WarpedCopies("etienne", alphas, n_mels=16)
    pair = np.stack([tones.waves["long"], tones.waves["other"]])
    copies = layer(tf.constant(pair)).numpy()
    config = features.get_preset("etienne").replace(n_mels=16)
    assert copies.shape == (2, 3, config.num_frames(16000), 16)
    for k, alpha in enumerate(alphas):
        expected = features.compute_features(pair, config, tf.constant(alpha)).numpy()
        np.testing.assert_allclose(copies[:, k], expected, atol=1e-4)
    np.testing.assert_allclose(copies[:, 1], features.compute_features(pair, config).numpy(),
                               atol=1e-4)
    assert np.abs(copies[:, 0] - copies[:, 2]).max() > 1.0  # warps move energy across bands
    # Per-row factors: one copy per row, each with its own factor.
    rows = layer(tf.constant(pair), alphas=tf.constant([1.1, 0.9])).numpy()
    assert rows.shape == (2, 1, config.num_frames(16000), 16)
    np.testing.assert_allclose(rows[0, 0], copies[0, 2], atol=1e-4)
    np.testing.assert_allclose(rows[1, 0], copies[1, 0], atol=1e-4)
    for bad in ((), (0.9, 0.0)):
        with pytest.raises(ValueError, match="positive warp factors"):
            layers.WarpedCopies("etienne", bad)


def test_check_waveform_layer_rejects_short_and_wrongly_shaped_input():
    layer = layers.CheckWaveform(MIN_SAMPLES, 16000)
    ok = np.linspace(-0.5, 0.5, MIN_SAMPLES, dtype=np.float32)[None]
    np.testing.assert_array_equal(layer(tf.constant(ok)).numpy(), ok)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at least 1024 samples \(64 ms at 16000 Hz, one STFT window"):
        layer(tf.zeros([2, 1023]))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def checked(x):
        return layer(x)

    with pytest.raises(tf.errors.InvalidArgumentError):
        checked(tf.zeros([1, 1, 2000]))
    with pytest.raises(ValueError, match="min_samples must be >= 1"):
        layers.CheckWaveform(0)


def test_front_end_round_trips_as_json_and_rejects_inconsistent_settings():
    front = builders.FrontEnd("etienne", {"mean": np.float32(-40.0), "std": 15},
                              normalise="zscore", warps=augment.VTLP_TTA_ALPHAS,
                              aggregate="vote", feature_overrides={"n_mels": 16})
    doc = json.loads(json.dumps(front.to_dict()))
    assert doc["warps"] == [0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1]
    assert builders.FrontEnd.from_dict(doc) == front
    assert front.config.n_mels == 16 and front.config.fmax_hz == 4000.0
    stats = {"min": -80.0, "max": 20.0}
    for kwargs, message in (
            ({"crop_frames": 8, "warps": (0.9, 1.1)}, "either windows"),
            ({"aggregate": "vote"}, "a vote needs windows or VTLP copies"),
            ({"normalise": "robust"}, "normalise must be"),
            ({"aggregate": "median"}, "aggregate must be")):
        with pytest.raises(ValueError, match=message):
            builders.FrontEnd("chang", stats, **kwargs)
    with pytest.raises(ValueError, match="one image per utterance"):
        builders.FrontEnd("nitk", stats)
    with pytest.raises(ValueError, match="one image per utterance"):
        builders.FrontEnd("nitk", {}, crop_frames=8)
    image = builders.FrontEnd("nitk", {})
    assert image.image and not builders.FrontEnd("chang", stats).image
    units = builders.build_units_model(image)
    out = units(np.sin(np.arange(16000, dtype=np.float32) / 5.0)[None] * 0.3).numpy()
    assert out.shape == (1, 224, 224, 3) and out.min() == 0.0 and out.max() == 255.0


# --- Waveform checks ---------------------------------------------------------------------

def test_check_waveform_shapes_and_errors():
    batch = audio.check_waveform(np.zeros(2000, np.float64), MIN_SAMPLES)
    assert batch.shape == (1, 2000) and batch.dtype == np.float32
    assert audio.check_waveform(np.zeros((3, 2000), np.float32), MIN_SAMPLES).shape == (3, 2000)
    with pytest.raises(TypeError, match="32768"):
        audio.check_waveform(np.zeros(2000, np.int16), MIN_SAMPLES)
    with pytest.raises(ValueError, match="rank 3"):
        audio.check_waveform(np.zeros((1, 1, 2000), np.float32), MIN_SAMPLES)
    with pytest.raises(ValueError, match="rank 0"):
        audio.check_waveform(np.float32(0.5), MIN_SAMPLES)
    with pytest.raises(ValueError, match="NaN"):
        audio.check_waveform(np.array([0.0, np.nan] * 1000, np.float32), MIN_SAMPLES)
    with pytest.raises(ValueError) as err:
        audio.check_waveform(np.zeros(500, np.float32), MIN_SAMPLES)
    for part in ("500 samples", "0.0312 s", "1024 samples", "64 ms"):
        assert part in str(err.value)


def test_load_waveform_downmixes_and_names_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    left = (0.2 * rng.standard_normal(4000)).clip(-0.9, 0.9).astype(np.float32)
    path = str(tmp_path / "stereo.wav")
    soundfile.write(path, np.stack([left, 0.5 * left], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_waveform(path), 0.75 * left, atol=1e-6)
    missing = str(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError, match="nope.wav: no such audio file"):
        audio.load_waveform(missing)
    corrupt = tmp_path / "bad.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    with pytest.raises(audio.AudioError, match="bad.wav: cannot decode"):
        audio.load_waveform(str(corrupt))


# --- .keras round trip of the layers -----------------------------------------------------

def test_layers_round_trip_through_a_keras_file(tmp_path):
    inputs = keras.Input(shape=(None, 3))
    x = layers.Normalise("minmax", {"min": -10.0, "max": 300.0}, clip=True, name="norm")(inputs)
    x = layers.SlidingWindows(5, 3, min_frames=2, pad_value=-2.0, name="win")(x)
    windows = keras.Model(inputs, x)
    waveform = keras.Input(shape=(None,))
    y = layers.CheckWaveform(MIN_SAMPLES, name="check")(waveform)
    y = layers.WarpedCopies("etienne", (0.9, 1.1), n_mels=16, name="warp")(y)
    y = layers.Normalise("zscore", {"mean": list(np.linspace(-50.0, -30.0, 16)), "std": 12.0},
                         name="zscore")(y)
    copies = keras.Model(waveform, y)
    loaded = {}
    for key, model, names in (("windows", windows, ("norm", "win")),
                              ("copies", copies, ("check", "warp", "zscore"))):
        path = str(tmp_path / f"{key}.keras")
        model.save(path)
        loaded[key] = keras.saving.load_model(path)
        for name in names:
            assert loaded[key].get_layer(name).get_config() == model.get_layer(name).get_config()
    assert loaded["windows"].get_layer("win").pad_value == -2.0
    for frames in (3, 12):
        x = ramp(2, frames)
        np.testing.assert_array_equal(loaded["windows"](x).numpy(), windows(x).numpy())
    # 12 frames, crop 5, hop 3: starts 0, 3, 6 and the tail window 7
    assert loaded["windows"](ramp(1, 12)).shape == (1, 4, 5, 3)
    wave = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 5000)).astype(np.float32)
    out = loaded["copies"](wave).numpy()
    assert out.shape == (2, 2, 8, 16)
    np.testing.assert_array_equal(out, copies(wave).numpy())


# --- Windowed serving model and its export ----------------------------------------------

def tiny_crop_classifier():
    """(n, CROP, MELS) -> (n, 3) softmax; seeded, with logits large enough to be uneven."""
    return tiny_classifier(CROP, MELS, len(CLASSES))


@pytest.fixture(scope="module")
def crop(tones, tmp_path_factory):
    """A crop classifier behind a min-max front end, exported to ``<base>/crop/1``."""
    feats = features.compute_features(tones.waves["long"][np.newaxis], "chang").numpy()
    lo, hi = float(feats.min()), float(feats.max())
    front = builders.FrontEnd("chang", {"min": lo, "max": hi}, crop_frames=CROP,
                              hop_frames=HOP)
    classifier = tiny_crop_classifier()
    model = builders.build_serving_model(classifier, front, CLASSES)
    probs = model(tones.waves["long"][np.newaxis])["probabilities"].numpy()
    base = str(tmp_path_factory.mktemp("crop") / "export")
    path = savedmodel.export_model(model, base, "crop", class_names=CLASSES, front=front,
                                   extra={"corpus": "tones", "note": "test"})
    return SimpleNamespace(front=front, classifier=classifier, model=model, probs=probs,
                           base=base, path=path, lo=lo, hi=hi)


def reference_probabilities(crop, waveform):
    """The windowed pipeline written out by hand: min-max, crops, classifier, mean."""
    feats = features.compute_features(waveform[np.newaxis], "chang").numpy()[0]
    norm = 2.0 * (feats - crop.lo) / (crop.hi - crop.lo) - 1.0
    pad = 2.0 * (-100.0 - crop.lo) / (crop.hi - crop.lo) - 1.0  # silence, 1e-10 floor
    frames = norm.shape[0]
    if frames < CROP:
        norm = np.concatenate([norm, np.full((CROP - frames, MELS), pad, np.float32)])
    starts = list(range(0, max(frames, CROP) - CROP + 1, HOP))
    if starts[-1] + CROP < max(frames, CROP):
        starts.append(max(frames, CROP) - CROP)
    crops = np.stack([norm[s:s + CROP] for s in starts])
    return crop.classifier(crops).numpy().mean(axis=0), starts


def test_windowed_serving_model_equals_the_pipeline_by_hand(crop, tones):
    expected, starts = reference_probabilities(crop, tones.waves["long"])
    assert starts == [0, 8, 14]  # 30 frames: 8 + 16 < 30, so a tail window
    np.testing.assert_allclose(crop.probs[0], expected, atol=1e-5)
    assert crop.probs.shape == (1, 3)
    assert crop.probs.max() - crop.probs.min() > 0.05  # uneven enough to compare
    # 0.3 s: 8 frames, padded with the normalised silence level to one crop
    short = tones.waves["short"]
    expected_short, short_starts = reference_probabilities(crop, short)
    assert short_starts == [0]
    got = crop.model(short[np.newaxis])["probabilities"].numpy()[0]
    np.testing.assert_allclose(got, expected_short, atol=1e-5)
    windows = crop.model.get_layer("sliding_windows")
    assert windows.pad_value == pytest.approx(
        layers.silence_level(features.get_preset("chang"), "minmax",
                             {"min": crop.lo, "max": crop.hi}))
    assert list(crop.model.output) == ["probabilities"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1024 samples"):
        crop.model(np.zeros((1, 1000), np.float32))
    with pytest.raises(ValueError, match="outputs 3 classes but 2 class names"):
        builders.build_serving_model(crop.classifier, crop.front, CLASSES[:2])


def test_export_round_trip_signature_metadata_and_batching(crop, tones):
    assert crop.path == os.path.join(crop.base, "crop", "1")
    assert os.listdir(crop.base) == ["crop"]
    assert os.listdir(os.path.dirname(crop.path)) == ["1"]  # the temporary folder is gone
    assert {"saved_model.pb", "variables", "keras_ser.json"} <= set(os.listdir(crop.path))
    loaded = tf.saved_model.load(crop.path)
    assert {"serve", "serving_default"} <= set(loaded.signatures)
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["waveform"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None]
    out = signature(waveform=tf.constant(tones.waves["long"][np.newaxis]))
    assert list(out) == ["probabilities"]
    np.testing.assert_allclose(out["probabilities"].numpy(), crop.probs, atol=1e-5)
    # A batch of two different utterances of equal length: each row as if alone.
    pair = np.stack([tones.waves["long"], tones.waves["other"]])
    both = signature(waveform=tf.constant(pair))["probabilities"].numpy()
    second = signature(waveform=tf.constant(pair[1:]))["probabilities"].numpy()
    np.testing.assert_allclose(both, np.concatenate([crop.probs, second]), atol=1e-5)
    assert np.abs(both[0] - both[1]).max() > 1e-3
    with open(os.path.join(crop.path, "keras_ser.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert (meta["model_name"], meta["model_version"]) == ("crop", 1)
    assert meta["class_names"] == CLASSES
    assert (meta["sample_rate"], meta["min_samples"], meta["min_ms"]) == (16000, 1024, 64.0)
    assert builders.FrontEnd.from_dict(meta["front_end"]) == crop.front
    assert meta["front_end"]["statistics"] == {"min": crop.lo, "max": crop.hi}
    assert (meta["front_end"]["crop_frames"], meta["front_end"]["hop_frames"]) == (CROP, HOP)
    assert list(meta["outputs"]) == ["probabilities"]
    assert meta["decision"] == "argmax of probabilities"
    assert meta["extra"] == {"corpus": "tones", "note": "test"}
    assert meta["feature_config"]["n_fft"] == 1024
    assert predict.read_metadata(crop.base)["path"] == crop.path


def test_export_versions_and_resolve_base_model_and_version_folders(crop, tmp_path):
    base = str(tmp_path / "export")
    first = savedmodel.export_model(crop.model, base, "crop", class_names=CLASSES,
                                    front=crop.front)
    second = savedmodel.export_model(crop.model, base, "crop", class_names=CLASSES,
                                     front=crop.front)
    model_dir = os.path.join(base, "crop")
    assert (first, second) == (os.path.join(model_dir, "1"), os.path.join(model_dir, "2"))
    assert os.path.isfile(os.path.join(second, "saved_model.pb"))
    assert predict.read_metadata(second)["model_version"] == 2
    assert savedmodel.versions(model_dir) == [1, 2]
    assert predict.resolve(base) == second  # the one model, its highest version
    assert predict.resolve(model_dir) == second
    assert predict.resolve(first) == first
    # An explicit version replaces that version in place.
    again = savedmodel.export_model(crop.model, base, "crop", class_names=CLASSES,
                                    front=crop.front, version=1, extra={"run": "again"})
    assert again == first and sorted(os.listdir(model_dir)) == ["1", "2"]
    assert predict.read_metadata(first)["extra"] == {"run": "again"}
    # Versions are numbers: 10 is above 2.
    shutil.copytree(second, os.path.join(model_dir, "10"))
    assert predict.resolve(base) == os.path.join(model_dir, "10")
    savedmodel.export_model(crop.model, base, "other", class_names=CLASSES, front=crop.front)
    with pytest.raises(ValueError, match=r"holds several models \['crop', 'other'\]"):
        predict.resolve(base)
    assert predict.resolve(os.path.join(base, "other")) == os.path.join(base, "other", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an exported model"):
        predict.resolve(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="missing: no such model folder"):
        predict.resolve(str(tmp_path / "missing"))
    bare = str(tmp_path / "bare")
    shutil.copytree(second, bare)
    os.remove(os.path.join(bare, "keras_ser.json"))
    assert predict.resolve(bare) == bare
    with pytest.raises(ValueError, match="without keras_ser.json, not a keras-ser export"):
        predict.read_metadata(bare)


def test_export_refuses_bad_names_versions_class_names_and_extra(crop, tmp_path):
    kwargs = {"class_names": CLASSES, "front": crop.front}
    with pytest.raises(ValueError, match="model name 'a/b'"):
        savedmodel.export_model(crop.model, str(tmp_path), "a/b", **kwargs)
    with pytest.raises(ValueError, match="versions are positive integers, got 0"):
        savedmodel.export_model(crop.model, str(tmp_path), "m", version=0, **kwargs)
    with pytest.raises(ValueError, match="outputs 3 classes but 2 class names"):
        savedmodel.export_model(crop.model, str(tmp_path), "m", class_names=CLASSES[:2],
                                front=crop.front)
    with pytest.raises(TypeError):
        savedmodel.export_model(crop.model, str(tmp_path), "m", extra={"bad": object()},
                                **kwargs)
    assert os.listdir(tmp_path) == []  # each refused before anything was written


def test_rest_body_gives_the_same_probabilities(crop, tones):
    classifier = predict.load(crop.base)
    assert classifier.metadata["class_names"] == CLASSES
    waveform = tones.waves["long"]
    body = json.dumps({"instances": [waveform.tolist()]})
    tensor = rest.rest_instances(body)
    assert tensor.dtype == tf.float32 and tensor.shape == (1, waveform.size)
    out = classifier(waveform=tensor)["probabilities"].numpy()
    np.testing.assert_allclose(out, crop.probs, atol=1e-5)
    columnar = rest.rest_instances({"inputs": {"waveform": [waveform.tolist()]}})
    np.testing.assert_array_equal(columnar.numpy(), tensor.numpy())
    objects = rest.rest_instances({"instances": [{"waveform": waveform.tolist()}]})
    np.testing.assert_array_equal(objects.numpy(), tensor.numpy())
    with pytest.raises(ValueError, match=r"ragged instances: utterances of \[1500, 2000\]"):
        rest.rest_instances({"instances": [[0.0] * 2000, [0.0] * 1500]})
    with pytest.raises(ValueError, match="32768"):
        rest.rest_instances({"instances": [[0, 1200, -3000] * 500]})
    with pytest.raises(ValueError, match="neither 'instances' nor 'inputs'"):
        rest.rest_instances('{"waveform": [[0.0]]}')
    with pytest.raises(ValueError, match="NaN or infinite"):
        rest.rest_instances({"instances": [[0.0, float("nan")]]})


def test_reloaded_signature_rejects_bad_inputs(crop):
    signature = predict.load(crop.path).signature
    # dtype: the signature's input is float32 only
    with pytest.raises(tf.errors.InvalidArgumentError, match="int16"):
        signature(waveform=tf.zeros([1, 2000], tf.int16))
    # rank: a NumPy array is bound against the (None, None) spec; a tensor meets the
    # graph's own rank check
    with pytest.raises(TypeError, match="Can not cast TensorSpec"):
        signature(waveform=np.zeros(2000, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible with expected"):
        signature(waveform=tf.zeros([1, 1, 2000]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at least 1024 samples \(64 ms at 16000 Hz"):
        signature(waveform=tf.zeros([1, 1000]))
    ok = signature(waveform=tf.zeros([1, 1024]))["probabilities"].numpy()
    assert ok.shape == (1, 3) and abs(ok.sum() - 1.0) < 1e-5


def test_predict_files_and_its_errors(crop, tones, tmp_path):
    wav = tones.files["long"]
    [result] = predict.predict_files(crop.base, [wav])
    assert result["file"] == wav
    assert list(result["probabilities"]) == CLASSES
    np.testing.assert_allclose(list(result["probabilities"].values()), crop.probs[0],
                               atol=1e-5)
    assert result["predicted"] == CLASSES[int(np.argmax(crop.probs))]
    assert "votes" not in result
    short = str(tmp_path / "short.wav")
    soundfile.write(short, tones.waves["long"][:800], 16000)
    with pytest.raises(audio.AudioError, match=r"short.wav: audio too short: 800 samples"):
        predict.predict_files(crop.path, [wav, short])
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        predict.predict_files(crop.path, [str(tmp_path / "missing.wav")])
    with pytest.raises(ValueError, match="not an exported model"):
        predict.predict_files(str(tmp_path), [wav])


# --- VTLP copies and their vote ----------------------------------------------------------

@pytest.fixture(scope="module")
def vote(tmp_path_factory):
    """A whole-utterance CRNN behind the eleven VTLP copies, voting; exported."""
    keras.utils.set_random_seed(2)  # copies of two of the tones disagree
    classifier = crnn.build_crnn("cpu", **TINY_CRNN)
    front = builders.FrontEnd("etienne", {"mean": -40.0, "std": 15.0}, normalise="zscore",
                              warps=augment.VTLP_TTA_ALPHAS, aggregate="vote",
                              feature_overrides={"n_mels": 16})
    model = builders.build_serving_model(classifier, front, CLASSES)
    base = str(tmp_path_factory.mktemp("vote") / "export")
    path = savedmodel.export_model(model, base, "crnn_vote", class_names=CLASSES, front=front)
    return SimpleNamespace(classifier=classifier, front=front, model=model, path=path)


def test_vtlp_vote_export_gives_the_vote_shares_of_the_per_copy_argmax(vote, tones):
    exported = predict.load(vote.path)
    assert list(exported.metadata["outputs"]) == ["probabilities", "votes"]
    assert exported.metadata["decision"].startswith("majority vote over the VTLP copies")
    assert exported.metadata["front_end"]["warps"] == list(augment.VTLP_TTA_ALPHAS)
    config = vote.front.config
    split = 0
    for key in ("long", "other", "mid", "short"):
        wave = tones.waves[key][np.newaxis]
        copies = np.concatenate([features.compute_features(wave, config, tf.constant(alpha))
                                 for alpha in augment.VTLP_TTA_ALPHAS])
        per_copy = vote.classifier((copies + 40.0) / 15.0).numpy()
        counts = np.bincount(per_copy.argmax(axis=1), minlength=len(CLASSES))
        out = exported(waveform=tf.constant(wave))
        np.testing.assert_allclose(out["votes"].numpy()[0], counts / 11.0, atol=1e-6)
        np.testing.assert_allclose(out["probabilities"].numpy()[0], per_copy.mean(axis=0),
                                   atol=1e-5)
        _, _, predicted = exported.classify(wave)
        assert predicted[0] == builders.decide(per_copy.mean(axis=0)[None],
                                               counts[None] / 11.0)[0]
        split += int(counts.max() < 11)
    assert split >= 1  # some utterance's copies disagree, so the shares are not all 0/1


def saved_model_cli():
    """The saved_model_cli beside the running interpreter, else on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("saved_model_cli")


TENSOR_INFO = re.compile(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+"
                         r"shape: \(([-\d, ]+)\)")


def test_saved_model_cli_documents_the_waveform_signature(vote):
    tool = saved_model_cli()
    if tool is None:
        message = "saved_model_cli not found beside the interpreter nor on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    shown = subprocess.run([tool, "show", "--dir", vote.path, "--all"], capture_output=True,
                           text=True, timeout=120, check=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    default = shown[shown.index("signature_def['serving_default']"):]
    default = default[:default.index("Method name is:")]
    found = {(kind, key): (dtype, shape) for kind, key, dtype, shape in
             TENSOR_INFO.findall(default)}
    assert found == {("inputs", "waveform"): ("DT_FLOAT", "-1, -1"),
                     ("outputs", "probabilities"): ("DT_FLOAT", "-1, 3"),
                     ("outputs", "votes"): ("DT_FLOAT", "-1, 3")}
