"""The NITK master dataset (RAVDESS + TESS + SAVEE + CREMA-D [+ EmoDB]) on tiny releases.

Each corpus folder is laid out as released (as in test_acted_corpora.py) with 0.3 s
tones; RAVDESS actors 03 and 08 and EmoDB speakers 03 and 08 share raw speaker ids.
"""

import json
import os
import subprocess
import sys
from glob import glob

import pytest
import tensorflow as tf
from helpers import write_corrupt, write_tone

import keras_ser.cli
from keras_ser import folds
from tfrecords_tools import cli, master, writer
from tfrecords_tools.schema import read_example

SECONDS = 0.3
#: Log-mel frames of a 0.3 s record: 4800 samples, 512-sample window, 256 hop.
FRAMES = 1 + (4800 - 512) // 256
SHARD_SIZE = 8


def _tones(folder, names, rate):
    for k, name in enumerate(names):
        write_tone(os.path.join(folder, name), seconds=SECONDS, rate=rate,
                   freq=150.0 + 20 * k, seed=k)


def _release(src):
    """SRC with the five corpus folders; returns the corrupt CREMA-D file."""
    speech = src / "ravdess" / "Audio_Speech_Actors_01-24"
    song = src / "ravdess" / "Audio_Song_Actors_01-24"
    _tones(speech / "Actor_03", ["03-01-01-01-01-01-03.wav", "03-01-02-01-01-01-03.wav",
                                 "03-01-05-01-01-01-03.wav"], 48000)
    _tones(speech / "Actor_08", ["03-01-02-02-01-01-08.wav", "03-01-08-01-01-01-08.wav"],
           48000)
    _tones(song / "Actor_03", ["03-02-03-01-01-01-03.wav"], 48000)
    _tones(song / "Actor_08", ["03-02-04-01-01-01-08.wav"], 48000)
    _tones(src / "tess" / "TESS Toronto emotional speech set data",
           ["OAF_angry/OAF_back_angry.wav", "OAF_Pleasant_surprise/OAF_back_ps.wav",
            "YAF_neutral/YAF_back_neutral.wav", "YAF_sad/YAF_bath_sad.wav"], 24414)
    _tones(src / "savee" / "AudioData", ["DC/a01.wav", "DC/su01.wav", "JE/n01.wav"], 44100)
    cremad = src / "cremad"
    # Actor 1003 is missing from the demographics: unknown gender.
    _tones(cremad / "AudioWAV", ["1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav",
                                 "1003_TIE_FEA_MD.wav"], 16000)
    (cremad / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n")
    corrupt = write_corrupt(str(cremad / "AudioWAV" / "1004_IWW_SAD_XX.wav"))
    _tones(src / "emodb" / "wav", ["03a01Fa.wav", "03a02La.wav", "08a01Wa.wav",
                                   "08a02Nb.wav"], 16000)
    return corrupt


#: utterance_id -> (corpus, speaker, session, gender, emotion, gender x emotion), default
#: options: no song, no boredom, calm as neutral.
EXPECTED = {
    "cremad_1001_DFA_ANG_XX": ("cremad", "cremad_1001", "cremad_1001", "male", "anger",
                               "male_anger"),
    "cremad_1002_IEO_HAP_HI": ("cremad", "cremad_1002", "cremad_1002", "female", "happiness",
                               "female_happiness"),
    "cremad_1003_TIE_FEA_MD": ("cremad", "cremad_1003", "cremad_1003", "", "fear", ""),
    "emodb_03a01Fa": ("emodb", "emodb_03", "emodb_03", "male", "happiness", "male_happiness"),
    "emodb_08a01Wa": ("emodb", "emodb_08", "emodb_08", "female", "anger", "female_anger"),
    "emodb_08a02Nb": ("emodb", "emodb_08", "emodb_08", "female", "neutral", "female_neutral"),
    "ravdess_03-01-01-01-01-01-03": ("ravdess", "ravdess_03", "ravdess_03", "male", "neutral",
                                     "male_neutral"),
    "ravdess_03-01-02-01-01-01-03": ("ravdess", "ravdess_03", "ravdess_03", "male", "neutral",
                                     "male_neutral"),
    "ravdess_03-01-05-01-01-01-03": ("ravdess", "ravdess_03", "ravdess_03", "male", "anger",
                                     "male_anger"),
    "ravdess_03-01-02-02-01-01-08": ("ravdess", "ravdess_08", "ravdess_08", "female",
                                     "neutral", "female_neutral"),
    "ravdess_03-01-08-01-01-01-08": ("ravdess", "ravdess_08", "ravdess_08", "female",
                                     "surprise", "female_surprise"),
    "savee_DC_a01": ("savee", "savee_DC", "savee_DC", "male", "anger", "male_anger"),
    "savee_DC_su01": ("savee", "savee_DC", "savee_DC", "male", "surprise", "male_surprise"),
    "savee_JE_n01": ("savee", "savee_JE", "savee_JE", "male", "neutral", "male_neutral"),
    "tess_OAF_back_anger": ("tess", "tess_OAF", "tess_OAF", "female", "anger",
                            "female_anger"),
    "tess_OAF_back_surprise": ("tess", "tess_OAF", "tess_OAF", "female", "surprise",
                               "female_surprise"),
    "tess_YAF_back_neutral": ("tess", "tess_YAF", "tess_YAF", "female", "neutral",
                              "female_neutral"),
    "tess_YAF_bath_sadness": ("tess", "tess_YAF", "tess_YAF", "female", "sadness",
                              "female_sadness"),
}


def _read(out):
    """The records of OUT's own shards (not of OUT/corpora), by utterance id."""
    records = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob(os.path.join(out, "*.tfrecord")))):
        record = read_example(serialized.numpy())
        records[record["utterance_id"]] = record
    return records


def _labels(record):
    return (record["corpus"], record["speaker"], record["session"], record["gender"],
            record["emotion"], master.gender_emotion(record["gender"], record["emotion"]))


def _shard_times(out):
    paths = glob(os.path.join(out, "*.tfrecord")) + glob(
        os.path.join(out, "corpora", "*", "*.tfrecord"))
    return {p: os.stat(p).st_mtime_ns for p in paths}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The release converted with default options; (src, out, report, corrupt file)."""
    root = tmp_path_factory.mktemp("master")
    corrupt = _release(root / "src")
    out = str(root / "out")
    report = master.convert_master(str(root / "src"), out, shard_size=SHARD_SIZE,
                                   progress=False)
    return str(root / "src"), out, report, corrupt


def test_labels_map_calm_to_neutral_and_leave_out_other_labels():
    assert [master.master_emotion(e) for e in ("calm", "neutral", "anger", "surprise")] == [
        "neutral", "neutral", "anger", "surprise"]
    assert [master.master_emotion(e) for e in ("boredom", "contempt", "frustration", "")] == [
        None, None, None, None]
    assert master.master_emotion("boredom", keep_boredom=True) == "boredom"
    assert master.master_emotion("contempt", keep_boredom=True) is None

    assert master.gender_emotion("female", "anger") == "female_anger"
    assert master.gender_emotion("", "anger") == ""
    assert master.gender_emotion("male", "") == ""
    assert len(set(master.GENDER_EMOTION_CLASSES)) == 14
    assert {master.gender_emotion(g, e) for g in ("female", "male")
            for e in master.EMOTIONS} == set(master.GENDER_EMOTION_CLASSES)


def test_merged_records_carry_master_labels_and_corpus_prefixed_speakers(converted):
    _, out, report, _ = converted
    records = _read(out)

    assert {uid: _labels(r) for uid, r in records.items()} == EXPECTED
    assert report.records == len(EXPECTED)
    # Speech only: no song file (vocal channel 02); EmoDB's boredom (03a02La) dropped.
    assert not [uid for uid in records if uid.startswith("ravdess_03-02")]
    assert "emodb_03a02La" not in records
    calm = records["ravdess_03-01-02-01-01-01-03"]
    assert calm["path"] == "ravdess/Audio_Speech_Actors_01-24/Actor_03/03-01-02-01-01-01-03.wav"
    assert (calm["sample_rate"], calm["num_samples"], calm["intensity"]) == (16000, 4800,
                                                                            "normal")
    # Same raw id "03" in RAVDESS (actor) and EmoDB (speaker): two speakers.
    speakers = report.stats["speakers"]
    assert (speakers["ravdess_03"]["gender"], speakers["emodb_03"]["gender"]) == ("male",
                                                                                  "male")
    assert len({r["speaker"] for r in records.values()}) == len(speakers) == 11
    assert sorted(glob(os.path.join(out, "*.tfrecord"))) == [
        os.path.join(out, f"master-0000{k}-of-00003.tfrecord") for k in range(3)]


def test_stats_have_a_corpus_layout_and_sum_the_corpora(converted):
    _, out, report, corrupt = converted
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    with open(os.path.join(out, "corpora", "tess", "stats.json"), encoding="utf-8") as f:
        single = json.load(f)
    assert stats == report.stats
    assert set(stats) - set(single) == {"gender_emotion", "corpora"}
    assert set(single) <= set(stats)
    assert stats["corpus"] == "master"

    records = list(_read(out).values())
    read_back = {key: {} for key in ("emotion", "speaker", "session", "gender")}
    for r in records:
        for key, counts in read_back.items():
            counts[r[key]] = counts.get(r[key], 0) + 1
    for key, counts in read_back.items():
        assert stats[key] == counts
        summed = {}
        for entry in stats["corpora"].values():
            for label, n in entry[key].items():
                summed[label] = summed.get(label, 0) + n
        assert summed == counts, key
    assert stats["gender_emotion"] == {
        "": 1, "female_anger": 2, "female_happiness": 1, "female_neutral": 3,
        "female_sadness": 1, "female_surprise": 2, "male_anger": 3, "male_happiness": 1,
        "male_neutral": 3, "male_surprise": 1}
    assert sum(e["records"] for e in stats["corpora"].values()) == stats["records"] == 18
    assert stats["hours"] == pytest.approx(18 * SECONDS / 3600)
    assert stats["logmel"]["frames"] == 18 * FRAMES

    assert stats["corpora"]["ravdess"]["filtered"] == {"song": 2}
    assert stats["corpora"]["ravdess"]["emotion"] == {"anger": 1, "neutral": 3, "surprise": 1}
    assert stats["corpora"]["emodb"]["dropped"] == {"boredom": 1}
    assert stats["corpora"]["cremad"]["skipped"] == stats["skipped"] == 1
    assert stats["filtered"] == {"boredom": 1, "song": 2}
    with open(os.path.join(out, "skipped.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 2
    assert lines[1].startswith(f"{corrupt}\tcannot decode audio")


def test_folds_and_plan_work_on_the_merged_set(converted):
    _, out, report, _ = converted
    built = folds.folds_from_stats(os.path.join(out, "stats.json"), "loso-speaker")
    assert sorted(f.test[0] for f in built) == sorted(report.stats["speakers"])
    # A record folder as records_for knows one: used as is.
    assert writer.records_for("master", out, "unused") == out
    with pytest.raises(ValueError, match="keep_boredom"):
        writer.records_for("master", out, "unused", options={"keep_boredom": True})


def test_rerun_reuses_every_shard_and_other_options_need_overwrite(converted):
    src, out, report, _ = converted
    before = _shard_times(out)
    again = master.convert_master(src, out, shard_size=SHARD_SIZE, progress=False)
    assert (again.shards_written, again.shards_reused) == (0, 3)
    assert all(r.shards_written == 0 for r in again.corpora.values())
    assert again.stats == report.stats
    assert _shard_times(out) == before and len(before) == 3 + 5

    with pytest.raises(writer.PlanMismatch, match="use another folder or --overwrite"):
        master.convert_master(src, out, shard_size=SHARD_SIZE, keep_boredom=True,
                              progress=False)
    assert _shard_times(out) == before


def test_song_and_boredom_on_request_then_overwritten_with_defaults(converted, tmp_path):
    src = converted[0]
    out = str(tmp_path / "out")
    report = master.convert_master(src, out, shard_size=SHARD_SIZE, keep_boredom=True,
                                   include_song=True, progress=False)
    records = _read(out)
    extra = {"ravdess_03-02-03-01-01-01-03": ("ravdess", "ravdess_03", "ravdess_03", "male",
                                              "happiness", "male_happiness"),
             "ravdess_03-02-04-01-01-01-08": ("ravdess", "ravdess_08", "ravdess_08", "female",
                                              "sadness", "female_sadness"),
             "emodb_03a02La": ("emodb", "emodb_03", "emodb_03", "male", "boredom",
                               "male_boredom")}
    assert {uid: _labels(r) for uid, r in records.items()} == {**EXPECTED, **extra}
    assert report.stats["filtered"] == {}

    report = master.convert_master(src, out, shard_size=SHARD_SIZE, overwrite=True,
                                   progress=False)
    assert report.shards_written == 3
    assert {uid: _labels(r) for uid, r in _read(out).items()} == EXPECTED


def test_cli_prints_gender_emotion_counts_largest_first(converted, capsys):
    src, out, _, _ = converted
    status = keras_ser.cli.main(["convert", "master", src, out, "--shard-size",
                                 str(SHARD_SIZE), "--quiet"])
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        f"18 records (0.00 h) from 11 speakers in 3 shards (3 reused); 1 skipped -> {out}",
        "gender x emotion:",
        "  female_neutral: 3", "  male_anger: 3", "  male_neutral: 3",
        "  female_anger: 2", "  female_surprise: 2",
        "  (unknown gender): 1", "  female_happiness: 1", "  female_sadness: 1",
        "  male_happiness: 1", "  male_surprise: 1",
        "corpora:",
        "  cremad: 3 records (0.00 h), 3 speakers, 1 skipped",
        "  emodb: 3 records (0.00 h), 2 speakers, 0 skipped, boredom 1 left out",
        "  ravdess: 5 records (0.00 h), 2 speakers, 0 skipped, song 2 left out",
        "  savee: 3 records (0.00 h), 2 speakers, 0 skipped",
        "  tess: 4 records (0.00 h), 2 speakers, 0 skipped",
    ]


def test_cli_exit_status_for_too_many_skipped_and_other_options(converted, capsys):
    src, out, _, _ = converted
    args = ["master", src, out, "--shard-size", str(SHARD_SIZE), "--quiet"]
    assert cli.main([*args, "--max-skipped", "0"]) == 3
    assert "1 files skipped (limit 0)" in capsys.readouterr().err
    assert cli.main([*args, "--include-song"]) == 4
    assert "holds a different conversion" in capsys.readouterr().err


def test_unknown_or_missing_corpus_folder_is_a_bad_input(tmp_path):
    src = tmp_path / "src"
    _tones(src / "ravdess" / "Actor_01", ["03-01-01-01-01-01-01.wav"], 16000)
    (src / "iemocap_copy").mkdir()
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools", "master", str(src), str(out), "--quiet"],
        check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "'iemocap_copy' not a corpus" in result.stderr
    assert "accepted names: ravdess, tess, savee, cremad, emodb" in result.stderr
    assert not out.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no corpus folder"):
        master.convert_master(str(empty), str(out), progress=False)


def test_records_for_converts_the_master_set(tmp_path, capsys):
    src = tmp_path / "src"
    _tones(src / "savee" / "AudioData", ["DC/a01.wav", "KL/n02.wav"], 44100)
    _tones(src / "emodb" / "wav", ["03a01Fa.wav", "03a02La.wav"], 16000)
    run = tmp_path / "run"
    records = writer.records_for("master", str(src), str(run), progress=False)
    assert records == str(run / "records" / "master")
    assert "3 records, 0 skipped" in capsys.readouterr().out
    assert sorted(_read(records)) == ["emodb_03a01Fa", "savee_DC_a01", "savee_KL_n02"]
    assert writer.records_for("master", records, str(run)) == records
