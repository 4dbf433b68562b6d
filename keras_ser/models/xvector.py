"""Speaker-adversarial x-vector SER of Tu et al. (ICASSP 2019).

"Towards adversarial learning of speaker-invariant representation for speech emotion
recognition": an x-vector-like embedding network (two TDNN layers, a BiLSTM, a
frame-wise FC layer and statistics pooling; Sec. 2.1, Table 1) feeds an emotion and a
speaker classifier (FC networks with two hidden layers). Four training strategies share
the network (Sec. 2; Tables 2-3):

* ``ser_only``: the emotion loss L_y alone (the speaker head exists, untrained);
* ``mtl``: L_y + L_s (multi-task learning);
* ``dat``: domain adversarial training, the speaker head behind a gradient reversal
  layer, so the embedding follows grad L_y - lambda grad L_s (eq. 1; Ganin et al. 2016);
* ``cgt``: cross-gradient training (eqs. 2-4; Shankar et al. 2018): each task is also
  trained on inputs perturbed along the other task's input gradient.

Inputs are MFCC + delta + delta-delta (39 dims, Sec. 3.1), zero-padded along time, with
each utterance's valid length in frames. Masking is exact: the frames past each
utterance's length are zeroed before every TDNN (Kaldi-style 'valid' splicing, so no
valid output reads padding), the BiLSTM and the batch-norm statistics skip padded
frames, and statistics pooling reads valid frames only. The padding therefore changes
no output, in inference and in the training-mode batch statistics.

Presets are data (`XVECTOR_PRESETS`): ``paper`` is Table 1's IEMOCAP column,
``mandarin`` its Mandarin column, ``cpu`` equals ``paper`` (the net is small; CPU runs
differ only in their training schedule, `recipes/speaker_adversarial.py`).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_ser import distribute
from keras_ser.models.crnn import MaskedBatchNorm, length_mask

STRATEGIES = ("ser_only", "mtl", "dat", "cgt")
#: Batch-norm momentum and epsilon: PyTorch's defaults (momentum 0.1 of the new batch
#: = Keras 0.9; eps 1e-5), as the paper's PyTorch model would have used (Sec. 3.2).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


# --------------------------------------------------------------------- gradient reversal


@keras.saving.register_keras_serializable(package="keras_ser")
class GradientReversal(layers.Layer):
    """Gradient reversal layer: identity forward, gradient times ``-lambda`` backward.

    ``lambda`` lives in a non-trainable float32 scalar weight (``lambda_value``) read at
    every call, so `set_lambda` (or `GRLSchedule`) changes it between steps without
    retracing a compiled function; it is saved with the weights.

    Args:
        lambda_: Initial lambda (float; eq. 1 of Tu et al., default 1.0: our choice).

    Call args:
        inputs: Any float tensor, e.g. the embedding ``(batch, D)``.

    Returns:
        ``inputs`` unchanged (same shape and dtype); upstream gradient ``g`` becomes
        ``-lambda * g``.

    Raises:
        ValueError: ``lambda_`` not finite.

    Reference:
        Ganin et al., "Domain-adversarial training of neural networks", JMLR 2016,
        Sec. 4.2 (the GRL); Tu et al. 2019, Sec. 2.2, eq. 1.
    """

    def __init__(self, lambda_: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        lambda_ = float(lambda_)
        if not math.isfinite(lambda_):
            raise ValueError(f"lambda_ must be finite, got {lambda_}")
        self.supports_masking = True
        self.lambda_value = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(lambda_), trainable=False,
            dtype="float32", autocast=False, name="lambda")
        self._initial_lambda = lambda_

    def set_lambda(self, value):
        """Assign lambda (Python float or scalar tensor); no retracing needed."""
        self.lambda_value.assign(ops.cast(value, "float32"))

    @property
    def lambda_(self) -> float:
        """Current lambda as a Python float (eager only)."""
        return float(ops.convert_to_numpy(self.lambda_value))

    def call(self, inputs):
        scale = ops.negative(ops.cast(self.lambda_value, inputs.dtype))

        @ops.custom_gradient
        def reverse(x):
            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.multiply(scale, upstream)

            return tf.identity(x), grad

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        # The current lambda; in a graph (not eager) the constructor's value.
        value = self.lambda_ if tf.executing_eagerly() else self._initial_lambda
        config.update(lambda_=value)
        return config


def ganin_lambda(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin's lambda schedule: ``lambda_max * (2 / (1 + exp(-gamma p)) - 1)``.

    Rises from 0 at ``p = 0`` to ``lambda_max * 0.99991`` at ``p = 1`` for gamma 10.

    Args:
        progress: Training progress p in [0, 1].
        lambda_max: Final lambda (Tu et al. give no value; `SpeakerAdversarialSER`
            defaults to 0.5, our choice).
        gamma: Steepness (Ganin et al.: 10).

    Returns:
        lambda_p (float).

    Raises:
        ValueError: ``progress`` outside [0, 1].

    Reference:
        Ganin et al., JMLR 2016, Sec. 5.2.2.
    """
    p = float(progress)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {p}")
    return float(lambda_max) * (2.0 / (1.0 + math.exp(-float(gamma) * p)) - 1.0)


def _reversal_layers(layer_or_model) -> list:
    if isinstance(layer_or_model, GradientReversal):
        return [layer_or_model]
    grl = getattr(layer_or_model, "grl", None)
    if isinstance(grl, GradientReversal):
        return [grl]
    found = [x for x in getattr(layer_or_model, "_flatten_layers", list)()
             if isinstance(x, GradientReversal)]
    if not found:
        raise ValueError(f"no GradientReversal layer in {layer_or_model!r}")
    return found


class GRLSchedule(keras.callbacks.Callback):
    """Sets the gradient reversal lambda before every training batch.

    The global step is computed from the epoch index Keras passes (which counts from
    ``initial_epoch`` on a resumed run) and the batch index, never from a counter kept
    in memory: step = ``epoch * steps_per_epoch + batch + 1`` (1-based: the step about
    to run, our choice, so p reaches 1 on the last step and is > 0 on the first), and
    ``p = min(step / total_steps, 1)``.

    Args:
        layer_or_model: A `GradientReversal`, a model with a ``grl`` attribute, or any
            layer/model containing `GradientReversal` layers (all are set).
        lambda_max: lambda of the ``constant`` schedule, final lambda of ``ganin``.
        total_steps: Training steps of the whole run (p = 1 at the last).
        steps_per_epoch: Batches per epoch; None: taken from ``fit``'s ``params["steps"]``.
        schedule: ``"ganin"`` (`ganin_lambda`) or ``"constant"``.
        gamma: Steepness of the Ganin schedule (10).

    Attributes:
        current: The lambda last set (float), None before the first batch.

    Raises:
        ValueError: Unknown schedule, ``total_steps`` < 1, no GradientReversal layer;
            at ``fit`` start, unknown ``steps_per_epoch``.

    Reference:
        Ganin et al., JMLR 2016, Sec. 5.2.2 (schedule); Tu et al. 2019, eq. 1.
    """

    def __init__(self, layer_or_model, lambda_max: float = 1.0, total_steps: int = 1,
                 steps_per_epoch: int | None = None, schedule: str = "ganin",
                 gamma: float = 10.0):
        super().__init__()
        if schedule not in ("ganin", "constant"):
            raise ValueError(f"schedule must be 'ganin' or 'constant', got {schedule!r}")
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.layers = _reversal_layers(layer_or_model)
        self.lambda_max = float(lambda_max)
        self.total_steps = int(total_steps)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.schedule = schedule
        self.gamma = float(gamma)
        self.current = None
        self._epoch = 0

    def value_at(self, step: int) -> float:
        """lambda at 1-based global ``step``."""
        if self.schedule == "constant":
            return self.lambda_max
        p = min(max(step / self.total_steps, 0.0), 1.0)
        return ganin_lambda(p, self.lambda_max, self.gamma)

    def on_train_begin(self, logs=None):
        if self.steps_per_epoch is None:
            steps = (self.params or {}).get("steps")
            if not steps:
                raise ValueError("GRLSchedule needs steps_per_epoch (fit does not know it)")
            self.steps_per_epoch = int(steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + int(batch) + 1
        self.current = self.value_at(step)
        for layer in self.layers:
            layer.set_lambda(self.current)


# --------------------------------------------------------------------- pooling


@keras.saving.register_keras_serializable(package="keras_ser")
class StatisticsPooling(layers.Layer):
    """Mean and standard deviation over the valid frames, concatenated.

    ``std = sqrt(max(var, epsilon))`` with the population variance (divisor: valid
    frames, as Kaldi's statistics pooling); the floor keeps the gradient finite for a
    constant sequence. Padded frames (any values, also NaN) are ignored.

    Args:
        epsilon: Variance floor (1e-5: our choice).

    Call args:
        inputs: ``(batch, frames, D)``.
        mask: ``(batch, frames)`` bool, True on valid frames; None: all valid. A row
            without valid frames gives mean 0 and std ``sqrt(epsilon)``.

    Returns:
        ``(batch, 2 D)``: ``concat(mean, std)``, in the units of ``inputs``.

    Reference:
        Tu et al. 2019, Sec. 2.1 and Table 1 ("256-dim mean + 256-dim std"); Snyder et
        al., "Deep neural network embeddings for text-independent speaker
        verification", Interspeech 2017.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        valid = ops.expand_dims(ops.cast(mask, "bool"), -1)
        weights = ops.cast(valid, inputs.dtype)
        x = ops.where(valid, inputs, ops.zeros_like(inputs))
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        mean = ops.sum(x, axis=1) / count
        centred = ops.where(valid, x - ops.expand_dims(mean, 1), ops.zeros_like(x))
        variance = ops.sum(ops.square(centred), axis=1) / count
        std = ops.sqrt(ops.maximum(variance, self.epsilon))
        return ops.concatenate([mean, std], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        d = input_shape[-1]
        return (input_shape[0], None if d is None else 2 * d)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


# --------------------------------------------------------------------- presets


#: Layers dropout can follow (`XVectorConfig.dropout_at`).
DROPOUT_SITES = ("tdnn", "blstm", "fc", "heads")


@dataclasses.dataclass(frozen=True)
class XVectorConfig:
    """Sizes of the embedding network and the two heads (Tu et al. 2019, Table 1).

    Attributes:
        input_dim: Features per frame (13 MFCC + delta + delta-delta = 39, Sec. 3.1).
        tdnn: ``(filters, kernel, dilation)`` per TDNN layer ("TDNN N-K-D", Sec. 3.2);
            each shortens the sequence by ``(kernel - 1) dilation`` frames.
        lstm_units: LSTM units per direction of the BiLSTM ("Bi-LSTM N").
        fc_units: Frame-wise FC layer after the BiLSTM (Sec. 3.2); the embedding is
            ``2 fc_units`` wide (mean + std).
        head_units: Hidden widths D2, D3 of both classifiers ("D1-D2-D3-D4").
        num_emotions: Emotion classes (4 on both corpora).
        num_speakers: Training speakers (IEMOCAP fold: 8; Mandarin: 200).
        dropout: Dropout rate ("0.5 keep probability", Sec. 3.2).
        dropout_at: Where dropout is applied: any of ``"tdnn"``, ``"blstm"``, ``"fc"``
            (the frame-level layers) and ``"heads"`` (the classifiers' hidden layers).
            Presets: none. Our reading of Sec. 3.2's "dropout with 0.5 keep probability
            (applied to RNN)" in a PyTorch model is the ``dropout`` argument of
            ``nn.LSTM``, which acts between stacked LSTM layers only and so does nothing
            in the single BiLSTM layer of Table 1. The other reading, dropout after every
            frame-level layer, we measured to break inference: on EmoDB (fold test-03,
            6 epochs) with dropout after the BiLSTM alone, training-mode accuracy reached
            77% while inference-mode accuracy on the same training utterances fell to
            19% (dropout before masked batch norm and before the pooled standard
            deviation shifts their statistics); without dropout: 90% and 91%.
        batch_norm: Batch norm after every hidden layer's ReLU (Sec. 3.2).

    Raises:
        ValueError: No TDNN layer, a non-positive size, fewer than 2 emotions or 1
            speaker (a one-speaker head is degenerate, L_s = 0, but allowed so that a
            small smoke fold runs), dropout outside [0, 1).
    """

    input_dim: int = 39
    tdnn: tuple = ((128, 5, 2), (64, 3, 4))
    lstm_units: int = 64
    fc_units: int = 256
    head_units: tuple = (64, 64)
    num_emotions: int = 4
    num_speakers: int = 8
    dropout: float = 0.5
    dropout_at: tuple = ()
    batch_norm: bool = True

    def __post_init__(self):
        if not self.tdnn:
            raise ValueError("at least one TDNN layer is needed")
        sizes = [self.input_dim, self.lstm_units, self.fc_units, *self.head_units]
        sizes += [v for layer in self.tdnn for v in layer]
        if any(int(v) < 1 for v in sizes) or any(len(t) != 3 for t in self.tdnn):
            raise ValueError(f"sizes must be positive and TDNN layers (filters, kernel, "
                             f"dilation) triples: {self}")
        if self.num_emotions < 2 or self.num_speakers < 1:
            raise ValueError(f"need >= 2 emotions and >= 1 speaker, got "
                             f"{self.num_emotions}, {self.num_speakers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "dropout_at", tuple(self.dropout_at))
        unknown = set(self.dropout_at) - set(DROPOUT_SITES)
        if unknown:
            raise ValueError(f"dropout_at: unknown {sorted(unknown)}; choose from "
                             f"{DROPOUT_SITES}")

    def replace(self, **changes) -> XVectorConfig:
        """A copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["tdnn"] = [list(t) for t in self.tdnn]
        d["head_units"] = list(self.head_units)
        d["dropout_at"] = list(self.dropout_at)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> XVectorConfig:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["tdnn"] = tuple(tuple(int(v) for v in t) for t in d["tdnn"])
        d["head_units"] = tuple(int(v) for v in d["head_units"])
        d["dropout_at"] = tuple(d.get("dropout_at", DROPOUT_SITES))
        return cls(**d)

    @property
    def context(self) -> int:
        """Frames the TDNN stack removes: ``sum (kernel - 1) dilation`` (paper: 16)."""
        return int(sum((k - 1) * d for _, k, d in self.tdnn))

    @property
    def receptive_field(self) -> int:
        """Input frames seen by one TDNN output frame (paper preset: 17)."""
        return self.context + 1

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding e: ``2 fc_units``."""
        return 2 * self.fc_units


#: Table 1 of Tu et al.: ``paper`` = the IEMOCAP column, ``mandarin`` = the Mandarin SE
#: column (200 training speakers); ``cpu`` has the ``paper`` sizes (only the training
#: schedule differs, in the recipe).
XVECTOR_PRESETS = {
    "paper": XVectorConfig(),
    "mandarin": XVectorConfig(tdnn=((128, 5, 2), (128, 3, 4)), lstm_units=128, fc_units=512,
                              head_units=(128, 128), num_speakers=200),
    "cpu": XVectorConfig(),
}


def get_config(preset, **overrides) -> XVectorConfig:
    """A preset by name (or an `XVectorConfig`) with fields overridden.

    Raises:
        ValueError: Unknown preset name (the message lists the presets).
    """
    if isinstance(preset, XVectorConfig):
        return preset.replace(**overrides)
    if preset not in XVECTOR_PRESETS:
        raise ValueError(f"unknown x-vector preset {preset!r}; choose from "
                         f"{sorted(XVECTOR_PRESETS)}")
    return XVECTOR_PRESETS[preset].replace(**overrides)


def paper_optimizer(learning_rate: float = 1e-3) -> keras.optimizers.SGD:
    """SGD with Nesterov momentum 0.9 and learning rate 1e-3 (Tu et al., Sec. 3.2)."""
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)


def _as_config(config) -> XVectorConfig:
    if config is None:
        return XVectorConfig()
    if isinstance(config, dict):
        return XVectorConfig.from_dict(config)
    return config


# --------------------------------------------------------------------- networks


def tdnn_lengths(lengths, context: int):
    """Valid frames after a TDNN removing ``context`` frames: ``max(L - context, 1)``.

    An utterance shorter than the receptive field keeps one valid frame, which reads
    zeros past its end (our choice).

    Args:
        lengths: ``(batch,)`` int valid input frames.
        context: ``(kernel - 1) dilation`` of the TDNN.

    Returns:
        ``(batch,)`` int32 valid output frames.

    Reference:
        Tu et al. 2019, Sec. 3.2 (TDNN as a 1-D convolution in PyTorch, whose default
        padding is 0); Kaldi's TDNN splicing.
    """
    return ops.maximum(ops.cast(lengths, "int32") - int(context), 1)


@keras.saving.register_keras_serializable(package="keras_ser")
class XVectorEmbedding(layers.Layer):
    """The embedding sub-network: TDNN x2, BiLSTM, frame-wise FC, statistics pooling.

    Per TDNN ``N-K-D``: frames past each utterance's length set to 0, ``Conv1D(N, K,
    dilation_rate=D, padding="valid")`` (Kaldi splicing / PyTorch Conv1d padding 0:
    ``(K - 1) D`` frames fewer), ReLU, masked batch norm, dropout. Then ``Bidirectional(
    LSTM(units))`` over the valid frames, masked batch norm, dropout; ``Dense(fc_units)``
    per frame, ReLU, masked batch norm, dropout; `StatisticsPooling` over the valid
    frames. Batch-norm statistics skip padded frames (`keras_ser.models.crnn.
    MaskedBatchNorm`, one mean/variance per unit). A padded length shorter than the
    receptive field is zero-padded up to it; valid lengths become ``max(L - context,
    1)`` (`tdnn_lengths`). Layer order is our reading of Sec. 3.2 ("followed by ReLU
    activation function, batch normalization (applied to RNN) and dropout").

    Args:
        config: `XVectorConfig` (or its dict).

    Call args:
        features: ``(batch, frames, input_dim)`` float.
        lengths: ``(batch,)`` int valid frames (>= 1).
        training: Batch statistics and dropout when True.

    Returns:
        ``(batch, 2 fc_units)`` embedding e.

    Reference:
        Tu et al. 2019, Sec. 2.1, Sec. 3.2, Table 1; Snyder et al. 2017 (x-vectors).
    """

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = c = _as_config(config)

        def norm(name):
            return (MaskedBatchNorm("unit", momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                    name=name) if c.batch_norm else None)

        def drop(name):
            site = name.split("_")[0]
            return (layers.Dropout(c.dropout, name=name)
                    if c.dropout and site in c.dropout_at else None)

        self.tdnns, self.tdnn_norms, self.tdnn_dropouts = [], [], []
        for i, (filters, kernel, dilation) in enumerate(c.tdnn):
            self.tdnns.append(layers.Conv1D(filters, kernel, dilation_rate=dilation,
                                            padding="valid", name=f"tdnn_{i}"))
            self.tdnn_norms.append(norm(f"tdnn_{i}_bn"))
            self.tdnn_dropouts.append(drop(f"tdnn_{i}_dropout"))
        self.blstm = layers.Bidirectional(
            layers.LSTM(c.lstm_units, return_sequences=True), name="blstm")
        self.blstm_norm = norm("blstm_bn")
        self.blstm_dropout = drop("blstm_dropout")
        self.fc = layers.Dense(c.fc_units, name="fc")
        self.fc_norm = norm("fc_bn")
        self.fc_dropout = drop("fc_dropout")
        self.pooling = StatisticsPooling(name="statistics_pooling")

    def build(self, input_shape):
        c = self.config
        width = c.input_dim
        for conv, bn, (filters, _, _) in zip(self.tdnns, self.tdnn_norms, c.tdnn):
            conv.build((None, None, width))
            if bn is not None:
                bn.build((None, None, filters))
            width = filters
        self.blstm.build((None, None, width))
        if self.blstm_norm is not None:
            self.blstm_norm.build((None, None, 2 * c.lstm_units))
        self.fc.build((None, None, 2 * c.lstm_units))
        if self.fc_norm is not None:
            self.fc_norm.build((None, None, c.fc_units))
        self.pooling.build((None, None, c.fc_units))
        self.built = True

    @staticmethod
    def _finish(x, mask, norm, dropout, training):
        if norm is not None:
            x = norm(x, mask=mask, training=training)
        if dropout is not None:
            x = dropout(x, training=training)
        return x * ops.cast(mask, x.dtype)[:, :, None]

    def frame_outputs(self, features, lengths, training=False) -> list:
        """Every frame-level stage's output, for inspection and `call`.

        Returns:
            List of ``(name, (batch, frames_i, width_i) tensor, (batch,) int32
            lengths_i)`` for ``"input"`` (after zeroing and receptive-field padding),
            ``"tdnn_0"``, ``"tdnn_1"``, ..., ``"blstm"``, ``"fc"``; padded frames are 0.
        """
        c = self.config
        lengths = ops.cast(lengths, "int32")
        frames = ops.shape(features)[1]
        mask = length_mask(lengths, frames)
        x = ops.where(mask[:, :, None], features, ops.zeros_like(features))
        short = ops.maximum(c.receptive_field - frames, 0)
        x = tf.pad(x, [[0, 0], [0, short], [0, 0]])
        out = [("input", x, lengths)]
        for i, (conv, bn, drop, (_, k, d)) in enumerate(zip(
                self.tdnns, self.tdnn_norms, self.tdnn_dropouts, c.tdnn)):
            x = x * ops.cast(length_mask(lengths, ops.shape(x)[1]), x.dtype)[:, :, None]
            x = ops.relu(conv(x))
            lengths = tdnn_lengths(lengths, (k - 1) * d)
            mask = length_mask(lengths, ops.shape(x)[1])
            x = self._finish(x, mask, bn, drop, training)
            out.append((f"tdnn_{i}", x, lengths))
        x = self.blstm(x, mask=mask, training=training)
        x = self._finish(x, mask, self.blstm_norm, self.blstm_dropout, training)
        out.append(("blstm", x, lengths))
        x = ops.relu(self.fc(x))
        x = self._finish(x, mask, self.fc_norm, self.fc_dropout, training)
        out.append(("fc", x, lengths))
        return out

    def call(self, features, lengths, training=False):
        _, x, lengths = self.frame_outputs(features, lengths, training=training)[-1]
        return self.pooling(x, mask=length_mask(lengths, ops.shape(x)[1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.config.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(config=self.config.to_dict())
        return config


@keras.saving.register_keras_serializable(package="keras_ser")
class ClassifierHead(layers.Layer):
    """FC classifier ``D1-D2-D3-D4``: hidden Dense, ReLU, batch norm, dropout; softmax out.

    Args:
        hidden: Hidden widths (D2, D3).
        num_classes: Output classes (D4).
        dropout: Dropout rate after each hidden layer (0: none).
        batch_norm: Batch norm after each hidden ReLU.

    Call args:
        inputs: ``(batch, D1)`` embedding.
        training: Batch statistics and dropout when True.

    Returns:
        ``(batch, num_classes)`` softmax probabilities.

    Reference:
        Tu et al. 2019, Table 1 ("FC 512-64-64-4"), Sec. 3.2.
    """

    def __init__(self, hidden=(64, 64), num_classes: int = 4, dropout: float = 0.5,
                 batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.hidden = tuple(int(u) for u in hidden)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.dense, self.norms, self.dropouts = [], [], []
        for i, units in enumerate(self.hidden):
            self.dense.append(layers.Dense(units, name=f"hidden_{i}"))
            self.norms.append(layers.BatchNormalization(
                momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"hidden_{i}_bn",
                synchronized=distribute.synchronized_batch_norm())
                if self.batch_norm else None)
            self.dropouts.append(layers.Dropout(self.dropout, name=f"hidden_{i}_dropout")
                                 if self.dropout else None)
        self.output_layer = layers.Dense(self.num_classes, name="output")

    def build(self, input_shape):
        width = input_shape[-1]
        for dense, bn, units in zip(self.dense, self.norms, self.hidden):
            dense.build((None, width))
            if bn is not None:
                bn.build((None, units))
            width = units
        self.output_layer.build((None, width))
        self.built = True

    def call(self, inputs, training=False):
        x = inputs
        for dense, bn, drop in zip(self.dense, self.norms, self.dropouts):
            x = ops.relu(dense(x))
            if bn is not None:
                x = bn(x, training=training)
            if drop is not None:
                x = drop(x, training=training)
        return ops.softmax(self.output_layer(x), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(hidden=list(self.hidden), num_classes=self.num_classes,
                      dropout=self.dropout, batch_norm=self.batch_norm)
        return config


def _per_example_ce(labels, probabilities):
    return keras.losses.sparse_categorical_crossentropy(ops.cast(labels, "int32"),
                                                        probabilities)


@keras.saving.register_keras_serializable(package="keras_ser")
class SpeakerAdversarialSER(keras.Model):
    """Embedding network + emotion head + speaker head, trained by one strategy.

    ``call`` returns the emotion probabilities only, so the model serves as a
    classifier. Training data: ``(inputs, {"emotion": (batch,) int, "speaker": (batch,)
    int})``, speaker indices 0..num_speakers-1 over the fold's training speakers.
    Losses are batch means of the sparse categorical cross-entropy of the softmax
    outputs, L_y (emotion) and L_s (speaker). The minimised loss per strategy:

    * ``ser_only``: L_y; the speaker head is evaluated in inference mode for the
      logged speaker loss/accuracy and neither updated nor its batch norm touched;
    * ``mtl``: L_y + L_s;
    * ``dat``: L_y + L_s with the speaker head reading ``GRL(e)``: the speaker head
      follows grad L_s, the embedding grad L_y - lambda grad L_s (eq. 1);
    * ``cgt``: ``(1 - a)(L_y(X) + L_s(X)) + a (L_y(X^s) + L_s(X^y))`` with ``X^s = X +
      eps grad_X sum_i L_s,i``, ``X^y = X + eps grad_X sum_i L_y,i`` (eqs. 2-4;
      `cgt_losses`). In training mode the perturbed passes also update the batch-norm
      moving averages (three passes per step, our choice).

    Logged: ``loss`` (the minimised loss above; ``test_step``: the clean, unperturbed
    loss, L_y for ``ser_only`` else L_y + L_s), ``emotion_loss``, ``speaker_loss`` (clean
    L_y, L_s), ``emotion_accuracy``, ``speaker_accuracy``. Compile with an optimiser only
    (`paper_optimizer`).

    Args:
        config: `XVectorConfig` or its dict.
        strategy: ``"ser_only"``, ``"mtl"``, ``"dat"`` or ``"cgt"``.
        grl_lambda: Initial lambda of the GRL (``dat``; Tu et al. give no value: 0.5, our
            choice; the maximum of `GRLSchedule` when used).
        cgt_epsilon: eps of eqs. 2-3 (not given: 1.0, our choice).
        cgt_alpha: alpha of eq. 4 (not given: 0.5, our choice).

    Call args:
        inputs: ``{"features": (batch, frames, input_dim) float32, "length": (batch,)
            int32}``, or a ``(batch, frames, input_dim)`` tensor (all frames valid).
        training: Batch statistics and dropout when True.

    Returns:
        ``(batch, num_emotions)`` emotion probabilities.

    Raises:
        ValueError: Unknown strategy, alpha outside [0, 1], invalid config.

    Reference:
        Tu et al., "Towards adversarial learning of speaker-invariant representation
        for speech emotion recognition", ICASSP 2019, Secs. 2-3.
    """

    def __init__(self, config=None, strategy: str = "ser_only", grl_lambda: float = 0.5,
                 cgt_epsilon: float = 1.0, cgt_alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not 0.0 <= float(cgt_alpha) <= 1.0:
            raise ValueError(f"cgt_alpha must be in [0, 1], got {cgt_alpha}")
        self.config = c = _as_config(config)
        self.strategy = strategy
        self.grl_lambda = float(grl_lambda)
        self.cgt_epsilon = float(cgt_epsilon)
        self.cgt_alpha = float(cgt_alpha)
        self.embedding = XVectorEmbedding(c, name="embedding")
        self.grl = GradientReversal(self.grl_lambda, name="grl")
        head_dropout = c.dropout if "heads" in c.dropout_at else 0.0
        self.emotion_head = ClassifierHead(c.head_units, c.num_emotions, head_dropout,
                                           c.batch_norm, name="emotion_head")
        self.speaker_head = ClassifierHead(c.head_units, c.num_speakers, head_dropout,
                                           c.batch_norm, name="speaker_head")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.emotion_loss_tracker = keras.metrics.Mean(name="emotion_loss")
        self.speaker_loss_tracker = keras.metrics.Mean(name="speaker_loss")
        self.emotion_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="emotion_accuracy")
        self.speaker_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="speaker_accuracy")

    # ------------------------------------------------------------------ forward

    def build(self, input_shape=None):
        """Create every weight (embedding, both heads) with a call on dummy input."""
        if self.built:
            return
        frames = self.config.receptive_field + 3
        dummy = {"features": ops.zeros((2, frames, self.config.input_dim)),
                 "length": ops.convert_to_tensor(np.array([frames, 1], "int32"))}
        e = self.embed(dummy, training=False)
        self.emotion_head(e, training=False)
        self.speaker_head(self.grl(e), training=False)
        self.built = True

    def _split(self, inputs):
        if isinstance(inputs, dict):
            features, lengths = inputs["features"], inputs.get("length")
        else:
            features, lengths = inputs, None
        features = ops.cast(features, self.compute_dtype)
        if lengths is None:
            lengths = ops.full(ops.shape(features)[:1], ops.shape(features)[1], "int32")
        return features, ops.cast(lengths, "int32")

    def embed(self, inputs, training=False):
        """Embedding e ``(batch, 2 fc_units)`` of ``{"features", "length"}`` inputs."""
        features, lengths = self._split(inputs)
        return self.embedding(features, lengths, training=training)

    def call(self, inputs, training=False):
        """``(batch, num_emotions)`` emotion probabilities."""
        return self.emotion_head(self.embed(inputs, training=training), training=training)

    def speaker_probabilities(self, inputs, training=False):
        """``(batch, num_speakers)`` speaker probabilities (forward: no reversal)."""
        return self.speaker_head(self.embed(inputs, training=training), training=training)

    # ------------------------------------------------------------------ losses

    def head_losses(self, embedding, labels, training=False) -> dict:
        """Clean losses of the strategy from the embedding e.

        Args:
            embedding: ``(batch, 2 fc_units)``.
            labels: ``{"emotion": (batch,), "speaker": (batch,)}`` int.
            training: Mode of the heads (``ser_only`` runs its speaker head in
                inference mode always, behind ``stop_gradient``).

        Returns:
            Dict of scalars ``loss`` (L_y for ``ser_only``, else L_y + L_s; ``dat``:
            the speaker branch through the GRL), ``emotion_loss``, ``speaker_loss`` and
            tensors ``emotion_probabilities``, ``speaker_probabilities``.
        """
        emotion = self.emotion_head(embedding, training=training)
        if self.strategy == "ser_only":
            speaker = self.speaker_head(ops.stop_gradient(embedding), training=False)
        elif self.strategy == "dat":
            speaker = self.speaker_head(self.grl(embedding), training=training)
        else:
            speaker = self.speaker_head(embedding, training=training)
        l_y = ops.mean(_per_example_ce(labels["emotion"], emotion))
        l_s = ops.mean(_per_example_ce(labels["speaker"], speaker))
        total = l_y if self.strategy == "ser_only" else l_y + l_s
        return {"loss": total, "emotion_loss": l_y, "speaker_loss": l_s,
                "emotion_probabilities": emotion, "speaker_probabilities": speaker}

    def strategy_losses(self, inputs, labels, training=False) -> dict:
        """`head_losses` of the clean inputs (no cross-gradient perturbation)."""
        return self.head_losses(self.embed(inputs, training=training), labels,
                                training=training)

    def cgt_losses(self, inputs, labels, training=False) -> dict:
        """Cross-gradient training losses (Tu et al. eqs. 2-4; Shankar et al. 2018).

        The input gradients are those of the SUMS over the batch of the per-example
        cross-entropies, so every utterance is perturbed along its own gradient; they
        are taken from the clean forward pass (same mode, same dropout draw), zeroed on
        padded frames and treated as constants (``stop_gradient``).

        Args:
            inputs: ``{"features", "length"}`` (see the class).
            labels: ``{"emotion": (batch,), "speaker": (batch,)}`` int.
            training: Mode of all three forward passes.

        Returns:
            Dict: ``loss`` = ``(1 - a)(emotion_loss + speaker_loss) + a
            (emotion_loss_perturbed + speaker_loss_perturbed)``; ``emotion_loss`` L_y(X),
            ``speaker_loss`` L_s(X), ``emotion_loss_perturbed`` L_y(X^s),
            ``speaker_loss_perturbed`` L_s(X^y) (batch means); ``features_s`` X^s and
            ``features_y`` X^y ``(batch, frames, input_dim)``; clean
            ``emotion_probabilities``, ``speaker_probabilities``.
        """
        features, lengths = self._split(inputs)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(features)
            e = self.embedding(features, lengths, training=training)
            emotion = self.emotion_head(e, training=training)
            speaker = self.speaker_head(e, training=training)
            ce_y = _per_example_ce(labels["emotion"], emotion)
            ce_s = _per_example_ce(labels["speaker"], speaker)
            sum_y, sum_s = ops.sum(ce_y), ops.sum(ce_s)
        grad_s = tape.gradient(sum_s, features)
        grad_y = tape.gradient(sum_y, features)
        del tape
        valid = ops.cast(length_mask(lengths, ops.shape(features)[1]), features.dtype)
        valid = valid[:, :, None]
        x_s = features + self.cgt_epsilon * ops.stop_gradient(grad_s * valid)
        x_y = features + self.cgt_epsilon * ops.stop_gradient(grad_y * valid)
        emotion_s = self.emotion_head(self.embedding(x_s, lengths, training=training),
                                      training=training)
        speaker_y = self.speaker_head(self.embedding(x_y, lengths, training=training),
                                      training=training)
        l_y, l_s = ops.mean(ce_y), ops.mean(ce_s)
        l_y_s = ops.mean(_per_example_ce(labels["emotion"], emotion_s))
        l_s_y = ops.mean(_per_example_ce(labels["speaker"], speaker_y))
        a = self.cgt_alpha
        total = (1.0 - a) * (l_y + l_s) + a * (l_y_s + l_s_y)
        return {"loss": total, "emotion_loss": l_y, "speaker_loss": l_s,
                "emotion_loss_perturbed": l_y_s, "speaker_loss_perturbed": l_s_y,
                "features_s": x_s, "features_y": x_y,
                "emotion_probabilities": emotion, "speaker_probabilities": speaker}

    def trained_variables(self) -> list:
        """Variables the strategy updates (``ser_only``: not the speaker head's)."""
        if self.strategy == "ser_only":
            return (list(self.embedding.trainable_variables) +
                    list(self.emotion_head.trainable_variables))
        return list(self.trainable_variables)

    # ------------------------------------------------------------------ steps

    @property
    def metrics(self):
        return [self.loss_tracker, self.emotion_loss_tracker, self.speaker_loss_tracker,
                self.emotion_accuracy, self.speaker_accuracy]

    def _update(self, out, labels):
        self.loss_tracker.update_state(out["loss"])
        self.emotion_loss_tracker.update_state(out["emotion_loss"])
        self.speaker_loss_tracker.update_state(out["speaker_loss"])
        self.emotion_accuracy.update_state(labels["emotion"], out["emotion_probabilities"])
        self.speaker_accuracy.update_state(labels["speaker"], out["speaker_probabilities"])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        """One optimiser step of the strategy's loss on ``(inputs, {"emotion",
        "speaker"})``; returns the tracked metrics."""
        x, labels = data[0], data[1]
        variables = self.trained_variables()
        with tf.GradientTape() as tape:
            if self.strategy == "cgt":
                out = self.cgt_losses(x, labels, training=True)
            else:
                out = self.strategy_losses(x, labels, training=True)
            total = out["loss"]
            if self.losses:
                total = total + ops.sum(self.losses)
            scaled = distribute.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._update(out, labels)

    def test_step(self, data):
        """Clean losses and accuracies in inference mode (no perturbation)."""
        x, labels = data[0], data[1]
        return self._update(self.strategy_losses(x, labels, training=False), labels)

    def predict_step(self, data):
        """Emotion probabilities of ``inputs`` or of the inputs of ``(inputs, labels)``."""
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False)

    def get_config(self):
        return {"config": self.config.to_dict(), "strategy": self.strategy,
                "grl_lambda": self.grl_lambda, "cgt_epsilon": self.cgt_epsilon,
                "cgt_alpha": self.cgt_alpha, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
