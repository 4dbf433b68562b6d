"""Command line of the converter: ``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR``.

Also reachable as ``keras-ser convert CORPUS SRC_DIR OUT_DIR``. Every corpus has its own
sub-command with its own options (``python -m tfrecords_tools iemocap --help``), and
``master`` merges the acted corpora into the NITK report's master dataset
(`tfrecords_tools.master`).

Scaling out (`tfrecords_tools.writer`): ``--workers K`` converts in K processes on one
host; ``--num-shards N --shard-index I`` makes this run one of N independent jobs (a
Slurm array task, a Kubernetes indexed job), converting the output shards ``k`` with
``k % N == I``. The job that finds every shard finished writes ``stats.json`` and
``skipped.tsv``; ``python -m tfrecords_tools merge OUT_DIR`` does it explicitly. The
output is the same as a one-process conversion's.
"""

from __future__ import annotations

import argparse
import sys

from tfrecords_tools import master, writer
from tfrecords_tools import reader as readers

#: Sub-command writing ``stats.json`` and ``skipped.tsv`` of a conversion run in slices.
MERGE = "merge"


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """The options every converting sub-command has: folders, sharding, rate, skip limit,
    output, worker processes."""
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder for the shards")
    p.add_argument("--shard-size", type=int, default=256,
                   help="source utterances per shard (default 256)")
    p.add_argument("--sample-rate", type=int, default=16000, help="output rate, Hz")
    p.add_argument("--max-skipped", type=int, default=None, metavar="N",
                   help="exit with status 3 when more than N files are skipped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards of a different earlier conversion in OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="convert in K processes on this host (0 = one per CPU core; each "
                   "loads TensorFlow, about 0.6 GB); same output as with 1 (default 1)")


def _add_slice_options(p: argparse.ArgumentParser) -> None:
    """``--num-shards`` and ``--shard-index``: this run is one of N independent jobs."""
    g = p.add_argument_group(
        "independent jobs", "split the conversion into N slices, one per job (a Slurm array "
        "task, a Kubernetes indexed job) writing into the same OUT_DIR; the output equals a "
        "one-process conversion's")
    g.add_argument("--num-shards", type=int, default=1, metavar="N",
                   help="number of jobs (slices) the conversion is split into (default 1)")
    g.add_argument("--shard-index", type=int, default=None, metavar="I",
                   help="the slice this job converts, 0 to N-1: the output shards k with "
                   "k %% N == I; the job that finds every shard finished writes stats.json "
                   f"(else run `{MERGE} OUT_DIR` afterwards)")


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
        _add_slice_options(p)
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
    p = sub.add_parser(
        MERGE, help="write stats.json and skipped.tsv of a conversion run as N jobs "
        "(--num-shards) once all of them finished",
        description="Write stats.json and skipped.tsv of a conversion whose shards are all "
        "finished, from the shards' side files: the same files a one-process conversion "
        "writes. The last job of a sliced conversion to finish does this itself; run it "
        "when that job was stopped before merging, or on a network file system that "
        "showed it other jobs' shards late.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the conversion's output folder")
    p.add_argument("--max-skipped", type=int, default=None, metavar="N",
                   help="exit with status 3 when more than N files were skipped")
    return parser


def _check_scaling(parser: argparse.ArgumentParser, args) -> None:
    """Normalise ``--shard-index`` (0 for one job) and refuse impossible scaling options.

    Raises:
        SystemExit: Status 2 (via ``parser.error``) when ``--workers`` is negative,
            ``--num-shards`` is below 1, ``--shard-index`` is missing with ``--num-shards``
            above 1, or out of range.
    """
    if getattr(args, "workers", 1) < 0:
        parser.error(f"argument --workers: must be 0 (one per CPU core) or more, got "
                     f"{args.workers}")
    if not hasattr(args, "num_shards"):
        return
    n, index = args.num_shards, args.shard_index
    if n < 1:
        parser.error(f"argument --num-shards: must be at least 1, got {n}")
    if index is None:
        if n > 1:
            parser.error(f"--num-shards {n} needs --shard-index (0 to {n - 1}): the slice "
                         "this job converts")
        args.shard_index = index = 0
    if not 0 <= index < n:
        parser.error(f"argument --shard-index: {index} is out of range for --num-shards {n} "
                     f"(expected 0 to {n - 1})")


_COMMON = {"corpus", "src_dir", "out_dir", "shard_size", "sample_rate", "textgrids",
           "chunk_seconds", "max_skipped", "overwrite", "quiet", "workers", "num_shards",
           "shard_index"}


def _convert(args) -> writer.Report:
    if args.corpus == MERGE:
        return writer.merge(args.out_dir, max_skipped=args.max_skipped)
    if args.corpus == master.NAME:
        return master.convert_master(
            args.src_dir, args.out_dir, keep_boredom=args.keep_boredom,
            include_song=args.include_song, shard_size=args.shard_size,
            sample_rate=args.sample_rate, max_skipped=args.max_skipped,
            overwrite=args.overwrite, progress=not args.quiet, workers=args.workers)
    options = {k: v for k, v in vars(args).items() if k not in _COMMON}
    return writer.convert(
        readers.get_reader(args.corpus, **options), args.src_dir, args.out_dir,
        shard_size=args.shard_size, sample_rate=args.sample_rate,
        textgrid_dirs=tuple(args.textgrids), chunk_seconds=args.chunk_seconds,
        max_skipped=args.max_skipped, overwrite=args.overwrite, progress=not args.quiet,
        num_slices=args.num_shards, slice_index=args.shard_index, workers=args.workers)


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
    """Run a conversion (or one slice of it, or ``merge``); returns the process exit status.

    Exit status: 0 done (for a slice: its shards are written, whether or not it merged);
    2 bad arguments or SRC_DIR is not the corpus (for ``master``: holds a folder that is
    no corpus, or none); 3 more files skipped than ``--max-skipped``; 4 OUT_DIR holds a
    different conversion (its plan, a slice or a shard); 5 ``merge`` found shards not
    written yet (slices still running or not run).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check_scaling(parser, args)
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
    except writer.ConversionIncomplete as err:
        print(f"error: {err}", file=sys.stderr)
        return 5
    stats = report.stats
    if not report.merged:
        print(f"slice {report.slice_index} of {report.num_slices}: {report.records} records "
              f"({stats['hours']:.2f} h) in {report.shards_written + report.shards_reused} "
              f"shards ({report.shards_reused} reused); {len(report.skipped)} skipped so far "
              f"-> {args.out_dir}")
        print(f"  {report.shards_missing} of {report.shards_total} shards belong to slices "
              "not finished yet: the last job to finish writes stats.json, or run "
              f"`{prog} {MERGE} {args.out_dir}` once all are done")
        return 0
    if args.corpus == MERGE:
        print(f"merged {report.shards_total} shards: {report.records} records "
              f"({stats['hours']:.2f} h) from {len(stats['speaker'])} speakers; "
              f"{len(report.skipped)} skipped -> {args.out_dir}")
    else:
        print(f"{report.records} records ({stats['hours']:.2f} h) from "
              f"{len(stats['speaker'])} speakers in "
              f"{report.shards_written + report.shards_reused} shards "
              f"({report.shards_reused} reused); {len(report.skipped)} skipped -> "
              f"{args.out_dir}")
    if report.num_slices > 1:
        print(f"  slice {report.slice_index} of {report.num_slices} finished last: merged "
              f"all {report.shards_total} shards into stats.json and skipped.tsv")
    if args.corpus == master.NAME:
        _print_master(stats)
        return 0
    for label, n in stats["emotion"].items():
        print(f"  {label or '(unlabelled)'}: {n}")
    return 0
