"""Waveform-in models: a `FrontEnd` description and the Keras models built from it.

`FrontEnd` is data (it is written into every export's ``keras_ser.json``): which
features, which normalisation with which statistics, whether the classifier sees fixed
windows (crop classifiers: Chang & Scherer 2017, Eskimez et al. 2020) or whole
utterances (the CRNN of Etienne et al. 2018), optional VTLP copies, and how window or
copy outputs become one utterance's answer. `build_units_model` is the part before the
classifier; `build_serving_model` adds the classifier and the aggregation. Scoring
(`keras_ser.scoring`) uses `build_units_model` too.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_ser import features as features_mod
from keras_ser.serving.layers import (
    CheckWaveform,
    FoldWindows,
    MeanOverWindows,
    Normalise,
    SlidingWindows,
    SpeakerNormalise,
    VoicedFrames,
    VoteOverWindows,
    WarpedCopies,
    silence_level,
)

INPUT_KEY = "waveform"
OUTPUT_KEY = "probabilities"
VOTES_KEY = "votes"
#: Extra inputs of a per-speaker front end, per normalisation kind: the speaker's
#: statistics, each ``(batch, K)``.
SPEAKER_KEYS = {"zscore": ("speaker_mean", "speaker_std"),
                "minmax": ("speaker_min", "speaker_max")}


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """How an utterance reaches the classifier, and how its outputs are combined.

    Attributes:
        features: Feature preset name (`keras_ser.features.PRESETS`, a sequence preset).
        statistics: Normalisation statistics: ``{"min", "max"}`` or ``{"mean", "std"}``
            (dB), from the training data.
        normalise: ``"minmax"`` or ``"zscore"``.
        clip: Clip min-max values to [-1, 1].
        crop_frames: Window length in frames for a crop classifier; ``None``: the
            classifier takes whole utterances.
        hop_frames: Frames between windows (default ``crop_frames // 2``).
        pad_value: Value padding utterances shorter than one window (default: the
            normalised features of silence; with ``speaker_norm``, whose windows are cut
            before normalisation, the raw features of silence, ``10 log10(amin)`` dB).
        warps: VTLP factors of the copies a whole-utterance classifier sees (empty: one
            unwarped copy).
        aggregate: ``"mean"`` (mean probability over windows or copies) or ``"vote"``
            (majority vote; the output then also holds the vote shares).
        sample_rate: Hz of the input waveforms.
        feature_overrides: `FeatureConfig` fields overriding the preset (``n_mels``).
        speaker_norm: The classifier was trained on features normalised with each
            speaker's own statistics (transductive, our variant; see
            `keras_ser.data.speaker_statistics`). The models then take the speaker's
            statistics as extra inputs (`SPEAKER_KEYS`, each ``(batch, K)``, K the size of
            ``statistics``' values: 1 or feature_dim); ``statistics`` are the fallback
            used when a request has none (the training speakers' pooled statistics).

    Raises:
        ValueError: Inconsistent settings (windows and warps together, a vote with
            nothing to vote over, unknown names, bad sizes).
    """

    features: str
    statistics: dict
    normalise: str = "minmax"
    clip: bool = False
    crop_frames: int | None = None
    hop_frames: int | None = None
    pad_value: float | None = None
    warps: tuple = ()
    aggregate: str = "mean"
    sample_rate: int = 16000
    feature_overrides: dict = dataclasses.field(default_factory=dict)
    speaker_norm: bool = False

    def __post_init__(self):
        if self.normalise not in Normalise.KEYS:
            raise ValueError(f"normalise must be 'minmax' or 'zscore', got {self.normalise!r}")
        if self.aggregate not in ("mean", "vote"):
            raise ValueError(f"aggregate must be 'mean' or 'vote', got {self.aggregate!r}")
        if self.crop_frames is not None and self.warps:
            raise ValueError("a front end has either windows (crop_frames) or VTLP copies")
        if self.aggregate == "vote" and not (self.warps or self.crop_frames):
            raise ValueError("a vote needs windows or VTLP copies to vote over")
        if self.config.image_size and (self.crop_frames is not None or self.warps
                                       or self.statistics or self.speaker_norm):
            raise ValueError(f"preset '{self.features}' produces one image per utterance: "
                             "no windows, VTLP copies or normalisation statistics")
        if (self.crop_frames is not None or self.warps) and self.config.vad:
            raise ValueError(f"preset '{self.features}' keeps voiced frames only: it takes "
                             "whole utterances without VTLP copies")
        statistics = {k: (float(v) if np.ndim(v) == 0 else [float(x) for x in v])
                      for k, v in self.statistics.items()}
        object.__setattr__(self, "statistics", statistics)
        object.__setattr__(self, "warps", tuple(float(a) for a in self.warps))
        if self.crop_frames is not None:
            hop = self.hop_frames or max(1, int(self.crop_frames) // 2)
            object.__setattr__(self, "hop_frames", int(hop))
            if self.pad_value is None and self.speaker_norm:
                # Windows are cut before the per-speaker normalisation: pad with the
                # raw features of digital silence (the amin floor, dB).
                object.__setattr__(self, "pad_value",
                                   float(10.0 * np.log10(self.config.amin)))
            elif self.pad_value is None:
                pad = silence_level(self.config, self.normalise, statistics)
                object.__setattr__(self, "pad_value", float(np.clip(pad, -1, 1))
                                   if self.clip else pad)

    @property
    def config(self) -> features_mod.FeatureConfig:
        """The `FeatureConfig` computed (preset, overrides, sample rate)."""
        config = features_mod.get_preset(self.features).replace(**self.feature_overrides)
        if config.sample_rate != self.sample_rate:
            config = config.replace(sample_rate=int(self.sample_rate))
        return config

    @property
    def image(self) -> bool:
        """True for an image preset (``FeatureConfig.image_size``, the NITK report's
        spectrogram images): the classifier takes one image per utterance, unnormalised."""
        return bool(self.config.image_size)

    @property
    def speaker_keys(self) -> tuple:
        """Names of the speaker-statistics inputs (empty without ``speaker_norm``)."""
        return SPEAKER_KEYS[self.normalise] if self.speaker_norm else ()

    @property
    def speaker_width(self) -> int:
        """K, the size of each speaker-statistics input: 1 for scalar statistics, else
        the number of per-band values."""
        value = self.statistics[Normalise.KEYS[self.normalise][0]]
        return 1 if np.ndim(value) == 0 else len(value)

    def for_speaker(self, statistics: dict) -> FrontEnd:
        """The fixed front end of one speaker: these settings with ``statistics`` (that
        speaker's) baked in and no speaker inputs; what recipes score a speaker with. Its
        windows pad with the silence level normalised by ``statistics``: the same
        numbers the per-speaker model computes with the raw silence level."""
        pad = None if self.speaker_norm and self.windowed else self.pad_value
        return dataclasses.replace(self, statistics=dict(statistics), speaker_norm=False,
                                   pad_value=pad)

    def unnormalised(self) -> FrontEnd:
        """Whole-utterance features with an identity z-score and no windows or copies:
        what speaker statistics are computed from."""
        return FrontEnd(features=self.features, statistics={"mean": 0.0, "std": 1.0},
                        normalise="zscore", sample_rate=self.sample_rate,
                        feature_overrides=dict(self.feature_overrides))

    @property
    def windowed(self) -> bool:
        """True for a crop classifier."""
        return self.crop_frames is not None

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        out = dataclasses.asdict(self)
        out["warps"] = list(self.warps)
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> FrontEnd:
        """Inverse of `to_dict`."""
        return cls(**doc)


def _feature_layers(front: FrontEnd):
    overrides = {**front.feature_overrides, "sample_rate": front.sample_rate}
    if front.warps:
        return WarpedCopies(front.features, front.warps, name="features", **overrides)
    return features_mod.AudioFeatures(front.features, name="features", **overrides)


def build_units_model(front: FrontEnd) -> keras.Model:
    """The front end alone: waveforms -> what the classifier is called on.

    Returns:
        Model ``"waveform"`` ``(batch, samples)`` -> ``(batch, windows, crop_frames,
        dim)`` (windowed), ``(batch, copies, frames, dim)`` (VTLP copies),
        ``(batch, frames, dim)`` (whole utterances), ``(batch, H, W, 3)`` images in
        [0, 255] for an image preset (no normalisation), or for a voice-activity preset
        (``FeatureConfig.vad``, Tu et al.) ``{"features": (batch, voiced_frames, dim),
        "length": (batch,)}``.
    """
    config = front.config
    waveform = keras.Input(shape=(None,), dtype="float32", name=INPUT_KEY)
    inputs = waveform
    x = CheckWaveform(config.window_samples, config.sample_rate,
                      name="check_waveform")(waveform)
    x = _feature_layers(front)(x)
    if config.image_size:  # [0, 255] images: each network brings its own preprocessing
        return keras.Model(waveform, x, name="units")
    if front.speaker_norm:
        given = [keras.Input(shape=(front.speaker_width,), dtype="float32", name=key)
                 for key in front.speaker_keys]
        inputs = {INPUT_KEY: waveform, **dict(zip(front.speaker_keys, given))}

        def normalise(features):
            return SpeakerNormalise(front.normalise, front.clip,
                                    name="normalise")([features, *given])
    else:
        def normalise(features):
            return Normalise(front.normalise, front.statistics, front.clip,
                             name="normalise")(features)
    if config.vad:
        x, length = VoicedFrames(name="voiced_frames")(x)
        return keras.Model(inputs, {"features": normalise(x), "length": length}, name="units")
    if front.windowed and front.speaker_norm:  # windows first, then each speaker's scale
        x = SlidingWindows(front.crop_frames, front.hop_frames, pad_value=front.pad_value,
                           name="sliding_windows")(x)
        return keras.Model(inputs, normalise(x), name="units")
    x = normalise(x)
    if front.windowed:
        x = SlidingWindows(front.crop_frames, front.hop_frames, pad_value=front.pad_value,
                           name="sliding_windows")(x)
    return keras.Model(inputs, x, name="units")


def build_serving_model(classifier: keras.Model, front: FrontEnd, class_names,
                        name: str = "serving") -> keras.Model:
    """Wrap a classifier into a model from raw waveforms to utterance probabilities.

    Args:
        classifier: Maps ``(n, frames, dim)`` normalised features (a window, or a whole
            utterance) to ``(n, len(class_names))`` probabilities.
        front: The `FrontEnd` the classifier was trained and scored with.
        class_names: Output names, in order.
        name: Model name.

    Returns:
        Functional model: input ``"waveform"`` float32 ``(batch, samples)`` in [-1, 1]
        at ``front.sample_rate`` (with ``front.speaker_norm`` also the speaker's
        statistics, ``front.speaker_keys``); output ``{"probabilities": (batch, C)}`` and, with
        ``aggregate="vote"``, ``"votes"`` ``(batch, C)`` vote shares. Too-short or
        wrong-rank input raises `tf.errors.InvalidArgumentError` when it runs.

    Raises:
        ValueError: The classifier's output width is not ``len(class_names)``.
    """
    units_model = build_units_model(front)
    waveform, units = units_model.input, units_model.output  # waveform: maybe a dict
    if front.windowed or front.warps:
        flat = FoldWindows(name="fold_windows")(units)
        unit_probs = classifier(flat)
        outputs = {OUTPUT_KEY: MeanOverWindows(name=OUTPUT_KEY)([unit_probs, units])}
        if front.aggregate == "vote":
            outputs[VOTES_KEY] = VoteOverWindows(name=VOTES_KEY)([unit_probs, units])
    else:
        outputs = {OUTPUT_KEY: classifier(units)}
    width = outputs[OUTPUT_KEY].shape[-1]
    if width != len(class_names):
        raise ValueError(f"the classifier outputs {width} classes but {len(class_names)} "
                         "class names were given")
    return keras.Model(waveform, outputs, name=name)


def decide(probabilities, votes=None) -> np.ndarray:
    """Predicted class per utterance: argmax of the votes (ties: highest probability,
    our choice; Etienne et al. 2018 give no tie rule), or of the probabilities without
    votes.

    Args:
        probabilities: ``(n, C)`` mean probabilities.
        votes: ``(n, C)`` vote shares, or None.

    Returns:
        ``(n,)`` int64 class indices.
    """
    probabilities = np.asarray(probabilities, np.float64)
    if votes is None:
        return probabilities.argmax(axis=1)
    votes = np.asarray(votes, np.float64)
    tied = np.isclose(votes, votes.max(axis=1, keepdims=True), rtol=0, atol=1e-6)
    return np.where(tied, probabilities, -np.inf).argmax(axis=1)
