"""Tests of keras_ser.metrics with small cases worked out by hand."""

import json

import numpy as np
import pytest
import scipy.stats
from scipy import linalg

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
    # Deviations from the means 1.875 and 1.9: products sum to 1.95, squares to 2.1875
    # and 1.78.
    assert r == pytest.approx(1.95 / np.sqrt(2.1875 * 1.78))


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


# --- Fréchet distance -------------------------------------------------------------------


def _exact_samples(mean, cov, n, seed):
    """``n`` rows whose sample mean and np.cov are exactly ``mean`` and ``cov``."""
    mean, cov = np.asarray(mean, float), np.atleast_2d(np.asarray(cov, float))
    d = len(mean)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal columns, each orthogonal to the ones vector
    return mean + np.sqrt(n - 1) * q @ np.linalg.cholesky(cov).T


def _psd_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _closed_form(mean_a, cov_a, mean_b, cov_b):
    """||dmu||^2 + Tr(A + B - 2 (A^1/2 B A^1/2)^1/2), by symmetric eigendecompositions."""
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    diff = np.asarray(mean_a) - np.asarray(mean_b)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def test_exact_samples_helper():
    cov = [[2.0, 0.5], [0.5, 1.0]]
    x = _exact_samples([1.0, -2.0], cov, 50, 0)
    np.testing.assert_allclose(x.mean(axis=0), [1.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=1e-12)


def test_frechet_diagonal_gaussians_by_hand():
    # ||(3, 4)||^2 + (1 - 2)^2 + (2 - 1)^2 with standard deviations (1, 2) and (2, 1).
    a = _exact_samples([0.0, 0.0], np.diag([1.0, 4.0]), 40, 1)
    b = _exact_samples([3.0, 4.0], np.diag([4.0, 1.0]), 60, 2)
    assert metrics.frechet_distance(a, b) == pytest.approx(27.0, rel=1e-9)
    # One dimension: (m_a - m_b)^2 + (s_a - s_b)^2.
    a1 = _exact_samples([1.5], [[0.25]], 30, 3)
    b1 = _exact_samples([-0.5], [[9.0]], 30, 4)
    assert metrics.frechet_distance(a1, b1) == pytest.approx(4.0 + 2.5 ** 2, rel=1e-9)


def test_frechet_full_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    m_a, m_b = rng.normal(size=d), rng.normal(size=d)
    l_a, l_b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov_a, cov_b = l_a @ l_a.T + 0.1 * np.eye(d), l_b @ l_b.T + 0.1 * np.eye(d)
    a = _exact_samples(m_a, cov_a, 200, 5)
    b = _exact_samples(m_b, cov_b, 150, 6)
    expected = _closed_form(m_a, cov_a, m_b, cov_b)
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # Random (not exactly constructed) samples: the formula on numpy's moments.
    x, y = rng.normal(size=(300, d)) @ l_a, rng.normal(size=(250, d)) + 1.0
    expected = _closed_form(x.mean(0), np.cov(x, rowvar=False),
                            y.mean(0), np.cov(y, rowvar=False))
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_frechet_identity_symmetry_and_mean_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    y = rng.normal(size=(400, 8)) * 1.5
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert metrics.frechet_distance(x, y) == pytest.approx(
        metrics.frechet_distance(y, x), rel=1e-9)
    shifts = [metrics.frechet_distance(x, x + s) for s in (0.5, 1.0, 2.0)]
    # A pure shift by s in every one of the 8 dimensions adds exactly 8 s^2.
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_singular_covariances_by_hand_and_by_closed_form():
    # Two rows each: rank-one covariances. Same axis: means (1, 0) and (7, 5), variances
    # 2 and 8 on the first axis -> 36 + 25 + 2 + 8 - 2 sqrt(16).
    a = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert metrics.frechet_distance(a, [[5.0, 5.0], [9.0, 5.0]]) == pytest.approx(63.0)
    # Orthogonal axes, S_a S_b = 0: means (1, 0) and (0, 2) -> 1 + 4 + 2 + 2.
    assert metrics.frechet_distance(a, [[0.0, 1.0], [0.0, 3.0]]) == pytest.approx(9.0)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))  # rank <= 4 < d
    expected = _closed_form(x.mean(0), np.cov(x, rowvar=False),
                            y.mean(0), np.cov(y, rowvar=False))
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=1e-7)


def test_frechet_rejects_bad_inputs(monkeypatch):
    good = np.random.default_rng(3).normal(size=(6, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.frechet_distance(good[:1], good)
    with pytest.raises(ValueError, match="widths differ"):
        metrics.frechet_distance(good, good[:, :2])
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        metrics.frechet_distance(good, bad)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        metrics.frechet_distance(good[:, 0], good[:, 0])
    # A non-negligible imaginary part of the square root is an error, a tiny one is not.
    real_sqrtm = linalg.sqrtm
    monkeypatch.setattr(metrics.linalg, "sqrtm",
                        lambda m: real_sqrtm(m) + 1e-9j * np.eye(len(m)))
    assert metrics.frechet_distance(good, good) == pytest.approx(0.0, abs=1e-9)
    monkeypatch.setattr(metrics.linalg, "sqrtm",
                        lambda m: real_sqrtm(m) + 0.5j * np.eye(len(m)))
    with pytest.raises(ValueError, match="imaginary"):
        metrics.frechet_distance(good, good)
