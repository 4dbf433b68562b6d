"""GAN augmentation + ImageNet transfer (NITK report): per-class DCGANs, VGG16 and ResNet50.

    python recipes/transfer_gan_augment.py                       # built-in smoke corpus
    python recipes/transfer_gan_augment.py --corpus emodb --data ../shared/data/emodb
    python recipes/transfer_gan_augment.py --corpus emodb --data ../shared/data/emodb \\
        --protocol random                                        # the report's split
    python -m tfrecords_tools master SRC master_records           # the report's data
    python recipes/transfer_gan_augment.py --corpus master --data master_records \\
        --label gender_emotion --protocol random --preset paper --weights imagenet \\
        --augment male_neutral,male_fear,male_disgust,male_happiness,male_anger,\\
male_sadness,female_surprise,male_surprise \\
        --augment-count male_surprise=400,female_surprise=400,male_neutral=250,...

Method (the report's Secs. 5-6; `main` follows it):

1. Data. Any converted corpus; the report's "master dataset" merges RAVDESS (speech,
   calm as neutral), TESS, SAVEE and CREMA-D (``python -m tfrecords_tools master``).
   Labels: the emotion, or ``--label gender_emotion`` (the 14 classes of Figure 13).
2. Spectrograms. One 224 x 224 log-mel image per utterance, computed in the graph by the
   served front end (feature preset ``nitk``: 32 ms Hann window, 16 ms hop, 512-point
   FFT, 128 mel bands to 8 kHz, dB, the whole utterance resized to 224 x 224 and scaled
   to [0, 255]; the report gives no STFT values, these are ours).
3. Protocol. ``--protocol loso`` (leave one speaker out, the next speaker validates),
   ``kfold`` (``--k`` folds over speakers, for big corpora) or ``random`` (the report's
   random 80/20 split of the utterances, which mixes speakers and overstates accuracy;
   ``--splits N`` draws N independent splits so the gain can be tested).
4. GANs (Sec. 6.1). For each class to augment (``--augment``: names, or the
   ``--augment-smallest N`` minority classes), a DCGAN with the report's generator and
   two discriminators is trained on that class's training images (BCE, Adam, D1 then
   D2), and generates images up to ``--augment-count`` (``balance``, N or class=N).
5. Classifiers (Sec. 6.2, Figure 19). ResNet50 and VGG16 with only the new head trained
   and VGG16 with its first eight convolutions frozen; each trained on the original and
   on the augmented training set. ``--weights imagenet`` loads Keras' cached ImageNet
   weights (this machine cannot download them), ``--weights PATH`` a file, ``none``
   random initialisation. Frozen layers are computed once per image (feature cache).
6. Results. The Figure 19 table (validation and training accuracy) with test WA, UA
   and macro-F1, mean ± std over folds; each augmented row against its original row with
   a paired Wilcoxon test over folds (the two rows of a pair share each fold's seed:
   the same head initialisation, dropout and batch draws, so they differ only in their
   training data); per-class recall of the augmented classes before
   and after; GAN grids per class; the best row exported as a waveform-in SavedModel.

Everything lands under ``--out``; re-running the same command resumes exactly.
"""

from __future__ import annotations

import os
import sys
import time

from keras_ser import data, experiment, seeds
from keras_ser.experiment import Metric, Schedule
from keras_ser.models import nitk_gan, transfer
from keras_ser.protocols import transfer as protocol

COLUMNS = [Metric("validation_accuracy", "Validation accuracy"),
           Metric("train_accuracy", "Training accuracy"), Metric("wa", "Test accuracy"),
           Metric("ua", "Test UA"), Metric("macro_f1", "Test macro-F1")]
#: Budgets the report leaves open (ours): classifier epochs, and GAN steps per class
#: (``steps_per_epoch`` steps between grids). ``cpu`` trains a fold of EmoDB in minutes.
SCHEDULES = {"paper": Schedule(max_epochs=30, patience=30, batch_size=32),
             "cpu": Schedule(max_epochs=15, patience=15, batch_size=32),
             "smoke": Schedule(max_epochs=2, patience=2, batch_size=16)}
GAN_SCHEDULES = {"paper": protocol.GANSchedule(steps=5000, steps_per_epoch=100),
                 # cpu: the 64 x 64 GAN preset, the ends of the report's learning-rate
                 # ranges (D 5e-5, G 1.7e-4); 1000 updates take about 3 min per class.
                 "cpu": protocol.GANSchedule(steps=1000, steps_per_epoch=100, d_lr=5e-5,
                                             g_lr=1.7e-4),
                 "smoke": protocol.GANSchedule(steps=4, steps_per_epoch=2)}


def parse_args(argv=None):
    """Command-line options (see ``--help``).

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The `argparse.Namespace`: the common recipe options of
        `keras_ser.experiment.parser` (``--classifiers`` among
        `keras_ser.models.transfer.CLASSIFIERS`), this recipe's and ``--max-epochs``,
        ``--batch-size``; values are checked later by `configure`.

    Raises:
        SystemExit: Unknown options or bad choices (argparse, status 2).
    """
    p = experiment.parser(__doc__, transfer.TRANSFER_PRESETS,
                          ("classifiers", transfer.CLASSIFIERS, ",".join(transfer.CLASSIFIERS)))
    p.add_argument("--label", choices=data.Utterances.LABELS, default="emotion",
                   help="class labels: the emotion, or gender x emotion (report Fig. 13)")
    p.add_argument("--protocol", choices=("loso", "kfold", "random"), default="loso")
    p.add_argument("--k", type=int, default=5, help="folds over speakers of --protocol kfold")
    p.add_argument("--splits", type=int, default=1,
                   help="independent random splits of --protocol random (report: 1)")
    p.add_argument("--augment", default=None,
                   help="comma-separated classes to augment (default: --augment-smallest)")
    p.add_argument("--augment-smallest", type=int, default=2, metavar="N",
                   help="augment the N smallest classes of each fold's training set")
    p.add_argument("--augment-count", default="balance",
                   help="'balance' (up to the largest class), N per class, or class=N,...")
    p.add_argument("--weights", default="none",
                   help="'imagenet' (Keras cache, never downloaded), a weight file, or none")
    p.add_argument("--gan-preset", choices=sorted(nitk_gan.NITK_GAN_PRESETS), default=None,
                   help="GAN widths (default: --preset)")
    p.add_argument("--gan-steps", type=int, default=None, help="GAN updates per class")
    p.add_argument("--training-sets", choices=("both", "original", "augmented"),
                   default="both", help="rows trained on the original images, on the "
                   "GAN-augmented ones, or both (Figure 19)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the frozen layers every step (same results, slower)")
    Schedule.add_options(p, ("max_epochs", "batch_size"))
    return p.parse_args(argv)


def configure(args, corpus, classes, names) -> protocol.Plan:
    """Check the options before any image is computed (`keras_ser.protocols.transfer.
    Plan.check`) with this recipe's budgets (``smoke`` for the smoke corpus).

    Args:
        args: `parse_args` output.
        corpus: The loaded corpus.
        classes: Class names.
        names: The selected classifiers (keys of `transfer.CLASSIFIERS`).

    Returns:
        The `keras_ser.protocols.transfer.Plan`.

    Raises:
        experiment.BadInput: What `Plan.check` raises, and ``--gan-steps`` below two
            GAN epochs.
    """
    budget = "smoke" if corpus.smoke else args.preset
    try:
        gans = GAN_SCHEDULES[budget] if args.gan_steps is None else protocol.GANSchedule(
            **{**GAN_SCHEDULES[budget].to_dict(), "steps": args.gan_steps})
        return protocol.Plan.check(
            classes=classes, names=names, training_sets=args.training_sets,
            preset=args.preset, settings=SCHEDULES[budget].override(args), gans=gans,
            gan_preset=args.gan_preset, weights=args.weights, augment=args.augment,
            augment_count=args.augment_count, smallest=args.augment_smallest,
            label=args.label)
    except (ValueError, FileNotFoundError) as err:
        raise experiment.BadInput(str(err)) from None


@experiment.recipe_main
def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0; 2 for bad options or data)."""
    args, started = parse_args(argv), time.time()
    names = experiment.rows_of(args.classifiers, transfer.CLASSIFIERS, "classifiers")
    out = experiment.out_dir(args, "transfer_gan_augment")
    # 1. Data and labels; every option checked before any image is computed.
    corpus = experiment.load_corpus(args, out)
    classes = experiment.choose_classes(corpus, args.classes, label=args.label)
    utterances = data.Utterances(corpus.records, classes=classes, label=args.label)
    plan = configure(args, corpus, classes, names)
    # 2. One spectrogram image per utterance, by the served front end.
    bank = protocol.ImageBank(utterances)
    # 3. Folds: speakers held out, or the report's random splits.
    scheme = {"loso": "loso-speaker", "kfold": "kfold", "random": "random"}[args.protocol]
    folds = protocol.random_folds(utterances.speakers, args.splits) if scheme == "random" \
        else experiment.choose_folds(corpus, scheme, args.folds or ("2" if corpus.smoke else
                                     None), out, **({"k": args.k} if scheme == "kfold" else {}))
    experiment.write_config(out, args, argv, corpus, classes=classes, protocol=scheme,
                            folds=[f.name for f in folds], model_config=plan.model,
                            gan_schedule=plan.gans.to_dict(), gan_preset=plan.gan_preset,
                            settings=plan.settings, rows=list(plan.rows))
    cache = None if args.no_cache else protocol.FeatureCache(os.path.join(out, "cache"))
    verbose = experiment.verbosity(args)

    def fold_run(row, fold, path, seed):
        split = protocol.fold_split(fold, utterances, args.seed)
        # 4. The fold's per-class GANs (the minority classes), shared by its +gan rows.
        synthetic = plan.gan_images(row, split, utterances, bank, os.path.join(
            out, "gans", fold.name), seeds.derive(args.seed, fold.name), verbose)
        # 5. The transfer classifier on original or augmented training images.
        return plan.train(row, split, utterances, bank, path, seed=seed, synthetic=synthetic,
                          network_seed=seeds.derive(args.seed, "network"), cache=cache,
                          verbose=verbose)

    results = experiment.run_folds(out, list(plan.rows), folds, args.seed, fold_run,
                                   repeats=args.seeds, seed_key=protocol.original_row)
    reference = experiment.baseline_rows(
        args, corpus, folds, out, utterances, class_names=classes,
        aliases={"validation_accuracy": "wa"},
        split=lambda fold: protocol.fold_split(fold, utterances, args.seed).indices())
    # 6. Results: Figure 19's table, augmented vs original (paired), recalls, export.
    tests, sections = protocol.augmentation_sections(
        results, names, classes, COLUMNS, len(folds) > 1 and args.training_sets == "both")
    summary = experiment.write_results(
        out, title=f"GAN augmentation + ImageNet transfer (NITK report) on {corpus.name}",
        header=plan.header(scheme, folds), entries=results, rows=list(plan.rows),
        row_titles=protocol.TITLES, columns=COLUMNS, main=COLUMNS[2], folds=results,
        smoke=corpus.smoke, started=started, row_header="Classifier", baseline=reference,
        document={"classes": classes, "protocol": scheme, "label": args.label,
                  "paired_tests_vs_original": tests,
                  "paired_seeds": "each +gan row uses its original row's seed per fold",
                  "cache": None if cache is None else
                  {"hits": cache.hits, "misses": cache.misses}},
        sections=sections)
    if not args.no_export:
        experiment.export_best(out, "transfer_gan_augment", summary, results,
                               lambda r: protocol.front_end(), classes,
                               {"recipe": "transfer_gan_augment", "corpus": corpus.name})
    return 0


if __name__ == "__main__":
    sys.exit(main())
