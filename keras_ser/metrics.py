"""Scores for speech emotion recognition: WA, UA, macro-F1, confusion, rating metrics.

Categorical scores use the names of the SER literature:

- weighted accuracy (WA): the fraction of utterances classified correctly, so each class
  weighs as much as it has utterances;
- unweighted accuracy (UA): the mean of the per-class recalls over the classes present in
  the reference, so each class weighs the same (scikit-learn's macro recall).

Rating scores follow Chang & Scherer (2017, "Learning representations of emotional speech
with deep convolutional generative adversarial networks", ICASSP): the mean of the
annotators' 5-point valence or activation ratings becomes a "fuzzy" label spread over
the two neighbouring levels (Sec. "Data Corpus"; the paper shows only a mean of .5, the
linear split of other means is our choice); a model predicting a distribution over the
levels is scored by the Pearson correlation of its expected value with the mean rating,
by accuracy after pooling the 5-point scale to 3 points, and by counting a prediction as
correct when it names either of two levels the annotators split evenly between (Sec.
"Experimental Design").

Everything runs on NumPy arrays with scikit-learn and SciPy; nothing here imports
TensorFlow, so results can be recomputed from saved predictions. Class indices are
0-based integers; every function raises `ValueError` on arrays of the wrong shape or length.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from scipy import linalg
from sklearn import metrics as skm

#: 5-point level (0-based) -> 3-point class (0-based): 1-2 negative, 3 neutral, 4-5 positive.
_POOL_5_TO_3 = np.array([0, 0, 1, 2, 2])


def _labels(y, name: str) -> np.ndarray:
    """``(n,)`` non-negative integer class indices (integral floats accepted) as int64."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be class indices of shape (n,), got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{index}] = {y[index].item()!r} is not an integer "
                             "class index")
    elif y.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y < 0).any():
        index = int(np.flatnonzero(y < 0)[0])
        raise ValueError(f"{name}[{index}] = {y[index]} is a negative class index")
    return y


def _matrix(x, name: str) -> np.ndarray:
    """``(n, k)`` finite float array with n, k >= 1."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, classes) with n, classes >= 1, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"{name} row {row} holds a non-finite value: {x[row].tolist()}")
    return x


def _predictions(y_pred, name: str = "y_pred") -> np.ndarray:
    """Class indices from ``(n,)`` labels or the argmax of ``(n, classes)`` scores."""
    if np.ndim(y_pred) == 2:
        return _matrix(y_pred, name).argmax(axis=1)
    return _labels(y_pred, name)


def _pair(y_true, y_pred) -> tuple:
    """Validated ``(y_true, y_pred)`` class indices of equal length."""
    true = _labels(y_true, "y_true")
    pred = _predictions(y_pred)
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"y_true has {true.shape[0]} labels but y_pred has {pred.shape[0]}")
    return true, pred


def _num_classes(num_classes, y_pred, *labels) -> int:
    """Check ``num_classes`` against score columns and the largest label."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if np.ndim(y_pred) == 2 and np.shape(y_pred)[1] != num_classes:
        raise ValueError(f"y_pred has {np.shape(y_pred)[1]} score columns but there are "
                         f"{num_classes} classes")
    for name, y in labels:
        if y.max() >= num_classes:
            raise ValueError(f"{name} holds class {int(y.max())} but there are only "
                             f"{num_classes} classes (0..{num_classes - 1})")
    return int(num_classes)


def weighted_accuracy(y_true, y_pred) -> float:
    """Weighted accuracy (WA): the fraction of utterances classified correctly.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, classes)`` scores (argmax taken).

    Returns:
        WA in [0, 1].

    Raises:
        ValueError: Wrong shapes, lengths differ, or labels are not class indices.
    """
    true, pred = _pair(y_true, y_pred)
    return float(skm.accuracy_score(true, pred))


def unweighted_accuracy(y_true, y_pred) -> float:
    """Unweighted accuracy (UA): the mean per-class recall over classes present in y_true.

    Classes that occur only in ``y_pred`` do not enter the mean (their recall is undefined);
    a wrong prediction of such a class still lowers the recall of its true class.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, classes)`` scores (argmax taken).

    Returns:
        UA in [0, 1].

    Raises:
        ValueError: Wrong shapes, lengths differ, or labels are not class indices.
    """
    true, pred = _pair(y_true, y_pred)
    return float(skm.recall_score(true, pred, labels=np.unique(true), average="macro"))


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Macro-averaged F1: the unweighted mean of the per-class F1 scores.

    Eskimez et al. (2020, Table 2) report an "F1-score" without naming the average;
    reading it as macro-F1 is our choice.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, classes)`` scores (argmax taken).
        labels: Classes to average over; by default those occurring in ``y_true`` or
            ``y_pred``. A class never predicted and never present scores 0.

    Returns:
        Macro-F1 in [0, 1].

    Raises:
        ValueError: Wrong shapes, lengths differ, or labels are not class indices.
    """
    true, pred = _pair(y_true, y_pred)
    return float(skm.f1_score(true, pred, labels=labels, average="macro", zero_division=0.0))


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Confusion counts over all classes ``0..num_classes-1``, present or not.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, num_classes)`` scores.
        num_classes: Number of classes C.

    Returns:
        ``(C, C)`` int64 counts; row = reference class, column = predicted class.

    Raises:
        ValueError: Wrong shapes, lengths differ, or a label is not in ``0..C-1``.
    """
    true, pred = _pair(y_true, y_pred)
    classes = _num_classes(num_classes, y_pred, ("y_true", true), ("y_pred", pred))
    return skm.confusion_matrix(true, pred, labels=np.arange(classes)).astype(np.int64)


def per_class_recall(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class ``0..num_classes-1``.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, num_classes)`` scores.
        num_classes: Number of classes C.

    Returns:
        ``(C,)`` float64 recalls; NaN for a class absent from ``y_true``.

    Raises:
        ValueError: Wrong shapes, lengths differ, or a label is not in ``0..C-1``.
    """
    true, pred = _pair(y_true, y_pred)
    classes = _num_classes(num_classes, y_pred, ("y_true", true), ("y_pred", pred))
    return skm.recall_score(true, pred, labels=np.arange(classes), average=None,
                            zero_division=np.nan).astype(np.float64)


def classification_report(y_true, y_pred, class_names) -> dict:
    """WA, UA, macro-F1, per-class recall and confusion counts in one JSON-ready dict.

    Args:
        y_true: ``(n,)`` reference class indices.
        y_pred: ``(n,)`` predicted class indices, or ``(n, classes)`` probabilities or
            scores (argmax taken).
        class_names: C names; class index k is ``class_names[k]``.

    Returns:
        ``{"n": n, "wa": float, "ua": float, "macro_f1": float,
        "recall": {name: float or None}, "confusion": C lists of C ints,
        "class_names": [...]}``; a recall is None for a class absent from ``y_true``;
        the confusion rows are reference classes, the columns predicted classes.

    Raises:
        ValueError: Wrong shapes, lengths differ, no or repeated class names, or a label
            is not in ``0..C-1``.
    """
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names repeats a name: {names}")
    true, pred = _pair(y_true, y_pred)
    recall = per_class_recall(true, y_pred, len(names))
    return {
        "n": int(true.shape[0]),
        "wa": weighted_accuracy(true, pred),
        "ua": unweighted_accuracy(true, pred),
        "macro_f1": macro_f1(true, pred),
        "recall": {name: None if np.isnan(r) else float(r) for name, r in zip(names, recall)},
        "confusion": confusion(true, pred, len(names)).tolist(),
        "class_names": names,
    }


def mean_std(values) -> tuple:
    """Mean and population standard deviation (ddof=0) of per-fold scores.

    Args:
        values: ``(folds,)`` scores, one per fold.

    Returns:
        ``(mean, std)`` as floats; std divides by the number of folds (ddof=0).

    Raises:
        ValueError: ``values`` is not 1-D, is empty, or holds a non-finite value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty (folds,) array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"values holds a non-finite score: {v.tolist()}")
    return float(v.mean()), float(v.std(ddof=0))


def format_mean_std(values, digits: int = 1, percent: bool = True) -> str:
    """Per-fold scores as ``"61.7 ± 2.3"``: mean ± population std (ddof=0).

    Args:
        values: ``(folds,)`` scores, one per fold.
        digits: Digits after the decimal point.
        percent: True when ``values`` are fractions in [0, 1], printed times 100 (no ``%``
            sign); False prints them as given (already percent, or any other unit).

    Returns:
        The formatted string.

    Raises:
        ValueError: As `mean_std`, or ``digits`` is negative.
    """
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    mean, std = mean_std(values)
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return int(levels)


def fuzzy_labels(ratings, levels: int = 5) -> np.ndarray:
    """Fuzzy labels of mean ratings: mass split linearly between the neighbouring levels.

    A mean rating r between integers ``l <= r <= l + 1`` puts ``1 - (r - l)`` on level l
    and ``r - l`` on level l + 1, so the expected level of the label is r itself:
    4.5 -> ``[0, 0, 0, .5, .5]``, 4.25 -> ``[0, 0, 0, .75, .25]``, 3 -> ``[0, 0, 1, 0, 0]``.

    Args:
        ratings: ``(n,)`` mean ratings on the scale 1..levels.
        levels: Number of scale points K.

    Returns:
        ``(n, K)`` float64 distributions; column k is level k + 1.

    Raises:
        ValueError: ``ratings`` is not 1-D, or a rating is NaN or outside [1, K] (the
            message names the value and its index).

    Reference:
        Chang & Scherer, "Learning representations of emotional speech with deep
        convolutional generative adversarial networks", ICASSP 2017, Sec. "Data
        Corpus" (4.5 -> equal mass on 4 and 5; the linear split of other means is our
        choice).
    """
    levels = _check_levels(levels)
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"ratings must have shape (n,), got shape {r.shape}")
    bad = ~(np.isfinite(r) & (r >= 1) & (r <= levels))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"mean rating {float(r[index])!r} at index {index} is outside the "
                         f"scale [1, {levels}]")
    # The upper neighbour (0-based) of r; r == levels gets all its mass there.
    upper = np.minimum(np.floor(r).astype(np.int64), levels - 1)
    fraction = r - upper
    out = np.zeros((r.shape[0], levels))
    rows = np.arange(r.shape[0])
    out[rows, upper - 1] = 1.0 - fraction
    out[rows, upper] += fraction
    return out


def fuzzy_label(mean_rating: float, levels: int = 5) -> np.ndarray:
    """Fuzzy label of one mean rating (see `fuzzy_labels`).

    Args:
        mean_rating: Mean of the annotators' ratings on the scale 1..levels.
        levels: Number of scale points K.

    Returns:
        ``(K,)`` float64 distribution: one-hot at an integer rating, else split linearly
        between the two neighbouring levels (4.5 -> ``[0, 0, 0, .5, .5]``).

    Raises:
        ValueError: The rating is not a scalar, is NaN, or lies outside [1, K].

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Data Corpus" (linear split: our choice).
    """
    if np.ndim(mean_rating) != 0:
        raise ValueError(f"mean_rating must be a scalar, got shape {np.shape(mean_rating)}")
    levels = _check_levels(levels)
    value = float(mean_rating)
    if not (np.isfinite(value) and 1 <= value <= levels):
        raise ValueError(f"mean rating {value!r} is outside the scale [1, {levels}]")
    return fuzzy_labels([value], levels)[0]


def expected_value(probs, levels=None) -> np.ndarray:
    """Expected level of predicted distributions: ``sum_k p_k * level_k``.

    Args:
        probs: ``(n, K)`` distributions over the K levels.
        levels: ``(K,)`` value of each level; default ``1..K``.

    Returns:
        ``(n,)`` float64 expected values.

    Raises:
        ValueError: ``probs`` is not ``(n, K)`` and finite, or ``levels`` is not ``(K,)``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design".
    """
    p = _matrix(probs, "probs")
    if levels is None:
        values = np.arange(1, p.shape[1] + 1, dtype=np.float64)
    else:
        values = np.asarray(levels, dtype=np.float64)
        if values.shape != (p.shape[1],):
            raise ValueError(f"levels must have shape ({p.shape[1]},) to match probs, "
                             f"got shape {values.shape}")
    return p @ values


def pearson_expected(probs, mean_ratings, levels=None) -> tuple:
    """Pearson correlation of the predicted expected level with the true mean rating.

    Args:
        probs: ``(n, K)`` predicted distributions over the K levels, n >= 2.
        mean_ratings: ``(n,)`` mean annotator ratings.
        levels: ``(K,)`` value of each level; default ``1..K``.

    Returns:
        ``(r, p_value)`` from `scipy.stats.pearsonr` (two-sided); NaN when either side is
        constant.

    Raises:
        ValueError: Shapes or lengths differ, fewer than two utterances, or a non-finite
            rating.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design".
    """
    predicted = expected_value(probs, levels)
    target = np.asarray(mean_ratings, dtype=np.float64)
    if target.ndim != 1:
        raise ValueError(f"mean_ratings must have shape (n,), got shape {target.shape}")
    if target.shape[0] != predicted.shape[0]:
        raise ValueError(f"probs has {predicted.shape[0]} rows but mean_ratings has "
                         f"{target.shape[0]} values")
    if target.shape[0] < 2:
        raise ValueError("Pearson correlation needs at least two utterances")
    if not np.isfinite(target).all():
        raise ValueError("mean_ratings holds a non-finite value")
    result = scipy.stats.pearsonr(predicted, target)
    return float(result.statistic), float(result.pvalue)


def pool_5_to_3(x, index_base=None) -> np.ndarray:
    """Pool a 5-point scale to 3 points: 1-2 negative, 3 neutral, 4-5 positive.

    Args:
        x: Either ``(n, 5)`` distributions or counts over the 5 levels, whose mass is
            summed into ``(n, 3)``; or ``(n,)`` integer levels.
        index_base: For ``(n,)`` levels only, and then required: 1 when they are ratings
            1..5 (pooled to 1..3), 0 when they are class indices 0..4 (pooled to 0..2).

    Returns:
        ``(n, 3)`` pooled mass (same dtype kind as ``x``), or ``(n,)`` int64 pooled levels
        in the same base as the input.

    Raises:
        ValueError: ``x`` is neither ``(n, 5)`` nor ``(n,)``; ``index_base`` is not 0 or 1
            for levels; a level is outside ``index_base..index_base + 4``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design".
    """
    array = np.asarray(x)
    if array.ndim == 2:
        if array.shape[1] != 5:
            raise ValueError(f"distributions must have shape (n, 5), got shape {array.shape}")
        return np.stack([array[:, :2].sum(axis=1), array[:, 2], array[:, 3:].sum(axis=1)],
                        axis=1)
    if array.ndim != 1:
        raise ValueError(f"x must have shape (n, 5) or (n,), got shape {array.shape}")
    if index_base not in (0, 1) or isinstance(index_base, bool):
        raise ValueError("index_base must be 1 (levels 1..5) or 0 (class indices 0..4) when "
                         f"pooling (n,) levels, got {index_base!r}")
    levels = _labels(array, "levels") - index_base
    bad = (levels < 0) | (levels > 4)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"level {array[index].item()!r} at index {index} is outside "
                         f"{index_base}..{index_base + 4}")
    return _POOL_5_TO_3[levels] + index_base


def accept_either_targets(y_pred, target_dist, atol: float = 1e-9) -> np.ndarray:
    """Hard targets under which a prediction of any top-rated class counts as correct.

    When annotators split evenly between two labels, predicting either one is correct.
    The target of utterance i is the predicted class if it carries the maximum target mass
    (within ``atol``), else the argmax of the target (the lower class on ties). A one-hot
    target therefore gives its own class, exactly as ordinary scoring.

    Args:
        y_pred: ``(n,)`` predicted class indices, or ``(n, C)`` scores (argmax taken).
        target_dist: ``(n, C)`` non-negative target mass per class (e.g. the fraction of
            annotators choosing each label, or fuzzy labels).
        atol: Mass difference still counted as a tie.

    Returns:
        ``(n,)`` int64 targets to score ``y_pred`` against.

    Raises:
        ValueError: Shapes or lengths differ, a target row is negative or without mass,
            or a prediction is not in ``0..C-1``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design" (its example is a 4.5
        label; applying the rule to any tie is our reading).
    """
    target = _matrix(target_dist, "target_dist")
    if (target < 0).any() or (target.max(axis=1) <= 0).any():
        row = int(np.flatnonzero((target < 0).any(axis=1) | (target.max(axis=1) <= 0))[0])
        raise ValueError(f"target_dist row {row} must be non-negative with some mass, got "
                         f"{target[row].tolist()}")
    pred = _predictions(y_pred)
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"y_pred has {pred.shape[0]} rows but target_dist has "
                         f"{target.shape[0]}")
    _num_classes(target.shape[1], y_pred, ("y_pred", pred))
    rows = np.arange(target.shape[0])
    top = target[rows, pred] >= target.max(axis=1) - atol
    return np.where(top, pred, target.argmax(axis=1)).astype(np.int64)


def accept_either_report(probs, target_dist, class_names, atol: float = 1e-9) -> dict:
    """`classification_report` against the accept-either targets of `accept_either_targets`.

    Args:
        probs: ``(n, C)`` predicted probabilities or scores, or ``(n,)`` class indices.
        target_dist: ``(n, C)`` non-negative target mass per class.
        class_names: C names.
        atol: Mass difference still counted as a tie.

    Returns:
        The dict of `classification_report`.

    Raises:
        ValueError: As `accept_either_targets` and `classification_report`, or
            ``target_dist`` has a column count other than ``len(class_names)``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design".
    """
    if np.ndim(target_dist) == 2 and np.shape(target_dist)[1] != len(class_names):
        raise ValueError(f"target_dist has {np.shape(target_dist)[1]} columns but there are "
                         f"{len(class_names)} class names")
    targets = accept_either_targets(probs, target_dist, atol)
    return classification_report(targets, probs, class_names)


#: Largest imaginary part of sqrt(S_a S_b)'s diagonal, relative to max(1, its largest
#: real diagonal value), that `frechet_distance` discards as numerical noise.
IMAG_TOLERANCE = 1e-3
#: Ridge added to both covariances when sqrt(S_a S_b) is not finite (singular product).
SQRTM_EPS = 1e-6


def _embedding_set(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (n, d) array of embeddings, got shape "
                         f"{array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to fit a covariance, got "
                         f"{array.shape[0]}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has no embedding dimension (shape {array.shape})")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return array


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings.

    With the sample means ``mu`` and the unbiased sample covariances ``S`` (``n - 1``
    in the denominator, as `numpy.cov`) of the rows of ``a`` and ``b``::

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    the squared 2-Wasserstein distance between N(mu_a, S_a) and N(mu_b, S_b), i.e. the
    FID formula of Heusel et al. (2017, eq. after Sec. "Fréchet Inception Distance"),
    here in any embedding space (keras-ser uses the SER network's to compare real and
    generated patches; this measure is our addition, Eskimez et al. 2020 report only F1
    in Table 2). The result is in squared embedding units. The matrix square root is
    `scipy.linalg.sqrtm`; when it is not finite (a singular product, e.g. ``n <= d``)
    it is recomputed with `SQRTM_EPS` added to both covariance diagonals. An imaginary
    part from rounding is dropped if no diagonal entry's exceeds `IMAG_TOLERANCE`
    times max(1, the largest real diagonal entry). Rounding below zero returns 0.

    The estimate is biased for small ``n`` (it falls as ``n`` grows); compare
    distances computed from equal numbers of rows.

    Args:
        a: ``(n_a, d)`` array-like of embeddings.
        b: ``(n_b, d)`` array-like of embeddings.

    Returns:
        The distance ``d^2`` as a Python float (>= 0).

    Raises:
        ValueError: An input is not 2-D real numbers, has fewer than 2 rows or
            non-finite values, the widths ``d`` differ, or the square root has a
            non-negligible imaginary part.
    """
    a = _embedding_set(a, "a")
    b = _embedding_set(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: a is {a.shape}, b is {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ridge = SQRTM_EPS * np.eye(cov_a.shape[0])
        root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
        if not np.isfinite(root).all():
            raise ValueError("sqrt(S_a S_b) is not finite, even with a ridge of "
                             f"{SQRTM_EPS}")
    diagonal = np.diagonal(root)
    if np.iscomplexobj(diagonal):
        imaginary = float(np.abs(diagonal.imag).max())
        scale = max(1.0, float(np.abs(diagonal.real).max()))
        if imaginary > IMAG_TOLERANCE * scale:
            raise ValueError(f"sqrt(S_a S_b) has an imaginary part of {imaginary:.3g} on "
                             f"its diagonal (real scale {scale:.3g}): covariances too "
                             "ill-conditioned; use more rows or a smaller embedding")
        diagonal = diagonal.real
    difference = mean_a - mean_b
    distance = (float(difference @ difference) + float(np.trace(cov_a))
                + float(np.trace(cov_b)) - 2.0 * float(diagonal.sum()))
    return max(distance, 0.0)
