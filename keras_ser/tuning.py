"""KerasTuner random search over the hyper-parameters Chang & Scherer (2017) searched.

The paper (Sec. "Experimental Design") picks, per model, the crop width, the conv filter
size (tied to the crop width), the number of filters, the batch size and the learning
rate by random search, with validation accuracy as the objective. `DCGANHyperModel`
does this with KerasTuner's `RandomSearch`: every trial trains one model with the full
protocol of `keras_ser.protocols.multitask_dcgan.train_fold` (early stopping on the
validation speaker) on a single search fold and reports the best validation UA. The
test speaker of that fold is never scored during the search.

The ranges are data (`SEARCH_SPACES`). The paper lists them, but the text we have lost
them; only "number of convolutional filters (step size 4)" survives, so filters move in
steps of 4 and the bounds are ours: crops of 1-4 s at the ``chang`` 32 ms hop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence

import keras_tuner as kt

from keras_ser import io
from keras_ser.models import dcgan

OBJECTIVE = "val_primary_ua"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Ranges of the random search.

    Attributes:
        crop_frames: Crop widths W in frames (multiples of 16); the filter size follows
            with `keras_ser.models.dcgan.tied_kernel_size`.
        filters: ``(min, max)`` filters of the first conv layer, sampled in steps of 4.
        batch_sizes: Batch sizes.
        learning_rate: ``(min, max)`` Adam learning rate, sampled log-uniformly.
    """

    crop_frames: tuple = (32, 48, 64)
    filters: tuple = (4, 16)
    batch_sizes: tuple = (16, 32, 64)
    learning_rate: tuple = (1e-4, 1e-3)


SEARCH_SPACES = {
    "paper": SearchSpace(crop_frames=(32, 48, 64, 96, 128), filters=(16, 128),
                         batch_sizes=(32, 64, 128), learning_rate=(1e-5, 1e-3)),
    "cpu": SearchSpace(),
}


def sample_config(hp: kt.HyperParameters, base: dcgan.DCGANConfig,
                  space: SearchSpace) -> dcgan.DCGANConfig:
    """A `DCGANConfig` with the searched fields drawn from ``hp``.

    Raises:
        ValueError: A sampled crop width that is not a multiple of 16.
    """
    crop = hp.Choice("crop_frames", list(space.crop_frames))
    return base.replace(
        crop_frames=crop, kernel_size=dcgan.tied_kernel_size(crop),
        filters=hp.Int("filters", space.filters[0], space.filters[1], step=4),
        batch_size=hp.Choice("batch_size", list(space.batch_sizes)),
        learning_rate=hp.Float("learning_rate", space.learning_rate[0],
                               space.learning_rate[1], sampling="log"))


class DCGANHyperModel(kt.HyperModel):
    """One of the four models, trained on one fold per trial.

    Args:
        model: One of `keras_ser.models.dcgan.MODELS`.
        base: Preset whose other fields stay fixed.
        space: `SearchSpace`.
        fold: The search fold (its validation speaker scores the trial; its test speaker
            is never scored during the search).
        records, corpus: As `keras_ser.protocols.multitask_dcgan.train_fold`.
        trial_dir: Folder holding one sub-folder per trial configuration.
        max_epochs, patience, seed, unlabelled, minmax: Passed to ``train_fold``.
    """

    def __init__(self, model: str, base: dcgan.DCGANConfig, space: SearchSpace, fold,
                 records: str, corpus, trial_dir: str, *, minmax: tuple,
                 max_epochs: int = 30, patience: int = 5, seed: int = 0,
                 unlabelled: Sequence[str] = (), verbose=0):
        super().__init__(name=model)
        self.model_name = model
        self.base, self.space, self.fold = base, space, fold
        self.records, self.corpus = records, corpus
        self.trial_dir = trial_dir
        self.max_epochs, self.patience, self.seed = max_epochs, patience, seed
        self.unlabelled, self.minmax, self.verbose = unlabelled, minmax, verbose

    def build(self, hp):
        """The compiled trainer of the sampled configuration (KerasTuner API)."""
        from keras_ser.protocols import multitask_dcgan as protocol

        return protocol.build_trainer(self.model_name, sample_config(hp, self.base, self.space),
                                      self.corpus.spec, self.seed)

    def fit(self, hp, model, *args, **kwargs):
        """Train one fold with the sampled configuration; return the best validation UA.

        Each configuration trains in its own resumable folder (named by a hash of the
        configuration) whose ``result.json`` is read back, so an interrupted search
        continues where it stopped.
        """
        from keras_ser.protocols import multitask_dcgan as protocol

        config = sample_config(hp, self.base, self.space)
        key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
        folder = os.path.join(self.trial_dir, key[:12])
        done = os.path.join(folder, "result.json")
        if os.path.isfile(done):
            result = io.read_json(done)
        else:
            result = protocol.train_fold(
                self.model_name, config, self.fold, self.records, self.corpus, folder,
                minmax=self.minmax, max_epochs=self.max_epochs, patience=self.patience,
                seed=self.seed, unlabelled=self.unlabelled, verbose=self.verbose,
                trainer=model)
            io.write_json(done, result)
        return {OBJECTIVE: result["validation"]["primary_ua"]}


def random_search(hypermodel: DCGANHyperModel, directory: str, max_trials: int,
                  seed: int = 0) -> tuple:
    """Run (or resume) a KerasTuner random search; save and return the best config.

    Args:
        hypermodel: `DCGANHyperModel`.
        directory: Tuner folder; ``<model>/best.json`` (hyper-parameters, config, score)
            is written there. Re-running with the same folder resumes finished trials.
        max_trials: Trials to run in total.
        seed: Seed of the random search.

    Returns:
        ``(DCGANConfig, best hyper-parameter dict, best validation UA)``.

    Reference:
        Chang & Scherer, ICASSP 2017, Sec. "Experimental Design"; Bergstra & Bengio,
        JMLR 2012 (random search).
    """
    tuner = kt.RandomSearch(hypermodel, objective=kt.Objective(OBJECTIVE, direction="max"),
                            max_trials=max_trials, seed=seed, directory=directory,
                            project_name=hypermodel.model_name, overwrite=False)
    tuner.search()
    best = tuner.oracle.get_best_trials(1)[0]
    config = sample_config(best.hyperparameters, hypermodel.base, hypermodel.space)
    io.write_json(os.path.join(directory, hypermodel.model_name, "best.json"), {
        "model": hypermodel.model_name, "hyperparameters": best.hyperparameters.values,
        "config": config.to_dict(), OBJECTIVE: best.score,
        "trials": len(tuner.oracle.trials), "search_fold": hypermodel.fold.name})
    return config, best.hyperparameters.values, best.score


def search_model(model: str, base: dcgan.DCGANConfig, preset: str, fold, records: str,
                 corpus, directory: str, settings, minmax: tuple,
                 unlabelled: Sequence[str] = (), seed: int = 0) -> dcgan.DCGANConfig:
    """`random_search` of one model with the preset's `SEARCH_SPACES` entry; prints and
    returns the best configuration.

    Args:
        settings: Schedule with ``max_epochs``, ``patience`` and ``max_trials``.
        Others: As `DCGANHyperModel`.
    """
    hyper = DCGANHyperModel(model, base, SEARCH_SPACES[preset], fold, records, corpus,
                            os.path.join(directory, "trials", model), minmax=minmax,
                            max_epochs=settings.max_epochs, patience=settings.patience,
                            seed=seed, unlabelled=unlabelled)
    config, hp, score = random_search(hyper, directory, settings.max_trials, seed=seed)
    print(f"{model}: best of {settings.max_trials} trials {hp} (validation UA "
          f"{100 * score:.1f}%)")
    return config
