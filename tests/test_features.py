"""Graph features against librosa, VTLP against eq. 1, the Keras layer's contract."""


import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import augment
from keras_ser import features as F

SR = 16000


def _librosa_log_mel(y, cfg):
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.fft_size, hop_length=cfg.hop_samples,
        win_length=cfg.window_samples, center=cfg.center, n_mels=cfg.n_mels,
        fmin=cfg.fmin_hz, fmax=cfg.upper_hz, htk=cfg.mel_scale == "htk",
        norm="slaney" if cfg.mel_scale == "slaney" else None)
    return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None).T


@pytest.mark.real_data
@pytest.mark.parametrize("preset", ["eskimez", "chang", "etienne", "etienne_8k"])
def test_log_mel_matches_librosa_within_a_hundredth_of_a_db(emodb_speech, preset):
    cfg = F.get_preset(preset)
    ours = F.log_mel_spectrogram(emodb_speech[np.newaxis], cfg).numpy()[0]
    ref = _librosa_log_mel(emodb_speech, cfg)
    assert ours.shape == ref.shape == (cfg.num_frames(len(emodb_speech)), cfg.n_mels)
    assert np.abs(ours - ref).max() < 0.01


@pytest.mark.real_data
def test_htk_scale_and_centred_frames_match_librosa(emodb_speech):
    cfg = F.FeatureConfig(window_ms=25, hop_ms=10, n_fft=512, n_mels=40, mel_scale="htk",
                          center=True, fmin_hz=20.0)
    ours = F.log_mel_spectrogram(emodb_speech, cfg).numpy()
    ref = _librosa_log_mel(emodb_speech, cfg)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 0.01


# The librosa-style MFCC path (kaldi=False): the old ``tu`` front end, kept as a config.
LIBROSA_MFCC = F.FeatureConfig(window_ms=25.0, hop_ms=10.0, n_fft=512, n_mels=40,
                               fmin_hz=20.0, mel_scale="htk", n_mfcc=13, deltas=2)


@pytest.mark.real_data
def test_librosa_style_mfcc_with_deltas_matches_librosa(emodb_speech):
    cfg = LIBROSA_MFCC
    ours = F.compute_features(emodb_speech[np.newaxis], cfg).numpy()[0]
    assert ours.shape[1] == 39
    # librosa centres a 400-sample window in a 512-sample frame: our frame k equals its
    # frame k once the signal is advanced by the 56 samples of padding before the window.
    offset = (cfg.fft_size - cfg.window_samples) // 2
    ref_cfg = cfg.replace(n_mfcc=0, deltas=0)
    db = _librosa_log_mel(emodb_speech, ref_cfg).T
    ours = F.compute_features(emodb_speech[np.newaxis, offset:], cfg).numpy()[0]
    mfcc = librosa.feature.mfcc(S=db, n_mfcc=13)
    d1 = librosa.feature.delta(mfcc, width=5, mode="nearest")
    d2 = librosa.feature.delta(d1, width=5, mode="nearest")
    ref = np.concatenate([mfcc, d1, d2]).T
    assert len(ours) == len(ref) == 187
    frames = len(ref)
    # Deltas at the last frame see a different neighbour; compare the inner frames.
    assert np.abs(ours[:frames - 2] - ref[:frames - 2]).max() < 0.01 * np.abs(ref).max()


def test_deltas_equal_the_regression_formula_by_hand():
    x = tf.constant([[[0.0], [1.0], [4.0], [9.0], [16.0]]])
    d = F.deltas(x).numpy()[0, :, 0]
    # frame 2: (1*(9-1) + 2*(16-0)) / 10 = 4.0; frame 0 edges repeat: (1*(1-0)+2*(4-0))/10
    assert d[2] == pytest.approx(4.0)
    assert d[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="odd"):
        F.deltas(x, width=4)


def test_vtlp_warp_follows_eq1_in_both_pieces():
    fmax = 8000.0
    assert augment.vtlp_warp(1000.0, 1.1, fmax) == pytest.approx(1100.0)
    assert augment.vtlp_warp(1000.0, 0.9, fmax) == pytest.approx(900.0)
    # above f0 = 7200 Hz: the line from (7200, 7920) to (8000, 8000)
    assert augment.vtlp_warp(7500.0, 1.1, fmax) == pytest.approx(7920 + 80 * 300 / 800)
    assert augment.vtlp_warp(fmax, 1.1, fmax) == pytest.approx(fmax)
    assert augment.vtlp_warp(7200.0, 1.1, fmax) == pytest.approx(7920.0)
    f = np.linspace(0, fmax, 101)
    assert np.allclose(augment.vtlp_warp(f, 1.0, fmax), f)


def _tone(freq, seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("freq", [1000.0, 2500.0])
def test_vtlp_moves_a_pure_tone_peak_by_the_factor_of_eq1(freq):
    cfg = F.FeatureConfig(window_ms=64, hop_ms=32, n_fft=1024, n_mels=128)
    centres = F.mel_band_edges(cfg)[1:-1]
    spacing = np.diff(centres)
    peaks = {}
    for alpha in (1.0, 1.1, 0.9):
        mel = F.log_mel_spectrogram(_tone(freq)[np.newaxis], cfg, tf.constant([alpha]))
        band = int(np.argmax(mel.numpy()[0].mean(axis=0)))
        peaks[alpha] = centres[band]
        target = augment.vtlp_warp(freq, alpha, SR / 2)
        assert abs(centres[band] - target) <= spacing[min(band, len(spacing) - 1)]
    assert peaks[1.1] / peaks[1.0] == pytest.approx(1.1, abs=0.04)
    assert peaks[0.9] / peaks[1.0] == pytest.approx(0.9, abs=0.04)


def test_vtlp_filterbank_reads_each_bin_at_its_warped_frequency():
    cfg = F.get_preset("eskimez")
    edges = F.mel_band_edges(cfg)
    bins = np.arange(cfg.num_bins) * SR / cfg.fft_size
    warped = augment.vtlp_filterbank(edges, bins, 1.1, SR / 2).numpy()[0]
    plain_at_g = augment.vtlp_filterbank(
        edges, augment.vtlp_warp(bins, 1.1, SR / 2), 1.0, SR / 2).numpy()[0]
    assert np.allclose(warped, plain_at_g, atol=1e-6)
    assert np.abs(augment.vtlp_filterbank(edges, bins, 1.0, SR / 2).numpy()[0]
                  - F.mel_weights(cfg)).max() < 1e-6


def test_vtlp_with_alpha_one_is_the_identity():
    x = tf.random.stateless_normal([3, 8000], seed=[1, 2]) * 0.1
    cfg = F.get_preset("eskimez")
    plain = F.log_mel_spectrogram(x, cfg).numpy()
    warped = F.log_mel_spectrogram(x, cfg, tf.ones([3])).numpy()
    assert np.abs(plain - warped).max() < 1e-3


def test_per_example_alphas_warp_each_example_separately():
    x = tf.stack([_tone(1000.0), _tone(1000.0)])
    cfg = F.FeatureConfig(window_ms=64, hop_ms=32, n_fft=1024)
    both = F.log_mel_spectrogram(x, cfg, tf.constant([1.0, 1.1])).numpy()
    first = F.log_mel_spectrogram(x[:1], cfg).numpy()[0]
    second = F.log_mel_spectrogram(x[1:], cfg, tf.constant([1.1])).numpy()[0]
    assert np.abs(both[0] - first).max() < 1e-3
    assert np.abs(both[1] - second).max() < 1e-3
    assert np.abs(both[0] - both[1]).max() > 10.0


def test_nitk_preset_gives_three_channel_224_images_in_0_255():
    image = F.compute_features(tf.constant(_tone(440.0)[np.newaxis]), "nitk").numpy()
    assert image.shape == (1, 224, 224, 3)
    assert image.min() == pytest.approx(0.0, abs=1e-3)
    assert image.max() == pytest.approx(255.0, abs=1e-3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_audio_features_layer_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input(shape=(16000,), name="waveform")
    layer = F.AudioFeatures("etienne", n_mels=64, vtlp_range=(0.9, 1.1), seed=3)
    assert layer.compute_output_shape((None, 16000)) == (None, 30, 64)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(layer(inputs)))
    x = np.stack([_tone(500.0), _tone(700.0)])
    before = model.predict(x, verbose=0)
    path = str(tmp_path / "features.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert np.allclose(loaded.predict(x, verbose=0), before, atol=1e-4)
    restored = loaded.layers[1]
    assert restored.config == layer.config and restored.vtlp_range == (0.9, 1.1)
    trained = layer(tf.constant(x), training=True).numpy()
    inferred = layer(tf.constant(x), training=False).numpy()
    assert np.abs(trained - inferred).max() > 0.1


def test_config_rejects_impossible_parameters():
    with pytest.raises(ValueError, match="exceeds n_fft"):
        F.FeatureConfig(window_ms=64, n_fft=512)
    with pytest.raises(ValueError, match="fmax"):
        F.FeatureConfig(fmax_hz=9000.0)
    with pytest.raises(KeyError, match="known: eskimez"):
        F.get_preset("nope")


def test_minmax_maps_corpus_extremes_to_minus_one_and_one():
    x = tf.constant([-100.0, -36.0, 28.0])
    assert np.allclose(F.minmax_to_unit(x, -100.0, 28.0).numpy(), [-1.0, 0.0, 1.0])
    assert np.allclose(F.zscore(x, -36.0, 64.0).numpy(), [-1.0, 0.0, 1.0])


@pytest.mark.real_data
def test_stats_json_refuses_features_with_other_parameters(emodb_records):
    out, _ = emodb_records
    stats = F.load_feature_stats(out, "eskimez")
    assert stats["band_mean"].shape == (128,)
    # The corpus-wide values pool the bands (each band has every frame); the minimum is
    # the floor of silence, 10 log10(amin) = -100 dB.
    assert stats["min"] == pytest.approx(stats["band_min"].min()) == pytest.approx(-100.0)
    assert stats["max"] == pytest.approx(stats["band_max"].max())
    assert stats["mean"] == pytest.approx(stats["band_mean"].mean(), rel=1e-6)
    pooled_var = np.mean(stats["band_std"].astype(float) ** 2 + stats["band_mean"] ** 2) \
        - stats["band_mean"].astype(float).mean() ** 2
    assert stats["std"] == pytest.approx(np.sqrt(pooled_var), rel=1e-5)
    with pytest.raises(ValueError, match="window_samples"):
        F.load_feature_stats(out, "etienne")
