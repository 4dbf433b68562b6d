"""CNN + BiLSTM with VTLP (Etienne et al., SMM 2018), speaker-independent cross-validation.

    python recipes/crnn_vtlp.py                        # built-in smoke-test corpus
    python recipes/crnn_vtlp.py --corpus emodb --data ../shared/data/emodb --preset cpu \\
        --variants oversampling,vtlp
    python recipes/crnn_vtlp.py --corpus iemocap --data IEMOCAP_full_release --preset paper

Method (the paper's Secs. 3-4, one step per block below):

1. Data. The corpus is converted to TFRecords (`tfrecords_tools`). Log-mel spectrograms
   (64 ms window, 32 ms shift, 128 mel bands up to 4 kHz, or 8 kHz for the ``8khz``
   row) are computed in the graph, zero-padded per batch with each utterance's length
   carried along, and z-scored with the training speakers' mean and standard
   deviation (eq. 2). IEMOCAP: improvised dialogs, four emotions (neutral, happiness,
   anger, sadness).
2. Folds. IEMOCAP: for each session one speaker validates and the other tests, and the
   swap (10 folds). Other corpora: leave one speaker out, the next speaker validates.
3. Model. 4 convolution blocks without pooling, 1 BiLSTM with recurrent batch norm,
   masked mean over time, dense softmax (`keras_ser.models.crnn`);
   ``--conv-layers`` 1-6 and ``--lstm-layers`` 1-4 give the paper's Table 2 grid.
4. Training. Layer-wise SGD with the beta-modified momentum of eq. 6, batch 16, L2
   weight regularisation; the epoch of best validation UA is kept.
5. Ablation (paper Table 1), one row per ``--variants`` entry, each adding one
   technique: ``baseline``; ``oversampling`` (happiness and anger twice);
   ``vtlp_epoch`` (one warp factor per epoch); ``vtlp`` (a factor per example in
   training and validation, test-time majority vote over alpha = 0.90, 0.92, ..., 1.10);
   ``8khz``.
6. Results. ``results.json`` and ``results.md``: the ablation table (WA and UA,
   mean ± std over folds) and the per-fold table (paper Table 2 layout); per fold
   TensorBoard logs with the gradient norm of each layer group (Figure 3), the
   checkpoint and ``model.keras``.

Everything lands under ``--out``; re-running the same command resumes: finished folds
are read back and an interrupted fold continues from its last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from keras_ser import data, folds as kfolds, metrics
from keras_ser.models import crnn
from keras_ser.training import crnn as tcrnn
from keras_ser.training.callbacks import atomic_json
from tfrecords_tools import synthetic, writer as twriter

#: Emotions of the IEMOCAP protocol (improvised dialogs only).
IEMOCAP_CLASSES = ("neutral", "happiness", "anger", "sadness")
#: Epoch budgets per preset (the best validation epoch is kept).
MAX_EPOCHS = {"cpu": 15, "paper": 60}
#: Epoch budget on the smoke-test corpus: it only shows the pipeline runs.
SMOKE_MAX_EPOCHS = 3
#: Default rows: the paper's Table 1.
DEFAULT_VARIANTS = "baseline,oversampling,vtlp,8khz"


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None,
                   help="reader name (emodb, iemocap, ...); default: the built-in smoke-test "
                        "corpus when --data is not given")
    p.add_argument("--data", default=None,
                   help="corpus folder as released, or a record folder from the converter")
    p.add_argument("--classes", default=None,
                   help="comma-separated emotions (default: IEMOCAP's four, else all)")
    p.add_argument("--preset", choices=sorted(crnn.CRNN_PRESETS), default="cpu")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated ablation rows from {','.join(tcrnn.VARIANTS)}")
    p.add_argument("--folds", default=None,
                   help="a number N (the first N folds) or comma-separated test speakers")
    p.add_argument("--conv-layers", type=int, default=None, help="1-6 (default 4)")
    p.add_argument("--lstm-layers", type=int, default=None, help="1-4 (default 1)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help=f"epoch budget (default {MAX_EPOCHS} by preset; {SMOKE_MAX_EPOCHS} "
                        "on the smoke-test corpus)")
    p.add_argument("--patience", type=int, default=8,
                   help="epochs without a new best validation UA before stopping")
    p.add_argument("--batch-size", type=int, default=16, help="paper: 16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/crnn-<corpus>-<preset>)")
    p.add_argument("--verbose", type=int, default=None,
                   help="Keras fit verbosity (default: progress bar on a terminal, else 2)")
    return p.parse_args(argv)


def select_folds(fold_list: list, chosen) -> list:
    """The first N folds (``chosen`` a number) or those testing the named speakers.

    Raises:
        ValueError: An unknown speaker or a count outside 1..len(fold_list).
    """
    if chosen is None:
        return fold_list
    chosen = str(chosen)
    if chosen.isdigit():
        n = int(chosen)
        if not 1 <= n <= len(fold_list):
            raise ValueError(f"--folds {n}: choose 1..{len(fold_list)}")
        return fold_list[:n]
    names = [c.strip() for c in chosen.split(",") if c.strip()]
    known = {f.test[0]: f for f in fold_list}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"--folds: no fold tests {bad}; test speakers are {sorted(known)}")
    return [known[n] for n in names]


def improvised_labels(records: str, classes) -> dict:
    """``{utterance_id: class index}`` of IEMOCAP's improvised dialogs in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    return {r["utterance_id"]: index[r["emotion"]] for r in data.record_metadata(records)
            if "impro" in r["utterance_id"] and r["emotion"] in index}


def _cell(values) -> str:
    return metrics.format_mean_std(values) if values else "–"


def summarise(results: list, variants: list) -> dict:
    """Per variant: WA, UA, macro-F1 per fold with mean and std (population)."""
    out = {}
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        entry = {"folds": [r["fold"] for r in rows]}
        for key in ("wa", "ua", "macro_f1"):
            values = [float(r["test"][key]) for r in rows]
            mean, std = metrics.mean_std(values) if values else (float("nan"),) * 2
            entry[key] = {"folds": values, "mean": mean, "std": std}
        single = [float(r["test_single"]["ua"]) for r in rows if "test_single" in r]
        if single:
            entry["ua_single_copy"] = dict(zip(("mean", "std"), metrics.mean_std(single)),
                                           folds=single)
        entry["epochs"] = [r["epochs"] for r in rows]
        entry["train_seconds"] = sum(r["train_seconds"] for r in rows)
        out[v] = entry
    return out


def markdown(results: list, variants: list, summary: dict) -> str:
    """The ablation table (paper Table 1) and the per-fold table (paper Table 2)."""
    lines = ["## Ablation (test, mean ± std over folds, %)", "",
             "| Variant | WA | UA | macro-F1 | folds |", "|---|---|---|---|---|"]
    for v in variants:
        s = summary[v]
        lines.append(f"| {tcrnn.VARIANT_TITLES[v]} | {_cell(s['wa']['folds'])} | "
                     f"{_cell(s['ua']['folds'])} | {_cell(s['macro_f1']['folds'])} | "
                     f"{len(s['folds'])} |")
    for v in variants:
        if "ua_single_copy" in summary[v]:
            lines += ["", f"{tcrnn.VARIANT_TITLES[v]}: UA of the unwarped test copy alone "
                          f"{_cell(summary[v]['ua_single_copy']['folds'])} (vote over 11 "
                          f"copies: {_cell(summary[v]['ua']['folds'])})."]
    folds = list(dict.fromkeys(r["fold"] for r in results))
    lines += ["", "## Per fold (test WA / UA, %)", "",
              "| Fold | validation | test | " + " | ".join(
                  tcrnn.VARIANT_TITLES[v] for v in variants) + " |",
              "|---|---|---|" + "---|" * len(variants)]
    for fold in folds:
        hits = {r["variant"]: r for r in results if r["fold"] == fold}
        first = next(iter(hits.values()))
        cells = [f"{100 * hits[v]['test']['wa']:.1f} / {100 * hits[v]['test']['ua']:.1f}"
                 if v in hits else "–" for v in variants]
        lines.append(f"| {fold} | {','.join(first['validation_speakers'])} | "
                     f"{','.join(first['test_speakers'])} | " + " | ".join(cells) + " |")
    mean_cells = [f"{100 * summary[v]['wa']['mean']:.1f} / {100 * summary[v]['ua']['mean']:.1f}"
                  for v in variants]
    lines.append("| **mean** | | | " + " | ".join(mean_cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0, or 2 for bad options or data)."""
    args = parse_args(argv)
    start = time.time()
    smoke = args.data is None
    corpus = "smoke" if smoke else args.corpus
    if corpus is None:
        print("error: --data needs --corpus (a reader name)", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in tcrnn.VARIANTS]
    if bad or not variants:
        print(f"error: unknown variant(s) {bad}; choose from {list(tcrnn.VARIANTS)}",
              file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"crnn-{corpus}-{args.preset}")
    os.makedirs(out, exist_ok=True)

    # 1. Data.
    try:
        records = (synthetic.smoke_records(out) if smoke
                   else twriter.records_for(corpus, args.data, out))
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(os.path.join(records, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    available = sorted(k for k, v in stats["emotion"].items() if v > 0)
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    elif corpus == "iemocap":
        classes = list(IEMOCAP_CLASSES)
    else:
        classes = available
    missing = [c for c in classes if c not in available]
    if missing or len(classes) < 2:
        print(f"error: classes {missing or classes} not usable; {records} has {available}",
              file=sys.stderr)
        return 2
    labels = improvised_labels(records, classes) if corpus == "iemocap" else None

    # 2. Folds.
    scheme = "loso-session-swap" if corpus == "iemocap" else "loso-speaker"
    try:
        fold_list = kfolds.folds_from_stats(stats, scheme)
        kfolds.save_folds(os.path.join(out, "folds.json"), fold_list, scheme, corpus=corpus)
        fold_list = select_folds(fold_list, args.folds or ("2" if smoke else None))
        overrides = {"num_classes": len(classes)}
        if args.conv_layers is not None:
            overrides["conv_layers"] = args.conv_layers
        if args.lstm_layers is not None:
            overrides["lstm_layers"] = args.lstm_layers
        model_config = crnn.get_config(args.preset, **overrides)
        max_epochs = args.max_epochs or (SMOKE_MAX_EPOCHS if smoke else MAX_EPOCHS[args.preset])
        base = tcrnn.TrainConfig(max_epochs=max_epochs, patience=args.patience,
                                 batch_size=args.batch_size, seed=args.seed)
        configs = {v: tcrnn.variant_config(v, base, classes) for v in variants}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    atomic_json(os.path.join(out, "config.json"), {
        "argv": sys.argv[1:] if argv is None else list(argv), "corpus": corpus,
        "records": records, "classes": classes, "protocol": scheme,
        "improvised_only": labels is not None, "folds": [f.name for f in fold_list],
        "preset": args.preset, "model_config": model_config.to_dict(),
        "variants": {v: c.to_dict() for v, c in configs.items()},
        "smoke_test_corpus": smoke})
    print(f"{corpus}: {stats['records']} records, classes {classes}, {len(fold_list)} folds "
          f"({scheme}), variants {variants}, preset {args.preset}", flush=True)

    # 3-5. Train and test every (variant, fold).
    results, fold_stats = [], {}
    for v in variants:
        config = configs[v]
        for k, fold in enumerate(fold_list):
            print(f"[{v}] fold {k + 1}/{len(fold_list)} {fold.name}: validate on "
                  f"{','.join(fold.validation)}, test on {','.join(fold.test)}", flush=True)
            key = (fold.name, config.features)
            fold_dir = os.path.join(out, "runs", v, fold.name)
            if key not in fold_stats and not os.path.isfile(
                    os.path.join(fold_dir, "result.json")):
                fold_stats[key] = tcrnn.fold_statistics(records, fold.train, classes,
                                                        config.features, labels)
            result = tcrnn.train_fold(model_config, config, fold, records, classes, fold_dir,
                                      labels=labels, stats=fold_stats.get(key),
                                      verbose=verbose)
            result["variant"] = v
            print(f"  epochs {result['epochs']} (best {result['best_epoch']}), test WA "
                  f"{100 * result['test']['wa']:.1f}%, UA {100 * result['test']['ua']:.1f}%, "
                  f"{result['train_seconds']:.0f} s", flush=True)
            results.append(result)

    # 6. Results.
    wall = time.time() - start
    summary = summarise(results, variants)
    header = "\n".join([
        f"# CNN + BiLSTM with VTLP (Etienne et al. 2018) on {corpus}", "",
        *([f"**{synthetic.BANNER}**", ""] if smoke else []),
        f"- Classes: {', '.join(classes)}"
        + (" (improvised dialogs only)" if labels is not None else ""),
        f"- Protocol: {scheme}, {len(fold_list)} folds; validation speaker picks the epoch",
        f"- Preset: {args.preset} ({len(model_config.conv_filters)} conv blocks, "
        f"{model_config.lstm_layers} BiLSTM layer(s) of {model_config.lstm_units} units), "
        f"batch {base.batch_size}, at most {max_epochs} epochs, patience {args.patience}",
        f"- Wall time of this invocation: {wall / 60:.1f} min (finished folds read back "
        f"are not re-timed; training time summed over folds: "
        f"{sum(s['train_seconds'] for s in summary.values()) / 60:.1f} min)"])
    text = header + "\n\n" + markdown(results, variants, summary) + "\n"
    atomic_json(os.path.join(out, "results.json"), {
        "corpus": corpus, "classes": classes, "protocol": scheme, "preset": args.preset,
        "model_config": model_config.to_dict(), "summary": summary, "folds": results,
        "wall_seconds": round(wall, 1)})
    path = os.path.join(out, "results.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
