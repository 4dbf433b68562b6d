"""Multitask DCGAN for speech emotion (Chang & Scherer, ICASSP 2017), end to end.

    python recipes/multitask_dcgan.py                       # built-in smoke-test corpus
    python recipes/multitask_dcgan.py --corpus emodb --data ../shared/data/emodb --preset cpu
    python recipes/multitask_dcgan.py --corpus iemocap --data IEMOCAP_full_release \\
        --unlabelled AMI_folder --primary valence --preset paper --search

Method (the paper's Secs. "Data Corpus" and "Experimental Design"; `main` follows it):

1. Data. The labelled corpus and unlabelled speech (``--unlabelled``, e.g. AMI) are
   converted to TFRecords. Log-mel crops (``chang`` preset: 1024-sample window, 128
   bands) are cut at random around words, min-max normalised with the training
   speakers' extremes (our choice; ``--speaker-norm``: each speaker's own);
   under-represented classes are oversampled.
2. Folds. IEMOCAP: leave one session out, one speaker of it validates and the other
   tests. Other corpora: leave one speaker out, the next speaker validates.
3. Models. BasicCNN, MultitaskCNN, BasicDCGAN, MultitaskDCGAN share one conv stack
   (`keras_ser.models.dcgan`); the generator, the discriminator, then each task head
   are updated in turn (`keras_ser.training.multitask_gan`).
4. Hyper-parameters. ``--search``: a KerasTuner random search per model on the first
   fold's validation speaker; the best values are used on every fold. ``--tuner-role
   chief|worker --tuner-address HOST:PORT`` spreads the trials over worker processes.
5. Training. Validation UA on whole utterances after every epoch; stop after 5 epochs
   without a new best, restore the best epoch (`keras_ser.protocols.multitask_dcgan`).
6. Results. ``results.json``/``results.md`` (UA of the emotion and of valence and
   activation at 5 and 3 levels, Pearson r; mean ± std over folds), the best model's
   confusion matrix, TensorBoard logs with generated grids, and the best classifier
   exported as a SavedModel taking a 16 kHz waveform (``keras-ser predict``).

Everything lands under ``--out``; re-running the same command resumes exactly.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from keras_ser import data as kdata
from keras_ser import experiment, plots, tuning
from keras_ser.experiment import Metric, Schedule
from keras_ser.models import dcgan
from keras_ser.protocols import multitask_dcgan as protocol
from keras_ser.tasks import CIRCUMPLEX_REFERENCE, TaskSpec

#: Schedules per preset (the paper gives no epoch budget; patience 5 is the paper's, the
#: rest ours); ``smoke`` is the built-in corpus's (it only shows the pipeline runs).
SCHEDULES = {"paper": Schedule(max_epochs=200, patience=5, max_trials=10),
             "cpu": Schedule(max_epochs=40, patience=5, max_trials=10),
             "smoke": Schedule(max_epochs=12, patience=5, max_trials=10)}
COLUMNS = [Metric("emotion_ua", "UA emotion"), Metric("emotion_wa", "WA emotion")] + [
    m for d in ("valence", "activation") for m in (
        Metric(f"{d}_ua5", f"UA {d} 5-class"),
        Metric(f"{d}_ua3_decisions", f"UA {d} 3-class (pooled decisions)"),
        Metric(f"{d}_ua3_probabilities", f"UA {d} 3-class (pooled probabilities)"),
        Metric(f"{d}_r", f"r {d}", percent=False))]


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = experiment.parser(__doc__, dcgan.DCGAN_PRESETS, ("models", dcgan.MODELS,
                                                         ",".join(dcgan.MODELS)),
                          speaker_norm=True)
    p.add_argument("--primary", choices=("emotion", "valence", "activation"), default=None,
                   help="primary task (default: valence on IEMOCAP, else emotion)")
    p.add_argument("--search", action="store_true", help="random search per model first")
    Schedule.add_options(p, ("max_epochs", "patience", "max_trials"))
    return p.parse_args(argv)


def targets_text(spec: TaskSpec, data: protocol.Corpus) -> str:
    """Where the heads' targets come from, for the results header."""
    n, rated = len(data.utterances), min(data.rated.values())
    if spec.primary != "emotion":
        return f"{spec.primary} mean ratings as fuzzy labels"
    if rated == n:
        return "emotion categories; valence/activation heads from the corpus's mean ratings"
    return (f"emotion categories; valence/activation levels derived from the category for "
            f"{n - rated} of {n} utterances ({CIRCUMPLEX_REFERENCE})")


def export_best(out, summary, results, spec, minmax, corpus):
    """Export the best model (mean primary UA) from its best validation fold."""
    best = max(experiment.network_rows(summary),
               key=lambda m: summary[m]["primary_ua"]["mean"])
    fold = max((r for r in results if r["row"] == best),
               key=lambda r: r["validation"]["primary_ua"])
    config = dcgan.DCGANConfig(**fold["config"])
    folder = experiment.fold_folder(out, best, fold["fold"], fold.get("repeat", 0))
    own = fold.get("speaker_statistics")
    experiment.export(out, "multitask_dcgan", protocol.load_classifier(folder),
                      protocol.front_end(spec, config, minmax(fold["fold"]),
                                         speaker_inputs=bool(own)),
                      spec.class_names, {"recipe": "multitask_dcgan", "model": best,
                                         "fold": fold["fold"], "corpus": corpus.name,
                                         **({"normalisation": "speaker",
                                             "speaker_statistics": own} if own else {})})
    return best


@experiment.recipe_main
def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0; 2 for bad options or data)."""
    args, started = parse_args(argv), time.time()
    cluster = tuning.cluster_from_args(args, args.search)  # --tuner-role, --tuner-address
    models = experiment.rows_of(args.models, dcgan.MODELS, "models")
    out = experiment.out_dir(args, "multitask_dcgan")
    # 1. Data.
    corpus = experiment.load_corpus(args, out)
    primary = args.primary or ("valence" if corpus.name == "iemocap" else "emotion")
    spec = TaskSpec(primary, emotions=experiment.choose_classes(corpus, args.classes)
                    if primary == "emotion" else None)
    data = protocol.Corpus(corpus.records, spec)
    # 2. Folds.
    scheme = "loso-session" if corpus.name == "iemocap" else "loso-speaker"
    folds = experiment.choose_folds(corpus, scheme, args.folds, out)
    settings = SCHEDULES["smoke" if corpus.smoke else args.preset].override(args)
    base = dcgan.get_dcgan_preset(args.preset)
    experiment.write_config(out, args, argv, corpus, spec=spec, protocol=scheme, models=models,
                            folds=[f.name for f in folds], architecture=base, settings=settings)
    extremes = {}
    own = own_unlabelled = None  # --speaker-norm: every speaker's own extremes
    if args.speaker_norm:
        own = protocol.speaker_minmax(corpus.records, spec)
        files = [f for d in corpus.unlabelled for f in kdata.record_files(d)]
        own_unlabelled = protocol.speaker_minmax(files, spec) if files else None

    def minmax(name):
        fold = next(f for f in folds if f.name == name)
        extremes.setdefault(name, protocol.fold_minmax(corpus.records, fold.train, spec))
        return extremes[name]

    # 4. Hyper-parameters (random search), 3 and 5. models trained fold by fold.
    configs = {m: tuning.search_model(m, base, args.preset, folds[0], corpus.records, data,
                                      os.path.join(out, "search"), settings,
                                      minmax(folds[0].name), corpus.unlabelled, args.seed,
                                      cluster) if args.search else base for m in models}
    if cluster.worker:  # a tuner worker only runs trials: the chief trains the folds
        return tuning.worker_done(cluster)
    results = experiment.run_folds(out, models, folds, args.seed, lambda m, fold, path, seed:
                                   protocol.train_fold(
                                       m, configs[m], fold, corpus.records, data, path,
                                       minmax=minmax(fold.name), max_epochs=settings.max_epochs,
                                       patience=settings.patience, seed=seed,
                                       unlabelled=corpus.unlabelled,
                                       verbose=experiment.verbosity(args), own=own,
                                       own_unlabelled=own_unlabelled),
                                   repeats=args.seeds)
    # The reference rows (eGeMAPS + linear SVM) predict the primary task's classes.
    reference = experiment.baseline_rows(
        args, corpus, folds, out, data.utterances if primary == "emotion" else
        kdata.Utterances(corpus.records, labels=data.level_labels(primary)),
        class_names=spec.class_names, aliases={"primary_ua": "ua", **(
            {"emotion_ua": "ua", "emotion_wa": "wa"} if primary == "emotion"
            else {f"{primary}_ua5": "ua"})}, speaker_norm=args.speaker_norm)
    # 6. Results; every model against the first (the paper's claim: MultitaskDCGAN > BasicCNN).
    gains = experiment.paired_tests(results, models, models[0], "primary_ua")
    summary = experiment.write_results(
        out, title=f"Multitask DCGAN (Chang & Scherer 2017) on {corpus.name}", header=[
            (f"Protocol: {scheme}, {len(folds)} folds; early stopping after "
             f"{settings.patience} epochs without a new best validation UA."),
            (f"Primary task: {primary} ({len(spec.class_names)} classes; chance UA "
             f"{100 / len(spec.class_names):.1f}%); targets: {targets_text(spec, data)}."),
            f"Preset {args.preset}; search: {'random' if args.search else 'off'}; "
            "min-max with " + ("each speaker's own extremes (transductive)."
                               if args.speaker_norm else "the training speakers' extremes.")],
        entries=results, rows=models, row_titles=dcgan.MODEL_TITLES, columns=COLUMNS,
        main=Metric("primary_ua", "Primary-task UA"), folds=results, smoke=corpus.smoke,
        started=started, baseline=reference, document={
            "classes": spec.class_names, "spec": spec.to_dict(), "paired_tests_vs_first": gains,
            "configs": {m: c.to_dict() for m, c in configs.items()}},
        sections=[experiment.paired_tests_markdown(
            gains, dcgan.MODEL_TITLES[models[0]], Metric("primary_ua", "Primary-task UA"),
            dcgan.MODEL_TITLES)] if gains and len(folds) > 1 else [])
    best = max(experiment.network_rows(summary),
               key=lambda m: summary[m]["primary_ua"]["mean"])
    key = "emotion_confusion" if primary == "emotion" else f"{primary}_confusion5"
    plots.confusion_matrix_png(
        np.sum([r["test"][key] for r in results if r["row"] == best], axis=0),
        spec.class_names, os.path.join(out, "confusion.png"),
        title=f"{dcgan.MODEL_TITLES[best]}, summed over folds")
    if not args.no_export:
        export_best(out, summary, results, spec, minmax, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
