"""Shared fixtures: the real recordings in ../shared/data and small generated audio."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_HERE = os.path.dirname(os.path.abspath(__file__))


def shared_data_dir():
    """The real-data folder: $KERAS_SER_DATA, else ../shared/data beside the project."""
    return os.environ.get("KERAS_SER_DATA") or os.path.normpath(
        os.path.join(_HERE, "..", "..", "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data. Fails under CI=true when missing; skips otherwise."""
    path = shared_data_dir()
    if not os.path.isdir(os.path.join(path, "emodb", "wav")):
        message = (f"real data not found at {path} (set KERAS_SER_DATA or place "
                   "../shared/data beside the project)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def emodb_records(shared_data, tmp_path_factory):
    """EmoDB converted once per test session; returns (out_dir, Report)."""
    from tfrecords_tools import reader, writer

    out = str(tmp_path_factory.mktemp("emodb_records"))
    report = writer.convert(reader.get_reader("emodb"), os.path.join(shared_data, "emodb"),
                            out, shard_size=128, progress=False)
    return out, report


@pytest.fixture(scope="session")
def aligned_records(shared_data, tmp_path_factory):
    """The TextGrid-aligned recordings converted with the "speech" reader; (out_dir, Report)."""
    from tfrecords_tools import reader, writer

    out = str(tmp_path_factory.mktemp("aligned_records"))
    report = writer.convert(reader.get_reader("speech"), os.path.join(shared_data, "aligned"),
                            out, progress=False)
    return out, report


@pytest.fixture(scope="module")
def emodb_speech(shared_data):
    """EmoDB utterance 03a01Fa.wav as float32 in [-1, 1] (16 kHz)."""
    import soundfile

    y, rate = soundfile.read(os.path.join(shared_data, "emodb", "wav", "03a01Fa.wav"),
                             dtype="float32")
    assert rate == 16000
    return y
