"""The keras-ser command: folds from a converted corpus, usage errors."""

import json

import pytest

from keras_ser import cli, folds


@pytest.mark.real_data
def test_folds_command_writes_ten_emodb_folds_each_speaker_tested_once(emodb_records, tmp_path,
                                                                       capsys):
    out, _ = emodb_records
    path = str(tmp_path / "folds.json")
    assert cli.main(["folds", out, path, "--protocol", "loso-speaker",
                     "--validation", "next-other-gender"]) == 0
    loaded, meta = folds.load_folds(path)
    assert meta["protocol"] == "loso-speaker" and meta["corpus"] == "emodb"
    assert sorted(f.test[0] for f in loaded) == ["03", "08", "09", "10", "11", "12", "13",
                                                 "14", "15", "16"]
    with open(out + "/stats.json", encoding="utf-8") as f:
        genders = {s: v["gender"] for s, v in json.load(f)["speakers"].items()}
    assert all(genders[f.validation[0]] != genders[f.test[0]] for f in loaded)
    assert "10 folds ->" in capsys.readouterr().out


@pytest.mark.real_data
def test_folds_command_refuses_session_folds_for_one_speaker_sessions(emodb_records, tmp_path,
                                                                      capsys):
    out, _ = emodb_records
    assert cli.main(["folds", out, str(tmp_path / "f.json"), "--protocol",
                     "loso-session"]) == 2
    assert "session '03' holds 1 speaker" in capsys.readouterr().err


def test_unknown_command_prints_usage_and_fails(capsys):
    assert cli.main(["train-everything"]) == 2
    assert "convert" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
