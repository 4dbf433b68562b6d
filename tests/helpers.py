"""Small generated audio for reader fixtures (imported by tests as ``helpers``)."""

import importlib.util
import os
import sys

import numpy as np
import soundfile


def write_tone(path, seconds=1.0, rate=16000, freq=220.0, channels=1, subtype="PCM_16",
               amplitude=0.3, seed=0):
    """Write a speech-like test signal (harmonic tone with noise and an envelope)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / max(seconds, 1e-9), 1)))
    signal = amplitude * envelope * tone / 2 + 0.01 * rng.standard_normal(t.shape)
    if channels > 1:
        signal = np.stack([signal] * channels, axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, signal.astype(np.float32), rate, subtype=subtype)
    return path


def write_corrupt(path):
    """Write a file with an audio extension that is not audio."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return path


def write_empty(path):
    """Write a valid WAV header with zero samples."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, np.zeros((0,), np.float32), 16000, subtype="PCM_16")
    return path


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def load_recipe(name):
    """Import ``recipes/<name>.py`` (recipes are scripts, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}",
                                                  os.path.join(RECIPES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses resolve their string annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def assert_export_matches_reported(run_dir, records, predictions, result, key="probabilities",
                                   score_key="ua", atol=1e-5, speaker=None):
    """The run's exported SavedModel gives the reported scores on the held-out utterances.

    Loads ``run_dir/export`` (TF Serving layout), runs every test utterance of
    ``predictions`` (a fold's ``predictions.npz``) through its ``serving_default``
    signature, and checks the probabilities (and votes) equal the fold's saved ones within
    ``atol`` and that the UA of the export's decisions equals the UA in ``result``.
    With ``speaker`` (a per-speaker export) the ``serve_speaker`` signature is used with
    that recorded speaker's statistics, or with ``"files"`` with statistics estimated from
    the test utterances themselves (`keras_ser.serving.predict.resolve_speaker`).

    Returns:
        The number of utterances compared.
    """
    from keras_ser import data, metrics
    from keras_ser.serving import builders, predict

    saved = np.load(predictions)
    utterances = data.Utterances(records)
    where = {u: i for i, u in enumerate(utterances.ids)}
    model = predict.load(run_dir if os.path.basename(run_dir) == "export"
                         else os.path.join(run_dir, "export"))
    names = model.metadata["class_names"]
    waves = [utterances.waveforms[where[str(uid)]].astype(np.float32) / 32768.0
             for uid in saved["utterance_id"]]
    given = predict.resolve_speaker(model.metadata, speaker, waves)
    probs, votes = [], []
    for wave in waves:
        p, v, _ = model.classify(wave[None], given)
        probs.append(p[0])
        if v is not None:
            votes.append(v[0])
    probs = np.array(probs)
    np.testing.assert_allclose(probs, saved[key], atol=atol)
    if votes:
        np.testing.assert_allclose(np.array(votes), saved["votes"], atol=atol)
    decided = builders.decide(probs, np.array(votes) if votes else None)
    truth = [names.index(utterances.emotions[where[str(u)]]) for u in saved["utterance_id"]]
    assert metrics.unweighted_accuracy(truth, decided) == result[score_key]
    return len(probs)


#: Tone frequency (Hz) per IEMOCAP label code in `write_iemocap_release`.
IEMOCAP_TONES = {"neu": 170.0, "hap": 260.0, "exc": 280.0, "ang": 300.0, "sad": 140.0,
                 "fru": 200.0}


def write_iemocap_release(root, sessions=(1, 2),
                          improvised=("neu", "hap", "ang", "sad", "fru"),
                          scripted=("ang", "sad"), seconds=0.8):
    """An ``IEMOCAP_full_release`` layout under ``root``: per session an improvised and a
    scripted dialog, both speakers voicing each label code once (tones, female 1.2x
    higher); the EmoEvaluation files as released. Returns ``root``."""
    release = os.path.join(root, "IEMOCAP_full_release")
    for k in sessions:
        session = os.path.join(release, f"Session{k}")
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for dialog, codes in ((f"Ses0{k}F_impro01", improvised),
                              (f"Ses0{k}F_script01_1", scripted)):
            rows = list(lines)
            for gender in "FM":
                for i, code in enumerate(codes):
                    turn = f"{dialog}_{gender}{i:03d}"
                    rows += [(f"[{i}.0000 - {i + 1}.0000]\t{turn}\t{code}\t"
                              "[3.0000, 3.0000, 3.0000]"), f"C-E1:\t{code};\t()", ""]
                    write_tone(os.path.join(session, "sentences", "wav", dialog,
                                            f"{turn}.wav"), seconds=seconds,
                               freq=IEMOCAP_TONES[code] * (1.2 if gender == "F" else 1.0))
            path = os.path.join(session, "dialog", "EmoEvaluation", f"{dialog}.txt")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")
    return root


def padded(valid, frames, rng, garbage=1e3):
    """Stack ``(L_b, d)`` arrays into ``(B, frames, d)`` float32; the padding is large noise
    (a masked model must ignore it)."""
    out = garbage * rng.standard_normal((len(valid), frames, valid[0].shape[1]))
    for b, v in enumerate(valid):
        out[b, :len(v)] = v
    return out.astype("float32")


def length_batch(features, lengths):
    """``{"features": float32, "length": int32}`` tensors: a masked model's input."""
    import tensorflow as tf

    return {"features": tf.constant(features, tf.float32),
            "length": tf.constant(lengths, tf.int32)}


def tiny_crop_classifier(crop: int, mels: int, classes: int, filters: int = 8):
    """``(n, crop, mels) -> (n, classes)`` softmax: one seeded Conv1D, global average
    pooling and a Dense with logits large enough to give uneven probabilities."""
    import keras

    inputs = keras.Input(shape=(crop, mels))
    x = keras.layers.Conv1D(filters, 3, activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=3))(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(
                                     stddev=1.0, seed=1))(x)
    return keras.Model(inputs, outputs, name="tiny")
