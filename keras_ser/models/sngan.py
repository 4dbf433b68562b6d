"""Spectral-normalised DCGAN of Eskimez et al. (Interspeech 2020), Table 1.

One generator and one discriminator trunk serve the paper's three training stages and
its SER network:

==================  ======================================  ==========================
use                 discriminator output (``head``)         generator condition
==================  ======================================  ==========================
autoencoder         ``"encoder"``: N_z linear units         N_c zeros
WGAN-GP             ``"critic"``: 1 linear unit             N_c zeros
fine-tuning         ``"fake_class"``: N_c + 1 softmax       one-hot emotion
SER network         ``"classifier"``: N_c softmax           --
==================  ======================================  ==========================

Generator (Table 1; Sec. 3.1 adds the ninth, tanh layer and the nearest-neighbour
upsampling): ``[z (N_z), c (N_c)]`` -> dense 4096 -> dense 32768 (both leaky ReLU)
-> reshape to (8, 8, 512) -> nine 3x3 convolutions, the first eight with leaky
ReLU and the ninth with tanh to one channel, widths 512-512-256-256-128-128-64-64-1;
nearest-neighbour upsampling x2 after every second convolution (8 -> 128). No batch
norm, no dropout.

Discriminator (Table 1): eight 3x3 convolutions with leaky ReLU, widths
64-64-128-128-256-256-512-512, stride 2 on every second (128 -> 8), flatten, dense 4096
with leaky ReLU (the *embedding*), then the head.

Every convolution and dense layer of both networks is wrapped in
`keras.layers.SpectralNormalization` (Miyato et al., ICLR 2018; one power iteration per
training call). Keras runs the power iteration only when the layer is called with
``training=True``: call the critic with ``training=False`` when updating the
generator.

Patches are ``(frames, mels)`` = 128 x 128 min-max normalised log-mels (32 ms window,
16 ms hop, 512-point FFT, 128 mel bands, ``keras_ser.features.PRESETS["eskimez"]``;
Sec. 4.2).

Presets are data (`SNGAN_PRESETS`). ``paper`` is the Table 1 layers with N_z = 128
and N_c = 4 (Sec. 4.4), which gives G 141,838,785 and D 138,910,145 trainable
parameters with the critic head (our count; the paper gives none). ``cpu`` keeps the
topology (same layer count, four up/down-samplings, same heads) at 64 x 64 (64 mel
bands, 64 frames), an eighth of the widths and 512-unit dense layers. Not in the paper
and our choice: the leaky-ReLU slope (0.2, the DCGAN value) and z ~ N(0, I).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
from keras import layers

#: Discriminator heads: name -> output units as a function of (N_z, N_c).
HEADS = ("critic", "encoder", "fake_class", "classifier")
#: Name of the layer whose output is the discriminator embedding (dense 4096 + LReLU).
EMBEDDING = "embedding"


@dataclasses.dataclass(frozen=True)
class SNGANConfig:
    """Sizes and training constants of the SN-GAN.

    Attributes:
        name: Preset name.
        frames: Patch width in STFT frames (time axis); a multiple of 16.
        n_mels: Patch height in mel bands; a multiple of 16.
        z_dim: N_z, the noise (and autoencoder code) dimension.
        n_classes: N_c, emotions of the condition vector and the fine-tuning head.
        dense_units: Units of the generator's first and the discriminator's last dense
            layer (Table 1: 4096).
        g_widths: Channels of the generator's first eight convolutions; the first sets the
            width of the reshaped dense output (Table 1: 512, 512, 256, 256, 128, 128, 64,
            64).
        d_widths: Channels of the discriminator's eight convolutions (Table 1: 64, 64,
            128, 128, 256, 256, 512, 512).
        kernel_size: Convolution kernel (Table 1: 3).
        leaky_slope: Leaky-ReLU negative slope (not given; DCGAN's 0.2).
        batch_size: Patches per step (paper: 32).
        ae_lr: Stage 1 Adam learning rate (paper: 5e-5).
        g_lr, d_lr: Stage 2 (WGAN-GP) Adam learning rates (paper: 2e-6, 2e-5).
        beta_1, beta_2: Adam betas of every network, the autoencoder and the SER
            network included (Sec. 4.4: 0.5, 0.99).
        gp_weight: WGAN-GP gradient-penalty coefficient lambda (paper: 10).
        ft_g_lr, ft_d_lr: Stage 3 learning rates (Sec. 4.4: 2e-6 and 2e-5, the same as
            pre-training, "throughout GAN training").
        ser_lr: SER network learning rate (paper: 1e-5) ...
        ser_decay_steps: ... multiplied by 0.1 every this many iterations (paper: 10k).
        hop_frames: Sliding-window hop at test time (paper: 32 frames).
    """

    name: str = "custom"
    frames: int = 128
    n_mels: int = 128
    z_dim: int = 128
    n_classes: int = 4
    dense_units: int = 4096
    g_widths: tuple = (512, 512, 256, 256, 128, 128, 64, 64)
    d_widths: tuple = (64, 64, 128, 128, 256, 256, 512, 512)
    kernel_size: int = 3
    leaky_slope: float = 0.2
    batch_size: int = 32
    ae_lr: float = 5e-5
    g_lr: float = 2e-6
    d_lr: float = 2e-5
    beta_1: float = 0.5
    beta_2: float = 0.99
    gp_weight: float = 10.0
    ft_g_lr: float = 2e-6
    ft_d_lr: float = 2e-5
    ser_lr: float = 1e-5
    ser_decay_steps: int = 10000
    hop_frames: int = 32

    def __post_init__(self):
        for field in ("frames", "n_mels"):
            value = getattr(self, field)
            if value % 16 or value < 16:
                raise ValueError(f"SNGANConfig.{field} must be a positive multiple of 16 "
                                 f"(four stride-2 layers), got {value}")
        if len(self.g_widths) != 8 or len(self.d_widths) != 8:
            raise ValueError("SNGANConfig needs 8 generator and 8 discriminator widths "
                             f"(Table 1), got {len(self.g_widths)} and {len(self.d_widths)}")
        if self.n_classes < 2:
            raise ValueError(f"SNGANConfig.n_classes (N_c) must be >= 2, got {self.n_classes}")
        object.__setattr__(self, "g_widths", tuple(int(w) for w in self.g_widths))
        object.__setattr__(self, "d_widths", tuple(int(w) for w in self.d_widths))

    def replace(self, **changes) -> SNGANConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        out = dataclasses.asdict(self)
        out["g_widths"], out["d_widths"] = list(self.g_widths), list(self.d_widths)
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> SNGANConfig:
        """Inverse of `to_dict` (unknown keys raise ``TypeError``)."""
        return cls(**doc)


SNGAN_PRESETS = {
    "paper": SNGANConfig(name="paper"),
    # Same topology at 64 x 64 and an eighth of the width; larger learning rates because
    # a CPU run trains for thousands, not hundreds of thousands, of iterations.
    "cpu": SNGANConfig(name="cpu", frames=64, n_mels=64, z_dim=64, dense_units=512,
                       g_widths=(64, 64, 32, 32, 16, 16, 8, 8),
                       d_widths=(8, 8, 16, 16, 32, 32, 64, 64),
                       ae_lr=5e-4, g_lr=1e-4, d_lr=4e-4, ft_g_lr=1e-4, ft_d_lr=4e-4,
                       ser_lr=2e-4, ser_decay_steps=1500),
}


def get_sngan_preset(name, **changes) -> SNGANConfig:
    """A preset by name (or a config passed through), with field ``changes``.

    Raises:
        KeyError: Unknown preset name (the message lists the known ones).
    """
    if isinstance(name, SNGANConfig):
        config = name
    else:
        if name not in SNGAN_PRESETS:
            raise KeyError(f"unknown SN-GAN preset {name!r}; known: {sorted(SNGAN_PRESETS)}")
        config = SNGAN_PRESETS[name]
    return config.replace(**changes) if changes else config


def adam(learning_rate, config, name: str = "adam") -> keras.optimizers.Adam:
    """Adam with the betas Eskimez et al. use for every network (Sec. 4.4: 0.5, 0.99).

    Args:
        learning_rate: A float or a Keras schedule.
        config: `SNGANConfig` or preset name (``beta_1``, ``beta_2``).
        name: Optimiser name.
    """
    config = get_sngan_preset(config)
    return keras.optimizers.Adam(learning_rate, beta_1=config.beta_1, beta_2=config.beta_2,
                                 name=name)


def _sn(layer) -> layers.Layer:
    return layers.SpectralNormalization(layer, power_iterations=1,
                                        name=f"{layer.name}_sn")


def head_units(config: SNGANConfig, head: str) -> int:
    """Output units of a discriminator head (see the module table).

    Raises:
        ValueError: Unknown head.
    """
    units = {"critic": 1, "encoder": config.z_dim, "fake_class": config.n_classes + 1,
             "classifier": config.n_classes}
    if head not in units:
        raise ValueError(f"unknown discriminator head {head!r}; known: {HEADS}")
    return units[head]


def build_trunk(config, name: str = "trunk") -> keras.Model:
    """The discriminator without its output layer.

    Args:
        config: `SNGANConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: ``features`` ``(batch, frames, mels)`` float32 in [-1, 1] ->
        embedding ``(batch, dense_units)`` (the output of layer ``"embedding"``). Layers
        ``conv1..8`` (SN-wrapped 3x3, stride 2 on the even ones, leaky ReLU), ``dense``.

    Reference:
        Eskimez et al., Interspeech 2020, Table 1 (discriminator).
    """
    config = get_sngan_preset(config)
    inputs = keras.Input((config.frames, config.n_mels), name="features")
    x = layers.Reshape((config.frames, config.n_mels, 1), name="to_image")(inputs)
    for i, width in enumerate(config.d_widths):
        stride = 2 if i % 2 else 1
        x = _sn(layers.Conv2D(width, config.kernel_size, strides=stride, padding="same",
                              name=f"conv{i + 1}"))(x)
        x = layers.LeakyReLU(config.leaky_slope, name=f"conv{i + 1}_lrelu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _sn(layers.Dense(config.dense_units, name="dense"))(x)
    x = layers.LeakyReLU(config.leaky_slope, name=EMBEDDING)(x)
    return keras.Model(inputs, x, name=name)


def attach_head(trunk: keras.Model, config, head: str,
                name: str | None = None) -> keras.Model:
    """A discriminator: ``trunk`` (weights shared, not copied) plus a new output layer.

    Args:
        trunk: `build_trunk` model (or any model ending in the embedding).
        config: `SNGANConfig` or preset name.
        head: ``"critic"`` (1 linear unit, the WGAN critic), ``"encoder"`` (N_z linear
            units, stage 1), ``"fake_class"`` (N_c + 1 softmax: emotions + fake, stage 3)
            or ``"classifier"`` (N_c softmax, the SER network).
        name: Model name (default ``"discriminator_<head>"``).

    Returns:
        Functional model ``(batch, frames, mels)`` -> ``(batch, units)``.

    Raises:
        ValueError: Unknown head.

    Reference:
        Eskimez et al., Interspeech 2020, Secs. 3.1-3.2 and 4.3, Table 1 (output layer).
    """
    config = get_sngan_preset(config)
    units = head_units(config, head)
    activation = "softmax" if head in ("fake_class", "classifier") else None
    out = _sn(layers.Dense(units, activation=activation, name=f"head_{head}"))(trunk.output)
    return keras.Model(trunk.input, out, name=name or f"discriminator_{head}")


def build_discriminator(config, head: str = "critic",
                        name: str | None = None) -> keras.Model:
    """`build_trunk` + `attach_head`: the Table 1 discriminator with one output layer.

    Args:
        config: `SNGANConfig` or preset name.
        head: See `attach_head`.
        name: Model name.

    Returns:
        Functional model ``features`` ``(batch, frames, mels)`` -> ``(batch, units)``.

    Raises:
        ValueError: Unknown head.
    """
    return attach_head(build_trunk(config), config, head, name=name)


def trunk_of(discriminator: keras.Model) -> keras.Model:
    """The shared trunk of a discriminator built here (input -> embedding)."""
    return keras.Model(discriminator.input, discriminator.get_layer(EMBEDDING).output,
                       name="trunk")


def build_generator(config, name: str = "generator") -> keras.Model:
    """The Table 1 generator.

    Args:
        config: `SNGANConfig` or preset name.
        name: Model name.

    Returns:
        Functional model with inputs ``z`` ``(batch, N_z)`` (standard normal noise, our
        choice, or the autoencoder code) and ``condition`` ``(batch, N_c)`` (one-hot
        emotion; zeros in stages 1-2), concatenated; output ``(batch, frames, mels)``
        in [-1, 1] (tanh), a normalised log-mel patch. Layers ``dense1``, ``dense2``,
        ``conv1..9``, ``up1..4``.

    Reference:
        Eskimez et al., Interspeech 2020, Table 1 and Sec. 3.1 (generator).
    """
    config = get_sngan_preset(config)
    h, w = config.frames // 16, config.n_mels // 16
    z = keras.Input((config.z_dim,), name="z")
    c = keras.Input((config.n_classes,), name="condition")
    x = layers.Concatenate(name="z_condition")([z, c])
    x = _sn(layers.Dense(config.dense_units, name="dense1"))(x)
    x = layers.LeakyReLU(config.leaky_slope, name="dense1_lrelu")(x)
    x = _sn(layers.Dense(h * w * config.g_widths[0], name="dense2"))(x)
    x = layers.LeakyReLU(config.leaky_slope, name="dense2_lrelu")(x)
    x = layers.Reshape((h, w, config.g_widths[0]), name="reshape")(x)
    for i, width in enumerate(config.g_widths):
        x = _sn(layers.Conv2D(width, config.kernel_size, padding="same",
                              name=f"conv{i + 1}"))(x)
        x = layers.LeakyReLU(config.leaky_slope, name=f"conv{i + 1}_lrelu")(x)
        if i % 2:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{i // 2 + 1}")(x)
    x = _sn(layers.Conv2D(1, config.kernel_size, padding="same", activation="tanh",
                          name="conv9"))(x)
    out = layers.Reshape((config.frames, config.n_mels), name="patch")(x)
    return keras.Model([z, c], out, name=name)


def spectral_layers(model: keras.Model) -> list:
    """The `SpectralNormalization` wrappers of ``model``, in layer order."""
    return [layer for layer in model.layers
            if isinstance(layer, layers.SpectralNormalization)]


def largest_singular_values(model: keras.Model, normalised: bool = True) -> dict:
    """Largest singular value of every SN-wrapped kernel (reshaped to (fan_in, out)).

    Args:
        model: A model built here.
        normalised: Measure the kernel the next training call computes with (the stored
            kernel divided by the power-iteration estimate of its spectral norm, Keras'
            ``SpectralNormalization.normalized_weights``); ``False`` measures the stored
            kernel, which after an optimiser step has moved off the unit sphere by one
            update.

    Returns:
        ``{wrapped layer name: sigma_max}`` (floats, exact SVD), used to check that
        spectral normalisation holds each layer near 1 (Miyato et al., ICLR 2018,
        Sec. 2.1).
    """
    import numpy as np

    out = {}
    for layer in spectral_layers(model):
        kernel = np.asarray(layer.normalized_weights()[1] if normalised else layer.layer.kernel)
        out[layer.layer.name] = float(np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]),
                                                    compute_uv=False)[0])
    return out


def condition_vectors(labels: Sequence[int], n_classes: int):
    """One-hot ``(n, N_c)`` float32 conditions of integer labels (``-1`` -> zeros)."""
    import numpy as np

    labels = np.asarray(labels, np.int64)
    out = np.zeros((len(labels), n_classes), np.float32)
    keep = labels >= 0
    out[np.flatnonzero(keep), labels[keep]] = 1.0
    return out
