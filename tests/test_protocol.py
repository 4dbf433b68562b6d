"""One fold of the Chang & Scherer protocol on real EmoDB, its scores, and its export."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_ser import dimensions, export, folds, metrics
from keras_ser.models import dcgan
from keras_ser.training import protocol

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
TINY = dcgan.get_dcgan_preset("cpu")


@pytest.fixture(scope="module")
def emodb_fold(emodb_records, tmp_path_factory):
    """BasicCNN trained on one leave-one-speaker-out fold of EmoDB (tiny config)."""
    records, _ = emodb_records
    spec = protocol.TaskSpec(primary="emotion", emotions=EMOTIONS)
    fold = folds.folds_from_stats(os.path.join(records, "stats.json"), "loso-speaker")[0]
    corpus = protocol.CorpusAudio(records, spec)
    out = str(tmp_path_factory.mktemp("emodb_fold"))
    result = protocol.train_fold("basic_cnn", TINY, fold, records, corpus, spec, out,
                                 max_epochs=8, patience=3, seed=0, verbose=0)
    return {"records": records, "spec": spec, "fold": fold, "corpus": corpus, "out": out,
            "result": result}


@pytest.mark.slow
@pytest.mark.real_data
def test_one_emodb_fold_learns_well_above_chance(emodb_fold):
    result, fold = emodb_fold["result"], emodb_fold["fold"]
    assert result["test_speakers"] == sorted(fold.test) == ["03"]
    assert result["validation_speakers"] == ["08"]
    chance = 1 / 7
    assert result["test"]["emotion_ua"] > 2 * chance, result["test"]
    assert result["validation"]["emotion_ua"] > 2 * chance
    assert 1 <= result["best_epoch"] <= result["epochs"] <= 8
    conf = np.array(result["test"]["emotion_confusion"])
    assert conf.sum() == len(emodb_fold["corpus"].indices(["03"]))
    out = emodb_fold["out"]
    for name in ("result.json", "predictions.npz", "classifier.keras", "ckpt/state.json",
                 "ckpt/best.weights.h5"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(f.startswith("events") for _, _, files in os.walk(os.path.join(out, "logs"))
               for f in files)


@pytest.mark.slow
@pytest.mark.real_data
def test_finished_fold_is_returned_without_training_again(emodb_fold):
    again = protocol.train_fold("basic_cnn", TINY, emodb_fold["fold"], emodb_fold["records"],
                                emodb_fold["corpus"], emodb_fold["spec"], emodb_fold["out"],
                                max_epochs=8)
    # Per-class recall of a class absent from a speaker is NaN, so compare as JSON.
    assert json.dumps(again, sort_keys=True) == json.dumps(emodb_fold["result"], sort_keys=True)


@pytest.mark.slow
@pytest.mark.real_data
def test_exported_signature_gives_the_keras_and_reported_probabilities(emodb_fold, tmp_path):
    result, corpus = emodb_fold["result"], emodb_fold["corpus"]
    classifier = protocol.load_classifier(emodb_fold["out"])
    lo, hi = result["minmax"]
    serving = export.build_serving_model(classifier, features="chang", minimum=lo, maximum=hi,
                                         crop_frames=TINY.crop_frames, class_names=EMOTIONS)
    path = export.export_classifier(serving, str(tmp_path / "export"), class_names=EMOTIONS,
                                    features="chang", sample_rate=16000, minimum=lo,
                                    maximum=hi, crop_frames=TINY.crop_frames,
                                    hop_frames=TINY.crop_frames // 2)
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    index = corpus.indices(["03"])[:3]
    saved = np.load(os.path.join(emodb_fold["out"], "predictions.npz"))
    for i in index:
        wave = (corpus.waveforms[i].astype(np.float32) / 32768.0)[None]
        served = signature(waveform=tf.constant(wave))["probabilities"].numpy()
        keras_probs = serving(wave)["probabilities"].numpy()
        np.testing.assert_allclose(served, keras_probs, atol=1e-5)
        row = list(saved["utterance_id"]).index(corpus.ids[i])
        # The fold's reported test scores come from the same computation.
        np.testing.assert_allclose(served[0], saved["emotion"][row], atol=1e-5)
        assert served.sum() == pytest.approx(1.0, abs=1e-5)


def test_dimension_levels_follow_the_circumplex_quadrants():
    valence = dict(zip(EMOTIONS, dimensions.dimension_levels(EMOTIONS, "valence")))
    activation = dict(zip(EMOTIONS, dimensions.dimension_levels(EMOTIONS, "activation")))
    assert valence["happiness"] > valence["neutral"] > valence["anger"]
    assert all(valence[e] < 3 for e in ("anger", "fear", "disgust", "sadness", "boredom"))
    assert activation["anger"] > activation["neutral"] > activation["sadness"]
    assert all(1 <= v <= 5 for v in list(valence.values()) + list(activation.values()))
    with pytest.raises(ValueError, match="no valence/activation placement for"):
        dimensions.dimension_levels(["anger", "contempt"], "valence")
    with pytest.raises(ValueError, match="dimension must be"):
        dimensions.dimension_levels(EMOTIONS, "dominance")


class _FakeCorpus:
    def __init__(self, emotions, valence):
        self.spec = protocol.TaskSpec(primary="emotion", emotions=["anger", "sadness"])
        self.emotions = emotions
        self.ratings = {"valence": np.array(valence, np.float32),
                        "activation": np.full(len(valence), np.nan, np.float32)}

    def primary_labels(self, index):
        return np.array([self.spec.emotions.index(self.emotions[i]) for i in index])


def test_scores_use_accept_either_targets_pooling_and_expected_value_correlation():
    corpus = _FakeCorpus(["anger", "anger", "sadness", "sadness"], [4.5, 1.0, 3.0, 5.0])
    probs = {"emotion": np.array([[.9, .1], [.2, .8], [.3, .7], [.6, .4]]),
             "valence": np.array([[0, 0, 0, .6, .4],   # 4.5 split 4|5: predicting 4 counts
                                  [.7, .3, 0, 0, 0],   # 1 -> 1 correct
                                  [0, .2, .3, .5, 0],  # 3 -> predicted 4: wrong
                                  [0, 0, 0, 0, 1.]])}  # 5 -> 5 correct
    s = protocol.score(probs, corpus, np.arange(4), corpus.spec)
    assert s["emotion_ua"] == pytest.approx(0.5)  # anger 1/2, sadness 1/2
    assert s["primary_ua"] == s["emotion_ua"]
    # 5-point accept-either targets: [3 (level 4), 0, 2, 4] vs predictions [3, 0, 3, 4].
    assert s["valence_ua5"] == pytest.approx(metrics.unweighted_accuracy([3, 0, 2, 4],
                                                                         [3, 0, 3, 4]))
    # Pooled: targets positive, negative, neutral, positive; predictions pos, neg, pos, pos.
    assert s["valence_ua3"] == pytest.approx((1 + 1 + 0) / 3)
    expected = probs["valence"] @ np.arange(1, 6)
    assert s["valence_r"] == pytest.approx(np.corrcoef(expected, [4.5, 1, 3, 5])[0, 1])
    assert "activation_ua5" not in s  # unrated: not scored
