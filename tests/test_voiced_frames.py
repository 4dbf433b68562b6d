"""The voiced-frame front end of Tu et al. (Kaldi VAD, select-voiced-frames), by hand."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ser import features
from keras_ser.serving import builders, layers


def _features(c0_rows, dim=3):
    """Features whose column 0 is the given log energies and column 1 the frame index."""
    c0 = np.asarray(c0_rows, np.float32)
    x = np.zeros(c0.shape + (dim,), np.float32)
    x[..., 0] = c0
    x[..., 1] = np.arange(c0.shape[1])[None]
    x[..., 2] = 7.0
    return x


def test_voiced_frames_keeps_kaldis_voiced_frames_in_order_and_zeroes_the_rest():
    # Row 0: threshold 5 + 0.5 * mean(C0) = 5 + 0.5 * 12 = 11: frames 1, 3 and 4 voiced.
    # Row 1: threshold 5 + 0.5 * 14 = 12: frames 0 and 4 voiced.
    x = _features([[2.0, 16.0, 4.0, 20.0, 18.0], [20.0, 10.0, 10.0, 10.0, 20.0]])
    out, length = layers.VoicedFrames()(tf.constant(x))
    assert length.numpy().tolist() == [3, 2]
    assert out.shape == (2, 3, 3)
    assert out.numpy()[0, :, 1].tolist() == [1.0, 3.0, 4.0]
    assert out.numpy()[1, :2, 1].tolist() == [0.0, 4.0]
    assert np.all(out.numpy()[1, 2] == 0.0)
    expected = features.kaldi_vad(tf.constant(x[..., 0])).numpy()
    assert expected.sum(axis=1).tolist() == [3, 2]


def test_an_utterance_without_voiced_frames_keeps_them_all():
    x = _features([[1.0, 1.0, 1.0, 1.0]])  # threshold 5.5 > every C0
    out, length = layers.VoicedFrames()(tf.constant(x))
    assert length.numpy().tolist() == [4]
    np.testing.assert_array_equal(out.numpy(), x)


def test_voiced_frames_config_round_trip():
    layer = layers.VoicedFrames(energy_threshold=4.0, frames_context=2, name="v")
    again = layers.VoicedFrames.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert again.options["frames_context"] == 2 and again.options["energy_threshold"] == 4.0


def test_front_end_of_a_vad_preset_outputs_features_and_lengths():
    front = builders.FrontEnd("tu", {"mean": 0.0, "std": 1.0}, normalise="zscore")
    units = builders.build_units_model(front)
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)
    wave = np.concatenate([np.zeros(8000), tone, np.zeros(8000)]).astype(np.float32)
    wave += 1e-4 * rng.standard_normal(len(wave)).astype(np.float32)
    out = units(wave[None])
    all_frames = features.compute_features(wave[None], "tu").numpy()
    voiced = features.kaldi_vad(tf.constant(all_frames[..., 0])).numpy()[0]
    assert int(out["length"][0]) == voiced.sum() < len(voiced)
    np.testing.assert_allclose(out["features"].numpy()[0], all_frames[0][voiced], atol=1e-5)
    with pytest.raises(ValueError, match="voiced frames only"):
        builders.FrontEnd("tu", {"mean": 0.0, "std": 1.0}, normalise="zscore", crop_frames=50)
