"""One fold of the Chang & Scherer (2017) protocol: train with early stopping, then test.

`train_fold` trains one of the four models on a fold's training speakers, computes the
validation score after every epoch on whole validation utterances, stops after
``patience`` epochs without a new best, restores the best weights and scores the test
speaker(s). Utterance scores average the softmax of sliding crops over the utterance --
exactly the computation of the exported serving signature (`keras_ser.export`), so the
reported numbers are those of the model a user downloads.

Targets (`TaskSpec`):

- ``primary="emotion"``: the category head is primary (e.g. EmoDB's 7 classes); the
  valence and activation heads of the multitask models take the corpus's mean ratings
  when it has them, otherwise the levels of `keras_ser.dimensions` (a documented mapping
  from the category), as fuzzy labels.
- ``primary="valence"`` or ``"activation"``: the paper's setting on IEMOCAP; the 5-point
  mean rating is the target, as a fuzzy label, and the other dimension is the auxiliary.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_ser import data as kdata
from keras_ser import dimensions, export, metrics
from keras_ser.models import dcgan
from keras_ser.training.callbacks import LambdaLogs, ResumableEarlyStopping, atomic_json
from keras_ser.training.multitask_gan import MultitaskGANTrainer

LEVEL_NAMES = ("1", "2", "3", "4", "5")
POOLED_NAMES = ("negative", "neutral", "positive")


@dataclasses.dataclass
class TaskSpec:
    """What the heads predict and where their targets come from.

    Attributes:
        primary: ``"emotion"``, ``"valence"`` or ``"activation"``.
        emotions: Category names in class-index order (the records kept for training
            and testing); ``None`` keeps every record (dimensional primary task).
        features: Feature preset of the log-mel patches (``"chang"``).
        derive_dimensions: Fill missing valence/activation ratings from the category
            with `keras_ser.dimensions.dimension_levels`.
    """

    primary: str = "emotion"
    emotions: Optional[Sequence[str]] = None
    features: str = "chang"
    derive_dimensions: bool = True

    def __post_init__(self):
        if self.primary not in ("emotion",) + dcgan.DIMENSIONS:
            raise ValueError(f"primary must be 'emotion', 'valence' or 'activation', got "
                             f"{self.primary!r}")
        if self.primary == "emotion" and not self.emotions:
            raise ValueError("primary='emotion' needs the emotion class names")
        self.emotions = list(self.emotions) if self.emotions else None

    @property
    def class_names(self) -> list:
        """Names of the primary head's classes."""
        return list(self.emotions) if self.primary == "emotion" else list(LEVEL_NAMES)

    def dimension_table(self, dimension: str) -> Optional[np.ndarray]:
        """Per-category levels used for unrated records, or ``None``."""
        if not (self.derive_dimensions and self.emotions):
            return None
        return dimensions.dimension_levels(self.emotions, dimension)

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (saved with every run)."""
        return dataclasses.asdict(self)


def fuzzy_labels_tf(ratings: tf.Tensor, levels: int = dcgan.RATING_LEVELS) -> tf.Tensor:
    """Graph version of `keras_ser.metrics.fuzzy_labels`: ``(n,)`` -> ``(n, levels)``.

    Ratings are clipped to [1, levels]; NaN ratings give rows of NaN (the trainer leaves
    them out of the loss).

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. 3.1.
    """
    r = tf.clip_by_value(tf.cast(ratings, tf.float32), 1.0, float(levels))
    finite = tf.math.is_finite(r)
    r = tf.where(finite, r, 1.0)
    upper = tf.minimum(tf.floor(r), levels - 1.0)
    fraction = r - upper
    index = tf.cast(upper, tf.int32)
    dist = (tf.one_hot(index - 1, levels) * (1.0 - fraction)[:, None]
            + tf.one_hot(index, levels) * fraction[:, None])
    return tf.where(finite[:, None], dist, np.nan)


class CorpusAudio:
    """A converted corpus held in memory for utterance-level evaluation.

    Args:
        records: Record folder from the converter.
        spec: Which records count (``spec.emotions``; all when ``None``).

    Attributes:
        waveforms: List of ``(samples,)`` int16 arrays.
        speakers, emotions, ids: Per-utterance strings.
        ratings: ``{"valence": (n,), "activation": (n,)}`` float32 mean ratings, NaN
            where the corpus has none and no derivation applies.
        rated: ``{"valence": count, "activation": count}`` utterances with the corpus's
            own ratings (the rest, if any, are derived from the category).

    Raises:
        FileNotFoundError: No shards in ``records``.
    """

    def __init__(self, records: str, spec: TaskSpec):
        self.spec = spec
        self.waveforms, self.speakers, self.emotions, self.ids = [], [], [], []
        raw = {d: [] for d in dcgan.DIMENSIONS}
        for ex in kdata.read_records(records):
            emotion = ex["emotion"].numpy().decode()
            if spec.emotions is not None and emotion not in spec.emotions:
                continue
            pcm = np.round(ex["waveform"].numpy() * 32768.0).astype(np.int16)
            self.waveforms.append(pcm)
            self.speakers.append(ex["speaker"].numpy().decode())
            self.emotions.append(emotion)
            self.ids.append(ex["utterance_id"].numpy().decode())
            for d in dcgan.DIMENSIONS:
                raw[d].append(float(ex[d].numpy()))
        self.ratings = {}
        self.rated = {}
        for d in dcgan.DIMENSIONS:
            values = np.array(raw[d], np.float32)
            self.rated[d] = int(np.isfinite(values).sum())
            table = spec.dimension_table(d)
            if table is not None:
                derived = table[[spec.emotions.index(e) for e in self.emotions]]
                values = np.where(np.isfinite(values), values, derived)
            self.ratings[d] = values

    def indices(self, speakers) -> np.ndarray:
        """Utterance indices of ``speakers``."""
        wanted = set(speakers)
        return np.array([i for i, s in enumerate(self.speakers) if s in wanted], np.int64)

    def level_labels(self, dimension: str) -> dict:
        """``{utterance_id: level index 0..4}`` of the rated utterances (ties: lower level).

        These are the primary labels oversampled when a rating dimension is primary.
        """
        ratings = self.ratings[dimension]
        rated = np.flatnonzero(np.isfinite(ratings))
        levels = metrics.fuzzy_labels(np.clip(ratings[rated], 1, 5)).argmax(axis=1)
        return {self.ids[i]: int(level) for i, level in zip(rated, levels)}

    def primary_labels(self, index: np.ndarray) -> np.ndarray:
        """Class indices of the emotion head (primary ``"emotion"`` only)."""
        return np.array([self.spec.emotions.index(self.emotions[i]) for i in index], np.int64)


def fold_minmax(records: str, speakers, spec: TaskSpec) -> tuple:
    """Minimum and maximum log-mel value (dB) over the training speakers' utterances.

    The min-max normalisation to [-1, 1] matches the generator's tanh output; taking the
    extremes from the training split only keeps the test speaker unseen.
    """
    ds = kdata.make_dataset(records, classes=spec.emotions, speakers=speakers,
                            features=spec.features, batch_size=32)
    stats = kdata.feature_statistics(ds)
    return float(stats["min"]), float(stats["max"])


def training_dataset(records, spec: TaskSpec, config: dcgan.DCGANConfig, speakers,
                     minmax: tuple, tasks: Sequence[str], seed: int = 0,
                     unlabelled: Optional[Sequence[str]] = None,
                     levels: Optional[dict] = None) -> tf.data.Dataset:
    """Batches for `MultitaskGANTrainer.train_step` from a fold's training speakers.

    Random word-centred crops of ``config.crop_frames`` frames, primary labels oversampled
    to balance (the emotion classes, or with ``levels`` -- `CorpusAudio.level_labels` --
    the 5-point levels of a rating dimension), min-max normalised with ``minmax``; one
    target per task.
    With ``unlabelled`` record folders, an endless stream of random crops from them is
    zipped in as ``"unlabelled"`` (they feed only the GAN path).

    Returns:
        Dataset of dicts ``features`` ``(batch, W, M)``, ``emotion`` ``(batch,)`` int32
        and/or ``valence``/``activation`` ``(batch, 5)``, [``unlabelled``].

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. 3.2 (word-centred crops, oversampling).
    """
    stats = {"min": minmax[0], "max": minmax[1]}
    balance = spec.primary == "emotion" or levels is not None
    ds = kdata.make_dataset(
        records, classes=spec.emotions if levels is None else LEVEL_NAMES, labels=levels,
        speakers=speakers, features=spec.features,
        crop_frames=config.crop_frames, crop="word", oversample="balance" if balance else None,
        normalise="minmax", stats=stats, batch_size=config.batch_size, shuffle=True,
        seed=seed, cache=True, drop_remainder=True, keep=dcgan.DIMENSIONS)
    tables = {d: spec.dimension_table(d) for d in dcgan.DIMENSIONS}

    def targets(batch):
        out = {"features": batch["features"]}
        if "emotion" in tasks:
            out["emotion"] = batch["label"]
        for d in dcgan.DIMENSIONS:
            if d not in tasks:
                continue
            rating = batch[d]
            if tables[d] is not None:
                derived = tf.gather(tf.constant(tables[d]), tf.maximum(batch["label"], 0))
                rating = tf.where(tf.math.is_finite(rating), rating, derived)
            out[d] = fuzzy_labels_tf(rating)
        return out

    ds = ds.map(tf.autograph.experimental.do_not_convert(targets),
                num_parallel_calls=tf.data.AUTOTUNE)
    if unlabelled:
        files = [f for folder in unlabelled for f in kdata.record_files(folder)]
        extra = kdata.make_dataset(files, features=spec.features,
                                   crop_frames=config.crop_frames, crop="random",
                                   normalise="minmax", stats=stats,
                                   batch_size=config.batch_size, shuffle=True,
                                   seed=seed + 1, repeat=True, drop_remainder=True)
        extra = extra.map(lambda b: b["features"])
        ds = tf.data.Dataset.zip(ds, extra).map(lambda b, u: {**b, "unlabelled": u})
    return ds.prefetch(tf.data.AUTOTUNE)


class UtteranceScorer:
    """Utterance-level probabilities of every head, as the exported model computes them.

    `prepare` cuts utterances into the served model's crops once (`keras_ser.export.
    build_window_model`: log-mel, min-max, a crop every half crop); `__call__` then runs
    the heads on all crops in large batches and averages them per utterance -- the
    computation of the exported signature, without re-computing features every epoch.

    Args:
        discriminator: Trained discriminator (its task heads are read).
        tasks: Heads to score, in order.
        spec: The `TaskSpec` (feature preset).
        config: `DCGANConfig` (crop width).
        minmax: Normalisation extremes in dB.
    """

    def __init__(self, discriminator, tasks, spec: TaskSpec, config: dcgan.DCGANConfig,
                 minmax: tuple):
        self.tasks = list(tasks)
        self.sizes = [int(discriminator.output[t].shape[-1]) for t in self.tasks]
        self.classifier = dcgan.all_heads_classifier(discriminator, self.tasks)
        windows = export.build_window_model(features=spec.features, minimum=minmax[0],
                                            maximum=minmax[1], crop_frames=config.crop_frames)
        self._windows = tf.function(lambda w: windows(w, training=False),
                                    input_signature=[tf.TensorSpec([1, None], tf.float32)])

    def prepare(self, waveforms: Sequence[np.ndarray]) -> tuple:
        """Crops of int16 ``(samples,)`` waveforms: ``(crops (n, W, M), owner (n,))``."""
        crops, owner = [], []
        for i, w in enumerate(waveforms):
            cut = self._windows(tf.constant(w[None].astype(np.float32) / 32768.0)).numpy()[0]
            crops.append(cut)
            owner.append(np.full(len(cut), i))
        return np.concatenate(crops), np.concatenate(owner)

    def __call__(self, prepared) -> dict:
        """``{task: (utterances, classes)}`` probabilities; takes `prepare`'s output or a
        list of int16 waveforms."""
        crops, owner = prepared if isinstance(prepared, tuple) else self.prepare(prepared)
        per_crop = self.classifier.predict(crops, batch_size=256, verbose=0)
        count = int(owner.max()) + 1
        joined = np.zeros((count, per_crop.shape[1]), np.float64)
        np.add.at(joined, owner, per_crop)
        joined /= np.bincount(owner, minlength=count)[:, None]
        out, start = {}, 0
        for task, size in zip(self.tasks, self.sizes):
            out[task] = joined[:, start:start + size].astype(np.float32)
            start += size
        return out


def score(probs: dict, corpus: CorpusAudio, index: np.ndarray, spec: TaskSpec) -> dict:
    """Metrics of utterance probabilities against the corpus targets.

    Returns:
        Dict with, for the emotion head, ``emotion_ua``, ``emotion_wa``,
        ``emotion_recall`` (per class), ``emotion_confusion``; for each rating head
        ``<dim>_ua5`` and ``<dim>_ua3`` (accept-either targets: an evenly split mean
        rating accepts both levels; 3-point after pooling 1-2 / 3 / 4-5), ``<dim>_r``
        (Pearson r of the expected level with the mean rating), ``<dim>_confusion5``;
        and ``primary_ua`` (the validation criterion: emotion UA or the primary UA5).

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. 3.1 and Table 1.
    """
    out = {}
    if "emotion" in probs:
        y = corpus.primary_labels(index)
        p = probs["emotion"]
        n = len(spec.emotions)
        out.update(emotion_ua=metrics.unweighted_accuracy(y, p),
                   emotion_wa=metrics.weighted_accuracy(y, p),
                   emotion_recall=metrics.per_class_recall(y, p, n).tolist(),
                   emotion_confusion=metrics.confusion(y, p, n).tolist())
    for d in dcgan.DIMENSIONS:
        if d not in probs:
            continue
        ratings = corpus.ratings[d][index]
        rated = np.isfinite(ratings)
        if rated.sum() < 2:
            continue
        p, r = probs[d][rated], ratings[rated]
        target = metrics.fuzzy_labels(np.clip(r, 1, 5))
        t5 = metrics.accept_either_targets(p, target)
        pooled_p, pooled_t = metrics.pool_5_to_3(p), metrics.pool_5_to_3(target)
        t3 = metrics.accept_either_targets(pooled_p, pooled_t)
        out.update({f"{d}_ua5": metrics.unweighted_accuracy(t5, p),
                    f"{d}_ua3": metrics.unweighted_accuracy(t3, pooled_p),
                    f"{d}_r": metrics.pearson_expected(p, r)[0],
                    f"{d}_confusion5": metrics.confusion(t5, p, 5).tolist()})
    primary = "emotion_ua" if spec.primary == "emotion" else f"{spec.primary}_ua5"
    out["primary_ua"] = out.get(primary, float("nan"))
    return out


def build_trainer(model: str, config: dcgan.DCGANConfig, spec: TaskSpec,
                  seed: int = 0) -> MultitaskGANTrainer:
    """Discriminator (+ generator) of one of the four models, wrapped and compiled.

    Raises:
        ValueError: Unknown model name.
    """
    keras.utils.set_random_seed(seed)
    heads = dcgan.model_heads(model, spec.primary, len(spec.class_names))
    adversarial = dcgan.is_adversarial(model)
    disc = dcgan.build_discriminator(config, heads, adversarial=adversarial)
    gen = dcgan.build_generator(config) if adversarial else None
    trainer = MultitaskGANTrainer(disc, gen, categorical=("emotion",), seed=seed,
                                  name=model)
    trainer.compile(learning_rate=config.learning_rate)
    return trainer


def train_fold(model: str, config: dcgan.DCGANConfig, fold, records: str,
               corpus: CorpusAudio, spec: TaskSpec, out_dir: str, *, max_epochs: int = 50,
               patience: int = 5, seed: int = 0, unlabelled: Optional[Sequence[str]] = None,
               verbose="auto", grid_every: int = 1, minmax: Optional[tuple] = None,
               trainer: Optional[MultitaskGANTrainer] = None) -> dict:
    """Train one model on one fold with early stopping, restore the best epoch, test.

    Resumable: ``out_dir/ckpt`` holds the per-epoch checkpoint; a finished fold's
    ``out_dir/result.json`` is returned as is.

    Args:
        model: One of `keras_ser.models.dcgan.MODELS`.
        config: Architecture and optimisation sizes.
        fold: `keras_ser.folds.Fold` (train / validation / test speakers).
        records: Record folder of the labelled corpus.
        corpus: The same corpus in memory (`CorpusAudio`) for utterance scoring.
        spec: `TaskSpec`.
        out_dir: Folder of this (model, fold): ``ckpt/``, ``logs/`` (TensorBoard, with
            generated spectrogram grids for the DCGAN models), ``grids/`` (PNG),
            ``result.json``, ``predictions.npz``, ``classifier.keras``.
        max_epochs: Upper bound on epochs.
        patience: Epochs without a new best validation UA before stopping (paper: 5).
        seed: Seed of initialisation, crops and noise.
        unlabelled: Record folders of unlabelled speech for the GAN path.
        verbose: Keras ``fit`` verbosity.
        grid_every: Epochs between generated spectrogram grids.
        minmax: Normalisation extremes; computed from the training speakers when None.
        trainer: The compiled `build_trainer` output for ``model`` and ``config``, if
            the caller already built it (KerasTuner does); else built here.

    Returns:
        Dict: model, fold, config, epochs run, best epoch, ``validation`` and ``test``
        metrics (`score`), minmax.

    Raises:
        ValueError: A split without utterances, or a checkpoint from another config.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. 3.3.
    """
    from keras_ser import plots

    os.makedirs(out_dir, exist_ok=True)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    val_index, test_index = corpus.indices(fold.validation), corpus.indices(fold.test)
    for name, index in (("validation", val_index), ("test", test_index)):
        if len(index) == 0:
            raise ValueError(f"fold {fold.name}: no {name} utterances for speakers "
                             f"{sorted(fold.part(name))}")
    if minmax is None:
        minmax = fold_minmax(records, fold.train, spec)
    if trainer is None:
        trainer = build_trainer(model, config, spec, seed)
    tasks = trainer.tasks
    scorer = UtteranceScorer(trainer.discriminator, tasks, spec, config, minmax)
    val_crops = scorer.prepare([corpus.waveforms[i] for i in val_index])

    def validation_logs(epoch):
        s = score(scorer(val_crops), corpus, val_index, spec)
        return {f"val_{k}": v for k, v in s.items() if np.ndim(v) == 0}

    stopper = ResumableEarlyStopping(os.path.join(out_dir, "ckpt"), "val_primary_ua",
                                     patience, optimizers=trainer.update_optimizers)
    initial_epoch = stopper.restore(trainer)
    callbacks = [LambdaLogs(validation_logs), stopper,
                 keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"))]
    if trainer.generator is not None:
        noise = np.random.default_rng(seed).standard_normal((16, config.z_dim))
        callbacks.append(plots.SpectrogramGridCallback(
            trainer.generator, noise.astype(np.float32), log_dir=os.path.join(out_dir, "logs"),
            png_dir=os.path.join(out_dir, "grids"), every=grid_every))
    if not stopper.finished and initial_epoch < max_epochs:
        levels = None if spec.primary == "emotion" else corpus.level_labels(spec.primary)
        train = training_dataset(records, spec, config, fold.train, minmax, tasks,
                                 seed=seed, unlabelled=unlabelled, levels=levels)
        trainer.fit(train, epochs=max_epochs, initial_epoch=initial_epoch,
                    callbacks=callbacks, verbose=verbose, shuffle=False)
    stopper.restore_best(trainer)
    test_probs = scorer([corpus.waveforms[i] for i in test_index])
    result = {
        "model": model, "fold": fold.name, "config": config.to_dict(), "spec": spec.to_dict(),
        "minmax": list(minmax), "epochs": int(stopper.state["epoch"]) + 1,
        "best_epoch": int(stopper.state["best_epoch"]) + 1,
        "validation": score(scorer(val_crops), corpus, val_index, spec),
        "test": score(test_probs, corpus, test_index, spec),
        "test_speakers": sorted(fold.test), "validation_speakers": sorted(fold.validation)}
    np.savez(os.path.join(out_dir, "predictions.npz"),
             utterance_id=np.array([corpus.ids[i] for i in test_index]),
             **{task: p for task, p in test_probs.items()})
    dcgan.classifier(trainer.discriminator, spec.primary).save(
        os.path.join(out_dir, "classifier.keras"))
    atomic_json(result_path, result)
    return result


def load_classifier(out_dir: str) -> keras.Model:
    """The primary-head classifier saved by `train_fold` in ``out_dir``."""
    return keras.models.load_model(os.path.join(out_dir, "classifier.keras"))
