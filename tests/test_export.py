"""Served classifier from raw audio: windows, normalisation, export round trip, CLI."""

import json
import os
import re
import subprocess
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import soundfile
import soxr
import tensorflow as tf

from keras_ser import audio, cli, export, features

WAV = os.path.join("emodb", "wav", "03a01Fa.wav")
CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
CROP, HOP = 16, 8
MELS = 128
MIN_SAMPLES = 1024  # the "chang" preset: 64 ms window at 16 kHz


def ramp(batch, frames, mels=3):
    """x[b, t, m] = 100 b + 10 t + m + 1: every frame distinct, none equal to a pad value."""
    b, t, m = np.meshgrid(np.arange(batch), np.arange(frames), np.arange(mels), indexing="ij")
    return (100.0 * b + 10.0 * t + m + 1).astype(np.float32)


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
    layer = export.SlidingWindows(crop_frames=4, hop_frames=2, pad_value=-7.5)
    x = ramp(2, frames)
    out = layer(tf.constant(x)).numpy()
    assert out.shape == (2, len(starts), 4, 3)
    np.testing.assert_array_equal(layer.window_starts(frames).numpy(), starts)
    source = np.concatenate([x, np.full((2, padded, 3), -7.5, np.float32)], axis=1)
    for w, s in enumerate(starts):
        np.testing.assert_array_equal(out[:, w], source[:, s:s + 4])
    assert np.sum(out == -7.5) == 2 * padded * 3


def test_sliding_windows_without_overlap_and_default_pad_value():
    layer = export.SlidingWindows(crop_frames=4, hop_frames=4)
    out = layer(tf.constant(ramp(1, 10))).numpy()
    # starts 0, 4 and the tail window 6..9
    np.testing.assert_array_equal(out[0, :, 0, 0], [1.0, 41.0, 61.0])
    short = layer(tf.constant(ramp(1, 2))).numpy()
    np.testing.assert_array_equal(short[0, 0, 2:], -1.0)


def test_sliding_windows_inside_tf_function_with_dynamic_time():
    layer = export.SlidingWindows(crop_frames=4, hop_frames=2)

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
    layer = export.SlidingWindows(crop_frames=4, hop_frames=2, min_frames=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than 3 frames"):
        layer(tf.constant(ramp(1, 2)))
    with pytest.raises(ValueError, match="hop_frames must be >= 1"):
        export.SlidingWindows(crop_frames=4, hop_frames=0)


# --- MinMaxNormalise and serialisation ---------------------------------------------------

def test_minmax_normalise_values_and_config():
    layer = export.MinMaxNormalise(-80.0, 20.0)
    out = layer(tf.constant([[-80.0, -30.0, 20.0, -100.0]])).numpy()
    np.testing.assert_allclose(out, [[-1.0, 0.0, 1.0, -1.4]], atol=1e-6)
    clone = export.MinMaxNormalise.from_config(layer.get_config())
    assert (clone.minimum, clone.maximum) == (-80.0, 20.0)
    per_band = export.MinMaxNormalise(np.array([-80.0, 0.0]), [20.0, 10.0])
    np.testing.assert_allclose(per_band(tf.constant([[20.0, 5.0]])).numpy(), [[1.0, 0.0]])
    assert per_band.get_config()["minimum"] == [-80.0, 0.0]
    with pytest.raises(ValueError, match="maximum must exceed minimum"):
        export.MinMaxNormalise(5.0, 5.0)


def test_layers_round_trip_through_a_keras_file(tmp_path):
    inputs = keras.Input(shape=(None, 3))
    x = export.MinMaxNormalise(-10.0, 300.0, name="norm")(inputs)
    x = export.SlidingWindows(5, 3, min_frames=2, pad_value=-2.0, name="win")(x)
    model = keras.Model(inputs, x)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for name in ("norm", "win"):
        assert loaded.get_layer(name).get_config() == model.get_layer(name).get_config()
    assert loaded.get_layer("win").pad_value == -2.0
    for frames in (3, 12):
        x = ramp(2, frames)
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # 12 frames, crop 5, hop 3: starts 0, 3, 6 and the tail window 7
    assert loaded(ramp(1, 12)).shape == (1, 4, 5, 3)


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


# --- Serving model and export on real EmoDB audio ----------------------------------------

def tiny_classifier():
    """(n, CROP, MELS) -> (n, 7) softmax; seeded, with logits large enough to be uneven."""
    inputs = keras.Input(shape=(CROP, MELS))
    x = keras.layers.Conv1D(8, 3, activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=3))(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(
                                     stddev=1.0, seed=1))(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def served(shared_data, tmp_path_factory):
    wav = os.path.join(shared_data, WAV)
    waveform = audio.load_waveform(wav)
    feats = features.compute_features(waveform[np.newaxis], "chang").numpy()
    lo, hi = float(feats.min()), float(feats.max())
    classifier = tiny_classifier()
    model = export.build_serving_model(classifier, features="chang", minimum=lo, maximum=hi,
                                       crop_frames=CROP, class_names=CLASSES)
    probs = model(waveform[np.newaxis])["probabilities"].numpy()
    path = str(tmp_path_factory.mktemp("export") / "model")
    export.export_classifier(model, path, class_names=CLASSES, features="chang",
                             sample_rate=16000, minimum=lo, maximum=hi, crop_frames=CROP,
                             hop_frames=HOP, extra={"corpus": "emodb", "note": "test"})
    return SimpleNamespace(wav=wav, waveform=waveform, feats=feats, lo=lo, hi=hi,
                           classifier=classifier, model=model, probs=probs, path=path)


def reference_probabilities(served, waveform):
    """The serving pipeline written out by hand: min-max, crops, classifier, mean."""
    feats = features.compute_features(waveform[np.newaxis], "chang").numpy()[0]
    norm = 2.0 * (feats - served.lo) / (served.hi - served.lo) - 1.0
    pad = 2.0 * (-100.0 - served.lo) / (served.hi - served.lo) - 1.0  # silence, 1e-10 floor
    frames = norm.shape[0]
    if frames < CROP:
        norm = np.concatenate([norm, np.full((CROP - frames, MELS), pad, np.float32)])
    starts = list(range(0, max(frames, CROP) - CROP + 1, HOP))
    if starts[-1] + CROP < max(frames, CROP):
        starts.append(max(frames, CROP) - CROP)
    crops = np.stack([norm[s:s + CROP] for s in starts])
    return served.classifier(crops).numpy().mean(axis=0), starts


@pytest.mark.real_data
def test_serving_model_equals_the_pipeline_by_hand(served):
    assert served.feats.shape == (1, 58, MELS)  # 1.898 s -> 1 + (30372 - 1024) // 512
    expected, starts = reference_probabilities(served, served.waveform)
    assert starts == [0, 8, 16, 24, 32, 40, 42]  # 40 + 16 < 58: a tail window
    np.testing.assert_allclose(served.probs[0], expected, atol=1e-5)
    assert served.probs.shape == (1, 7)
    assert abs(served.probs.sum() - 1.0) < 1e-5
    assert served.probs.max() - served.probs.min() > 0.05  # uneven enough to compare
    # 0.3 s: 8 frames, padded with the normalised silence level to one crop
    short = served.waveform[:4800]
    expected_short, short_starts = reference_probabilities(served, short)
    assert short_starts == [0]
    got = served.model(short[np.newaxis])["probabilities"].numpy()[0]
    np.testing.assert_allclose(got, expected_short, atol=1e-5)
    windows = served.model.get_layer("sliding_windows")
    assert windows.pad_value == pytest.approx(
        export.silence_level(features.PRESETS["chang"], served.lo, served.hi))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1024 samples"):
        served.model(np.zeros((1, 1000), np.float32))


@pytest.mark.real_data
def test_export_round_trip_signature_metadata_and_batching(served):
    parent = os.path.dirname(served.path)
    assert os.listdir(parent) == ["model"]  # the temporary folder was renamed away
    loaded = tf.saved_model.load(served.path)
    assert {"serve", "serving_default"} <= set(loaded.signatures)
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["waveform"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, None]
    out = signature(waveform=tf.constant(served.waveform[np.newaxis]))
    np.testing.assert_allclose(out["probabilities"].numpy(), served.probs, atol=1e-5)
    # A batch of two different utterances of equal length: each row as if alone.
    pair = np.stack([served.waveform, 0.25 * served.waveform[::-1]])
    both = signature(waveform=tf.constant(pair))["probabilities"].numpy()
    second = signature(waveform=tf.constant(pair[1:]))["probabilities"].numpy()
    np.testing.assert_allclose(both, np.concatenate([served.probs, second]), atol=1e-5)
    assert np.abs(both[0] - both[1]).max() > 1e-3
    with open(os.path.join(served.path, "keras_ser.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["class_names"] == CLASSES
    assert (meta["sample_rate"], meta["min_samples"], meta["features"]) == (16000, 1024,
                                                                          "chang")
    assert meta["normalisation"]["minimum"] == served.lo
    assert meta["normalisation"]["maximum"] == served.hi
    assert (meta["windows"]["crop_frames"], meta["windows"]["hop_frames"]) == (CROP, HOP)
    assert meta["extra"] == {"corpus": "emodb", "note": "test"}
    assert meta["feature_config"]["n_fft"] == 1024


@pytest.mark.real_data
def test_saved_model_cli_names_the_waveform_input(served):
    tool = "/work/venv/bin/saved_model_cli"
    if not os.path.exists(tool):
        pytest.skip("saved_model_cli not installed")
    shown = subprocess.run([tool, "show", "--dir", served.path, "--all"], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    default = shown[shown.index("signature_def['serving_default']"):]
    assert "inputs['waveform']" in default
    assert "outputs['probabilities']" in default
    assert "shape: (-1, -1)" in default and "shape: (-1, 7)" in default


@pytest.mark.real_data
def test_rest_body_gives_the_same_probabilities(served):
    classifier, meta = export.load_exported(served.path)
    assert meta["class_names"] == CLASSES
    body = json.dumps({"instances": [served.waveform.tolist()]})
    tensor = export.rest_instances(body)
    assert tensor.dtype == tf.float32 and tensor.shape == (1, served.waveform.size)
    out = classifier(waveform=tensor)["probabilities"].numpy()
    np.testing.assert_allclose(out, served.probs, atol=1e-5)
    columnar = export.rest_instances({"inputs": {"waveform": [served.waveform.tolist()]}})
    np.testing.assert_array_equal(columnar.numpy(), tensor.numpy())
    with pytest.raises(ValueError, match=r"ragged instances: utterances of \[1500, 2000\]"):
        export.rest_instances({"instances": [[0.0] * 2000, [0.0] * 1500]})
    with pytest.raises(ValueError, match="32768"):
        export.rest_instances({"instances": [[0, 1200, -3000] * 500]})
    with pytest.raises(ValueError, match="neither 'instances' nor 'inputs'"):
        export.rest_instances('{"waveform": [[0.0]]}')


@pytest.mark.real_data
def test_reloaded_signature_rejects_bad_inputs(served):
    signature = tf.saved_model.load(served.path).signatures["serving_default"]
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
    assert ok.shape == (1, 7) and abs(ok.sum() - 1.0) < 1e-5


@pytest.mark.real_data
def test_predict_files_and_its_errors(served, tmp_path):
    [result] = export.predict_files(served.path, [served.wav])
    assert result["file"] == served.wav
    assert list(result["probabilities"]) == CLASSES
    np.testing.assert_allclose(list(result["probabilities"].values()), served.probs[0],
                               atol=1e-5)
    assert result["predicted"] == CLASSES[int(np.argmax(served.probs))]
    short = str(tmp_path / "short.wav")
    soundfile.write(short, served.waveform[:800], 16000)
    with pytest.raises(audio.AudioError, match=r"short.wav: audio too short: 800 samples"):
        export.predict_files(served.path, [served.wav, short])
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        export.predict_files(served.path, [str(tmp_path / "missing.wav")])
    with pytest.raises(ValueError, match="not an exported model"):
        export.predict_files(str(tmp_path), [served.wav])
    with pytest.raises(TypeError):  # refused before anything is written
        export.export_classifier(served.model, str(tmp_path / "x"), class_names=CLASSES,
                                 features="chang", sample_rate=16000, minimum=served.lo,
                                 maximum=served.hi, crop_frames=CROP, hop_frames=HOP,
                                 extra={"bad": object()})
    with pytest.raises(ValueError, match="crop_frames/hop_frames"):
        export.export_classifier(served.model, str(tmp_path / "y"), class_names=CLASSES,
                                 features="chang", sample_rate=16000, minimum=served.lo,
                                 maximum=served.hi, crop_frames=CROP, hop_frames=4)
    with pytest.raises(FileExistsError):
        export.export_classifier(served.model, served.path, class_names=CLASSES,
                                 features="chang", sample_rate=16000, minimum=served.lo,
                                 maximum=served.hi, crop_frames=CROP, hop_frames=HOP)
    assert sorted(os.listdir(tmp_path)) == ["short.wav"]


# --- keras-ser predict -------------------------------------------------------------------

LINE = re.compile(r"^  (\w+)\s+(\d\.\d{3})$")


@pytest.mark.real_data
def test_cli_predict_prints_sorted_probabilities(served, capsys):
    assert cli.main(["predict", served.path, served.wav]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{served.wav}: {CLASSES[int(np.argmax(served.probs))]}"
    rows = [LINE.match(line).groups() for line in lines[1:]]
    assert sorted(name for name, _ in rows) == CLASSES
    values = [float(p) for _, p in rows]
    assert values == sorted(values, reverse=True)
    assert abs(sum(values) - 1.0) < 0.005
    for (name, _), value in zip(rows, values):
        assert abs(value - served.probs[0][CLASSES.index(name)]) <= 0.0005 + 1e-6


@pytest.mark.real_data
def test_cli_predict_flac_at_44k_matches_the_16k_original(served, tmp_path, capsys):
    flac = str(tmp_path / "03a01Fa_44k.flac")
    soundfile.write(flac, soxr.resample(served.waveform, 16000, 44100, quality="HQ"), 44100,
                    format="FLAC", subtype="PCM_16")
    assert soundfile.info(flac).samplerate == 44100
    assert cli.main(["predict", served.path, flac, served.wav, "--json"]) == 0
    resampled, original = json.loads(capsys.readouterr().out)
    assert resampled["file"] == flac
    p44 = np.array([resampled["probabilities"][c] for c in CLASSES])
    p16 = np.array([original["probabilities"][c] for c in CLASSES])
    np.testing.assert_allclose(p16, served.probs[0], atol=1e-5)
    np.testing.assert_allclose(p44, p16, atol=0.05)


@pytest.mark.real_data
def test_cli_predict_bad_input_exits_2_with_one_line(served, tmp_path, capsys):
    missing = str(tmp_path / "missing.wav")
    assert cli.main(["predict", served.path, missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}: no such audio file"
    assert cli.main(["predict", str(tmp_path / "no_model"), served.wav]) == 2
    assert "no such model folder" in capsys.readouterr().err
    short = str(tmp_path / "short.wav")
    soundfile.write(short, served.waveform[:500], 16000)
    assert cli.main(["predict", served.path, short]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "1024 samples" in err
