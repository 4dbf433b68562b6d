"""Multitask DCGAN for speech emotion (Chang & Scherer, ICASSP 2017), end to end.

    python recipes/multitask_dcgan.py                       # built-in smoke-test corpus
    python recipes/multitask_dcgan.py --corpus emodb --data ../shared/data/emodb --preset cpu
    python recipes/multitask_dcgan.py --corpus iemocap --data IEMOCAP_full_release \\
        --unlabelled AMI_or_LibriSpeech_folder --primary valence --preset paper

Method (the paper's Sec. 2-3, one step per block below):

1. Data. The labelled corpus is converted to TFRecords (`tfrecords_tools`); unlabelled
   speech (``--unlabelled``) too. Log-mel patches (``chang`` preset: 1024-sample
   window, 128 mel bands) are cropped at random around words, min-max normalised to
   [-1, 1] with the training speakers' extremes; under-represented emotions are
   oversampled.
2. Folds. IEMOCAP: leave one session out, one held-out speaker validates and the other
   tests. Other corpora: leave one speaker out, the next speaker validates.
3. Models. BasicCNN, MultitaskCNN, BasicDCGAN, MultitaskDCGAN from one conv stack
   (`keras_ser.models.dcgan`), trained by `keras_ser.training.multitask_gan`: generator,
   discriminator, then each task head in turn; unlabelled batches feed only the GAN.
4. Hyper-parameters. ``--search`` runs a KerasTuner random search per model on the
   first fold's validation speaker; the best values are saved and used for all folds.
5. Training. After every epoch the validation UA is computed on whole utterances;
   training stops after 5 epochs without a new best and the best weights are restored.
6. Results. ``results.json``, ``results.md`` (4 models x UA / Pearson r, mean ± std over
   folds), the best model's confusion matrix, TensorBoard logs with generated
   spectrogram grids, and the best classifier exported as a SavedModel that takes a
   16 kHz waveform (``keras-ser predict OUT/export file.wav``).

Everything lands under ``--out``; re-running the same command resumes: finished folds
are kept and an interrupted fold continues from its last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_ser import export, folds as kfolds, plots, reporting, tuning
from keras_ser.models import dcgan
from keras_ser.training import protocol
from keras_ser.training.callbacks import atomic_json
from tfrecords_tools import synthetic, writer as twriter

SMOKE_NOTE = synthetic.BANNER


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None,
                   help="reader name (emodb, iemocap, ravdess, ...); default: the built-in "
                        "smoke-test corpus when --data is not given")
    p.add_argument("--data", default=None,
                   help="corpus folder as released, or a record folder from the converter")
    p.add_argument("--unlabelled", nargs="*", default=[],
                   help="unlabelled speech: audio folders (read with the 'speech' reader) or "
                        "record folders; default: the training speakers' own audio")
    p.add_argument("--primary", choices=("emotion", "valence", "activation"), default=None,
                   help="primary task (default: valence on IEMOCAP, else emotion)")
    p.add_argument("--classes", default=None,
                   help="comma-separated emotion classes (default: all in the corpus)")
    p.add_argument("--preset", choices=sorted(dcgan.DCGAN_PRESETS), default="cpu")
    p.add_argument("--models", default=",".join(dcgan.MODELS),
                   help=f"comma-separated subset of {','.join(dcgan.MODELS)}")
    p.add_argument("--folds", type=int, default=None, help="run only the first N folds")
    p.add_argument("--max-epochs", type=int, default=None,
                   help=f"epoch budget (default {MAX_EPOCHS} by preset; "
                        f"{SMOKE_MAX_EPOCHS} on the smoke-test corpus)")
    p.add_argument("--patience", type=int, default=5,
                   help="epochs without a new best validation UA before stopping (paper: 5)")
    p.add_argument("--search", action="store_true", help="random search per model first")
    p.add_argument("--max-trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<corpus>-<preset>)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--verbose", type=int, default=None,
                   help="Keras fit verbosity (default: progress bar on a terminal, else 2)")
    return p.parse_args(argv)


#: Epoch budgets per preset (early stopping usually ends sooner).
MAX_EPOCHS = {"cpu": 40, "paper": 200}
#: Epoch budget of the smoke-test corpus: it only has to show the pipeline runs, in
#: minutes.
SMOKE_MAX_EPOCHS = 12


def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0, or 2 for bad options)."""
    args = parse_args(argv)
    start = time.time()
    smoke = args.data is None
    corpus = "smoke" if smoke else args.corpus
    if corpus is None:
        print("error: --data needs --corpus (a reader name)", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"multitask_dcgan-{corpus}-{args.preset}")
    os.makedirs(out, exist_ok=True)

    # 1. Data.
    try:
        records = (synthetic.smoke_records(out) if smoke
                   else twriter.records_for(corpus, args.data, out))
        unlabelled = [twriter.records_for("speech", d, os.path.join(
            out, "unlabelled", os.path.basename(os.path.normpath(d)))) for d in args.unlabelled]
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(os.path.join(records, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    primary = args.primary or ("valence" if corpus == "iemocap" else "emotion")
    emotions = (args.classes.split(",") if args.classes else
                sorted(k for k, v in stats["emotion"].items() if v > 0))
    spec = protocol.TaskSpec(primary=primary,
                             emotions=emotions if primary == "emotion" else None)

    # 2. Folds.
    scheme = "loso-session" if corpus == "iemocap" else "loso-speaker"
    fold_list = kfolds.folds_from_stats(stats, scheme)
    kfolds.save_folds(os.path.join(out, "folds.json"), fold_list, scheme, corpus=corpus)
    if args.folds:
        fold_list = fold_list[:args.folds]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in dcgan.MODELS:
            print(f"error: unknown model '{m}'; expected {dcgan.MODELS}", file=sys.stderr)
            return 2
    base = dcgan.get_dcgan_preset(args.preset).replace(n_mels=128)
    max_epochs = args.max_epochs or (SMOKE_MAX_EPOCHS if smoke else MAX_EPOCHS[args.preset])
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    config_doc = {"argv": sys.argv[1:] if argv is None else list(argv), "corpus": corpus,
                  "records": records, "unlabelled": unlabelled, "spec": spec.to_dict(),
                  "protocol": scheme, "folds": [f.name for f in fold_list],
                  "preset": args.preset, "base_config": base.to_dict(),
                  "max_epochs": max_epochs, "patience": args.patience, "seed": args.seed,
                  "smoke_test_corpus": smoke}
    atomic_json(os.path.join(out, "config.json"), config_doc)
    print(f"{corpus}: {stats['records']} records, {len(fold_list)} folds ({scheme}), "
          f"primary task {primary} ({len(spec.class_names)} classes), models {models}")
    corpus_audio = protocol.CorpusAudio(records, spec)
    minmax_cache = {}

    def minmax(fold):
        if fold.name not in minmax_cache:
            minmax_cache[fold.name] = protocol.fold_minmax(records, fold.train, spec)
        return minmax_cache[fold.name]

    results, configs = [], {}
    for model in models:
        # 4. Hyper-parameters.
        config = base
        if args.search:
            hyper = tuning.DCGANHyperModel(
                model, base, tuning.SEARCH_SPACES[args.preset], fold_list[0], records,
                corpus_audio, spec, os.path.join(out, "search", "trials", model),
                max_epochs=max_epochs, patience=args.patience, seed=args.seed,
                unlabelled=unlabelled, minmax=minmax(fold_list[0]))
            config, hp, best = tuning.random_search(hyper, os.path.join(out, "search"),
                                                    args.max_trials, seed=args.seed)
            print(f"{model}: best of {args.max_trials} trials {hp} (validation UA "
                  f"{100 * best:.1f}%)")
        configs[model] = config.to_dict()
        # 5. Training, fold by fold.
        for k, fold in enumerate(fold_list):
            print(f"[{dcgan.MODEL_TITLES[model]}] fold {k + 1}/{len(fold_list)} {fold.name}: "
                  f"validate on {','.join(fold.validation)}, test on {','.join(fold.test)}",
                  flush=True)
            result = protocol.train_fold(
                model, config, fold, records, corpus_audio, spec,
                os.path.join(out, "runs", model, fold.name), max_epochs=max_epochs,
                patience=args.patience, seed=args.seed, unlabelled=unlabelled,
                verbose=verbose, minmax=minmax(fold))
            print(f"  epochs {result['epochs']} (best {result['best_epoch']}), test UA "
                  f"{100 * result['test']['primary_ua']:.1f}%", flush=True)
            results.append(result)

    # 6. Results.
    wall = time.time() - start
    summary = reporting.summarise(results)
    best = reporting.best_model(summary)
    n_rated = min(corpus_audio.rated.values())
    if primary != "emotion":
        targets = f"{primary} mean ratings as fuzzy labels"
    elif n_rated == len(corpus_audio.ids):
        targets = ("emotion categories; valence/activation heads use the corpus's mean "
                   "ratings as fuzzy labels")
    else:
        targets = ("emotion categories; valence/activation heads use levels derived from "
                   f"the category for {len(corpus_audio.ids) - n_rated} of "
                   f"{len(corpus_audio.ids)} utterances (keras_ser.dimensions: "
                   f"{protocol.dimensions.REFERENCE})")
    header = "\n".join([
        f"# Multitask DCGAN (Chang & Scherer 2017) on {corpus}", "",
        *([f"**{SMOKE_NOTE}**", ""] if smoke else []),
        f"- Protocol: {scheme}, {len(fold_list)} folds; validation speaker per fold, early "
        f"stopping after {args.patience} epochs without a new best validation UA.",
        f"- Primary task: {primary} ({len(spec.class_names)} classes); targets: {targets}.",
        f"- Preset: {args.preset}; search: "
        f"{'random, ' + str(args.max_trials) + ' trials per model' if args.search else 'off'}.",
        f"- Chance UA of the primary task: {100 / len(spec.class_names):.1f}%.",
        f"- Best model (mean primary UA): {dcgan.MODEL_TITLES[best]}.",
        f"- Wall time of this invocation: {wall / 60:.1f} min "
        "(folds finished by an earlier invocation are not re-timed)."])
    reporting.write_results(out, results, header, {"config": config_doc, "configs": configs,
                                                   "best_model": best, "wall_time_s": wall})
    conf_key = "emotion_confusion" if primary == "emotion" else f"{primary}_confusion5"
    if conf_key in summary[best]:
        plots.confusion_matrix_png(np.array(summary[best][conf_key]), spec.class_names,
                                   os.path.join(out, "confusion.png"),
                                   title=f"{dcgan.MODEL_TITLES[best]}, summed over folds")
    if not args.no_export:
        best_fold = max((r for r in results if r["model"] == best),
                        key=lambda r: r["validation"]["primary_ua"])
        fold_dir = os.path.join(out, "runs", best, best_fold["fold"])
        serving = export.build_serving_model(
            protocol.load_classifier(fold_dir), features=spec.features,
            minimum=best_fold["minmax"][0], maximum=best_fold["minmax"][1],
            crop_frames=best_fold["config"]["crop_frames"], class_names=spec.class_names)
        export.export_classifier(
            serving, os.path.join(out, "export"), class_names=spec.class_names,
            features=spec.features, sample_rate=16000, minimum=best_fold["minmax"][0],
            maximum=best_fold["minmax"][1], crop_frames=best_fold["config"]["crop_frames"],
            hop_frames=best_fold["config"]["crop_frames"] // 2,
            extra={"model": best, "fold": best_fold["fold"], "corpus": corpus})
        print(f"exported {dcgan.MODEL_TITLES[best]} ({best_fold['fold']}) -> "
              f"{os.path.join(out, 'export')}")
    with open(os.path.join(out, "results.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"wall time {wall / 60:.1f} min; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
