"""Conversion scaling: records/s and peak memory as the corpus grows, and worker processes.

Builds temporary source folders that repeat the shared unlabelled speech
(``../shared/data/speech_unlabeled``: LibriSpeech, LJSpeech, LibriVox and other read
speech, 47 files, 5.3 min) 1x, 4x and 16x as symbolic links (``r000/...``,
``r001/...``; the ``speech`` reader gives every copy its own utterance ids), and converts
each with ``python -m tfrecords_tools speech SRC OUT`` (`tfrecords_tools.cli.main`) in a
child process of its own. A first row converts a single file: the fixed cost of any
conversion (Python, TensorFlow, librosa). Then the largest corpus is converted again
with ``--workers 2``, and both outputs are compared file by file.

Per conversion it prints:

- corpus: source files and hours of audio; records and shards written;
- wall s: the child process from start to exit, as the parent sees it;
- convert s: inside the child, the call of `tfrecords_tools.cli.main` (scan, plan,
  shards, merge into stats.json). With one process, TensorFlow is imported before the
  clock starts (its time is shown as import s); with workers, the workers' own start
  (each imports TensorFlow) is inside convert s, as it is a cost of that mode;
- records/s: records / convert s; marginal rec/s: the same after taking away the
  1-file row's convert s and record, i.e. the rate once librosa's lazy imports and the
  first shard's set-up are paid;
- peak RSS: the child's ``ru_maxrss`` (``resource.getrusage(RUSAGE_SELF)``) and, with
  workers, the largest worker's (``RUSAGE_CHILDREN`` in the child, after the pool is
  joined), MiB. The host's total is at most parent + workers x largest worker;
- CPU s (workers table): user + system time of the child and its workers, imports
  included: what the conversion costs the host whatever the wall time;
- ratios against the 1x row: records/s and peak RSS. Memory is flat when the peak RSS
  ratio stays near 1 as the corpus grows 16-fold (only utterance metadata grows, about
  1 kB per file; audio is decoded one recording at a time).

The machine (CPU count, model, whether /proc/cpuinfo lists avx512_bf16, load average) is
printed first: timings on a shared machine move with its load. Workers pay off when cores
are idle and the conversion is long against their start (each imports TensorFlow and
librosa, several CPU seconds); on a host whose cores are already busy they only add that
start, which the CPU s column shows.

Usage::

    python benchmarks/convert_scaling.py [--source ../shared/data/speech_unlabeled]
        [--files 47] [--repeats 1,4,16] [--shard-size 32] [--workers 2]
        [--workers-at 16]

``--files`` takes the first N audio files (sorted by path) of the source, to make a
quicker run; ``--workers-at`` picks the repeat factor of the workers comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import describe  # benchmarks/machine.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.join(os.environ.get("KERAS_SER_DATA") or os.path.join(
    HERE, "..", "..", "shared", "data"), "speech_unlabeled")



def source_files(source: str, limit: int | None) -> list:
    """The audio files of ``source`` (sorted; the first ``limit`` if given), with their
    durations in seconds, as ``[(relative path, seconds), ...]``.

    Raises:
        FileNotFoundError: ``source`` is not a folder or holds no audio file.
    """
    import soundfile

    from tfrecords_tools.reader import audio_files

    paths = audio_files(source)[:limit]
    if not paths:
        raise FileNotFoundError(f"{source}: no audio files")
    return [(os.path.relpath(p, source), soundfile.info(p).duration) for p in paths]


def build_corpus(folder: str, source: str, files: list, repeat: int) -> None:
    """Make ``folder`` hold ``repeat`` copies (symbolic links) of ``files`` of ``source``."""
    for r in range(repeat):
        for relative, _ in files:
            link = os.path.join(folder, f"r{r:03d}", relative)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.abspath(os.path.join(source, relative)), link)


def child(src: str, out: str, shard_size: int, workers: int) -> int:
    """Child process: convert ``src`` into ``out``; print one JSON line of measurements."""
    import_s = 0.0
    if workers == 1:
        t0 = time.perf_counter()
        import tensorflow  # noqa: F401  (the fixed start cost, timed apart)

        import_s = time.perf_counter() - t0
    from tfrecords_tools import cli

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        code = cli.main(["speech", src, out, "--quiet", "--shard-size", str(shard_size),
                         "--workers", str(workers)])
    convert_s = time.perf_counter() - t0
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        records = json.load(f)["records"]
    with open(os.path.join(out, "plan.json"), encoding="utf-8") as f:
        shards = len(json.load(f)["shards"])
    own, workers_usage = (resource.getrusage(resource.RUSAGE_SELF),
                          resource.getrusage(resource.RUSAGE_CHILDREN))
    print(json.dumps({
        "code": code, "records": records, "shards": shards, "import_s": import_s,
        "convert_s": convert_s,
        "cpu_s": sum(u.ru_utime + u.ru_stime for u in (own, workers_usage)),
        "rss_self_mib": own.ru_maxrss / 1024, "rss_workers_mib": workers_usage.ru_maxrss / 1024}))
    return code


def run_child(src: str, out: str, shard_size: int, workers: int) -> dict:
    """Run `child` in a new Python process; returns its measurements plus ``wall_s``.

    Raises:
        RuntimeError: The child failed (its stderr is in the message).
    """
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", src, out,
                           str(shard_size), str(workers)], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"conversion of {src} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def same_output(a: str, b: str) -> bool:
    """True when two conversion folders hold the same files with the same bytes."""
    names = sorted(n for n in os.listdir(a) if os.path.isfile(os.path.join(a, n)))
    if names != sorted(n for n in os.listdir(b) if os.path.isfile(os.path.join(b, n))):
        return False
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors and len(match) == len(names)


def main(argv=None):
    """Build the corpora, convert each in a child process, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help="folder of unlabelled speech to repeat (default: the shared "
                        "speech_unlabeled)")
    parser.add_argument("--files", type=int, default=None,
                        help="use the first N audio files of the source (default: all)")
    parser.add_argument("--repeats", default="1,4,16",
                        help="comma-separated repeat factors (default 1,4,16)")
    parser.add_argument("--shard-size", type=int, default=32,
                        help="source utterances per shard (default 32)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the comparison run (default 2)")
    parser.add_argument("--workers-at", type=int, default=None,
                        help="repeat factor of the workers comparison (default: the largest)")
    parser.add_argument("--child", nargs=4, metavar=("SRC", "OUT", "SHARD_SIZE", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        src, out, shard_size, workers = args.child
        return child(src, out, int(shard_size), int(workers))

    repeats = sorted({int(r) for r in args.repeats.split(",")})
    workers_at = args.workers_at or repeats[-1]
    if workers_at not in repeats:
        parser.error(f"--workers-at {workers_at} is not one of --repeats {repeats}")
    files = source_files(args.source, args.files)
    seconds = sum(d for _, d in files)
    print(describe())
    print(f"source: {args.source}: {len(files)} audio files, {seconds / 60:.1f} min; "
          f"shard size {args.shard_size}; every conversion in its own child process")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="convert_scaling.") as tmp:
        plans = [("1 file", 1, files[:1])] + [(f"{r}x", r, files) for r in repeats]
        for label, repeat, chosen in plans:
            src = os.path.join(tmp, f"src-{label.replace(' ', '')}")
            build_corpus(src, args.source, chosen, repeat)
            result = run_child(src, os.path.join(tmp, f"out-{label.replace(' ', '')}"),
                               args.shard_size, 1)
            result.update(files=len(chosen) * repeat,
                          hours=repeat * sum(d for _, d in chosen) / 3600)
            rows[label] = result
            print(f"  converted {label}: {result['records']} records in "
                  f"{result['wall_s']:.1f} s", flush=True)
        src = os.path.join(tmp, f"src-{workers_at}x")
        out_workers = os.path.join(tmp, f"out-{workers_at}x-workers")
        parallel = run_child(src, out_workers, args.shard_size, args.workers)
        identical = same_output(os.path.join(tmp, f"out-{workers_at}x"), out_workers)

    base, fixed = rows[f"{repeats[0]}x"], rows["1 file"]
    base_rate = base["records"] / base["convert_s"]
    print()
    print(f"{'corpus':>7} {'files':>6} {'hours':>6} {'records':>7} {'shards':>6} "
          f"{'wall s':>7} {'import s':>8} {'convert s':>9} {'records/s':>9} "
          f"{'marginal rec/s':>14} {'peak RSS MiB':>12} "
          f"{'rec/s vs ' + str(repeats[0]) + 'x':>12} {'RSS vs ' + str(repeats[0]) + 'x':>10}")
    for label, r in rows.items():
        rate = r["records"] / r["convert_s"]
        extra = r["convert_s"] - fixed["convert_s"]
        marginal = (f"{(r['records'] - fixed['records']) / extra:14.1f}"
                    if r is not fixed and extra > 0 else f"{'-':>14}")
        print(f"{label:>7} {r['files']:6d} {r['hours']:6.2f} {r['records']:7d} "
              f"{r['shards']:6d} {r['wall_s']:7.1f} {r['import_s']:8.1f} "
              f"{r['convert_s']:9.1f} {rate:9.1f} {marginal} {r['rss_self_mib']:12.0f} "
              f"{rate / base_rate:12.2f} {r['rss_self_mib'] / base['rss_self_mib']:10.2f}")

    single = rows[f"{workers_at}x"]
    print()
    print(f"workers at {workers_at}x ({single['records']} records, {single['shards']} "
          f"shards of {args.shard_size}); identical output (every file, byte for byte): "
          f"{'yes' if identical else 'NO'}")
    print(f"{'workers':>7} {'wall s':>7} {'convert s':>9} {'CPU s':>6} {'records/s':>9} "
          f"{'speed-up':>8} {'parent RSS MiB':>14} {'largest worker MiB':>18} "
          f"{'host total <= MiB':>17}")
    for k, r in ((1, single), (args.workers, parallel)):
        worker_rss = r["rss_workers_mib"] if k > 1 else 0.0
        print(f"{k:7d} {r['wall_s']:7.1f} {r['convert_s'] + r['import_s']:9.1f} "
              f"{r['cpu_s']:6.1f} "
              f"{r['records'] / (r['convert_s'] + r['import_s']):9.1f} "
              f"{(single['convert_s'] + single['import_s']) / (r['convert_s'] + r['import_s']):8.2f} "
              f"{r['rss_self_mib']:14.0f} {worker_rss:18.0f} "
              f"{r['rss_self_mib'] + k * worker_rss if k > 1 else r['rss_self_mib']:17.0f}")
    print("(convert s here includes TensorFlow's import in both rows: the one process's, "
          "or the workers' own)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.exit(main())
