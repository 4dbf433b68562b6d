"""Readers of the acted corpora RAVDESS, TESS, SAVEE and CREMA-D on tiny fake releases.

Each fixture is laid out like the real release (folder names, file-name quirks, sample
rate) with 0.3 s tones in place of speech, one corrupt file, one empty WAV and one file
whose name holds an unknown label code.
"""

import json
import os
import subprocess
import sys
from glob import glob

import pytest
import tensorflow as tf
from helpers import write_corrupt, write_empty, write_tone

from tfrecords_tools import cli, writer
from tfrecords_tools.reader import get_reader
from tfrecords_tools.schema import EMOTIONS, Utterance, read_example

SECONDS = 0.3


def _tones(folder, names, rate):
    for k, name in enumerate(names):
        write_tone(os.path.join(folder, name), seconds=SECONDS, rate=rate,
                   freq=150.0 + 20 * k, seed=k)


def _convert(name, src, out, **options):
    """Convert with the library, then read back records, stats.json and skipped.tsv."""
    writer.convert(get_reader(name, **options), str(src), str(out), progress=False)
    dataset = tf.data.TFRecordDataset(sorted(glob(os.path.join(str(out), "*.tfrecord"))))
    records = {}
    for serialized in dataset:
        record = read_example(serialized.numpy())
        records[record["utterance_id"]] = record
    with open(os.path.join(str(out), "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    with open(os.path.join(str(out), "skipped.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\treason"
    skipped = dict(line.split("\t") for line in lines[1:])
    assert len(skipped) == len(lines) - 1
    return records, stats, skipped


def _fields(record, *names):
    return tuple(record[n] for n in names)


def _assert_bad_audio_skipped(skipped, corrupt, empty):
    assert skipped.pop(str(corrupt)).startswith("cannot decode audio")
    assert skipped.pop(str(empty)) == "empty audio (0 samples)"


# --------------------------------------------------------------------------- RAVDESS

RAVDESS_RATE = 48000


def _ravdess_release(root, speech="Audio_Speech_Actors_01-24", song="Audio_Song_Actors_01-24"):
    """Speech and song folders of two actors; returns the bad files by kind."""
    sp, so = root / speech, root / song
    _tones(sp / "Actor_01", ["03-01-01-01-01-01-01.wav", "03-01-05-02-02-02-01.wav"],
           RAVDESS_RATE)
    _tones(sp / "Actor_02", ["03-01-02-02-01-01-02.wav", "03-01-08-01-02-01-02.wav"],
           RAVDESS_RATE)
    _tones(so / "Actor_01", ["03-02-03-01-01-01-01.wav"], RAVDESS_RATE)
    _tones(so / "Actor_02", ["03-02-04-02-02-01-02.wav"], RAVDESS_RATE)
    bad = {
        "unknown": write_tone(str(sp / "Actor_01" / "03-01-09-01-01-01-01.wav"),
                              seconds=SECONDS, rate=RAVDESS_RATE),
        "misplaced": write_tone(str(sp / "Actor_02" / "03-01-04-01-01-01-03.wav"),
                                seconds=SECONDS, rate=RAVDESS_RATE),
        "corrupt": write_corrupt(str(sp / "Actor_02" / "03-01-06-01-01-01-02.wav")),
        "empty": write_empty(str(sp / "Actor_02" / "03-01-07-01-01-01-02.wav")),
    }
    with open(sp / "Actor_02" / "01-01-04-01-01-01-02.mp4", "wb") as f:
        f.write(b"not read: video files are not audio")
    return bad


def test_ravdess_labels_speech_from_file_names_and_leaves_song_out(tmp_path):
    src = tmp_path / "ravdess"
    bad = _ravdess_release(src)
    records, stats, skipped = _convert("ravdess", src, tmp_path / "out")

    names = ("emotion", "speaker", "session", "gender", "text_id", "transcript", "intensity")
    kids, dogs = "Kids are talking by the door", "Dogs are sitting by the door"
    assert {k: _fields(r, *names) for k, r in records.items()} == {
        "03-01-01-01-01-01-01": ("neutral", "01", "01", "male", "01", kids, "normal"),
        "03-01-05-02-02-02-01": ("anger", "01", "01", "male", "02", dogs, "strong"),
        "03-01-02-02-01-01-02": ("calm", "02", "02", "female", "01", kids, "strong"),
        "03-01-08-01-02-01-02": ("surprise", "02", "02", "female", "02", dogs, "normal"),
    }
    first = records["03-01-01-01-01-01-01"]
    assert first["corpus"] == "ravdess"
    assert first["path"] == "Audio_Speech_Actors_01-24/Actor_01/03-01-01-01-01-01-01.wav"
    assert (first["sample_rate"], first["num_samples"]) == (16000, 4800)

    assert (stats["records"], stats["skipped"]) == (4, 4)
    assert stats["emotion"] == {"anger": 1, "calm": 1, "neutral": 1, "surprise": 1}
    assert stats["speaker"] == {"01": 2, "02": 2}
    assert stats["gender"] == {"female": 2, "male": 2}
    assert stats["filtered"] == {"song": 2}

    _assert_bad_audio_skipped(skipped, bad["corrupt"], bad["empty"])
    assert skipped == {
        bad["unknown"]: "unknown emotion code '09'",
        bad["misplaced"]: "actor 03 in the file name but the file is in folder Actor_02",
    }


def test_ravdess_reads_top_level_actor_folders_with_song_and_drops_kaggle_duplicates(tmp_path):
    src = tmp_path / "ravdess"
    _ravdess_release(src, speech=".", song=".")
    _tones(src / "audio_speech_actors_01-24" / "Actor_01", ["03-01-01-01-01-01-01.wav"],
           RAVDESS_RATE)
    reader = get_reader("ravdess", include_song=True)
    found = [u for u in reader.scan(str(src)) if isinstance(u, Utterance)]

    by_id = {u.utterance_id: u for u in found}
    # Scanning decodes nothing, so the corrupt (06) and empty (07) files are still listed.
    assert sorted(by_id) == [
        "03-01-01-01-01-01-01", "03-01-02-02-01-01-02", "03-01-05-02-02-02-01",
        "03-01-06-01-01-01-02", "03-01-07-01-01-01-02", "03-01-08-01-02-01-02",
        "03-02-03-01-01-01-01", "03-02-04-02-02-01-02",
    ]
    assert by_id["03-01-01-01-01-01-01"].audio_path == str(
        src / "Actor_01" / "03-01-01-01-01-01-01.wav")
    song = by_id["03-02-04-02-02-01-02"]
    assert (song.emotion, song.speaker, song.gender, song.intensity, song.text_id) == (
        "sadness", "02", "female", "strong", "02")
    assert reader.filtered == {"duplicate": 1}
    assert reader.options_summary() == {"include_song": True}


def test_ravdess_without_actor_folders_is_not_the_corpus(tmp_path):
    write_tone(str(tmp_path / "03-01-01-01-01-01-01.wav"), seconds=SECONDS)
    with pytest.raises(FileNotFoundError, match="no RAVDESS Actor_NN folder"):
        list(get_reader("ravdess").scan(str(tmp_path)))


@pytest.mark.parametrize("stem, reason", [
    ("03-01-01-02-01-01-01", "intensity 02 (strong) does not exist for emotion 01 (neutral)"),
    ("01-01-05-01-01-01-01", "modality 01 (full-AV) is not audio-only (03)"),
    ("03-03-05-01-01-01-01", "unknown vocal channel code '03'"),
    ("03-01-05-01-03-01-01", "unknown statement code '03'"),
    ("03-01-05-01-01-01-25", "unknown actor code '25'"),
    ("03-01-05-01-01-01", "file name is not RAVDESS's MM-VC-EE-II-SS-RR-AA "
                          "(seven 2-digit codes)"),
])
def test_ravdess_rejects_impossible_codes(stem, reason):
    from tfrecords_tools.ravdess import parse_file_name

    with pytest.raises(ValueError) as err:
        parse_file_name(stem)
    assert str(err.value) == reason


# ------------------------------------------------------------------------------ TESS

TESS_RATE = 24414  # the release's sample rate


def test_tess_labels_both_talkers_whatever_the_case_of_names(tmp_path):
    src = tmp_path / "TESS Toronto emotional speech set data"
    _tones(src, ["OAF_angry/OAF_back_angry.wav", "OAF_Fear/OAF_bar_fear.wav",
                 "OAF_Pleasant_surprise/OAF_back_ps.wav", "YAF_neutral/YAF_back_neutral.wav",
                 "YAF_pleasant_surprised/YAF_bath_ps.wav", "YAF_happy/YAF_Bean_Happy.wav",
                 "OAF_Sad/oaf_base_SAD.wav"], TESS_RATE)
    unknown = write_tone(str(src / "YAF_angry" / "YAF_dog_bored.wav"), seconds=SECONDS,
                         rate=TESS_RATE)
    talker = write_tone(str(src / "YAF_angry" / "MAF_dog_angry.wav"), seconds=SECONDS,
                        rate=TESS_RATE)
    corrupt = write_corrupt(str(src / "YAF_disgust" / "YAF_bite_disgust.wav"))
    empty = write_empty(str(src / "YAF_sad" / "YAF_chair_sad.wav"))
    records, stats, skipped = _convert("tess", src, tmp_path / "out")

    names = ("emotion", "speaker", "session", "gender", "text_id", "transcript")
    assert {k: _fields(r, *names) for k, r in records.items()} == {
        "OAF_back_anger": ("anger", "OAF", "OAF", "female", "back", "Say the word back"),
        "OAF_bar_fear": ("fear", "OAF", "OAF", "female", "bar", "Say the word bar"),
        "OAF_back_surprise": ("surprise", "OAF", "OAF", "female", "back", "Say the word back"),
        "OAF_base_sadness": ("sadness", "OAF", "OAF", "female", "base", "Say the word base"),
        "YAF_back_neutral": ("neutral", "YAF", "YAF", "female", "back", "Say the word back"),
        "YAF_bath_surprise": ("surprise", "YAF", "YAF", "female", "bath", "Say the word bath"),
        "YAF_bean_happiness": ("happiness", "YAF", "YAF", "female", "bean",
                               "Say the word bean"),
    }
    assert records["OAF_back_surprise"]["path"] == "OAF_Pleasant_surprise/OAF_back_ps.wav"
    assert records["OAF_back_surprise"]["intensity"] == ""
    assert (stats["records"], stats["skipped"]) == (7, 4)
    assert stats["speaker"] == {"OAF": 4, "YAF": 3}
    assert stats["gender"] == {"female": 7}
    assert stats["emotion"] == {"anger": 1, "fear": 1, "happiness": 1, "neutral": 1,
                                "sadness": 1, "surprise": 2}
    assert stats["filtered"] == {}

    _assert_bad_audio_skipped(skipped, corrupt, empty)
    assert skipped == {unknown: "unknown emotion 'bored'",
                       talker: "unknown talker 'MAF' (expected OAF or YAF)"}


def test_tess_reads_pleasant_surprise_spelled_out_and_counts_duplicates(tmp_path):
    from tfrecords_tools.tess import parse_file_name

    assert parse_file_name("YAF_Road_Pleasant_Surprised") == {
        "speaker": "YAF", "word": "road", "emotion": "surprise"}
    _tones(tmp_path, ["a/OAF_back_ps.wav", "b/oaf_BACK_PS.wav"], TESS_RATE)
    reader = get_reader("tess")
    found = list(reader.scan(str(tmp_path)))
    assert [u.utterance_id for u in found] == ["OAF_back_surprise"]
    assert reader.filtered == {"duplicate": 1}


# ----------------------------------------------------------------------------- SAVEE

SAVEE_RATE = 44100


def test_savee_labels_speaker_folders_and_tells_sa_from_su(tmp_path):
    src = tmp_path / "SAVEE"
    audio = src / "AudioData"
    _tones(audio, ["DC/a01.wav", "DC/sa03.wav", "DC/su03.wav", "JE/n30.wav", "JE/h02.wav",
                   "JK/f05.wav", "KL/d07.wav"], SAVEE_RATE)
    unknown = write_tone(str(audio / "KL" / "x01.wav"), seconds=SECONDS, rate=SAVEE_RATE)
    one_letter_s = write_tone(str(audio / "KL" / "s02.wav"), seconds=SECONDS, rate=SAVEE_RATE)
    corrupt = write_corrupt(str(audio / "JK" / "a02.wav"))
    empty = write_empty(str(audio / "JE" / "d01.wav"))
    (audio / "DC" / "info.txt").write_text("not audio")
    records, stats, skipped = _convert("savee", src, tmp_path / "out")

    names = ("emotion", "speaker", "session", "gender", "text_id", "transcript")
    assert {k: _fields(r, *names) for k, r in records.items()} == {
        "DC_a01": ("anger", "DC", "DC", "male", "a01", ""),
        "DC_sa03": ("sadness", "DC", "DC", "male", "sa03", ""),
        "DC_su03": ("surprise", "DC", "DC", "male", "su03", ""),
        "JE_n30": ("neutral", "JE", "JE", "male", "n30", ""),
        "JE_h02": ("happiness", "JE", "JE", "male", "h02", ""),
        "JK_f05": ("fear", "JK", "JK", "male", "f05", ""),
        "KL_d07": ("disgust", "KL", "KL", "male", "d07", ""),
    }
    assert records["DC_sa03"]["path"] == "AudioData/DC/sa03.wav"
    assert (stats["records"], stats["skipped"]) == (7, 4)
    assert stats["speaker"] == {"DC": 3, "JE": 2, "JK": 1, "KL": 1}
    assert stats["gender"] == {"male": 7}

    _assert_bad_audio_skipped(skipped, corrupt, empty)
    assert skipped == {unknown: "unknown emotion prefix 'x'",
                       one_letter_s: "unknown emotion prefix 's'"}


def _savee_flat(folder):
    _tones(folder, ["DC_a01.wav", "DC_sa01.wav", "JE_su02.wav", "KL_n10.wav"], SAVEE_RATE)
    return write_tone(str(folder / "KL_q01.wav"), seconds=SECONDS, rate=SAVEE_RATE)


def test_savee_cli_converts_the_flat_kaggle_layout(tmp_path):
    src, out = tmp_path / "ALL", tmp_path / "out"
    unknown = _savee_flat(src)
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools", "savee", str(src), str(out), "--quiet"],
        capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"4 records (0.00 h) from 3 speakers in 1 shards (0 reused); 1 skipped -> {out}",
        "  anger: 1", "  neutral: 1", "  sadness: 1", "  surprise: 1",
    ]
    with open(out / "skipped.tsv", encoding="utf-8") as f:
        assert f.read().splitlines()[1:] == [f"{unknown}\tunknown emotion prefix 'q'"]


def test_savee_reads_each_utterance_once_when_both_layouts_are_present(tmp_path):
    _tones(tmp_path / "AudioData" / "DC", ["a01.wav"], SAVEE_RATE)
    _savee_flat(tmp_path / "ALL")
    reader = get_reader("savee")
    found = [u for u in reader.scan(str(tmp_path)) if isinstance(u, Utterance)]
    assert sorted(u.utterance_id for u in found) == ["DC_a01", "DC_sa01", "JE_su02", "KL_n10"]
    assert reader.filtered == {"duplicate": 1}


# --------------------------------------------------------------------------- CREMA-D

DEMOGRAPHICS = ("ActorID,Age,Sex,Race,Ethnicity\n"
                "1001,51,Male,Caucasian,Not Hispanic\n"
                "1002,21,Female,Caucasian,Not Hispanic\n"
                "1091,29,Female,Asian,Not Hispanic\n")
CREMAD_GOOD = ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_TIE_SAD_LO.wav",
               "1002_IWW_NEU_XX.wav", "1091_WSI_FEA_MD.wav"]


def _cremad_release(root):
    _tones(root / "AudioWAV", CREMAD_GOOD, 16000)
    bad = {
        "emotion": write_tone(str(root / "AudioWAV" / "1004_IEO_XYZ_XX.wav"), seconds=SECONDS),
        "sentence": write_tone(str(root / "AudioWAV" / "1005_ABC_ANG_XX.wav"), seconds=SECONDS),
        "corrupt": write_corrupt(str(root / "AudioWAV" / "1003_ITS_DIS_XX.wav")),
        "empty": write_empty(str(root / "AudioWAV" / "1076_MTI_SAD_XX.wav")),
    }
    (root / "VideoDemographics.csv").write_text(DEMOGRAPHICS)
    return bad


def test_cremad_labels_sentence_emotion_level_and_sex_from_demographics(tmp_path):
    src = tmp_path / "CREMA-D"
    bad = _cremad_release(src)
    records, stats, skipped = _convert("cremad", src, tmp_path / "out")

    names = ("emotion", "speaker", "session", "gender", "text_id", "transcript", "intensity")
    assert {k: _fields(r, *names) for k, r in records.items()} == {
        "1001_DFA_ANG_XX": ("anger", "1001", "1001", "male", "DFA", "Don't forget a jacket",
                            "unspecified"),
        "1001_IEO_HAP_HI": ("happiness", "1001", "1001", "male", "IEO", "It's eleven o'clock",
                            "high"),
        "1002_TIE_SAD_LO": ("sadness", "1002", "1002", "female", "TIE",
                            "That is exactly what happened", "low"),
        "1002_IWW_NEU_XX": ("neutral", "1002", "1002", "female", "IWW",
                            "I wonder what this is about", "unspecified"),
        "1091_WSI_FEA_MD": ("fear", "1091", "1091", "female", "WSI",
                            "We'll stop in a couple of minutes", "medium"),
    }
    assert records["1091_WSI_FEA_MD"]["path"] == "AudioWAV/1091_WSI_FEA_MD.wav"
    assert (stats["records"], stats["skipped"]) == (5, 4)
    assert stats["gender"] == {"female": 3, "male": 2}
    assert stats["speaker"] == {"1001": 2, "1002": 2, "1091": 1}

    _assert_bad_audio_skipped(skipped, bad["corrupt"], bad["empty"])
    assert skipped == {bad["emotion"]: "unknown emotion code 'XYZ'",
                       bad["sentence"]: "unknown sentence code 'ABC'"}


def _genders(reader, src):
    return {u.utterance_id: u.gender for u in reader.scan(str(src)) if isinstance(u, Utterance)}


def test_cremad_finds_demographics_beside_audiowav_when_given_the_audio_folder(tmp_path):
    _cremad_release(tmp_path / "CREMA-D")
    genders = _genders(get_reader("cremad"), tmp_path / "CREMA-D" / "AudioWAV")
    assert genders == {"1001_DFA_ANG_XX": "male", "1001_IEO_HAP_HI": "male",
                       "1002_TIE_SAD_LO": "female", "1002_IWW_NEU_XX": "female",
                       "1091_WSI_FEA_MD": "female",
                       # actors missing from the CSV (scanning does not decode audio)
                       "1003_ITS_DIS_XX": "", "1076_MTI_SAD_XX": ""}


def test_cremad_leaves_gender_empty_without_demographics_and_uses_an_explicit_file(tmp_path):
    src = tmp_path / "flat"
    _tones(src, CREMAD_GOOD[:3], 16000)
    assert _genders(get_reader("cremad"), src) == {
        "1001_DFA_ANG_XX": "", "1001_IEO_HAP_HI": "", "1002_TIE_SAD_LO": ""}

    elsewhere = tmp_path / "meta" / "demo.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text(DEMOGRAPHICS)
    assert _genders(get_reader("cremad", demographics=str(elsewhere)), src) == {
        "1001_DFA_ANG_XX": "male", "1001_IEO_HAP_HI": "male", "1002_TIE_SAD_LO": "female"}


def test_cremad_missing_explicit_demographics_names_the_path(tmp_path):
    _cremad_release(tmp_path / "CREMA-D")
    missing = str(tmp_path / "nowhere" / "VideoDemographics.csv")
    with pytest.raises(FileNotFoundError, match="nowhere/VideoDemographics.csv"):
        writer.convert(get_reader("cremad", demographics=missing), str(tmp_path / "CREMA-D"),
                       str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_cremad_demographics_without_sex_column_is_rejected(tmp_path):
    from tfrecords_tools.cremad import read_demographics

    path = tmp_path / "VideoDemographics.csv"
    path.write_text("ActorID,Age\n1001,51\n")
    with pytest.raises(ValueError, match="missing column\\(s\\) Sex"):
        read_demographics(str(path))


# ------------------------------------------------------------------------------ all

def test_reader_options_are_command_line_flags():
    parser = cli.build_parser()
    assert parser.parse_args(["ravdess", "src", "out"]).include_song is False
    assert parser.parse_args(["ravdess", "src", "out", "--include-song"]).include_song is True
    assert parser.parse_args(["cremad", "src", "out"]).demographics is None
    assert parser.parse_args(["cremad", "src", "out", "--demographics", "d.csv"]
                             ).demographics == "d.csv"


@pytest.mark.parametrize("module", ["ravdess", "tess", "savee", "cremad"])
def test_every_label_is_a_schema_emotion(module):
    import importlib

    mod = importlib.import_module(f"tfrecords_tools.{module}")
    labels = mod.EMOTION_PREFIXES if module == "savee" else mod.EMOTIONS
    assert set(labels.values()) <= set(EMOTIONS)
