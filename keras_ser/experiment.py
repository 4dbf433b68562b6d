"""What every recipe shares: options, corpus loading, folds, the fold runner, results, export.

A recipe (``recipes/*.py``) reads like its paper's method section because the plumbing
lives here:

- `parser`: the common options (``--corpus --data --unlabelled --classes --preset
  --folds --models/--variants --seed --seeds --baseline --out --verbose --no-export``);
- `load_corpus`: the labelled corpus (converted on the fly, or the built-in smoke-test
  corpus when ``--data`` is absent) and unlabelled speech; bad input raises `BadInput`,
  which `recipe_main` turns into a one-line error and exit status 2;
- `choose_folds`: the protocol's folds saved to ``folds.json``, then `keras_ser.folds.select`
  (one meaning of ``--folds`` everywhere: a count or held-out names);
- `write_config`: ``config.json`` with the options and every hyper-parameter;
- `run_folds`: each (repeat, row, fold) in its own folder; a folder with ``result.json``
  is read back, the others (re)start and resume from their checkpoints. Keras' global
  seed is set from ``(seed, repeat, row, fold)`` before each, so a fold's initial
  weights do not depend on which folds ran before it in the same process;
- `baseline_rows`: the eGeMAPS + linear SVM reference rows (`keras_ser.baselines`) on
  the recipe's folds and utterances, as a `Reference` for `write_results`;
- `write_results`: ``results.json`` (deterministic: no wall-clock times, which go to
  ``timing.json``) and ``results.md`` with the paper's table (mean ± std over folds, and
  over seeds with ``--seeds``), the reference rows with a p-value column against them,
  and a per-fold table, parameterised by the metrics the paper reports;
- `paired_tests`: each row against a reference row over folds (Wilcoxon signed-rank),
  with `paired_tests_markdown` for the results page;
- `export`: the chosen classifier as a waveform-in SavedModel in TensorFlow Serving's
  ``export/<name>/<version>/`` layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

from keras_ser import folds as kfolds
from keras_ser import io, metrics, seeds
from keras_ser.training.resumable import is_scalar


class BadInput(Exception):
    """Bad options or data: the recipe prints the message and exits with status 2."""


def recipe_main(main: Callable) -> Callable:
    """Decorate a recipe's ``main(argv)``: `BadInput` -> status 2, a diverged training
    stage -> status 3, each with a one-line ``error:`` message on stderr."""
    from keras_ser.training.resumable import DivergenceError

    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except BadInput as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except DivergenceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
    return wrapped


def parser(doc: str, presets: Sequence[str], rows: tuple | None = None,
           default_preset: str = "cpu", speaker_norm: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every recipe has.

    Args:
        doc: The recipe's module docstring (its first paragraph is the description).
        presets: Names accepted by ``--preset``.
        rows: ``(option, choices, default)`` of the table rows, e.g. ``("models",
            MODELS, "basic_cnn,...")``; the option takes a comma-separated subset.
        default_preset: ``--preset`` default.
        speaker_norm: The recipe offers ``--speaker-norm`` (per-speaker z-scored input,
            the speakers' statistics in the export: `keras_ser.serving.builders.FrontEnd.
            speaker_norm`).
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None,
                   help="reader name (emodb, iemocap, ravdess, ...); default: the built-in "
                        "smoke-test corpus when --data is not given")
    p.add_argument("--data", default=None,
                   help="corpus folder as released, or a record folder from the converter")
    p.add_argument("--unlabelled", nargs="*", default=[],
                   help="unlabelled speech: audio folders (read with the 'speech' reader) "
                        "or record folders")
    p.add_argument("--classes", default=None, help="comma-separated emotion classes")
    p.add_argument("--preset", choices=sorted(presets), default=default_preset)
    p.add_argument("--folds", default=None,
                   help="a number N (the first N folds) or comma-separated held-out "
                        "speakers, sessions or fold names")
    if rows is not None:
        name, choices, default = rows
        p.add_argument(f"--{name}", default=default,
                       help=f"comma-separated subset of {','.join(choices)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", "--repeats", dest="seeds", type=int, default=1,
                   help="train every model N times per fold, with seeds derived from --seed "
                        "(results: mean ± std over folds and over seeds)")
    p.add_argument("--baseline", choices=("auto", "egemaps", "none"), default="auto",
                   help="reference rows on the same folds: eGeMAPS functionals + linear SVM, "
                        "global and per-speaker z-score (auto: on for a real corpus, off for "
                        "the built-in smoke-test corpus)")
    if speaker_norm:
        p.add_argument("--speaker-norm", action="store_true",
                       help="z-score each utterance with its own speaker's feature statistics "
                            "(transductive, no labels; the export takes a speaker's "
                            "statistics or falls back to the training speakers')")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>-<corpus>-"
                                               "<preset>)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--verbose", type=int, default=None,
                   help="Keras fit verbosity (default: progress bar on a terminal, else 2)")
    from keras_ser import distribute

    distribute.add_options(p)
    return p


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a recipe trains: the values the papers leave open, one per preset.

    Attributes:
        max_epochs: Epoch budget (early stopping usually ends sooner).
        patience: Epochs without a new best validation score before stopping.
        batch_size: Batch size, when the recipe's model config does not hold it.
        max_trials: Random-search trials per model (``--search``).
    """

    max_epochs: int
    patience: int
    batch_size: int | None = None
    max_trials: int | None = None

    @staticmethod
    def add_options(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
        """Options overriding the named fields of the preset's schedule
        (``--max-epochs``, ``--patience``, ``--batch-size``, ``--max-trials``)."""
        for name in names:
            p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                           help=f"override the preset's {name}")

    def override(self, args) -> Schedule:
        """This schedule with the options given on the command line."""
        changes = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


def rows_of(text: str, choices: Sequence[str], option: str) -> list:
    """The comma-separated rows of ``--<option>``, checked.

    Raises:
        BadInput: An unknown or no row.
    """
    chosen = [r.strip() for r in str(text).split(",") if r.strip()]
    bad = [r for r in chosen if r not in choices]
    if bad or not chosen:
        raise BadInput(f"unknown --{option} {bad or chosen}; choose from {list(choices)}")
    return chosen


def verbosity(args) -> int:
    """``--verbose``, or a progress bar on a terminal and one line per epoch otherwise."""
    return args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)


@dataclasses.dataclass
class Corpus:
    """The data of a run.

    Attributes:
        name: Reader name (``"smoke"`` for the built-in corpus).
        records: Record folder of the labelled corpus.
        stats: Its ``stats.json``.
        unlabelled: Record folders of unlabelled speech.
        smoke: True for the built-in smoke-test corpus.
    """

    name: str
    records: str
    stats: dict
    unlabelled: list
    smoke: bool

    @property
    def present(self) -> list:
        """Emotion classes with at least one record, sorted."""
        return sorted(k for k, v in self.stats.get("emotion", {}).items() if v > 0)

    def present_labels(self, label: str = "emotion") -> list:
        """Classes of ``label`` (`keras_ser.data.Utterances.LABELS`) with a record, sorted:
        `present`, or the gender x emotion classes of the speakers' counts."""
        if label == "emotion":
            return self.present
        from tfrecords_tools.master import gender_emotion

        return sorted({gender_emotion(s["gender"], e)
                       for s in self.stats.get("speakers", {}).values()
                       for e, n in s["emotion"].items() if n} - {""})


def load_corpus(args, out: str, options: dict | None = None) -> Corpus:
    """Convert (or reuse) the corpus of ``--data`` and the ``--unlabelled`` folders.

    Without ``--data`` the built-in smoke-test corpus is written under ``out`` and its
    banner printed.

    Args:
        args: Parsed options (``corpus``, ``data``, ``unlabelled``).
        out: Run folder.
        options: Reader options the recipe needs for ``--corpus`` (e.g. IEMOCAP's
            ``merge_excited``).

    Raises:
        BadInput: ``--data`` without ``--corpus``, an unknown reader, a missing or
            unreadable corpus (the message names the file and the problem).
    """
    from tfrecords_tools import smoke
    from tfrecords_tools import writer as twriter

    if args.data is not None and args.corpus is None:
        raise BadInput("--data needs --corpus (a reader name)")
    try:
        if args.data is None:
            records = smoke.smoke_records(out)
        else:
            records = twriter.records_for(args.corpus, args.data, out, options=options)
        unlabelled = [twriter.records_for("speech", d, os.path.join(
            out, "unlabelled", os.path.basename(os.path.normpath(d)))) for d in args.unlabelled]
        stats = io.read_json(os.path.join(records, "stats.json"))
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise BadInput(str(err).strip("'\"")) from None
    return Corpus(args.corpus or "smoke", records, stats, unlabelled, args.data is None)


def choose_classes(corpus: Corpus, requested: str | None, default: Sequence[str] | None = None,
                   minimum: int = 2, label: str = "emotion") -> list:
    """The classes of a run: ``--classes``, else ``default``, else all present.

    Args:
        label: What the classes name (`Corpus.present_labels`): ``"emotion"`` or
            ``"gender_emotion"``.

    Raises:
        BadInput: A class the corpus does not have, or fewer than ``minimum``.
    """
    present = corpus.present_labels(label)
    if requested:
        classes = [c.strip() for c in requested.split(",") if c.strip()]
    else:
        classes = list(default) if default else present
    missing = [c for c in classes if c not in present]
    if missing or len(classes) < minimum:
        raise BadInput(f"--classes: {missing or classes} not usable; {corpus.records} has "
                       f"{present}")
    return classes


def choose_folds(corpus: Corpus, protocol: str, chosen, out: str, **options) -> list:
    """The protocol's folds from ``stats.json``, saved to ``out/folds.json``, then the
    ``--folds`` selection (`keras_ser.folds.select`).

    Raises:
        BadInput: The corpus does not fit the protocol, or ``--folds`` names no fold.
    """
    try:
        every = kfolds.folds_from_stats(corpus.stats, protocol, **options)
        kfolds.save_folds(os.path.join(out, "folds.json"), every, protocol, corpus=corpus.name)
        return kfolds.select(every, chosen)
    except ValueError as err:
        raise BadInput(str(err)) from None


def out_dir(args, recipe: str) -> str:
    """``--out``, or ``runs/<recipe>-<corpus>-<preset>`` (created), after making the
    run's ``--strategy`` current (`keras_ser.distribute.configure`: every model built
    afterwards is distributed).

    On a multi-worker cluster the chief writes the run folder; every other worker
    writes its copy of the same results to ``<out>/.workers/<task>`` and restores
    checkpoints from the chief's (`keras_ser.distribute.worker_folder`).

    Raises:
        BadInput: A strategy that cannot be made (``multiworker`` without
            ``TF_CONFIG``, more devices than present, ...).
    """
    from keras_ser import distribute

    try:
        distribute.configure(args)
    except (ValueError, RuntimeError) as err:
        raise BadInput(str(err)) from None
    out = args.out or os.path.join("runs", f"{recipe}-{args.corpus or 'smoke'}-{args.preset}")
    os.makedirs(out, exist_ok=True)
    return distribute.worker_folder(out)


def write_config(out: str, args, argv, corpus: Corpus, **config) -> dict:
    """Write ``config.json``: the command line, the data and every hyper-parameter.

    Values with ``to_dict`` (the preset dataclasses) are written as dicts.
    """
    document = {"argv": list(sys.argv[1:] if argv is None else argv), "corpus": corpus.name,
                "records": corpus.records, "unlabelled": corpus.unlabelled,
                "smoke_test_corpus": corpus.smoke, "seed": args.seed, "preset": args.preset,
                **{k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in config.items()}}
    io.write_json(os.path.join(out, "config.json"), document)
    return document


@dataclasses.dataclass
class Reference:
    """The baseline rows of a run, for `write_results`.

    Attributes:
        rows: `keras_ser.baselines.ROWS` (empty when the baseline is off).
        results: Their fold results.
        reference: The row the networks are tested against: the one normalised as the
            networks' input is (global, or per-speaker with ``--speaker-norm``).
    """

    rows: list
    results: list
    reference: str | None


def baseline_rows(args, corpus: Corpus, folds: Sequence, out: str, utterances=None, *,
                  class_names: Sequence[str] | None = None, split: Callable | None = None,
                  aliases: dict | None = None, speaker_norm: bool = False) -> Reference:
    """The eGeMAPS + linear SVM reference rows (`keras_ser.baselines`) on the recipe's folds.

    Run when ``--baseline egemaps``, or ``auto`` on a real corpus (not the smoke-test
    one, built in or passed as ``--corpus smoke --data``).

    Args:
        args: Parsed options (``baseline``, ``seed``, ``seeds``).
        corpus: The run's corpus (features cached in ``<records>/cache``).
        folds: The recipe's folds.
        out: Run folder.
        utterances: `keras_ser.data.Utterances` with the recipe's labels (default: the
            corpus's emotions of ``class_names``).
        class_names: The recipe's classes.
        split: ``split(fold) -> (train, validation, test)`` utterance indices, for a
            protocol whose folds are not speaker lists (default: the fold's speakers).
        aliases: Recipe metric keys filled from the baseline's reports
            (`keras_ser.baselines.run`).

        speaker_norm: The networks' input is z-scored per speaker (then the
            per-speaker row is the reference).

    Returns:
        The `Reference` (no rows when the baseline is off).

    Raises:
        BadInput: ``opensmile`` is not installed.
    """
    from keras_ser import baselines
    from keras_ser import data as kdata

    if args.baseline == "none" or (args.baseline == "auto" and (
            corpus.smoke or corpus.name == "smoke")):
        return Reference([], [], None)
    try:
        import opensmile  # noqa: F401
    except ImportError:
        raise BadInput("--baseline egemaps needs the opensmile package (pip install "
                       "opensmile), or pass --baseline none") from None
    if utterances is None:
        utterances = kdata.Utterances(corpus.records, classes=class_names)
    print(f"baseline: eGeMAPSv02 functionals + linear SVM on {len(utterances)} utterances")
    results = baselines.run(out, utterances, folds, class_names, split=split,
                            aliases=aliases, seed=args.seed,
                            cache=baselines.cache_path(corpus.records))
    return Reference(list(baselines.ROWS), results,
                     "egemaps_speaker" if speaker_norm else "egemaps_global")


def network_rows(summary: dict) -> list:
    """The rows of a summary that are trained models (not the baseline's)."""
    from keras_ser import baselines

    return [r for r in summary if r not in baselines.ROWS]


def fold_folder(out: str, row: str | None, fold: str, repeat: int = 0) -> str:
    """``out/runs/[<row>/]<fold>``; repeats after the first add ``-run<k>`` (k from 2)."""
    path = os.path.join(out, "runs", *([row] if row else []), fold)
    return path + (f"-run{repeat + 1}" if repeat else "")


def run_folds(out: str, rows: Sequence[str], folds: Sequence, seed: int,
              fn: Callable, folder: Callable | None = None, repeats: int = 1,
              seed_key: Callable[[str], str] | None = None) -> list:
    """Run ``fn`` for every (repeat, row, fold), resuming: finished folds are read back.

    Args:
        out: Run folder.
        rows: Table rows (models, variants); ``[None]`` for a recipe whose fold
            function produces every row at once.
        folds: `keras_ser.folds.Fold` objects.
        seed: The run seed; repeat r > 0 runs with ``seeds.derive(seed, "repeat", r)``
            (so repeat 0 is the run without repeats, and more repeats extend it).
        fn: ``fn(row, fold, folder, seed) -> dict`` where ``seed`` is derived from
            ``(seed of the repeat, row, fold)``; Keras' global seed is set to it first.
        folder: ``folder(row, fold) -> path``; default `fold_folder` (a repeat r > 0
            appends ``-run<r+1>`` to either).
        repeats: Runs of every (row, fold) (paper protocols: e.g. Tu et al.'s 5).
        seed_key: ``seed_key(row) -> str`` put in place of the row when deriving the
            seed, so rows mapped to one key share each fold's seed (paired rows that
            should differ only in their data); None (default) derives from the row.

    Returns:
        The fold results, repeats outer, then rows, then folds; each with ``repeat``.
        Each is also written to ``<folder>/result.json`` with ``seconds``, its wall
        time.
    """
    import keras

    results = []
    for r in range(repeats):
        run_seed = seeds.derive(seed, "repeat", r) if r else seed
        for row in rows:
            for k, fold in enumerate(folds):
                name = fold.name
                path = (folder(row, fold) + (f"-run{r + 1}" if r else "") if folder
                        else fold_folder(out, row, name, r))
                done = os.path.join(path, "result.json")
                label = (f"[{row}] " if row else "") + (f"run {r + 1}/{repeats} " if r else "")
                if os.path.isfile(done):
                    print(f"{label}fold {k + 1}/{len(folds)} {name}: finished earlier")
                    results.append({**io.read_json(done), "repeat": r})
                    continue
                print(f"{label}fold {k + 1}/{len(folds)} {name}" + (
                    f": validate on {','.join(fold.validation)}, test on "
                    f"{','.join(fold.test)}" if fold.validation else ""), flush=True)
                fold_seed = seeds.derive(run_seed, seed_key(row) if seed_key else row or "",
                                         name)
                keras.utils.set_random_seed(fold_seed)
                start = time.time()
                result = fn(row, fold, path, fold_seed)
                result["seconds"] = round(time.time() - start, 1)
                result["repeat"] = r
                io.write_json(done, result)
                results.append(result)
    return results


@dataclasses.dataclass(frozen=True)
class Metric:
    """A column of a results table: ``key`` in each fold's test scores, its ``title``,
    and whether it is a fraction printed as a percentage."""

    key: str
    title: str
    percent: bool = True


def _cell(entry: dict, metric: Metric) -> str:
    if metric.key not in entry or math.isnan(entry[metric.key]["mean"]):
        return "–"
    scale = 100.0 if metric.percent else 1.0
    digits = 1 if metric.percent else 3
    m, s = entry[metric.key]["mean"] * scale, entry[metric.key]["std"] * scale
    seeds = entry[metric.key].get("std_seeds")
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (
        f" (seeds ± {seeds * scale:.{digits}f})" if seeds is not None else "")


def _group_means(entries: Sequence[dict], key: str, by: str) -> list:
    """Mean of ``entry["test"][key]`` per value of ``entry[by]`` (fold or repeat)."""
    groups = {}
    for e in entries:
        groups.setdefault(e.get(by, 0), []).append(float(e["test"][key]))
    return [sum(v) / len(v) for v in groups.values()]


def summarise(entries: Sequence[dict], rows: Sequence[str], keys: Sequence[str]) -> dict:
    """Per row, every metric of ``keys`` over folds and seeds.

    One run per fold: ``{"folds": values, "mean", "std"}`` (population std over the folds
    with a finite value). Several runs (``repeat``) per fold: ``mean`` over every run,
    ``std`` over the folds of each fold's mean over its runs, ``std_seeds`` over the
    runs of each run's mean over the folds (``--seeds``).

    Args:
        entries: ``{"row", "fold", "test": {key: value}}`` dicts, with ``repeat``.
    """
    summary = {}
    for row in rows:
        mine = [e for e in entries if e["row"] == row]
        if not mine:
            continue
        entry = {"folds": [e["fold"] for e in mine]}
        for key in keys:
            kept = [e for e in mine if is_scalar(e["test"].get(key))
                    and math.isfinite(float(e["test"][key]))]
            values = [float(e["test"][key]) for e in mine if is_scalar(e["test"].get(key))]
            if not kept:
                continue
            mean, std = metrics.mean_std([float(e["test"][key]) for e in kept])
            entry[key] = {"folds": values, "mean": mean, "std": std}
            runs = sorted({e.get("repeat", 0) for e in kept})
            if len(runs) > 1:
                entry[key]["std"] = metrics.mean_std(_group_means(kept, key, "fold"))[1]
                entry[key]["std_seeds"] = metrics.mean_std(
                    _group_means(kept, key, "repeat"))[1]
        summary[row] = entry
    return summary


def paired_tests(entries: Sequence[dict], rows: Sequence[str], reference: str,
                 key: str) -> dict:
    """Each row against ``reference`` over folds: Wilcoxon signed-rank test (scipy).

    A fold's value is the mean of ``entry["test"][key]`` over its repeats (entries with
    the same ``row`` and ``fold``); only folds both rows have are paired.

    Returns:
        ``{row: {"folds", "mean_difference", "std_difference", "wins", "losses",
        "p_value"}}`` for every row but the reference (``p_value`` is 1.0 when every
        difference is zero, NaN with fewer than two paired folds).
    """
    from scipy import stats as sstats

    def per_fold(row):
        values = {}
        for e in entries:
            if e["row"] == row and is_scalar(e["test"].get(key)):
                values.setdefault(e["fold"], []).append(float(e["test"][key]))
        return {f: sum(v) / len(v) for f, v in values.items()}

    base = per_fold(reference)
    tests = {}
    for row in rows:
        if row == reference:
            continue
        mine = per_fold(row)
        common = [f for f in base if f in mine]
        diff = [mine[f] - base[f] for f in common]
        if len(diff) < 2:
            p = float("nan")
        elif all(d == 0 for d in diff):
            p = 1.0
        else:
            p = float(sstats.wilcoxon(diff).pvalue)
        mean, std = metrics.mean_std(diff) if diff else (float("nan"), float("nan"))
        tests[row] = {"folds": len(common), "mean_difference": mean, "std_difference": std,
                      "wins": sum(d > 0 for d in diff), "losses": sum(d < 0 for d in diff),
                      "p_value": p}
    return tests


def paired_tests_markdown(tests: dict, reference_title: str, metric: Metric,
                          row_titles: dict) -> str:
    """A Markdown section of `paired_tests`: difference, wins/losses, p-value."""
    scale = 100.0 if metric.percent else 1.0
    lines = [f"## {metric.title}: each row against {reference_title} (paired over folds)",
             "Difference = row − reference, mean ± std over folds"
             + (" (percentage points)" if metric.percent else "")
             + "; two-sided Wilcoxon signed-rank test (scipy).", "",
             "| Row | folds | difference | wins / losses | p |", "|---|---|---|---|---|"]
    for row, t in tests.items():
        lines.append(f"| {row_titles.get(row, row)} | {t['folds']} | "
                     f"{scale * t['mean_difference']:+.1f} ± {scale * t['std_difference']:.1f}"
                     f" | {t['wins']} / {t['losses']} | {t['p_value']:.3f} |")
    return "\n".join(lines)


def write_results(out: str, *, title: str, header: Sequence[str], entries: Sequence[dict],
                  rows: Sequence[str], row_titles: dict, columns: Sequence[Metric],
                  main: Metric, folds: Sequence[dict], smoke: bool, started: float,
                  sections: Sequence[str] = (), document: dict | None = None,
                  row_header: str = "Model", baseline: Reference | None = None) -> dict:
    """Write ``results.json``, ``results.md``, ``timing.json`` and ``report.html``
    (`keras_ser.report`: a report failure only prints a warning); print the Markdown.

    Args:
        out: Run folder.
        title: Markdown title.
        header: Lines (bullets) under the title: protocol, targets, budgets.
        entries: ``{"row", "fold", "test"}`` per row and fold.
        rows: Row order; ``row_titles`` names them.
        columns: The paper's metrics (table columns).
        main: The metric of the per-fold table.
        folds: The full fold results (stored in ``results.json`` without ``seconds``).
        smoke: Put the smoke-test banner at the top.
        started: ``time.time()`` at the start of this invocation.
        sections: Further Markdown sections (e.g. Fréchet distances).
        document: Further ``results.json`` entries (hyper-parameters, classes).
        row_header: Title of the row column.
        baseline: The reference rows (`baseline_rows`), put first; every other row is
            tested against its ``reference`` row on ``main`` over folds (`paired_tests`,
            Wilcoxon): a ``p`` column in the table and ``paired_tests_vs_reference`` in
            ``results.json``.

    Returns:
        The summary (`summarise`).
    """
    from keras_ser import baselines
    from tfrecords_tools import smoke as smoke_corpus

    reference = None
    if baseline is not None and baseline.rows:
        entries, folds = [*baseline.results, *entries], [*baseline.results, *folds]
        rows, reference = [*baseline.rows, *rows], baseline.reference
        row_titles = {**baselines.TITLES, **row_titles}
    summary = summarise(entries, rows, [c.key for c in columns] + [main.key])
    used = [c for c in columns if any(c.key in e for e in summary.values())]
    if reference is not None and reference not in summary:
        reference = None
    tests = (paired_tests(entries, list(summary), reference, main.key)
             if reference is not None else {})
    p_title = ["p vs reference"] if tests else []
    table = [f"| {row_header} | folds | " + " | ".join([c.title for c in used] + p_title)
             + " |", "|---|---|" + "---|" * (len(used) + len(p_title))]
    for row, entry in summary.items():
        distinct = len(set(entry["folds"]))
        count = (f"{distinct} × {len(entry['folds']) // distinct} runs"
                 if len(entry["folds"]) > distinct else str(distinct))
        p = ([] if not tests else ["–"] if row not in tests or math.isnan(
            tests[row]["p_value"]) else [f"{tests[row]['p_value']:.3f}"])
        table.append(f"| {row_titles.get(row, row)} | {count} | "
                     + " | ".join([_cell(entry, c) for c in used] + p) + " |")
    present = [r for r in rows if r in summary]
    names = list(dict.fromkeys(e["fold"] for e in entries))
    per_fold = ["| Fold | " + " | ".join(row_titles.get(r, r) for r in present) + " |",
                "|---|" + "---|" * len(present)]
    scale = 100.0 if main.percent else 1.0
    for name in names:
        cells = []
        for r in present:
            hit = [e["test"][main.key] for e in entries if e["row"] == r and
                   e["fold"] == name and is_scalar(e["test"].get(main.key))]
            cells.append(f"{scale * sum(hit) / len(hit):.1f}" if hit else "–")
        per_fold.append(f"| {name} | " + " | ".join(cells) + " |")
    wall = time.time() - started
    text = "\n\n".join([
        f"# {title}", *([f"**{smoke_corpus.BANNER}**"] if smoke else []),
        "\n".join(f"- {line}" for line in header) + f"\n- Wall time of this invocation: "
        f"{wall / 60:.1f} min (folds finished by an earlier invocation are not re-timed).",
        "## Test results (mean ± std over folds" + (
            "; seeds ± std over seeds of the mean over folds)" if any(
                e.get("repeat") for e in entries) else ")"),
        "\n".join(table) + (
            f"\n\np vs reference: two-sided Wilcoxon signed-rank test (scipy) of the row's"
            f" per-fold {main.title} (mean over seeds) against that of "
            f"{row_titles.get(reference, reference)}, same folds."
            if tests else ""),
        f"## {main.title} per fold" + (" (%)" if main.percent else "")
        + (" (mean over runs)" if any(e.get("repeat") for e in entries) else ""),
        "\n".join(per_fold),
        *sections]) + "\n"
    clean = [{k: v for k, v in f.items() if k != "seconds"} for f in folds]
    io.write_json(os.path.join(out, "results.json"), {
        "title": title, "rows": present, "metrics": [c.key for c in used], **(document or {}),
        **({"reference": reference, "paired_tests_vs_reference": tests} if tests else {}),
        "summary": summary, "folds": clean})
    io.write_json(os.path.join(out, "timing.json"), {
        "wall_seconds": round(wall, 1),
        "folds": {f"{f.get('row') or ''}/{f['fold']}".lstrip("/")
                  + (f"-run{f['repeat'] + 1}" if f.get("repeat") else ""): f.get("seconds")
                  for f in folds}})
    io.write_text(os.path.join(out, "results.md"), text)
    print("\n" + text)
    try:  # report.html (keras_ser.report): a report that fails never fails the run
        from keras_ser import report

        report.build_report(out)
    except Exception as err:  # noqa: BLE001
        print(f"warning: report.html not written: {type(err).__name__}: {err}",
              file=sys.stderr)
    return summary


def export_best(out: str, name: str, summary: dict, results: Sequence[dict], front,
                class_names, extra: dict, key: str = "wa", row_key: str = "row") -> str:
    """Export the row with the best mean test ``key``, from its run with the best
    validation accuracy (``result["validation"]["wa"]``, or the test set's for a protocol
    without validation speakers), loaded from that run's ``model.keras``.

    Args:
        out, name, class_names: As for `export`.
        summary: `write_results`' summary.
        results: The fold results of `run_folds`.
        front: ``front(result) -> FrontEnd`` of the chosen run.
        extra: JSON facts; the row (under ``row_key``) and ``fold`` are added, and a
            run's ``speaker_statistics`` (per-speaker normalisation: each fold speaker's,
            for ``keras-ser predict --speaker``).
        key: Summary metric ranking the rows.
        row_key: Name of the row in ``extra`` (e.g. ``"variant"``).

    Returns:
        The version folder.
    """
    import keras

    best = max(network_rows(summary), key=lambda r: summary[r][key]["mean"])
    run = max((r for r in results if r["row"] == best),
              key=lambda r: (r.get("validation") or r["test"])["wa"])
    model = keras.models.load_model(os.path.join(
        fold_folder(out, best, run["fold"], run["repeat"]), "model.keras"))
    own = run.get("speaker_statistics")
    return export(out, name, model, front(run), class_names,
                  {**extra, row_key: best, "fold": run["fold"],
                   **({"normalisation": "speaker", "speaker_statistics": own} if own else {})})


def export(out: str, name: str, classifier, front, class_names, extra: dict) -> str:
    """Export ``classifier`` behind ``front`` to ``out/export/<name>/1`` (a re-run
    replaces the run's version 1; serve ``out/export/<name>`` with TensorFlow Serving).

    Args:
        out: Run folder.
        name: Model name (TensorFlow Serving's ``--model_name``).
        classifier: Keras model from the front end's units to ``(n, C)`` probabilities.
        front: `keras_ser.serving.builders.FrontEnd` it was trained and scored with.
        class_names: The C output names.
        extra: JSON facts stored in ``keras_ser.json`` (recipe, fold, row).

    Returns:
        The version folder.

    Raises:
        ValueError: ``class_names`` does not fit the classifier.
    """
    from keras_ser.serving.builders import build_serving_model
    from keras_ser.serving.savedmodel import export_model

    serving = build_serving_model(classifier, front, class_names)
    path = export_model(serving, os.path.join(out, "export"), name, class_names=class_names,
                        front=front, extra=extra, version=1)
    print(f"exported {name} -> {path}")
    return path
