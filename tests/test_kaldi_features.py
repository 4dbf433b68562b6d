"""The Kaldi front end of the ``tu`` preset against kaldi-native-fbank and Kaldi's rules.

Tu et al., ICASSP 2019, Sec. 3.1: 13 MFCCs + Δ + ΔΔ extracted with Kaldi, energy VAD.
kaldi-native-fbank (test-only dependency) is a C++ port of Kaldi's ``compute-mfcc-feats``.
"""

import json

import kaldi_native_fbank as knf
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import features as F

SR = 16000
# Measured max |ours - kaldi-native-fbank| over all frames and the 13 coefficients, float32:
# EmoDB 03a01Fa.wav 1.6e-4 (C0 0.0, c1..c12 6e-5..1.6e-4); the synthetic signal 9e-5.
# The bound leaves room for other FFT/BLAS rounding on other machines.
MFCC_TOLERANCE = 1e-3


def _knf_mfcc(wave):
    """Kaldi's MFCCs (compute-mfcc-feats defaults, dither 0) of float samples in [-1, 1]."""
    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = SR
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.num_bins = 23
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.num_ceps = 13
    opts.use_energy = True
    opts.raw_energy = True
    opts.energy_floor = 0.0
    opts.cepstral_lifter = 22.0
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(SR, (np.asarray(wave, np.float64) * 32768.0).tolist())
    mfcc.input_finished()
    return np.array([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)],
                    np.float32).reshape(-1, 13)


def _synthetic():
    """0.2 s digital silence, then a 440 Hz tone with a chirp and noise (1.2 s in all)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(1.0 * SR)) / SR
    voiced = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * (200 + 3000 * t) * t)
              + 0.02 * rng.standard_normal(t.size))
    return np.concatenate([np.zeros(int(0.2 * SR)), voiced]).astype(np.float32)


def _check_against_knf(wave):
    cfg = F.get_preset("tu")
    ref = _knf_mfcc(wave)
    ours = F.kaldi_mfcc(wave[np.newaxis], cfg).numpy()[0]
    assert ours.shape == ref.shape == (cfg.num_frames(len(wave)), 13)
    diff = np.abs(ours - ref)
    assert diff.max() < MFCC_TOLERANCE, diff.max(axis=0)
    return ours, ref


@pytest.mark.real_data
def test_tu_mfccs_equal_kaldi_native_fbank_on_emodb(emodb_speech):
    ours, ref = _check_against_knf(emodb_speech)
    assert len(ours) == 188
    # C0 is the log energy of int16-scaled samples: tens, not a dB or [-1, 1] value.
    assert 10.0 < ref[:, 0].max() < 30.0
    full = F.compute_features(emodb_speech[np.newaxis], "tu").numpy()[0]
    assert full.shape == (188, 39)
    assert np.abs(full[:, :13] - ref).max() < MFCC_TOLERANCE


def test_tu_mfccs_equal_kaldi_native_fbank_on_a_synthetic_signal():
    wave = _synthetic()
    ours, ref = _check_against_knf(wave)
    # The first frames are digital silence: C0 is ln(FLT_EPSILON), as in Kaldi.
    assert ref[0, 0] == pytest.approx(np.log(np.finfo(np.float32).eps))
    assert ours[0, 0] == pytest.approx(ref[0, 0])


@pytest.mark.parametrize("samples", [399, 400, 559, 560, 561, 16000])
def test_frame_count_is_kaldis_snip_edges_count(samples):
    wave = _synthetic()[-samples:]
    expected = 0 if samples < 400 else 1 + (samples - 400) // 160
    assert len(_knf_mfcc(wave)) == expected == F.get_preset("tu").num_frames(samples)
    out = F.compute_features(wave[np.newaxis], "tu")
    assert out.shape == (1, expected, 39)


def test_kaldi_constants():
    cfg = F.get_preset("tu")
    assert cfg.feature_dim == 39 and cfg.window_samples == 400 and cfg.fft_size == 512
    window = F.povey_window(400)
    assert window[0] == 0.0 and window[-1] == pytest.approx(0.0, abs=1e-12)
    assert window[100] == pytest.approx((0.5 - 0.5 * np.cos(2 * np.pi * 100 / 399)) ** 0.85)
    mel = F.kaldi_mel_weights(cfg)
    assert mel.shape == (257, 23)
    assert not mel[256].any()  # the Nyquist bin
    assert not mel[0].any()  # 0 Hz is below low_freq = 20 Hz
    # Bin 1 (31.25 Hz) rises in the first triangle, linearly in Kaldi's mel scale.
    mel_of = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
    step = (mel_of(8000.0) - mel_of(20.0)) / 24
    assert mel[1, 0] == pytest.approx((mel_of(31.25) - mel_of(20.0)) / step, rel=1e-5)
    assert not mel[1, 1:].any()
    centre = np.argmax(mel[:, 10])  # peak 1 at the centre, falls to the right edge
    assert mel[centre, 10] <= 1.0 and np.all(np.diff(mel[centre:, 10])[:3] < 0)
    dct = F.kaldi_dct_matrix(23, 13)
    assert np.allclose(dct[:, 0], np.sqrt(1 / 23))
    assert np.allclose(dct[5, 3], np.sqrt(2 / 23) * np.cos(np.pi * 3 * 5.5 / 23))
    lifted = F.kaldi_dct_matrix(23, 13, 22.0)
    assert np.allclose(lifted[:, 4] / dct[:, 4], 1 + 11 * np.sin(np.pi * 4 / 22))


def test_kaldi_delta_filters_are_the_self_convolved_regression():
    first, second = F.kaldi_delta_filters(2, 2)[1:]
    np.testing.assert_allclose(first, np.array([-2, -1, 0, 1, 2]) / 10)
    np.testing.assert_allclose(second, np.array([4, 4, 1, -4, -10, -4, 1, 4, 4]) / 100)
    with pytest.raises(ValueError, match="window >= 1"):
        F.kaldi_delta_filters(2, 0)


def _deltas_by_hand(x):
    """Kaldi's add-deltas with its literal filters, one frame and tap at a time."""
    frames = len(x)
    d1 = np.zeros_like(x)
    d2 = np.zeros_like(x)
    taps2 = [4, 4, 1, -4, -10, -4, 1, 4, 4]
    for t in range(frames):
        for j in range(-2, 3):
            d1[t] += j / 10 * x[min(max(t + j, 0), frames - 1)]
        for j in range(-4, 5):
            d2[t] += taps2[j + 4] / 100 * x[min(max(t + j, 0), frames - 1)]
    return np.concatenate([x, d1, d2], axis=1)


@pytest.mark.parametrize("frames", [1, 3, 12])
def test_kaldi_deltas_equal_the_formula_by_hand_with_clamped_edges(frames):
    x = np.random.default_rng(frames).normal(size=(2, frames, 3)).astype(np.float32)
    ours = F.kaldi_deltas(x).numpy()
    assert ours.shape == (2, frames, 9)
    for b in range(2):
        np.testing.assert_allclose(ours[b], _deltas_by_hand(x[b]), atol=1e-5)


def test_kaldi_delta_delta_is_not_the_delta_of_the_delta_at_the_edges():
    x = np.random.default_rng(1).normal(size=(1, 12, 2)).astype(np.float32)
    ours = F.kaldi_deltas(x).numpy()[0, :, 4:]
    nested = F.deltas(F.deltas(tf.constant(x))).numpy()[0]
    assert np.abs(ours[4:-4] - nested[4:-4]).max() < 1e-5
    assert np.abs(ours[:2] - nested[:2]).max() > 1e-2


def test_kaldi_deltas_run_with_unknown_shapes():
    fn = tf.function(F.kaldi_deltas, input_signature=[tf.TensorSpec([None, None, 13])])
    assert fn(tf.zeros([2, 7, 13])).shape == (2, 7, 39)
    assert fn(tf.zeros([1, 0, 13])).shape == (1, 0, 39)


def _vad_by_hand(energy, context=0, threshold=5.0, scale=0.5, proportion=0.6):
    """compute-vad: the rule of ComputeVadEnergy, products in float32 as in Kaldi."""
    frames = len(energy)
    limit = threshold + scale * float(np.mean(energy))
    voiced = np.zeros(frames, bool)
    for t in range(frames):
        window = [energy[u] for u in range(t - context, t + context + 1) if 0 <= u < frames]
        num = sum(e > limit for e in window)
        voiced[t] = num >= np.float32(len(window)) * np.float32(proportion)
    return voiced


ENERGY = np.array([0, 10, 10, 0, 10, 0, 0, 10, 10, 10], np.float32)  # threshold 7.5


def test_kaldi_vad_equals_the_rule_by_hand():
    no_context = F.kaldi_vad(ENERGY[np.newaxis]).numpy()[0]
    np.testing.assert_array_equal(no_context, ENERGY > 7.5)
    np.testing.assert_array_equal(no_context, _vad_by_hand(ENERGY))
    context = F.kaldi_vad(ENERGY[np.newaxis], frames_context=2).numpy()[0]
    # Frame 2 sees 3 of 5 frames above: 3 >= 5 * 0.6f (== 3.0f in float32) is voiced.
    np.testing.assert_array_equal(context, [1, 0, 1, 1, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(context, _vad_by_hand(ENERGY, context=2))
    # threshold 6 + 0.25 * 5 = 7.25; 1 of 3 frames is under half, 1 of 2 is not.
    other = F.kaldi_vad(ENERGY[np.newaxis], energy_threshold=6.0, energy_mean_scale=0.25,
                        frames_context=1, proportion_threshold=0.5).numpy()[0]
    np.testing.assert_array_equal(other, [1, 1, 1, 1, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(other, _vad_by_hand(ENERGY, 1, 6.0, 0.25, 0.5))
    # The mean term counts: scale 1.2 lifts the threshold to 6 + 1.2 * 5 = 12 > max.
    assert not F.kaldi_vad(ENERGY[np.newaxis], energy_threshold=6.0,
                           energy_mean_scale=1.2).numpy().any()


def test_kaldi_vad_uses_only_the_valid_frames():
    short = ENERGY[:6]
    batch = np.stack([ENERGY, np.concatenate([short, np.full(4, 1000.0, np.float32)])])
    for context in (0, 2):
        fn = tf.function(lambda e, n, c=context: F.kaldi_vad(e, n, frames_context=c),
                         input_signature=[tf.TensorSpec([None, None]),
                                          tf.TensorSpec([None], tf.int32)])
        out = fn(tf.constant(batch), tf.constant([10, 6])).numpy()
        np.testing.assert_array_equal(out[0], _vad_by_hand(ENERGY, context))
        np.testing.assert_array_equal(out[1, :6], _vad_by_hand(short, context))
        assert not out[1, 6:].any()


def test_kaldi_vad_rejects_kaldis_forbidden_options():
    with pytest.raises(ValueError, match="proportion_threshold"):
        F.kaldi_vad(ENERGY[np.newaxis], proportion_threshold=1.0)
    with pytest.raises(ValueError, match="frames_context"):
        F.kaldi_vad(ENERGY[np.newaxis], frames_context=-1)


def test_kaldi_vad_keeps_the_tone_and_drops_the_quiet_noise_around_it():
    rng = np.random.default_rng(3)
    t = np.arange(SR // 2) / SR
    noise = lambda: (5e-4 * rng.standard_normal(SR // 2)).astype(np.float32)
    wave = np.concatenate([noise(), (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
                           noise()])
    cfg = F.get_preset("tu")
    c0 = F.compute_features(wave[np.newaxis], cfg)[..., 0]
    mask = F.kaldi_vad(c0).numpy()[0]
    np.testing.assert_array_equal(mask, _vad_by_hand(c0.numpy()[0]))
    start = np.arange(len(mask)) * cfg.hop_samples
    end = start + cfg.window_samples
    in_tone = (start >= SR // 2) & (end <= SR)
    in_noise = (end <= SR // 2) | (start >= SR)
    assert mask[in_tone].all() and in_tone.sum() == 48
    assert not mask[in_noise].any() and in_noise.sum() == 96
    # Kaldi's decision on kaldi-native-fbank's C0 is the same.
    np.testing.assert_array_equal(mask, _vad_by_hand(_knf_mfcc(wave)[:, 0]))


@pytest.mark.real_data
def test_kaldi_vad_on_emodb_equals_the_rule_on_kaldis_c0(emodb_speech):
    c0 = F.compute_features(emodb_speech[np.newaxis], "tu")[..., 0]
    mask = F.kaldi_vad(c0).numpy()[0]
    np.testing.assert_array_equal(mask, _vad_by_hand(_knf_mfcc(emodb_speech)[:, 0]))
    assert 0.2 < mask.mean() < 0.95  # leading/trailing silence dropped, speech kept


def test_audio_features_layer_computes_the_tu_features_and_round_trips():
    wave = _synthetic()[np.newaxis, :8000]
    layer = F.AudioFeatures("tu")
    assert layer.compute_output_shape((None, 8000)) == (None, 48, 39)
    out = layer(tf.constant(wave)).numpy()
    assert out.shape == (1, 48, 39)
    np.testing.assert_allclose(out, F.compute_features(wave, "tu").numpy())
    restored = F.AudioFeatures.from_config(json.loads(json.dumps(layer.get_config())))
    assert restored.config == layer.config and restored.config.kaldi
    np.testing.assert_allclose(restored(tf.constant(wave)).numpy(), out)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None])])
    assert fn(tf.zeros([2, 1600])).shape == (2, 8, 39)


@pytest.mark.parametrize("fields, message", [
    ({"kaldi": True, "n_mfcc": 0}, "0 < n_mfcc <= n_mels"),
    ({"kaldi": True, "n_mfcc": 24, "n_mels": 23}, "0 < n_mfcc <= n_mels"),
    ({"kaldi": True, "n_mfcc": 13, "n_mels": 23, "window_ms": 25, "n_fft": 1024},
     "round-to-power-of-two"),
    ({"kaldi": True, "n_mfcc": 13, "n_mels": 23, "window_ms": 25, "center": True},
     "center"),
    ({"kaldi": True, "n_mfcc": 13, "n_mels": 23, "window_ms": 25, "preemphasis": 1.5},
     "preemphasis"),
    ({"kaldi": True, "n_mfcc": 13, "n_mels": 23, "window_ms": 25, "cepstral_lifter": -1.0},
     "cepstral_lifter"),
    ({"vad": True, "n_mfcc": 13}, "vad=True needs kaldi=True"),
])
def test_config_rejects_inconsistent_kaldi_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        F.FeatureConfig(**fields)


def test_kaldi_configs_refuse_vtlp_and_log_mel_statistics(tmp_path):
    cfg = F.get_preset("tu")
    with pytest.raises(ValueError, match="VTLP"):
        F.compute_features(tf.zeros([1, 800]), cfg, tf.constant([1.1]))
    with pytest.raises(ValueError, match="MFCC"):
        cfg.logmel_params()
    with pytest.raises(ValueError, match="kaldi=True"):
        F.kaldi_mfcc(tf.zeros([1, 800]), "eskimez")
    stats = {"logmel": {"params": F.get_preset("eskimez").logmel_params(), "min": 0.0,
                        "max": 1.0, "mean": 0.5, "std": 0.1}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="not a plain log-mel"):
        F.load_feature_stats(str(tmp_path), cfg)
