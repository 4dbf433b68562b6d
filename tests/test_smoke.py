"""The synthetic smoke-test corpus: generation, labels, acoustics, reader and conversion.

The default corpus (4 speakers x 4 classes x 10) is generated and converted once per
module; smaller corpora check determinism, skips and reuse.
"""

import glob
import json
import math
import os

import librosa
import numpy as np
import pytest
import soundfile
import tensorflow as tf

from keras_ser import cli as keras_ser_cli
from tfrecords_tools import cli
from tfrecords_tools.reader import get_reader, load_all
from tfrecords_tools.schema import Skipped, Utterance, read_example
from tfrecords_tools.smoke import (
    CLASSES,
    LABEL_FILE,
    SmokeReader,
    make_smoke_corpus,
    write_smoke_wavs,
)
from tfrecords_tools.voice import STYLES, VOWELS, speaker_profiles, synthesise_utterance


def _records(out):
    files = sorted(glob.glob(os.path.join(out, "*.tfrecord")))
    return [read_example(raw.numpy()) for raw in tf.data.TFRecordDataset(files)]


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _skipped(out):
    with open(os.path.join(out, "skipped.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t", 1) for line in lines[1:])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The default corpus: (out_dir, Report, records)."""
    out = str(tmp_path_factory.mktemp("smoke"))
    report = make_smoke_corpus(out)
    return out, report, _records(os.path.join(out, "records"))


# --------------------------------------------------------------------------- generation

def test_synthesise_utterance_is_deterministic_for_a_seed_and_differs_across_seeds():
    speaker = speaker_profiles(2, seed=0)[1]
    first = synthesise_utterance(np.random.default_rng(7), speaker, "happiness")
    again = synthesise_utterance(np.random.default_rng(7), speaker, "happiness")
    other = synthesise_utterance(np.random.default_rng(8), speaker, "happiness")
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert not np.array_equal(first[0], other[0])
    assert first[1] != other[1]
    for waveform, segments in (first, other):
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert np.abs(waveform).max() <= 1.0
        assert 1.2 <= waveform.shape[0] / 16000 <= 2.5
        assert 4 <= len(segments) <= 8


def test_write_smoke_wavs_is_deterministic_for_a_seed_and_differs_across_seeds(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        paths = write_smoke_wavs(str(tmp_path / name), speakers=2, per_class=1, seed=seed)
        runs[name] = {os.path.basename(p): _read_bytes(p) for p in paths}
        runs[name][LABEL_FILE] = (tmp_path / name / LABEL_FILE).read_bytes()
    assert sorted(runs["a"]) == sorted(
        [f"{s}_{c}_000.wav" for s in ("f01", "m02") for c in CLASSES] + [LABEL_FILE])
    assert runs["a"] == runs["b"]
    assert all(runs["a"][n] != runs["c"][n] for n in runs["a"])
    data, rate = soundfile.read(str(tmp_path / "a" / "f01_anger_000.wav"), dtype="int16")
    assert rate == 16000 and data.ndim == 1
    assert soundfile.info(str(tmp_path / "a" / "f01_anger_000.wav")).subtype == "PCM_16"


def test_speakers_are_half_female_with_higher_base_f0_and_longer_formant_scale():
    profiles = speaker_profiles(4, seed=0)
    assert [(p.speaker_id, p.gender) for p in profiles] == [
        ("f01", "female"), ("m02", "male"), ("f03", "female"), ("m04", "male")]
    female = [p for p in profiles if p.gender == "female"]
    male = [p for p in profiles if p.gender == "male"]
    assert min(p.f0_hz for p in female) > max(p.f0_hz for p in male)
    assert min(p.formant_scale for p in female) > max(p.formant_scale for p in male)
    assert [p.gender for p in speaker_profiles(3, seed=0)].count("female") == 2


def test_unknown_class_and_too_low_rate_raise_value_error():
    speaker = speaker_profiles(1, seed=0)[0]
    with pytest.raises(ValueError, match="unknown smoke-test class 'fear'"):
        synthesise_utterance(np.random.default_rng(0), speaker, "fear")
    with pytest.raises(ValueError, match="at least 8000 Hz"):
        synthesise_utterance(np.random.default_rng(0), speaker, "anger", sample_rate=4000)


# --------------------------------------------------------------------------- records

def test_default_corpus_has_160_balanced_records_of_four_speakers_two_genders(smoke):
    out, report, records = smoke
    assert report.records == len(records) == 160 and report.skipped == []
    stats = report.stats
    assert stats["corpus"] == "smoke" and stats["synthetic"] is True
    assert "not speech" in stats["note"]
    with open(os.path.join(out, "records", "stats.json"), encoding="utf-8") as f:
        assert json.load(f)["synthetic"] is True
    assert stats["emotion"] == dict.fromkeys(CLASSES, 40)
    assert stats["gender"] == {"female": 80, "male": 80}
    assert {s: (v["gender"], v["session"], v["emotion"]) for s, v in stats["speakers"].items()} == {
        s: (g, s, dict.fromkeys(CLASSES, 10))
        for s, g in (("f01", "female"), ("f03", "female"), ("m02", "male"), ("m04", "male"))}
    for r in records:
        assert r["corpus"] == "smoke" and r["sample_rate"] == 16000
        assert r["session"] == r["speaker"] and r["gender"][0] == r["speaker"][0]
        assert r["utterance_id"].startswith(f"{r['speaker']}_{r['emotion']}_")
        assert 1.2 <= r["num_samples"] / 16000 <= 2.5


def test_ratings_are_three_integers_whose_mean_is_stored_and_orders_the_classes(smoke):
    _, _, records = smoke
    means = {c: {"valence": [], "activation": []} for c in CLASSES}
    non_integer = 0
    for r in records:
        assert r["annotators"] == ["A1", "A2", "A3"]
        assert math.isnan(r["dominance"]) and r["dominance_ratings"] == []
        for dim in ("valence", "activation"):
            ratings = r[f"{dim}_ratings"]
            assert len(ratings) == 3 and all(v in (1, 2, 3, 4, 5) for v in ratings)
            assert r[dim] == pytest.approx(np.mean(ratings), abs=1e-6)
            non_integer += r[dim] != round(r[dim])
            means[r["emotion"]][dim].append(r[dim])
    assert non_integer > 80
    activation = {c: np.mean(v["activation"]) for c, v in means.items()}
    valence = {c: np.mean(v["valence"]) for c, v in means.items()}
    assert activation["anger"] > activation["happiness"] > activation["neutral"] \
        > activation["sadness"]
    assert valence["happiness"] > valence["neutral"] > max(valence["anger"], valence["sadness"])
    for c in CLASSES:  # within half a point of the documented class values
        assert activation[c] == pytest.approx(STYLES[c].activation, abs=0.5)
        assert valence[c] == pytest.approx(STYLES[c].valence, abs=0.5)


def test_syllable_segments_lie_inside_each_utterance_and_match_the_label_file(smoke):
    out, _, records = smoke
    with open(os.path.join(out, "wav", LABEL_FILE), encoding="utf-8") as f:
        labels = json.load(f)["files"]
    for r in records:
        duration = r["num_samples"] / r["sample_rate"]
        starts, ends = np.array(r["segment_start"]), np.array(r["segment_end"])
        assert r["segment_kind"] == "syllable" and 4 <= len(starts) <= 8
        assert (starts >= 0).all() and (starts < ends).all() and (ends <= duration).all()
        assert (starts[1:] >= ends[:-1]).all()
        assert set(r["segment_label"]) <= set(VOWELS)
        given = np.array(labels[r["utterance_id"] + ".wav"]["segments"])
        assert np.allclose(given[:, 0], starts, atol=1e-5)
        assert np.allclose(given[:, 1], ends, atol=1e-5)


def test_anger_is_higher_louder_and_faster_than_sadness_for_every_speaker(smoke):
    _, _, records = smoke
    measured = {}
    for r in records:
        if r["emotion"] not in ("anger", "sadness"):
            continue
        waveform = r["pcm"].astype(np.float32) / 32768.0
        syllables = np.concatenate([waveform[int(s * 16000):int(e * 16000)]
                                    for s, e in zip(r["segment_start"], r["segment_end"])])
        f0 = np.median(librosa.yin(syllables, fmin=60, fmax=700, sr=16000, frame_length=1024))
        rms_db = 20 * np.log10(np.sqrt(np.mean(np.square(waveform))))
        rate = len(r["segment_start"]) / (r["num_samples"] / 16000)
        measured.setdefault((r["speaker"], r["emotion"]), []).append((f0, rms_db, rate))
    for speaker in ("f01", "f03", "m02", "m04"):
        anger = np.median(measured[speaker, "anger"], axis=0)
        sadness = np.median(measured[speaker, "sadness"], axis=0)
        assert 12 * np.log2(anger[0] / sadness[0]) > 3.0, speaker  # semitones
        assert anger[1] - sadness[1] > 4.0, speaker  # dB
        assert anger[2] > sadness[2], speaker  # syllables per second


# --------------------------------------------------------------------------- reader, cli

def test_missing_or_bad_label_entries_and_missing_audio_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "wav"
    write_smoke_wavs(str(src), speakers=2, per_class=1)
    labels = json.loads((src / LABEL_FILE).read_text())
    del labels["files"]["m02_sadness_000.wav"]
    labels["files"]["f01_anger_000.wav"]["activation_ratings"][1] = 7
    labels["files"]["f01_neutral_000.wav"]["segments"][1] = [0.9, 0.1]
    (src / LABEL_FILE).write_text(json.dumps(labels))
    os.remove(src / "m02_anger_000.wav")
    (src / "stray.wav").write_bytes((src / "f01_sadness_000.wav").read_bytes())

    found = list(get_reader("smoke").scan(str(src)))
    skipped = {os.path.basename(s.path): s.reason for s in found if isinstance(s, Skipped)}
    assert skipped == {
        "m02_sadness_000.wav": f"no entry for 'm02_sadness_000.wav' in {LABEL_FILE}",
        "f01_anger_000.wav": f"bad entry for 'f01_anger_000.wav' in {LABEL_FILE}: "
                             "'activation_ratings' holds 7, not a rating in 1..5",
        "f01_neutral_000.wav": f"bad entry for 'f01_neutral_000.wav' in {LABEL_FILE}: "
                               "segment [0.9, 0.1] is empty, negative or overlaps the one "
                               "before",
        "m02_anger_000.wav": f"listed in {LABEL_FILE} but the audio file is missing",
        "stray.wav": "file name 'stray.wav' is not <speaker>_<class>_<index>",
    }
    kept = [u for u in found if isinstance(u, Utterance)]
    assert sorted(u.utterance_id for u in kept) == [
        "f01_happiness_000", "f01_sadness_000", "m02_happiness_000", "m02_neutral_000"]

    out = tmp_path / "records"
    assert keras_ser_cli.main(["convert", "smoke", str(src), str(out), "--quiet"]) == 0
    assert sorted(os.path.basename(p) for p in _skipped(str(out))) == sorted(skipped)
    assert len(_records(str(out))) == 4


def test_smoke_is_registered_and_the_command_line_can_generate_the_corpus(tmp_path,
                                                                         monkeypatch, capsys):
    assert load_all()["smoke"] is SmokeReader
    with pytest.raises(FileNotFoundError, match=LABEL_FILE):
        list(get_reader("smoke").scan(str(tmp_path)))
    monkeypatch.setattr("tfrecords_tools.smoke.write_smoke_wavs",
                        lambda folder: write_smoke_wavs(folder, speakers=1, per_class=2))
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    assert cli.main(["smoke", str(src), str(out), "--generate", "--quiet"]) == 0
    assert "8 records" in capsys.readouterr().out
    assert (src / LABEL_FILE).is_file() and (src / "README.txt").is_file()
    with open(out / "plan.json", encoding="utf-8") as f:
        assert json.load(f)["options"] == {}


def test_make_smoke_corpus_reuses_finished_output_and_replaces_other_parameters(tmp_path):
    out = str(tmp_path / "corpus")
    first = make_smoke_corpus(out, speakers=2, per_class=1)
    assert (first.records, first.shards_written, first.shards_reused) == (8, 1, 0)
    wav = os.path.join(out, "wav", "m02_sadness_000.wav")
    mtime = os.stat(wav).st_mtime_ns
    again = make_smoke_corpus(out, speakers=2, per_class=1)
    assert (again.records, again.shards_written, again.shards_reused) == (8, 0, 1)
    assert os.stat(wav).st_mtime_ns == mtime and again.stats["synthetic"] is True
    smaller = make_smoke_corpus(out, speakers=1, per_class=1)
    assert (smaller.records, smaller.skipped, smaller.shards_written) == (4, [], 1)
    assert not os.path.exists(wav)
    assert smaller.stats["speaker"] == {"f01": 4}
