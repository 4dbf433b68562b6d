"""Sharded, atomic, resumable TFRecord writing for any corpus reader.

Layout of an output folder::

    OUT_DIR/plan.json                     which utterances go to which shard, and options
    OUT_DIR/<corpus>-00000-of-00003.tfrecord
    OUT_DIR/<corpus>-00000-of-00003.json  per-record metadata and skips of that shard
    OUT_DIR/stats.json                    counts, hours, log-mel statistics
    OUT_DIR/skipped.tsv                   path <TAB> reason, one line per skipped file

A shard and its metadata are written under ``*.tmp`` names and renamed when complete, so
an interrupted conversion never leaves a half-written shard; re-running the same command
skips the shards that are finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from keras_ser.io import write_json, write_text
from tfrecords_tools import audio, stats
from tfrecords_tools.schema import SAMPLE_RATE, Skipped, Utterance, serialize

#: Audio shorter than this (one default analysis window, 32 ms) is skipped as too short.
MIN_SAMPLES = stats.DEFAULT_LOGMEL["window_samples"]
#: A final chunk shorter than this many seconds is merged into the previous chunk.
MIN_CHUNK_S = 1.0


class TooManySkipped(RuntimeError):
    """More source files were skipped than ``max_skipped`` allows."""


class PlanMismatch(RuntimeError):
    """OUT_DIR holds shards of a different conversion (other corpus, files or options)."""


@dataclasses.dataclass
class Report:
    """What a conversion did.

    Attributes:
        out_dir: Output folder.
        records: Records in all shards.
        skipped: ``[(path, reason), ...]`` for every source file not converted.
        shards_written: Shards written by this call.
        shards_reused: Finished shards found from an earlier call and kept.
        stats: The ``stats.json`` document.
    """

    out_dir: str
    records: int
    skipped: list
    shards_written: int
    shards_reused: int
    stats: dict


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
            labels: list, chunk_seconds: Optional[float]):
    """Yield ``(utterance, first_sample, end_sample, segments, labels)`` per chunk.

    Chunks are ``chunk_seconds`` long; a last chunk under `MIN_CHUNK_S` joins the one
    before. Segments are clipped to each chunk and shifted to its start.
    """
    if not chunk_seconds or num_samples <= chunk_seconds * sample_rate:
        yield utt, 0, num_samples, segments, labels
        return
    step = int(round(chunk_seconds * sample_rate))
    bounds = list(range(0, num_samples, step)) + [num_samples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_CHUNK_S * sample_rate:
        del bounds[-2]
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        t0, t1 = lo / sample_rate, hi / sample_rate
        inside = [((max(s, t0) - t0, min(e, t1) - t0), lab)
                  for (s, e), lab in zip(segments, labels) if e > t0 and s < t1]
        inside = [(seg, lab) for seg, lab in inside if seg[1] > seg[0]]
        chunk = dataclasses.replace(utt, utterance_id=f"{utt.utterance_id}_c{k:04d}")
        yield chunk, lo, hi, [seg for seg, _ in inside], [lab for _, lab in inside]


def _convert_one(utt: Utterance, sample_rate: int, textgrids: dict,
                 chunk_seconds: Optional[float]):
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


def _write_shard(path: str, meta_path: str, items: list, sample_rate: int,
                 textgrids: dict, chunk_seconds, progress) -> dict:
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
                out.write(serialize(piece, pcm, sample_rate))
                moments.add(stats.log_mel_librosa(pcm.astype(np.float32) / 32768.0))
                records.append({
                    "utterance_id": piece.utterance_id, "speaker": piece.speaker,
                    "session": piece.session, "gender": piece.gender,
                    "emotion": piece.emotion, "duration_s": pcm.shape[0] / sample_rate,
                    "segments": len(piece.segments), "segment_kind": piece.segment_kind,
                })
            progress.update(1)
    write_json(meta_path, {"records": records, "skipped": skipped,
                           "logmel": moments.to_json()})
    os.replace(tmp, path)
    return {"records": records, "skipped": skipped, "logmel": moments.to_json()}


def convert(reader, src_dir: str, out_dir: str, *, shard_size: int = 256,
            sample_rate: int = SAMPLE_RATE, textgrid_dirs: tuple = (),
            chunk_seconds: Optional[float] = None, max_skipped: Optional[int] = None,
            overwrite: bool = False, progress: bool = True) -> Report:
    """Convert a corpus to TFRecord shards.

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
            when more files than this are skipped; ``None`` allows any number.
        overwrite: Delete shards of a different earlier conversion instead of failing.
        progress: Show a tqdm progress bar (one step per source utterance).

    Returns:
        A `Report`.

    Raises:
        FileNotFoundError: ``src_dir`` is not the corpus (from the reader).
        PlanMismatch: ``out_dir`` holds another conversion and ``overwrite`` is false.
        ValueError: Two utterances share an id, or the corpus yields nothing.
        TooManySkipped: See ``max_skipped``.
    """
    from tqdm import tqdm

    reader.reset()
    found = list(reader.scan(src_dir))
    src_root = src_dir if os.path.isdir(src_dir) else os.path.dirname(os.path.abspath(src_dir))
    utterances = sorted((u for u in found if isinstance(u, Utterance)),
                        key=lambda u: u.utterance_id)
    reader_skips = [(s.path, s.reason) for s in found if isinstance(s, Skipped)]
    ids = [u.utterance_id for u in utterances]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{src_dir}: duplicate utterance ids {dup}")
    if not utterances:
        raise ValueError(f"{src_dir}: no {reader.name} utterances found "
                         f"({len(reader_skips)} files skipped)")
    for u in utterances:
        u.path = os.path.relpath(u.audio_path, src_root)
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
    os.makedirs(out_dir, exist_ok=True)
    plan_path = os.path.join(out_dir, "plan.json")
    if os.path.exists(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != plan:
            if not overwrite:
                raise PlanMismatch(
                    f"{out_dir}: holds a different conversion ({old.get('corpus')}, "
                    f"{sum(len(s['utterances']) for s in old.get('shards', []))} utterances, "
                    f"options {old.get('options')}); use another folder or --overwrite")
            for shard in old.get("shards", []):
                for ext in (".tfrecord", ".json"):
                    p = os.path.join(out_dir, shard["name"] + ext)
                    if os.path.exists(p):
                        os.remove(p)
    write_json(plan_path, plan)

    by_id = {u.utterance_id: u for u in utterances}
    metas, written, reused, textgrids = [], 0, 0, None
    bar = tqdm(total=len(utterances), unit="utt", desc=f"{reader.name} -> TFRecord",
               disable=not progress)
    with bar:
        for shard in plan["shards"]:
            path = os.path.join(out_dir, shard["name"] + ".tfrecord")
            meta_path = os.path.join(out_dir, shard["name"] + ".json")
            if os.path.exists(path) and os.path.exists(meta_path):
                with open(meta_path, encoding="utf-8") as f:
                    metas.append(json.load(f))
                bar.update(len(shard["utterances"]))
                reused += 1
                continue
            items = [by_id[i] for i in shard["utterances"]]
            if textgrids is None:
                textgrids = audio.textgrid_index([src_root, *textgrid_dirs])
            metas.append(_write_shard(path, meta_path, items, sample_rate, textgrids,
                                      chunk_seconds, bar))
            written += 1

    records = [r for m in metas for r in m["records"]]
    skipped = reader_skips + [tuple(s) for m in metas for s in m["skipped"]]
    moments = stats.FeatureMoments(stats.DEFAULT_LOGMEL["n_mels"])
    for m in metas:
        moments.merge(stats.FeatureMoments.from_json(m["logmel"]))
    document = stats.corpus_stats(records, moments, len(skipped), reader.name)
    document["filtered"] = dict(sorted(reader.filtered.items()))
    write_json(os.path.join(out_dir, "stats.json"), document)
    tsv = os.path.join(out_dir, "skipped.tsv")
    write_text(tsv, "path\treason\n" + "".join(
        f"{path}\t{reason}\n" for path, reason in skipped))
    report = Report(out_dir, len(records), skipped, written, reused, document)
    if max_skipped is not None and len(skipped) > max_skipped:
        raise TooManySkipped(f"{len(skipped)} files skipped (limit {max_skipped}); "
                             f"see {tsv}")
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
