"""Per-speaker normalised exports: the speaker's statistics as a second signature, the
fallback to the training speakers' pooled statistics, and `keras-ser predict`'s speaker
options."""

import json
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_crop_classifier, write_tone

from keras_ser import audio, features
from keras_ser.models import crnn
from keras_ser.serving import builders, layers, predict, savedmodel

CLASSES = ["anger", "boredom", "neutral"]
TINY_CRNN = {"n_mels": 16, "num_classes": len(CLASSES), "conv_filters": (4, 4),
             "conv_strides": ((2, 2), (1, 2)), "lstm_units": 5}
FALLBACK = {"mean": -40.0, "std": 15.0}


@pytest.fixture(scope="module")
def speaker_export(tmp_path_factory):
    """A tiny whole-utterance CRNN behind a per-speaker z-score front end, exported,
    and two "speakers" (tones of different levels) as files."""
    folder = tmp_path_factory.mktemp("speaker")
    files = {"a1": write_tone(str(folder / "a1.wav"), seconds=0.8, freq=220.0, seed=0),
             "a2": write_tone(str(folder / "a2.wav"), seconds=0.6, freq=300.0, seed=1),
             "b1": write_tone(str(folder / "b1.wav"), seconds=0.7, freq=180.0, seed=2,
                              amplitude=0.05)}
    waves = {k: audio.load_waveform(p) for k, p in files.items()}
    keras.utils.set_random_seed(4)
    classifier = crnn.build_crnn("cpu", **TINY_CRNN)
    front = builders.FrontEnd("etienne", FALLBACK, normalise="zscore",
                              feature_overrides={"n_mels": 16}, speaker_norm=True)
    model = builders.build_serving_model(classifier, front, CLASSES)
    base = str(folder / "export")
    own = {"03": {"mean": -52.0, "std": 11.0}, "08": {"mean": -35.5, "std": 18.25}}
    path = savedmodel.export_model(model, base, "crnn", class_names=CLASSES, front=front,
                                   extra={"speaker_statistics": own})
    return SimpleNamespace(front=front, classifier=classifier, model=model, base=base,
                           path=path, files=files, waves=waves, own=own)


def by_hand(ex, wave, stats):
    """The pipeline written out: log-mels, (x - mean) / std, classifier."""
    feats = features.compute_features(wave[None], ex.front.config).numpy()
    return ex.classifier((feats - stats["mean"]) / stats["std"]).numpy()[0]


def test_speaker_normalise_layer_matches_numpy_for_scalar_and_per_band_statistics():
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32) * 10
    mean = np.array([[1.0], [-2.0]], np.float32)
    std = np.array([[2.0], [4.0]], np.float32)
    out = layers.SpeakerNormalise("zscore")([x, mean, std]).numpy()
    np.testing.assert_allclose(out, (x - mean[:, None]) / std[:, None], rtol=1e-6)
    lo = np.array([[-1.0, 0.0, 1.0], [-5.0, -5.0, -5.0]], np.float32)
    hi = lo + np.array([[2.0, 4.0, 8.0], [10.0, 10.0, 10.0]], np.float32)
    out = layers.SpeakerNormalise("minmax")([x, lo, hi]).numpy()
    np.testing.assert_allclose(out, 2 * (x - lo[:, None]) / (hi - lo)[:, None] - 1,
                               rtol=1e-5, atol=1e-6)
    clipped = layers.SpeakerNormalise("minmax", clip=True)([x, lo, hi]).numpy()
    assert clipped.min() >= -1.0 and clipped.max() <= 1.0 and np.abs(out).max() > 1.0
    copies = np.stack([x, x + 1], axis=1)  # (batch, copies, frames, dim): VTLP copies
    out = layers.SpeakerNormalise("zscore")([copies, mean, std]).numpy()
    np.testing.assert_allclose(out, (copies - mean[:, None, None]) / std[:, None, None],
                               rtol=1e-6)
    assert layers.SpeakerNormalise.from_config(
        layers.SpeakerNormalise("minmax", clip=True).get_config()).clip is True
    with pytest.raises(ValueError, match="kind must be"):
        layers.SpeakerNormalise("robust")


def test_front_end_speaker_inputs_and_their_rules():
    front = builders.FrontEnd("etienne", FALLBACK, normalise="zscore", speaker_norm=True)
    assert front.speaker_keys == ("speaker_mean", "speaker_std")
    assert front.speaker_width == 1
    assert builders.FrontEnd.from_dict(json.loads(json.dumps(front.to_dict()))) == front
    one = front.for_speaker({"mean": -50.0, "std": 10.0})
    assert (one.speaker_norm, one.statistics) == (False, {"mean": -50.0, "std": 10.0})
    band = builders.FrontEnd("tu", {"mean": [0.0] * 39, "std": [1.0] * 39},
                             normalise="zscore", speaker_norm=True)
    assert band.speaker_width == 39
    units = builders.build_units_model(band)
    assert sorted(units.input) == ["speaker_mean", "speaker_std", "waveform"]
    assert units.input["speaker_mean"].shape == (None, 39)
    mm = builders.FrontEnd("chang", {"min": -100.0, "max": 20.0}, speaker_norm=True,
                           crop_frames=16)
    assert mm.speaker_keys == ("speaker_min", "speaker_max")
    assert mm.pad_value == pytest.approx(-100.0)  # raw silence: windows come first
    assert mm.for_speaker({"min": -80.0, "max": 20.0}).pad_value == pytest.approx(-1.4)
    with pytest.raises(ValueError, match="one image per utterance"):
        builders.FrontEnd("nitk", {}, speaker_norm=True)


def test_export_has_a_speaker_signature_and_a_fallback_default(speaker_export):
    ex = speaker_export
    loaded = tf.saved_model.load(ex.path)
    assert {"serve", "serving_default", "serve_speaker"} <= set(loaded.signatures)
    default_inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert sorted(default_inputs) == ["waveform"]
    speaker_inputs = loaded.signatures["serve_speaker"].structured_input_signature[1]
    assert sorted(speaker_inputs) == ["speaker_mean", "speaker_std", "waveform"]
    assert speaker_inputs["speaker_mean"].shape.as_list() == [None, 1]
    meta = predict.read_metadata(ex.path)
    assert meta["speaker_inputs"]["keys"] == ["speaker_mean", "speaker_std"]
    assert meta["speaker_inputs"]["fallback"] == {"speaker_mean": -40.0, "speaker_std": 15.0}
    assert meta["front_end"]["speaker_norm"] is True
    wave = ex.waves["a1"]
    fallback = loaded.signatures["serving_default"](waveform=tf.constant(wave[None]))
    np.testing.assert_allclose(fallback["probabilities"].numpy()[0],
                               by_hand(ex, wave, FALLBACK), atol=1e-5)
    stats = ex.own["03"]
    given = loaded.signatures["serve_speaker"](
        waveform=tf.constant(wave[None]), speaker_mean=tf.constant([[stats["mean"]]]),
        speaker_std=tf.constant([[stats["std"]]]))
    mine = by_hand(ex, wave, stats)
    np.testing.assert_allclose(given["probabilities"].numpy()[0], mine, atol=1e-5)
    assert np.abs(mine - by_hand(ex, wave, FALLBACK)).max() > 1e-3  # the inputs matter
    # The same as the fixed front end of that speaker (what the recipes score with).
    fixed = builders.build_serving_model(ex.classifier, ex.front.for_speaker(stats), CLASSES)
    np.testing.assert_allclose(fixed(wave[None])["probabilities"].numpy()[0], mine,
                               atol=1e-5)
    # Two utterances of two speakers in one batch: each row with its own statistics.
    pair = np.stack([ex.waves["a1"][:9000], ex.waves["b1"][:9000]])
    out = loaded.signatures["serve_speaker"](
        waveform=tf.constant(pair), speaker_mean=tf.constant([[-52.0], [-70.0]]),
        speaker_std=tf.constant([[11.0], [9.0]]))["probabilities"].numpy()
    np.testing.assert_allclose(out[1], by_hand(ex, pair[1], {"mean": -70.0, "std": 9.0}),
                               atol=1e-5)


def test_estimated_statistics_pool_every_frame_of_the_speakers_files(speaker_export):
    ex = speaker_export
    waves = [ex.waves["a1"], ex.waves["a2"]]
    got = predict.estimate_speaker_statistics(waves, ex.front)
    frames = np.concatenate([features.compute_features(w[None], ex.front.config).numpy()[0]
                             for w in waves]).astype(np.float64)
    assert got["mean"] == pytest.approx(frames.mean(), abs=1e-4)
    assert got["std"] == pytest.approx(frames.std(), abs=1e-4)
    with pytest.raises(ValueError, match="at least one utterance"):
        predict.estimate_speaker_statistics([], ex.front)


def test_predict_files_with_each_kind_of_speaker_statistics(speaker_export):
    ex = speaker_export
    files = [ex.files["a1"], ex.files["a2"]]
    plain = predict.predict_files(ex.base, files)
    assert "speaker_statistics" not in plain[0]
    np.testing.assert_allclose(list(plain[0]["probabilities"].values()),
                               by_hand(ex, ex.waves["a1"], FALLBACK), atol=1e-5)
    known = predict.predict_files(ex.base, files, speaker="08")
    np.testing.assert_allclose(list(known[1]["probabilities"].values()),
                               by_hand(ex, ex.waves["a2"], ex.own["08"]), atol=1e-5)
    assert known[1]["speaker_statistics"] == {"speaker_mean": [-35.5],
                                              "speaker_std": [18.25]}
    estimated = predict.estimate_speaker_statistics([ex.waves["a1"], ex.waves["a2"]], ex.front)
    same = predict.predict_files(ex.base, files, speaker="files")
    np.testing.assert_allclose(list(same[0]["probabilities"].values()),
                               by_hand(ex, ex.waves["a1"], estimated), atol=1e-5)
    values = predict.predict_files(ex.base, files[:1], speaker={"mean": -52.0, "std": 11.0})
    np.testing.assert_allclose(list(values[0]["probabilities"].values()),
                               by_hand(ex, ex.waves["a1"], ex.own["03"]), atol=1e-5)
    with pytest.raises(ValueError, match=r"no statistics of speaker '99'.*\['03', '08'\]"):
        predict.predict_files(ex.base, files, speaker="99")
    with pytest.raises(ValueError, match="degenerate speaker statistics"):
        predict.predict_files(ex.base, files, speaker={"mean": -40.0, "std": 0.0})
    with pytest.raises(ValueError, match="missing"):
        predict.predict_files(ex.base, files, speaker={"min": -90.0, "max": 0.0})
    with pytest.raises(ValueError, match="needs 1 or 1 values, got 2"):
        predict.predict_files(ex.base, files, speaker={"mean": [1.0, 2.0], "std": 1.0})


def test_global_export_refuses_speaker_statistics(tmp_path):
    keras.utils.set_random_seed(5)
    classifier = crnn.build_crnn("cpu", **TINY_CRNN)
    front = builders.FrontEnd("etienne", FALLBACK, normalise="zscore",
                              feature_overrides={"n_mels": 16})
    model = builders.build_serving_model(classifier, front, CLASSES)
    base = str(tmp_path / "export")
    savedmodel.export_model(model, base, "crnn", class_names=CLASSES, front=front)
    wav = write_tone(str(tmp_path / "t.wav"), seconds=0.5, freq=200.0, seed=0)
    assert "speaker_inputs" not in predict.read_metadata(base)
    with pytest.raises(ValueError, match="trained with global normalisation"):
        predict.predict_files(base, [wav], speaker="files")


def test_cli_speaker_options(speaker_export):
    ex = speaker_export
    run = [sys.executable, "-m", "keras_ser.cli", "predict", ex.base, ex.files["a1"],
           ex.files["a2"], "--json"]
    same = subprocess.run([*run, "--same-speaker"], capture_output=True, text=True,
                          timeout=300)
    assert same.returncode == 0, same.stderr
    first = json.loads(same.stdout.splitlines()[0])
    estimated = predict.estimate_speaker_statistics([ex.waves["a1"], ex.waves["a2"]], ex.front)
    assert first["speaker_statistics"]["speaker_mean"][0] == pytest.approx(
        estimated["mean"], abs=1e-4)
    numbers = subprocess.run([*run, "--speaker-stats=-52,11"], capture_output=True,
                             text=True, timeout=300)
    assert numbers.returncode == 0, numbers.stderr
    np.testing.assert_allclose(list(json.loads(numbers.stdout.splitlines()[0])[
                                   "probabilities"].values()),
                               by_hand(ex, ex.waves["a1"], ex.own["03"]), atol=1e-5)
    bad = subprocess.run([*run, "--speaker-stats=-52"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "--speaker-stats takes two numbers" in bad.stderr


def test_windowed_per_speaker_model_equals_each_speakers_fixed_front_end(speaker_export):
    """A crop classifier (min-max, as the GAN recipes): windows are cut before the
    speaker's normalisation and padded with raw silence, which gives exactly what the
    speaker's fixed front end (windows padded with the normalised silence) gives, short
    utterances included."""
    ex = speaker_export
    classifier = tiny_crop_classifier(16, 128, len(CLASSES), filters=4)
    front = builders.FrontEnd("chang", {"min": -100.0, "max": 30.0}, crop_frames=16,
                              hop_frames=8, clip=True, speaker_norm=True)
    assert front.pad_value == pytest.approx(-100.0)
    model = builders.build_serving_model(classifier, front, CLASSES)
    for key, stats in (("a1", {"min": -90.0, "max": 12.0}), ("b1", {"min": -60.0, "max": 5.0})):
        for wave in (ex.waves[key], ex.waves[key][:4000]):  # 4000 samples: < one crop
            got = model({"waveform": wave[None], "speaker_min": np.array([[stats["min"]]]),
                         "speaker_max": np.array([[stats["max"]]])})["probabilities"]
            fixed = builders.build_serving_model(classifier, front.for_speaker(stats), CLASSES)
            np.testing.assert_allclose(got.numpy(), fixed(wave[None])["probabilities"].numpy(),
                                       atol=1e-5)


def test_rest_body_for_the_speaker_signature(speaker_export):
    from keras_ser.serving import rest

    ex = speaker_export
    meta = predict.read_metadata(ex.path)
    wave = ex.waves["a1"]
    body = json.dumps({"signature_name": "serve_speaker", "instances": [
        {"waveform": wave.tolist(), "speaker_mean": [-52.0], "speaker_std": [11.0]}]})
    inputs = rest.rest_speaker_inputs(body, meta)
    out = tf.saved_model.load(ex.path).signatures["serve_speaker"](**inputs)
    np.testing.assert_allclose(out["probabilities"].numpy()[0], by_hand(ex, wave, ex.own["03"]),
                               atol=1e-5)
    with pytest.raises(ValueError, match="rest_speaker_inputs"):
        rest.rest_instances(json.loads(body))  # the waveform helper never drops them
    with pytest.raises(ValueError, match=r"missing \['speaker_std'\]"):
        rest.rest_speaker_inputs({"instances": [{"waveform": [0.0] * 2000,
                                                 "speaker_mean": [1.0]}]}, meta)
    with pytest.raises(ValueError, match="degenerate"):
        rest.rest_speaker_inputs({"instances": [{"waveform": [0.0] * 2000, "speaker_mean": [1.0],
                                                 "speaker_std": [-1.0]}]}, meta)
    with pytest.raises(ValueError, match="needs 1 value"):
        rest.rest_speaker_inputs({"instances": [{"waveform": [0.0] * 2000,
                                                 "speaker_mean": [1.0, 2.0],
                                                 "speaker_std": [1.0, 1.0]}]}, meta)
    with pytest.raises(ValueError, match="takes no speaker statistics"):
        rest.rest_speaker_inputs(body, {"front_end": {}})
