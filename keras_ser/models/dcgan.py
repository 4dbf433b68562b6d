"""DCGAN discriminator/classifier and generator of Chang & Scherer (ICASSP 2017).

One convolutional stack serves the paper's four models:

=================  =============================  ==============================
model              discriminator outputs          trained with
=================  =============================  ==============================
BasicCNN           primary head                   labelled crops
MultitaskCNN       primary + auxiliary heads      labelled crops
BasicDCGAN         real/fake + primary head       labelled + unlabelled crops
MultitaskDCGAN     real/fake + all heads          labelled + unlabelled crops
=================  =============================  ==============================

The stack: four Conv2D layers of stride 2 and no pooling, so the (frames, mels) log-mel
patch halves at each (the paper's Sec. "Experimental Design"); batch norm on all but the
first and leaky ReLU are the DCGAN defaults of Radford et al. 2016, which Chang &
Scherer do not detail (our choice). The real/fake logit reads the flattened last conv
layer (our choice); a fully connected layer on the last conv layer feeds the task heads
(Sec. "Multitask Deep Convolutional Generative Adversarial Network": valence and
activation, 5-way softmax each; the categorical emotion head is our addition). The
generator, which the paper does not describe, is the DCGAN mirror (our choice): N_z
noise -> dense -> (frames/16, mels/16, 8F) -> four transposed convs of stride 2 -> one
tanh channel.

Presets are data (`DCGAN_PRESETS`): ``paper`` uses the DCGAN widths (64-128-256-512)
and a 64-frame crop; ``cpu`` is the same topology at an eighth of the width and a
32-frame crop, which trains on EmoDB in about a minute per fold here. The paper tunes
crop width, filter size and count, batch size and learning rate by random search
(`keras_ser.tuning`); its tuned values were lost in the text we have, so the preset
values are our defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import keras
from keras import layers, ops

from keras_ser import distribute
from keras_ser.tasks import DIMENSIONS, RATING_LEVELS

#: Moving-average momentum of batch norm. Keras' 0.99 leaves the inference statistics
#: near their initial values after the few hundred steps a fold of EmoDB trains for;
#: 0.9 is the DCGAN reference implementations' decay.
BN_MOMENTUM = 0.9

MODELS = ("basic_cnn", "multitask_cnn", "basic_dcgan", "multitask_dcgan")
MODEL_TITLES = {"basic_cnn": "BasicCNN", "multitask_cnn": "MultitaskCNN",
                "basic_dcgan": "BasicDCGAN", "multitask_dcgan": "MultitaskDCGAN"}


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
    """Sizes of the convolutional stack, the heads and the generator.

    Attributes:
        crop_frames: Patch width W in STFT frames (time); a multiple of 16 so the
            generator can mirror four stride-2 layers.
        n_mels: Patch height in mel bands; a multiple of 16.
        filters: Filters F of the first conv layer; layer i has F * 2**i.
        kernel_size: Square filter size; `tied_kernel_size` ties it to the crop width
            (W / 8: the paper's candidate sizes are stated in terms of W / 8, which we
            use directly).
        fc_units: Units of the fully connected layer feeding the task heads (ours).
        z_dim: N_z, dimension of the generator's noise input (ours).
        leaky_slope: Slope of the leaky ReLUs (0.2, Radford et al. 2016; ours).
        dropout: Dropout before the task heads (ours; the paper names none).
        learning_rate: Learning rate of every update (searched in the paper); Adam
            with beta_1 = 0.5 is our choice (the DCGAN value).
        batch_size: Labelled crops per step (unlabelled batches are the same size).
        num_conv: Conv layers in the stack (4 in the paper).
    """

    crop_frames: int = 64
    n_mels: int = 128
    filters: int = 64
    kernel_size: int = 9
    fc_units: int = 512
    z_dim: int = 100
    leaky_slope: float = 0.2
    dropout: float = 0.5
    learning_rate: float = 2e-4
    batch_size: int = 64
    num_conv: int = 4

    def __post_init__(self):
        step = 2 ** self.num_conv
        if self.crop_frames % step or self.n_mels % step:
            raise ValueError(f"crop_frames ({self.crop_frames}) and n_mels ({self.n_mels}) "
                             f"must be multiples of {step} for {self.num_conv} stride-2 layers")
        if self.filters < 1 or self.kernel_size < 1 or self.z_dim < 1:
            raise ValueError("filters, kernel_size and z_dim must be positive")

    def replace(self, **changes) -> "DCGANConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (saved with every run)."""
        return dataclasses.asdict(self)


def tied_kernel_size(crop_frames: int) -> int:
    """Filter size tied to the crop width W: ``W // 8`` (32 frames -> 4, 64 -> 8).

    Chang & Scherer (2017, Sec. "Experimental Design") express the filter size through
    W, "the selected crop width [that] gets divided by 8 to account for each halving of
    image size from the 3 convolutional layers leading up to the last one"; the list of
    candidate sizes was lost in the text we have, so W / 8 itself is used (at least 2;
    our choice).
    """
    return max(2, int(crop_frames) // 8)


#: Architecture presets. ``paper``: DCGAN widths; ``cpu``: reduced width for this machine.
DCGAN_PRESETS = {
    "paper": DCGANConfig(crop_frames=64, filters=64, kernel_size=tied_kernel_size(64),
                         fc_units=512, z_dim=100, batch_size=64, learning_rate=2e-4),
    "cpu": DCGANConfig(crop_frames=32, filters=8, kernel_size=tied_kernel_size(32),
                       fc_units=64, z_dim=32, batch_size=32, learning_rate=5e-4),
}


def get_dcgan_preset(name) -> DCGANConfig:
    """The `DCGANConfig` of a preset name (a config passes through).

    Raises:
        KeyError: Unknown preset name; the message lists the known ones.
    """
    if isinstance(name, DCGANConfig):
        return name
    if name not in DCGAN_PRESETS:
        raise KeyError(f"unknown DCGAN preset '{name}'; known: {', '.join(DCGAN_PRESETS)}")
    return DCGAN_PRESETS[name]


@keras.saving.register_keras_serializable(package="keras_ser")
class GANBatchNormalization(layers.BatchNormalization):
    """Batch norm whose moving statistics can be frozen for generated batches.

    A DCGAN discriminator normalises real and generated batches separately with batch
    statistics (Radford et al. 2016). Here the same network is also the classifier, so
    its moving statistics, used at inference, must describe real speech only: while
    `freeze_moving_statistics` is set, a training-mode call normalises with the batch's
    own statistics but leaves the moving averages untouched. The flag is read when the
    step is traced, so a `train_step` may toggle it around the generated batch.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.freeze_moving_statistics = False

    def call(self, inputs, training=None, mask=None):
        if not (training and self.freeze_moving_statistics):
            return super().call(inputs, training=training, mask=mask)
        axes = [i for i in range(len(inputs.shape)) if i != self.axis % len(inputs.shape)]
        x = ops.cast(inputs, "float32")
        mean, variance = ops.moments(x, axes=axes, synchronized=self.synchronized)
        out = ops.batch_normalization(x, mean, variance, axis=self.axis,
                                      offset=self.beta, scale=self.gamma,
                                      epsilon=self.epsilon)
        return ops.cast(out, inputs.dtype)


def _conv_stack(x, config: DCGANConfig):
    for i in range(config.num_conv):
        x = layers.Conv2D(config.filters * 2 ** i, config.kernel_size, strides=2,
                          padding="same", use_bias=i == 0, name=f"conv{i + 1}")(x)
        if i > 0:
            x = GANBatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i + 1}_bn",
                                      synchronized=distribute.synchronized_batch_norm())(x)
        x = layers.LeakyReLU(config.leaky_slope, name=f"conv{i + 1}_lrelu")(x)
    return x


def build_discriminator(config, heads: dict, adversarial: bool = True,
                        name: str = "discriminator") -> keras.Model:
    """The shared conv stack with a real/fake logit and softmax task heads.

    Args:
        config: `DCGANConfig` or preset name.
        heads: Task name -> number of classes, in update order, e.g.
            ``{"emotion": 7}``, ``{"valence": 5, "activation": 5}``.
        adversarial: Add the real/fake logit ``"real"`` (the DCGAN models).
        name: Model name.

    Returns:
        Functional model: input ``features`` ``(batch, crop_frames, n_mels)`` float32
        (min-max normalised log-mel in [-1, 1]); outputs a dict with ``"real"``
        ``(batch, 1)`` logits (when adversarial) and one ``(batch, classes)`` softmax
        per head. Layer names: ``conv1..4``, ``fc``, ``real``, ``head_<task>``.

    Raises:
        ValueError: No head and no adversarial output, or a head with < 2 classes.

    Reference:
        Chang & Scherer, ICASSP 2017, Secs. "Multitask Deep Convolutional Generative
        Adversarial Network" and "Experimental Design"; Radford et al., ICLR 2016.
    """
    config = get_dcgan_preset(config)
    if not heads and not adversarial:
        raise ValueError("the discriminator needs at least one head or the real/fake output")
    bad = {k: v for k, v in heads.items() if int(v) < 2}
    if bad:
        raise ValueError(f"every head needs at least 2 classes, got {bad}")
    inputs = keras.Input((config.crop_frames, config.n_mels), name="features")
    x = layers.Reshape((config.crop_frames, config.n_mels, 1), name="to_image")(inputs)
    x = _conv_stack(x, config)
    flat = layers.Flatten(name="flatten")(x)
    outputs = {}
    if adversarial:
        outputs["real"] = layers.Dense(1, name="real")(flat)
    if heads:
        h = layers.Dense(config.fc_units, name="fc")(flat)
        h = layers.LeakyReLU(config.leaky_slope, name="fc_lrelu")(h)
        h = layers.Dropout(config.dropout, name="fc_dropout")(h)
        for task, classes in heads.items():
            outputs[task] = layers.Dense(int(classes), activation="softmax",
                                         name=f"head_{task}")(h)
    return keras.Model(inputs, outputs, name=name)


def build_generator(config, name: str = "generator") -> keras.Model:
    """DCGAN generator mirroring the discriminator.

    Args:
        config: `DCGANConfig` or preset name.
        name: Model name.

    Returns:
        Functional model: input ``z`` ``(batch, N_z)`` (standard normal) -> output
        ``(batch, crop_frames, n_mels)`` in [-1, 1] (tanh), the shape of a normalised
        log-mel patch. Layers: ``project`` (dense to (W/16, M/16, 8F)), ``deconv1..4``.

    Reference:
        Radford et al., ICLR 2016 (DCGAN generator); Chang & Scherer, ICASSP 2017, Sec.
        "Related Work" (the DCGAN they build on).
    """
    config = get_dcgan_preset(config)
    step = 2 ** config.num_conv
    w, m = config.crop_frames // step, config.n_mels // step
    top = config.filters * 2 ** (config.num_conv - 1)
    z = keras.Input((config.z_dim,), name="z")
    x = layers.Dense(w * m * top, use_bias=False, name="project")(z)
    x = layers.Reshape((w, m, top), name="project_reshape")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="project_bn",
                                  synchronized=distribute.synchronized_batch_norm())(x)
    x = layers.ReLU(name="project_relu")(x)
    for i in range(config.num_conv - 1):
        x = layers.Conv2DTranspose(top // 2 ** (i + 1), config.kernel_size, strides=2,
                                   padding="same", use_bias=False, name=f"deconv{i + 1}")(x)
        x = layers.BatchNormalization(
            momentum=BN_MOMENTUM, name=f"deconv{i + 1}_bn",
            synchronized=distribute.synchronized_batch_norm())(x)
        x = layers.ReLU(name=f"deconv{i + 1}_relu")(x)
    x = layers.Conv2DTranspose(1, config.kernel_size, strides=2, padding="same",
                               activation="tanh", name=f"deconv{config.num_conv}")(x)
    out = layers.Reshape((config.crop_frames, config.n_mels), name="patch")(x)
    return keras.Model(z, out, name=name)


def model_heads(model: str, primary: str, num_primary: int,
                auxiliary: Sequence[str] = DIMENSIONS) -> dict:
    """Task heads of one of the four models: the primary head, plus auxiliaries if multitask.

    Args:
        model: One of `MODELS`.
        primary: ``"emotion"``, ``"valence"`` or ``"activation"``.
        num_primary: Classes of the primary head (5 for a rating scale).
        auxiliary: Candidate auxiliary tasks (the dimensions other than the primary).

    Raises:
        ValueError: Unknown model.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; expected one of {MODELS}")
    heads = {primary: int(num_primary)}
    if model.startswith("multitask"):
        for task in auxiliary:
            if task != primary:
                heads[task] = RATING_LEVELS
    return heads


def is_adversarial(model: str) -> bool:
    """True for the two DCGAN models (they train a generator)."""
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; expected one of {MODELS}")
    return model.endswith("dcgan")


def freeze_moving_statistics(model: keras.Model, frozen: bool) -> None:
    """Set `GANBatchNormalization.freeze_moving_statistics` on every such layer of ``model``."""
    for layer in model.layers:
        if isinstance(layer, GANBatchNormalization):
            layer.freeze_moving_statistics = frozen


def classifier(discriminator: keras.Model, task: str, name: Optional[str] = None) -> keras.Model:
    """The classifier of one head: features ``(batch, W, M)`` -> ``(batch, classes)`` softmax.

    Shares its layers (and weights) with ``discriminator``.

    Raises:
        KeyError: The discriminator has no head ``task``.
    """
    if task not in discriminator.output:
        raise KeyError(f"discriminator has no head '{task}'; heads: {list(discriminator.output)}")
    return keras.Model(discriminator.input, discriminator.output[task],
                       name=name or f"{task}_classifier")


def all_heads_classifier(discriminator: keras.Model, tasks: Sequence[str]) -> keras.Model:
    """Features -> the task heads' probabilities concatenated in ``tasks`` order.

    Used to average every head over the windows of an utterance in one pass.
    """
    outs = [discriminator.output[t] for t in tasks]
    joined = outs[0] if len(outs) == 1 else layers.Concatenate(name="heads")(outs)
    return keras.Model(discriminator.input, joined, name="all_heads")
