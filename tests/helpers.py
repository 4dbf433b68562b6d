"""Small generated audio for reader fixtures (imported by tests as ``helpers``)."""

import importlib.util
import os

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
    spec.loader.exec_module(module)
    return module
