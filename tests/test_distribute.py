"""tf.distribute for every trainer: 2 replicas with global batch B train as 1 replica with
batch B (mirrored on 2 logical CPUs; multi-worker on 2 processes on 127.0.0.1), the chief
alone writes checkpoints, and a run resumes after a worker is killed.

Each training job runs in its own process (`tests/distributed_job.py`): logical devices and
a multi-worker strategy must be made before TensorFlow initialises.

Tolerances: variables agree to 1e-4 absolute after two steps (a tenth of one Adam step at
the jobs' learning rate 1e-3: the replicas' gradients are summed in another order, which
changes the last bits, and Adam divides a near-zero gradient by its own size); epoch
losses to 1e-4 relative or 1e-5 absolute. The CRNN (SGD) agrees to 1e-6.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_ser import distribute

JOB = os.path.join(os.path.dirname(__file__), "distributed_job.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return env


def _run(trainer, strategy, out, *extra):
    done = subprocess.run([sys.executable, JOB, trainer, strategy, str(out), *extra],
                          env=_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(os.path.join(out, "result.npz")))


def _compare(one, two, atol):
    assert int(one.pop("replicas")) == 1 and int(two.pop("replicas")) == 2
    assert set(one) == set(two)
    one = {k: v for k, v in one.items() if not k.startswith("init/")}
    variables = [k for k in one if k.startswith("var/")]
    logs = [k for k in one if k.startswith("log/")]
    assert len(variables) > 10 and len(logs) >= 3
    for key in variables:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=atol, err_msg=key)
    for key in logs:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
    return variables


@pytest.mark.slow
@pytest.mark.parametrize("trainer, atol", [("multitask", 1e-4), ("wgan_gp", 1e-4),
                                           ("crnn", 1e-6)])
def test_two_mirrored_replicas_train_as_one(tmp_path, trainer, atol):
    one = _run(trainer, "default", tmp_path / "one")
    two = _run(trainer, "mirrored", tmp_path / "two")
    variables = _compare(one, two, atol)
    # Training moved the weights (the comparison is not of two untouched models), and
    # both runs started from the same ones.
    for key in (k for k in one if k.startswith("init/")):
        np.testing.assert_array_equal(two[key], one[key])
    moved = max(float(np.max(np.abs(one[k] - one[k.replace("init/", "var/", 1)])))
                for k in one if k.startswith("init/"))
    assert moved > 10 * atol
    # The batch statistics and the power iteration are the global batch's.
    if trainer == "wgan_gp":
        assert any(k.endswith("vector_u") for k in variables)
    else:
        assert any("moving_mean" in k for k in variables)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(out, ports, *extra):
    workers = [f"127.0.0.1:{p}" for p in ports]
    return [subprocess.Popen(
        [sys.executable, JOB, "crnn", "multiworker", str(out), "--epochs", "4", *extra],
        env=_env(distribute.tf_config(workers, i)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(len(workers))]


def _finish(procs, timeout=300):
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _state(path):
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_two_workers_on_loopback_equal_one_and_resume_after_a_worker_is_killed(tmp_path):
    single = _run("crnn", "default", tmp_path / "single", "--epochs", "4")
    out = tmp_path / "multi"
    state_file = out / "ckpt" / "state.json"
    procs = _workers(out, _free_ports(2), "--pause", "2")
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            state = _state(state_file)
            if state and state["epochs_done"] >= 2:
                break
            assert all(p.poll() is None for p in procs), _finish(procs)
            time.sleep(0.2)
        else:
            pytest.fail("the workers did not finish 2 epochs")
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        # The chief cannot go on alone (its collectives wait for the lost worker):
        # a cluster is restarted as a whole, from the chief's checkpoint.
        time.sleep(3)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    interrupted = _state(state_file)["epochs_done"]
    assert 2 <= interrupted < 4
    # Only the chief wrote a checkpoint; the other worker's scratch folder holds none.
    scratch = out / ".workers" / "worker-1"
    assert not list(scratch.rglob("*.weights.h5")) and not list(scratch.rglob("state.json"))
    logs = _finish(_workers(out, _free_ports(2)))
    for log in logs:
        assert f"resuming after epoch {interrupted} of 4" in log, log[-2000:]
    chief = dict(np.load(out / "result.npz"))
    other = dict(np.load(scratch / "result.npz"))
    assert int(chief["replicas"]) == 2 and "chief=True" in logs[0] and "chief=False" in logs[1]
    for key, value in chief.items():  # both workers end with identical weights ...
        np.testing.assert_array_equal(other[key], value, err_msg=key)
    _compare(single, chief, atol=1e-6)  # ... equal to one worker's uninterrupted run
    assert sorted(os.listdir(out / "ckpt")) == ["epoch-0004.weights.h5", "state.json"]


def test_strategy_errors_and_helpers_without_replicas(monkeypatch):
    import keras

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="unknown strategy"):
        distribute.make_strategy("tpu")
    with pytest.raises(ValueError, match="--devices must be >= 1"):
        distribute.make_strategy("mirrored", 0)
    # One replica: every helper is the identity, the draw is the plain draw.
    assert distribute.num_replicas() == 1 and distribute.is_chief()
    assert not distribute.synchronized_batch_norm()
    loss = keras.ops.convert_to_tensor(3.0)
    assert float(distribute.scale_loss(loss)) == 3.0
    share, mean = distribute.global_mean(keras.ops.convert_to_tensor(6.0),
                                         keras.ops.convert_to_tensor(4.0))
    assert float(share) == float(mean) == 1.5
    a = distribute.replica_draw(keras.random.normal, (3, 2), seed=keras.random.SeedGenerator(5))
    b = keras.random.normal((3, 2), seed=keras.random.SeedGenerator(5))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert distribute.worker_folder("x") == "x" and distribute.chief_path("x/y") == "x/y"


@pytest.mark.parametrize("recipe", ["crnn_vtlp", "multitask_dcgan", "speaker_adversarial",
                                    "sngan_synthetic", "transfer_gan_augment"])
def test_every_recipe_has_the_scaling_options_and_rejects_bad_ones(tmp_path, recipe,
                                                                   monkeypatch, capsys):
    from helpers import load_recipe

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    main = load_recipe(recipe).main
    out = str(tmp_path / "run")
    assert main(["--strategy", "multiworker", "--out", out]) == 2
    assert "needs TF_CONFIG" in capsys.readouterr().err
    assert main(["--data-service", "localhost:5050", "--out", out]) == 2
    assert "grpc://HOST:PORT" in capsys.readouterr().err
    assert main(["--strategy", "mirrored", "--devices", "0", "--out", out]) == 2
    assert "--devices must be >= 1" in capsys.readouterr().err
