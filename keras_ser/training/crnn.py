"""Training and evaluation of the CNN + BiLSTM of Etienne et al. (SMM 2018) on one fold.

`train_fold` z-scores the log-mels with the training speakers' mean and standard
deviation (eq. 2), trains `keras_ser.models.crnn.CRNN` with the layer-wise SGD
(`keras_ser.optimizers.LayerwiseSGD`, batch 16), keeps the epoch of best validation
UA, and scores the test speaker: WA, UA, macro-F1 and the confusion matrix. VTLP
(Sec. 3.3) comes in the paper's two strategies:

* ``"epoch"``: one warp factor alpha ~ U(0.9, 1.1) per epoch for every training
  example (`keras_ser.augment.EpochAlpha`); validation and test unwarped.
* ``"example"``: a factor per example for training and validation; the test
  prediction is the majority vote over the eleven copies warped by alpha = 0.90, 0.92,
  ..., 1.10 (`tta_probabilities`, `majority_vote`).

Everything a fold writes lands in its own folder (``ckpt/`` per-epoch checkpoint,
``logs/`` TensorBoard with the per-group gradient norms of Figure 3, ``model.keras``,
``result.json``); an interrupted fold resumes from its last finished epoch and a
finished one is read back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import weakref
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_ser import augment, data, metrics
from keras_ser.models import crnn
from keras_ser.optimizers import crnn_optimizer
from keras_ser.training.callbacks import LambdaLogs, ResumableEarlyStopping, atomic_json

VTLP_STRATEGIES = ("none", "epoch", "example")
#: One traced inference function per model, so repeated predictions (every epoch's
#: validation, the eleven test copies) do not retrace.
_FORWARD = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What one training run of the CNN + BiLSTM does.

    Attributes:
        features: Front end, ``"etienne"`` (log-mel up to 4 kHz) or ``"etienne_8k"``.
        vtlp: ``"none"``, ``"epoch"`` or ``"example"`` (module docstring).
        oversample: Classes repeated twice in the training split (paper: happiness and
            anger).
        batch_size: Examples per batch (paper: 16).
        max_epochs: Epoch budget.
        patience: Epochs without a new best validation UA before stopping.
        conv_lr, recurrent_lr, dense_lr: eta of eq. 6 per layer group.
        conv_momentum, recurrent_momentum, momentum: gamma per group (dense: momentum).
        conv_beta, recurrent_beta: beta of eq. 6 per group.
        seed: Seed of initialisation, shuffling and warp factors.
    """

    features: str = "etienne"
    vtlp: str = "none"
    oversample: tuple = ()
    batch_size: int = 16
    max_epochs: int = 30
    patience: int = 8
    conv_lr: float = 0.01
    recurrent_lr: float = 0.01
    dense_lr: float = 0.01
    conv_momentum: float = 0.9
    recurrent_momentum: float = 0.9
    momentum: float = 0.9
    conv_beta: float = 1.0
    recurrent_beta: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.vtlp not in VTLP_STRATEGIES:
            raise ValueError(f"vtlp must be one of {VTLP_STRATEGIES}, got {self.vtlp!r}")
        if self.features not in ("etienne", "etienne_8k"):
            raise ValueError(f"features must be 'etienne' or 'etienne_8k', got "
                             f"{self.features!r}")

    def replace(self, **changes) -> "TrainConfig":
        """A copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        d = dataclasses.asdict(self)
        d["oversample"] = list(self.oversample)
        return d


#: The ablation of the paper's Table 1, cumulative: each row adds one technique to
#: the row above ("+VTLP" with the per-example strategy and 11-copy test vote; the
#: per-epoch strategy is a row of its own).
VARIANTS = {
    "baseline": {},
    "oversampling": {"oversample": ("happiness", "anger")},
    "vtlp_epoch": {"oversample": ("happiness", "anger"), "vtlp": "epoch"},
    "vtlp": {"oversample": ("happiness", "anger"), "vtlp": "example"},
    "8khz": {"oversample": ("happiness", "anger"), "vtlp": "example",
             "features": "etienne_8k"},
}
#: Row titles of the ablation table.
VARIANT_TITLES = {
    "baseline": "Baseline",
    "oversampling": "+ oversampling ×2 (happiness, anger)",
    "vtlp_epoch": "+ VTLP, one α per epoch",
    "vtlp": "+ VTLP, α per example, 11-copy test vote",
    "8khz": "+ 8 kHz upper frequency",
}


def variant_config(name: str, base: TrainConfig, classes: Sequence[str]) -> TrainConfig:
    """The `TrainConfig` of an ablation row; oversampled classes missing from
    ``classes`` are dropped (a corpus without "happiness" oversamples the others).

    Raises:
        ValueError: Unknown variant.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    changes = dict(VARIANTS[name])
    if "oversample" in changes:
        changes["oversample"] = tuple(c for c in changes["oversample"] if c in classes)
    return base.replace(**changes)


def fold_statistics(records, speakers, classes, features: str, labels=None) -> dict:
    """Mean and standard deviation of the unwarped log-mels of the training speakers,
    over valid frames (Etienne et al. 2018, eq. 2); `keras_ser.data.feature_statistics`.

    Raises:
        ValueError: The speakers have no utterance of ``classes``.
    """
    ds = data.make_dataset(records, classes=classes, speakers=speakers, features=features,
                           labels=labels, batch_size=32)
    return data.feature_statistics(ds)


def _inputs(dataset):
    return data.to_keras(dataset, inputs=("features", "length"), targets="label")


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset) -> tuple:
    """Probabilities and labels of every utterance of a `make_dataset` dataset.

    Returns:
        ``(probs (N, N_c) float32, labels (N,) int32)`` in dataset order.
    """
    forward = _FORWARD.get(model)
    if forward is None:
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        _FORWARD[model] = forward
    probs, labels = [], []
    for batch in dataset:
        probs.append(forward({"features": batch["features"],
                              "length": batch["length"]}).numpy())
        labels.append(batch["label"].numpy())
    if not probs:
        return np.zeros((0, model.config.num_classes), np.float32), np.zeros(0, np.int32)
    return np.concatenate(probs), np.concatenate(labels).astype(np.int32)


def tta_probabilities(model: keras.Model, dataset_for: Callable[[float], tf.data.Dataset],
                      alphas: Sequence[float] = augment.VTLP_TTA_ALPHAS) -> tuple:
    """Probabilities of every test utterance under each VTLP warp factor.

    Args:
        model: The classifier.
        dataset_for: ``alpha -> dataset`` of the test utterances warped by ``alpha``
            (same order for every alpha).
        alphas: Warp factors (paper: the eleven 0.90, 0.92, ..., 1.10).

    Returns:
        ``(probs (len(alphas), N, N_c), labels (N,))``.

    Raises:
        ValueError: The copies disagree on the utterances' labels or count.

    Reference:
        Etienne et al., SMM 2018, Sec. 3.3 (second strategy).
    """
    copies, labels = [], None
    for alpha in alphas:
        probs, lab = predict_dataset(model, dataset_for(float(alpha)))
        if labels is not None and not np.array_equal(labels, lab):
            raise ValueError(f"the test copy warped by alpha={alpha} holds other "
                             "utterances than the first copy")
        labels = lab
        copies.append(probs)
    return np.stack(copies), labels


def majority_vote(copies: np.ndarray) -> tuple:
    """Majority vote of the class predicted on each copy of each utterance.

    Args:
        copies: ``(n_copies, N, N_c)`` probabilities.

    Returns:
        ``(predictions (N,) int, votes (N, N_c) int)``; ``votes[i].sum() == n_copies``.
        Ties go to the tied class of highest mean probability.

    Raises:
        ValueError: ``copies`` is not 3-D or has no copy.
    """
    copies = np.asarray(copies)
    if copies.ndim != 3 or copies.shape[0] == 0:
        raise ValueError(f"copies must be (n_copies, N, N_c) with n_copies > 0, got "
                         f"{copies.shape}")
    num_classes = copies.shape[2]
    votes = np.eye(num_classes, dtype=int)[copies.argmax(axis=2)].sum(axis=0)
    mean = copies.mean(axis=0)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, mean, -np.inf).argmax(axis=1), votes


def scores(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """WA, UA, macro-F1 and the confusion matrix (rows: true class)."""
    return {"wa": metrics.weighted_accuracy(labels, predictions),
            "ua": metrics.unweighted_accuracy(labels, predictions),
            "macro_f1": metrics.macro_f1(labels, predictions, labels=list(range(num_classes))),
            "confusion": metrics.confusion(labels, predictions, num_classes).tolist(),
            "utterances": int(len(labels))}


def build_model(model_config: crnn.CRNNConfig, config: TrainConfig) -> crnn.CRNN:
    """A compiled `CRNN` with the layer-wise SGD of ``config``."""
    keras.utils.set_random_seed(config.seed)
    model = crnn.CRNN(model_config, name="crnn")
    model.build()
    model.compile(optimizer=crnn_optimizer(
        conv_lr=config.conv_lr, recurrent_lr=config.recurrent_lr, dense_lr=config.dense_lr,
        conv_momentum=config.conv_momentum, recurrent_momentum=config.recurrent_momentum,
        momentum=config.momentum, conv_beta=config.conv_beta,
        recurrent_beta=config.recurrent_beta))
    model.optimizer.build(model.trainable_variables)
    return model


def train_fold(model_config: crnn.CRNNConfig, config: TrainConfig, fold, records: str,
               classes: Sequence[str], out_dir: str, *, labels: dict | None = None,
               stats: dict | None = None, verbose="auto") -> dict:
    """Train on ``fold.train``, select the epoch on ``fold.validation``, test on
    ``fold.test``.

    Args:
        model_config: Network sizes (``n_mels`` and ``num_classes`` must match).
        config: Training and augmentation settings.
        fold: `keras_ser.folds.Fold`.
        records: Record folder.
        classes: Emotion names in class-index order.
        out_dir: Folder of this (variant, fold); see the module docstring.
        labels: Optional ``{utterance_id: class index}`` restricting the utterances
            (e.g. IEMOCAP's improvised dialogs), as in `keras_ser.data.make_dataset`.
        stats: z-score statistics of the training speakers (`fold_statistics`);
            computed when None.
        verbose: Keras ``fit`` verbosity.

    Returns:
        Dict with ``fold``, speakers, ``config``, ``model_config``, ``epochs``,
        ``best_epoch``, ``validation`` and ``test`` scores (`scores`; with
        ``vtlp="example"`` the test is the 11-copy vote and ``test_single`` the
        unwarped copy alone), ``normalisation`` and ``train_seconds``.

    Raises:
        ValueError: A split without utterances, mismatched sizes, or a checkpoint of
            another configuration in ``out_dir``.

    Reference:
        Etienne et al., SMM 2018, Secs. 3-4.
    """
    os.makedirs(out_dir, exist_ok=True)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    if model_config.num_classes != len(classes):
        raise ValueError(f"model has {model_config.num_classes} classes, data {len(classes)}")
    metadata = data.record_metadata(records)
    for part in ("train", "validation", "test"):
        speakers = set(fold.part(part))
        n = sum(1 for r in metadata if r["speaker"] in speakers and (
            r["emotion"] in classes if labels is None else r["utterance_id"] in labels))
        if n == 0:
            raise ValueError(f"fold {fold.name}: no {part} utterances of {list(classes)} "
                             f"for speakers {sorted(speakers)} in {records}")
    if stats is None:
        stats = fold_statistics(records, fold.train, classes, config.features, labels)
    norm = {"mean": float(stats["mean"]), "std": float(stats["std"])}
    common = dict(classes=classes, features=config.features, labels=labels,
                  normalise="zscore", stats=norm)
    start = time.time()
    model = build_model(model_config, config)
    epoch_alpha = augment.EpochAlpha(config.seed) if config.vtlp == "epoch" else None
    train_vtlp = {"none": None, "epoch": epoch_alpha, "example": "example"}[config.vtlp]
    train = data.make_dataset(
        records, speakers=fold.train, vtlp=train_vtlp, shuffle=True, seed=config.seed,
        oversample={c: 2 for c in config.oversample} or None, batch_size=config.batch_size,
        cache=True, **common)
    validation = data.make_dataset(
        records, speakers=fold.validation, batch_size=32, seed=config.seed + 1,
        vtlp="example" if config.vtlp == "example" else None, cache=True, **common)

    def validation_logs(epoch):
        probs, lab = predict_dataset(model, validation)
        s = scores(lab, probs.argmax(1), len(classes))
        return {"val_wa": s["wa"], "val_ua": s["ua"]}

    stopper = ResumableEarlyStopping(os.path.join(out_dir, "ckpt"), "val_ua", config.patience,
                                     optimizers={"sgd": model.optimizer})
    initial_epoch = stopper.restore(model)
    callbacks = [LambdaLogs(validation_logs), stopper,
                 keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"))]
    if epoch_alpha is not None:
        callbacks.insert(0, epoch_alpha.callback())
    if not stopper.finished and initial_epoch < config.max_epochs:
        model.fit(_inputs(train), epochs=config.max_epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    stopper.restore_best(model)
    train_seconds = time.time() - start

    val_probs, val_labels = predict_dataset(model, validation)
    test_plain = data.make_dataset(records, speakers=fold.test, batch_size=32, **common)
    probs, test_labels = predict_dataset(model, test_plain)
    result = {
        "fold": fold.name, "validation_speakers": sorted(fold.validation),
        "test_speakers": sorted(fold.test), "classes": list(classes),
        "config": config.to_dict(), "model_config": model_config.to_dict(),
        "epochs": int(stopper.state["epoch"]) + 1,
        "best_epoch": int(stopper.state["best_epoch"]) + 1,
        "validation": scores(val_labels, val_probs.argmax(1), len(classes)),
        "normalisation": norm, "train_seconds": round(train_seconds, 1)}
    if config.vtlp == "example":
        copies, test_labels = tta_probabilities(model, lambda a: data.make_dataset(
            records, speakers=fold.test, batch_size=32, vtlp=a, **common))
        predictions, votes = majority_vote(copies)
        result["test"] = scores(test_labels, predictions, len(classes))
        result["test"]["copies"] = int(copies.shape[0])
        result["test_single"] = scores(test_labels, probs.argmax(1), len(classes))
    else:
        result["test"] = scores(test_labels, probs.argmax(1), len(classes))
    model.save(os.path.join(out_dir, "model.keras"))
    atomic_json(result_path, result)
    return result
