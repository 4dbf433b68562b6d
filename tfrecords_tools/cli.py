"""Command line of the converter: ``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR``.

Also reachable as ``keras-ser convert CORPUS SRC_DIR OUT_DIR``. Every corpus has its own
sub-command with its own options (``python -m tfrecords_tools iemocap --help``), and
``master`` merges the acted corpora into the NITK report's master dataset
(`tfrecords_tools.master`).
"""

from __future__ import annotations

import argparse
import sys

from tfrecords_tools import master, writer
from tfrecords_tools import reader as readers


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """The options every sub-command has: folders, sharding, rate, skip limit, output."""
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder for the shards")
    p.add_argument("--shard-size", type=int, default=256,
                   help="source utterances per shard (default 256)")
    p.add_argument("--sample-rate", type=int, default=16000, help="output rate, Hz")
    p.add_argument("--max-skipped", type=int, default=None, metavar="N",
                   help="exit with status 3 when more than N files are skipped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards of a different earlier conversion in OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser(prog: str = "python -m tfrecords_tools") -> argparse.ArgumentParser:
    """The argument parser: one sub-command per registered corpus reader, and ``master``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert an emotional-speech corpus to TFRecord shards "
        "(16 kHz mono int16, one Example schema for every corpus).")
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name, cls in sorted(readers.load_all().items()):
        p = sub.add_parser(name, help=cls.description, description=cls.description)
        p.add_argument("src_dir", metavar="SRC_DIR", help="corpus folder as released")
        _add_output_options(p)
        p.add_argument("--textgrids", action="append", default=[], metavar="DIR",
                       help="folder of <stem>.TextGrid word alignments (repeatable)")
        p.add_argument("--chunk-seconds", type=float, default=None,
                       help="cut longer recordings into chunks of this length "
                       f"(default {cls.chunk_seconds or 'never'}; 0 = never)")
        cls.add_arguments(p)
    p = sub.add_parser(master.NAME, help=master.DESCRIPTION, description=master.DESCRIPTION)
    p.add_argument("src_dir", metavar="SRC_DIR",
                   help=f"folder of corpus folders named {', '.join(master.CORPORA)}, "
                   "each as released")
    _add_output_options(p)
    p.add_argument("--keep-boredom", action="store_true",
                   help="keep EmoDB's boredom as an eighth emotion (default: dropped)")
    p.add_argument("--include-song", action="store_true",
                   help="also convert RAVDESS's song files (default: speech only)")
    return parser


_COMMON = {"corpus", "src_dir", "out_dir", "shard_size", "sample_rate", "textgrids",
           "chunk_seconds", "max_skipped", "overwrite", "quiet"}


def _convert(args) -> writer.Report:
    if args.corpus == master.NAME:
        return master.convert_master(
            args.src_dir, args.out_dir, keep_boredom=args.keep_boredom,
            include_song=args.include_song, shard_size=args.shard_size,
            sample_rate=args.sample_rate, max_skipped=args.max_skipped,
            overwrite=args.overwrite, progress=not args.quiet)
    options = {k: v for k, v in vars(args).items() if k not in _COMMON}
    return writer.convert(
        readers.get_reader(args.corpus, **options), args.src_dir, args.out_dir,
        shard_size=args.shard_size, sample_rate=args.sample_rate,
        textgrid_dirs=tuple(args.textgrids), chunk_seconds=args.chunk_seconds,
        max_skipped=args.max_skipped, overwrite=args.overwrite, progress=not args.quiet)


def _print_master(stats: dict) -> None:
    """The gender × emotion counts, largest first (as NITK report Figure 13), and the
    corpora's shares."""
    print("gender x emotion:")
    for name, n in sorted(stats["gender_emotion"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {name or '(unknown gender)'}: {n}")
    print("corpora:")
    for name, entry in stats["corpora"].items():
        left_out = {**entry["filtered"], **entry["dropped"]}
        print(f"  {name}: {entry['records']} records ({entry['hours']:.2f} h), "
              f"{len(entry['speaker'])} speakers, {entry['skipped']} skipped" +
              "".join(f", {reason} {n} left out" for reason, n in left_out.items()))


def main(argv=None, prog: str = "python -m tfrecords_tools") -> int:
    """Run a conversion; returns the process exit status.

    Exit status: 0 done; 2 bad arguments or SRC_DIR is not the corpus (for ``master``:
    holds a folder that is no corpus, or none); 3 more files skipped than
    ``--max-skipped``; 4 OUT_DIR holds a different conversion.
    """
    args = build_parser(prog).parse_args(argv)
    try:
        report = _convert(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except writer.PlanMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 4
    except writer.TooManySkipped as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    stats = report.stats
    print(f"{report.records} records ({stats['hours']:.2f} h) from {len(stats['speaker'])} "
          f"speakers in {report.shards_written + report.shards_reused} shards "
          f"({report.shards_reused} reused); {len(report.skipped)} skipped -> {args.out_dir}")
    if args.corpus == master.NAME:
        _print_master(stats)
        return 0
    for label, n in stats["emotion"].items():
        print(f"  {label or '(unlabelled)'}: {n}")
    return 0
