"""Sharded, atomic, resumable TFRecord writing for any corpus reader, in one or many jobs.

Layout of an output folder::

    OUT_DIR/plan.json                     which utterances go to which shard, and options
    OUT_DIR/<corpus>-00000-of-00003.tfrecord
    OUT_DIR/<corpus>-00000-of-00003.json  per-record metadata and skips of that shard
    OUT_DIR/slices/slice-00000-of-00001.json  what one job wrote (see below)
    OUT_DIR/stats.json                    counts, hours, log-mel statistics
    OUT_DIR/skipped.tsv                   path <TAB> reason, one line per skipped file

A shard and its metadata are written under ``*.tmp`` names and renamed when complete, so
an interrupted conversion never leaves a half-written shard; re-running the same command
skips the shards that are finished.

Scaling out. The plan cuts the utterances, sorted by id, into shards of ``shard_size``;
it depends only on the corpus and the options, so every job computes the same plan.
A conversion can be split into ``num_slices`` slices run by independent jobs (a Slurm
array, a Kubernetes indexed job): slice ``i`` writes the shards ``k`` with
``k % num_slices == i``, exactly the files a one-process run writes for them, and then
``slices/slice-<i>-of-<num_slices>.json`` (the plan's SHA-256, the shards it covers, the
reader's skips and filtered counts, and the slice's partial statistics). Within a job,
``workers`` processes (spawned: TensorFlow is not fork-safe) write the slice's shards,
one shard per task. `merge` builds ``stats.json`` and ``skipped.tsv`` from the shards'
side files in plan order, the same computation a one-process run does (which is slice 0
of 1 followed by `merge`), so the output is identical whoever wrote the shards. The job
that finds every shard finished merges automatically; ``python -m tfrecords_tools merge
OUT_DIR`` does it explicitly. Every side and slice file carries the plan's SHA-256, so
shards or slices of another conversion in the same folder are refused by name.

Memory does not grow with the audio: one recording is decoded at a time, statistics are
accumulated as running sums, and the merge reads one side file at a time. What grows is
the utterance metadata of the scan (kept pickled) and the plan's ids: about 1 kB per
utterance.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import pickle

import numpy as np

from keras_ser.io import read_json, write_json, write_text
from tfrecords_tools import audio, stats
from tfrecords_tools.schema import SAMPLE_RATE, Skipped, Utterance, serialize

#: Audio shorter than this (one default analysis window, 32 ms) is skipped as too short.
MIN_SAMPLES = stats.DEFAULT_LOGMEL["window_samples"]
#: A final chunk shorter than this many seconds is merged into the previous chunk.
MIN_CHUNK_S = 1.0
#: Sub-folder of OUT_DIR holding one file per finished slice.
SLICES_DIR = "slices"


class TooManySkipped(RuntimeError):
    """More source files were skipped than ``max_skipped`` allows."""


class PlanMismatch(RuntimeError):
    """OUT_DIR holds shards of a different conversion (other corpus, files or options)."""


class ConversionIncomplete(RuntimeError):
    """`merge` found shards of the plan not written yet: some slices have not finished."""


@dataclasses.dataclass
class Report:
    """What a conversion (or one slice of it, or a `merge`) did.

    Attributes:
        out_dir: Output folder.
        records: Records in all shards (when ``merged``), else in this slice's shards.
        skipped: ``[(path, reason), ...]`` for every source file not converted (when not
            ``merged``: the reader's skips and those in this slice's shards).
        shards_written: Shards written by this call.
        shards_reused: Finished shards found from an earlier call and kept.
        stats: The ``stats.json`` document (when not ``merged``: the same document over
            this slice's shards only, as in its slice file).
        merged: ``stats.json`` and ``skipped.tsv`` were written: every shard is finished.
        slice_index: The slice this call converted (0 for a one-process conversion).
        num_slices: Slices the conversion was split into (1 for a one-process conversion).
        shards_total: Shards of the whole conversion.
        shards_missing: Shards of other slices not finished yet (0 when ``merged``).
    """

    out_dir: str
    records: int
    skipped: list
    shards_written: int
    shards_reused: int
    stats: dict
    merged: bool = True
    slice_index: int = 0
    num_slices: int = 1
    shards_total: int = 0
    shards_missing: int = 0


def plan_digest(plan: dict) -> str:
    """The identity of a conversion: SHA-256 (hex) of its plan as canonical JSON.

    Args:
        plan: The ``plan.json`` document.

    Returns:
        64 hex digits; equal plans (same corpus, utterances, shards and options) give
        equal digests.
    """
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_slice(num_slices: int, slice_index: int) -> None:
    """Check a slice choice (``--num-shards``, ``--shard-index`` on the command line).

    Raises:
        ValueError: ``num_slices`` is below 1 or ``slice_index`` is not in
            ``0 .. num_slices - 1``; the message names both values.
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}")
    if not 0 <= slice_index < num_slices:
        raise ValueError(f"slice_index {slice_index} is out of range for num_slices "
                         f"{num_slices} (expected 0 to {num_slices - 1})")


def slice_shards(shards: list, num_slices: int, slice_index: int) -> list:
    """The shards of one slice: every ``num_slices``-th, from ``slice_index`` on.

    Round-robin rather than contiguous blocks, so that slices get a similar mix of the
    corpus when durations vary along the sorted ids (e.g. one folder of long recordings).

    Args:
        shards: The plan's shards, in order.
        num_slices: Slices the conversion is split into.
        slice_index: The slice wanted.

    Returns:
        ``shards[k]`` for every ``k`` with ``k % num_slices == slice_index``, in order
        (empty when there are fewer shards than slices).

    Raises:
        ValueError: See `check_slice`.
    """
    check_slice(num_slices, slice_index)
    return shards[slice_index::num_slices]


def resolve_workers(workers: int) -> int:
    """The number of worker processes for ``workers`` (``0``: one per usable CPU core).

    Raises:
        ValueError: ``workers`` is negative.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU core) or more, got {workers}")
    if workers == 0:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    return workers


def _slice_name(index: int, count: int) -> str:
    return f"slice-{index:05d}-of-{count:05d}.json"


def _shard_name(corpus: str, index: int, total: int) -> str:
    return f"{corpus}-{index:05d}-of-{total:05d}"


def _resolve_segments(utt: Utterance, waveform: np.ndarray, sample_rate: int,
                      textgrids: dict) -> tuple:
    duration = waveform.shape[0] / sample_rate
    if utt.segments is not None:
        labels = utt.segment_labels if utt.segment_labels is not None else [""] * len(utt.segments)
        segments, labels = audio.clip_segments(utt.segments, labels, duration, utt.audio_path)
        if segments:
            return segments, labels, utt.segment_kind
    stem = os.path.splitext(os.path.basename(utt.audio_path))[0]
    textgrid = utt.textgrid or textgrids.get(stem)
    if textgrid:
        segments, labels, kind = audio.textgrid_words(textgrid)
        segments, labels = audio.clip_segments(segments, labels, duration, textgrid)
        if segments:
            return segments, labels, kind
    regions = audio.voiced_segments(waveform, sample_rate)
    return regions, [""] * len(regions), "voiced"


def _chunks(utt: Utterance, num_samples: int, sample_rate: int, segments: list,
            labels: list, chunk_seconds: float | None):
    """Yield ``(utterance, first_sample, end_sample, segments, labels)`` per chunk.

    Chunks are ``chunk_seconds`` long; a last chunk under `MIN_CHUNK_S` joins the one
    before. Segments are clipped to each chunk and shifted to its start.
    """
    if not chunk_seconds or num_samples <= chunk_seconds * sample_rate:
        yield utt, 0, num_samples, segments, labels
        return
    step = round(chunk_seconds * sample_rate)
    bounds = list(range(0, num_samples, step)) + [num_samples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_CHUNK_S * sample_rate:
        del bounds[-2]
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        t0, t1 = lo / sample_rate, hi / sample_rate
        inside = [((max(s, t0) - t0, min(e, t1) - t0), lab)
                  for (s, e), lab in zip(segments, labels) if e > t0 and s < t1]
        inside = [(seg, lab) for seg, lab in inside if seg[1] > seg[0]]
        chunk = dataclasses.replace(utt, utterance_id=f"{utt.utterance_id}_c{k:04d}")
        yield chunk, lo, hi, [seg for seg, _ in inside], [lab for _, lab in inside]


def _convert_one(utt: Utterance, sample_rate: int, textgrids: dict,
                 chunk_seconds: float | None):
    """Decode one utterance; yields ``(utterance, pcm)`` for each record it makes.

    Raises:
        AudioError: Undecodable, empty, too short, silent, NaN audio, or a bad alignment.
    """
    pcm = audio.to_int16(audio.load_audio(utt.audio_path, sample_rate))
    if pcm.shape[0] < MIN_SAMPLES:
        raise audio.AudioError(f"{utt.audio_path}: too short ({pcm.shape[0]} samples at "
                               f"{sample_rate} Hz, need at least {MIN_SAMPLES})")
    if not np.any(pcm):
        raise audio.AudioError(f"{utt.audio_path}: digital silence (every sample is 0)")
    waveform = pcm.astype(np.float32) / 32768.0
    segments, labels, kind = _resolve_segments(utt, waveform, sample_rate, textgrids)
    for piece, lo, hi, seg, lab in _chunks(utt, pcm.shape[0], sample_rate, segments, labels,
                                           chunk_seconds):
        piece_kind = kind
        if not seg:
            seg = audio.voiced_segments(waveform[lo:hi], sample_rate)
            lab, piece_kind = [""] * len(seg), "voiced"
        yield (dataclasses.replace(piece, segments=seg, segment_labels=lab,
                                   segment_kind=piece_kind), pcm[lo:hi])


def deterministic_bytes(serialized: bytes) -> bytes:
    """A serialised `tf.train.Example` re-encoded with its features in name order.

    `tfrecords_tools.schema.serialize` leaves the order of the feature map to protobuf,
    whose upb backend varies it from process to process: the same record would be other
    bytes in every job. Re-encoding deterministically (about 30 µs for a 10 s record) makes
    a shard the same bytes whichever process writes it; readers see the same Example.

    Args:
        serialized: A serialised Example.

    Returns:
        The same Example, serialised with ``deterministic=True``.

    Raises:
        google.protobuf.message.DecodeError: ``serialized`` is not an Example.
    """
    import tensorflow as tf

    return tf.train.Example.FromString(serialized).SerializeToString(deterministic=True)


def _write_shard(path: str, meta_path: str, items: list, sample_rate: int,
                 textgrids: dict, chunk_seconds, progress, digest: str) -> int:
    """Write one shard and its side file; returns the number of source utterances."""
    import tensorflow as tf

    records, skipped = [], []
    moments = stats.FeatureMoments(stats.DEFAULT_LOGMEL["n_mels"])
    # The shard is written under a temporary name (TFRecordWriter streams to a path),
    # its side file next, and the shard renamed last: a shard present is complete.
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as out:
        for utt in items:
            try:
                pieces = list(_convert_one(utt, sample_rate, textgrids,
                                           chunk_seconds if chunk_seconds is not None
                                           else utt.chunk_seconds))
            except audio.AudioError as err:
                skipped.append((utt.audio_path, str(err).split(": ", 1)[-1]))
                progress.update(1)
                continue
            for piece, pcm in pieces:
                out.write(deterministic_bytes(serialize(piece, pcm, sample_rate)))
                moments.add(stats.log_mel_librosa(pcm.astype(np.float32) / 32768.0))
                records.append({
                    "utterance_id": piece.utterance_id, "speaker": piece.speaker,
                    "session": piece.session, "gender": piece.gender,
                    "emotion": piece.emotion, "duration_s": pcm.shape[0] / sample_rate,
                    "segments": len(piece.segments), "segment_kind": piece.segment_kind,
                })
            del pieces
            progress.update(1)
    write_json(meta_path, {"records": records, "skipped": skipped,
                           "logmel": moments.to_json(), "plan_sha256": digest})
    os.replace(tmp, path)
    return len(items)


def one_thread_per_process():
    """Limit the BLAS and OpenMP thread pools of this process to one thread.

    A shard's numeric work is many small array operations (resampling, mel projections
    of one utterance), which threaded BLAS does not speed up; on a busy host its waiting
    threads spin, making the conversion several times slower (3 to 5 times, measured on
    2 shared cores), and ``workers`` processes would each start a thread per core. Scale
    with ``workers`` instead. The output does not change (EmoDB's shards, side files
    and stats.json compared byte for byte). TensorFlow and librosa's feature code are
    loaded first, so that the limit reaches every library they bring (threadpoolctl
    only sees libraries already loaded).

    Returns:
        A `threadpoolctl.threadpool_limits` object: the limit holds until its
        ``restore_original_limits()`` (or the end of its ``with`` block).
    """
    import tensorflow  # noqa: F401  (loads the thread pools it brings)
    from threadpoolctl import threadpool_limits

    stats.log_mel_librosa(np.zeros(stats.DEFAULT_LOGMEL["window_samples"], np.float32))
    return threadpool_limits(limits=1)


# State of a worker process of `convert`'s pool, set once by `_init_worker`.
_WORKER: dict = {}


def _init_worker(sample_rate: int, textgrids: dict, chunk_seconds) -> None:
    """Pool initializer: the options every shard task of this conversion shares, and one
    thread per worker (`one_thread_per_process`)."""
    _WORKER.update(sample_rate=sample_rate, textgrids=textgrids, chunk_seconds=chunk_seconds,
                   limits=one_thread_per_process())


def _write_shard_task(task: tuple) -> int:
    """Pool task: write one shard ``(path, meta_path, items, digest)``; returns its size."""
    from tqdm import tqdm

    path, meta_path, items, digest = task
    return _write_shard(path, meta_path, items, _WORKER["sample_rate"],
                        _WORKER["textgrids"], _WORKER["chunk_seconds"],
                        tqdm(disable=True), digest)


def _shard_paths(out_dir: str, name: str) -> tuple:
    return (os.path.join(out_dir, name + ".tfrecord"), os.path.join(out_dir, name + ".json"))


def _finished_shard(out_dir: str, name: str, digest: str,
                    overwrite: bool = False) -> dict | None:
    """The side file of a finished shard of this conversion, or ``None`` if not finished.

    Args:
        out_dir: Output folder.
        name: The shard's name (without extension).
        digest: This conversion's plan digest.
        overwrite: Delete a shard of another conversion (and return ``None``) instead of
            raising.

    Raises:
        PlanMismatch: The shard was written by a different conversion (its side file
            names another plan) and ``overwrite`` is false.
    """
    path, meta_path = _shard_paths(out_dir, name)
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        return None
    meta = read_json(meta_path)
    # Side files written before plans were fingerprinted have no digest: trusted, as
    # plan.json (checked before) is this conversion's.
    found = meta.get("plan_sha256", digest)
    if found != digest:
        if overwrite:
            os.remove(path)
            os.remove(meta_path)
            return None
        raise PlanMismatch(
            f"{meta_path}: a shard of a different conversion (plan {found[:12]}, plan.json "
            f"{digest[:12]}): {out_dir} mixes slices of different conversions; run this "
            "shard's slice again with --overwrite, or convert into an empty folder")
    return meta


def _read_slices(out_dir: str, digest: str, remove_foreign: bool = False) -> list:
    """The slice files of ``out_dir`` as ``[(path, document), ...]``, sorted by name.

    Args:
        out_dir: Output folder.
        digest: This conversion's plan digest.
        remove_foreign: Delete slice files of another conversion instead of raising.

    Raises:
        PlanMismatch: A slice file belongs to another conversion (the message names it).
        ValueError: A slice file is not valid JSON (named).
    """
    found = []
    for path in sorted(glob.glob(os.path.join(out_dir, SLICES_DIR, "slice-*.json"))):
        document = read_json(path)
        if document.get("plan_sha256") != digest:
            if remove_foreign:
                os.remove(path)
                continue
            raise PlanMismatch(
                f"{path}: a slice of a different conversion (plan "
                f"{str(document.get('plan_sha256'))[:12]}, plan.json {digest[:12]}): "
                f"{out_dir} mixes slices of different conversions; run any slice again "
                "with --overwrite (it removes this file; shards of the other conversion "
                "are then refused by name), or convert into an empty folder")
        found.append((path, document))
    return found


def _claim(out_dir: str, plan: dict, digest: str, overwrite: bool) -> None:
    """Check that ``out_dir`` holds nothing of another conversion, then write the plan.

    Raises:
        PlanMismatch: ``plan.json`` or a slice file there is another conversion's and
            ``overwrite`` is false.
    """
    os.makedirs(out_dir, exist_ok=True)
    plan_path = os.path.join(out_dir, "plan.json")
    if os.path.exists(plan_path):
        old = read_json(plan_path)
        if old != plan:
            if not overwrite:
                raise PlanMismatch(
                    f"{out_dir}: holds a different conversion ({old.get('corpus')}, "
                    f"{sum(len(s['utterances']) for s in old.get('shards', []))} utterances, "
                    f"options {old.get('options')}); use another folder or --overwrite")
            for shard in old.get("shards", []):
                for stale in _shard_paths(out_dir, shard["name"]):
                    if os.path.exists(stale):
                        os.remove(stale)
            for name in ("stats.json", "skipped.tsv"):
                if os.path.exists(os.path.join(out_dir, name)):
                    os.remove(os.path.join(out_dir, name))
    _read_slices(out_dir, digest, remove_foreign=overwrite)
    write_json(plan_path, plan)


def _check_plan_unchanged(out_dir: str, digest: str) -> None:
    """Raise `PlanMismatch` when another job replaced ``plan.json`` while this one ran."""
    plan_path = os.path.join(out_dir, "plan.json")
    found = plan_digest(read_json(plan_path)) if os.path.exists(plan_path) else "none"
    if found != digest:
        raise PlanMismatch(
            f"{plan_path}: replaced by a different conversion (plan {found[:12]}) while "
            f"this job (plan {digest[:12]}) ran: two conversions write into {out_dir}; "
            "give each its own folder")


def _accumulate(out_dir: str, shards: list, digest: str) -> tuple:
    """Statistics over the side files of ``shards``, read one at a time in order.

    Returns:
        ``(CorpusCounts, FeatureMoments, [(path, reason), ...] skipped in the shards)``.

    Raises:
        ConversionIncomplete: A shard is not finished.
        PlanMismatch: A shard belongs to another conversion.
    """
    counts = stats.CorpusCounts()
    moments = stats.FeatureMoments(stats.DEFAULT_LOGMEL["n_mels"])
    skipped = []
    for shard in shards:
        meta = _finished_shard(out_dir, shard["name"], digest)
        if meta is None:
            raise ConversionIncomplete(f"{os.path.join(out_dir, shard['name'])}.tfrecord: "
                                       "not written yet")
        for record in meta["records"]:
            counts.add(record)
        moments.merge(stats.FeatureMoments.from_json(meta["logmel"]))
        skipped.extend(tuple(s) for s in meta["skipped"])
    return counts, moments, skipped


def _merge(out_dir: str, plan: dict, digest: str) -> Report:
    """Write ``stats.json`` and ``skipped.tsv`` of a finished conversion (see `merge`)."""
    slices = _read_slices(out_dir, digest)
    if not slices:
        raise ConversionIncomplete(
            f"{os.path.join(out_dir, SLICES_DIR)}: no finished slice; run the conversion "
            "(every --shard-index of --num-shards N) first; a folder converted before "
            "slices existed gets one by running its conversion command again (every "
            "finished shard is reused)")
    first_path, first = slices[0]
    for path, document in slices[1:]:
        if (document["reader_skipped"], document["filtered"]) != (first["reader_skipped"],
                                                                  first["filtered"]):
            raise ValueError(
                f"{path}: the reader skipped or filtered other files than {first_path} "
                "saw: the source folder changed between the jobs (or they read it at "
                "different paths); convert again")
    missing = [s["name"] for s in plan["shards"]
               if not all(map(os.path.exists, _shard_paths(out_dir, s["name"])))]
    if missing:
        done = ", ".join(f"{d['slice_index']} of {d['num_slices']}" for _, d in slices)
        raise ConversionIncomplete(
            f"{out_dir}: {len(missing)} of {len(plan['shards'])} shards not written yet "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); finished "
            f"slices: {done}; run the missing slices' jobs, then merge again")
    counts, moments, shard_skips = _accumulate(out_dir, plan["shards"], digest)
    skipped = [tuple(s) for s in first["reader_skipped"]] + shard_skips
    document = counts.document(moments, len(skipped), plan["corpus"])
    document["filtered"] = first["filtered"]
    write_json(os.path.join(out_dir, "stats.json"), document)
    write_text(os.path.join(out_dir, "skipped.tsv"), "path\treason\n" + "".join(
        f"{path}\t{reason}\n" for path, reason in skipped))
    return Report(out_dir, counts.records, skipped, 0, 0, document,
                  shards_total=len(plan["shards"]))


def _check_skips(report: Report, max_skipped: int | None) -> None:
    if max_skipped is None or len(report.skipped) <= max_skipped:
        return
    if report.merged:
        raise TooManySkipped(f"{len(report.skipped)} files skipped (limit {max_skipped}); "
                             f"see {os.path.join(report.out_dir, 'skipped.tsv')}")
    where = os.path.join(report.out_dir, SLICES_DIR,
                         _slice_name(report.slice_index, report.num_slices))
    raise TooManySkipped(f"slice {report.slice_index} of {report.num_slices}: already "
                         f"{len(report.skipped)} files skipped (limit {max_skipped}); "
                         f"see {where}")


def merge(out_dir: str, *, max_skipped: int | None = None) -> Report:
    """Write ``stats.json`` and ``skipped.tsv`` of a conversion whose shards are all done.

    The statistics are computed from the shards' side files read one at a time in plan
    order, and the reader's skips and filtered counts come from a slice file, exactly as
    at the end of a one-process conversion; the result is therefore identical however
    many jobs wrote the shards. `convert` calls this itself when it finds every shard
    finished; call it (``python -m tfrecords_tools merge OUT_DIR``) when the last jobs
    finished together, or on a file system that showed a job's shards late.

    Args:
        out_dir: The conversion's output folder.
        max_skipped: Raise `TooManySkipped` (after writing both files) when more source
            files than this were skipped; ``None`` allows any number.

    Returns:
        A `Report` (``shards_written`` and ``shards_reused`` 0).

    Raises:
        FileNotFoundError: No ``plan.json`` in ``out_dir``.
        ConversionIncomplete: No slice has finished, or shards are missing (the message
            names them and the finished slices).
        PlanMismatch: A slice file or shard belongs to a different conversion (named).
        ValueError: ``plan.json`` or a side file is not valid JSON, or two slices saw
            different reader skips (the source changed between jobs).
        TooManySkipped: See ``max_skipped``.
    """
    plan_path = os.path.join(out_dir, "plan.json")
    if not os.path.isfile(plan_path):
        raise FileNotFoundError(f"{plan_path}: missing; {out_dir} is not a conversion "
                                "folder (or no job of it has started)")
    plan = read_json(plan_path)
    report = _merge(out_dir, plan, plan_digest(plan))
    _check_skips(report, max_skipped)
    return report


def convert(reader, src_dir: str, out_dir: str, *, shard_size: int = 256,
            sample_rate: int = SAMPLE_RATE, textgrid_dirs: tuple = (),
            chunk_seconds: float | None = None, max_skipped: int | None = None,
            overwrite: bool = False, progress: bool = True, num_slices: int = 1,
            slice_index: int = 0, workers: int = 1) -> Report:
    """Convert a corpus, or one slice of it, to TFRecord shards.

    Every job scans the whole corpus and computes the same plan; slice ``slice_index``
    of ``num_slices`` writes the shards ``k`` with ``k % num_slices == slice_index``
    (`slice_shards`) and its slice file. When every shard of the plan is then finished
    (this was the last slice to end, or the only one), `merge` writes ``stats.json``
    and ``skipped.tsv``. The records, side files and both reports are identical to
    those of a one-process conversion (see the module docstring).

    Args:
        reader: A `tfrecords_tools.reader.Reader`.
        src_dir: The corpus folder as released (or a manifest file, for readers that
            take one; paths are then relative to its folder).
        out_dir: Output folder (created).
        shard_size: Source utterances per shard.
        sample_rate: Output rate, Hz.
        textgrid_dirs: Folders searched (besides ``src_dir``, recursively) for
            ``<stem>.TextGrid`` word alignments of utterances the reader gives no segments
            for; without one, segments are energy-based voiced regions.
        chunk_seconds: Cut recordings longer than this into chunks (seconds); ``None``
            uses the reader's default (e.g. AMI meetings), ``0`` never cuts.
        max_skipped: Raise `TooManySkipped` (after writing everything and the report)
            when more files than this are skipped; ``None`` allows any number. A slice
            that does not merge raises when the skips it saw already exceed it.
        overwrite: Delete shards of a different earlier conversion (and its slice
            files, and shards of another conversion among this slice's) instead of
            failing. Do not use it while jobs of the new conversion are running.
        progress: Show a tqdm progress bar (one step per source utterance; per shard
            with ``workers`` above 1).
        num_slices: Slices the conversion is split into (independent jobs).
        slice_index: The slice this call converts, ``0 .. num_slices - 1``.
        workers: Processes writing this slice's shards (``0``: one per CPU core), one
            shard per task; spawned (a script calling this needs the usual ``if __name__
            == "__main__":`` guard), each imports TensorFlow (about 0.6 GB each). Every
            process converts with one BLAS/OpenMP thread (`one_thread_per_process`).

    Returns:
        A `Report`; ``merged`` tells whether ``stats`` covers the whole conversion.

    Raises:
        FileNotFoundError: ``src_dir`` is not the corpus (from the reader).
        PlanMismatch: ``out_dir`` holds another conversion (its ``plan.json``, a slice
            file or a shard) and ``overwrite`` is false, or another job replaced the
            plan meanwhile.
        ValueError: Two utterances share an id, the corpus yields nothing, or a bad
            ``shard_size``, ``num_slices``, ``slice_index`` or ``workers``.
        TooManySkipped: See ``max_skipped``.
    """
    from tqdm import tqdm

    check_slice(num_slices, slice_index)
    workers = resolve_workers(workers)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    reader.reset()
    # Utterances are kept pickled (about 0.5 kB each instead of 2 kB as objects) until
    # the plan says which ones this job converts.
    utterances, reader_skips = [], []
    for item in reader.scan(src_dir):
        if isinstance(item, Utterance):
            utterances.append((item.utterance_id, pickle.dumps(item, pickle.HIGHEST_PROTOCOL)))
        elif isinstance(item, Skipped):
            reader_skips.append((item.path, item.reason))
    src_root = src_dir if os.path.isdir(src_dir) else os.path.dirname(os.path.abspath(src_dir))
    utterances.sort(key=lambda entry: entry[0])
    ids = [utterance_id for utterance_id, _ in utterances]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, n in collections.Counter(ids).items() if n > 1)[:5]
        raise ValueError(f"{src_dir}: duplicate utterance ids {dup}")
    if not utterances:
        raise ValueError(f"{src_dir}: no {reader.name} utterances found "
                         f"({len(reader_skips)} files skipped)")
    if chunk_seconds is None:
        chunk_seconds = reader.chunk_seconds
    chunk_seconds = chunk_seconds or None

    n_shards = max(1, -(-len(utterances) // shard_size))
    plan = {
        "format_version": 1, "corpus": reader.name, "options": reader.options_summary(),
        "sample_rate": sample_rate, "chunk_seconds": chunk_seconds,
        "textgrid_dirs": [os.path.abspath(d) for d in textgrid_dirs],
        "shards": [{"name": _shard_name(reader.name, i, n_shards),
                    "utterances": ids[i * shard_size:(i + 1) * shard_size]}
                   for i in range(n_shards)],
    }
    del ids
    digest = plan_digest(plan)
    _claim(out_dir, plan, digest, overwrite)

    mine = slice_shards(plan["shards"], num_slices, slice_index)
    todo = [s for s in mine if _finished_shard(out_dir, s["name"], digest, overwrite) is None]
    wanted = {i for s in todo for i in s["utterances"]}
    # Only the utterances of the shards still to write are kept (one slice's share).
    by_id = {i: pickle.loads(blob) for i, blob in utterances if i in wanted}
    del utterances, wanted
    for u in by_id.values():
        u.path = os.path.relpath(u.audio_path, src_root)
    tasks = [(*_shard_paths(out_dir, s["name"]), [by_id.pop(i) for i in s["utterances"]],
              digest) for s in todo]
    reused = len(mine) - len(todo)
    bar = tqdm(total=sum(len(s["utterances"]) for s in mine), unit="utt",
               desc=f"{reader.name} -> TFRecord", disable=not progress)
    with bar:
        bar.update(sum(len(s["utterances"]) for s in mine) -
                   sum(len(items) for _, _, items, _ in tasks))
        if tasks:
            textgrids = audio.textgrid_index([src_root, *textgrid_dirs])
            processes = min(workers, len(tasks))
            if processes == 1:
                with one_thread_per_process():
                    for path, meta_path, items, _ in tasks:
                        _write_shard(path, meta_path, items, sample_rate, textgrids,
                                     chunk_seconds, bar, digest)
            else:
                context = multiprocessing.get_context("spawn")
                with context.Pool(processes, initializer=_init_worker,
                                  initargs=(sample_rate, textgrids, chunk_seconds)) as pool:
                    for size in pool.imap_unordered(_write_shard_task, tasks):
                        bar.update(size)
                    pool.close()
                    pool.join()
    del tasks, by_id

    _check_plan_unchanged(out_dir, digest)
    counts, moments, shard_skips = _accumulate(out_dir, mine, digest)
    partial = counts.document(moments, len(shard_skips), reader.name)
    filtered = dict(sorted(reader.filtered.items()))
    partial["filtered"] = filtered
    write_json(os.path.join(out_dir, SLICES_DIR, _slice_name(slice_index, num_slices)), {
        "format_version": 1, "plan_sha256": digest, "corpus": reader.name,
        "slice_index": slice_index, "num_slices": num_slices,
        "shards": [s["name"] for s in mine], "shards_written": len(todo),
        "shards_reused": reused, "reader_skipped": reader_skips, "filtered": filtered,
        "skipped": shard_skips, "stats": partial})

    missing = sum(1 for s in plan["shards"]
                  if not all(map(os.path.exists, _shard_paths(out_dir, s["name"]))))
    if missing:
        report = Report(out_dir, counts.records, reader_skips + shard_skips, len(todo),
                        reused, partial, merged=False, shards_missing=missing)
    else:
        report = _merge(out_dir, plan, digest)
        report.shards_written, report.shards_reused = len(todo), reused
    report.slice_index, report.num_slices, report.shards_total = (slice_index, num_slices,
                                                                  n_shards)
    _check_skips(report, max_skipped)
    return report


def records_for(corpus: str, src: str, out_dir: str, progress: bool = True,
                options: dict | None = None) -> str:
    """A record folder for a recipe: ``src`` itself when it already is one, else converted.

    Args:
        corpus: Reader name (`tfrecords_tools.reader.get_reader`), e.g. ``"emodb"`` or
            ``"speech"`` for any folder of unlabelled audio, or ``"master"`` for the
            merged acted corpora (`tfrecords_tools.master.convert_master`).
        src: A corpus folder as released (for ``"master"``, the folder of corpus
            folders), or a record folder written by `convert` or `convert_master`
            (recognised by its ``stats.json`` and ``plan.json``).
        out_dir: Run folder; conversions go to ``<out_dir>/records/<corpus>``.
        progress: Show the converter's progress bar.
        options: Reader options the recipe needs (e.g. ``{"merge_excited": True}``;
            for ``"master"``, keyword arguments of `convert_master` such as
            ``{"keep_boredom": True}``).

    Returns:
        The record folder.

    Raises:
        KeyError: Unknown reader name.
        ValueError: ``src`` is a record folder converted with other ``options`` (the
            message names them and the conversion command to use), or ``src`` of
            ``"master"`` holds a folder that is not a corpus.
        OSError, RuntimeError: From the reader or `convert` (a missing folder,
            unreadable audio, too many skipped files); the message names the file.
    """
    options = dict(options or {})
    plan_path = os.path.join(src, "plan.json")
    if os.path.isfile(os.path.join(src, "stats.json")) and os.path.isfile(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            used = json.load(f).get("options", {})
        differ = {k: v for k, v in options.items() if used.get(k) != v}
        if differ:
            flags = " ".join(f"--{k.replace('_', '-')}" for k, v in differ.items() if v is True)
            raise ValueError(f"{src}: records converted with options {used}, but this recipe "
                             f"needs {differ}; convert again with `python -m tfrecords_tools "
                             f"{corpus} SRC OUT {flags}` or pass the corpus folder")
        return src
    from tfrecords_tools import reader as treader

    target = os.path.join(out_dir, "records", corpus)
    print(f"converting {src} ({corpus}) -> {target}")
    if corpus == "master":
        from tfrecords_tools.master import convert_master

        report = convert_master(src, target, progress=progress, **options)
    else:
        report = convert(treader.get_reader(corpus, **options), src, target, progress=progress)
    print(f"  {report.records} records, {len(report.skipped)} skipped")
    return target
