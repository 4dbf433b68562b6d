"""Masked CNN + BiLSTM of Etienne et al. (2018), with optional recurrent batch norm.

Input: z-scored log-mel spectrograms (64 ms window, 32 ms shift, frequencies up to 4 or
8 kHz; `keras_ser.features.PRESETS` ``"etienne"`` / ``"etienne_8k"``; the paper says
"spectrograms", the mel scale is our choice), zero-padded along time, with each
utterance's true length in frames (the paper's masking layer, Sec. 3).

Network (Sec. 3, Fig. 2): 1-6 convolution blocks (default 4) without pooling -- each a
2-D convolution over (time, frequency) and a ReLU (our choice; the paper names no
activation), optionally with batch normalisation
over valid frames between them (our option; the paper does not describe one) -- whose
time strides shorten the sequence; the frequency and channel axes are then flattened
per frame; 1-4 bidirectional LSTM layers (default 1), optionally with the recurrent
batch normalisation of eqs. 3-5 (the paper's Table 3; its best model, Table 1, has
none); a masked mean over time (our choice of aggregation); a dense softmax over the
N_c emotions.

Masking is exact: every convolution block zeroes the frames beyond the utterance's
length before it pads and convolves (so the padded region reads as the zeros an
unpadded utterance would see), the valid length after a block of time stride s is
``ceil(L / s)``, and neither the batch-norm statistics, the LSTM recurrence nor the
pooling ever touch a padded frame. Changing the values in the padded region changes
no output, and a padded utterance gives exactly the output it gives alone.

Presets are data (`CRNN_PRESETS`). Etienne et al. fix the structure (4 convolution
layers without pooling, 1 Bi-LSTM layer, dense softmax; 1-6 and 1-4 layers explored,
Secs. 1 and 3). They give no kernel sizes, strides, widths, LSTM units, mel bands, L2
factor, learning rate or momentum: those of ``paper`` are our choice and are named as
such in `CRNNConfig`. ``cpu`` keeps the topology at a quarter of the widths and trains
an EmoDB fold in about a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_ser import distribute

#: Variable groups of the layer-wise optimiser and of the gradient-norm logs: a
#: variable belongs to the first group whose key occurs in its path.
LAYER_GROUPS = {"conv": "conv_block", "recurrent": "recurrent", "dense": "classifier"}


def length_mask(lengths, frames):
    """``(batch, frames)`` bool mask, True on the first ``lengths[b]`` frames of row b.

    Args:
        lengths: ``(batch,)`` int valid frames per utterance.
        frames: Padded length (int or scalar tensor).
    """
    steps = ops.arange(frames, dtype="int32")
    return ops.less(steps[None, :], ops.cast(lengths, "int32")[:, None])


def strided_lengths(lengths, stride: int):
    """Valid frames after a convolution of time stride ``stride``: ``ceil(L / s)``.

    Exact for the explicit padding of `MaskedConvBlock` (left ``(k - 1) // 2`` frames,
    right the rest of ``k - 1``).
    """
    lengths = ops.cast(lengths, "int32")
    return (lengths + stride - 1) // stride


@keras.saving.register_keras_serializable(package="keras_ser")
class MaskedBatchNorm(layers.Layer):
    """Batch normalisation whose statistics skip padded frames.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with ``gamma``, ``beta`` per
    unit (last axis). In training the mean and variance are taken over the valid
    frames of the batch (and, with ``statistics="shared"``, over the unit axis too);
    at inference the moving averages are used.

    Args:
        statistics: ``"unit"``: one mean and variance per unit, over batch, time and
            any middle axes (Laurent et al. 2016, sequence-wise BN); ``"shared"``: one
            mean and variance over batch, time and feature axes (Etienne et al. 2018,
            eq. 4 as we read it).
        momentum: Moving-average momentum (0.9 rather than Keras' 0.99: an EmoDB fold
            has about 30 steps per epoch, and with 0.99 the inference statistics
            still carry 80% of their initial values after 24 steps).
        epsilon: Variance floor.

    Call args:
        inputs: ``(batch, frames, ..., units)``.
        mask: ``(batch, frames)`` bool, True on valid frames; ``None``: all valid.
        training: Batch statistics (and moving-average update) when True.

    Returns:
        Same shape as ``inputs``; padded frames are set to 0.

    Raises:
        ValueError: Unknown ``statistics``.

    Reference:
        Etienne et al. 2018, eqs. 4-5; Laurent et al., "Batch normalized recurrent
        neural networks", ICASSP 2016; Ioffe & Szegedy, ICML 2015.
    """

    def __init__(self, statistics: str = "unit", momentum: float = 0.9,
                 epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if statistics not in ("unit", "shared"):
            raise ValueError(f"statistics must be 'unit' or 'shared', got {statistics!r}")
        self.statistics = statistics
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[-1]
        stat_shape = (units,) if self.statistics == "unit" else ()
        self.gamma = self.add_weight(shape=(units,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(units,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=stat_shape, initializer="zeros",
                                           trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=stat_shape, initializer="ones",
                                               trainable=False, name="moving_variance")

    def _weights_of(self, inputs, mask):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        weights = ops.cast(mask, inputs.dtype)
        for _ in range(len(inputs.shape) - 2):
            weights = ops.expand_dims(weights, -1)
        return weights

    def batch_moments(self, inputs, mask=None):
        """Mean and variance over the valid frames (``(units,)`` or scalars) of the
        global batch: under a `tf.distribute` strategy the sums and counts are added
        over the replicas (`keras_ser.distribute.all_reduce_sum`), so N replicas
        normalise with the statistics one replica would use for the whole batch."""
        weights = self._weights_of(inputs, mask) * ops.ones_like(inputs)
        axes = list(range(len(inputs.shape) - (1 if self.statistics == "unit" else 0)))
        count, total = distribute.all_reduce_sum(ops.sum(weights, axis=axes),
                                                 ops.sum(inputs * weights, axis=axes))
        count = ops.maximum(count, 1.0)
        mean = total / count
        variance = distribute.all_reduce_sum(
            ops.sum(ops.square(inputs - mean) * weights, axis=axes)) / count
        return mean, variance

    def call(self, inputs, mask=None, training=False):
        weights = self._weights_of(inputs, mask)
        if training:
            mean, variance = self.batch_moments(inputs, mask)
            self.moving_mean.assign(self.momentum * self.moving_mean +
                                    (1.0 - self.momentum) * mean)
            self.moving_variance.assign(self.momentum * self.moving_variance +
                                        (1.0 - self.momentum) * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        normed = (inputs - mean) * ops.rsqrt(variance + self.epsilon)
        return (normed * self.gamma + self.beta) * weights

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(statistics=self.statistics, momentum=self.momentum,
                      epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class MaskedConvBlock(layers.Layer):
    """2-D convolution over (time, frequency), masked batch norm and ReLU, length-aware.

    Frames beyond each utterance's length are zeroed first; the block then pads
    explicitly (``(k - 1) // 2`` before, the rest of ``k - 1`` after, on both axes)
    and convolves with 'valid' padding, so output frame ``j`` reads input frames
    ``s j - (k - 1) // 2 .. s j + k - 1 - (k - 1) // 2`` and the valid output length is
    exactly ``ceil(L / s)`` whatever the padded length.

    Args:
        filters: Output channels.
        kernel_size: ``(time, frequency)`` kernel, frames x bands.
        strides: ``(time, frequency)`` strides.
        l2: L2 weight-regularisation factor of the kernel (Etienne et al. 2018, Sec. 3).
        batch_norm: Masked batch norm between convolution and ReLU (BN in the
            convolution blocks and the ReLU are our choices).

    Call args:
        inputs: ``(batch, frames, bands, channels)``.
        lengths: ``(batch,)`` int valid frames.
        training: Batch-norm mode.

    Returns:
        ``(outputs, new_lengths)``: ``(batch, ceil(frames / s_t), ceil(bands / s_f),
        filters)`` with padded frames set to 0, and ``(batch,)`` int32 ``ceil(L / s_t)``.

    Reference:
        Etienne et al. 2018, Sec. 3 (convolutions without pooling).
    """

    def __init__(self, filters: int, kernel_size=(3, 3), strides=(1, 1), l2: float = 0.0,
                 batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.l2 = float(l2)
        self.batch_norm = bool(batch_norm)
        self.conv = layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides, padding="valid",
            use_bias=not self.batch_norm, name="conv",
            kernel_regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)
        self.norm = MaskedBatchNorm("unit", name="bn") if self.batch_norm else None

    def build(self, input_shape):
        kt, kf = self.kernel_size
        bands = input_shape[2]
        self.conv.build((input_shape[0], None, None if bands is None else bands + kf - 1,
                         input_shape[3]))
        if self.norm is not None:
            out_bands = None if bands is None else -(-bands // self.strides[1])
            self.norm.build((input_shape[0], None, out_bands, self.filters))

    def call(self, inputs, lengths, training=False):
        kt, kf = self.kernel_size
        mask = length_mask(lengths, ops.shape(inputs)[1])
        x = inputs * ops.cast(mask, inputs.dtype)[:, :, None, None]
        x = ops.pad(x, [[0, 0], [(kt - 1) // 2, kt - 1 - (kt - 1) // 2],
                        [(kf - 1) // 2, kf - 1 - (kf - 1) // 2], [0, 0]])
        x = self.conv(x)
        new_lengths = strided_lengths(lengths, self.strides[0])
        new_mask = length_mask(new_lengths, ops.shape(x)[1])
        if self.norm is not None:
            x = self.norm(x, mask=new_mask, training=training)
        x = ops.relu(x) * ops.cast(new_mask, x.dtype)[:, :, None, None]
        return x, new_lengths

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, l2=self.l2, batch_norm=self.batch_norm)
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class BNLSTMCell(layers.Layer):
    """LSTM cell whose input term arrives already projected and batch-normalised.

    Computes the gates from ``z_t + W_h h_{t-1} + b`` where ``z_t = BN(W_x x_t)``
    (``4 units`` wide, order i, f, c, o) is precomputed for all t by
    `RecurrentBatchNormLSTM`; the forget-gate bias starts at 1.

    Args:
        units: Hidden units.
        l2: L2 factor of the recurrent kernel.

    Reference:
        Etienne et al. 2018, eq. 5; Hochreiter & Schmidhuber 1997.
    """

    def __init__(self, units: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.l2 = float(l2)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        u = self.units
        self.recurrent_kernel = self.add_weight(
            shape=(u, 4 * u), initializer="orthogonal", name="recurrent_kernel",
            regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)
        self.bias = self.add_weight(
            shape=(4 * u,), name="bias",
            initializer=keras.initializers.Constant(
                np.concatenate([np.zeros(u), np.ones(u), np.zeros(2 * u)]).astype("float32")))

    def call(self, inputs, states, training=False):
        h, c = states
        z = inputs + ops.matmul(h, self.recurrent_kernel) + self.bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return h, [h, c]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, l2=self.l2)
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class RecurrentBatchNormLSTM(layers.Layer):
    """(Bi)LSTM with recurrent batch normalisation, masked: ``h_t = a(W_h h_{t-1} +
    BN(W_x x_t))``.

    For each direction the input projection ``W_x x_t`` of every frame is computed
    with one dense layer (no bias), normalised by `MaskedBatchNorm` over the valid
    frames of the batch (padding excluded), and fed to a `BNLSTMCell` that adds the
    recurrent term and the bias. Padded frames never update the state; their outputs
    are 0. The backward direction runs over each utterance's valid frames only from
    its own last frame (the padded tail leaves its state at zero).

    Args:
        units: Hidden units per direction.
        bidirectional: Two directions, outputs concatenated (``2 units``).
        return_sequences: Outputs for every frame, else the final states.
        batch_norm: ``False`` gives a plain masked (Bi)LSTM with a biased input
            projection, for the ablation.
        statistics: `MaskedBatchNorm` statistics, ``"shared"`` (batch, time and feature
            axes, eq. 4) or ``"unit"``.
        l2: L2 factor of both kernels.

    Call args:
        inputs: ``(batch, frames, features)``.
        mask: ``(batch, frames)`` bool, True on valid frames.
        training: Batch-norm mode.

    Returns:
        ``(batch, frames, units * directions)`` with zeros on padded frames, or
        ``(batch, units * directions)`` with ``return_sequences=False``.

    Reference:
        Etienne et al. 2018, Sec. 3, eqs. 3-5; Laurent et al., ICASSP 2016;
        Cooijmans et al., "Recurrent batch normalization", ICLR 2017.
    """

    def __init__(self, units: int, bidirectional: bool = True, return_sequences: bool = True,
                 batch_norm: bool = True, statistics: str = "shared", l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.bidirectional = bool(bidirectional)
        self.return_sequences = bool(return_sequences)
        self.batch_norm = bool(batch_norm)
        self.statistics = statistics
        self.l2 = float(l2)
        self.supports_masking = True
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        names = ["forward", "backward"] if self.bidirectional else ["forward"]
        self.projections, self.norms, self.rnns = [], [], []
        for name in names:
            self.projections.append(layers.Dense(4 * self.units, use_bias=not self.batch_norm,
                                                 kernel_regularizer=reg,
                                                 name=f"{name}_input_projection"))
            self.norms.append(MaskedBatchNorm(statistics, name=f"{name}_bn")
                              if self.batch_norm else None)
            self.rnns.append(layers.RNN(BNLSTMCell(self.units, self.l2, name=f"{name}_cell"),
                                        return_sequences=self.return_sequences,
                                        go_backwards=name == "backward",
                                        zero_output_for_mask=self.return_sequences,
                                        name=f"{name}_rnn"))

    def build(self, input_shape):
        for proj, norm, rnn in zip(self.projections, self.norms, self.rnns):
            proj.build(input_shape)
            shape = (*input_shape[:-1], 4 * self.units)
            if norm is not None:
                norm.build(shape)
            rnn.build(shape)

    def call(self, inputs, mask=None, training=False):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        outputs = []
        for proj, norm, rnn in zip(self.projections, self.norms, self.rnns):
            z = proj(inputs)
            if norm is not None:
                z = norm(z, mask=mask, training=training)
            y = rnn(z, mask=mask, training=training)
            if self.return_sequences and rnn.go_backwards:
                y = ops.flip(y, axis=1)
            outputs.append(y)
        out = ops.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        if self.return_sequences:
            out = out * ops.cast(mask, out.dtype)[:, :, None]
        return out

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape):
        width = self.units * len(self.rnns)
        if self.return_sequences:
            return (*input_shape[:-1], width)
        return (input_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, bidirectional=self.bidirectional,
                      return_sequences=self.return_sequences, batch_norm=self.batch_norm,
                      statistics=self.statistics, l2=self.l2)
        return config


def masked_mean(sequence, mask):
    """Mean over the valid frames: ``(batch, frames, d)``, ``(batch, frames)`` -> ``(batch, d)``."""
    weights = ops.cast(mask, sequence.dtype)[:, :, None]
    return ops.sum(sequence * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


@dataclasses.dataclass(frozen=True)
class CRNNConfig:
    """Sizes of the CNN + BiLSTM.

    Attributes:
        n_mels: Mel bands of the input (our choice: 128; the paper gives none).
        num_classes: N_c (IEMOCAP: 4; EmoDB: 7).
        conv_filters: Channels of every convolution block; its length is the number of
            blocks (the paper explores 1-6, best 4, Secs. 1 and 3). Widths: ours, the
            paper gives none.
        conv_kernel: ``(time, frequency)`` kernel, frames x bands (ours).
        conv_strides: ``(time, frequency)`` stride of each block (ours: halve the
            frequency axis every block and the time axis in blocks 1 and 3, so the
            BiLSTM runs at 128 ms per step; striding the first block halves the
            convolution cost against striding the second, 0.135 vs 0.25 s per cpu
            step here).
        lstm_layers: BiLSTM layers (the paper explores 1-4, best 1).
        lstm_units: Units per direction (ours).
        conv_bn: Batch normalisation in the convolution blocks (our option; the paper
            describes none).
        recurrent_bn: Recurrent batch normalisation (eqs. 3-5; Table 3). Off in the best
            model of Table 1.
        bn_statistics: ``"shared"`` or ``"unit"`` (`MaskedBatchNorm`).
        l2: L2 weight-regularisation factor (Sec. 3 names L2; value ours).
        dropout: Dropout before the softmax (0: none; ours, the paper names none).
    """

    n_mels: int = 128
    num_classes: int = 4
    conv_filters: tuple = (64, 64, 128, 128)
    conv_kernel: tuple = (3, 3)
    conv_strides: tuple = ((2, 2), (1, 2), (2, 2), (1, 2))
    lstm_layers: int = 1
    lstm_units: int = 128
    conv_bn: bool = False
    recurrent_bn: bool = False
    bn_statistics: str = "shared"
    l2: float = 1e-4
    dropout: float = 0.0

    def __post_init__(self):
        if not 1 <= len(self.conv_filters) <= 6:
            raise ValueError(f"1-6 convolution blocks, got {len(self.conv_filters)}")
        if len(self.conv_strides) != len(self.conv_filters):
            raise ValueError(f"conv_strides has {len(self.conv_strides)} entries for "
                             f"{len(self.conv_filters)} convolution blocks")
        if not 1 <= self.lstm_layers <= 4:
            raise ValueError(f"1-4 BiLSTM layers, got {self.lstm_layers}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def replace(self, **changes) -> "CRNNConfig":
        """A copy with fields changed; ``conv_layers=k`` keeps the first k blocks of the
        preset's 6-block pattern (`conv_pattern`)."""
        k = changes.pop("conv_layers", None)
        if k is not None:
            filters, strides = conv_pattern(self.conv_filters, self.conv_strides, int(k))
            changes.setdefault("conv_filters", filters)
            changes.setdefault("conv_strides", strides)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        return {k: (list(map(list, v)) if k == "conv_strides" else
                    list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "CRNNConfig":
        """Inverse of `to_dict`."""
        d = dict(d)
        d["conv_filters"] = tuple(d["conv_filters"])
        d["conv_kernel"] = tuple(d["conv_kernel"])
        d["conv_strides"] = tuple(tuple(s) for s in d["conv_strides"])
        return cls(**d)

    @property
    def time_stride(self) -> int:
        """Total time downsampling of the convolution stack."""
        return int(np.prod([s[0] for s in self.conv_strides]))

    @property
    def lstm_input_dim(self) -> int:
        """Features per frame entering the first BiLSTM: bands left x last channels."""
        bands = self.n_mels
        for s in self.conv_strides:
            bands = -(-bands // s[1])
        return bands * self.conv_filters[-1]


def conv_pattern(filters: Sequence[int], strides: Sequence, k: int) -> tuple:
    """The first ``k`` blocks of a width/stride pattern extended to 6 blocks.

    Widths continue with the last width; strides repeat the pattern's period of two
    (frequency halved every block, time every second block), so ``k`` blocks never
    shrink the 128 bands below 2.
    """
    if not 1 <= k <= 6:
        raise ValueError(f"1-6 convolution blocks, got {k}")
    widths = list(filters) + [filters[-1]] * 6
    pattern = [tuple(s) for s in strides]
    while len(pattern) < 6:
        pattern.append(pattern[len(pattern) - 2])
    return tuple(widths[:k]), tuple(pattern[:k])


#: ``paper``: the published structure (4 convolutions, 1 Bi-LSTM, no batch norm) with
#: our sizes (128 mels, widths, units); ``cpu``: a quarter of the widths, 32 LSTM units.
CRNN_PRESETS = {
    "paper": CRNNConfig(),
    "cpu": CRNNConfig(conv_filters=(16, 16, 32, 32), lstm_units=32),
}


def get_config(preset, **overrides) -> CRNNConfig:
    """A preset by name (or a `CRNNConfig`) with fields overridden.

    Raises:
        ValueError: Unknown preset name.
    """
    if isinstance(preset, CRNNConfig):
        return preset.replace(**overrides)
    if preset not in CRNN_PRESETS:
        raise ValueError(f"unknown CRNN preset {preset!r}; choose from {sorted(CRNN_PRESETS)}")
    return CRNN_PRESETS[preset].replace(**overrides)


def variable_group(path: str, groups: dict = None) -> str:
    """The layer group (``"conv"``, ``"recurrent"``, ``"dense"``) of a variable path."""
    groups = LAYER_GROUPS if groups is None else groups
    for name, key in groups.items():
        if key in path:
            return name
    return "other"


@keras.saving.register_keras_serializable(package="keras_ser")
class CRNN(keras.Model):
    """The masked CNN + BiLSTM classifier with its own ``train_step`` and ``test_step``.

    Inputs are dicts ``{"features": (batch, frames, n_mels) float32, "length": (batch,)
    int32}`` (the batches of `keras_ser.data.make_dataset` carry both); a bare
    ``(batch, frames, n_mels)`` tensor is taken as unpadded. The output is
    ``(batch, N_c)`` softmax probabilities.

    Training minimises the mean cross-entropy plus the L2 penalties (Sec. 3) and
    tracks ``loss``, ``accuracy`` and, per layer group, the global gradient norm
    ``grad_norm_conv``, ``grad_norm_recurrent``, ``grad_norm_dense`` (Figure 3), which
    the TensorBoard callback logs per epoch. Compile with an optimiser only (SGD with
    momentum; `keras_ser.optimizers.LayerwiseSGD` for the layer-wise variant of
    Sec. 3.1, eq. 6).

    Args:
        config: `CRNNConfig` (or its dict).

    Raises:
        ValueError: Invalid config.

    Reference:
        Etienne et al., "CNN+LSTM Architecture for Speech Emotion Recognition with Data
        Augmentation", 2018, Sec. 3.
    """

    def __init__(self, config: CRNNConfig = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = CRNNConfig.from_dict(config)
        self.config = config or CRNNConfig()
        c = self.config
        reg = keras.regularizers.L2(c.l2) if c.l2 else None
        self.conv_blocks = [MaskedConvBlock(f, c.conv_kernel, s, c.l2, batch_norm=c.conv_bn,
                                            name=f"conv_block_{i}")
                            for i, (f, s) in enumerate(zip(c.conv_filters, c.conv_strides))]
        self.recurrent_layers = [
            RecurrentBatchNormLSTM(c.lstm_units, bidirectional=True, return_sequences=True,
                                   batch_norm=c.recurrent_bn, statistics=c.bn_statistics,
                                   l2=c.l2, name=f"recurrent_{i}")
            for i in range(c.lstm_layers)]
        self.dropout = layers.Dropout(c.dropout) if c.dropout else None
        self.classifier = layers.Dense(c.num_classes, activation="softmax",
                                       kernel_regularizer=reg, name="classifier")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.grad_trackers = {g: keras.metrics.Mean(name=f"grad_norm_{g}")
                              for g in LAYER_GROUPS}

    def build(self, input_shape=None):
        if self.built:
            return
        dummy = {"features": ops.zeros((2, 8 * self.config.time_stride, self.config.n_mels)),
                 "length": ops.convert_to_tensor(np.array([8, 5], "int32"))}
        self.call(dummy, training=False)
        self.built = True

    def _split(self, inputs):
        if isinstance(inputs, dict):
            features = inputs["features"]
            lengths = inputs.get("length")
        else:
            features, lengths = inputs, None
        if lengths is None:
            lengths = ops.full(ops.shape(features)[:1], ops.shape(features)[1], "int32")
        return features, ops.cast(lengths, "int32")

    def embed(self, inputs, training=False):
        """Pooled BiLSTM output ``(batch, 2 lstm_units)`` before the softmax."""
        features, lengths = self._split(inputs)
        x = ops.expand_dims(features, -1)
        for block in self.conv_blocks:
            x, lengths = block(x, lengths, training=training)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], x.shape[2] * x.shape[3]))
        mask = length_mask(lengths, shape[1])
        for rnn in self.recurrent_layers:
            x = rnn(x, mask=mask, training=training)
        return masked_mean(x, mask)

    def call(self, inputs, training=False):
        """``(batch, N_c)`` softmax probabilities of ``{"features", "length"}`` inputs."""
        pooled = self.embed(inputs, training=training)
        if self.dropout is not None:
            pooled = self.dropout(pooled, training=training)
        return self.classifier(pooled)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, *self.grad_trackers.values()]

    def _loss(self, y, probs):
        ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs))
        return ce + (ops.sum(self.losses) if self.losses else 0.0), ce

    def train_step(self, data):
        """One SGD step on ``(inputs, labels)``: cross-entropy + L2, per-group gradient
        norms, optimiser update. Labels are ``(batch,)`` int class indices."""
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            probs = self(x, training=True)
            total, ce = self._loss(y, probs)
            scaled = distribute.scale_loss(total)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        # The logged norms are of the global batch's gradient (summed over replicas).
        summed = grads
        if self.grad_trackers and distribute.num_replicas() > 1:
            present = [g for g in grads if g is not None]
            reduced = iter(distribute.all_reduce_sum(*present) if len(present) > 1
                           else [distribute.all_reduce_sum(*present)])
            summed = [None if g is None else next(reduced) for g in grads]
        for group, tracker in self.grad_trackers.items():
            parts = [ops.sum(ops.square(g)) for g, v in zip(summed, variables)
                     if g is not None and variable_group(v.path) == group]
            if parts:
                tracker.update_state(ops.sqrt(ops.sum(ops.stack(parts))))
        self.optimizer.apply(grads, variables)
        self.loss_tracker.update_state(ce)
        self.accuracy_tracker.update_state(y, probs)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """Cross-entropy (without L2) and accuracy of ``(inputs, labels)``, inference mode."""
        x, y = data[0], data[1]
        probs = self(x, training=False)
        _, ce = self._loss(y, probs)
        self.loss_tracker.update_state(ce)
        self.accuracy_tracker.update_state(y, probs)
        return {m.name: m.result() for m in (self.loss_tracker, self.accuracy_tracker)}

    def predict_step(self, data):
        """Probabilities of ``inputs`` or of the inputs of ``(inputs, labels)``."""
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_crnn(preset="cpu", **overrides) -> CRNN:
    """A built `CRNN` from a preset name (``"paper"``, ``"cpu"``) and field overrides
    (``num_classes``, ``n_mels``, ``conv_layers`` (1-6), ``lstm_layers`` (1-4), ...).

    Raises:
        ValueError: Unknown preset or invalid sizes.
    """
    model = CRNN(get_config(preset, **overrides), name="crnn")
    model.build()
    return model
