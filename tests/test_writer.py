"""The converter: EmoDB whole, exact samples, atomic shards, resuming, refusing, reporting."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import tensorflow as tf
from helpers import write_corrupt, write_tone

from tfrecords_tools import audio, writer
from tfrecords_tools.reader import get_reader
from tfrecords_tools.schema import read_example

EMODB_COUNTS = {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71,
                "neutral": 79, "sadness": 62}


def _records(out):
    files = sorted(glob.glob(os.path.join(out, "*.tfrecord")))
    return [read_example(raw.numpy()) for raw in tf.data.TFRecordDataset(files)]


@pytest.mark.real_data
def test_emodb_converts_whole_with_the_release_counts_and_no_skips(emodb_records):
    out, report = emodb_records
    assert report.records == 535 and report.skipped == []
    stats = report.stats
    assert stats["emotion"] == EMODB_COUNTS
    assert len(stats["speaker"]) == 10
    assert {s: v["gender"] for s, v in stats["speakers"].items()} == {
        "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
        "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
    assert stats["hours"] == pytest.approx(0.413, abs=0.001)
    with open(os.path.join(out, "skipped.tsv"), encoding="utf-8") as f:
        assert f.read() == "path\treason\n"


@pytest.mark.real_data
def test_emodb_syllable_segments_lie_inside_each_utterance(emodb_records):
    out, _ = emodb_records
    records = _records(out)
    assert len(records) == 535
    for r in records:
        duration = r["num_samples"] / r["sample_rate"]
        starts, ends = np.array(r["segment_start"]), np.array(r["segment_end"])
        assert r["segment_kind"] == "syllable", r["utterance_id"]
        assert len(starts) >= 3
        assert (starts >= 0).all() and (ends <= duration + 1e-6).all() and (starts < ends).all()
        assert (starts[1:] >= ends[:-1] - 1e-6).all()
    # 13a01Wb.silb is empty in the release: its syllables come from labsilb/.
    fallback = next(r for r in records if r["utterance_id"] == "13a01Wb")
    assert fallback["segment_label"][:3] == ["der", "la", "pen"]
    assert fallback["segment_start"][0] == pytest.approx(0.073214)


@pytest.mark.real_data
def test_records_hold_the_exact_samples_of_the_source_files(emodb_records, shared_data):
    out, _ = emodb_records
    for r in _records(out)[::107]:
        source, rate = soundfile.read(os.path.join(shared_data, "emodb", r["path"]),
                                      dtype="int16")
        assert rate == r["sample_rate"] == 16000
        assert np.array_equal(r["pcm"], source)
        assert r["corpus"] == "emodb" and r["speaker"] == r["utterance_id"][:2]


def _tone_corpus(root, n=6):
    for k in range(n):
        label = ("angry", "sad")[k % 2]
        write_tone(os.path.join(root, label, f"s{k:02d}_{label}.wav"), 0.3, freq=150 + 20 * k,
                   seed=k)
    return root


def test_an_interrupted_conversion_leaves_no_shard_and_resumes(tmp_path, monkeypatch):
    src, out = _tone_corpus(str(tmp_path / "src")), str(tmp_path / "out")
    real_load, calls = audio.load_audio, []

    def failing_load(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(audio, "load_audio", failing_load)
    with pytest.raises(KeyboardInterrupt):
        writer.convert(get_reader("folder"), src, out, shard_size=2, progress=False)
    finished = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.tfrecord")))
    assert finished == ["folder-00000-of-00003.tfrecord", "folder-00001-of-00003.tfrecord"]
    assert os.path.exists(os.path.join(out, "folder-00002-of-00003.tfrecord.tmp"))
    assert not os.path.exists(os.path.join(out, "stats.json"))
    first_mtime = os.path.getmtime(os.path.join(out, finished[0]))

    monkeypatch.setattr(audio, "load_audio", real_load)
    report = writer.convert(get_reader("folder"), src, out, shard_size=2, progress=False)
    assert (report.shards_reused, report.shards_written, report.records) == (2, 1, 6)
    assert os.path.getmtime(os.path.join(out, finished[0])) == first_mtime
    assert len(_records(out)) == 6
    again = writer.convert(get_reader("folder"), src, out, shard_size=2, progress=False)
    assert (again.shards_reused, again.shards_written) == (3, 0)


def test_another_conversion_in_the_same_folder_is_refused_unless_overwrite(tmp_path):
    src, out = _tone_corpus(str(tmp_path / "src")), str(tmp_path / "out")
    writer.convert(get_reader("folder"), src, out, shard_size=2, progress=False)
    with pytest.raises(writer.PlanMismatch, match="--overwrite"):
        writer.convert(get_reader("folder"), src, out, shard_size=4, progress=False)
    report = writer.convert(get_reader("folder"), src, out, shard_size=4, overwrite=True,
                            progress=False)
    assert report.shards_written == 2
    assert len(glob.glob(os.path.join(out, "*.tfrecord"))) == 2


def test_too_many_skips_raise_after_the_report_is_written(tmp_path):
    src, out = _tone_corpus(str(tmp_path / "src")), str(tmp_path / "out")
    bad = write_corrupt(os.path.join(src, "sad", "broken.wav"))
    with pytest.raises(writer.TooManySkipped, match="1 files skipped \\(limit 0\\)"):
        writer.convert(get_reader("folder"), src, out, max_skipped=0, progress=False)
    with open(os.path.join(out, "skipped.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[1].startswith(bad + "\tcannot decode audio")
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        assert json.load(f)["records"] == 6


def test_nan_and_silent_audio_are_skipped_with_their_reason(tmp_path):
    src, out = _tone_corpus(str(tmp_path / "src"), n=2), str(tmp_path / "out")
    nan = np.full(8000, np.nan, np.float32)
    soundfile.write(os.path.join(src, "sad", "nan.wav"), nan, 16000, subtype="FLOAT")
    soundfile.write(os.path.join(src, "sad", "silent.wav"), np.zeros(8000), 16000)
    soundfile.write(os.path.join(src, "sad", "short.wav"), np.ones(100) * 0.1, 16000)
    report = writer.convert(get_reader("folder"), src, out, progress=False)
    reasons = {os.path.basename(p): r for p, r in report.skipped}
    assert reasons == {"nan.wav": "audio contains NaN or infinite samples",
                       "silent.wav": "digital silence (every sample is 0)",
                       "short.wav": "too short (100 samples at 16000 Hz, need at least 512)"}
    assert report.records == 2


def test_textgrid_words_beat_voiced_regions_and_misaligned_textgrids_are_skipped(tmp_path):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    write_tone(os.path.join(src, "a.wav"), 1.0)
    write_tone(os.path.join(src, "b.wav"), 1.0)
    write_tone(os.path.join(src, "c.wav"), 1.0)
    grid = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {end}\n'
            'tiers? <exists>\nsize = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n'
            '        name = "words"\n        xmin = 0\n        xmax = {end}\n'
            '        intervals: size = 1\n        intervals [1]:\n            xmin = {s}\n'
            '            xmax = {e}\n            text = "hello"\n')
    with open(os.path.join(src, "a.TextGrid"), "w") as f:
        f.write(grid.format(end=1.0, s=0.2, e=0.6))
    with open(os.path.join(src, "b.TextGrid"), "w") as f:
        f.write(grid.format(end=9.0, s=5.0, e=6.0))
    report = writer.convert(get_reader("speech"), src, out, progress=False)
    records = {r["utterance_id"]: r for r in _records(out)}
    assert records["a"]["segment_kind"] == "word"
    assert (records["a"]["segment_start"], records["a"]["segment_end"]) == (
        [pytest.approx(0.2)], [pytest.approx(0.6)])
    assert records["c"]["segment_kind"] == "voiced"
    assert [os.path.basename(p) for p, _ in report.skipped] == ["b.wav"]
    assert "starts at 5.000 s, after the end of the audio (1.000 s)" in report.skipped[0][1]


@pytest.mark.slow
def test_keras_ser_convert_and_python_m_give_the_same_records(tmp_path):
    src = _tone_corpus(str(tmp_path / "src"), n=4)
    outs = []
    for k, command in enumerate(([sys.executable, "-m", "tfrecords_tools"],
                                 [sys.executable, "-m", "keras_ser.cli", "convert"])):
        out = str(tmp_path / f"out{k}")
        done = subprocess.run(command + ["folder", src, out, "--quiet"], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "4 records" in done.stdout
        outs.append(_records(out))
    assert [r["utterance_id"] for r in outs[0]] == [r["utterance_id"] for r in outs[1]]
    assert all(np.array_equal(a["pcm"], b["pcm"]) for a, b in zip(*outs))
