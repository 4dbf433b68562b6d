"""One fold of the Chang & Scherer protocol on real EmoDB, its scores, and its export."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import folds, tasks
from keras_ser.models import dcgan
from keras_ser.protocols import multitask_dcgan as protocol
from keras_ser.serving import builders, savedmodel
from keras_ser.training.resumable import read_state

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
TINY = dcgan.get_dcgan_preset("cpu")
MAX_EPOCHS, PATIENCE = 8, 3


@pytest.fixture(scope="module")
def emodb_corpus(emodb_records):
    return protocol.Corpus(emodb_records[0], tasks.TaskSpec(primary="emotion",
                                                             emotions=EMOTIONS))


@pytest.fixture(scope="module")
def emodb_fold(emodb_records, emodb_corpus, tmp_path_factory):
    """BasicCNN trained on one leave-one-speaker-out fold of EmoDB (tiny config)."""
    records, _ = emodb_records
    corpus = emodb_corpus
    spec = corpus.spec
    fold = folds.folds_from_stats(os.path.join(records, "stats.json"), "loso-speaker")[0]
    minmax = protocol.fold_minmax(records, fold.train, spec)
    out = str(tmp_path_factory.mktemp("emodb_fold"))
    keras.utils.set_random_seed(0)
    result = protocol.train_fold("basic_cnn", TINY, fold, records, corpus, out, minmax=minmax,
                                 max_epochs=MAX_EPOCHS, patience=PATIENCE, seed=0, verbose=0)
    return {"records": records, "fold": fold, "corpus": corpus, "out": out,
            "minmax": minmax, "result": result}


@pytest.mark.real_data
def test_corpus_without_ratings_takes_the_circumplex_levels_of_its_categories(emodb_corpus):
    utterances = emodb_corpus.utterances
    assert len(utterances) == 535
    assert emodb_corpus.rated == {"valence": 0, "activation": 0}
    anger = [i for i, e in enumerate(utterances.emotions) if e == "anger"]
    assert len(anger) == 127 and set(utterances.labels[anger]) == {0}
    assert set(emodb_corpus.ratings["valence"][anger]) == {1.5}
    assert set(emodb_corpus.ratings["activation"][anger]) == {5.0}
    # Level indices 0..4: anger's 1.5 is split 1|2 (the lower wins), happiness is 5.
    levels = emodb_corpus.level_labels("valence")
    assert levels["03a01Wa"] == 0 and levels["03a01Fa"] == 4
    assert len(levels) == 535


@pytest.mark.slow
@pytest.mark.real_data
def test_one_emodb_fold_learns_well_above_chance(emodb_fold):
    result = emodb_fold["result"]
    assert (result["row"], result["fold"]) == ("basic_cnn", emodb_fold["fold"].name)
    assert result["test_speakers"] == ["03"]
    assert result["validation_speakers"] == ["08"]
    chance = 1 / 7
    assert result["test"]["emotion_ua"] > 2 * chance, result["test"]
    assert result["validation"]["emotion_ua"] > 2 * chance
    # Early stopping ends PATIENCE epochs after the best one, or at the budget.
    assert result["epochs"] == min(MAX_EPOCHS, result["best_epoch"] + PATIENCE)
    # Speaker 03 has 49 utterances of the seven classes, speaker 08 has 58.
    assert result["test"]["emotion_n"] == 49
    assert np.array(result["test"]["emotion_confusion"]).sum() == 49
    assert result["validation"]["emotion_n"] == 58
    assert result["minmax"] == list(emodb_fold["minmax"])
    out = emodb_fold["out"]
    state = read_state(os.path.join(out, "ckpt"))
    assert state["best"] == f"epoch-{result['best_epoch']:04d}.weights.h5"
    for name in ("predictions.npz", "classifier.keras", f"ckpt/{state['best']}"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(f.startswith("events") for _, _, files in os.walk(os.path.join(out, "logs"))
               for f in files)


@pytest.mark.slow
@pytest.mark.real_data
def test_finished_fold_is_scored_again_without_training(emodb_fold):
    state = os.path.join(emodb_fold["out"], "ckpt", "state.json")
    before = os.path.getmtime(state)
    keras.utils.set_random_seed(1)  # other initial weights: the checkpoint replaces them
    again = protocol.train_fold("basic_cnn", TINY, emodb_fold["fold"], emodb_fold["records"],
                                emodb_fold["corpus"], emodb_fold["out"],
                                minmax=emodb_fold["minmax"], max_epochs=MAX_EPOCHS,
                                patience=PATIENCE, seed=0, verbose=0)
    assert os.path.getmtime(state) == before
    # Per-class recall of a class absent from a speaker is None; compare as JSON.
    assert json.dumps(again, sort_keys=True) == json.dumps(emodb_fold["result"], sort_keys=True)


@pytest.mark.slow
@pytest.mark.real_data
def test_exported_signature_gives_the_keras_and_reported_probabilities(emodb_fold, tmp_path):
    corpus = emodb_fold["corpus"]
    spec = corpus.spec
    classifier = protocol.load_classifier(emodb_fold["out"])
    front = protocol.front_end(spec, TINY, emodb_fold["minmax"])
    serving = builders.build_serving_model(classifier, front, EMOTIONS)
    path = savedmodel.export_model(serving, str(tmp_path / "export"), "basic_cnn",
                                   class_names=EMOTIONS, front=front)
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    saved = np.load(os.path.join(emodb_fold["out"], "predictions.npz"))
    for i in corpus.utterances.indices(["03"])[:3]:
        wave = (corpus.utterances.waveforms[i].astype(np.float32) / 32768.0)[None]
        served = signature(waveform=tf.constant(wave))["probabilities"].numpy()
        keras_probs = serving(wave)["probabilities"].numpy()
        np.testing.assert_allclose(served, keras_probs, atol=1e-5)
        row = list(saved["utterance_id"]).index(corpus.utterances.ids[i])
        # The fold's reported test scores come from the same computation.
        np.testing.assert_allclose(served[0], saved["emotion"][row], atol=1e-5)
        assert served.sum() == pytest.approx(1.0, abs=1e-5)


def test_dimension_levels_are_the_circumplex_table():
    valence = tasks.dimension_levels(EMOTIONS, "valence")
    activation = tasks.dimension_levels(EMOTIONS, "activation")
    # anger, boredom, disgust, fear, happiness, neutral, sadness
    np.testing.assert_array_equal(valence, [1.5, 2.5, 1.5, 1.5, 5.0, 3.0, 1.5])
    np.testing.assert_array_equal(activation, [5.0, 1.5, 3.0, 4.5, 4.0, 3.0, 1.5])
    assert valence.dtype == np.float32
    with pytest.raises(ValueError, match="no valence/activation placement for"):
        tasks.dimension_levels(["anger", "contempt"], "valence")
    with pytest.raises(ValueError, match="dimension must be"):
        tasks.dimension_levels(EMOTIONS, "dominance")


def test_task_spec_fills_unrated_records_from_the_category_only_when_asked():
    spec = tasks.TaskSpec(primary="emotion", emotions=("anger", "sadness"))
    assert spec.class_names == ["anger", "sadness"]
    np.testing.assert_array_equal(spec.dimension_table("valence"), [1.5, 1.5])
    assert tasks.TaskSpec("emotion", ["anger"], derive_dimensions=False) \
        .dimension_table("valence") is None
    assert tasks.TaskSpec(primary="valence").class_names == ["1", "2", "3", "4", "5"]
    with pytest.raises(ValueError, match="needs the emotion class names"):
        tasks.TaskSpec(primary="emotion")
    with pytest.raises(ValueError, match="primary must be"):
        tasks.TaskSpec(primary="dominance")


def _corpus(spec, labels, ratings):
    """A stand-in for `protocol.Corpus`: what `score` reads."""
    return types.SimpleNamespace(spec=spec, utterances=types.SimpleNamespace(
        labels=np.array(labels, np.int64)), ratings={
            d: np.array(ratings.get(d, [np.nan] * len(labels)), np.float32)
            for d in tasks.DIMENSIONS})


def test_score_reports_both_3_class_readings_and_the_emotion_report():
    spec = tasks.TaskSpec(primary="emotion", emotions=["anger", "sadness"])
    corpus = _corpus(spec, [0, 0, 1], {"valence": [1.5, 3.5, 5.0]})
    probs = {"emotion": np.array([[.9, .1], [.2, .8], [.3, .7]]),
             "valence": np.array([[.3, .3, .4, 0, 0],     # 1.5 = 1|2, predicted level 3
                                  [0, 0, .45, .55, 0],    # 3.5 = 3|4, predicted 4
                                  [0, .1, 0, .2, .7]])}   # 5, predicted 5
    s = protocol.score(probs, corpus, np.arange(3))
    # Emotion: predictions anger, sadness, sadness -> recalls anger 1/2, sadness 1/1;
    # F1 of both classes 2/3.
    assert s["emotion_n"] == 3
    assert s["emotion_ua"] == pytest.approx(0.75)
    assert s["emotion_wa"] == pytest.approx(2 / 3)
    assert s["emotion_macro_f1"] == pytest.approx(2 / 3)
    assert s["emotion_recall"] == {"anger": 0.5, "sadness": 1.0}
    assert s["emotion_confusion"] == [[1, 1], [0, 1]]
    assert "emotion_class_names" not in s
    assert s["primary_ua"] == s["emotion_ua"]
    # 5 levels, accept-either targets [1 (no tie with 3), 4 (tie 3|4), 5] against the
    # predictions [3, 4, 5]: recalls 0, 1, 1 over the three target levels.
    assert s["valence_ua5"] == pytest.approx(2 / 3)
    assert s["valence_confusion5"] == [[0, 0, 1, 0, 0], [0] * 5, [0] * 5, [0, 0, 0, 1, 0],
                                       [0, 0, 0, 0, 1]]
    # Pooled targets: negative, neutral|positive (tie), positive.
    # Decisions pooled: level 3 -> neutral (wrong), 4 -> positive, 5 -> positive.
    assert s["valence_ua3_decisions"] == pytest.approx((0 + 1) / 2)
    # Probabilities pooled: [.6, .4, 0] -> negative (right), [0, .45, .55] -> positive,
    # [.1, 0, .9] -> positive.
    assert s["valence_ua3_probabilities"] == pytest.approx(1.0)
    # Expected levels by hand: 2.1, 3.55, 4.5 against the mean ratings.
    expected = np.corrcoef([2.1, 3.55, 4.5], [1.5, 3.5, 5.0])[0, 1]
    assert s["valence_r"] == pytest.approx(expected)
    assert not any(k.startswith("activation") for k in s)  # no head: not scored


def test_score_of_one_rated_utterance_is_left_out_and_primary_rating_is_ua5():
    spec = tasks.TaskSpec(primary="valence", derive_dimensions=False)
    corpus = _corpus(spec, [-1, -1, -1], {"valence": [2.0, 4.0, 1.0],
                                         "activation": [np.nan, 3.0, np.nan]})
    probs = {"valence": np.array([[0, 1., 0, 0, 0], [0, 0, 0, 0, 1.], [1., 0, 0, 0, 0]]),
             "activation": np.full((3, 5), 0.2)}
    s = protocol.score(probs, corpus, np.arange(3))
    # Targets 2, 4, 1; predictions 2, 5, 1.
    assert s["valence_ua5"] == pytest.approx(2 / 3)
    assert s["primary_ua"] == s["valence_ua5"]
    # Activation: one rated utterance gives no correlation, so no activation scores.
    assert sorted(k for k in s if k.startswith("activation")) == []
    # Only the indexed utterances count (the probabilities are theirs, in index order).
    part = protocol.score({"valence": probs["valence"][[0, 2]]}, corpus, np.array([0, 2]))
    assert part["valence_ua5"] == pytest.approx(1.0)
