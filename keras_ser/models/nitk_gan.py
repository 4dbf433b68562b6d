"""The per-class DCGAN of the NITK report (Gourishetty, Athrey & Bharath 2021, Sec. 6.1).

One GAN is trained per class chosen for augmentation; all share this architecture. The
report's PyTorch listings fix every layer; this module rebuilds them in Keras with
PyTorch's padding arithmetic made explicit, so the feature-map sizes are the report's:

Generator (listing "class Generator"; N_z = 5, ngf = 64, no biases)::

    z (N_z, 1, 1) -> ConvT 8ngf k4 s1 p0 ->   4 x   4   BN ReLU
                  -> ConvT 4ngf k4 s2 p1 ->   8 x   8   BN ReLU
                  -> ConvT 2ngf k6 s2 p1 ->  18 x  18   BN ReLU
                  -> ConvT  ngf k6 s3 p1 ->  55 x  55   BN ReLU
                  -> ConvT  ngf k6 s2 p1 -> 112 x 112   BN ReLU
                  -> ConvT    1 k4 s2 p1 -> 224 x 224   tanh

A PyTorch ``ConvTranspose2d(k, s, p)`` maps ``n`` to ``(n - 1) s - 2p + k``: the full
transposed convolution (Keras ``Conv2DTranspose(padding="valid")``, ``(n - 1) s + k``
for ``k >= s``) with ``p`` rows and columns cropped from each side (`Cropping2D`).

Discriminator 1 (the shallower one, used first)::

    224 -> Conv ndf k6 s3 p2 -> 75 LReLU
        -> Conv 4ndf k6 s3 p2 -> 25 BN LReLU Dropout2d(0.4)
        -> Conv 8ndf k6 s3 p2 -> 8 BN LReLU
        -> Conv 1 k6 s3 p0 -> 1 sigmoid

Discriminator 2 (the deeper one, used once the generator loss has dropped)::

    224 -> Conv ndf k4 s2 p2 -> 113 LReLU
        -> Conv 4ndf k4 s2 p2 -> 57 BN LReLU
        -> Conv 8ndf k4 s2 p2 -> 29 BN LReLU
        -> Conv 16ndf k4 s2 p2 -> 15 BN LReLU
        -> Conv 16ndf k5 s2 p2 -> 8 BN LReLU
        -> Conv 16ndf k5 s2 p1 -> 3 BN LReLU
        -> Conv 1 k3 s2 p0 -> 1 sigmoid

A PyTorch ``Conv2d(k, s, p)`` maps ``n`` to ``floor((n + 2p - k) / s) + 1``: zero padding
of ``p`` on each side (`ZeroPadding2D`) then a valid convolution. ``Dropout2d`` drops
whole channels: `keras.layers.SpatialDropout2D`. PyTorch's batch norm (momentum 0.1,
eps 1e-5) is Keras' ``momentum=0.9, epsilon=1e-5``; LeakyReLU slope 0.2.

Where the report's prose and listings differ we follow the listings: D1's dropout sits
after its second convolution (the prose says "before the fourth"), and D1's first
convolution has no batch norm (the prose says the first three have it). The report
names ``ngf = 64`` but not ``ndf``: ``ndf = 64`` is our choice (the DCGAN default the
listings come from), as is the DCGAN weight initialisation (convolutions N(0, 0.02),
batch-norm scales N(1, 0.02)), which the report does not state.

Presets are data (`NITK_GAN_PRESETS`):

- ``paper``: the listings above, ngf = ndf = 64 (3,765,248 generator, 5,332,224 D1 and
  63,202,304 D2 parameters). A D2 step of batch 64 takes about 50 s on this 2-core CPU.
- ``cpu``: the same layer pattern at 64 x 64 (the issue allows smaller images), ngf =
  ndf = 32, our choice. Generator: the report's first two blocks, then k4 s2 p1 blocks
  (those of the PyTorch DCGAN example its listings come from) to 4, 8, 16, 32, 64. D1:
  the report's k6 s3 p2 convolutions with dropout after the second, 64 -> 21 -> 7 -> 2,
  then a k2 output to 1. D2: k4 s2 p1 convolutions, 64 -> 32 -> 16 -> 8 -> 4, then a k4
  output to 1 (ndf x 1, 2, 4, 8). Real images are shrunk to 64 x 64 (antialiased
  bilinear) for training and generated ones enlarged back to 224 x 224 (bilinear), and
  the ``cpu`` classifiers see 64 x 64 anyway. Why: at 224 x 224 with ngf = 8, ndf = 4
  (the previous ``cpu`` preset) 160 updates left the images flat (pixel std 0.06
  against 0.35 for real ones) and D rating generated images above real ones; with ndf
  = 16, D2 won outright (D(G(z)) 0.01, generator loss 6.6 after 400 updates). The 64 x
  64 preset (1000 updates, 30 EmoDB disgust images, measured) gave images with the real
  ones' pixel std (0.37 / 0.35) and spread across images (0.29 / 0.29).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import layers

from keras_ser import distribute

#: PyTorch's BatchNorm2d defaults expressed in Keras terms (momentum 0.1 -> 0.9).
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5

#: Generator blocks of the report's listing: (filters as a multiple of ngf, or 0 for the
#: image channel; kernel, stride, padding).
GENERATOR_BLOCKS = ((8, 4, 1, 0), (4, 4, 2, 1), (2, 6, 2, 1), (1, 6, 3, 1), (1, 6, 2, 1),
                    (0, 4, 2, 1))
#: Discriminator 1: (filters as a multiple of ndf, or 0 for the output; kernel, stride,
#: padding, batch norm, dropout after).
DISCRIMINATOR1_BLOCKS = ((1, 6, 3, 2, False, False), (4, 6, 3, 2, True, True),
                         (8, 6, 3, 2, True, False), (0, 6, 3, 0, False, False))
#: Discriminator 2, same fields.
DISCRIMINATOR2_BLOCKS = ((1, 4, 2, 2, False, False), (4, 4, 2, 2, True, False),
                         (8, 4, 2, 2, True, False), (16, 4, 2, 2, True, False),
                         (16, 5, 2, 2, True, False), (16, 5, 2, 1, True, False),
                         (0, 3, 2, 0, False, False))
DISCRIMINATORS = {"d1": DISCRIMINATOR1_BLOCKS, "d2": DISCRIMINATOR2_BLOCKS}
#: The ``cpu`` preset's 64 x 64 layers, same fields (module docstring; our choice).
GENERATOR64_BLOCKS = ((8, 4, 1, 0), (4, 4, 2, 1), (2, 4, 2, 1), (1, 4, 2, 1), (0, 4, 2, 1))
DISCRIMINATOR1_64_BLOCKS = ((1, 6, 3, 2, False, False), (4, 6, 3, 2, True, True),
                            (8, 6, 3, 2, True, False), (0, 2, 1, 0, False, False))
DISCRIMINATOR2_64_BLOCKS = ((1, 4, 2, 1, False, False), (2, 4, 2, 1, True, False),
                            (4, 4, 2, 1, True, False), (8, 4, 2, 1, True, False),
                            (0, 4, 1, 0, False, False))
#: Layer tables per image side: the report's (224) and the ``cpu`` preset's (64).
GEOMETRIES = {224: {"generator": GENERATOR_BLOCKS, **DISCRIMINATORS},
              64: {"generator": GENERATOR64_BLOCKS, "d1": DISCRIMINATOR1_64_BLOCKS,
                   "d2": DISCRIMINATOR2_64_BLOCKS}}


@dataclasses.dataclass(frozen=True)
class NITKGANConfig:
    """Sizes of the per-class DCGAN.

    Attributes:
        n_z: Length N_z of the noise vector (report: 5).
        ngf: Generator width (report: 64).
        ndf: Discriminator width (not in the report; 64, our choice).
        image_size: Side of the square greyscale spectrogram image the GAN works on,
            in pixels: 224 (the listings; the only size their strides reach) or 64 (the
            ``cpu`` preset's layers, `GEOMETRIES`).
        dropout: Channel dropout rate of D1 (report: 0.4).
        leaky_slope: LeakyReLU slope (report: 0.2).
        init_std: Standard deviation of the N(0, std) weight initialisation (DCGAN
            convention, our choice).
    """

    n_z: int = 5
    ngf: int = 64
    ndf: int = 64
    image_size: int = 224
    dropout: float = 0.4
    leaky_slope: float = 0.2
    init_std: float = 0.02

    def __post_init__(self):
        if self.image_size not in GEOMETRIES:
            raise ValueError(f"the GAN's layers exist for images of side "
                             f"{' or '.join(map(str, GEOMETRIES))}, not {self.image_size}")
        if min(self.n_z, self.ngf, self.ndf) < 1:
            raise ValueError("n_z, ngf and ndf must be positive")

    def replace(self, **changes) -> NITKGANConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> NITKGANConfig:
        """Inverse of `to_dict`."""
        return cls(**doc)


NITK_GAN_PRESETS = {"paper": NITKGANConfig(),
                    "cpu": NITKGANConfig(ngf=32, ndf=32, image_size=64)}


def get_config(name) -> NITKGANConfig:
    """The `NITKGANConfig` of a preset name (a config passes through).

    Raises:
        KeyError: Unknown preset; the message lists the known ones.
    """
    if isinstance(name, NITKGANConfig):
        return name
    if name not in NITK_GAN_PRESETS:
        raise KeyError(f"unknown NITK GAN preset '{name}'; known: {', '.join(NITK_GAN_PRESETS)}")
    return NITK_GAN_PRESETS[name]


def _init(config: NITKGANConfig, seed=None):
    return keras.initializers.RandomNormal(0.0, config.init_std, seed=seed)


def _batch_norm(config: NITKGANConfig, name: str):
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
        synchronized=distribute.synchronized_batch_norm(),
        gamma_initializer=keras.initializers.RandomNormal(1.0, config.init_std))


def build_generator(config="paper", name: str = "generator") -> keras.Model:
    """The report's generator: N_z noise -> a greyscale spectrogram image.

    Args:
        config: `NITKGANConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: input ``z`` ``(batch, N_z)`` (standard normal) -> output
        ``(batch, S, S, 1)`` in [-1, 1] (tanh), S = ``config.image_size``. Layers
        ``deconv<k>`` (the transposed convolutions), ``crop<k>`` (PyTorch's padding),
        ``bn<k>``, ``relu<k>``. Intermediate sides: 4, 8, 18, 55, 112, 224 (``paper``);
        4, 8, 16, 32, 64 (``cpu``).

    Reference:
        NITK report, Sec. 6.1, listing "class Generator".
    """
    config = get_config(config)
    z = keras.Input((config.n_z,), name="z")
    x = layers.Reshape((1, 1, config.n_z), name="z_as_image")(z)
    blocks = GEOMETRIES[config.image_size]["generator"]
    for i, (mult, kernel, stride, pad) in enumerate(blocks, start=1):
        x = layers.Conv2DTranspose(mult * config.ngf or 1, kernel, strides=stride,
                                   padding="valid", use_bias=False,
                                   kernel_initializer=_init(config), name=f"deconv{i}")(x)
        x = layers.Cropping2D(pad, name=f"crop{i}")(x)
        if mult:
            x = _batch_norm(config, f"bn{i}")(x)
            x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.Activation("tanh", name="tanh")(x)
    return keras.Model(z, x, name=name)


def build_discriminator(which: str, config="paper", name: str | None = None) -> keras.Model:
    """One of the report's two discriminators.

    Args:
        which: ``"d1"`` (4 convolutions of kernel 6, stride 3, with dropout) or ``"d2"``
            (7 convolutions of kernels 4, 5 and 3, stride 2).
        config: `NITKGANConfig` or preset name.
        name: Model name (default ``discriminator_<which>``).

    Returns:
        Functional model: input ``image`` ``(batch, S, S, 1)`` in [-1, 1], S =
        ``config.image_size`` -> ``(batch, 1)`` probability that the image is real
        (sigmoid). Layers ``pad<k>``, ``conv<k>``, ``bn<k>``, ``lrelu<k>``,
        ``dropout<k>``. Intermediate sides: D1 75, 25, 8, 1 and D2 113, 57, 29, 15, 8,
        3, 1 (``paper``); D1 21, 7, 2, 1 and D2 32, 16, 8, 4, 1 (``cpu``).

    Raises:
        ValueError: Unknown ``which``.

    Reference:
        NITK report, Sec. 6.1, listings "class Discriminator1" and "class
        Discriminator2".
    """
    if which not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator '{which}'; known: {', '.join(DISCRIMINATORS)}")
    config = get_config(config)
    image = keras.Input((config.image_size, config.image_size, 1), name="image")
    x = image
    blocks = GEOMETRIES[config.image_size][which]
    for i, (mult, kernel, stride, pad, norm, drop) in enumerate(blocks, start=1):
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"pad{i}")(x)
        x = layers.Conv2D(mult * config.ndf or 1, kernel, strides=stride, padding="valid",
                          use_bias=False, kernel_initializer=_init(config), name=f"conv{i}")(x)
        if not mult:
            break
        if norm:
            x = _batch_norm(config, f"bn{i}")(x)
        x = layers.LeakyReLU(config.leaky_slope, name=f"lrelu{i}")(x)
        if drop:
            x = layers.SpatialDropout2D(config.dropout, name=f"dropout{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Activation("sigmoid", name="sigmoid")(x)
    return keras.Model(image, x, name=name or f"discriminator_{which}")


def to_gan_image(images, size: int | None = None):
    """Classifier images -> the GAN's images.

    Args:
        images: ``(n, H, W, C)`` in [0, 255] (the first channel is used; the three
            channels of a spectrogram image are equal).
        size: Side S of the GAN's images (`NITKGANConfig.image_size`); None or H keeps
            the size, otherwise the images are resized with antialiased bilinear
            interpolation (the ``cpu`` preset's 224 -> 64).

    Returns:
        ``(n, S, S, 1)`` in [-1, 1] (numpy when ``images`` is numpy).
    """
    grey = images[..., :1] / 127.5 - 1.0
    if size is None or size == grey.shape[1]:
        return grey
    return np.asarray(keras.ops.image.resize(grey, (size, size), interpolation="bilinear",
                                             antialias=True), np.float32)


def from_gan_image(images, size: int | None = None):
    """Generator output -> a three-channel image in [0, 255], the form
    `keras_ser.features` gives the ImageNet networks.

    Args:
        images: ``(n, S, S, 1)`` in [-1, 1] (clipped).
        size: Side of the classifier images (224); None or S keeps the size,
            otherwise bilinear resizing (the ``cpu`` preset's 64 -> 224).

    Returns:
        ``(n, size, size, 3)`` tensor in [0, 255].
    """
    from keras import ops

    scaled = (ops.clip(images, -1.0, 1.0) + 1.0) * 127.5
    if size is not None and size != scaled.shape[1]:
        scaled = ops.clip(ops.image.resize(scaled, (size, size), interpolation="bilinear"),
                          0.0, 255.0)
    return ops.repeat(scaled, 3, axis=-1)


def spectrogram_view(images):
    """Images ``(n, H, W, 1)`` (frequency rows with the lowest at the bottom, time
    columns) -> ``(n, W, H)`` spectrograms (frames, bins with bin 0 the lowest), the
    layout `keras_ser.plots.spectrogram_grid` draws."""
    from keras import ops

    return ops.flip(ops.transpose(images[..., 0], (0, 2, 1)), axis=2)
