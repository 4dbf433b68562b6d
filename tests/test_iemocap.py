"""IEMOCAP reader: a small corpus laid out like IEMOCAP_full_release, converted for real."""

import glob
import json
import math
import os
import subprocess
import sys

import pytest
from helpers import write_corrupt, write_empty, write_tone

from tfrecords_tools import iemocap
from tfrecords_tools.reader import get_reader
from tfrecords_tools.schema import Skipped, Utterance, read_example
from tfrecords_tools.writer import convert

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"

IMPRO01_EVALUATION = HEADER + (
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    "C-E2:\tNeutral;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-E4:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n"
    "A-F1:\tval 3; act 2; dom  1;\t()\n"
    "\n"
    "[7.5712 - 10.4750]\tSes01F_impro01_M000\tfru\t[2.0000, 3.0000, 3.5000]\n"
    "C-E2:\tFrustration; Anger;\t()\n"
    "C-E3:\tFrustration;\t()\n"
    "C-E4:\tNeutral;\t(tired; bored)\n"
    "A-E3:\tval 2; act 3; dom  4;\t()\n"
    "A-E4:\tval 2; act 3; dom  3;\t()\n"
    "\n"
    "[10.0100 - 11.3925]\tSes01F_impro01_F001\texc\t[4.0000, 3.5000, 3.0000]\n"
    "C-E1:\tExcited;\t()\n"
    "C-E2:\tHappiness; Excited;\t()\n"
    "A-E1:\tval 4; act 4; dom  3;\t()\n"
    "A-E2:\tval 4; act 3; dom  3;\t()\n"
    "A-E3:\tval ; act 3; dom  3;\t()\n"
    "\n"
    "[14.8872 - 18.0175]\tSes01F_impro01_M001\txxx\t[2.5000, 3.0000, 3.0000]\n"
    "C-E1:\tSadness;\t()\n"
    "C-E2:\tFrustration;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "A-E1:\tval 2; act 3; dom  3;\t()\n"
    "A-E2:\tval 3; act 3;\t()\n"
    "A-E4:\tval two; act 3; dom  3;\t()\n"
    "A-E5:\tval 3; act 3; dom  3;\t()\n"
    "\n"
    "[19.0000 - 20.5000]\tSes01F_impro01_F002\tzzz\t[3.0000, 3.0000, 3.0000]\n"
    "C-E1:\tNeutral;\t()\n"
    "\n"
    "[21.0000 - 22.5000]\tSes01F_impro01_F003\tang\t[1.5000, 4.0000, 4.5000]\n"
    "C-E1:\tAnger;\t()\n"
    "\n"
    "[23.0000 - 24.5000]\tSes01F_impro01_M003\tsad\t[2.0000, 2.0000, 2.0000]\n"
    "C-E1:\tSadness;\t()\n"
)

IMPRO01_TRANSCRIPTION = (
    "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
    "Ses01F_impro01_M000 [007.5712-010.4750]: Do you have your forms?\n"
    "M: [LAUGHTER]\n"
    "Ses01F_impro01_F001 [010.0100-011.3925]: Yeah: I got them.\n"
    "Ses01F_impro01_M001 [014.8872-018.0175]:  I'm not sure.  \n"
)

SCRIPT01_EVALUATION = HEADER + (
    "[2.0000 - 4.0000]\tSes01F_script01_1_F000\tang\t[1.5000, 4.5000, 4.0000]\n"
    "C-E1:\tAnger;\t()\n"
    "A-E1:\tval 1; act 5; dom  4;\t()\n"
    "A-E2:\tval 2; act 4; dom  4;\t()\n"
    "\n"
    "[4.5000 - 6.0000]\tSes01F_script01_1_M000\tsad\t[2.0000, 2.0000, 2.0000]\n"
    "C-E1:\tSadness;\t()\n"
    "\n"
    "[6.5000 - 8.0000]\tSes01F_script01_1_M001\thap\t[4.5000, 3.5000, 3.0000]\n"
    "C-E1:\tHappiness;\t()\n"
)

IMPRO02_EVALUATION = HEADER + (
    "[1.0000 - 2.5000]\tSes02M_impro02_F000\thap\t[4.0000, 3.0000, 3.0000]\n"
    "C-E1:\tHappiness;\t()\n"
    "A-E1:\tval 4; act 3; dom  3;\t()\n"
    "\n"
    "[3.0000 - 4.5000]\tSes02M_impro02_M000\tsur\t[3.5000, 4.0000, 3.0000]\n"
    "C-E1:\tSurprise;\t()\n"
    "\n"
    "[5.0000 - 6.5000]\tSes02M_impro02_M001\tneu\t[3.0000, 2.0000, 3.0000]\n"
    "C-E1:\tNeutral;\t()\n"
)

IMPRO02_TRANSCRIPTION = "Ses02M_impro02_F000 [001.0000-002.5000]: Oh, wow.\n"


def wdseg(rows, total):
    """A Sphinx-3 word segmentation in the release's layout (right-aligned columns)."""
    lines = [" SFrm  EFrm    SegAScr Word"]
    lines += [f"{first:>5} {last:>5} {score:>10} {word}" for first, last, score, word in rows]
    lines.append(f" Total score:   {total}")
    return "\n".join(lines) + "\n"


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder holding IEMOCAP_full_release/ with Session1 and Session2."""
    root = tmp_path_factory.mktemp("iemocap")
    release = root / "IEMOCAP_full_release"
    s1, s2 = release / "Session1", release / "Session2"

    write_text(str(s1 / "dialog/EmoEvaluation/Ses01F_impro01.txt"), IMPRO01_EVALUATION)
    write_text(str(s1 / "dialog/transcriptions/Ses01F_impro01.txt"), IMPRO01_TRANSCRIPTION)
    write_text(str(s1 / "dialog/EmoEvaluation/Ses01F_script01_1.txt"), SCRIPT01_EVALUATION)
    write_text(str(s2 / "dialog/EmoEvaluation/Ses02M_impro02.txt"), IMPRO02_EVALUATION)
    write_text(str(s2 / "dialog/transcriptions/Ses02M_impro02.txt"), IMPRO02_TRANSCRIPTION)

    def wav(session, turn, **kwargs):
        dialog = turn.rsplit("_", 1)[0]
        return write_tone(str(session / "sentences/wav" / dialog / f"{turn}.wav"), **kwargs)

    def alignment(session, turn, text):
        dialog = turn.rsplit("_", 1)[0]
        write_text(str(session / "sentences/ForcedAlignment" / dialog / f"{turn}.wdseg"), text)

    for turn in ("Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_F001",
                 "Ses01F_impro01_M001", "Ses01F_impro01_F002", "Ses01F_impro01_M002"):
        wav(s1, turn, seconds=1.2)
    write_corrupt(str(s1 / "sentences/wav/Ses01F_impro01/Ses01F_impro01_F003.wav"))
    write_empty(str(s1 / "sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav"))
    for turn in ("Ses01F_script01_1_F000", "Ses01F_script01_1_M000", "Ses01F_script01_1_M001"):
        wav(s1, turn, seconds=0.6, freq=180.0)
    for turn in ("Ses02M_impro02_F000", "Ses02M_impro02_M000", "Ses02M_impro02_M001",
                 "Ses02M_impro08_F000"):
        wav(s2, turn, seconds=0.6, freq=250.0)

    alignment(s1, "Ses01F_impro01_F000", wdseg([
        (0, 40, -123456, "<s>"), (41, 72, -17530, "EXCUSE(8)"), (73, 98, -20111, "ME"),
        (99, 105, -3050, "<sil>"), (106, 119, -9000, "</s>")], -173147))
    alignment(s1, "Ses01F_impro01_M000", wdseg([
        (0, 9, -1000, "<s>"), (10, 19, -2000, "DO(2)"), (20, 29, -2100, "YOU"),
        (30, 44, -3000, "++BREATH++"), (45, 59, -2500, "HAVE"), (60, 71, -2600, "YOUR"),
        (72, 100, -4000, "FORMS"), (101, 119, -900, "</s>")], -18100))
    alignment(s2, "Ses02M_impro02_F000", wdseg([
        (0, 4, -500, "<s>"), (5, 24, -4000, "OH"), (25, 49, -5000, "WOW"),
        (50, 59, -600, "</s>")], -10100))
    alignment(s2, "Ses02M_impro02_M001", (" SFrm  EFrm    SegAScr Word\n"
                                          "    0     4       -500 <s>\n"
                                          "    5   2x4      -4000 OKAY\n"
                                          " Total score:   -4500\n"))
    return str(root)


def read_records(out_dir):
    """Every record of a conversion, by utterance id."""
    import tensorflow as tf

    shards = sorted(glob.glob(os.path.join(out_dir, "*.tfrecord")))
    records = [read_example(r.numpy()) for r in tf.data.TFRecordDataset(shards)]
    return {r["utterance_id"]: r for r in records}


def read_skipped(out_dir):
    """``{file name: reason}`` from skipped.tsv."""
    with open(os.path.join(out_dir, "skipped.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return {os.path.basename(path): reason for path, reason in rows}


def read_stats(out_dir):
    with open(os.path.join(out_dir, "stats.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    """The fixture corpus converted with default options; returns OUT_DIR."""
    out = str(tmp_path_factory.mktemp("iemocap_out"))
    convert(get_reader("iemocap"), corpus, out, progress=False)
    return out


EXPECTED_SKIPS = {
    "Ses01F_impro01_F002.wav", "Ses01F_impro01_M002.wav", "Ses01F_impro01_F003.wav",
    "Ses01F_impro01_M003.wav", "Ses02M_impro02_M001.wav", "Ses02M_impro08_F000.wav",
}


def test_every_labelled_readable_turn_becomes_one_record(converted):
    records = read_records(converted)
    assert sorted(records) == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000",
        "Ses01F_impro01_M001", "Ses01F_script01_1_F000", "Ses01F_script01_1_M000",
        "Ses01F_script01_1_M001", "Ses02M_impro02_F000", "Ses02M_impro02_M000"]
    assert {r["corpus"] for r in records.values()} == {"iemocap"}
    assert records["Ses01F_impro01_F000"]["path"] == os.path.join(
        "IEMOCAP_full_release", "Session1", "sentences", "wav", "Ses01F_impro01",
        "Ses01F_impro01_F000.wav")
    assert records["Ses01F_impro01_F000"]["num_samples"] == 19200


def test_labels_follow_the_turn_header_code(converted):
    records = read_records(converted)
    emotions = {turn: r["emotion"] for turn, r in records.items()}
    assert emotions == {
        "Ses01F_impro01_F000": "neutral", "Ses01F_impro01_M000": "frustration",
        "Ses01F_impro01_F001": "excitement", "Ses01F_impro01_M001": "",
        "Ses01F_script01_1_F000": "anger", "Ses01F_script01_1_M000": "sadness",
        "Ses01F_script01_1_M001": "happiness", "Ses02M_impro02_F000": "happiness",
        "Ses02M_impro02_M000": "surprise"}


def test_speaker_is_session_prefix_plus_the_turn_gender_letter(converted):
    records = read_records(converted)
    who = {turn: (r["speaker"], r["gender"], r["session"]) for turn, r in records.items()}
    assert who["Ses01F_impro01_F000"] == ("Ses01F", "female", "Session1")
    assert who["Ses01F_impro01_M000"] == ("Ses01M", "male", "Session1")
    assert who["Ses01F_script01_1_M001"] == ("Ses01M", "male", "Session1")
    assert who["Ses02M_impro02_F000"] == ("Ses02F", "female", "Session2")
    assert who["Ses02M_impro02_M000"] == ("Ses02M", "male", "Session2")
    assert read_stats(converted)["speaker"] == {"Ses01F": 3, "Ses01M": 4, "Ses02F": 1,
                                                "Ses02M": 1}


def test_ratings_per_annotator_and_header_means(converted):
    r = read_records(converted)["Ses01F_impro01_F000"]
    assert r["annotators"] == ["E3", "E4", "F1"]
    assert r["valence_ratings"] == [3.0, 2.0, 3.0]
    assert r["activation_ratings"] == [2.0, 3.0, 2.0]
    assert r["dominance_ratings"] == [2.0, 3.0, 1.0]
    assert (r["valence"], r["activation"], r["dominance"]) == (2.5, 2.5, 2.5)

    r = read_records(converted)["Ses01F_script01_1_F000"]
    assert (r["valence"], r["activation"], r["dominance"]) == (1.5, 4.5, 4.0)
    assert r["activation_ratings"] == [5.0, 4.0]


def test_malformed_or_incomplete_rating_lines_are_ignored(converted):
    records = read_records(converted)
    excited = records["Ses01F_impro01_F001"]
    assert excited["annotators"] == ["E1", "E2"]
    assert excited["valence_ratings"] == [4.0, 4.0]
    no_majority = records["Ses01F_impro01_M001"]
    assert no_majority["annotators"] == ["E1", "E5"]
    assert no_majority["dominance_ratings"] == [3.0, 3.0]
    assert (no_majority["valence"], no_majority["activation"]) == (2.5, 3.0)


def test_turn_without_ratings_has_empty_lists_but_header_means(converted):
    r = read_records(converted)["Ses01F_script01_1_M000"]
    assert r["annotators"] == [] and r["valence_ratings"] == []
    assert (r["valence"], r["activation"], r["dominance"]) == (2.0, 2.0, 2.0)


def test_votes_map_every_category_of_every_evaluator(converted):
    records = read_records(converted)
    assert records["Ses01F_impro01_F000"]["emotion_votes"] == ["neutral"] * 4
    assert records["Ses01F_impro01_M000"]["emotion_votes"] == [
        "frustration", "anger", "frustration", "neutral"]
    assert records["Ses01F_impro01_F001"]["emotion_votes"] == [
        "excitement", "happiness", "excitement"]
    assert records["Ses01F_impro01_M001"]["emotion_votes"] == [
        "sadness", "frustration", "neutral"]


def test_transcripts_come_from_matching_lines_only(converted):
    records = read_records(converted)
    assert records["Ses01F_impro01_F000"]["transcript"] == "Excuse me."
    assert records["Ses01F_impro01_M000"]["transcript"] == "Do you have your forms?"
    assert records["Ses01F_impro01_F001"]["transcript"] == "Yeah: I got them."
    assert records["Ses01F_impro01_M001"]["transcript"] == "I'm not sure."
    assert records["Ses02M_impro02_F000"]["transcript"] == "Oh, wow."
    assert records["Ses01F_script01_1_F000"]["transcript"] == ""


def test_word_segments_from_wdseg_frames(converted):
    records = read_records(converted)
    r = records["Ses01F_impro01_F000"]
    assert r["segment_kind"] == "word"
    assert r["segment_label"] == ["EXCUSE", "ME"]
    assert r["segment_start"] == pytest.approx([0.41, 0.73], abs=1e-6)
    assert r["segment_end"] == pytest.approx([0.73, 0.99], abs=1e-6)

    r = records["Ses01F_impro01_M000"]
    assert r["segment_label"] == ["DO", "YOU", "HAVE", "YOUR", "FORMS"]
    assert r["segment_start"] == pytest.approx([0.10, 0.20, 0.45, 0.60, 0.72], abs=1e-6)
    assert r["segment_end"] == pytest.approx([0.20, 0.30, 0.60, 0.72, 1.01], abs=1e-6)

    r = records["Ses02M_impro02_F000"]
    assert r["segment_start"] == pytest.approx([0.05, 0.25], abs=1e-6)
    assert r["segment_end"] == pytest.approx([0.25, 0.50], abs=1e-6)


def test_turn_without_wdseg_falls_back_to_voiced_regions(converted):
    records = read_records(converted)
    # The tones are voiced from end to end: one region, the whole turn.
    for turn, seconds in (("Ses01F_impro01_F001", 1.2), ("Ses02M_impro02_M000", 0.6)):
        r = records[turn]
        assert r["segment_kind"] == "voiced"
        assert (r["segment_start"], r["segment_end"]) == ([0.0], [pytest.approx(seconds)])
        assert r["segment_label"] == [""]


def test_skipped_files_are_reported_with_reasons(converted, corpus):
    skipped = read_skipped(converted)
    assert set(skipped) == EXPECTED_SKIPS
    s1 = os.path.join(corpus, "IEMOCAP_full_release", "Session1")
    s2 = os.path.join(corpus, "IEMOCAP_full_release", "Session2")
    impro01 = os.path.join(s1, "dialog", "EmoEvaluation", "Ses01F_impro01.txt")
    assert skipped["Ses01F_impro01_F002.wav"] == f"unknown emotion code 'zzz' in {impro01}"
    assert skipped["Ses01F_impro01_M002.wav"] == f"no entry in {impro01}"
    assert skipped["Ses02M_impro08_F000.wav"] == "missing label file " + os.path.join(
        s2, "dialog", "EmoEvaluation", "Ses02M_impro08.txt")
    bad_wdseg = os.path.join(s2, "sentences", "ForcedAlignment", "Ses02M_impro02",
                             "Ses02M_impro02_M001.wdseg")
    assert skipped["Ses02M_impro02_M001.wav"].startswith(f"{bad_wdseg}:3: ")
    assert "cannot decode audio" in skipped["Ses01F_impro01_F003.wav"]
    assert "empty audio" in skipped["Ses01F_impro01_M003.wav"]
    assert read_stats(converted)["skipped"] == 6
    assert read_stats(converted)["filtered"] == {}


def test_merge_excited_labels_exc_as_happiness(corpus, tmp_path):
    convert(get_reader("iemocap", merge_excited=True), corpus, str(tmp_path), progress=False)
    records = read_records(str(tmp_path))
    assert records["Ses01F_impro01_F001"]["emotion"] == "happiness"
    assert records["Ses01F_impro01_F001"]["emotion_votes"] == [
        "excitement", "happiness", "excitement"]
    assert read_stats(str(tmp_path))["emotion"]["happiness"] == 3


def test_four_class_filters_the_other_labels_without_skipping_them(corpus, tmp_path):
    out = str(tmp_path)
    convert(get_reader("iemocap", four_class=True), corpus, out, progress=False)
    assert sorted(read_records(out)) == [
        "Ses01F_impro01_F000", "Ses01F_script01_1_F000", "Ses01F_script01_1_M000",
        "Ses01F_script01_1_M001", "Ses02M_impro02_F000"]
    stats = read_stats(out)
    assert stats["filtered"] == {"not in the 4-class subset": 4}
    assert stats["emotion"] == {"anger": 1, "happiness": 2, "neutral": 1, "sadness": 1}
    assert set(read_skipped(out)) == EXPECTED_SKIPS


def test_four_class_with_merge_excited_keeps_excitement_as_happiness(corpus, tmp_path):
    out = str(tmp_path)
    convert(get_reader("iemocap", four_class=True, merge_excited=True), corpus, out,
            progress=False)
    records = read_records(out)
    assert len(records) == 6
    assert records["Ses01F_impro01_F001"]["emotion"] == "happiness"
    assert read_stats(out)["filtered"] == {"not in the 4-class subset": 3}


def test_improvised_only_filters_scripted_dialogs(corpus, tmp_path):
    out = str(tmp_path)
    convert(get_reader("iemocap", improvised_only=True), corpus, out, progress=False)
    records = read_records(out)
    assert sorted(records) == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000",
        "Ses01F_impro01_M001", "Ses02M_impro02_F000", "Ses02M_impro02_M000"]
    assert read_stats(out)["filtered"] == {"scripted": 3}


def test_release_folder_itself_is_accepted_as_src_dir(corpus):
    found = list(get_reader("iemocap").scan(os.path.join(corpus, "IEMOCAP_full_release")))
    utterances = [u for u in found if isinstance(u, Utterance)]
    skips = [s for s in found if isinstance(s, Skipped)]
    assert len(utterances) == 11
    assert len(skips) == 4
    assert {u.session for u in utterances} == {"Session1", "Session2"}


def test_folder_without_sessions_raises_naming_it(tmp_path):
    (tmp_path / "IEMOCAP_full_release" / "Documentation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="IEMOCAP_full_release"):
        list(get_reader("iemocap").scan(str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no_such"):
        list(get_reader("iemocap").scan(str(tmp_path / "no_such")))


def test_read_wdseg_names_file_and_line_of_a_bad_row(tmp_path):
    path = str(tmp_path / "x.wdseg")
    write_text(path, wdseg([(0, 4, -1, "<s>"), (10, 5, -1, "BACKWARDS")], -2))
    with pytest.raises(ValueError, match=r"x\.wdseg:3: frames 10-5"):
        iemocap.read_wdseg(path)
    write_text(path, wdseg([(0, 4, -1, "<s>"), (5, 9, -1, "TWO WORDS")], -2))
    with pytest.raises(ValueError, match=r"x\.wdseg:3: expected 'SFrm EFrm SegAScr Word'"):
        iemocap.read_wdseg(path)


def test_parse_ratings_rejects_missing_and_non_numeric_values():
    assert iemocap.parse_ratings("\tval 3; act 2; dom  2;\t()") == (3.0, 2.0, 2.0)
    assert iemocap.parse_ratings("\tval 3.5; act 2; dom  2;\t(val 1)") == (3.5, 2.0, 2.0)
    assert iemocap.parse_ratings("\tval ; act 2; dom  2;\t()") is None
    assert iemocap.parse_ratings("\tval 3; act 2;\t()") is None
    assert iemocap.parse_ratings("\tval nan; act 2; dom 2;\t()") is None


def test_malformed_turn_header_skips_only_that_turn(tmp_path):
    path = str(tmp_path / "Ses03F_impro01.txt")
    write_text(path, HEADER + (
        "[1.0 - 2.0]\tSes03F_impro01_F000\tneu\t[2.5000, 2.5000]\n"
        "A-E1:\tval 3; act 2; dom  2;\t()\n"
        "\n"
        "[3.0 - 4.0]\tSes03F_impro01_M000\tang\t[1.0000, 4.0000, 4.0000]\n"
        "A-E1:\tval 1; act 4; dom  5;\t()\n"))
    evaluations, problems = iemocap.read_emo_evaluation(path)
    assert list(evaluations) == ["Ses03F_impro01_M000"]
    assert evaluations["Ses03F_impro01_M000"].annotators == ["E1"]
    assert math.isclose(evaluations["Ses03F_impro01_M000"].dominance_ratings[0], 5.0)
    assert problems["Ses03F_impro01_F000"].startswith(f"{path}:3: malformed turn header")


@pytest.mark.slow
def test_cli_exits_3_when_files_are_skipped_beyond_the_limit(corpus, tmp_path):
    out = str(tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "tfrecords_tools", "iemocap", corpus, out, "--four-class",
         "--max-skipped", "0", "--quiet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 3, done.stderr
    assert "6 files skipped (limit 0)" in done.stderr
    assert read_stats(out)["filtered"] == {"not in the 4-class subset": 4}
    assert len(read_records(out)) == 5
