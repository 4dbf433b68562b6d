"""Tests of keras_ser.folds: protocols with exact speakers, invariants, JSON files."""

import json
import os

import pytest

from keras_ser import folds as F

# IEMOCAP-like: five sessions, one female (F) and one male (M) speaker each.
IEMOCAP_SESSIONS = {f"Ses0{i}{g}": f"Ses0{i}" for i in range(1, 6) for g in "FM"}
IEMOCAP_GENDERS = {s: "female" if s.endswith("F") else "male" for s in IEMOCAP_SESSIONS}
EMODB_MALE = ["03", "10", "11", "12", "15"]
EMODB_FEMALE = ["08", "09", "13", "14", "16"]
EMODB_GENDERS = {**{s: "male" for s in EMODB_MALE}, **{s: "female" for s in EMODB_FEMALE}}
EMODB = sorted(EMODB_GENDERS)


def iemocap_stats():
    return {"corpus": "iemocap", "speakers": {
        s: {"session": IEMOCAP_SESSIONS[s], "gender": IEMOCAP_GENDERS[s], "records": 10,
            "emotion": {"anger": 5, "neutral": 5}} for s in IEMOCAP_SESSIONS}}


def assert_partitions(folds, speakers):
    for fold in folds:
        assert not fold.part("train") & fold.part("validation")
        assert not fold.part("train") & fold.part("test")
        assert not fold.part("validation") & fold.part("test")
        assert fold.speakers() == set(speakers)


def test_loso_session_gives_five_folds_with_exact_speakers():
    folds = F.leave_one_session_out(IEMOCAP_SESSIONS, genders=IEMOCAP_GENDERS)
    assert [f.name for f in folds] == [f"session{i}-test-Ses0{i}M" for i in range(1, 6)]
    first = folds[0]
    assert first.validation == ["Ses01F"]
    assert first.test == ["Ses01M"]
    assert first.train == ["Ses02F", "Ses02M", "Ses03F", "Ses03M", "Ses04F", "Ses04M",
                           "Ses05F", "Ses05M"]
    assert folds[4].validation == ["Ses05F"] and folds[4].test == ["Ses05M"]
    assert_partitions(folds, IEMOCAP_SESSIONS)


def test_loso_session_swap_gives_ten_folds_each_speaker_tested_once():
    folds = F.leave_one_session_out(IEMOCAP_SESSIONS, swap=True, genders=IEMOCAP_GENDERS)
    assert len(folds) == 10
    assert (folds[0].validation, folds[0].test) == (["Ses01F"], ["Ses01M"])
    assert (folds[1].validation, folds[1].test) == (["Ses01M"], ["Ses01F"])
    assert folds[1].name == "session1-test-Ses01F"
    assert sorted(s for f in folds for s in f.test) == sorted(IEMOCAP_SESSIONS)
    assert sorted(s for f in folds for s in f.validation) == sorted(IEMOCAP_SESSIONS)
    assert_partitions(folds, IEMOCAP_SESSIONS)


def test_loso_session_validates_on_chosen_gender_first():
    folds = F.leave_one_session_out(IEMOCAP_SESSIONS, genders=IEMOCAP_GENDERS,
                                    validation_gender="male")
    assert (folds[2].validation, folds[2].test) == (["Ses03M"], ["Ses03F"])


def test_loso_session_without_genders_validates_on_first_sorted_speaker():
    sessions = {"b2": "s1", "a1": "s1", "c3": "s2", "d4": "s2"}
    folds = F.leave_one_session_out(sessions)
    assert [(f.validation, f.test, f.train) for f in folds] == [
        (["a1"], ["b2"], ["c3", "d4"]), (["c3"], ["d4"], ["a1", "b2"])]


def test_loso_session_rejects_session_without_two_speakers():
    sessions = {**IEMOCAP_SESSIONS, "Ses05X": "Ses05"}
    with pytest.raises(ValueError, match=r"session 'Ses05' holds 3 speaker\(s\) "
                                         r"\['Ses05F', 'Ses05M', 'Ses05X'\]"):
        F.leave_one_session_out(sessions)
    with pytest.raises(ValueError, match="session '03' holds 1"):
        F.leave_one_session_out({s: s for s in EMODB})


def test_loso_session_rejects_session_of_one_gender():
    genders = {**IEMOCAP_GENDERS, "Ses02M": "female"}
    with pytest.raises(ValueError, match="session 'Ses02'.*genders=None"):
        F.leave_one_session_out(IEMOCAP_SESSIONS, genders=genders)


def test_loso_speaker_on_emodb_tests_and_validates_each_speaker_once():
    folds = F.leave_one_speaker_out(EMODB)
    assert len(folds) == 10
    assert [f.test for f in folds] == [[s] for s in EMODB]
    assert sorted(s for f in folds for s in f.validation) == EMODB
    assert (folds[0].name, folds[0].validation) == ("test-03", ["08"])
    assert (folds[-1].name, folds[-1].validation) == ("test-16", ["03"])
    assert folds[0].train == ["09", "10", "11", "12", "13", "14", "15", "16"]
    assert_partitions(folds, EMODB)


def test_loso_speaker_next_same_gender_wraps_around():
    folds = {f.test[0]: f for f in F.leave_one_speaker_out(
        EMODB, validation="next-same-gender", genders=EMODB_GENDERS)}
    assert folds["03"].validation == ["10"]
    assert folds["15"].validation == ["03"]
    assert folds["16"].validation == ["08"]
    assert sorted(s for f in folds.values() for s in f.validation) == EMODB


def test_loso_speaker_next_other_gender():
    folds = {f.test[0]: f for f in F.leave_one_speaker_out(
        EMODB, validation="next-other-gender", genders=EMODB_GENDERS)}
    assert folds["03"].validation == ["08"]
    assert folds["09"].validation == ["10"]
    assert folds["16"].validation == ["03"]
    assert_partitions(folds.values(), EMODB)


def test_loso_speaker_gender_rule_fails_when_impossible():
    with pytest.raises(ValueError, match="speaker '03' \\(male\\)"):
        F.leave_one_speaker_out(EMODB_MALE, validation="next-other-gender",
                                genders=EMODB_GENDERS)
    with pytest.raises(ValueError, match="needs a genders mapping"):
        F.leave_one_speaker_out(EMODB, validation="next-same-gender")
    with pytest.raises(ValueError, match="unknown validation rule"):
        F.leave_one_speaker_out(EMODB, validation="previous")


def test_speaker_kfold_partitions_test_speakers_and_validates_on_next_fold():
    folds = F.speaker_kfold(EMODB, k=5, seed=3)
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    assert sorted(s for f in folds for s in f.test) == EMODB
    assert all(len(f.test) == 2 and len(f.train) == 6 for f in folds)
    for i, fold in enumerate(folds):
        assert fold.validation == folds[(i + 1) % 5].test
    assert_partitions(folds, EMODB)
    assert F.speaker_kfold(EMODB, k=5, seed=3) == folds


def test_speaker_kfold_splits_uneven_counts():
    folds = F.speaker_kfold(EMODB, k=3)
    assert sorted(len(f.test) for f in folds) == [3, 3, 4]
    assert_partitions(folds, EMODB)


@pytest.mark.parametrize("k", [2, 11, 2.5])
def test_speaker_kfold_rejects_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must be"):
        F.speaker_kfold(EMODB, k=k)


def test_folds_from_stats_builds_each_protocol():
    stats = iemocap_stats()
    assert F.folds_from_stats(stats, "loso-session") == F.leave_one_session_out(
        IEMOCAP_SESSIONS, genders=IEMOCAP_GENDERS)
    assert len(F.folds_from_stats(stats, "loso-session-swap")) == 10
    assert len(F.folds_from_stats(stats, "loso-speaker")) == 10
    assert len(F.folds_from_stats(stats, "kfold", k=5)) == 5
    male_first = F.folds_from_stats(stats, "loso-session", validation_gender="male")
    assert male_first[0].validation == ["Ses01M"]


def test_folds_from_stats_reads_a_path(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(iemocap_stats()))
    assert len(F.folds_from_stats(str(path), "loso-session")) == 5


def test_folds_from_stats_rejects_unknown_protocol_and_missing_speakers():
    with pytest.raises(ValueError, match="unknown protocol"):
        F.folds_from_stats(iemocap_stats(), "leave-one-out")
    with pytest.raises(ValueError, match="no 'speakers' entry"):
        F.folds_from_stats({"corpus": "x"}, "loso-speaker")


def test_fold_sorts_speakers_and_round_trips_through_dict():
    fold = F.Fold("f", train=["b", "a"], validation={"c"}, test=("d",))
    assert fold.train == ["a", "b"] and fold.validation == ["c"] and fold.test == ["d"]
    assert F.Fold.from_dict(fold.to_dict()) == fold
    assert fold.part("train") == {"a", "b"}
    with pytest.raises(ValueError, match="unknown fold part"):
        fold.part("dev")


def test_fold_check_names_overlapping_speakers():
    with pytest.raises(ValueError, match=r"fold 'f' puts speaker\(s\) \['a'\] in both train "
                                         "and test"):
        F.Fold("f", ["a", "b"], ["c"], ["a"]).check()


def test_folds_round_trip_through_json(tmp_path):
    folds = F.leave_one_session_out(IEMOCAP_SESSIONS, swap=True, genders=IEMOCAP_GENDERS)
    path = tmp_path / "folds" / "iemocap_loso.json"
    F.save_folds(str(path), folds, "loso-session-swap", corpus="iemocap")
    loaded, meta = F.load_folds(str(path))
    assert loaded == folds
    assert meta == {"protocol": "loso-session-swap", "corpus": "iemocap"}
    assert os.listdir(path.parent) == ["iemocap_loso.json"]
    document = json.loads(path.read_text())
    assert document["folds"][0] == {"name": "session1-test-Ses01M",
                                    "train": folds[0].train, "validation": ["Ses01F"],
                                    "test": ["Ses01M"]}


def write_fold_file(tmp_path, folds):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"protocol": "loso-speaker", "corpus": None, "folds": folds}))
    return str(path)


@pytest.mark.parametrize("folds, message", [
    ([{"name": "test-03", "train": ["03", "08"], "validation": ["09"], "test": ["03"]}],
     r"folds\[0\]: fold 'test-03' puts speaker\(s\) \['03'\] in both train and test"),
    ([{"name": "test-03", "train": ["08"], "validation": ["09"], "test": []}],
     "fold 'test-03' has no test speaker"),
    ([{"name": "test-03", "train": ["08"], "test": ["03"]}],
     "fold 'test-03' has no 'validation' list"),
    ([{"name": "a", "train": ["1"], "validation": ["2"], "test": ["3"]},
      {"name": "b", "train": "1", "validation": ["2"], "test": ["3"]}],
     r"folds\[1\]: fold 'b' train must be a list"),
    ([{"name": "a", "train": ["1"], "validation": ["2"], "test": ["3"]}] * 2,
     r"fold name\(s\) \['a'\] used more than once"),
    ([], "not a fold file"),
])
def test_load_folds_rejects_malformed_file_naming_file_and_fold(tmp_path, folds, message):
    path = write_fold_file(tmp_path, folds)
    with pytest.raises(ValueError, match=message) as info:
        F.load_folds(path)
    assert path in str(info.value)


def test_load_folds_rejects_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"folds": [')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        F.load_folds(str(path))


def test_save_folds_refuses_overlapping_fold(tmp_path):
    with pytest.raises(ValueError, match="in both"):
        F.save_folds(str(tmp_path / "f.json"), [F.Fold("f", ["a"], ["b"], ["a"])], "custom")
    assert not os.listdir(tmp_path)


@pytest.mark.real_data
def test_emodb_stats_give_ten_loso_folds_testing_every_speaker(emodb_records):
    from tfrecords_tools import emodb

    out_dir, _ = emodb_records
    stats_path = os.path.join(out_dir, "stats.json")
    folds = F.folds_from_stats(stats_path, "loso-speaker")
    speakers = sorted(emodb.MALE_SPEAKERS | emodb.FEMALE_SPEAKERS)
    assert len(folds) == 10
    assert [f.test for f in folds] == [[s] for s in speakers]
    assert_partitions(folds, speakers)
    same_gender = F.folds_from_stats(stats_path, "loso-speaker",
                                     validation="next-same-gender")
    assert all(f.validation[0] in emodb.MALE_SPEAKERS for f in same_gender
               if f.test[0] in emodb.MALE_SPEAKERS)


# --- select (the recipes' --folds) --------------------------------------------------------


def _swapped():
    return F.leave_one_session_out(IEMOCAP_SESSIONS, swap=True, genders=IEMOCAP_GENDERS)


def test_select_takes_all_or_the_first_n_folds():
    folds = _swapped()
    assert F.select(folds) == folds and F.select(folds, "") == folds
    assert F.select(folds, 3) == folds[:3]
    assert [f.name for f in F.select(folds, " 2 ")] == ["session1-test-Ses01M",
                                                        "session1-test-Ses01F"]
    assert F.select(folds, "10") == folds
    for bad in (0, "11"):
        with pytest.raises(ValueError, match=r"choose 1\.\.10 folds"):
            F.select(folds, bad)


def test_select_by_fold_name_test_speaker_or_session_prefix_in_protocol_order():
    folds = _swapped()
    assert [f.name for f in F.select(folds, "session3-test-Ses03M")] == [
        "session3-test-Ses03M"]
    assert [f.test for f in F.select(folds, "Ses05F")] == [["Ses05F"]]
    # "session2" is the prefix of both folds of session 2 (each speaker tested once).
    assert [f.name for f in F.select(folds, "session2")] == ["session2-test-Ses02M",
                                                             "session2-test-Ses02F"]
    # Protocol order, whatever the order of the names; a fold named twice comes once.
    assert [f.name for f in F.select(folds, "Ses05F, session1-test-Ses01M,session2,Ses02M")] \
        == ["session1-test-Ses01M", "session2-test-Ses02M", "session2-test-Ses02F",
            "session5-test-Ses05F"]


def test_select_names_unknown_folds_and_lists_the_choices():
    folds = F.leave_one_session_out(IEMOCAP_SESSIONS, genders=IEMOCAP_GENDERS)
    with pytest.raises(ValueError, match=r"unknown fold\(s\) \['Ses01F', 'session7'\]") as info:
        F.select(folds, "Ses01F,session7,Ses02M")  # Ses01F only validates here
    message = str(info.value)
    assert "session5-test-Ses05M" in message
    assert "test speakers: ['Ses01M', 'Ses02M', 'Ses03M', 'Ses04M', 'Ses05M']" in message
