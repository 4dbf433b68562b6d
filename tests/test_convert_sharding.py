"""Scaling out the converter: N independent slices, or K worker processes, write exactly
what one process writes (every shard file byte for byte, stats.json, skipped.tsv)."""

import glob
import os
import shutil

import pytest
from helpers import write_corrupt, write_tone

from keras_ser import cli as keras_ser_cli
from tfrecords_tools import audio, cli, writer
from tfrecords_tools.reader import get_reader

SHARD_SIZE = 2
# 9 tones and 1 undecodable file in label folders: 10 utterances, 5 shards of 2;
# the undecodable file is skipped by the writer (in shard 4), the file outside a label
# folder by the reader.
N_SHARDS = 5


def _convert(src, out, **kwargs):
    kwargs.setdefault("shard_size", SHARD_SIZE)
    return writer.convert(get_reader("folder"), src, out, progress=False, **kwargs)


def _files(out):
    """{name: bytes} of every file of a conversion folder except the slice records."""
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(out, "*"))) if os.path.isfile(p)}


def assert_same_output(out, reference):
    """Every shard, side file, plan.json, stats.json and skipped.tsv equal, byte for byte."""
    mine, theirs = _files(out), _files(reference)
    assert sorted(mine) == sorted(theirs)
    assert sum(name.endswith(".tfrecord") for name in mine) == N_SHARDS
    different = [name for name in theirs if mine[name] != theirs[name]]
    assert different == []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(source folder, one-process reference output folder)."""
    root = tmp_path_factory.mktemp("sharding")
    src = str(root / "src")
    for k in range(9):
        label = ("angry", "sad", "happy")[k % 3]
        write_tone(os.path.join(src, label, f"s{k:02d}_{label}.wav"), 0.3,
                   freq=140 + 25 * k, seed=k)
    write_corrupt(os.path.join(src, "sad", "zz_broken.wav"))
    write_tone(os.path.join(src, "loose.wav"), 0.3)
    reference = str(root / "reference")
    report = _convert(src, reference)
    assert (report.records, len(report.skipped), report.shards_written) == (9, 2, N_SHARDS)
    assert report.merged and report.num_slices == 1
    return src, reference


def test_slices_are_round_robin_over_the_shards():
    assert writer.slice_shards(list(range(7)), 3, 0) == [0, 3, 6]
    assert writer.slice_shards(list(range(7)), 3, 1) == [1, 4]
    assert writer.slice_shards(list(range(2)), 3, 2) == []
    with pytest.raises(ValueError, match="slice_index 3 is out of range for num_slices 3"):
        writer.slice_shards([], 3, 3)


def test_three_slices_run_separately_then_merged_equal_one_process(corpus, tmp_path):
    src, reference = corpus
    out = str(tmp_path / "out")
    first = _convert(src, out, num_slices=3, slice_index=2)
    assert not first.merged and first.shards_missing == 4 and first.shards_written == 1
    assert not os.path.exists(os.path.join(out, "stats.json"))
    second = _convert(src, out, num_slices=3, slice_index=0)
    assert not second.merged and second.shards_missing == 2 and second.shards_written == 2
    last = _convert(src, out, num_slices=3, slice_index=1)
    assert last.merged and (last.shards_written, last.shards_total) == (2, N_SHARDS)
    assert last.stats == _convert(src, reference).stats
    assert_same_output(out, reference)
    assert sorted(os.listdir(os.path.join(out, writer.SLICES_DIR))) == [
        f"slice-0000{i}-of-00003.json" for i in range(3)]

    # The explicit merge writes the same stats.json and skipped.tsv again.
    os.remove(os.path.join(out, "stats.json"))
    os.remove(os.path.join(out, "skipped.tsv"))
    assert cli.main(["merge", out]) == 0
    assert_same_output(out, reference)
    # keras-ser convert forwards the merge sub-command unchanged.
    assert keras_ser_cli.main(["convert", "merge", out]) == 0
    assert_same_output(out, reference)


def test_slice_jobs_on_the_command_line_report_and_merge(corpus, tmp_path, capsys):
    src, reference = corpus
    out = str(tmp_path / "out")
    common = ["folder", src, out, "--shard-size", str(SHARD_SIZE), "--num-shards", "2",
              "--quiet"]
    assert cli.main(common + ["--shard-index", "1"]) == 0
    printed = capsys.readouterr().out
    assert "slice 1 of 2: 4 records" in printed
    assert "3 of 5 shards belong to slices not finished yet" in printed
    assert f"python -m tfrecords_tools merge {out}" in printed
    assert cli.main(common + ["--shard-index", "0"]) == 0
    printed = capsys.readouterr().out
    assert "9 records" in printed and "slice 0 of 2 finished last: merged all 5" in printed
    assert_same_output(out, reference)


def test_more_jobs_than_shards_leaves_the_extra_jobs_nothing_to_write(corpus, tmp_path):
    src, reference = corpus
    out = str(tmp_path / "out")
    idle = _convert(src, out, num_slices=7, slice_index=6)
    assert (idle.shards_written, idle.records, idle.shards_missing) == (0, 0, N_SHARDS)
    for index in range(6):
        report = _convert(src, out, num_slices=7, slice_index=index)
    assert report.merged
    assert_same_output(out, reference)


def test_merge_before_every_slice_finished_names_the_missing_shards(corpus, tmp_path,
                                                                     capsys):
    src, _ = corpus
    out = str(tmp_path / "out")
    assert cli.main(["merge", out]) == 2
    assert "plan.json: missing" in capsys.readouterr().err
    _convert(src, out, num_slices=3, slice_index=0)
    assert cli.main(["merge", out]) == 5
    err = capsys.readouterr().err
    assert "3 of 5 shards not written yet (folder-00001-of-00005, folder-00002-of-00005" in err
    assert "finished slices: 0 of 3" in err
    assert not os.path.exists(os.path.join(out, "stats.json"))


def test_scaling_options_out_of_range_are_refused_by_name(corpus, tmp_path, capsys):
    src, _ = corpus
    out = str(tmp_path / "out")
    for extra, message in (
            (["--num-shards", "3", "--shard-index", "3"],
             "argument --shard-index: 3 is out of range for --num-shards 3 (expected 0 to 2)"),
            (["--num-shards", "3", "--shard-index", "-1"], "-1 is out of range"),
            (["--num-shards", "3"], "--num-shards 3 needs --shard-index (0 to 2)"),
            (["--num-shards", "0", "--shard-index", "0"], "--num-shards: must be at least 1"),
            (["--workers", "-1"], "--workers: must be 0 (one per CPU core) or more")):
        with pytest.raises(SystemExit) as stop:
            cli.main(["folder", src, out, "--quiet", *extra])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(out)
    with pytest.raises(ValueError, match="slice_index 5 is out of range for num_slices 2"):
        _convert(src, out, num_slices=2, slice_index=5)


def test_slices_of_different_conversions_in_one_folder_are_refused(corpus, tmp_path,
                                                                    capsys):
    src, reference = corpus
    out, other = str(tmp_path / "out"), str(tmp_path / "other")
    _convert(src, out, num_slices=2, slice_index=0)
    # Another conversion (other shard size) cannot add its slice to the folder.
    code = cli.main(["folder", src, out, "--shard-size", "3", "--num-shards", "2",
                     "--shard-index", "1", "--quiet"])
    assert code == 4
    assert f"{out}: holds a different conversion" in capsys.readouterr().err

    # Two conversions racing into one folder: a slice file or a shard of the other
    # (same shard names, other sample rate) is refused, naming the file.
    _convert(src, other, sample_rate=8000, num_slices=2, slice_index=1)
    foreign_slice = os.path.join(out, writer.SLICES_DIR, "slice-00001-of-00002.json")
    shutil.copy(os.path.join(other, writer.SLICES_DIR, "slice-00001-of-00002.json"),
                foreign_slice)
    assert cli.main(["merge", out]) == 4
    err = capsys.readouterr().err
    assert f"{foreign_slice}: a slice of a different conversion" in err
    assert "mixes slices of different conversions" in err
    os.remove(foreign_slice)
    for ext in (".tfrecord", ".json"):
        shutil.copy(os.path.join(other, "folder-00001-of-00005" + ext), out)
    with pytest.raises(writer.PlanMismatch,
                       match="folder-00001-of-00005.json: a shard of a different conversion"):
        _convert(src, out, num_slices=2, slice_index=1)
    # With --overwrite the slice writes that shard again: the folder's own conversion.
    report = _convert(src, out, num_slices=2, slice_index=1, overwrite=True)
    assert report.merged and report.shards_written == 2
    assert_same_output(out, reference)


def test_an_interrupted_slice_resumes_and_the_result_equals_one_process(corpus, tmp_path,
                                                                        monkeypatch):
    src, reference = corpus
    out = str(tmp_path / "out")
    real_load, calls = audio.load_audio, []

    def failing_load(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the first utterance of the slice's second shard (3)
            raise KeyboardInterrupt
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(audio, "load_audio", failing_load)
    with pytest.raises(KeyboardInterrupt):
        _convert(src, out, num_slices=3, slice_index=0)
    assert os.path.exists(os.path.join(out, "folder-00000-of-00005.tfrecord"))
    assert os.path.exists(os.path.join(out, "folder-00003-of-00005.tfrecord.tmp"))
    assert not os.path.exists(os.path.join(out, "folder-00003-of-00005.tfrecord"))
    assert not os.path.exists(os.path.join(out, writer.SLICES_DIR))
    monkeypatch.setattr(audio, "load_audio", real_load)

    resumed = _convert(src, out, num_slices=3, slice_index=0)
    assert (resumed.shards_reused, resumed.shards_written) == (1, 1)
    for index in (1, 2):
        report = _convert(src, out, num_slices=3, slice_index=index)
    assert report.merged
    assert_same_output(out, reference)
    # A one-process run over the finished folder reuses every shard of the slices.
    again = _convert(src, out)
    assert (again.shards_reused, again.shards_written, again.merged) == (N_SHARDS, 0, True)
    assert_same_output(out, reference)


def test_a_slice_already_over_the_skip_limit_fails_after_writing_its_shards(corpus,
                                                                            tmp_path):
    src, _ = corpus
    out = str(tmp_path / "out")
    # The reader's skip (loose.wav) counts in every slice, and this slice's shard 4
    # skips zz_broken.wav: 2 > 0 already, whatever the other slices skip.
    with pytest.raises(writer.TooManySkipped, match="slice 1 of 3: already 2 files skipped "
                                                    r"\(limit 0\); see .*slice-00001-of-00003"):
        _convert(src, out, num_slices=3, slice_index=1, max_skipped=0)
    assert os.path.exists(os.path.join(out, writer.SLICES_DIR, "slice-00001-of-00003.json"))
    assert len(glob.glob(os.path.join(out, "*.tfrecord"))) == 2


@pytest.mark.slow  # each spawned worker imports TensorFlow: 15-60 s on 2 busy cores
def test_two_worker_processes_write_what_one_process_writes(corpus, tmp_path, capsys):
    src, reference = corpus
    out = str(tmp_path / "out")
    assert cli.main(["folder", src, out, "--shard-size", str(SHARD_SIZE), "--workers", "2",
                     "--quiet"]) == 0
    assert "9 records" in capsys.readouterr().out
    assert_same_output(out, reference)
