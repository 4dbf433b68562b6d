"""Tests of keras_ser.metrics with small cases worked out by hand."""

import json

import numpy as np
import pytest
import scipy.stats

from keras_ser import metrics

# Three classes, eight utterances. Per class: 0 -> 4/4 right, 1 -> 1/2, 2 -> 1/2.
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 0, 1, 0, 2, 0]
NAMES = ["anger", "happiness", "sadness"]


def test_weighted_accuracy_is_fraction_correct():
    assert metrics.weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 8)


def test_unweighted_accuracy_is_mean_class_recall():
    # (4/4 + 1/2 + 1/2) / 3
    assert metrics.unweighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(2 / 3)


def test_unweighted_accuracy_ignores_classes_absent_from_reference():
    # Class 2 is only predicted: recalls 1/2 (class 0) and 2/2 (class 1).
    assert metrics.unweighted_accuracy([0, 0, 1, 1], [0, 2, 1, 1]) == pytest.approx(0.75)


def test_macro_f1_averages_class_f1():
    # Class 0: P = 4/6, R = 1 -> F1 = 0.8; classes 1 and 2: P = 1, R = 1/2 -> F1 = 2/3.
    assert metrics.macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 2 / 3 + 2 / 3) / 3)
    assert metrics.macro_f1(Y_TRUE, Y_PRED) == pytest.approx(32 / 45)


def test_confusion_rows_are_reference_columns_predictions():
    expected = [[4, 0, 0], [1, 1, 0], [1, 0, 1]]
    np.testing.assert_array_equal(metrics.confusion(Y_TRUE, Y_PRED, 3), expected)


def test_confusion_covers_absent_classes():
    matrix = metrics.confusion([0, 1], [1, 1], num_classes=4)
    assert matrix.shape == (4, 4)
    np.testing.assert_array_equal(matrix, [[0, 1, 0, 0], [0, 1, 0, 0], [0] * 4, [0] * 4])


def test_confusion_rejects_label_beyond_num_classes():
    with pytest.raises(ValueError, match="class 3"):
        metrics.confusion([0, 3], [0, 1], num_classes=3)


def test_per_class_recall_is_nan_for_absent_class():
    recall = metrics.per_class_recall([0, 0, 1, 1], [0, 2, 1, 1], num_classes=3)
    np.testing.assert_allclose(recall[:2], [0.5, 1.0])
    assert np.isnan(recall[2])


def test_scores_take_argmax_of_probabilities():
    probs = np.eye(3)[Y_PRED] * 0.6 + 0.1
    assert metrics.weighted_accuracy(Y_TRUE, probs) == pytest.approx(6 / 8)


def test_classification_report_from_probabilities():
    probs = np.eye(3)[Y_PRED] * 0.6 + 0.1
    report = metrics.classification_report(Y_TRUE, probs, NAMES)
    assert report["n"] == 8
    assert report["wa"] == pytest.approx(0.75)
    assert report["ua"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx(32 / 45)
    assert report["recall"] == pytest.approx({"anger": 1.0, "happiness": 0.5, "sadness": 0.5})
    assert report["confusion"] == [[4, 0, 0], [1, 1, 0], [1, 0, 1]]
    json.dumps(report)


def test_classification_report_gives_none_recall_for_absent_class():
    report = metrics.classification_report([0, 0], [0, 1], NAMES)
    assert report["recall"] == {"anger": 0.5, "happiness": None, "sadness": None}
    json.dumps(report)


def test_classification_report_rejects_score_columns_unlike_class_names():
    with pytest.raises(ValueError, match="4 score columns"):
        metrics.classification_report([0, 1], np.ones((2, 4)), NAMES)


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 1, 1], [0, 1], "3 labels but y_pred has 2"),
    ([[0, 1]], [0, 1], "shape"),
    ([0, 1.5], [0, 1], "not an integer"),
    ([0, -1], [0, 1], "negative"),
    ([], [], "empty"),
])
def test_label_scores_reject_malformed_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.weighted_accuracy(y_true, y_pred)


def test_mean_std_uses_population_std():
    mean, std = metrics.mean_std([0.6, 0.7, 0.8])
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(np.sqrt(0.02 / 3))


def test_format_mean_std_of_fractions_in_percent():
    # std = sqrt(0.02 / 3) = 0.0816 -> 8.2 points.
    assert metrics.format_mean_std([0.6, 0.7, 0.8]) == "70.0 ± 8.2"


def test_format_mean_std_of_values_already_in_percent():
    assert metrics.format_mean_std([61.0, 62.4], digits=2, percent=False) == "61.70 ± 0.70"


def test_mean_std_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        metrics.mean_std([])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.mean_std([0.5, float("nan")])


@pytest.mark.parametrize("rating, expected", [
    (4.5, [0, 0, 0, 0.5, 0.5]),
    (4.25, [0, 0, 0, 0.75, 0.25]),
    (2.25, [0, 0.75, 0.25, 0, 0]),
    (3, [0, 0, 1, 0, 0]),
    (1, [1, 0, 0, 0, 0]),
    (5, [0, 0, 0, 0, 1]),
])
def test_fuzzy_label_splits_mass_between_neighbours(rating, expected):
    np.testing.assert_allclose(metrics.fuzzy_label(rating), expected)


def test_fuzzy_labels_match_one_at_a_time():
    ratings = [1.0, 2.25, 3.0, 4.5, 5.0, 1.5]
    np.testing.assert_allclose(metrics.fuzzy_labels(ratings),
                               np.stack([metrics.fuzzy_label(r) for r in ratings]))


def test_fuzzy_label_expected_value_is_the_rating():
    ratings = np.array([1.0, 1.7, 2.25, 3.5, 4.9, 5.0])
    np.testing.assert_allclose(metrics.expected_value(metrics.fuzzy_labels(ratings)), ratings)


def test_fuzzy_label_on_a_three_point_scale():
    np.testing.assert_allclose(metrics.fuzzy_label(2.5, levels=3), [0, 0.5, 0.5])


@pytest.mark.parametrize("rating", [0.5, 5.5, float("nan")])
def test_fuzzy_label_rejects_rating_off_the_scale(rating):
    with pytest.raises(ValueError, match=str(rating)):
        metrics.fuzzy_label(rating)


def test_fuzzy_labels_error_names_value_and_index():
    with pytest.raises(ValueError, match=r"6\.0 at index 2"):
        metrics.fuzzy_labels([1.0, 2.0, 6.0])


def test_expected_value_with_default_and_given_levels():
    probs = [[0.2, 0.3, 0.5]]
    # 0.2 * 1 + 0.3 * 2 + 0.5 * 3 = 2.3; with levels -1, 0, 1: -0.2 + 0.5 = 0.3.
    np.testing.assert_allclose(metrics.expected_value(probs), [2.3])
    np.testing.assert_allclose(metrics.expected_value(probs, levels=[-1, 0, 1]), [0.3])


def test_expected_value_rejects_levels_of_wrong_length():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        metrics.expected_value([[0.2, 0.3, 0.5]], levels=[1, 2])


def test_pearson_expected_equals_scipy_on_expected_values():
    probs = [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0, 0, 1]]
    ratings = [1.2, 2.1, 1.4, 2.9]
    # Expected values by hand: 1, 2, 1.5, 3.
    np.testing.assert_allclose(metrics.expected_value(probs), [1, 2, 1.5, 3])
    want = scipy.stats.pearsonr([1, 2, 1.5, 3], ratings)
    r, p = metrics.pearson_expected(probs, ratings)
    assert r == pytest.approx(want.statistic)
    assert p == pytest.approx(want.pvalue)
    assert 0.9 < r < 1


def test_pearson_expected_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 rows but mean_ratings has 2"):
        metrics.pearson_expected(np.eye(3), [1.0, 2.0])


def test_pool_5_to_3_sums_distribution_mass():
    pooled = metrics.pool_5_to_3([[0.1, 0.2, 0.3, 0.25, 0.15]])
    np.testing.assert_allclose(pooled, [[0.3, 0.3, 0.4]])


def test_pool_5_to_3_of_fuzzy_labels():
    pooled = metrics.pool_5_to_3(metrics.fuzzy_labels([4.5, 2.5, 3.25]))
    np.testing.assert_allclose(pooled, [[0, 0, 1], [0.5, 0.5, 0], [0, 0.75, 0.25]])


def test_pool_5_to_3_of_levels_keeps_their_base():
    np.testing.assert_array_equal(metrics.pool_5_to_3([1, 2, 3, 4, 5], index_base=1),
                                  [1, 1, 2, 3, 3])
    np.testing.assert_array_equal(metrics.pool_5_to_3([0, 1, 2, 3, 4], index_base=0),
                                  [0, 0, 1, 2, 2])


def test_pool_5_to_3_of_levels_requires_index_base():
    with pytest.raises(ValueError, match="index_base"):
        metrics.pool_5_to_3([1, 2, 3])


@pytest.mark.parametrize("levels, base", [([1, 6], 1), ([0, 1], 1), ([5], 0)])
def test_pool_5_to_3_rejects_level_off_the_scale(levels, base):
    with pytest.raises(ValueError, match="outside"):
        metrics.pool_5_to_3(levels, index_base=base)


def test_pool_5_to_3_rejects_distribution_of_other_width():
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        metrics.pool_5_to_3(np.ones((2, 4)))


def test_accept_either_tied_target_accepts_either_class_and_rejects_a_third():
    tied = [0.5, 0.5, 0.0]
    targets = metrics.accept_either_targets([0, 1, 2], [tied, tied, tied])
    # 0 and 1 are scored correct; 2 is scored against the lower tied class 0.
    np.testing.assert_array_equal(targets, [0, 1, 0])
    assert metrics.weighted_accuracy(targets, [0, 1, 2]) == pytest.approx(2 / 3)


def test_accept_either_on_one_hot_targets_is_ordinary_scoring():
    y_true = [0, 1, 2, 1, 0]
    probs = np.eye(3)[[0, 2, 2, 0, 1]] + 0.1
    targets = metrics.accept_either_targets(probs, np.eye(3)[y_true])
    np.testing.assert_array_equal(targets, y_true)
    assert metrics.accept_either_report(probs, np.eye(3)[y_true], NAMES) == \
        metrics.classification_report(y_true, probs, NAMES)


def test_accept_either_uses_target_argmax_when_prediction_is_not_top():
    # Majority on class 2: a prediction of 1 (minority) is scored against 2.
    targets = metrics.accept_either_targets([1, 2], [[0, 1 / 3, 2 / 3], [0, 1 / 3, 2 / 3]])
    np.testing.assert_array_equal(targets, [2, 2])


def test_accept_either_report_counts_tied_hits():
    target = [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1], [1, 0, 0]]
    probs = np.eye(3)[[1, 2, 2, 1]]
    report = metrics.accept_either_report(probs, target, NAMES)
    # Targets: 1 (tie hit), 0 (tie, miss), 2 (hit), 0 (miss) -> 2 of 4 correct.
    assert report["wa"] == pytest.approx(0.5)
    assert report["confusion"] == [[0, 1, 1], [0, 1, 0], [0, 0, 1]]


def test_accept_either_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="2 rows but target_dist has 1"):
        metrics.accept_either_targets([0, 1], [[1, 0]])
    with pytest.raises(ValueError, match="class 2"):
        metrics.accept_either_targets([2], [[1, 0]])
    with pytest.raises(ValueError, match="some mass"):
        metrics.accept_either_targets([0], [[0, 0]])
    with pytest.raises(ValueError, match="3 class names"):
        metrics.accept_either_report(np.eye(2), np.eye(2), NAMES)
