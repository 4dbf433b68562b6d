"""The ``keras-ser`` command.

Sub-commands:

- ``keras-ser convert CORPUS SRC_DIR OUT_DIR [options]``: the corpus converter, the same as
  ``python -m tfrecords_tools`` (see `tfrecords_tools.cli`).
- ``keras-ser folds RECORD_DIR OUT.json --protocol loso-speaker``: speaker-independent
  folds from a converted corpus's ``stats.json`` (see `keras_ser.folds`).
- ``keras-ser predict EXPORT INPUT [INPUT ...] [--json] [--batch-size N] [--same-speaker |
  --speaker ID | --speaker-stats A,B]``: classify audio files, folders (recursively) and
  ``@LIST`` files with an exported model: a run's ``export/`` folder, ``export/<name>``
  (highest version) or ``export/<name>/<version>`` (see `keras_ser.serving.predict`);
  each file gets its answer or its own error line (exit status 1 when any failed); the
  speaker options feed a per-speaker normalised export its speaker's statistics.
- ``keras-ser report RUN_DIR``: rebuild ``report.html`` of a finished run folder
  (`keras_ser.report`).

``keras-ser --verbose COMMAND ...`` shows TensorFlow's start-up log lines, which are hidden
by default (`keras_ser.quiet`; ``KERAS_SER_TF_LOGS=1`` does the same for the recipes).
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_ser import quiet


def _folds(argv) -> int:
    from keras_ser import folds

    parser = argparse.ArgumentParser(
        prog="keras-ser folds", description="Write speaker-independent folds as JSON.")
    parser.add_argument("records", help="record folder (with stats.json) or a stats.json")
    parser.add_argument("out", help="output JSON file")
    parser.add_argument("--protocol", choices=folds.PROTOCOLS, default="loso-speaker")
    parser.add_argument("--validation", choices=folds.VALIDATION_RULES, default="next",
                        help="validation speaker rule of loso-speaker")
    parser.add_argument("--k", type=int, default=5, help="folds of the kfold protocol")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stats = args.records
    if os.path.isdir(stats):
        stats = os.path.join(stats, "stats.json")
    kwargs = {}
    if args.protocol == "loso-speaker":
        kwargs["validation"] = args.validation
    elif args.protocol == "kfold":
        kwargs.update(k=args.k, seed=args.seed)
    try:
        built = folds.folds_from_stats(stats, args.protocol, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import json

    with open(stats, encoding="utf-8") as f:
        corpus = json.load(f).get("corpus")
    folds.save_folds(args.out, built, args.protocol, corpus=corpus)
    for fold in built:
        print(f"{fold.name}: train {len(fold.train)} speakers, validation "
              f"{','.join(fold.validation)}, test {','.join(fold.test)}")
    print(f"{len(built)} folds -> {args.out}")
    return 0


def _predict(argv) -> int:
    """``keras-ser predict``: class probabilities of audio files from an exported model.

    Inputs are files, folders (searched recursively for audio files) and ``@LIST`` files
    (one path per line; blank lines and ``#`` comments skipped), see
    `keras_ser.serving.predict.expand_inputs`. Files are classified in batches
    (``--batch-size``; the results do not depend on it) and each gets its own answer, in
    input order: the predicted class and the probabilities sorted from most to least
    likely (3 decimals; for a VTLP-vote export also each class's share of the votes, which
    decide), or one line ``FILE: error: MESSAGE`` for a file that is missing, undecodable,
    empty or shorter than the model's minimum. ``--json`` prints one JSON object per file
    and line (JSON Lines): ``file``, ``predicted``, ``probabilities`` (``votes``,
    ``speaker_statistics`` when they apply), or ``file`` and ``error``. A per-speaker
    export takes its speaker's statistics with ``--same-speaker`` (estimated from the good
    files), ``--speaker ID`` (one the export recorded) or ``--speaker-stats=A,B``; without
    them it falls back to the training speakers' statistics.

    Returns 0 when every file was classified, 1 when any file failed (the others are still
    printed; a count goes to stderr), 2 with a one-line ``error: ...`` on stderr and
    nothing on stdout for bad options, a missing or unusable export, speaker options that
    do not fit it, or no input file at all.
    """
    parser = argparse.ArgumentParser(
        prog="keras-ser predict",
        description="Classify audio files (any rate, channels, WAV/FLAC/OGG) with an "
                    "exported model.",
        epilog="Exit status: 0 all files classified, 1 some file failed (each failure has "
               "its own line), 2 bad options or unusable export.")
    parser.add_argument("model", help="export: a run's export/ folder, export/<name> or "
                                      "export/<name>/<version>")
    parser.add_argument("files", nargs="+", metavar="INPUT",
                        help="audio file, folder (searched recursively) or @LIST (a text "
                             "file with one path per line; # comments)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per file and line (JSON Lines)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="most files per model call (default 16)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own log lines")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--same-speaker", action="store_true",
                     help="per-speaker exports: the files are one speaker's; normalise with "
                          "statistics estimated from them (the good ones)")
    who.add_argument("--speaker", default=None,
                     help="per-speaker exports: a speaker whose statistics the export "
                          "recorded (a fold speaker)")
    who.add_argument("--speaker-stats", default=None, metavar="A,B",
                     help="per-speaker exports: the speaker's mean,std (z-score) or "
                          "min,max (min-max) in dB; write --speaker-stats=-52,11 when A is "
                          "negative")
    args = parser.parse_args(argv)
    if args.verbose:
        quiet.enable_tf_logs()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    from keras_ser.serving import predict

    inputs = predict.expand_inputs(args.files)
    files = [path for path, problem in inputs if problem is None]
    speaker = "files" if args.same_speaker else args.speaker
    try:
        if args.speaker_stats is not None:
            try:
                a, b = (float(v) for v in args.speaker_stats.split(","))
            except ValueError:
                raise ValueError(f"--speaker-stats takes two numbers A,B, got "
                                 f"{args.speaker_stats!r}") from None
            kind = predict.read_metadata(args.model)["front_end"]["normalise"]
            speaker = dict(zip(("mean", "std") if kind == "zscore" else ("min", "max"),
                               (a, b)))
        if not inputs:
            raise ValueError("no input file (the lists given are empty)")
        results = predict.classify_files(args.model, files, speaker=speaker,
                                         batch_size=args.batch_size)
    except (OSError, ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    results = iter(results)
    failed = 0
    for path, problem in inputs:
        result = {"file": path, "error": problem} if problem is not None else next(results)
        failed += "error" in result
        _print_result(result, args.json)
    if failed:
        print(f"keras-ser predict: {failed} of {len(inputs)} file(s) failed",
              file=sys.stderr)
    return 1 if failed else 0


def _print_result(result: dict, as_json: bool) -> None:
    """One file's answer: a JSON line, an error line, or the class and probability rows."""
    if as_json:
        import json

        print(json.dumps(result), flush=True)
        return
    if "error" in result:
        print(f"{result['file']}: error: {result['error']}", flush=True)
        return
    print(f"{result['file']}: {result['predicted']}")
    ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
    width = max(len(name) for name, _ in ranked)
    votes = result.get("votes")
    for name, prob in ranked:
        print(f"  {name:{width}s}  {prob:.3f}" +
              (f"  votes {votes[name]:.2f}" if votes is not None else ""))
    sys.stdout.flush()


COMMANDS = {"convert": "convert a corpus to TFRecord shards",
            "folds": "write speaker-independent folds (JSON) from stats.json",
            "predict": "classify audio files, folders or @lists with an exported model",
            "report": "rebuild report.html of a finished run folder"}
"""Sub-command -> one-line description (the usage text)."""


def _usage() -> None:
    print("usage: keras-ser [--verbose] COMMAND [options]\n\ncommands:")
    for name, text in COMMANDS.items():
        print(f"  {name:10s}{text}")
    print("\noptions:\n  --verbose  show TensorFlow's own log lines (start-up notices); "
          "the same as\n             KERAS_SER_TF_LOGS=1 in the environment")


def main(argv=None) -> int:
    """Entry point of the ``keras-ser`` console script; returns the exit status.

    ``--verbose`` before the command (or among ``predict``'s options) shows TensorFlow's
    start-up log lines, hidden by default (`keras_ser.quiet`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0] == "--verbose":
        quiet.enable_tf_logs()
        argv.pop(0)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        _usage()
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "convert":
        from tfrecords_tools.cli import main as convert_main

        return convert_main(argv[1:], prog="keras-ser convert")
    if argv[0] == "predict":
        return _predict(argv[1:])
    if argv[0] == "report":
        from keras_ser import report

        return report.main(argv[1:])
    return _folds(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
