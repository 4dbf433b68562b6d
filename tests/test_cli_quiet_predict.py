"""Quiet start-up (`keras_ser.quiet`) and ``keras-ser predict`` on many inputs."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
from helpers import tiny_crop_classifier, write_corrupt, write_empty, write_tone

from keras_ser import cli
from keras_ser.serving import builders, predict, savedmodel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_NOISE = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard")
CLASSES = ["anger", "happiness", "sadness"]
MELS = 16


def run(*args, env=None):
    """``args`` in a fresh interpreter from the repository root (TF start-up included)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_SER_TF_LOGS")}
    environ.update(PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=environ, check=False)


def noise(proc):
    both = proc.stdout + proc.stderr
    return [word for word in TF_NOISE if word in both]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A crop export (min 1024 samples) and a folder of good and bad files."""
    root = tmp_path_factory.mktemp("quiet_predict")
    front = builders.FrontEnd("chang", {"min": -100.0, "max": 20.0}, crop_frames=8,
                              feature_overrides={"n_mels": MELS})
    base = str(root / "export")
    savedmodel.export_model(
        builders.build_serving_model(tiny_crop_classifier(8, MELS, len(CLASSES)), front,
                                     CLASSES),
        base, "crop", class_names=CLASSES, front=front)
    assert predict.read_metadata(base)["min_samples"] == 1024
    folder = root / "audio"
    good = [write_tone(str(folder / "a_good.wav"), seconds=1.0, freq=200.0),
            write_tone(str(folder / "b_good.wav"), seconds=1.0, freq=330.0, seed=1),
            write_tone(str(folder / "sub" / "c_good.flac"), seconds=0.7, freq=260.0,
                       seed=2),
            write_tone(str(folder / "sub" / "d_good.wav"), seconds=1.0, freq=410.0, seed=3)]
    corrupt = write_corrupt(str(folder / "corrupt.wav"))
    empty = write_empty(str(folder / "empty.wav"))
    short = str(folder / "sub" / "short.wav")
    soundfile.write(short, np.zeros(500, np.float32), 16000)
    (folder / "notes.txt").write_text("not audio, skipped by the folder search\n")
    missing = str(root / "missing.wav")
    listed = root / "list.txt"
    listed.write_text(f"# files to classify\n\n{good[0]}\n  {missing}\n{corrupt}\n")
    files = sorted([*good, corrupt, empty, short])  # the folder walk: sorted, files first
    walk = [str(folder / n) for n in ("a_good.wav", "b_good.wav", "corrupt.wav",
                                      "empty.wav")]
    walk += [str(folder / "sub" / n) for n in ("c_good.flac", "d_good.wav", "short.wav")]
    assert sorted(walk) == files
    return SimpleNamespace(base=base, folder=str(folder), good=good, corrupt=corrupt,
                           empty=empty, short=short, missing=missing, walk=walk,
                           list=f"@{listed}", listed=[good[0], missing, corrupt])


# --- quiet start-up ------------------------------------------------------------------------

def test_keras_ser_help_is_quiet():
    proc = run("-m", "keras_ser.cli", "--help")
    assert proc.returncode == 0 and "predict" in proc.stdout
    assert noise(proc) == [] and proc.stderr == ""


def test_recipe_help_is_quiet_and_imports_tensorflow():
    proc = run("-c", "import runpy, sys; sys.argv = ['multitask_dcgan.py', '--help']; "
                     "runpy.run_path('recipes/multitask_dcgan.py', run_name='__main__')")
    assert proc.returncode == 0, proc.stderr
    assert "--verbose" in proc.stdout
    assert noise(proc) == [], proc.stderr
    loud = run("-c", "import runpy, sys; sys.argv = ['multitask_dcgan.py', '--help']; "
                     "runpy.run_path('recipes/multitask_dcgan.py', run_name='__main__')",
               env={"KERAS_SER_TF_LOGS": "1"})
    assert loud.returncode == 0 and noise(loud), loud.stderr  # TensorFlow was imported


def test_predict_is_quiet_and_verbose_brings_tensorflow_back(mixed):
    args = ("-m", "keras_ser.cli", "predict", mixed.base, mixed.good[0])
    quiet = run(*args)
    assert quiet.returncode == 0, quiet.stderr
    assert noise(quiet) == [] and quiet.stderr == ""
    assert quiet.stdout.startswith(f"{mixed.good[0]}: ")
    loud = run("-m", "keras_ser.cli", "--verbose", *args[2:])
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "absl::InitializeLog" in loud.stderr or "oneDNN" in loud.stderr, loud.stderr
    by_env = run(*args, env={"KERAS_SER_TF_LOGS": "1"})
    assert noise(by_env), by_env.stderr


def test_tensorflow_errors_and_python_warnings_still_show():
    code = ("import warnings, keras_ser, tensorflow as tf; warnings.warn('ours'); "
            "tf.linalg.matmul(tf.ones([1, 3]), tf.ones([1, 1]))")
    proc = run("-c", code)
    assert proc.returncode == 1
    assert "UserWarning: ours" in proc.stderr
    assert "InvalidArgumentError" in proc.stderr and "Matrix size-incompatible" in proc.stderr
    assert noise(proc) == []


# --- predict on many inputs ----------------------------------------------------------------

def heads(out):
    """The unindented lines: one per file."""
    return [line for line in out.splitlines() if not line.startswith("  ")]


def test_predict_folder_and_list_give_a_line_per_file_and_exit_1(mixed, capsys):
    assert cli.main(["predict", mixed.base, mixed.folder, mixed.list]) == 1
    out, err = capsys.readouterr()
    lines = heads(out)
    assert [line.split(": ")[0] for line in lines] == mixed.walk + mixed.listed
    by_file = dict(line.split(": ", 1) for line in lines)
    assert by_file[mixed.corrupt].startswith("error: cannot decode audio")
    assert by_file[mixed.empty] == "error: empty audio (0 samples)"
    assert by_file[mixed.short].startswith("error: audio too short: 500 samples")
    assert by_file[mixed.missing] == "error: no such audio file"
    for good in mixed.good:
        assert by_file[good] in CLASSES
    assert len(out.splitlines()) == len(lines) + 5 * len(CLASSES)  # 5 good answers
    assert err == "keras-ser predict: 5 of 10 file(s) failed\n"


def test_predict_good_files_only_exit_0(mixed, capsys):
    assert cli.main(["predict", mixed.base, *mixed.good]) == 0
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in heads(out)] == mixed.good and err == ""


def test_predict_json_lines_and_batch_size(mixed, capsys):
    def json_lines(*args):
        status = cli.main(["predict", mixed.base, mixed.folder, "--json", *args])
        out = capsys.readouterr().out
        return status, [json.loads(line) for line in out.splitlines()]

    status, rows = json_lines()
    assert status == 1 and [r["file"] for r in rows] == mixed.walk
    for row in rows:
        if row["file"] in mixed.good:
            assert set(row) == {"file", "predicted", "probabilities"}
            assert list(row["probabilities"]) == CLASSES
            assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-5
            assert row["predicted"] == max(row["probabilities"],
                                           key=row["probabilities"].get)
        else:
            assert set(row) == {"file", "error"} and row["error"]
    for size in ("2", "1"):
        status2, rows2 = json_lines("--batch-size", size)
        assert status2 == 1 and [r["file"] for r in rows2] == mixed.walk
        for a, b in zip(rows, rows2):
            assert a.get("error") == b.get("error")
            if "probabilities" in a:
                assert np.allclose(list(a["probabilities"].values()),
                                   list(b["probabilities"].values()), atol=1e-6)
    # the library answer equals the one-file-at-a-time API
    [alone] = predict.predict_files(mixed.base, [mixed.good[1]])
    batched = next(r for r in rows if r["file"] == mixed.good[1])
    assert np.allclose(list(alone["probabilities"].values()),
                       list(batched["probabilities"].values()), atol=1e-6)


def test_predict_usage_errors_exit_2(mixed, tmp_path, capsys):
    def fails(*args):
        assert cli.main(["predict", *args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
        return err

    assert "no such model folder" in fails(str(tmp_path / "nope"), mixed.good[0])
    assert "takes no speaker statistics" in fails(mixed.base, mixed.good[0],
                                                  "--same-speaker")
    empty_list = tmp_path / "empty.txt"
    empty_list.write_text("# nothing\n\n")
    assert "no input file" in fails(mixed.base, f"@{empty_list}")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", mixed.base, mixed.good[0], "--batch-size", "0"])
    assert exit_info.value.code == 2
    capsys.readouterr()


def test_unreadable_list_and_empty_folder_are_per_input_errors(mixed, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    status = cli.main(["predict", mixed.base, f"@{tmp_path / 'absent.txt'}",
                       str(tmp_path / "nothing"), mixed.good[0], "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1 and len(rows) == 3
    assert rows[0]["error"].startswith("cannot read the list")
    assert rows[1]["error"].startswith("no audio file in this folder")
    assert rows[2]["predicted"] in CLASSES
