"""The reference row of every results table: eGeMAPS functionals + a linear SVM.

Eyben et al., "The Geneva Minimalistic Acoustic Parameter Set (GeMAPS) for Voice Research
and Affective Computing", IEEE Trans. Affective Computing 7(2), 2016: 88 functionals per
utterance (the extended set, eGeMAPS), classified with a linear-kernel SVM. This is what
a researcher runs in a minute instead of a deep network, so every keras-ser table on real
speech shows it, computed on the recipe's own folds and utterances.

- Features: openSMILE's ``eGeMAPSv02`` functionals through audEERING's ``opensmile``
  package (no hand-written features), one ``(88,)`` vector per utterance of the 16 kHz
  waveform the records hold; cached per record folder (`cached_egemaps`).
- Normalisation, both reported: ``global`` z-scoring with the training utterances'
  mean and standard deviation, and ``speaker`` z-scoring, each speaker's features
  standardised with that speaker's own statistics over all of its utterances in the
  run (the test speaker's too, without their labels: transductive, the usual practice
  on EmoDB; on a corpus where the run keeps only some classes, "all" means the kept
  utterances).
- Classifier: ``sklearn.svm.SVC(kernel="linear", class_weight="balanced")`` (libsvm, one
  vs one, deterministic); C from `C_GRID` with the best unweighted average recall (UA)
  on the validation speakers, or, for a fold without validation speakers, by 3-fold
  cross-validation on the training utterances (grouped by speaker when there are three
  or more; our choice). The chosen SVM is the one trained on the training utterances
  (validation utterances are never trained on, as for the networks).

`run` evaluates both rows on a list of folds through `keras_ser.experiment.run_folds`, so
the baseline lives in the same ``runs/<row>/<fold>/result.json`` layout as the networks
and the same tables, paired tests and summaries use it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from keras_ser import io, metrics

#: The two rows, in table order.
ROWS = ("egemaps_global", "egemaps_speaker")
#: Row titles in results tables.
TITLES = {"egemaps_global": "eGeMAPS + SVM, global z (reference)",
          "egemaps_speaker": "eGeMAPS + SVM, per-speaker z (reference)"}
#: Normalisation of each row (`normalise`).
NORMALISATION = {"egemaps_global": "global", "egemaps_speaker": "speaker"}
#: SVM complexity values tried on the validation speakers (our choice: the decades
#: around libsvm's default 1 that z-scored eGeMAPS features need).
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Feature dimension of eGeMAPSv02 functionals (Eyben et al. 2016, Sec. 3.2).
DIMENSION = 88
#: Sampling rate of the records' waveforms (Hz).
SAMPLE_RATE = 16000


def smile():
    """openSMILE configured for eGeMAPSv02 functionals (one row of 88 per signal).

    Raises:
        ImportError: The ``opensmile`` package is missing (``pip install opensmile``).
    """
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def feature_names() -> list:
    """The 88 eGeMAPSv02 functional names, in column order."""
    return list(smile().feature_names)


def egemaps(waveforms: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE,
            progress: bool = True) -> np.ndarray:
    """eGeMAPSv02 functionals of each waveform.

    Args:
        waveforms: 1-D arrays, int16 PCM (scaled by 1/32768, as a WAV reader does) or
            float in [-1, 1].
        sample_rate: Their rate (Hz).
        progress: Show a tqdm bar.

    Returns:
        ``(n, 88)`` float64 features (`feature_names` order).

    Raises:
        ValueError: A waveform is not 1-D or empty (openSMILE would return NaNs).
    """
    import subprocess
    import tempfile

    signals = []
    for i, wave in enumerate(waveforms):
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"waveform {i} has shape {wave.shape}; expected (samples,)")
        signals.append(wave.astype(np.float32) / 32768.0 if wave.dtype == np.int16
                       else wave.astype(np.float32))
    if not signals:
        return np.zeros((0, DIMENSION))
    # openSMILE runs in a fresh interpreter: its library loaded into a process where
    # TensorFlow has already run corrupts the heap ("malloc(): invalid size (unsorted)",
    # opensmile 2.6 with TF 2.21, seen here).
    with tempfile.TemporaryDirectory(prefix="egemaps-") as tmp:
        jobs, done = os.path.join(tmp, "signals.npz"), os.path.join(tmp, "features.npy")
        np.savez(jobs, samples=np.concatenate(signals),
                 ends=np.cumsum([len(x) for x in signals]), sample_rate=sample_rate)
        run = subprocess.run([sys.executable, "-m", "keras_ser.baselines", jobs, done]
                             + ([] if progress else ["--quiet"]), check=False)
        if run.returncode != 0 or not os.path.isfile(done):
            raise RuntimeError(f"openSMILE failed (exit status {run.returncode}); see the "
                               "messages above")
        return np.load(done).astype(np.float64).reshape(len(signals), DIMENSION)


def _worker(jobs: str, done: str, progress: bool) -> None:
    """``python -m keras_ser.baselines SIGNALS.npz FEATURES.npy``: `egemaps`' process."""
    from tqdm import tqdm

    engine = smile()
    with np.load(jobs) as z:
        samples, ends, rate = z["samples"], z["ends"], int(z["sample_rate"])
    starts = np.concatenate([[0], ends[:-1]])
    rows = [engine.process_signal(samples[a:b], rate).to_numpy()[0]
            for a, b in tqdm(list(zip(starts, ends)), desc="eGeMAPS", unit="utt",
                             disable=not progress, leave=False)]
    np.save(done, np.asarray(rows, np.float64))


def _digest(wave: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(wave).tobytes()).hexdigest()


def cache_path(records: str) -> str:
    """Where `cached_egemaps` keeps a record folder's features:
    ``<records>/cache/egemaps-v02-opensmile<version>.npz``."""
    import opensmile

    return os.path.join(records, "cache", f"egemaps-v02-opensmile{opensmile.__version__}.npz")


def cached_egemaps(utterances, path: str | None, progress: bool = True) -> np.ndarray:
    """`egemaps` of `keras_ser.data.Utterances`, read from and added to a cache file.

    The cache holds each utterance id with the SHA-1 of its PCM samples; an utterance
    whose samples changed (or a new one) is computed again and the file rewritten
    atomically.

    Args:
        utterances: ``ids`` and ``waveforms`` (int16, 16 kHz).
        path: The ``.npz`` cache (`cache_path`), or None for no cache.
        progress: Show a tqdm bar for the utterances computed.

    Returns:
        ``(n, 88)`` float64 features in ``utterances`` order.

    Raises:
        ValueError: An unreadable cache file (the message names it).
    """
    digests = [_digest(w) for w in utterances.waveforms]
    known = {}
    if path and os.path.isfile(path):
        try:
            with np.load(path) as z:
                known = {(str(i), str(d)): f for i, d, f in
                         zip(z["ids"], z["digests"], z["features"])}
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: unreadable eGeMAPS cache ({err}); remove it") from None
    missing = [k for k, key in enumerate(zip(utterances.ids, digests)) if key not in known]
    if missing:
        computed = egemaps([utterances.waveforms[k] for k in missing], progress=progress)
        for k, row in zip(missing, computed):
            known[(utterances.ids[k], digests[k])] = row
        if path:
            keys = sorted(known)
            try:
                io.save_npz(path, ids=np.array([k[0] for k in keys]),
                            digests=np.array([k[1] for k in keys]),
                            features=np.stack([known[k] for k in keys]))
            except OSError as err:  # a read-only record folder: compute, do not cache
                print(f"warning: eGeMAPS cache {path} not written ({err})", file=sys.stderr)
    return np.stack([known[key] for key in zip(utterances.ids, digests)])


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / np.where(std > 0, std, 1.0)


def zscore_global(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Z-score every row with the mean and population std of the ``train`` rows.

    Args:
        features: ``(n, d)``.
        train: Row indices whose statistics are used.

    Returns:
        ``(n, d)``; a feature constant over ``train`` is only centred.
    """
    ref = features[np.asarray(train, np.int64)]
    return _standardise(features, ref.mean(axis=0), ref.std(axis=0))


def zscore_per_speaker(features: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """Z-score each speaker's rows with that speaker's own mean and population std.

    Transductive for a test speaker (its statistics come from its unlabelled features).

    Args:
        features: ``(n, d)``.
        speakers: ``(n,)`` speaker of each row.

    Returns:
        ``(n, d)``; a feature constant within a speaker is only centred.
    """
    speakers = np.asarray(speakers)
    out = np.empty_like(features, dtype=np.float64)
    for s in np.unique(speakers):
        rows = speakers == s
        out[rows] = _standardise(features[rows], features[rows].mean(axis=0),
                                 features[rows].std(axis=0))
    return out


def normalise(features: np.ndarray, speakers: Sequence[str], train: np.ndarray,
              how: str) -> np.ndarray:
    """`zscore_global` (``how="global"``) or `zscore_per_speaker` (``"speaker"``).

    Raises:
        ValueError: Unknown ``how``.
    """
    if how == "global":
        return zscore_global(features, train)
    if how == "speaker":
        return zscore_per_speaker(features, speakers)
    raise ValueError(f"normalisation must be 'global' or 'speaker', got {how!r}")


def linear_svm(c: float):
    """The classifier: a class-balanced linear-kernel SVM (libsvm, deterministic)."""
    from sklearn.svm import SVC

    return SVC(kernel="linear", C=c, class_weight="balanced")


def _ua(y_true, y_pred) -> float:
    from sklearn.metrics import recall_score

    return float(recall_score(y_true, y_pred, average="macro", zero_division=0))


def choose_c(x_train, y_train, x_val=None, y_val=None, groups=None,
             grid: Sequence[float] = C_GRID) -> tuple:
    """The complexity C with the best validation UA (ties: the smaller C).

    Args:
        x_train, y_train: ``(n, d)`` features, ``(n,)`` labels.
        x_val, y_val: Validation speakers' features and labels; when absent, 3-fold
            cross-validation on the training rows (`GroupKFold` over ``groups`` when
            there are at least 3 groups, else `StratifiedKFold`; our choice).
        groups: ``(n,)`` training speakers.
        grid: C values.

    Returns:
        ``(C, {C: UA})``.
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    scores = {}
    for c in grid:
        if x_val is not None and len(x_val):
            scores[c] = _ua(y_val, linear_svm(c).fit(x_train, y_train).predict(x_val))
            continue
        if groups is not None and len(set(groups)) >= 3:
            splits = GroupKFold(3).split(x_train, y_train, groups)
        else:
            splits = StratifiedKFold(3, shuffle=True, random_state=0).split(x_train, y_train)
        folds = [_ua(y_train[b], linear_svm(c).fit(x_train[a], y_train[a]).predict(x_train[b]))
                 for a, b in splits]
        scores[c] = float(np.mean(folds))
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, scores


def evaluate(features: np.ndarray, labels: np.ndarray, speakers: Sequence[str],
             train, validation, test, class_names: Sequence[str], how: str) -> dict:
    """Normalise, choose C, train on ``train`` and score ``test`` (and ``validation``).

    Args:
        features: ``(n, 88)`` eGeMAPS of every utterance of the corpus (the per-speaker
            statistics use all of a speaker's utterances).
        labels: ``(n,)`` class indices (-1: not used).
        speakers: ``(n,)``.
        train, validation, test: Index arrays (``validation`` may be empty).
        class_names: C names.
        how: ``"global"`` or ``"speaker"``.

    Returns:
        ``{"c", "c_scores", "validation", "test", "predictions"}``: the classification
        reports (`keras_ser.metrics.classification_report`; validation None when empty)
        and the test predictions ``(len(test),)``.

    Raises:
        ValueError: No training or test utterance, or a label outside the classes.
    """
    train, validation, test = (np.asarray(i, np.int64) for i in (train, validation, test))
    if not len(train) or not len(test):
        raise ValueError(f"a fold needs training and test utterances, got {len(train)} and "
                         f"{len(test)}")
    x = normalise(features, speakers, train, how)
    speakers = np.asarray(speakers)
    c, scores = choose_c(x[train], labels[train],
                         x[validation] if len(validation) else None,
                         labels[validation] if len(validation) else None,
                         groups=speakers[train])
    svm = linear_svm(c).fit(x[train], labels[train])
    predicted = svm.predict(x[test])
    return {"c": c, "c_scores": {repr(k): v for k, v in scores.items()},
            "validation": (metrics.classification_report(
                labels[validation], svm.predict(x[validation]), class_names)
                if len(validation) else None),
            "test": metrics.classification_report(labels[test], predicted, class_names),
            "predictions": predicted}


def split_of_fold(utterances) -> Callable:
    """``split(fold) -> (train, validation, test)`` index arrays of a speaker fold."""
    def split(fold):
        return (utterances.indices(fold.train), utterances.indices(fold.validation),
                utterances.indices(fold.test))
    return split


def run(out: str, utterances, folds: Sequence, class_names: Sequence[str], *,
        rows: Sequence[str] = ROWS, split: Callable | None = None,
        aliases: dict | None = None, cache: str | None = None, seed: int = 0) -> list:
    """The baseline rows on the recipe's folds, resumable like every other row.

    Args:
        out: Run folder (results under ``runs/<row>/<fold>/result.json``).
        utterances: `keras_ser.data.Utterances` with the recipe's ``labels``.
        folds: `keras_ser.folds.Fold` objects (or any object with ``name``).
        class_names: The recipe's classes.
        rows: Which of `ROWS`.
        split: ``split(fold) -> (train, validation, test)`` utterance indices
            (default `split_of_fold`: the fold's speakers).
        aliases: ``{recipe metric: report key}`` copied into each ``test`` dict so the
            recipe's columns find the baseline (e.g. ``{"emotion_ua": "ua"}``); a key
            ``validation_*`` reads the validation report.
        cache: eGeMAPS cache file (`cache_path`), or None.
        seed: Run seed (the SVM is deterministic; it only names the folders' seeds).

    Returns:
        Fold results ``{"row", "fold", "baseline", "normalisation", "c", "c_scores",
        "validation", "test", "utterance_ids", "predictions"}``.

    Raises:
        ValueError: Unknown row.
    """
    from keras_ser import experiment

    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown baseline rows {unknown}; choose from {list(ROWS)}")
    split = split or split_of_fold(utterances)
    features = cached_egemaps(utterances, cache)

    def one(row, fold, path, fold_seed):
        train, validation, test = split(fold)
        result = evaluate(features, utterances.labels, utterances.speakers, train,
                          validation, test, class_names, NORMALISATION[row])
        predicted = result.pop("predictions")
        for key, source in (aliases or {}).items():
            report = result["validation"] if key.startswith("validation_") else result["test"]
            if report is not None:
                result["test"][key] = report[source]
        return {"row": row, "fold": fold.name, "baseline": "egemaps_v02_linear_svm",
                "normalisation": NORMALISATION[row], **result,
                "utterance_ids": [utterances.ids[i] for i in test],
                "predictions": [int(p) for p in predicted]}

    return experiment.run_folds(out, list(rows), folds, seed, one)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], progress="--quiet" not in sys.argv[3:])
