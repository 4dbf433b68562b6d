"""One fold of Chang & Scherer (ICASSP 2017): train with early stopping, then test.

`train_fold` trains one of the four models (BasicCNN, MultitaskCNN, BasicDCGAN,
MultitaskDCGAN) on a fold's training speakers, scores the validation speaker after
every epoch on whole utterances, stops after ``patience`` epochs without a new best
(our reading of Sec. "Experimental Design": "5 consecutive iterations with lower
accuracy values"), restores the best epoch's weights and scores the test speaker.
Utterances are scored by `keras_ser.scoring` with the front end the export uses
(log-mel, min-max, a crop every half crop, mean of the crops' probabilities; the
averaging and the hop are our choice, the paper trains on crops and does not say how
an utterance is scored), so the reported numbers are those of the served model.

Targets (`keras_ser.tasks.TaskSpec`): with ``primary="emotion"`` the category head is
primary (e.g. EmoDB) and the valence/activation heads take the corpus's mean ratings, or
the circumplex levels of the category where there are none; with ``"valence"`` or
``"activation"`` (IEMOCAP, the paper's setting) the 5-point mean rating is the target,
as a fuzzy label, and the other dimension is the auxiliary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_ser import data as kdata
from keras_ser import io, metrics, plots
from keras_ser.models import dcgan
from keras_ser.scoring import Scorer
from keras_ser.serving.builders import FrontEnd
from keras_ser.tasks import DIMENSIONS, LEVEL_NAMES, RATING_LEVELS, TaskSpec, fuzzy_labels_tf
from keras_ser.training import multitask_gan
from keras_ser.training.resumable import (LambdaLogs, PersistentEarlyStopping, fit_resumable,
                                         is_scalar)


class Corpus:
    """The labelled corpus in memory, with the targets a `TaskSpec` asks for.

    Args:
        records: Record folder of the labelled corpus.
        spec: The `TaskSpec` (which records count, how ratings are completed).

    Attributes:
        utterances: `keras_ser.data.Utterances` of the kept records.
        ratings: ``{"valence": (n,), "activation": (n,)}`` float32 mean ratings, the
            corpus's own or, where it has none, the category's circumplex level.
        rated: Utterances per dimension with the corpus's own ratings.

    Raises:
        FileNotFoundError: No shards in ``records``.
    """

    def __init__(self, records: str, spec: TaskSpec):
        self.spec = spec
        self.utterances = kdata.Utterances(records, classes=spec.emotions)
        self.ratings, self.rated = {}, {}
        for d in DIMENSIONS:
            values = self.utterances.ratings[d]
            self.rated[d] = int(np.isfinite(values).sum())
            table = spec.dimension_table(d)
            if table is not None:
                values = np.where(np.isfinite(values), values, table[self.utterances.labels])
            self.ratings[d] = values

    def level_labels(self, dimension: str) -> dict:
        """``{utterance_id: level index 0..4}`` of the rated utterances (ties: lower
        level): the primary labels oversampled when a rating dimension is primary."""
        ratings = self.ratings[dimension]
        rated = np.flatnonzero(np.isfinite(ratings))
        levels = metrics.fuzzy_labels(np.clip(ratings[rated], 1, 5)).argmax(axis=1)
        return {self.utterances.ids[i]: int(level) for i, level in zip(rated, levels)}


def fold_minmax(records: str, speakers: Sequence[str], spec: TaskSpec) -> tuple:
    """Minimum and maximum log-mel value (dB) over the training speakers' utterances.

    Min-max normalisation to [-1, 1] matches the generator's tanh output; the paper
    gives no normalisation, so this (and taking the extremes from the training
    speakers only) is our choice.
    """
    ds = kdata.make_dataset(records, classes=spec.emotions, speakers=speakers,
                            features=spec.features, batch_size=32)
    stats = kdata.feature_statistics(ds)
    return float(stats["min"]), float(stats["max"])


def speaker_minmax(records, spec: TaskSpec) -> dict:
    """Each speaker's own log-mel extremes (dB), over all of its records (no label
    used): ``{speaker: {"min", "max"}}``, for per-speaker min-max normalisation (our
    variant; the paper gives no normalisation). ``records``: a record folder or shard
    files (e.g. the unlabelled speech's)."""
    own = kdata.speaker_statistics(records, spec.features)
    return {s: {"min": v["min"], "max": v["max"]} for s, v in own.items()}


def _extremes(statistics: dict) -> tuple:
    return float(statistics["min"]), float(statistics["max"])


def training_data(records: str, spec: TaskSpec, config: dcgan.DCGANConfig, speakers,
                  minmax: tuple, tasks: Sequence[str], *, seed: int, epochs: int,
                  unlabelled: Sequence[str] = (), levels: dict | None = None,
                  own: dict | None = None, own_unlabelled: dict | None = None):
    """``data(first_epoch) -> (dataset, steps)`` for `fit_resumable`.

    Random word-centred crops of ``config.crop_frames`` frames (Sec. "Data Corpus"), the
    primary labels oversampled to balance (the emotion classes, or with ``levels`` the
    5-point levels of a rating dimension; the paper oversamples rare valence levels,
    Sec. "Data Corpus", the exact factors are ours), min-max normalised with
    ``minmax`` (or with ``own`` each speaker's own extremes, `speaker_minmax`; the
    unlabelled speakers' from ``own_unlabelled``); one target per task. With
    ``unlabelled`` record folders a batch of random crops from
    them is zipped in as ``"unlabelled"`` (they feed only the GAN path). Every epoch's
    crops and order come from seeds of ``(seed, epoch)``.

    Returns:
        A function of the first epoch returning the dataset of dicts ``features``
        ``(batch, W, M)``, ``emotion`` ``(batch,)`` and/or ``valence``/``activation``
        ``(batch, 5)``, [``unlabelled`` ``(batch, W, M)``], and the batches per epoch.
    """
    stats = {"min": minmax[0], "max": minmax[1]}
    norm = ("minmax_speaker", {"speakers": own}) if own else ("minmax", stats)
    extra_norm = ("minmax_speaker", {"speakers": own_unlabelled}) if own else ("minmax", stats)
    balance = spec.primary == "emotion" or levels is not None
    tables = {d: spec.dimension_table(d) for d in DIMENSIONS}
    files = [f for folder in unlabelled for f in kdata.record_files(folder)]
    if own and files and not own_unlabelled:
        raise ValueError("per-speaker normalisation needs the unlabelled speakers' extremes "
                         "too (own_unlabelled = speaker_minmax(unlabelled files))")

    def targets(batch):
        out = {"features": batch["features"]}
        if "emotion" in tasks:
            out["emotion"] = batch["label"]
        for d in DIMENSIONS:
            if d in tasks:
                rating = batch[d]
                if tables[d] is not None:
                    derived = tf.gather(tf.constant(tables[d]), tf.maximum(batch["label"], 0))
                    rating = tf.where(tf.math.is_finite(rating), rating, derived)
                out[d] = fuzzy_labels_tf(rating)
        return out

    def data(first: int):
        span = (first, epochs)
        ds = kdata.make_dataset(
            records, classes=spec.emotions if levels is None else LEVEL_NAMES, labels=levels,
            speakers=speakers, features=spec.features, crop_frames=config.crop_frames,
            crop="word", oversample="balance" if balance else None, normalise=norm[0],
            stats=norm[1], batch_size=config.batch_size, shuffle=True, seed=seed, cache=True,
            drop_remainder=True, keep=DIMENSIONS, epochs=span)
        steps = kdata.batches_per_epoch(ds, span)
        ds = ds.map(tf.autograph.experimental.do_not_convert(targets),
                    num_parallel_calls=tf.data.AUTOTUNE)
        if files:
            extra = kdata.make_dataset(
                files, features=spec.features, crop_frames=config.crop_frames,
                crop="random", normalise=extra_norm[0], stats=extra_norm[1],
                batch_size=config.batch_size, shuffle=True, seed=seed + 1, repeat=True,
                drop_remainder=True, epochs=span, steps=steps)
            ds = tf.data.Dataset.zip(ds, extra.map(lambda b: b["features"])).map(
                lambda b, u: {**b, "unlabelled": u})
        return ds.prefetch(tf.data.AUTOTUNE), steps

    return data


def build_trainer(model: str, config: dcgan.DCGANConfig, spec: TaskSpec,
                  seed: int = 0) -> multitask_gan.MultitaskGANTrainer:
    """Discriminator (+ generator) of one of the four models, wrapped and compiled with
    one Adam per update (`multitask_gan.adam_optimizers`).

    Weights are initialised from Keras' global seed: set it first (recipes do).

    Raises:
        ValueError: Unknown model name.
    """
    heads = dcgan.model_heads(model, spec.primary, len(spec.class_names))
    adversarial = dcgan.is_adversarial(model)
    disc = dcgan.build_discriminator(config, heads, adversarial=adversarial)
    gen = dcgan.build_generator(config) if adversarial else None
    trainer = multitask_gan.MultitaskGANTrainer(disc, gen, categorical=("emotion",),
                                                seed=seed, name=model)
    trainer.compile(**multitask_gan.adam_optimizers(trainer, config.learning_rate))
    return trainer


def front_end(spec: TaskSpec, config: dcgan.DCGANConfig, minmax: tuple,
              speaker_inputs: bool = False) -> FrontEnd:
    """The served front end: the preset's log-mel, min-max with the fold's extremes,
    ``crop_frames`` windows every half crop, mean of the window probabilities. With
    ``speaker_inputs`` (export of a per-speaker model) the speaker's extremes are inputs
    and ``minmax`` the fallback (`keras_ser.serving.builders.FrontEnd.speaker_norm`)."""
    return FrontEnd(features=spec.features, statistics={"min": minmax[0], "max": minmax[1]},
                    crop_frames=config.crop_frames, hop_frames=max(1, config.crop_frames // 2),
                    speaker_norm=bool(speaker_inputs))


def score(probs: dict, corpus: Corpus, index: np.ndarray) -> dict:
    """Metrics of utterance probabilities against the corpus targets.

    Returns:
        ``emotion_<k>`` for the keys of `keras_ser.metrics.classification_report`
        (``ua``, ``wa``, ``macro_f1``, ``recall``, ``confusion``, ...); per rating head
        ``<dim>_ua5`` (accept-either targets: an evenly split mean rating accepts both
        levels), ``<dim>_ua3_decisions`` (the 5-class decisions pooled to 3 classes,
        1-2 / 3 / 4-5, the paper's reading: "taking the results for 5 class comparison
        and pooling them"), ``<dim>_ua3_probabilities`` (the probabilities pooled before
        the decision, our variant), ``<dim>_r`` (Pearson r of the expected level with the
        mean rating), ``<dim>_confusion5``; and ``primary_ua`` (the validation criterion).

    Reference:
        Chang & Scherer, ICASSP 2017, Secs. "Data Corpus" and "Experimental Design"
        (its "Evaluation Strategy" paragraph).
    """
    spec, out = corpus.spec, {}
    if "emotion" in probs:
        report = metrics.classification_report(corpus.utterances.labels[index],
                                               probs["emotion"], spec.emotions)
        out.update({f"emotion_{k}": v for k, v in report.items() if k != "class_names"})
    for d in DIMENSIONS:
        ratings = corpus.ratings[d][index] if d in probs else np.zeros(0)
        rated = np.isfinite(ratings)
        if rated.sum() < 2:
            continue
        p, r = probs[d][rated], ratings[rated]
        target = metrics.fuzzy_labels(np.clip(r, 1, 5))
        t5 = metrics.accept_either_targets(p, target)
        pooled_target = metrics.pool_5_to_3(target)
        decisions = metrics.pool_5_to_3(p.argmax(axis=1), index_base=0)
        pooled_p = metrics.pool_5_to_3(p)
        out.update({
            f"{d}_ua5": metrics.unweighted_accuracy(t5, p),
            f"{d}_ua3_decisions": metrics.unweighted_accuracy(
                metrics.accept_either_targets(decisions, pooled_target), decisions),
            f"{d}_ua3_probabilities": metrics.unweighted_accuracy(
                metrics.accept_either_targets(pooled_p, pooled_target), pooled_p),
            f"{d}_r": metrics.pearson_expected(p, r)[0],
            f"{d}_confusion5": metrics.confusion(t5, p, RATING_LEVELS).tolist()})
    primary = "emotion_ua" if spec.primary == "emotion" else f"{spec.primary}_ua5"
    out["primary_ua"] = out.get(primary, float("nan"))
    return out


def _split_heads(probabilities: np.ndarray, tasks, sizes) -> dict:
    out, start = {}, 0
    for task, size in zip(tasks, sizes):
        out[task] = probabilities[:, start:start + size]
        start += size
    return out


def train_fold(model: str, config: dcgan.DCGANConfig, fold, records: str, corpus: Corpus,
               out_dir: str, *, minmax: tuple, max_epochs: int = 50, patience: int = 5,
               seed: int = 0, unlabelled: Sequence[str] = (), verbose="auto",
               trainer: multitask_gan.MultitaskGANTrainer | None = None,
               own: dict | None = None, own_unlabelled: dict | None = None) -> dict:
    """Train one model on one fold with early stopping, restore the best epoch, test.

    Resumable: ``out_dir/ckpt`` holds the checkpoint (`fit_resumable`); a run killed at
    any moment continues to the same result.

    Args:
        model: One of `keras_ser.models.dcgan.MODELS`.
        config: Architecture and optimisation sizes.
        fold: `keras_ser.folds.Fold` (train / validation / test speakers).
        records: Record folder of the labelled corpus.
        corpus: The same corpus in memory (`Corpus`).
        out_dir: Folder of this (model, fold): ``ckpt/``, ``logs/`` (TensorBoard, with
            generated spectrogram grids for the DCGAN models), ``grids/`` (PNG),
            ``classifier.keras`` (primary head), ``predictions.npz`` (test utterance
            ids and every head's probabilities).
        minmax: Normalisation extremes (`fold_minmax`).
        max_epochs: Upper bound on epochs (the paper gives none; ours).
        patience: Epochs without a new best validation UA before stopping (paper: 5
            consecutive iterations with lower accuracy; counting epochs without a new
            best, and UA as the criterion, are our reading).
        seed: Seed of the noise, crops and order (weights follow Keras' global seed).
        unlabelled: Record folders of unlabelled speech for the GAN path.
        verbose: Keras ``fit`` verbosity.
        trainer: A compiled `build_trainer` output for ``model`` and ``config`` if the
            caller built it (KerasTuner does); else built here.
        own: Per-speaker normalisation: every fold speaker's own extremes
            (`speaker_minmax`), used for training, validation and test alike
            (transductive); ``own_unlabelled`` the unlabelled speakers'. None: ``minmax``.

    Returns:
        Dict: ``row`` (the model), ``fold``, speakers, ``config``, ``minmax`` (with
        ``own`` the fallback an export uses without a speaker), ``speaker_statistics``
        (the fold speakers' own, or None), epochs run, best epoch, ``validation`` and
        ``test`` metrics (`score`).

    Raises:
        ValueError: A split without utterances, a speaker without statistics, or a
            checkpoint from another config.
    """
    spec = corpus.spec
    val_index = corpus.utterances.indices(fold.validation)
    test_index = corpus.utterances.indices(fold.test)
    for name, index in (("validation", val_index), ("test", test_index)):
        if len(index) == 0:
            raise ValueError(f"fold {fold.name}: no {name} utterances for speakers "
                             f"{sorted(fold.part(name))}")
    trainer = trainer or build_trainer(model, config, spec, seed)
    tasks = trainer.tasks
    sizes = [int(trainer.discriminator.output[t].shape[-1]) for t in tasks]
    classifier = dcgan.all_heads_classifier(trainer.discriminator, tasks)
    mine = {s: own[s] for s in sorted(fold.speakers())} if own else None
    part = ({p: _extremes(mine[fold.only_speaker(p)]) for p in ("validation", "test")}
            if own else {"validation": minmax, "test": minmax})
    scorer = Scorer(classifier, front_end(spec, config, part["validation"]))
    val_units = scorer.prepare(corpus.utterances.select(val_index))

    def validation_logs(epoch):
        probs = _split_heads(scorer(val_units).probabilities, tasks, sizes)
        return {f"val_{k}": v for k, v in score(probs, corpus, val_index).items()
                if is_scalar(v)}

    callbacks = [LambdaLogs(validation_logs)]
    if trainer.generator is not None:
        noise = np.random.default_rng(seed).standard_normal((16, config.z_dim))
        callbacks.append(plots.SpectrogramGridCallback(
            trainer.generator, noise.astype(np.float32), log_dir=os.path.join(out_dir, "logs"),
            png_dir=os.path.join(out_dir, "grids")))
    levels = None if spec.primary == "emotion" else corpus.level_labels(spec.primary)
    data = training_data(records, spec, config, fold.train, minmax, tasks, seed=seed,
                         epochs=max_epochs, unlabelled=unlabelled, levels=levels,
                         own=mine, own_unlabelled=own_unlabelled)
    stopper = PersistentEarlyStopping("val_primary_ua", patience)
    state = fit_resumable(trainer, data, directory=os.path.join(out_dir, "ckpt"),
                          epochs=max_epochs, seed=seed, stage=f"{model} {fold.name}",
                          early_stopping=stopper, callbacks=callbacks, verbose=verbose,
                          log_dir=os.path.join(out_dir, "logs"))
    tester = Scorer(classifier, front_end(spec, config, part["test"])) if own else scorer
    test_probs = _split_heads(tester.score(corpus.utterances.select(test_index)).probabilities,
                              tasks, sizes)
    io.save_npz(os.path.join(out_dir, "predictions.npz"),
                utterance_id=np.array([corpus.utterances.ids[i] for i in test_index]),
                **test_probs)
    io.save_model(dcgan.classifier(trainer.discriminator, spec.primary),
                  os.path.join(out_dir, "classifier.keras"))
    return {
        "row": model, "fold": fold.name, "train_speakers": sorted(fold.train),
        "validation_speakers": sorted(fold.validation), "test_speakers": sorted(fold.test),
        "config": config.to_dict(), "spec": spec.to_dict(), "minmax": list(minmax),
        "speaker_statistics": mine,
        "epochs": int(state["epochs_done"]),
        "best_epoch": int(state["early_stopping"]["best_epoch"]) + 1,
        "validation": {k[len("val_"):]: v for k, v in validation_logs(None).items()},
        "test": score(test_probs, corpus, test_index)}


def load_classifier(out_dir: str) -> keras.Model:
    """The primary-head classifier `train_fold` saved in ``out_dir``."""
    return keras.models.load_model(os.path.join(out_dir, "classifier.keras"))
