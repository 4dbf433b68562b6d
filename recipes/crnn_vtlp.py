"""CNN + BiLSTM with VTLP (Etienne et al. 2018), speaker-independent cross-validation.

    python recipes/crnn_vtlp.py                        # built-in smoke-test corpus
    python recipes/crnn_vtlp.py --corpus emodb --data ../shared/data/emodb --preset cpu \\
        --variants oversampling,vtlp
    python recipes/crnn_vtlp.py --corpus iemocap --data IEMOCAP_full_release --preset paper

Method (the paper's Secs. 2-3; `main` follows it):

1. Data. Log-mel spectrograms (64 ms window, 32 ms shift, up to 4 kHz, or 8 kHz for the
   ``8khz`` row; 128 mel bands, our choice) computed in the graph, zero-padded per batch
   with each utterance's length carried along (the masking of Sec. 3), z-scored with the
   training speakers' mean and deviation (eq. 2; the paper uses the whole dataset's).
   IEMOCAP: improvised dialogs, four emotions (neutral, happiness, anger, sadness).
2. Folds. IEMOCAP: for each session one speaker validates and the other tests, and the
   swap (10 folds, female test first as in Table 2). Other corpora: leave one speaker
   out, the next speaker validates.
3. Model. 4 convolution blocks without pooling, 1 BiLSTM, masked mean over time, dense
   softmax (`keras_ser.models.crnn`); ``--conv-layers`` 1-6 and ``--lstm-layers`` 1-4.
4. Training. SGD with momentum, batch 16, L2 regularisation; the epoch of best
   validation UA is kept (`keras_ser.protocols.crnn`).
5. Ablation, one row per ``--variants`` entry: Table 1 (default) ``baseline``,
   ``oversampling`` (happiness and anger twice), ``vtlp`` (a warp per example in training
   and validation, majority vote over alpha = 0.90, ..., 1.10 at test), ``8khz`` (the best
   model); Table 3 ``recurrent_bn_16/32/64`` (the best model with recurrent batch norm);
   and ``vtlp_epoch`` (one warp per epoch), ``layerwise`` (eq. 6), ``conv_bn`` (batch
   norm in the convolution blocks, ours).
6. Results. ``results.json``/``results.md``: WA, UA and macro-F1 (mean ± std over
   folds) and the per-fold table; TensorBoard logs with each layer group's gradient norm
   (Figure 3); the best row's model exported as a SavedModel (with its 11-copy vote when
   the row uses it).

Everything lands under ``--out``; re-running the same command resumes exactly.
"""

from __future__ import annotations

import os
import sys
import time

import keras_ser  # noqa: F401  before keras: quiets TensorFlow's start-up (keras_ser.quiet)

# isort: split
import keras

from keras_ser import data, experiment
from keras_ser.experiment import Metric, Schedule
from keras_ser.models import crnn
from keras_ser.protocols import crnn as protocol

#: Emotions of the IEMOCAP protocol (improvised dialogs only; Sec. 1.1).
IEMOCAP_CLASSES = ("neutral", "happiness", "anger", "sadness")
COLUMNS = [Metric("wa", "WA"), Metric("ua", "UA"), Metric("macro_f1", "macro-F1"),
           Metric("single_ua", "UA, unwarped test copy alone")]


#: Schedules per preset (none of these values is in the paper, but batch 16); ``smoke``
#: only shows the pipeline runs.
SCHEDULES = {"paper": Schedule(max_epochs=60, patience=8, batch_size=16),
             "cpu": Schedule(max_epochs=15, patience=8, batch_size=16),
             "smoke": Schedule(max_epochs=3, patience=8, batch_size=16)}


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = experiment.parser(__doc__, crnn.CRNN_PRESETS,
                          ("variants", tuple(protocol.VARIANTS), ",".join(protocol.TABLE_1)),
                          speaker_norm=True)
    p.add_argument("--conv-layers", type=int, default=None, help="1-6 (default 4)")
    p.add_argument("--lstm-layers", type=int, default=None, help="1-4 (default 1)")
    Schedule.add_options(p, ("max_epochs", "patience", "batch_size"))
    return p.parse_args(argv)


def improvised_labels(records: str, classes) -> dict:
    """``{utterance_id: class index}`` of IEMOCAP's improvised dialogs in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    return {r["utterance_id"]: index[r["emotion"]] for r in data.record_metadata(records)
            if "impro" in r["utterance_id"] and r["emotion"] in index}


def configure(args, corpus, classes, variants) -> tuple:
    """``(model config, {variant: (TrainConfig, CRNNConfig)}, Schedule)`` of the run.

    Raises:
        experiment.BadInput: Sizes out of range.
    """
    settings = SCHEDULES["smoke" if corpus.smoke else args.preset].override(args)
    overrides = {k: v for k, v in (("conv_layers", args.conv_layers),
                                   ("lstm_layers", args.lstm_layers)) if v is not None}
    try:
        model = crnn.get_config(args.preset, num_classes=len(classes), **overrides)
        train = protocol.TrainConfig(max_epochs=settings.max_epochs, patience=settings.patience,
                                     batch_size=settings.batch_size, seed=args.seed,
                                     speaker_norm=args.speaker_norm)
        rows = {v: protocol.variant_config(v, train, model, classes) for v in variants}
    except ValueError as err:
        raise experiment.BadInput(str(err)) from None
    return model, rows, settings


def export_best(out, summary, results, rows, classes, corpus):
    """Export the row with the best mean UA, from its best validation fold."""
    best = max(experiment.network_rows(summary), key=lambda r: summary[r]["ua"]["mean"])
    fold = max((r for r in results if r["row"] == best), key=lambda r: r["validation"]["ua"])
    config = rows[best][0]
    model = keras.models.load_model(os.path.join(out, "runs", best, fold["fold"], "model.keras"))
    front = protocol.front_end(config, fold["normalisation"], vote=config.vtlp == "example",
                               speaker_inputs=config.speaker_norm)
    experiment.export(out, "crnn", model, front, classes, {
        "recipe": "crnn_vtlp", "variant": best, "fold": fold["fold"], "corpus": corpus.name,
        "normalisation": "speaker" if config.speaker_norm else "global",
        **({"speaker_statistics": fold["speaker_statistics"]} if config.speaker_norm else {})})


@experiment.recipe_main
def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0; 2 for bad options or data)."""
    args, started = parse_args(argv), time.time()
    variants = experiment.rows_of(args.variants, tuple(protocol.VARIANTS), "variants")
    out = experiment.out_dir(args, "crnn")
    # 1. Data.
    corpus = experiment.load_corpus(args, out)
    iemocap = corpus.name == "iemocap"
    classes = experiment.choose_classes(corpus, args.classes,
                                        IEMOCAP_CLASSES if iemocap else None)
    labels = improvised_labels(corpus.records, classes) if iemocap else None
    utterances = data.Utterances(corpus.records, classes=classes, labels=labels)
    # 2. Folds (Table 2 tests the female speaker of a session first).
    scheme = "loso-session-swap" if iemocap else "loso-speaker"
    folds = experiment.choose_folds(corpus, scheme, args.folds or ("2" if corpus.smoke else None),
                                    out, **({"validation_gender": "male"} if iemocap else {}))
    # 3-4. Model and training settings of each ablation row.
    model, rows, settings = configure(args, corpus, classes, variants)
    experiment.write_config(out, args, argv, corpus, classes=classes, protocol=scheme,
                            improvised_only=iemocap, folds=[f.name for f in folds],
                            model_config=model, settings=settings,
                            variants={v: {"train": t.to_dict(), "model": m.to_dict()}
                                      for v, (t, m) in rows.items()})
    statistics = {}

    def fold_run(row, fold, path, seed):
        train, net = rows[row]
        key = (fold.name, train.features)
        if key not in statistics:
            statistics[key] = protocol.fold_statistics(corpus.records, fold.train, classes,
                                                       train.features, labels)
        return protocol.train_fold(net, train.replace(seed=seed), fold, corpus.records,
                                   classes, path, utterances=utterances, labels=labels,
                                   stats=statistics[key], row=row,
                                   verbose=experiment.verbosity(args))

    # 5. The ablation, row by row.
    results = experiment.run_folds(out, variants, folds, args.seed, fold_run,
                                   repeats=args.seeds)
    reference = experiment.baseline_rows(args, corpus, folds, out, utterances,
                                         class_names=classes, speaker_norm=args.speaker_norm)
    # 6. Results; each ablation row against the first (the paper's gains: Table 1).
    gains = experiment.paired_tests(results, variants, variants[0], "ua")
    summary = experiment.write_results(
        out, title=f"CNN + BiLSTM with VTLP (Etienne et al. 2018) on {corpus.name}", header=[
            f"Classes: {', '.join(classes)}" + (" (improvised dialogs only)" if iemocap else ""),
            f"Protocol: {scheme}, {len(folds)} folds; the validation speaker picks the epoch.",
            f"Preset {args.preset}: {len(model.conv_filters)} conv blocks, {model.lstm_layers} "
            f"BiLSTM layer(s) of {model.lstm_units} units; at most {settings.max_epochs} epochs,"
            f" patience {settings.patience}; SGD with momentum (eq. 6 only in `layerwise`).",
            f"Chance UA {100 / len(classes):.1f}%."],
        entries=results, rows=variants, row_titles=protocol.VARIANT_TITLES, columns=COLUMNS,
        main=Metric("ua", "Test UA"), folds=results, smoke=corpus.smoke, started=started,
        row_header="Variant", baseline=reference,
        document={"classes": classes, "protocol": scheme, "paired_tests_vs_first": gains},
        sections=[experiment.paired_tests_markdown(
            gains, protocol.VARIANT_TITLES.get(variants[0], variants[0]), Metric("ua", "Test UA"),
            protocol.VARIANT_TITLES)] if gains and len(folds) > 1 else [])
    if not args.no_export:
        export_best(out, summary, results, rows, classes, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
