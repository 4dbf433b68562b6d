"""`keras_ser.scoring.Scorer` gives the exported SavedModel's outputs, utterance by utterance."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import augment, features
from keras_ser.models import crnn
from keras_ser.scoring import Scorer
from keras_ser.serving import builders, layers, predict, savedmodel

CLASSES = ["anger", "happiness", "sadness"]
CROP, HOP, MELS = 8, 3, 16
#: 4, 16 and 26 frames (64 ms window, 32 ms hop): one padded window, a tail window,
#: windows ending on the last frame. Few lengths: VTLP features compile once per length.
LENGTHS = (3000, 9000, 14000)
WINDOWS = [1, 4, 7]  # windows of crop 8, hop 3 per utterance, by hand
ZSCORE = {"mean": -40.0, "std": 15.0}
#: Tiny CRNN: 16 mels, 2 blocks (time stride 2), 5 LSTM units.
TINY_CRNN = {"n_mels": MELS, "num_classes": len(CLASSES), "conv_filters": (4, 4),
             "conv_strides": ((2, 2), (1, 2)), "lstm_units": 5}


def utterance(samples, freq, seed):
    """A noisy harmonic tone with a rising envelope, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 4))
    return (0.2 * np.linspace(0.2, 1.0, samples) * tone +
            0.01 * rng.standard_normal(samples)).astype(np.float32)


@pytest.fixture(scope="module")
def waves():
    return [utterance(n, f, seed) for seed, (n, f) in
            enumerate(zip(LENGTHS, (150.0, 210.0, 270.0)))]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tmp_path_factory.mktemp("scoring") / "export")


def export(classifier, front, base, name):
    model = builders.build_serving_model(classifier, front, CLASSES)
    path = savedmodel.export_model(model, base, name, class_names=CLASSES, front=front)
    return SimpleNamespace(classifier=classifier, front=front, exported=predict.load(path))


def exported_outputs(case, waves):
    """The SavedModel's outputs of each utterance alone (they differ in length)."""
    outs = [case.exported(waveform=tf.constant(w[np.newaxis])) for w in waves]
    return {key: np.concatenate([o[key].numpy() for o in outs]) for key in outs[0]}


@pytest.fixture(scope="module")
def windowed(base):
    """A crop classifier behind a clipped min-max front end, averaging its windows."""
    inputs = keras.Input(shape=(CROP, MELS))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(
                                     stddev=0.5, seed=4))(x)
    front = builders.FrontEnd("chang", {"min": -90.0, "max": 10.0}, clip=True,
                              crop_frames=CROP, hop_frames=HOP,
                              feature_overrides={"n_mels": MELS})
    return export(keras.Model(inputs, outputs), front, base, "crop")


@pytest.fixture(scope="module")
def tiny_crnn():
    keras.utils.set_random_seed(4)  # copies of some utterances vote differently
    return crnn.build_crnn("cpu", **TINY_CRNN)


@pytest.fixture(scope="module")
def whole(tiny_crnn, base):
    """The CRNN on whole z-scored utterances."""
    front = builders.FrontEnd("etienne", ZSCORE, normalise="zscore",
                              feature_overrides={"n_mels": MELS})
    return export(tiny_crnn, front, base, "crnn")


@pytest.fixture(scope="module")
def vote(tiny_crnn, base):
    """The same CRNN on the eleven VTLP copies, voting."""
    front = builders.FrontEnd("etienne", ZSCORE, normalise="zscore",
                              warps=augment.VTLP_TTA_ALPHAS, aggregate="vote",
                              feature_overrides={"n_mels": MELS})
    return export(tiny_crnn, front, base, "crnn_vote")


def test_windowed_scores_equal_the_exported_model(windowed, waves):
    expected = exported_outputs(windowed, waves)
    assert list(expected) == ["probabilities"]
    # 5 windows per call: calls mix utterances and split them
    scorer = Scorer(windowed.classifier, windowed.front, batch_size=5)
    units = scorer.prepare(waves)
    np.testing.assert_array_equal(np.bincount(units.owner), WINDOWS)
    assert {a.shape for a in units.arrays} == {(CROP, MELS)}
    scores = scorer(units)
    np.testing.assert_allclose(scores.probabilities, expected["probabilities"], atol=1e-5)
    assert scores.votes is None
    np.testing.assert_array_equal(scores.predicted, expected["probabilities"].argmax(axis=1))
    assert np.ptp(expected["probabilities"]) > 0.1  # uneven enough to tell rows apart
    at_once = Scorer(windowed.classifier, windowed.front).score(waves)
    np.testing.assert_allclose(at_once.probabilities, scores.probabilities, atol=1e-6)


def test_scorer_reads_int16_pcm_at_full_scale_32768(windowed, waves):
    pcm = [np.round(w * 32767).astype(np.int16) for w in waves]
    scorer = Scorer(windowed.classifier, windowed.front)
    from_pcm = scorer.score(pcm)
    from_float = scorer.score([p.astype(np.float32) / 32768.0 for p in pcm])
    np.testing.assert_array_equal(from_pcm.probabilities, from_float.probabilities)


def test_whole_utterance_crnn_scores_equal_the_exported_model(whole, waves):
    expected = exported_outputs(whole, waves)
    scores = Scorer(whole.classifier, whole.front).score(waves)
    np.testing.assert_allclose(scores.probabilities, expected["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(scores.predicted, expected["probabilities"].argmax(axis=1))
    assert scores.votes is None


def test_utterances_of_different_lengths_in_one_padded_batch_score_as_one_at_a_time(
        whole, waves):
    scorer = Scorer(whole.classifier, whole.front)
    units = scorer.prepare(waves)
    assert [a.shape for a in units.arrays] == [(n, MELS) for n in (4, 16, 26)]
    together = scorer(units).probabilities  # one batch, padded to 26 frames
    alone = np.concatenate([scorer.score([w]).probabilities for w in waves])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    pairs = Scorer(whole.classifier, whole.front, batch_size=2).score(waves).probabilities
    np.testing.assert_allclose(pairs, alone, atol=1e-5)
    assert np.abs(alone[0] - alone[2]).max() > 1e-3


def test_vtlp_vote_scores_equal_the_exported_probabilities_and_votes(vote, waves):
    expected = exported_outputs(vote, waves)
    scorer = Scorer(vote.classifier, vote.front)
    units = scorer.prepare(waves)
    np.testing.assert_array_equal(np.bincount(units.owner), [11] * len(waves))
    scores = scorer(units)
    np.testing.assert_allclose(scores.probabilities, expected["probabilities"], atol=1e-5)
    np.testing.assert_allclose(scores.votes, expected["votes"], atol=1e-5)
    np.testing.assert_array_equal(
        scores.predicted, builders.decide(expected["probabilities"], expected["votes"]))
    assert np.any((expected["votes"] > 0) & (expected["votes"] < 1))  # split votes


def warped_features(wave, alpha, config):
    # alpha shaped (1,) as the scorer passes it, so both share one compiled VTLP kernel
    return features.compute_features(wave[np.newaxis], config,
                                     tf.constant([alpha], tf.float32)).numpy()[0]


def test_prepare_with_alphas_gives_one_copy_per_utterance_at_its_own_factor(whole, vote,
                                                                            waves):
    alphas = [0.9, 1.0, 1.1]
    scorer = Scorer(whole.classifier, whole.front)
    units = scorer.prepare(waves, alphas=alphas)
    np.testing.assert_array_equal(units.owner, [0, 1, 2])
    config = whole.front.config
    for wave, alpha, unit in zip(waves, alphas, units.arrays):
        expected = (warped_features(wave, alpha, config) - ZSCORE["mean"]) / ZSCORE["std"]
        np.testing.assert_allclose(unit, expected, atol=1e-5)
    unwarped = scorer.prepare(waves)
    np.testing.assert_allclose(units.arrays[1], unwarped.arrays[1], atol=1e-5)
    assert np.abs(units.arrays[0] - unwarped.arrays[0]).max() > 0.1
    scores = scorer(units).probabilities
    by_hand = np.concatenate([whole.classifier(a[np.newaxis]).numpy() for a in units.arrays])
    np.testing.assert_allclose(scores, by_hand, atol=1e-5)
    # The factors replace the vote front end's eleven copies.
    voted = Scorer(vote.classifier, vote.front).prepare(waves, alphas=alphas)
    np.testing.assert_array_equal(voted.owner, [0, 1, 2])
    for a, b in zip(voted.arrays, units.arrays):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(tf.errors.InvalidArgumentError, match="audio too short"):
        scorer.prepare([np.zeros(1000, np.float32)], alphas=[1.0])


def test_prepare_with_alphas_cuts_the_warped_features_into_windows(windowed, waves):
    alphas = [1.08, 0.9, 0.96]
    units = Scorer(windowed.classifier, windowed.front).prepare(waves, alphas=alphas)
    np.testing.assert_array_equal(np.bincount(units.owner), WINDOWS)
    cut = layers.SlidingWindows(CROP, HOP, pad_value=-1.0)
    config = windowed.front.config
    for i, (wave, alpha) in enumerate(zip(waves, alphas)):
        norm = np.clip(2.0 * (warped_features(wave, alpha, config) + 90.0) / 100.0 - 1.0,
                       -1.0, 1.0)
        expected = cut(norm[np.newaxis]).numpy()[0]
        np.testing.assert_allclose(np.stack([a for a, o in zip(units.arrays, units.owner)
                                             if o == i]), expected, atol=1e-5)
