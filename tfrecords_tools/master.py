"""The "master dataset": RAVDESS, TESS, SAVEE and CREMA-D merged into one record set.

Source: NITK report (Gourishetty, Athrey & Bharath, "Audio Data Augmentation using
GANs", NIT Karnataka, 2021), Sec. 5.1. The four corpora are combined into one "master
dataset" of seven emotions (neutral, happiness, sadness, anger, fear, disgust,
surprise); RAVDESS contributes its speech files only and its calm class is treated as
neutral (item 1); Figure 13 counts the 14 gender × emotion classes (female_angry 1105
... male_surprise 156). EmoDB may be added as a fifth corpus (our choice; the report
does not use it).

Layout::

    SRC/ravdess  SRC/tess  SRC/savee  SRC/cremad  [SRC/emodb]   each as released
    OUT/corpora/<name>/                each corpus converted by its own reader
    OUT/plan.json                      options, corpora, which record goes to which shard
    OUT/master-00000-of-00002.tfrecord the merged records (schema of `tfrecords_tools.schema`)
    OUT/master-00000-of-00002.json     per-record metadata and log-mel sums of that shard
    OUT/stats.json                     as for one corpus, plus gender_emotion and corpora
    OUT/skipped.tsv                    the files the corpora's conversions skipped

In a merged record ``corpus`` is the corpus name; ``utterance_id``, ``speaker`` and
``session`` carry the corpus name as a prefix (``ravdess_01``), so they are unique
across corpora (RAVDESS actor 03 and EmoDB speaker 03 are different people); ``path``
is relative to SRC; ``emotion`` is the master label (`master_emotion`). Every other
field, the samples included, is copied unchanged.

Each corpus is converted with `tfrecords_tools.writer.convert` (atomic, resumable
shards) and the merge writes its shards the same way, so re-running the command reuses
everything already finished.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from keras_ser.io import atomic_write, read_json, write_json, write_text
from tfrecords_tools import stats, writer
from tfrecords_tools.reader import get_reader
from tfrecords_tools.schema import SAMPLE_RATE

#: Name of the merged set: its shards' prefix and the ``corpus`` of its ``stats.json``.
NAME = "master"
#: One line for ``--help``.
DESCRIPTION = ("NITK master dataset: SRC_DIR/ravdess, tess, savee, cremad [, emodb] "
               "merged, 7 emotions")
#: Sub-folder names SRC_DIR may hold, each the reader that converts it.
CORPORA = ("ravdess", "tess", "savee", "cremad", "emodb")
#: The seven emotions of the master dataset (NITK report Sec. 5.1), as schema words.
EMOTIONS = ("neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise")
#: Corpus labels counted as another master label (Sec. 5.1 item 1: calm as neutral).
MERGED_LABELS = {"calm": "neutral"}
#: EmoDB's extra class, kept only on request (not in the report's seven; our choice).
BOREDOM = "boredom"
#: The genders of the gender × emotion classes (the schema's ``""`` is unknown).
GENDERS = ("female", "male")
#: The 14 gender × emotion classes of Figure 13 in schema words: ``female_anger`` is the
#: report's ``female_angry``, ``male_happiness`` its ``male_happy``, and so on.
GENDER_EMOTION_CLASSES = tuple(f"{g}_{e}" for g in GENDERS for e in EMOTIONS)


@dataclasses.dataclass
class MasterReport(writer.Report):
    """What `convert_master` did: a `tfrecords_tools.writer.Report` of the merged set.

    Attributes:
        corpora: Corpus name -> the `tfrecords_tools.writer.Report` of its conversion
            into ``OUT/corpora/<name>``.
    """

    corpora: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Entry:
    """One merged record: where its source record is and its metadata in the merged set."""

    source: str
    source_id: str
    meta: dict


def master_emotion(emotion: str, keep_boredom: bool = False) -> str | None:
    """The master-dataset label of a corpus label.

    Args:
        emotion: A label of `tfrecords_tools.schema.EMOTIONS` as a reader gives it, or
            ``""`` when unlabelled.
        keep_boredom: Keep EmoDB's boredom as an eighth label (our choice; the report
            has no EmoDB).

    Returns:
        One of `EMOTIONS` (calm becomes neutral, NITK report Sec. 5.1 item 1),
        ``"boredom"`` when kept, or ``None`` when the record is left out of the master
        dataset (any other label, e.g. contempt, and unlabelled records).
    """
    emotion = MERGED_LABELS.get(emotion, emotion)
    if emotion in EMOTIONS or (keep_boredom and emotion == BOREDOM):
        return emotion
    return None


def gender_emotion(gender: str, emotion: str) -> str:
    """The gender × emotion class of a record, as counted in NITK report Figure 13.

    Args:
        gender: ``"female"``, ``"male"`` or ``""`` (unknown).
        emotion: A master label (`master_emotion`), or ``""``.

    Returns:
        ``"<gender>_<emotion>"``, e.g. ``"female_anger"`` (one of
        `GENDER_EMOTION_CLASSES` for the seven emotions), or ``""`` when the gender is
        unknown or the record unlabelled: such records have no class.
    """
    if gender not in GENDERS or not emotion:
        return ""
    return f"{gender}_{emotion}"


def find_corpora(src_dir: str) -> dict:
    """The corpus folders of SRC_DIR.

    Folders whose names start with ``.`` and plain files are ignored (our choice).

    Args:
        src_dir: Folder holding one sub-folder per corpus, named after its reader.

    Returns:
        Dict from corpus name to its folder, in sorted name order.

    Raises:
        FileNotFoundError: ``src_dir`` is not a folder.
        ValueError: A sub-folder is not named after one of `CORPORA`, or there is no
            corpus folder; the message names the folders and the accepted names.
    """
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"{src_dir}: no such folder")
    names = sorted(n for n in os.listdir(src_dir)
                   if not n.startswith(".") and os.path.isdir(os.path.join(src_dir, n)))
    unknown = [n for n in names if n not in CORPORA]
    if unknown:
        raise ValueError(f"{src_dir}: sub-folder(s) {', '.join(repr(n) for n in unknown)} "
                         f"not a corpus; accepted names: {', '.join(CORPORA)}")
    if not names:
        raise ValueError(f"{src_dir}: no corpus folder; expected one or more of "
                         f"{', '.join(CORPORA)}")
    return {n: os.path.join(src_dir, n) for n in names}


def _prefixed(corpus: str, value: str) -> str:
    # An empty speaker or session stays empty: "unknown" must not become a speaker.
    return f"{corpus}_{value}" if value else ""


def _previous_plan(out_dir: str, plan: dict, overwrite: bool) -> dict | None:
    """The ``plan.json`` in ``out_dir`` when it differs from ``plan`` in a key ``plan``
    has, else ``None``.

    Raises:
        tfrecords_tools.writer.PlanMismatch: It differs and ``overwrite`` is false.
    """
    path = os.path.join(out_dir, "plan.json")
    old = read_json(path) if os.path.isfile(path) else None
    if old is None or all(old.get(k) == v for k, v in plan.items()):
        return None
    if not overwrite:
        raise writer.PlanMismatch(
            f"{out_dir}: holds a different conversion ({old.get('corpus')}, options "
            f"{old.get('options')}, corpora {old.get('corpora')}); use another folder "
            "or --overwrite")
    return old


def _entries(name: str, folder: str, keep_boredom: bool) -> tuple:
    """The records of one converted corpus that enter the master set, and the drops.

    Returns:
        ``([_Entry, ...], {dropped label: count})`` in the corpus's shard order.
    """
    entries, dropped = [], collections.Counter()
    for shard in read_json(os.path.join(folder, "plan.json"))["shards"]:
        source = os.path.join(folder, shard["name"] + ".tfrecord")
        for meta in read_json(os.path.join(folder, shard["name"] + ".json"))["records"]:
            emotion = master_emotion(meta["emotion"], keep_boredom)
            if emotion is None:
                dropped[meta["emotion"] or "unlabelled"] += 1
                continue
            entries.append(_Entry(source, meta["utterance_id"], {
                **meta, "corpus": name,
                "utterance_id": _prefixed(name, meta["utterance_id"]),
                "speaker": _prefixed(name, meta["speaker"]),
                "session": _prefixed(name, meta["session"]),
                "emotion": emotion,
                "gender_emotion": gender_emotion(meta["gender"], emotion)}))
    return entries, dict(sorted(dropped.items()))


def _counts(records: list, skipped: int, moments, corpus: str) -> dict:
    """`tfrecords_tools.stats.corpus_stats` plus the gender × emotion counts."""
    document = stats.corpus_stats(records, moments, skipped, corpus)
    document["gender_emotion"] = dict(sorted(
        collections.Counter(r["gender_emotion"] for r in records).items()))
    return document


def _write_shard(path: str, meta_path: str, entries: list) -> dict:
    """Copy the entries' source records with their master fields into one shard.

    The side file is written first and the shard renamed into place last (as
    `tfrecords_tools.writer` does), so a shard present is complete.

    Returns:
        The side file's document: ``records`` (metadata) and ``logmel`` (sums).
    """
    import tensorflow as tf

    wanted = {(e.source, e.source_id): e.meta for e in entries}
    records, moments = [], stats.FeatureMoments(stats.DEFAULT_LOGMEL["n_mels"])

    def write(tmp):
        with tf.io.TFRecordWriter(tmp) as out:
            # Entries are in source order, so reading each source shard once in that
            # order writes the records in the plan's order.
            for source in dict.fromkeys(e.source for e in entries):
                for raw in tf.data.TFRecordDataset(source):
                    example = tf.train.Example.FromString(raw.numpy())
                    fields = example.features.feature
                    source_id = fields["utterance_id"].bytes_list.value[0].decode("utf-8")
                    meta = wanted.get((source, source_id))
                    if meta is None:
                        continue
                    path_in_corpus = fields["path"].bytes_list.value[0].decode("utf-8")
                    for key, value in (("corpus", meta["corpus"]),
                                       ("utterance_id", meta["utterance_id"]),
                                       ("speaker", meta["speaker"]),
                                       ("session", meta["session"]),
                                       ("emotion", meta["emotion"]),
                                       ("path", f"{meta['corpus']}/{path_in_corpus}")):
                        fields[key].bytes_list.value[:] = [value.encode("utf-8")]
                    out.write(example.SerializeToString())
                    pcm = np.frombuffer(fields["pcm"].bytes_list.value[0], dtype="<i2")
                    moments.add(stats.log_mel_librosa(pcm.astype(np.float32) / 32768.0))
                    records.append(meta)
        write_json(meta_path, {"records": records, "logmel": moments.to_json()})

    atomic_write(path, write)
    return {"records": records, "logmel": moments.to_json()}


def convert_master(src_dir: str, out_dir: str, *, keep_boredom: bool = False,
                   include_song: bool = False, shard_size: int = 256,
                   sample_rate: int = SAMPLE_RATE, max_skipped: int | None = None,
                   overwrite: bool = False, progress: bool = True,
                   workers: int = 1) -> MasterReport:
    """Convert the corpora of ``src_dir`` and merge them into the master dataset.

    Source: NITK report Sec. 5.1 (the corpora, seven emotions, calm as neutral, speech
    only) and Figure 13 (gender × emotion counts). Each corpus goes to
    ``out_dir/corpora/<name>`` with its reader, then the records with a master label
    are written, relabelled and with corpus-prefixed ids, to ``out_dir`` (layout in the
    module docstring). Everything is written atomically; a second call with the same
    arguments reuses every finished shard.

    Args:
        src_dir: Folder holding ``ravdess``, ``tess``, ``savee``, ``cremad`` and/or
            ``emodb``, each as released (see `find_corpora` and the readers).
        out_dir: Output folder (created).
        keep_boredom: Keep EmoDB's boredom records as an eighth label (our choice;
            dropped by default since the report has seven emotions).
        include_song: Also convert RAVDESS's sung files (the report uses speech only).
        shard_size: Source utterances per shard of each corpus and records per shard
            of the merged set (our choice, as for one corpus).
        sample_rate: Output rate, Hz.
        max_skipped: Raise `tfrecords_tools.writer.TooManySkipped` (after writing
            everything) when more source files than this are skipped in all corpora
            together; ``None`` allows any number.
        overwrite: Replace a different earlier conversion in ``out_dir`` (and in its
            ``corpora`` folders) instead of failing.
        progress: Show tqdm progress bars (per corpus, then the merge).
        workers: Processes converting each corpus (``0``: one per CPU core; see
            `tfrecords_tools.writer.convert`); the merge runs in this process.

    Returns:
        A `MasterReport`. Its ``stats`` (also ``out_dir/stats.json``) has the keys of
        a single corpus's ``stats.json`` (`tfrecords_tools.stats.corpus_stats` plus
        ``filtered``) over the merged records, with ``corpus`` ``"master"``, and:

        - ``gender_emotion``: records per gender × emotion class (Figure 13), records
          of unknown gender under ``""``;
        - ``corpora``: per corpus name, ``records``, ``hours``, ``skipped`` and the
          ``emotion``, ``speaker``, ``session``, ``gender`` and ``gender_emotion``
          counts of its merged records, its reader's ``filtered`` counts (e.g.
          ``song``) and ``dropped``: records left out for their label, by label
          (``"unlabelled"`` for none).

        ``filtered`` sums the corpora's ``filtered`` and ``dropped`` counts.

    Raises:
        FileNotFoundError: ``src_dir`` is not a folder, or a corpus folder is not
            that corpus (from its reader; the message names the path).
        ValueError: An unknown sub-folder or none (see `find_corpora`), a corpus with
            no utterance, no record with a master label, or a negative ``workers``.
        tfrecords_tools.writer.PlanMismatch: ``out_dir`` (or one of its ``corpora``
            folders) holds a different conversion and ``overwrite`` is false.
        tfrecords_tools.writer.TooManySkipped: See ``max_skipped``.
    """
    from tqdm import tqdm

    found = find_corpora(src_dir)
    head = {"format_version": 1, "corpus": NAME,
            "options": {"include_song": include_song, "keep_boredom": keep_boredom},
            "sample_rate": sample_rate, "corpora": list(found),
            "emotions": list(EMOTIONS), "merged_labels": dict(MERGED_LABELS)}
    # Checked before converting anything, so that a folder holding something else
    # (another corpus, other options) is not filled with corpora it does not want.
    _previous_plan(out_dir, head, overwrite)

    reports, entries, summaries = {}, [], {}
    for name, folder in found.items():
        options = {"include_song": include_song} if name == "ravdess" else {}
        report = writer.convert(get_reader(name, **options), folder,
                                os.path.join(out_dir, "corpora", name),
                                shard_size=shard_size, sample_rate=sample_rate,
                                overwrite=overwrite, progress=progress, workers=workers)
        kept, dropped = _entries(name, report.out_dir, keep_boredom)
        summary = _counts([e.meta for e in kept], len(report.skipped),
                          stats.FeatureMoments(0), name)
        summaries[name] = {
            **{k: summary[k] for k in ("records", "hours", "skipped", "emotion", "speaker",
                                       "session", "gender", "gender_emotion")},
            "filtered": report.stats["filtered"], "dropped": dropped}
        reports[name] = report
        entries.extend(kept)
    if not entries:
        raise ValueError(f"{src_dir}: no record has one of the master labels "
                         f"{', '.join(EMOTIONS)}")

    ids = [e.meta["utterance_id"] for e in entries]
    n_shards = -(-len(entries) // shard_size)
    plan = {**head, "shards": [
        {"name": writer._shard_name(NAME, i, n_shards),
         "utterances": ids[i * shard_size:(i + 1) * shard_size]} for i in range(n_shards)]}
    old = _previous_plan(out_dir, plan, overwrite)
    for shard in (old or {}).get("shards", []):
        for ext in (".tfrecord", ".json"):
            stale = os.path.join(out_dir, shard["name"] + ext)
            if os.path.exists(stale):
                os.remove(stale)
    write_json(os.path.join(out_dir, "plan.json"), plan)

    metas, written, reused = [], 0, 0
    with tqdm(total=len(entries), unit="rec", desc=f"{NAME} merge",
              disable=not progress) as bar:
        for i, shard in enumerate(plan["shards"]):
            path = os.path.join(out_dir, shard["name"] + ".tfrecord")
            meta_path = os.path.join(out_dir, shard["name"] + ".json")
            if os.path.exists(path) and os.path.exists(meta_path):
                metas.append(read_json(meta_path))
                reused += 1
            else:
                metas.append(_write_shard(path, meta_path,
                                          entries[i * shard_size:(i + 1) * shard_size]))
                written += 1
            bar.update(len(shard["utterances"]))

    records = [r for m in metas for r in m["records"]]
    moments = stats.FeatureMoments(stats.DEFAULT_LOGMEL["n_mels"])
    for m in metas:
        moments.merge(stats.FeatureMoments.from_json(m["logmel"]))
    skipped = [tuple(s) for r in reports.values() for s in r.skipped]
    document = _counts(records, len(skipped), moments, NAME)
    filtered = collections.Counter()
    for summary in summaries.values():
        filtered.update(summary["filtered"])
        filtered.update(summary["dropped"])
    document["filtered"] = dict(sorted(filtered.items()))
    document["corpora"] = summaries
    write_json(os.path.join(out_dir, "stats.json"), document)
    tsv = os.path.join(out_dir, "skipped.tsv")
    write_text(tsv, "path\treason\n" + "".join(
        f"{path}\t{reason}\n" for path, reason in skipped))
    report = MasterReport(out_dir, len(records), skipped, written, reused, document,
                          corpora=reports)
    if max_skipped is not None and len(skipped) > max_skipped:
        raise writer.TooManySkipped(f"{len(skipped)} files skipped (limit {max_skipped}); "
                                    f"see {tsv}")
    return report
