"""The tf.data service option (`keras_ser.data.set_data_service`, ``--data-service``).

An in-process dispatcher and worker (free ports, reached at localhost) run the training pipelines of
the smoke corpus and of a synthetic patch set: with the same seeds they give exactly the
local batches, epoch by epoch. Statistics and evaluation datasets stay local; malformed
addresses, Python-generated datasets, a dispatcher that does not answer and a second
worker (which would send every batch twice) are refused with clear errors.
"""

import contextlib
import os
import socket
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import data
from tfrecords_tools import patch_records
from tfrecords_tools.smoke import CLASSES, make_smoke_corpus

SERVICE = tf.data.experimental.service


def _servers(workers=1):
    """A dispatcher and ``workers`` workers in this process, on free ports."""
    dispatcher = SERVICE.DispatchServer(SERVICE.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    started = [SERVICE.WorkerServer(SERVICE.WorkerConfig(dispatcher_address=address, port=0))
               for _ in range(workers)]
    return dispatcher, started


def _stop(dispatcher, workers):
    for worker in workers:
        worker.stop()
    dispatcher.stop()


@pytest.fixture(scope="module")
def cluster():
    """One dispatcher and one worker for the module."""
    dispatcher, workers = _servers()
    yield dispatcher
    _stop(dispatcher, workers)


@pytest.fixture
def calls(monkeypatch):
    """The keyword arguments of every `distribute` call made during the test."""
    made = []
    distribute = SERVICE.distribute

    def counted(*args, **kwargs):
        made.append(kwargs)
        return distribute(*args, **kwargs)

    monkeypatch.setattr(SERVICE, "distribute", counted)
    return made


@contextlib.contextmanager
def served(address, **options):
    """`data.set_data_service` for a block, restored after it."""
    previous = data.set_data_service(address, **options)
    try:
        yield
    finally:
        data.set_data_service(previous)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A small smoke corpus (2 speakers x 4 classes x 3 utterances) as records."""
    out = str(tmp_path_factory.mktemp("service_smoke"))
    make_smoke_corpus(out, speakers=2, per_class=3)
    return os.path.join(out, "records")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic patch set: 5 patches of 8 x 4 per class, in 4 shards."""
    def sample(labels, seed):
        rng = np.random.default_rng(seed)
        return (rng.uniform(-0.5, 0.5, (len(labels), 8, 4))
                + 0.1 * labels[:, None, None]).astype(np.float32)

    out = str(tmp_path_factory.mktemp("service_synthetic") / "set")
    patch_records.write_synthetic_records(out, sample, CLASSES, 5, frames=8, n_mels=4,
                                          shard_size=6, progress=False)
    return out


def _batches(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def _assert_same(local, remote):
    assert len(local) == len(remote) > 0
    for a, b in zip(local, remote):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_make_dataset_gives_the_local_batches_of_each_epoch_through_the_service(
        records, cluster, calls):
    """Word-centred crops, per-example VTLP, oversampling, shuffling and per-speaker
    z-scores (a lookup table) drawn from (seed, epoch), under TensorFlow's global seed:
    both epochs, and epoch 1 built on its own (a resumed run), match the local ones."""
    keras.utils.set_random_seed(0)
    own = data.speaker_statistics(records, "eskimez")
    common = {"classes": list(CLASSES), "crop_frames": 24, "crop": "word",
              "vtlp": "example", "oversample": {"anger": 2}, "normalise": "zscore_speaker",
              "stats": {"speakers": own}, "shuffle": True, "seed": 5, "batch_size": 5,
              "cache": True, "keep": ("utterance_id", "speaker")}
    local = _batches(data.make_dataset(records, epochs=(0, 2), **common))
    local_second = _batches(data.make_dataset(records, epochs=(1, 2), **common))
    per_epoch = len(local) // 2
    assert len(local_second) == per_epoch == -(-(24 + 6) // 5)
    assert not np.array_equal(local[0]["features"], local[per_epoch]["features"])
    assert calls == []

    with served(cluster.target):
        both = data.make_dataset(records, epochs=(0, 2), **common)
        assert data.batches_per_epoch(both, (0, 2)) == per_epoch
        remote = _batches(both)
        remote_second = _batches(data.make_dataset(records, epochs=(1, 2), **common))
    assert len(calls) == 2
    assert calls[0]["service"] == cluster.target
    assert calls[0]["processing_mode"] == SERVICE.ShardingPolicy.OFF
    _assert_same(local, remote)
    _assert_same(local_second, remote_second)
    _assert_same(local[per_epoch:], remote_second)


def test_synthetic_dataset_gives_the_local_batches_epoch_seeded_and_endless(
        synthetic, cluster, calls, monkeypatch, tmp_path):
    """Also from a relative folder: the worker gets absolute shard paths (here it reads
    them after the working directory has changed)."""
    common = {"batch_size": 4, "shuffle": True, "seed": 11, "shuffle_buffer": 8,
              "drop_remainder": True}
    local = _batches(data.synthetic_dataset(synthetic, epochs=(0, 2), steps=3, **common))
    endless = _batches(data.synthetic_dataset(synthetic, repeat=True, **common).take(12))
    assert not np.array_equal(local[0]["label"], local[3]["label"])
    with served(cluster.target):
        remote = data.synthetic_dataset(synthetic, epochs=(0, 2), steps=3, **common)
        assert int(remote.cardinality()) == 6
        remote = _batches(remote)
        monkeypatch.chdir(os.path.dirname(synthetic))
        forever = data.synthetic_dataset(os.path.basename(synthetic), repeat=True, **common)
        monkeypatch.chdir(tmp_path)
        assert forever.cardinality() == tf.data.INFINITE_CARDINALITY
        remote_endless = _batches(forever.take(12))
    assert len(calls) == 2
    _assert_same(local, remote)
    _assert_same(endless, remote_endless)


def test_other_datasets_and_opt_outs_stay_local(records, synthetic, cluster, calls):
    """A statistics pass, a dataset reshuffled on each iteration (a service job would
    replay its first epoch), ``data_service=False``, and everything when no service is
    set, are the local pipelines."""
    classes = list(CLASSES)
    with served(cluster.target):
        data.make_dataset(records, classes=classes, batch_size=8)
        data.make_dataset(records, classes=classes, crop_frames=24, shuffle=True,
                          batch_size=8)
        data.make_dataset(records, classes=classes, crop_frames=24, epochs=(0, 1),
                          data_service=False)
        data.synthetic_dataset(synthetic, batch_size=4)
        data.synthetic_dataset(synthetic, batch_size=4, repeat=True, data_service=False)
    data.make_dataset(records, classes=classes, crop_frames=24, epochs=(0, 1))
    data.synthetic_dataset(synthetic, batch_size=4, epochs=(0, 1), steps=2)
    assert calls == []
    assert data.get_data_service() is None


@pytest.mark.parametrize("address", [
    "localhost:5050", "http://localhost:5050", "grpc://localhost", "grpc://:5050",
    "grpc://localhost:0", "grpc://localhost:70000", "grpc://localhost:5050/x",
    "grpc://local host:5050", "grpc://::1:5050", "", 5050])
def test_a_malformed_address_is_refused_and_the_setting_kept(address):
    with served("grpc://dispatcher.example:5050"):
        with pytest.raises(ValueError, match=r"grpc://HOST:PORT .*e\.g\. grpc://localhost:5050"):
            data.set_data_service(address)
        assert data.get_data_service() == "grpc://dispatcher.example:5050"
    assert data.get_data_service() is None


def test_well_formed_addresses_are_taken_without_contacting_them():
    assert data.parse_service_address("grpc://localhost:5050") == ("localhost", 5050)
    assert data.parse_service_address("grpc://10.1.2.3:1") == ("10.1.2.3", 1)
    assert data.parse_service_address("grpc://[::1]:65535") == ("::1", 65535)
    assert data.parse_service_address("grpc://data-0.svc.local:5050")[0] == "data-0.svc.local"
    with served("grpc://nowhere.invalid:5050"):
        assert data.set_data_service("grpc://[::1]:5050") == "grpc://nowhere.invalid:5050"
    with pytest.raises(ValueError, match="connect_timeout"):
        data.set_data_service("grpc://localhost:5050", connect_timeout=0)


def test_a_dataset_running_python_is_refused(cluster, calls):
    generated = tf.data.Dataset.from_generator(
        lambda: iter(range(3)), output_signature=tf.TensorSpec([], tf.int64))
    mapped = tf.data.Dataset.range(3).map(
        lambda x: tf.py_function(lambda y: y + 1, [x], tf.int64))
    with served(cluster.target):
        for dataset in (generated, mapped):
            with pytest.raises(ValueError, match="calls Python .*cannot run"):
                data.service(dataset, "custom")
        assert len(list(data.service(tf.data.Dataset.range(3), "range"))) == 3
    assert len(calls) == 1
    assert data.service(generated, "custom") is generated


def test_a_dispatcher_that_does_not_answer_fails_fast():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    silent = f"grpc://localhost:{port}"
    with served(silent, connect_timeout=0.5), pytest.raises(
            ConnectionError, match=f"no tf.data service dispatcher answers at {silent}"):
        data.service(tf.data.Dataset.range(3), "range")
    assert time.monotonic() - start < 10


def test_a_second_worker_is_caught_instead_of_doubling_the_batches():
    """In processing mode OFF each worker produces the whole dataset."""
    dispatcher, workers = _servers(workers=2)
    try:
        deadline = time.monotonic() + 20
        # A private helper of TensorFlow's own service tests: workers registered so far.
        while dispatcher._num_workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        with served(dispatcher.target):
            doubled = data.service(tf.data.Dataset.range(6), "range")
        with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one worker"):
            list(doubled)
    finally:
        _stop(dispatcher, workers)
