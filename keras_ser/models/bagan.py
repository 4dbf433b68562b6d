"""Baseline GAN of Eskimez et al. (Interspeech 2020): the Chatziagapi et al. BAGAN.

Eskimez et al. compare their SN-GAN (`keras_ser.models.sngan`) against the GAN of
Chatziagapi et al., "Data Augmentation using GANs for Speech Emotion Recognition"
(Interspeech 2019), which adapts BAGAN (Mariani et al., "BAGAN: Data Augmentation with
Balancing GAN", arXiv:1803.09655, 2018) to log-mel patches. This module holds its
networks and its class-conditional latent distribution; the two training stages are in
`keras_ser.training.bagan`.

Where each part comes from:

* Chatziagapi et al. 2019: a generator of transposed convolutions and a convolutional
  discriminator on spectrogram patches; BAGAN's autoencoder initialisation and
  class-conditional latent sampling, used to generate emotional speech patches.
* Mariani et al. 2018 (BAGAN): (1) an autoencoder trained first on all the training
  data, whose encoder is the discriminator's convolutional stack followed by N_z linear
  units and whose decoder is the generator; (2) per-class latent distributions: the
  training patches are encoded and one multivariate normal N(mu_c, Sigma_c) is fitted to
  the codes of each class c (`ClassLatents`); the generator input for class c is drawn
  from it; (3) the GAN starts from the autoencoder (generator = decoder, discriminator
  trunk = encoder trunk) and the discriminator has N_c + 1 softmax outputs, the last
  one meaning "fake".
* DCGAN (Radford et al., ICLR 2016): stride-2 convolutions without pooling, batch norm
  on every encoder layer but the first and on every generator layer but the output,
  leaky ReLU in the encoder, ReLU in the generator, tanh output.

Our choices (we had no layer-by-layer description of Chatziagapi et al.'s networks to
follow, so these are DCGAN/BAGAN-style defaults, not reproduced numbers):

* Four stride-2 layers each way, widths 64-128-256-512 (encoder) and 512-256-128-64
  (generator), 5 x 5 kernels (DCGAN's reference implementation), leaky-ReLU slope 0.2;
  dropout 0.3 after every encoder block (BAGAN's code); batch-norm momentum 0.9.
* 128 x 128 patches and N_z = 128 in the ``paper`` preset, so the baseline sees the same
  patches and latent size as the SN-GAN it is compared with.
* The discriminator *shares* the encoder's layers (one set of weights) instead of
  copying them once: fit `ClassLatents` before the GAN stage, which moves them.
* The discriminator's output is a linear layer ``logits`` followed by a float32 softmax
  ``class_probs``, so losses can be taken from logits under mixed precision.
* A ridge on each class covariance, so a class with fewer codes than N_z still has a
  Cholesky factor.

Tensors: patches are ``(batch, frames, mels)`` float32 in [-1, 1] (min-max normalised
log-mels, no channel axis), as in `keras_ser.models.sngan`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from keras_ser import distribute, io

#: Name of the encoder layer whose output the discriminator head reads (flattened
#: last convolution block).
EMBEDDING = "embedding"
#: Moving-average momentum of batch norm (Keras' 0.99 barely moves in the few thousand
#: steps of a CPU run; 0.9 is the DCGAN reference implementations' decay).
BN_MOMENTUM = 0.9
#: Stride-2 layers of each network (patch sides must be multiples of 2**4).
NUM_LAYERS = 4


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """Sizes and training constants of the baseline (Chatziagapi et al. 2019) GAN.

    Attributes:
        name: Preset name.
        frames: Patch width in STFT frames (time axis); a positive multiple of 16.
        n_mels: Patch height in mel bands; a positive multiple of 16.
        z_dim: N_z, the autoencoder code and generator input dimension.
        n_classes: N_c, emotion classes; the discriminator has N_c + 1 outputs.
        d_widths: Channels of the encoder's four stride-2 convolutions (ours: DCGAN
            64-128-256-512).
        g_widths: Channels of the generator's reshaped dense output and of its first
            three transposed convolutions (the fourth has 1 channel); ours:
            512-256-128-64.
        kernel_size: Square kernel of every (transposed) convolution (ours: 5).
        leaky_slope: Encoder leaky-ReLU slope (ours: 0.2, DCGAN).
        dropout: Dropout after every encoder block (BAGAN code: 0.3).
        batch_size: Real patches per step (ours: 32, as the SN-GAN).
        ae_lr: Autoencoder Adam learning rate (BAGAN code default: 5e-5).
        g_lr, d_lr: GAN-stage Adam learning rates (BAGAN code default: 5e-5 both).
        beta_1, beta_2: Adam betas of both stages (BAGAN code: 0.5, Keras' 0.999).
        ridge: Ridge added to each class covariance, relative to its mean variance.
    """

    name: str = "custom"
    frames: int = 128
    n_mels: int = 128
    z_dim: int = 128
    n_classes: int = 4
    d_widths: tuple = (64, 128, 256, 512)
    g_widths: tuple = (512, 256, 128, 64)
    kernel_size: int = 5
    leaky_slope: float = 0.2
    dropout: float = 0.3
    batch_size: int = 32
    ae_lr: float = 5e-5
    g_lr: float = 5e-5
    d_lr: float = 5e-5
    beta_1: float = 0.5
    beta_2: float = 0.999
    ridge: float = 1e-4

    def __post_init__(self):
        step = 2 ** NUM_LAYERS
        for field in ("frames", "n_mels"):
            value = getattr(self, field)
            if value % step or value < step:
                raise ValueError(f"BaselineConfig.{field} must be a positive multiple of "
                                 f"{step} ({NUM_LAYERS} stride-2 layers), got {value}")
        if len(self.d_widths) != NUM_LAYERS or len(self.g_widths) != NUM_LAYERS:
            raise ValueError(f"BaselineConfig needs {NUM_LAYERS} encoder and {NUM_LAYERS} "
                             f"generator widths, got {len(self.d_widths)} and "
                             f"{len(self.g_widths)}")
        if self.n_classes < 2:
            raise ValueError(f"BaselineConfig.n_classes (N_c) must be >= 2, "
                             f"got {self.n_classes}")
        if self.z_dim < 1 or self.kernel_size < 1:
            raise ValueError("BaselineConfig.z_dim and kernel_size must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BaselineConfig.dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "d_widths", tuple(int(w) for w in self.d_widths))
        object.__setattr__(self, "g_widths", tuple(int(w) for w in self.g_widths))

    def replace(self, **changes) -> BaselineConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``, validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        out = dataclasses.asdict(self)
        out["d_widths"], out["g_widths"] = list(self.d_widths), list(self.g_widths)
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> BaselineConfig:
        """Inverse of `to_dict` (unknown keys raise ``TypeError``)."""
        return cls(**doc)


BASELINE_PRESETS = {
    "paper": BaselineConfig(name="paper"),
    # 64 x 64 patches, an eighth of the widths and N_z = 64: the sizes of the SN-GAN
    # "cpu" preset; larger learning rates for a run of thousands of iterations.
    "cpu": BaselineConfig(name="cpu", frames=64, n_mels=64, z_dim=64,
                          d_widths=(8, 16, 32, 64), g_widths=(64, 32, 16, 8),
                          ae_lr=5e-4, g_lr=2e-4, d_lr=2e-4),
}


def get_baseline_preset(name, **changes) -> BaselineConfig:
    """A preset by name (or a config passed through), with field ``changes``.

    Raises:
        KeyError: Unknown preset name (the message lists the known ones).
    """
    if isinstance(name, BaselineConfig):
        config = name
    else:
        if name not in BASELINE_PRESETS:
            raise KeyError(f"unknown baseline preset {name!r}; "
                           f"known: {sorted(BASELINE_PRESETS)}")
        config = BASELINE_PRESETS[name]
    return config.replace(**changes) if changes else config


def preset_for(sngan_config, **changes) -> BaselineConfig:
    """The baseline matched to an SN-GAN configuration, for a like-for-like comparison.

    Takes the baseline preset of the same name (``"paper"`` for a name without one) and
    copies frames, n_mels, z_dim, n_classes and batch_size from ``sngan_config``.

    Args:
        sngan_config: `keras_ser.models.sngan.SNGANConfig` or SN-GAN preset name.
        **changes: Further field changes applied last.

    Raises:
        KeyError: Unknown SN-GAN preset name.
    """
    from keras_ser.models import sngan

    sngan_config = sngan.get_sngan_preset(sngan_config)
    base = BASELINE_PRESETS.get(sngan_config.name, BASELINE_PRESETS["paper"])
    fields = {f: getattr(sngan_config, f)
              for f in ("frames", "n_mels", "z_dim", "n_classes", "batch_size")}
    fields.update(changes)
    return base.replace(**fields)


def build_baseline_generator(config, name: str = "generator") -> keras.Model:
    """The transposed-convolution generator (also the autoencoder's decoder).

    Layers: ``project`` (dense N_z -> (frames/16) * (mels/16) * g_widths[0], no bias),
    ``project_reshape``, ``project_bn``, ``project_relu``; ``deconv1..3`` (5 x 5,
    stride 2, widths g_widths[1:], each with ``_bn`` and ``_relu``); ``deconv4`` (1
    channel, tanh); ``patch`` (drops the channel axis).

    Args:
        config: `BaselineConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: input ``z`` ``(batch, N_z)`` (an autoencoder code, or a draw
        from a class normal) -> output ``(batch, frames, mels)`` in [-1, 1].

    Reference:
        Chatziagapi et al., Interspeech 2019 (transposed-convolution generator, the BAGAN
        decoder); Radford et al., ICLR 2016 (layer pattern). Widths and kernel: ours.
    """
    config = get_baseline_preset(config)
    h, w = config.frames // 2 ** NUM_LAYERS, config.n_mels // 2 ** NUM_LAYERS
    z = keras.Input((config.z_dim,), name="z")
    x = layers.Dense(h * w * config.g_widths[0], use_bias=False, name="project")(z)
    x = layers.Reshape((h, w, config.g_widths[0]), name="project_reshape")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="project_bn",
                                  synchronized=distribute.synchronized_batch_norm())(x)
    x = layers.ReLU(name="project_relu")(x)
    widths = list(config.g_widths[1:]) + [1]
    for i, width in enumerate(widths):
        last = i == len(widths) - 1
        x = layers.Conv2DTranspose(width, config.kernel_size, strides=2, padding="same",
                                   use_bias=last, activation="tanh" if last else None,
                                   name=f"deconv{i + 1}")(x)
        if not last:
            x = layers.BatchNormalization(
                momentum=BN_MOMENTUM, name=f"deconv{i + 1}_bn",
                synchronized=distribute.synchronized_batch_norm())(x)
            x = layers.ReLU(name=f"deconv{i + 1}_relu")(x)
    out = layers.Reshape((config.frames, config.n_mels), name="patch")(x)
    return keras.Model(z, out, name=name)


def build_baseline_encoder(config, name: str = "encoder") -> keras.Model:
    """The autoencoder's encoder: the discriminator's conv stack plus N_z linear units.

    Layers: ``to_image``; ``conv1..4`` (5 x 5, stride 2, widths d_widths; bias only on
    ``conv1``, the others feed batch norm ``conv2_bn..conv4_bn``), each followed by
    ``conv<i>_lrelu`` and ``conv<i>_dropout``; ``embedding`` (flatten, size
    frames/16 * mels/16 * d_widths[-1]); ``code`` (dense N_z, linear).

    Args:
        config: `BaselineConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: input ``features`` ``(batch, frames, mels)`` float32 in
        [-1, 1] -> ``(batch, N_z)`` code.

    Reference:
        Mariani et al. 2018 (BAGAN encoder = discriminator stack + linear code layer);
        Radford et al., ICLR 2016 (stride-2 convs, BN but on the first, leaky ReLU).
    """
    config = get_baseline_preset(config)
    inputs = keras.Input((config.frames, config.n_mels), name="features")
    x = layers.Reshape((config.frames, config.n_mels, 1), name="to_image")(inputs)
    for i, width in enumerate(config.d_widths):
        x = layers.Conv2D(width, config.kernel_size, strides=2, padding="same",
                          use_bias=i == 0, name=f"conv{i + 1}")(x)
        if i > 0:
            x = layers.BatchNormalization(
                momentum=BN_MOMENTUM, name=f"conv{i + 1}_bn",
                synchronized=distribute.synchronized_batch_norm())(x)
        x = layers.LeakyReLU(config.leaky_slope, name=f"conv{i + 1}_lrelu")(x)
        x = layers.Dropout(config.dropout, name=f"conv{i + 1}_dropout")(x)
    x = layers.Flatten(name=EMBEDDING)(x)
    code = layers.Dense(config.z_dim, name="code")(x)
    return keras.Model(inputs, code, name=name)


def build_baseline_discriminator(encoder: keras.Model, config,
                                 name: str = "discriminator") -> keras.Model:
    """The N_c + 1 class discriminator on the encoder's trunk (weights shared).

    The layers from the input to ``embedding`` are the encoder's own layer objects, so
    the discriminator starts from the trained encoder and training either moves both.

    Args:
        encoder: `build_baseline_encoder` output (any model with an ``embedding`` layer).
        config: `BaselineConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: ``features`` ``(batch, frames, mels)`` -> ``(batch, N_c + 1)``
        float32 softmax; column ``c < N_c`` is emotion c, column N_c is "fake". The
        pre-softmax layer is ``logits``, the softmax ``class_probs``.

    Raises:
        ValueError: ``encoder`` has no ``embedding`` layer.

    Reference:
        Mariani et al. 2018 (N_c + 1 outputs, trunk initialised from the
        encoder); Chatziagapi et al., Interspeech 2019.
    """
    config = get_baseline_preset(config)
    try:
        embedding = encoder.get_layer(EMBEDDING).output
    except ValueError as err:
        raise ValueError(f"encoder {encoder.name!r} has no {EMBEDDING!r} layer") from err
    logits = layers.Dense(config.n_classes + 1, name="logits")(embedding)
    probs = layers.Activation("softmax", dtype="float32", name="class_probs")(logits)
    return keras.Model(encoder.input, probs, name=name)


def discriminator_logits(discriminator: keras.Model) -> keras.Model:
    """The discriminator up to its ``logits`` layer (weights shared): ``(B, N_c + 1)``.

    Raises:
        ValueError: No ``logits`` layer.
    """
    return keras.Model(discriminator.input, discriminator.get_layer("logits").output,
                       name=f"{discriminator.name}_logits")


class ClassLatents:
    """One multivariate normal N(mu_c, Sigma_c) of autoencoder codes per emotion class.

    BAGAN's class conditioning (Mariani et al. 2018): after the autoencoder
    is trained, the training patches are encoded, and the generator input for class c
    is drawn from a normal with the mean and covariance of class c's codes.

    Args:
        means: ``(N_c, N_z)`` class means.
        covariances: ``(N_c, N_z, N_z)`` symmetric positive-definite covariances.
        counts: ``(N_c,)`` codes per class (informative only), or None.
        ridge: The relative ridge `fit` added (informative only).

    Attributes:
        means, covariances: float64 arrays as above.
        cholesky: ``(N_c, N_z, N_z)`` lower Cholesky factors, ``L L^T = Sigma``.

    Raises:
        ValueError: Shapes disagree, or a covariance is not positive definite (the
            message names the class).
    """

    def __init__(self, means, covariances, counts: Sequence[int] | None = None,
                 ridge: float = 0.0):
        means = np.asarray(means, np.float64)
        covariances = np.asarray(covariances, np.float64)
        if means.ndim != 2 or covariances.shape != means.shape + means.shape[-1:]:
            raise ValueError(f"means must be (N_c, N_z) and covariances (N_c, N_z, N_z), got "
                             f"{means.shape} and {covariances.shape}")
        self.means, self.covariances = means, covariances
        self.counts = None if counts is None else np.asarray(counts, np.int64)
        self.ridge = float(ridge)
        factors = []
        for c, cov in enumerate(covariances):
            try:
                factors.append(np.linalg.cholesky(cov))
            except np.linalg.LinAlgError as err:
                raise ValueError(f"covariance of class {c} is not positive definite") from err
        self.cholesky = np.stack(factors)

    @property
    def n_classes(self) -> int:
        """N_c."""
        return self.means.shape[0]

    @property
    def z_dim(self) -> int:
        """N_z."""
        return self.means.shape[1]

    @classmethod
    def fit(cls, codes, labels, n_classes: int | None = None,
            ridge: float = 1e-4) -> ClassLatents:
        """Per-class mean and covariance of autoencoder codes.

        The covariance is the unbiased sample covariance (``np.cov``, ddof = 1) plus
        ``ridge * max(trace / N_z, 1e-12) * I``: a ridge relative to the class's mean
        variance, so the normal is proper even when a class has fewer codes than N_z.

        Args:
            codes: ``(n, N_z)`` encoder outputs.
            labels: ``(n,)`` integer classes in [0, N_c).
            n_classes: N_c (default: ``max(labels) + 1``).
            ridge: Relative ridge (>= 0).

        Returns:
            A `ClassLatents`.

        Raises:
            ValueError: Shapes disagree, a label is out of range, a negative ridge, or a
                class has fewer than 2 codes (the message names the class).
        """
        codes = np.asarray(codes, np.float64)
        labels = np.asarray(labels)
        if codes.ndim != 2 or labels.shape != codes.shape[:1]:
            raise ValueError(f"codes must be (n, N_z) and labels (n,), got {codes.shape} "
                             f"and {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if n_classes is None:
            n_classes = int(labels.max()) + 1 if labels.size else 0
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"labels must be in [0, {n_classes}), got range "
                             f"[{labels.min()}, {labels.max()}]")
        dim = codes.shape[1]
        means, covs, counts = [], [], []
        for c in range(n_classes):
            own = codes[labels == c]
            if len(own) < 2:
                raise ValueError(f"class {c} has {len(own)} code(s); a covariance needs "
                                 "at least 2")
            cov = np.atleast_2d(np.cov(own, rowvar=False))
            scale = max(np.trace(cov) / dim, 1e-12)
            means.append(own.mean(axis=0))
            covs.append(cov + ridge * scale * np.eye(dim))
            counts.append(len(own))
        return cls(np.stack(means), np.stack(covs), counts=counts, ridge=ridge)

    def sample(self, labels, seed=None) -> np.ndarray:
        """Draw one code per label: ``mu_c + L_c e`` with ``e ~ N(0, I)``.

        Args:
            labels: ``(n,)`` integer classes in [0, N_c).
            seed: Seed of `numpy.random.default_rng` (same seed, same draws), or a
                ``numpy.random.Generator``.

        Returns:
            ``(n, N_z)`` float32.

        Raises:
            ValueError: A label out of range.
        """
        labels = np.asarray(labels, np.int64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must be in [0, {self.n_classes})")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        noise = rng.standard_normal((labels.size, self.z_dim))
        out = self.means[labels] + np.einsum("nij,nj->ni", self.cholesky[labels], noise)
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready ``{"means", "covariances", "counts", "ridge"}`` (nested lists)."""
        return {"means": self.means.tolist(), "covariances": self.covariances.tolist(),
                "counts": None if self.counts is None else self.counts.tolist(),
                "ridge": self.ridge}

    @classmethod
    def from_dict(cls, doc: dict) -> ClassLatents:
        """Inverse of `to_dict`."""
        return cls(doc["means"], doc["covariances"], counts=doc.get("counts"),
                   ridge=doc.get("ridge", 0.0))

    def save(self, path: str) -> None:
        """Write to ``path`` atomically: ``.json`` (exact float64 text) or ``.npz``.

        Raises:
            ValueError: Another extension.
        """
        ext = os.path.splitext(path)[1].lower()
        if ext == ".json":
            io.write_text(path, json.dumps(self.to_dict()))
        elif ext == ".npz":
            arrays = {"means": self.means, "covariances": self.covariances,
                      "ridge": np.float64(self.ridge)}
            if self.counts is not None:
                arrays["counts"] = self.counts
            io.save_npz(path, **arrays)
        else:
            raise ValueError(f"ClassLatents are saved as .json or .npz, got {path!r}")

    @classmethod
    def load(cls, path: str) -> ClassLatents:
        """Read a file written by `save`.

        Raises:
            ValueError: Another extension.
            FileNotFoundError: No such file.
        """
        ext = os.path.splitext(path)[1].lower()
        if ext == ".json":
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        if ext == ".npz":
            with np.load(path) as data:
                return cls(data["means"], data["covariances"],
                           counts=data.get("counts"),
                           ridge=float(data["ridge"]))
        raise ValueError(f"ClassLatents are read from .json or .npz, got {path!r}")
