"""Command line of the converter: ``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR``.

Also reachable as ``keras-ser convert CORPUS SRC_DIR OUT_DIR``. Every corpus has its own
sub-command with its own options (``python -m tfrecords_tools iemocap --help``).
"""

from __future__ import annotations

import argparse
import sys

from tfrecords_tools import reader as readers
from tfrecords_tools import writer


def build_parser(prog: str = "python -m tfrecords_tools") -> argparse.ArgumentParser:
    """The argument parser: one sub-command per registered corpus reader."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert an emotional-speech corpus to TFRecord shards "
        "(16 kHz mono int16, one Example schema for every corpus).")
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name, cls in sorted(readers.load_all().items()):
        p = sub.add_parser(name, help=cls.description, description=cls.description)
        p.add_argument("src_dir", metavar="SRC_DIR", help="corpus folder as released")
        p.add_argument("out_dir", metavar="OUT_DIR", help="output folder for the shards")
        p.add_argument("--shard-size", type=int, default=256,
                       help="source utterances per shard (default 256)")
        p.add_argument("--sample-rate", type=int, default=16000, help="output rate, Hz")
        p.add_argument("--textgrids", action="append", default=[], metavar="DIR",
                       help="folder of <stem>.TextGrid word alignments (repeatable)")
        p.add_argument("--chunk-seconds", type=float, default=None,
                       help="cut longer recordings into chunks of this length "
                       f"(default {cls.chunk_seconds or 'never'}; 0 = never)")
        p.add_argument("--max-skipped", type=int, default=None, metavar="N",
                       help="exit with status 3 when more than N files are skipped")
        p.add_argument("--overwrite", action="store_true",
                       help="replace the shards of a different earlier conversion in OUT_DIR")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        cls.add_arguments(p)
    return parser


_COMMON = {"corpus", "src_dir", "out_dir", "shard_size", "sample_rate", "textgrids",
           "chunk_seconds", "max_skipped", "overwrite", "quiet"}


def main(argv=None, prog: str = "python -m tfrecords_tools") -> int:
    """Run a conversion; returns the process exit status.

    Exit status: 0 done; 2 bad arguments or SRC_DIR is not the corpus; 3 more files
    skipped than ``--max-skipped``; 4 OUT_DIR holds a different conversion.
    """
    args = build_parser(prog).parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in _COMMON}
    try:
        reader = readers.get_reader(args.corpus, **options)
        report = writer.convert(
            reader, args.src_dir, args.out_dir, shard_size=args.shard_size,
            sample_rate=args.sample_rate, textgrid_dirs=tuple(args.textgrids),
            chunk_seconds=args.chunk_seconds, max_skipped=args.max_skipped,
            overwrite=args.overwrite, progress=not args.quiet)
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
    for label, n in stats["emotion"].items():
        print(f"  {label or '(unlabelled)'}: {n}")
    return 0
