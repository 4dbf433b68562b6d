"""Distributed KerasTuner search: ``--tuner-role chief|worker --tuner-address HOST:PORT``.

The mapping of the options to KerasTuner's ``KERASTUNER_*`` variables, resuming across
roles and workers joining late run in-process on a one-line hypermodel; the recipe test
runs a chief and two workers of recipes/multitask_dcgan.py on 127.0.0.1 for 4 trials of
the smoke-test corpus.
"""

import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time

import keras
import keras_tuner as kt
import pytest
from helpers import load_recipe

from keras_ser import tuning
from keras_ser.models import dcgan
from tfrecords_tools import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "multitask_dcgan.py")


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _free_ports(n=1):
    """A port p of 127.0.0.1 with p .. p + n - 1 free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + n > 65536:
            continue
        try:
            for k in range(1, n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        return port
    raise RuntimeError("no free ports")


def _in_thread(fn, timeout=120):
    """``fn()`` in a daemon thread; fails instead of hanging (a chief that serves)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Parabola(kt.HyperModel):
    """Two hyper-parameters, a one-weight model, a score computed from the values."""

    def build(self, hp):
        hp.Float("x", -1.0, 1.0)
        hp.Choice("k", [1, 2, 3])
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def fit(self, hp, model, *args, **kwargs):
        return {"score": hp["k"] - hp["x"] ** 2}


def test_roles_and_addresses_map_to_kerastuner_variables():
    chief = tuning.tuner_cluster("chief", "127.0.0.1:8470", environ={})
    assert (chief.role, chief.host, chief.port, chief.tuner_id) == (
        "chief", "127.0.0.1", 8470, "chief")
    one = tuning.tuner_cluster("worker", "[::1]:8470", environ={})
    assert one.worker and one.host == "[::1]" and str(os.getpid()) in one.tuner_id
    assert "chief" not in one.tuner_id
    # Without an address the chief's comes from KerasTuner's own variables.
    env = {"KERASTUNER_ORACLE_IP": "10.0.0.5", "KERASTUNER_ORACLE_PORT": "9000"}
    assert tuning.tuner_cluster("worker", environ=env).address(2) == "10.0.0.5:9002"
    # Role local: no variables, no distribution; with them, KerasTuner's rule decides.
    assert not tuning.tuner_cluster(environ={}).distributed
    assert tuning.tuner_cluster(environ={**env, "KERASTUNER_TUNER_ID": "chief"}).role == "chief"
    mine = tuning.tuner_cluster(environ={**env, "KERASTUNER_TUNER_ID": "gpu-box-1"})
    assert (mine.role, mine.tuner_id) == ("worker", "gpu-box-1")


@pytest.mark.parametrize("role, address, environ, message", [
    ("worker", "localhost", {}, "expected HOST:PORT"),
    ("worker", "localhost:http", {}, "expected HOST:PORT"),
    ("chief", "localhost:0", {}, "1-65535"),
    ("chief", "localhost:70000", {}, "1-65535"),
    ("chief", "::1:8470", {}, r"\[::1\]:8470"),
    ("chief", ":8470", {}, "expected HOST:PORT"),
    ("local", "localhost:8470", {}, "needs --tuner-role chief or worker"),
    ("chief", None, {}, "needs --tuner-address"),
    ("leader", "localhost:8470", {}, "local, chief or worker"),
    ("local", None, {"KERASTUNER_ORACLE_IP": "h", "KERASTUNER_ORACLE_PORT": "1"},
     "KERASTUNER_TUNER_ID is not"),
    ("local", None, {"KERASTUNER_ORACLE_IP": "h", "KERASTUNER_TUNER_ID": "chief"},
     "KERASTUNER_ORACLE_IP/KERASTUNER_ORACLE_PORT"),
])
def test_bad_roles_and_addresses_are_named(role, address, environ, message):
    with pytest.raises(ValueError, match=message):
        tuning.tuner_cluster(role, address, environ=environ)


def test_environment_is_set_per_search_and_restored(monkeypatch):
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "kept")
    monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    with tuning.tuner_environment(tuning.TunerCluster()):
        assert os.environ["KERASTUNER_TUNER_ID"] == "kept"
        assert "KERASTUNER_ORACLE_IP" not in os.environ
    worker = tuning.tuner_cluster("worker", "127.0.0.1:9000", environ={})
    with tuning.tuner_environment(worker, 3):
        assert os.environ["KERASTUNER_TUNER_ID"] == worker.tuner_id
        assert os.environ["KERASTUNER_ORACLE_IP"] == "127.0.0.1"
        assert os.environ["KERASTUNER_ORACLE_PORT"] == "9003"
    assert os.environ["KERASTUNER_TUNER_ID"] == "kept"
    assert "KERASTUNER_ORACLE_IP" not in os.environ
    assert "KERASTUNER_ORACLE_PORT" not in os.environ
    top = tuning.tuner_cluster("chief", "h:65535", environ={})
    with pytest.raises(ValueError, match="65535"), tuning.tuner_environment(top, 1):
        pass


def test_recipes_refuse_bad_tuner_options_before_reading_data(capsys):
    recipe = load_recipe("speaker_adversarial")
    assert recipe.main(["--tuner-role", "worker", "--tuner-address", "127.0.0.1:9"]) == 2
    assert "--tuner-role worker needs --search" in capsys.readouterr().err
    recipe = load_recipe("multitask_dcgan")
    assert recipe.main(["--search", "--tuner-role", "chief", "--tuner-address", "h:x"]) == 2
    assert "--tuner-address: expected HOST:PORT" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        assert recipe.main(["--search", "--tuner-role", "chief", "--tuner-address",
                            address]) == 2
    assert f"cannot serve its KerasTuner oracle at {address}" in capsys.readouterr().err


def test_finished_search_resumes_across_roles_without_serving(tmp_path):
    """A chief re-run on finished trials (here a local search's) reloads them, serves
    nothing and returns at once; a worker whose search is over skips it."""
    directory = str(tmp_path / "search")
    local = tuning.run_search(_Parabola(), "score", directory, "p", 3, seed=1)
    assert len(local.end_order) == 3
    port = _free_ports(2)
    chief = tuning.tuner_cluster("chief", f"127.0.0.1:{port}", environ={})
    before = dict(os.environ)
    oracle = _in_thread(lambda: tuning.run_search(_Parabola(), "score", directory, "p", 3,
                                                  seed=1, cluster=chief))
    assert dict(os.environ) == before and chief.searches == 1
    assert {t: v.hyperparameters.values for t, v in oracle.trials.items()} == {
        t: v.hyperparameters.values for t, v in local.trials.items()}
    assert oracle.get_best_trials(1)[0].trial_id == local.get_best_trials(1)[0].trial_id
    assert not tuning._listening("127.0.0.1", port)
    # A worker joining when the chief already serves its next search skips this one.
    worker = tuning.tuner_cluster("worker", f"127.0.0.1:{port}", environ={})
    with socket.socket() as later:
        later.bind(("127.0.0.1", port + 1))
        later.listen()
        assert _in_thread(lambda: tuning.run_search(
            _Parabola(), "score", str(tmp_path / "worker"), "p", 3, cluster=worker)) is None
    assert worker.searches == 1
    assert not glob.glob(str(tmp_path / "worker" / "p" / "trial_*" / "trial.json"))


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    smoke.make_smoke_corpus(out)
    return os.path.join(out, "records")


@pytest.mark.slow
def test_chief_and_two_workers_share_four_trials(smoke_records, tmp_path):
    """A chief and two workers on 127.0.0.1: the workers run the 4 trials between them
    and exit 0 with one line; the chief writes best.json as a local search does (a
    local re-run of its folder rewrites the same file) and trains the fold."""
    port = _free_ports()
    common = [sys.executable, RECIPE, "--data", smoke_records, "--corpus", "smoke",
              "--models", "basic_cnn", "--folds", "1", "--search", "--max-trials", "4",
              "--max-epochs", "1", "--patience", "1", "--no-export", "--verbose", "0",
              "--tuner-address", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    outs = {name: str(tmp_path / name) for name in ("worker1", "worker2", "chief")}
    procs, deadline = {}, time.monotonic() + 600

    def log(name):
        with open(os.path.join(str(tmp_path), f"{name}.log"), encoding="utf-8") as f:
            return f.read()

    with contextlib.ExitStack() as files:
        try:
            for name, out in outs.items():
                if name == "chief":  # once both workers wait, so that both get trials
                    while not all("waiting for the chief's oracle" in log(w)
                                  for w in procs) and time.monotonic() < deadline:
                        dead = [w for w, p in procs.items() if p.poll() is not None]
                        assert not dead, log(dead[0])[-3000:]
                        time.sleep(0.5)
                stream = files.enter_context(open(os.path.join(str(tmp_path), f"{name}.log"),
                                                  "w", encoding="utf-8"))
                procs[name] = subprocess.Popen(
                    common + ["--out", out, "--tuner-role", name.rstrip("12")], env=env,
                    stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT)
            for proc in procs.values():
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = {name: log(name) for name in procs}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{text[name][-3000:]}"
    for name in ("worker1", "worker2"):
        closing = [line for line in text[name].splitlines() if line.startswith("tuner worker")]
        assert closing[-1].endswith("the chief trains the folds and writes the results")
        assert not os.path.exists(os.path.join(outs[name], "results.json"))
        assert not os.path.exists(os.path.join(outs[name], "runs"))
        assert not os.path.exists(os.path.join(outs[name], "search", "basic_cnn", "best.json"))
    # 4 trials in the chief's oracle, run by the workers (each at least one), none by it.
    chief = os.path.join(outs["chief"], "search")
    trials = [_json(p) for p in glob.glob(os.path.join(chief, "basic_cnn", "trial_*",
                                                       "trial.json"))]
    assert len(trials) == 4 and {t["status"] for t in trials} == {"COMPLETED"}
    ran = {name: [_json(p)["validation"]["primary_ua"] for p in glob.glob(os.path.join(
        outs[name], "search", "trials", "basic_cnn", "*", "result.json"))]
        for name in ("worker1", "worker2")}
    assert all(ran.values()) and sum(map(len, ran.values())) == 4, ran
    assert sorted(t["score"] for t in trials) == pytest.approx(sorted(ran["worker1"]
                                                                      + ran["worker2"]))
    assert not os.path.exists(os.path.join(chief, "trials"))
    # best.json: the local search's keys, in its order, and the best of the 4 trials.
    best = _json(os.path.join(chief, "basic_cnn", "best.json"))
    assert list(best) == ["model", "hyperparameters", "config", "val_primary_ua", "trials",
                          "search_fold"]
    assert list(best["hyperparameters"]) == ["crop_frames", "filters", "batch_size",
                                             "learning_rate"]
    assert set(best["config"]) == set(dcgan.DCGANConfig().to_dict())
    assert (best["trials"], best["search_fold"]) == (4, "test-f01")
    assert best["val_primary_ua"] == pytest.approx(max(t["score"] for t in trials))
    # The chief's results use the best values.
    results = _json(os.path.join(outs["chief"], "results.json"))
    used = results["folds"][0]["config"]
    assert (used["crop_frames"], used["filters"]) == (best["hyperparameters"]["crop_frames"],
                                                      best["hyperparameters"]["filters"])
    # Resume: the same command run locally finds the 4 trials finished, trains nothing,
    # and rewrites the same best.json and results.
    argv = common[2:-2] + ["--out", outs["chief"]]
    assert load_recipe("multitask_dcgan").main(argv) == 0
    assert _json(os.path.join(chief, "basic_cnn", "best.json")) == best
    assert _json(os.path.join(outs["chief"], "results.json"))["folds"] == results["folds"]
