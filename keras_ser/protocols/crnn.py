"""One fold of Etienne et al. (2018): the CNN + BiLSTM, its ablation rows, VTLP.

`train_fold` z-scores the log-mels with the training speakers' mean and standard
deviation (eq. 2; the paper computes them over the whole dataset, we use the training
speakers only so that no test speaker shapes the input), trains
`keras_ser.models.crnn.CRNN` with SGD with momentum (batch 16, Sec. 3), keeps the epoch
of best validation UA (our choice; the paper does not say how it uses the validation
speaker) and scores the test speaker: WA and UA (Sec. 3), plus macro-F1 and the
confusion matrix. VTLP (Sec. 2) comes in the paper's two strategies:

* ``"epoch"``: one warp factor alpha ~ U(0.9, 1.1) per epoch for every training example
  (`keras_ser.augment.epoch_alpha`); validation and test unwarped.
* ``"example"``: a factor per example for training and validation (the validation
  factors are drawn once per fold, our choice, so the epoch is not picked on warp
  noise); the test prediction is the majority vote over the eleven copies warped by
  alpha = 0.90, 0.92, ..., 1.10 (ties to the class of highest mean probability, our
  choice).

Scores come from `keras_ser.scoring` with the export's front end (whole utterances, the
eleven copies for the vote), so they are what the served model computes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from keras_ser import augment, data, io, metrics
from keras_ser.models import crnn
from keras_ser.optimizers import crnn_optimizer
from keras_ser.scoring import Scorer
from keras_ser.serving.builders import FrontEnd
from keras_ser.training.resumable import LambdaLogs, PersistentEarlyStopping, fit_resumable

VTLP_STRATEGIES = ("none", "epoch", "example")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What one training run of the CNN + BiLSTM does.

    Attributes:
        features: Front end, ``"etienne"`` (log-mel up to 4 kHz) or ``"etienne_8k"``.
        vtlp: ``"none"``, ``"epoch"`` or ``"example"`` (module docstring).
        oversample: Classes repeated twice in the training split (paper: happiness and
            anger, Table 1).
        batch_size: Examples per batch (paper: 16; Table 3 also 32 and 64).
        max_epochs: Epoch budget (not given; ours).
        patience: Epochs without a new best validation UA before stopping (ours).
        learning_rate, momentum: eta and gamma of SGD with momentum (values not given;
            ours).
        layerwise: Use the layer-wise update of eq. 6 with the values below (Sec. 3.1;
            the paper found no clear benefit, so it is off by default).
        conv_lr, recurrent_lr: eta per group with ``layerwise``.
        conv_momentum, recurrent_momentum: gamma per group with ``layerwise``.
        conv_beta, recurrent_beta: beta of eq. 6 per group with ``layerwise``.
        seed: Seed of shuffling, crops and warp factors.
        speaker_norm: Z-score each utterance's log-mels with its speaker's own mean and
            deviation (eq. 2 per speaker, over all of the speaker's utterances, the test
            speaker's too, without labels; transductive, our addition, issue 14) instead
            of the training speakers' (the paper's eq. 2).
    """

    features: str = "etienne"
    vtlp: str = "none"
    oversample: tuple = ()
    batch_size: int = 16
    max_epochs: int = 30
    patience: int = 8
    learning_rate: float = 0.01
    momentum: float = 0.9
    layerwise: bool = False
    conv_lr: float = 0.01
    recurrent_lr: float = 0.01
    conv_momentum: float = 0.9
    recurrent_momentum: float = 0.9
    conv_beta: float = 1.0
    recurrent_beta: float = 0.5
    seed: int = 0
    speaker_norm: bool = False

    def __post_init__(self):
        if self.vtlp not in VTLP_STRATEGIES:
            raise ValueError(f"vtlp must be one of {VTLP_STRATEGIES}, got {self.vtlp!r}")
        if self.features not in ("etienne", "etienne_8k"):
            raise ValueError(f"features must be 'etienne' or 'etienne_8k', got "
                             f"{self.features!r}")
        object.__setattr__(self, "oversample", tuple(self.oversample))

    def replace(self, **changes) -> "TrainConfig":
        """A copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        d = dataclasses.asdict(self)
        d["oversample"] = list(self.oversample)
        return d


_BEST = {"oversample": ("happiness", "anger"), "vtlp": "example", "features": "etienne_8k"}

#: Ablation rows: training changes and model changes. Table 1 adds one technique per
#: row; Table 3 is the best model with recurrent batch norm at batch 16, 32 and 64;
#: ``vtlp_epoch`` is the first VTLP strategy, ``layerwise`` the optimiser of eq. 6 and
#: ``conv_bn`` our masked batch norm in the convolution blocks.
VARIANTS = {
    "baseline": ({}, {}),
    "oversampling": ({"oversample": ("happiness", "anger")}, {}),
    "vtlp_epoch": ({"oversample": ("happiness", "anger"), "vtlp": "epoch"}, {}),
    "vtlp": ({"oversample": ("happiness", "anger"), "vtlp": "example"}, {}),
    "8khz": (_BEST, {}),
    "recurrent_bn_16": ({**_BEST, "batch_size": 16}, {"recurrent_bn": True}),
    "recurrent_bn_32": ({**_BEST, "batch_size": 32}, {"recurrent_bn": True}),
    "recurrent_bn_64": ({**_BEST, "batch_size": 64}, {"recurrent_bn": True}),
    "layerwise": ({**_BEST, "layerwise": True}, {}),
    "conv_bn": (_BEST, {"conv_bn": True}),
}
#: Row titles of the ablation table.
VARIANT_TITLES = {
    "baseline": "Baseline",
    "oversampling": "+ oversampling ×2 (happiness, anger)",
    "vtlp_epoch": "+ VTLP, one α per epoch",
    "vtlp": "+ VTLP, α per example, 11-copy test vote",
    "8khz": "+ 8 kHz upper frequency (best model)",
    "recurrent_bn_16": "best + recurrent BN, batch 16",
    "recurrent_bn_32": "best + recurrent BN, batch 32",
    "recurrent_bn_64": "best + recurrent BN, batch 64",
    "layerwise": "best + layer-wise SGD (eq. 6)",
    "conv_bn": "best + batch norm in the conv blocks (ours)",
}
#: The paper's Table 1 rows (the default) and Table 3 rows.
TABLE_1 = ("baseline", "oversampling", "vtlp", "8khz")
TABLE_3 = ("recurrent_bn_16", "recurrent_bn_32", "recurrent_bn_64")


def variant_config(name: str, base: TrainConfig, model: crnn.CRNNConfig,
                   classes: Sequence[str]) -> tuple:
    """``(TrainConfig, CRNNConfig)`` of an ablation row; oversampled classes missing from
    ``classes`` are dropped (a corpus without "happiness" oversamples the others).

    Raises:
        ValueError: Unknown variant.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}")
    train, net = (dict(part) for part in VARIANTS[name])
    if "oversample" in train:
        train["oversample"] = tuple(c for c in train["oversample"] if c in classes)
    return base.replace(**train), model.replace(**net)


def fold_statistics(records, speakers, classes, features: str, labels=None) -> dict:
    """Mean and standard deviation of the unwarped log-mels of ``speakers`` over valid
    frames (eq. 2: one mean and deviation "along both time and frequency axes").

    Raises:
        ValueError: The speakers have no utterance of ``classes``.
    """
    ds = data.make_dataset(records, classes=classes, speakers=speakers, features=features,
                           labels=labels, batch_size=32)
    stats = data.feature_statistics(ds)
    return {"mean": float(stats["mean"]), "std": float(stats["std"])}


def speaker_statistics(records, speakers, features: str) -> dict:
    """`fold_statistics` of each speaker alone, over all of its utterances (no label or
    class used): ``{speaker: {"mean", "std"}}``, for ``speaker_norm``
    (`keras_ser.data.speaker_statistics`, one pass)."""
    own = data.speaker_statistics(records, features, speakers=sorted(speakers))
    return {s: {"mean": own[s]["mean"], "std": own[s]["std"]} for s in sorted(speakers)}


def build_model(model_config: crnn.CRNNConfig, config: TrainConfig) -> crnn.CRNN:
    """A compiled `CRNN`: SGD with momentum, or the layer-wise SGD of eq. 6.

    Weights are initialised from Keras' global seed: set it first (recipes do).
    """
    model = crnn.CRNN(model_config, name="crnn")
    model.build()
    if config.layerwise:
        optimizer = crnn_optimizer(
            conv_lr=config.conv_lr, recurrent_lr=config.recurrent_lr,
            dense_lr=config.learning_rate, conv_momentum=config.conv_momentum,
            recurrent_momentum=config.recurrent_momentum, momentum=config.momentum,
            conv_beta=config.conv_beta, recurrent_beta=config.recurrent_beta)
    else:
        optimizer = crnn_optimizer(
            conv_lr=config.learning_rate, recurrent_lr=config.learning_rate,
            dense_lr=config.learning_rate, conv_momentum=config.momentum,
            recurrent_momentum=config.momentum, momentum=config.momentum,
            conv_beta=1.0, recurrent_beta=1.0)
    model.compile(optimizer=optimizer)
    model.optimizer.build(model.trainable_variables)
    return model


def front_end(config: TrainConfig, statistics: dict, vote: bool = False,
              speaker_inputs: bool = False) -> FrontEnd:
    """The served front end: z-scored log-mels of the whole utterance, or with ``vote``
    the eleven VTLP copies and their majority vote. With ``speaker_inputs`` (for the
    export of a ``speaker_norm`` model) the speaker's statistics are inputs and
    ``statistics`` the fallback (`keras_ser.serving.builders.FrontEnd.speaker_norm`)."""
    warps = augment.VTLP_TTA_ALPHAS if vote else ()
    return FrontEnd(features=config.features, statistics=statistics, normalise="zscore",
                    warps=warps, aggregate="vote" if vote else "mean",
                    speaker_norm=bool(speaker_inputs))


def _report(scores, labels, classes) -> dict:
    report = metrics.classification_report(labels, scores.predicted, classes)
    report.pop("class_names")
    return report


def train_fold(model_config: crnn.CRNNConfig, config: TrainConfig, fold, records: str,
               classes: Sequence[str], out_dir: str, *, utterances: data.Utterances,
               labels: dict | None = None, stats: dict | None = None, verbose="auto",
               row: str = "crnn") -> dict:
    """Train on ``fold.train``, pick the epoch on ``fold.validation``, test on ``fold.test``.

    Args:
        model_config: Network sizes (``n_mels`` and ``num_classes`` must match).
        config: Training and augmentation settings.
        fold: `keras_ser.folds.Fold`.
        records: Record folder.
        classes: Emotion names in class-index order.
        out_dir: Folder of this (variant, fold): ``ckpt/``, ``logs/`` (TensorBoard with
            the per-group gradient norms of Figure 3), ``model.keras``,
            ``predictions.npz``.
        utterances: The corpus in memory (`keras_ser.data.Utterances` of ``classes``
            or ``labels``), for scoring.
        labels: Optional ``{utterance_id: class index}`` restricting the utterances
            (e.g. IEMOCAP's improvised dialogs), as in `keras_ser.data.make_dataset`.
        stats: z-score statistics of the training speakers (`fold_statistics`).
        verbose: Keras ``fit`` verbosity.
        row: Name of the ablation row (stored in the result).

    Returns:
        Dict with ``row``, ``fold``, speakers, ``config``, ``model_config``, ``epochs``,
        ``best_epoch``, ``validation`` and ``test`` scores (`keras_ser.metrics.
        classification_report`; with ``vtlp="example"`` the test is the 11-copy vote and
        ``test_single`` the unwarped copy alone; ``test["single_ua"]`` is that copy's UA
        in every row), ``normalisation`` (the training speakers' statistics, which the
        served model uses) and ``speaker_statistics`` (each fold speaker's own with
        ``speaker_norm``, else None).

    Raises:
        ValueError: A split without utterances, mismatched sizes, or a checkpoint of
            another configuration in ``out_dir``.
    """
    if model_config.num_classes != len(classes):
        raise ValueError(f"model has {model_config.num_classes} classes, data {len(classes)}")
    index = {part: utterances.indices(fold.part(part))
             for part in ("train", "validation", "test")}
    for part, found in index.items():
        if not len(found):
            raise ValueError(f"fold {fold.name}: no {part} utterances of {list(classes)} "
                             f"for speakers {sorted(fold.part(part))} in {records}")
    stats = stats or fold_statistics(records, fold.train, classes, config.features, labels)
    model = build_model(model_config, config)
    # Which statistics normalise each part: the training speakers' (eq. 2), or with
    # speaker_norm each speaker's own (the served model then falls back to the global).
    own = (speaker_statistics(records, fold.speakers(), config.features)
           if config.speaker_norm else None)
    part_stats = ({p: own[fold.only_speaker(p)] for p in ("validation", "test")}
                  if own else {"validation": stats, "test": stats})
    plain = Scorer(model, front_end(config, part_stats["validation"]))
    val_alphas = None
    if config.vtlp == "example":
        val_alphas = augment.random_alpha(np.array([config.seed, 1], np.int32),
                                          (len(index["validation"]),)).numpy()
    val_units = plain.prepare(utterances.select(index["validation"]), alphas=val_alphas)
    val_labels = utterances.labels[index["validation"]]

    def validation_logs(epoch):
        report = _report(plain(val_units), val_labels, classes)
        logs = {"val_wa": report["wa"], "val_ua": report["ua"]}
        if config.vtlp == "epoch" and epoch is not None:
            logs["vtlp_alpha"] = float(augment.epoch_alpha(config.seed, epoch))
        return logs

    def batches(first):
        span = (first, config.max_epochs)
        ds = data.make_dataset(
            records, classes=classes, labels=labels, speakers=fold.train,
            features=config.features,
            normalise="zscore_speaker" if own else "zscore",
            stats={"speakers": own} if own else stats,
            vtlp=None if config.vtlp == "none" else config.vtlp, shuffle=True,
            seed=config.seed, oversample={c: 2 for c in config.oversample} or None,
            batch_size=config.batch_size, cache=True, epochs=span)
        steps = data.batches_per_epoch(ds, span)
        return data.to_keras(ds, inputs=("features", "length"), targets="label"), steps

    state = fit_resumable(model, batches, directory=os.path.join(out_dir, "ckpt"),
                          epochs=config.max_epochs, seed=config.seed,
                          stage=f"{row} {fold.name}",
                          early_stopping=PersistentEarlyStopping("val_ua", config.patience),
                          callbacks=[LambdaLogs(validation_logs)], verbose=verbose,
                          log_dir=os.path.join(out_dir, "logs"))
    test_waves = utterances.select(index["test"])
    test_labels = utterances.labels[index["test"]]
    validation_report = _report(plain(val_units), val_labels, classes)
    plain = Scorer(model, front_end(config, part_stats["test"]))
    single = plain.score(test_waves)
    result = {
        "row": row, "fold": fold.name, "train_speakers": sorted(fold.train),
        "validation_speakers": sorted(fold.validation), "test_speakers": sorted(fold.test),
        "classes": list(classes), "config": config.to_dict(),
        "model_config": model_config.to_dict(), "epochs": int(state["epochs_done"]),
        "best_epoch": int(state["early_stopping"]["best_epoch"]) + 1,
        "validation": validation_report, "normalisation": stats,
        "speaker_statistics": own}
    arrays = {"utterance_id": np.array([utterances.ids[i] for i in index["test"]]),
              "probabilities": single.probabilities}
    single_report = _report(single, test_labels, classes)
    if config.vtlp == "example":
        voted = Scorer(model, front_end(config, part_stats["test"], vote=True)).score(
            test_waves)
        result["test"] = {**_report(voted, test_labels, classes), "copies": 11}
        result["test_single"] = single_report
        arrays.update(probabilities=voted.probabilities, votes=voted.votes)
    else:
        result["test"] = dict(single_report)
    result["test"]["single_ua"] = single_report["ua"]
    io.save_npz(os.path.join(out_dir, "predictions.npz"), **arrays)
    io.save_model(model, os.path.join(out_dir, "model.keras"))
    return result
