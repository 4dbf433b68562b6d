"""The keras-ser command: folds from a converted corpus, predict with an export, usage errors."""

import json
import os
import re
import shutil
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import soundfile
import soxr
import tensorflow as tf
from helpers import write_corrupt, write_empty, write_tone

from keras_ser import audio, cli, folds
from keras_ser.serving import builders, predict, savedmodel


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


# --- keras-ser predict -------------------------------------------------------------------

CLASSES = ["anger", "happiness", "sadness"]
LINE = re.compile(r"^  (\w+)\s+(\d\.\d{3})(?:  votes (\d\.\d{2}))?$")
MELS = 16


def dense_classifier(crop, seed):
    """(n, crop, MELS) -> (n, 3) softmax with seeded, uneven weights."""
    inputs = keras.Input(shape=(crop, MELS))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(
                                     stddev=0.3, seed=seed))(x)
    return keras.Model(inputs, outputs)


def exported_probabilities(path, wav):
    waveform = audio.load_waveform(wav)[np.newaxis]
    return predict.load(path)(waveform=tf.constant(waveform))["probabilities"].numpy()[0]


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """``<base>/crop/1`` and ``/2``, two classifiers behind one front end, and a tone."""
    folder = tmp_path_factory.mktemp("predict")
    wav = write_tone(str(folder / "tone.wav"), seconds=1.0, freq=240.0)
    front = builders.FrontEnd("chang", {"min": -100.0, "max": 20.0}, crop_frames=8,
                              feature_overrides={"n_mels": MELS})
    base = str(folder / "export")
    paths = [savedmodel.export_model(builders.build_serving_model(
                 dense_classifier(8, seed), front, CLASSES),
                 base, "crop", class_names=CLASSES, front=front) for seed in (1, 2)]
    return SimpleNamespace(wav=wav, base=base, paths=paths,
                           probs=[exported_probabilities(p, wav) for p in paths])


def printed(out):
    """(first line, [(class, probability)]) of one file's text output (vote shares, if
    printed, in `printed_votes`)."""
    lines = out.splitlines()
    rows = [LINE.match(line).groups() for line in lines[1:]]
    return lines[0], [(name, float(p)) for name, p, _ in rows]


def printed_votes(out):
    """[(class, vote share)] of a vote export's text output, in the printed order."""
    return [(m.group(1), float(m.group(3))) for m in map(LINE.match, out.splitlines()[1:])]


def test_predict_accepts_the_base_model_and_version_folders(crop, capsys):
    v1, v2 = crop.probs
    assert np.abs(v1 - v2).max() > 0.05  # the output shows which version answered
    model_dir = os.path.join(crop.base, "crop")
    for path, expected in ((crop.base, v2), (model_dir, v2), (crop.paths[1], v2),
                           (crop.paths[0], v1)):
        assert cli.main(["predict", path, crop.wav]) == 0
        first, rows = printed(capsys.readouterr().out)
        assert first == f"{crop.wav}: {CLASSES[int(np.argmax(expected))]}"
        assert sorted(name for name, _ in rows) == CLASSES
        values = [p for _, p in rows]
        assert values == sorted(values, reverse=True)
        for name, value in rows:
            assert abs(value - expected[CLASSES.index(name)]) <= 0.0005 + 1e-6


def test_predict_json_of_a_44k_flac_matches_its_16k_original(crop, tmp_path, capsys):
    flac = str(tmp_path / "tone_44k.flac")
    soundfile.write(flac, soxr.resample(audio.load_waveform(crop.wav), 16000, 44100,
                                        quality="HQ"), 44100, format="FLAC", subtype="PCM_16")
    assert soundfile.info(flac).samplerate == 44100
    assert cli.main(["predict", crop.base, flac, crop.wav, "--json"]) == 0
    resampled, original = map(json.loads, capsys.readouterr().out.splitlines())
    assert (resampled["file"], original["file"]) == (flac, crop.wav)
    assert set(original) == {"file", "probabilities", "predicted"}
    p44 = np.array([resampled["probabilities"][c] for c in CLASSES])
    p16 = np.array([original["probabilities"][c] for c in CLASSES])
    np.testing.assert_allclose(p16, crop.probs[1], atol=1e-5)
    assert original["predicted"] == CLASSES[int(np.argmax(p16))]
    np.testing.assert_allclose(p44, p16, atol=0.05)


@pytest.fixture(scope="module")
def vote(tmp_path_factory):
    """A crop classifier voting over its windows, built so the vote and the mean disagree.

    The utterance is one loud window then two quiet ones. The classifier is sure of
    "anger" on loud windows (p = 0.996) and leans to "happiness" on quiet ones (0.599
    against 0.401): the mean probability favours anger (0.600), two of three windows
    vote happiness.
    """
    folder = tmp_path_factory.mktemp("vote")
    noise = np.random.default_rng(0).standard_normal(12800)
    waveform = np.concatenate([0.3 * noise[:4096], 0.001 * noise[4096:]])
    wav = str(folder / "loud_then_quiet.wav")
    soundfile.write(wav, waveform.astype(np.float32), 16000, subtype="FLOAT")
    front = builders.FrontEnd("chang", {"min": -100.0, "max": 20.0}, crop_frames=8,
                              hop_frames=8, aggregate="vote",
                              feature_overrides={"n_mels": MELS})
    windows = builders.build_units_model(front)(audio.load_waveform(wav)[np.newaxis])
    level = windows.numpy()[0].mean(axis=(1, 2))
    assert level.shape == (3,) and level[0] - level[1:].max() > 0.1
    threshold = (level[0] + level[1:].max()) / 2.0  # sigmoid(+-10): 1 loud, 0 quiet
    gain = 20.0 / (level[0] - level[1:].max())
    inputs = keras.Input(shape=(8, MELS))
    x = keras.layers.GlobalAveragePooling1D()(inputs)
    is_loud = keras.layers.Dense(1, activation="sigmoid")
    x = is_loud(x)
    head = keras.layers.Dense(len(CLASSES), activation="softmax")
    outputs = head(x)
    is_loud.set_weights([np.full((MELS, 1), gain / MELS), np.array([-gain * threshold])])
    head.set_weights([np.array([[6.0, 0.0, 0.0]]), np.array([-0.4, 0.0, -10.0])])
    model = builders.build_serving_model(keras.Model(inputs, outputs), front, CLASSES)
    base = str(folder / "export")
    savedmodel.export_model(model, base, "vote", class_names=CLASSES, front=front)
    return SimpleNamespace(wav=wav, base=base)


def test_predict_with_a_vote_export_prints_the_voted_class(vote, capsys):
    assert cli.main(["predict", vote.base, vote.wav]) == 0
    out = capsys.readouterr().out
    first, rows = printed(out)
    assert first == f"{vote.wav}: happiness"
    assert rows == [("anger", 0.6), ("happiness", 0.4), ("sadness", 0.0)]
    assert printed_votes(out) == [("anger", 0.33), ("happiness", 0.67), ("sadness", 0.0)]
    assert cli.main(["predict", vote.base, vote.wav, "--json"]) == 0
    [result] = map(json.loads, capsys.readouterr().out.splitlines())
    assert result["predicted"] == "happiness"
    assert result["votes"] == pytest.approx({"anger": 1 / 3, "happiness": 2 / 3,
                                             "sadness": 0.0}, abs=1e-6)
    assert result["probabilities"]["anger"] == pytest.approx(0.5996, abs=1e-4)


def test_predict_bad_file_exits_1_bad_model_exits_2(crop, tmp_path, capsys):
    def fails(*args):
        assert cli.main(["predict", *args]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
        return err.strip()

    def file_fails(bad):
        """A bad file costs its own line (exit 1); the good one is still answered."""
        assert cli.main(["predict", crop.base, crop.wav, bad]) == 1
        out, err = capsys.readouterr()
        first, *_, last = out.splitlines()
        assert first.startswith(f"{crop.wav}: ")
        assert err == "keras-ser predict: 1 of 2 file(s) failed\n"
        return last

    missing = str(tmp_path / "missing.wav")
    assert file_fails(missing) == f"{missing}: error: no such audio file"
    corrupt = write_corrupt(str(tmp_path / "corrupt.wav"))
    assert file_fails(corrupt).startswith(f"{corrupt}: error: cannot decode audio")
    empty = write_empty(str(tmp_path / "empty.wav"))
    assert file_fails(empty) == f"{empty}: error: empty audio (0 samples)"
    short = str(tmp_path / "short.wav")
    soundfile.write(short, np.zeros(500, np.float32), 16000)
    err = file_fails(short)
    assert err.startswith(f"{short}: error: audio too short: 500 samples")
    assert "1024 samples" in err
    no_model = str(tmp_path / "no_model")
    assert fails(no_model, crop.wav) == f"error: {no_model}: no such model folder"
    assert "not an exported model" in fails(str(tmp_path), crop.wav)
    two = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(crop.paths[0], str(two / name / "1"))
    assert "holds several models ['a', 'b']" in fails(str(two), crop.wav)
