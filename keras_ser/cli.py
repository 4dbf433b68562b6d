"""The ``keras-ser`` command.

Sub-commands:

- ``keras-ser convert CORPUS SRC_DIR OUT_DIR [options]``: the corpus converter, the same as
  ``python -m tfrecords_tools`` (see `tfrecords_tools.cli`).
- ``keras-ser folds RECORD_DIR OUT.json --protocol loso-speaker``: speaker-independent
  folds from a converted corpus's ``stats.json`` (see `keras_ser.folds`).
- ``keras-ser predict EXPORT FILE [FILE ...] [--json] [--same-speaker | --speaker ID |
  --speaker-stats A,B]``: classify audio files with an exported model: a run's
  ``export/`` folder, ``export/<name>`` (highest version) or ``export/<name>/<version>``
  (see `keras_ser.serving.predict`); the speaker options feed a per-speaker normalised
  export its speaker's statistics.
"""

from __future__ import annotations

import argparse
import os
import sys


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

    Prints, per file, the predicted class and the probabilities sorted from most to least
    likely (3 decimals; for a VTLP-vote export also each class's share of the votes, which
    decide), or a JSON list with ``--json``. A per-speaker export takes its speaker's
    statistics with ``--same-speaker`` (estimated from the files), ``--speaker ID`` (one
    the export recorded) or ``--speaker-stats=A,B``; without them it falls back to the
    training speakers' statistics. Returns 0, or 2 with a one-line ``error: ...`` on
    stderr when the model folder is missing or not an export, an audio file is missing,
    undecodable, empty or shorter than the model's minimum, or the speaker options do not
    fit the export.
    """
    parser = argparse.ArgumentParser(
        prog="keras-ser predict",
        description="Classify audio files (any rate, channels, WAV/FLAC/OGG) with an "
                    "exported model.")
    parser.add_argument("model", help="export: a run's export/ folder, export/<name> or "
                                      "export/<name>/<version>")
    parser.add_argument("files", nargs="+", help="audio files")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--same-speaker", action="store_true",
                     help="per-speaker exports: the files are one speaker's; normalise with "
                          "statistics estimated from them")
    who.add_argument("--speaker", default=None,
                     help="per-speaker exports: a speaker whose statistics the export "
                          "recorded (a fold speaker)")
    who.add_argument("--speaker-stats", default=None, metavar="A,B",
                     help="per-speaker exports: the speaker's mean,std (z-score) or "
                          "min,max (min-max) in dB; write --speaker-stats=-52,11 when A is "
                          "negative")
    args = parser.parse_args(argv)
    from keras_ser.serving import predict

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
        results = predict.predict_files(args.model, args.files, speaker=speaker)
    except (OSError, ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"{result['file']}: {result['predicted']}")
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
        width = max(len(name) for name, _ in ranked)
        votes = result.get("votes")
        for name, prob in ranked:
            print(f"  {name:{width}s}  {prob:.3f}" +
                  (f"  votes {votes[name]:.2f}" if votes is not None else ""))
    return 0


def main(argv=None) -> int:
    """Entry point of the ``keras-ser`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"convert": "convert a corpus to TFRecord shards",
                "folds": "write speaker-independent folds (JSON) from stats.json",
                "predict": "classify audio files with an exported model"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: keras-ser COMMAND [options]\n\ncommands:")
        for name, text in commands.items():
            print(f"  {name:10s}{text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "convert":
        from tfrecords_tools.cli import main as convert_main

        return convert_main(argv[1:], prog="keras-ser convert")
    if argv[0] == "predict":
        return _predict(argv[1:])
    return _folds(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
