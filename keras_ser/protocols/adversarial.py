"""One fold of Tu et al. (ICASSP 2019): speaker-invariant SER by adversarial training.

`train_fold` trains `keras_ser.models.xvector.SpeakerAdversarialSER` with one of the
paper's four strategies (Sec. 2; Tables 2-3):

* ``ser_only``: the emotion loss alone (the speaker head is not trained);
* ``mtl``: emotion + speaker loss (multi-task learning);
* ``dat``: the speaker head behind a gradient reversal layer (eq. 1);
* ``cgt``: cross-gradient training, each task trained on inputs perturbed along the
  other task's loss gradient (eqs. 2-4).

Inputs are Kaldi MFCC + Δ + ΔΔ (39 dims) of the voiced frames (Sec. 3.1, the ``tu``
preset of `keras_ser.features`), z-scored per dimension with the training speakers'
statistics (the paper does not normalise: our choice, so that the paper's SGD learning
rate of 1e-3 meets inputs of unit scale). The speaker labels are the fold's training
speakers only (Sec. 3.1: validation and test speakers are never seen in training).
SGD with Nesterov momentum 0.9 and learning rate 1e-3 (Sec. 3.2); every epoch is run
and the epoch of best validation accuracy is kept (Sec. 3.2: "the epoch with the best
performance on validation set is saved").

After training, a speaker-invariance probe fits a fresh logistic regression
(scikit-learn) on the frozen embeddings of the validation and test speakers'
utterances to predict the speaker, scored by stratified k-fold within those
utterances: a lower probe accuracy means less speaker information in the embedding
(Sec. 4, Figure 2's claim, measured). Figure 2's t-SNE of the same embeddings,
coloured by emotion and by speaker, is written as PNG and into TensorBoard.

Features reach the network through the served front end (`keras_ser.serving`): the
training arrays are the front end's own output (`FeatureBank`), and validation and test
scores come from `keras_ser.scoring.Scorer`, so a reported score is what the export
computes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from keras_ser import data, io, metrics, seeds
from keras_ser.models import xvector
from keras_ser.scoring import Scorer
from keras_ser.serving.builders import FrontEnd, build_units_model
from keras_ser.training.resumable import (
    LambdaLogs,
    PersistentEarlyStopping,
    fit_resumable,
)

STRATEGIES = ("ser_only", "mtl", "dat", "cgt")
#: Row titles, the paper's names (Tables 2-3).
TITLES = {"ser_only": "SER_only", "mtl": "SER_SR_MTL", "dat": "SER_SR_DAT",
          "cgt": "SER_SR_CGT"}
#: Feature preset of the paper (Kaldi MFCC + Δ + ΔΔ with energy VAD, Sec. 3.1).
FEATURES = "tu"
OBJECTIVE = "val_wa"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (Tu et al., Sec. 3.2, and the values the paper leaves open).

    Attributes:
        strategy: ``"ser_only"``, ``"mtl"``, ``"dat"`` or ``"cgt"`` (Sec. 2).
        max_epochs: Epochs run (paper: 100; the best validation epoch is kept).
        batch_size: Utterances per batch (not given; ours).
        learning_rate: SGD learning rate (paper: 1e-3, Nesterov momentum 0.9).
        grl_lambda: λ of the gradient reversal layer, ``dat`` (eq. 1; value not given,
            ours), the maximum of the schedule below.
        lambda_schedule: ``"ganin"`` (λ_p = λ (2 / (1 + exp(-10 p)) - 1), p the
            training progress; Ganin et al. 2016, Sec. 5.2.2; our choice) or
            ``"constant"``.
        cgt_epsilon: ε of the cross-gradient perturbations, ``cgt`` (eqs. 2-3; ours).
        cgt_alpha: α weighting perturbed against clean losses, ``cgt`` (eq. 4; ours).
        seed: Seed of batch order, dropout and initial weights.
        speaker_norm: Z-score each utterance per dimension with its own speaker's
            statistics (speaker-level CMVN over that speaker's voiced frames, the test
            speaker's included, no label used: transductive; our variant, the paper does
            not normalise) instead of the training speakers' pooled ones.

    Raises:
        ValueError: Unknown strategy or schedule, non-positive sizes.
    """

    strategy: str = "ser_only"
    max_epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-3
    grl_lambda: float = 0.5
    lambda_schedule: str = "ganin"
    cgt_epsilon: float = 1.0
    cgt_alpha: float = 0.5
    seed: int = 0
    speaker_norm: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.lambda_schedule not in ("ganin", "constant"):
            raise ValueError(f"lambda_schedule must be 'ganin' or 'constant', got "
                             f"{self.lambda_schedule!r}")
        if self.max_epochs < 1 or self.batch_size < 1:
            raise ValueError(f"max_epochs and batch_size must be >= 1, got "
                             f"{self.max_epochs}, {self.batch_size}")

    def replace(self, **changes) -> TrainConfig:
        """A copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


def front_end(statistics: dict, features: str = FEATURES,
              speaker_inputs: bool = False) -> FrontEnd:
    """The served front end: Kaldi MFCC + Δ + ΔΔ of the voiced frames, z-scored per
    dimension with ``statistics`` (``{"mean": (39,), "std": (39,)}``); with
    ``speaker_inputs`` the speaker's own statistics are inputs and ``statistics`` the
    fallback (`keras_ser.serving.builders.FrontEnd.speaker_norm`)."""
    return FrontEnd(features=features, statistics=statistics, normalise="zscore",
                    speaker_norm=bool(speaker_inputs))


class FeatureBank:
    """Every utterance's voiced, un-normalised features, computed once per corpus.

    They come from the served front end itself (`build_units_model` with an identity
    z-score), so training sees exactly the frames an export selects.

    Args:
        utterances: `keras_ser.data.Utterances`.
        features: A voice-activity feature preset (default ``"tu"``).

    Attributes:
        arrays: ``(voiced_frames, dim)`` float32 per utterance.

    Raises:
        ValueError: The preset does not select voiced frames.
        tf.errors.InvalidArgumentError: An utterance shorter than one STFT window.
    """

    def __init__(self, utterances: data.Utterances, features: str = FEATURES):
        front = FrontEnd(features=features, statistics={"mean": 0.0, "std": 1.0},
                         normalise="zscore")
        if not front.config.vad:
            raise ValueError(f"feature preset '{features}' does not select voiced frames")
        units = build_units_model(front)
        cut = tf.function(lambda w: units(w, training=False),
                          input_signature=[tf.TensorSpec([1, None], tf.float32)])
        self.arrays = []
        for wave in utterances.waveforms:
            out = cut(tf.constant(wave.astype(np.float32)[None] / 32768.0))
            self.arrays.append(out["features"].numpy()[0, :int(out["length"].numpy()[0])])

    def statistics(self, index) -> dict:
        """Per-dimension mean and standard deviation over the voiced frames of the
        utterances at ``index`` (``{"mean": [dim], "std": [dim]}``)."""
        frames = np.concatenate([self.arrays[i] for i in index]).astype(np.float64)
        return {"mean": frames.mean(axis=0).tolist(), "std": frames.std(axis=0).tolist()}

    def normalised(self, index, statistics: dict) -> list:
        """The arrays at ``index`` z-scored as `keras_ser.serving.layers.Normalise`
        does (float32, ``(x - mean) / max(std, 1e-6)``)."""
        mean = np.float32(statistics["mean"])
        std = np.maximum(np.float32(statistics["std"]), np.float32(1e-6))
        return [(self.arrays[i] - mean) / std for i in index]

    def speaker_statistics(self, utterances: data.Utterances, speakers) -> dict:
        """`statistics` of each speaker's utterances alone: ``{speaker: {"mean",
        "std"}}``, for per-speaker normalisation (no label is used, but only the
        utterances of the run's classes are in the bank).

        Raises:
            ValueError: A speaker without utterances.
        """
        out = {}
        for speaker in sorted(speakers):
            index = utterances.indices([speaker])
            if not len(index):
                raise ValueError(f"speaker {speaker!r} has no utterance to normalise with")
            out[speaker] = self.statistics(index)
        return out

    def normalised_by_speaker(self, index, speakers: Sequence[str], own: dict) -> list:
        """The arrays at ``index``, each z-scored with its speaker's ``own`` statistics
        (``speakers[k]`` is the speaker of ``index[k]``)."""
        return [self.normalised([i], own[s])[0] for i, s in zip(index, speakers)]


def training_batches(arrays: Sequence[np.ndarray], emotions, speakers, batch_size: int,
                     seed: int, epochs: tuple, bucket: int = 8) -> tuple:
    """Shuffled, zero-padded batches of whole utterances for epochs ``first..stop-1``.

    Epoch e's order is a permutation drawn from ``(seed, e)`` alone, so a resumed run
    sees the batches an uninterrupted one would. Within each run of ``bucket`` batches
    of that order the utterances are sorted by length before batching, and the batches
    are then shuffled again, so a batch holds utterances of similar length and little
    padding (our choice: about 2x faster on CPU; the masked network computes the same
    per-utterance outputs either way, only batch composition changes).

    Returns:
        ``(dataset, steps_per_epoch)``; elements ``({"features": (b, frames, dim),
        "length": (b,)}, {"emotion": (b,), "speaker": (b,)})``.
    """
    first, stop = epochs
    lengths = np.array([len(a) for a in arrays], np.int32)
    emotions = np.asarray(emotions, np.int32)
    speakers = np.asarray(speakers, np.int32)
    n, dim = len(arrays), arrays[0].shape[-1]
    steps = math.ceil(n / batch_size)  # every chunk but the last holds whole batches

    def epoch_batches(epoch):
        rng = np.random.default_rng(seeds.derive(seed, "batches", epoch))
        order = rng.permutation(n)
        batches = []
        for start in range(0, n, batch_size * bucket):
            chunk = order[start:start + batch_size * bucket]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def generate():
        for epoch in range(first, stop):
            for chosen in epoch_batches(epoch):
                batch = np.zeros((len(chosen), lengths[chosen].max(), dim), np.float32)
                for row, k in enumerate(chosen):
                    batch[row, :lengths[k]] = arrays[k]
                yield ({"features": batch, "length": lengths[chosen]},
                       {"emotion": emotions[chosen], "speaker": speakers[chosen]})

    signature = ({"features": tf.TensorSpec([None, None, dim], tf.float32),
                  "length": tf.TensorSpec([None], tf.int32)},
                 {"emotion": tf.TensorSpec([None], tf.int32),
                  "speaker": tf.TensorSpec([None], tf.int32)})
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.prefetch(tf.data.AUTOTUNE), steps


def build_model(model_config: xvector.XVectorConfig, config: TrainConfig):
    """The compiled network of a strategy, SGD with Nesterov momentum (Sec. 3.2).

    Weights are initialised from Keras' global seed: set it first (the fold runner does).
    """
    model = xvector.SpeakerAdversarialSER(
        model_config, strategy=config.strategy, grl_lambda=config.grl_lambda,
        cgt_epsilon=config.cgt_epsilon, cgt_alpha=config.cgt_alpha, name="tu_xvector")
    model.build()
    model.compile(optimizer=xvector.paper_optimizer(config.learning_rate))
    model.optimizer.build(model.trainable_variables)
    return model


def speaker_probe(embeddings: np.ndarray, speakers: Sequence[str], seed: int = 0,
                  splits: int = 5) -> dict:
    """Accuracy of a linear speaker classifier on frozen embeddings (stratified k-fold).

    A fresh `sklearn.linear_model.LogisticRegression` on standardised embeddings, scored
    by `sklearn.model_selection.cross_val_score` within the given utterances (our
    measure of the speaker information Tu et al.'s Figure 2 shows by t-SNE).

    Args:
        embeddings: ``(n, D)``.
        speakers: ``(n,)`` speaker ids (at least two speakers).
        seed: Seed of the k-fold split.
        splits: k (reduced to the smallest speaker's utterance count when fewer).

    Returns:
        ``{"accuracy", "chance"}``: mean k-fold accuracy and the majority-speaker share.

    Raises:
        ValueError: Fewer than two speakers, or a speaker with a single utterance.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names, y = np.unique(np.asarray(speakers), return_inverse=True)
    counts = np.bincount(y)
    if len(names) < 2 or counts.min() < 2:
        raise ValueError(f"the speaker probe needs >= 2 speakers with >= 2 utterances each, "
                         f"got {dict(zip(names.tolist(), counts.tolist()))}")
    k = int(min(splits, counts.min()))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    scores = cross_val_score(probe, np.asarray(embeddings, np.float64), y,
                             cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return {"accuracy": float(scores.mean()), "chance": float(counts.max() / counts.sum())}


def tsne_png(embeddings: np.ndarray, emotions: Sequence[str], speakers: Sequence[str],
             path: str, title: str, seed: int = 0) -> np.ndarray:
    """Figure 2 of Tu et al.: t-SNE of embeddings coloured by emotion (left) and by
    speaker (right); written to ``path`` (PNG). Returns the RGB image ``(H, W, 3)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    points = TSNE(n_components=2, perplexity=min(30.0, (len(embeddings) - 1) / 3.0),
                  init="pca", random_state=seed).fit_transform(np.asarray(embeddings, np.float64))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, labels, name in ((axes[0], emotions, "emotion"), (axes[1], speakers, "speaker")):
        for value in sorted(set(labels)):
            chosen = np.asarray(labels) == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=10, label=str(value))
        ax.set_title(f"by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=90)
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


def _report(predicted, labels, classes) -> dict:
    report = metrics.classification_report(labels, predicted, classes)
    report.pop("class_names")
    return report


def fold_network(model_config: xvector.XVectorConfig, fold, classes: Sequence[str],
                 utterances: data.Utterances, bank: FeatureBank) -> xvector.XVectorConfig:
    """``model_config`` sized for a fold: input width, emotions, and one speaker output
    per training speaker with utterances (Sec. 3.1: only training speakers are labels)."""
    train = utterances.indices(fold.train)
    speakers = {utterances.speakers[i] for i in train}
    return model_config.replace(input_dim=int(bank.arrays[0].shape[-1]),
                                num_emotions=len(classes), num_speakers=max(len(speakers), 1))


def train_fold(model_config: xvector.XVectorConfig, config: TrainConfig, fold,
               classes: Sequence[str], out_dir: str, *, utterances: data.Utterances,
               bank: FeatureBank, verbose="auto", row: str | None = None,
               evaluate: bool = True, model=None) -> dict:
    """Train on ``fold.train``, keep the best validation epoch, test on ``fold.test``.

    Args:
        model_config: Network sizes (``num_emotions``, ``num_speakers`` and
            ``input_dim`` are set from the data).
        config: Strategy and schedule.
        fold: `keras_ser.folds.Fold` with validation speakers.
        classes: Emotion names in class-index order.
        out_dir: Folder of this run: ``ckpt/``, ``logs/`` (TensorBoard: losses, λ,
            validation accuracy, the t-SNE image), ``model.keras``, ``predictions.npz``,
            ``embeddings.npz``, ``tsne.png``.
        utterances: The corpus in memory, labelled with ``classes``.
        bank: Its `FeatureBank`.
        verbose: Keras ``fit`` verbosity.
        row: Table row (default the strategy).
        evaluate: Also score the test speaker and run the probe (False: validation only,
            for the hyper-parameter search).
        model: A compiled network of `fold_network` sizes (`build_model`) to train;
            default: built here from Keras' global seed.

    Returns:
        Dict with ``row``, ``fold``, speakers, ``config``, ``model_config``, ``epochs``,
        ``best_epoch``, ``validation`` and ``test`` reports (`keras_ser.metrics.
        classification_report`: ``wa`` is the accuracy of the paper's tables; ``test``
        also holds ``speaker_probe`` and ``speaker_probe_chance``), ``normalisation``
        (the training speakers' pooled statistics: what the export falls back to) and
        ``speaker_statistics`` (each fold speaker's own with ``speaker_norm``, else
        None).

    Raises:
        ValueError: A split without utterances, or a checkpoint of another configuration
            in ``out_dir``.
    """
    index = {part: utterances.indices(fold.part(part))
             for part in ("train", "validation", "test")}
    for part, found in index.items():
        if not len(found):
            raise ValueError(f"fold {fold.name}: no {part} utterances of {list(classes)} "
                             f"for speakers {sorted(fold.part(part))}")
    train_speakers = sorted({utterances.speakers[i] for i in index["train"]})
    speaker_of = {s: k for k, s in enumerate(train_speakers)}
    stats = bank.statistics(index["train"])
    # The training speakers' pooled statistics, or each speaker's own (speaker CMVN).
    own = bank.speaker_statistics(utterances, fold.speakers()) if config.speaker_norm else None
    if own:
        arrays = bank.normalised_by_speaker(
            index["train"], [utterances.speakers[i] for i in index["train"]], own)
    else:
        arrays = bank.normalised(index["train"], stats)
    part_stats = ({p: own[fold.only_speaker(p)] for p in ("validation", "test")} if own
                  else {"validation": stats, "test": stats})
    net = fold_network(model_config, fold, classes, utterances, bank)
    model = model or build_model(net, config)
    scorer = Scorer(model, front_end(part_stats["validation"]))
    val_units = scorer.prepare(utterances.select(index["validation"]))
    val_labels = utterances.labels[index["validation"]]

    def validation_logs(epoch):
        report = _report(scorer(val_units).predicted, val_labels, classes)
        logs = {"val_wa": report["wa"], "val_ua": report["ua"]}
        if config.strategy == "dat":
            logs["grl_lambda"] = float(model.grl.lambda_)
        return logs

    emotions = utterances.labels[index["train"]]
    speakers = [speaker_of[utterances.speakers[i]] for i in index["train"]]

    def batches(first):
        return training_batches(arrays, emotions, speakers, config.batch_size, config.seed,
                                (first, config.max_epochs))

    steps = math.ceil(len(arrays) / config.batch_size)
    callbacks = [LambdaLogs(validation_logs)]
    if config.strategy == "dat":
        callbacks.insert(0, xvector.GRLSchedule(
            model.grl, lambda_max=config.grl_lambda, total_steps=steps * config.max_epochs,
            steps_per_epoch=steps, schedule=config.lambda_schedule))
    state = fit_resumable(model, batches, directory=os.path.join(out_dir, "ckpt"),
                          epochs=config.max_epochs, seed=config.seed,
                          stage=f"{row or config.strategy} {fold.name}",
                          # Every epoch runs (patience = the budget); the best is kept.
                          early_stopping=PersistentEarlyStopping(OBJECTIVE, config.max_epochs),
                          callbacks=callbacks, verbose=verbose,
                          log_dir=os.path.join(out_dir, "logs"))
    result = {
        "row": row or config.strategy, "fold": fold.name, "train_speakers": train_speakers,
        "validation_speakers": sorted(fold.validation), "test_speakers": sorted(fold.test),
        "classes": list(classes), "config": config.to_dict(), "model_config": net.to_dict(),
        "epochs": int(state["epochs_done"]),
        "best_epoch": int(state["early_stopping"]["best_epoch"]) + 1,
        "validation": _report(scorer(val_units).predicted, val_labels, classes),
        "normalisation": stats, "speaker_statistics": own}
    if not evaluate:
        return result
    test_labels = utterances.labels[index["test"]]
    if own:
        scorer = Scorer(model, front_end(part_stats["test"]))
    test_units = scorer.prepare(utterances.select(index["test"]))
    scores = scorer(test_units)
    result["test"] = _report(scores.predicted, test_labels, classes)
    # The probe and Figure 2: embeddings of the unseen (validation + test) speakers.
    embed = tf.function(lambda x, n: model.embed({"features": x, "length": n}, training=False),
                        input_signature=[tf.TensorSpec([None, None, net.input_dim], tf.float32),
                                         tf.TensorSpec([None], tf.int32)])
    held = np.concatenate([index["validation"], index["test"]])
    vectors = np.concatenate([scorer.unit_outputs(units, embed)
                              for units in (val_units, test_units)])
    who = [utterances.speakers[i] for i in held]
    what = [classes[int(utterances.labels[i])] for i in held]
    probe = speaker_probe(vectors, who, seed=config.seed)
    result["test"]["speaker_probe"] = probe["accuracy"]
    result["test"]["speaker_probe_chance"] = probe["chance"]
    title = f"{TITLES[config.strategy]}, {fold.name}: unseen speakers' embeddings"
    image = tsne_png(vectors, what, who, os.path.join(out_dir, "tsne.png"), title,
                     seed=config.seed)
    with tf.summary.create_file_writer(os.path.join(out_dir, "logs", "tsne")).as_default():
        tf.summary.image("tsne_by_emotion_and_speaker", image[None], step=result["epochs"])
    io.save_npz(os.path.join(out_dir, "embeddings.npz"), embedding=vectors,
                utterance_id=np.array([utterances.ids[i] for i in held]),
                speaker=np.array(who), emotion=np.array(what))
    io.save_npz(os.path.join(out_dir, "predictions.npz"),
                utterance_id=np.array([utterances.ids[i] for i in index["test"]]),
                probabilities=scores.probabilities)
    io.save_model(model, os.path.join(out_dir, "model.keras"))
    return result


#: KerasTuner search ranges of the values the paper leaves open (ours).
SEARCH_SPACE = {"grl_lambda": (0.05, 2.0), "cgt_epsilon": (0.1, 10.0), "cgt_alpha": (0.1, 0.9)}


def tuned_config(hp: kt.HyperParameters, base: TrainConfig) -> TrainConfig:
    """``base`` with the strategy's open values drawn from ``hp``: λ for ``dat``, ε and
    α for ``cgt`` (`SEARCH_SPACE`; λ and ε on a log scale); other strategies have none."""
    changes = {}
    if base.strategy == "dat":
        low, high = SEARCH_SPACE["grl_lambda"]
        changes["grl_lambda"] = hp.Float("grl_lambda", low, high, sampling="log")
    elif base.strategy == "cgt":
        low, high = SEARCH_SPACE["cgt_epsilon"]
        changes["cgt_epsilon"] = hp.Float("cgt_epsilon", low, high, sampling="log")
        low, high = SEARCH_SPACE["cgt_alpha"]
        changes["cgt_alpha"] = hp.Float("cgt_alpha", low, high)
    return base.replace(**changes)


class AdversarialHyperModel(kt.HyperModel):
    """KerasTuner hypermodel of one strategy's λ / ε / α, trained on one fold per trial.

    Args:
        model_config: Network sizes.
        base: The strategy's `TrainConfig` (its other fields stay fixed).
        fold: The search fold (only its validation speaker scores a trial).
        classes, utterances, bank: As `train_fold`.
        trial_dir: One resumable sub-folder per sampled configuration.
        verbose: Keras ``fit`` verbosity.
    """

    def __init__(self, model_config, base: TrainConfig, fold, classes, utterances, bank,
                 trial_dir: str, verbose=0):
        super().__init__(name=base.strategy)
        self.model_config, self.base, self.fold = model_config, base, fold
        self.classes, self.utterances, self.bank = classes, utterances, bank
        self.trial_dir, self.verbose = trial_dir, verbose
        self.network = fold_network(model_config, fold, classes, utterances, bank)

    @staticmethod
    def _key(config: TrainConfig) -> str:
        return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()
                            ).hexdigest()[:12]

    def build(self, hp):
        """The compiled network of the sampled values (KerasTuner API), its initial
        weights seeded by the configuration."""
        config = tuned_config(hp, self.base)
        keras.utils.set_random_seed(seeds.derive(config.seed, "search", self._key(config)))
        return build_model(self.network, config)

    def fit(self, hp, model, *args, **kwargs):
        """Train the fold with the sampled values; return the best validation accuracy.

        Each configuration trains in its own resumable folder whose ``result.json`` is
        read back, so an interrupted search continues where it stopped."""
        config = tuned_config(hp, self.base)
        folder = os.path.join(self.trial_dir, self._key(config))
        done = os.path.join(folder, "result.json")
        if os.path.isfile(done):
            result = io.read_json(done)
        else:
            result = train_fold(self.model_config, config, self.fold, self.classes, folder,
                                utterances=self.utterances, bank=self.bank,
                                verbose=self.verbose, evaluate=False, model=model)
            io.write_json(done, result)
        return {OBJECTIVE: result["validation"]["wa"]}


def search(model_config, base: TrainConfig, fold, classes, utterances, bank, directory: str,
           max_trials: int, seed: int = 0, cluster=None) -> tuple:
    """KerasTuner random search of a strategy's open values on one fold (resumable;
    local or distributed: `keras_ser.tuning.run_search`).

    Writes ``<directory>/<strategy>/best.json`` (not on a tuner worker).

    Args:
        cluster: `keras_ser.tuning.TunerCluster` of a distributed search (None: local).

    Returns:
        ``(TrainConfig with the best values, best hyper-parameters, best validation
        accuracy)``; strategies without open values, and a tuner worker (the chief
        keeps the result), return ``(base, {}, None)``.

    Raises:
        RuntimeError, TimeoutError, ValueError: `keras_ser.tuning.run_search`'s.
    """
    from keras_ser import tuning

    if base.strategy in ("ser_only", "mtl"):
        return base, {}, None
    hyper = AdversarialHyperModel(model_config, base, fold, classes, utterances, bank,
                                  os.path.join(directory, "trials", base.strategy))
    oracle = tuning.run_search(hyper, OBJECTIVE, directory, base.strategy, max_trials, seed,
                               cluster)
    if oracle is None:
        return base, {}, None
    best = oracle.get_best_trials(1)[0]
    config = tuned_config(best.hyperparameters, base)
    io.write_json(os.path.join(directory, base.strategy, "best.json"), {
        "strategy": base.strategy, "hyperparameters": best.hyperparameters.values,
        "config": config.to_dict(), OBJECTIVE: best.score,
        "trials": len(oracle.trials), "search_fold": fold.name})
    return config, best.hyperparameters.values, best.score
