"""Masked CNN + BiLSTM of Etienne et al. 2018: masking, recurrent BN, VTLP vote, eq. 6, sizes,
and the ablation rows and optimiser of its protocol."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import length_batch
from helpers import padded as _padded

from keras_ser.augment import VTLP_TTA_ALPHAS
from keras_ser.models import crnn
from keras_ser.optimizers import LayerwiseSGD, crnn_optimizer
from keras_ser.protocols import crnn as protocol
from keras_ser.serving.builders import decide
from keras_ser.serving.layers import MeanOverWindows, VoteOverWindows

#: Tiny widths: 16 mels, 2 blocks (time stride 2, bands 16 -> 8 -> 4), 5 LSTM units.
TINY = dict(n_mels=16, num_classes=3, conv_filters=(4, 4), conv_strides=((2, 2), (1, 2)),
            lstm_units=5)
#: Batch norm is off by default (the paper's best model has none); the masking tests
#: switch it on, since batch statistics are where padding could leak in.
BN = dict(conv_bn=True, recurrent_bn=True)


def _tiny(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return crnn.build_crnn("cpu", **{**TINY, **overrides})


def _count(weights):
    return sum(int(np.prod(v.shape)) for v in weights)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- masking


def test_strided_lengths_is_ceil_and_length_mask_marks_valid_frames():
    """ceil(L / s) for every L in 0..17 and s in 1..4; the mask is True on frames < L."""
    lengths = np.arange(18)
    for s in (1, 2, 3, 4):
        got = np.asarray(crnn.strided_lengths(lengths, s))
        np.testing.assert_array_equal(got, np.ceil(lengths / s).astype(int))
    np.testing.assert_array_equal(np.asarray(crnn.strided_lengths([5, 8, 1], 2)), [3, 4, 1])
    mask = np.asarray(crnn.length_mask(np.array([0, 2, 4]), 4))
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])


def test_padding_content_changes_no_output_in_inference_and_training():
    """Garbage in frames >= length, or more padded frames, give the outputs of the zero
    padded batch (inference and training-mode batch statistics); garbage inside a valid
    frame does change them."""
    model = _tiny(**BN)
    rng = np.random.default_rng(1)
    lengths = [20, 13, 5]
    valid = [rng.standard_normal((n, 16)) for n in lengths]
    x_zero = _padded(valid, 20, rng, garbage=0.0)
    x_garbage = _padded(valid, 20, rng, garbage=1e3)
    assert np.abs(x_garbage[2, 5:]).max() > 100  # the padding really is garbage
    for training in (False, True):
        zero = model(length_batch(x_zero, lengths), training=training).numpy()
        garbage = model(length_batch(x_garbage, lengths), training=training).numpy()
        np.testing.assert_allclose(garbage, zero, atol=1e-6, err_msg=f"training={training}")
        np.testing.assert_allclose(zero.sum(axis=1), 1.0, atol=1e-5)
        # A longer padded length (odd, so the strided lengths differ) changes nothing:
        # the batch statistics of training mode count valid frames only.
        longer = model(length_batch(_padded(valid, 29, rng), lengths), training=training).numpy()
        np.testing.assert_allclose(longer, zero, atol=1e-6, err_msg=f"training={training}")
    # Control: the same garbage in a valid frame (frame 4 of the 5-frame utterance).
    x_control = x_zero.copy()
    x_control[2, 4] = 1e3 * rng.standard_normal(16)
    zero = model(length_batch(x_zero, lengths), training=False).numpy()
    control = model(length_batch(x_control, lengths), training=False).numpy()
    assert np.abs(control[2] - zero[2]).max() > 1e-3
    # In inference the other utterances of the batch are unaffected.
    np.testing.assert_allclose(control[:2], zero[:2], atol=1e-6)
    control_train = model(length_batch(x_control, lengths), training=True).numpy()
    zero_train = model(length_batch(x_zero, lengths), training=True).numpy()
    assert np.abs(control_train - zero_train).max() > 1e-3


def test_padded_utterance_gives_its_unpadded_output():
    """In inference each utterance of a padded batch (odd lengths, so ceil matters)
    gives the output and embedding it gives alone, cut to its own length."""
    model = _tiny(seed=2, **BN)
    rng = np.random.default_rng(2)
    # Non-trivial moving statistics: a few training-mode calls.
    for _ in range(3):
        model(length_batch(rng.standard_normal((4, 12, 16)), [12, 9, 7, 3]), training=True)
    assert np.abs(model.conv_blocks[0].norm.moving_mean.numpy()).max() > 1e-4
    lengths = [17, 13, 5, 2]
    valid = [rng.standard_normal((n, 16)) for n in lengths]
    x = _padded(valid, 24, rng)
    batch = model(length_batch(x, lengths), training=False).numpy()
    embedded = model.embed(length_batch(x, lengths)).numpy()
    for b, n in enumerate(lengths):
        alone = length_batch(valid[b][None], [n])
        np.testing.assert_allclose(model(alone).numpy()[0], batch[b], atol=1e-6)
        np.testing.assert_allclose(model.embed(alone).numpy()[0], embedded[b], atol=1e-6)
        # A bare tensor is taken as unpadded.
        np.testing.assert_allclose(model(tf.constant(valid[b][None], tf.float32)).numpy()[0],
                                   batch[b], atol=1e-6)
    assert np.abs(batch[0] - batch[2]).max() > 1e-4


def test_conv_block_lengths_and_zeroed_padding():
    """A stride-3 block gives ceil(L / 3) valid frames, zeros after them, and valid frames
    equal to those of the unpadded utterance."""
    keras.utils.set_random_seed(3)
    block = crnn.MaskedConvBlock(3, kernel_size=(4, 3), strides=(3, 2), name="conv_block_t")
    rng = np.random.default_rng(3)
    lengths = np.array([11, 7, 1], "int32")
    x = rng.standard_normal((3, 11, 6, 1)).astype("float32")
    x[~np.asarray(crnn.length_mask(lengths, 11))] = 1e3  # garbage padding
    y, new = block(x, lengths, training=False)
    y = y.numpy()
    assert y.shape == (3, 4, 3, 3)
    np.testing.assert_array_equal(new.numpy(), [4, 3, 1])
    for b, n in enumerate(lengths):
        assert not y[b, -(-n // 3):].any()
        alone, _ = block(x[b:b + 1, :n], lengths[b:b + 1], training=False)
        np.testing.assert_allclose(alone.numpy()[0], y[b, :-(-n // 3)], atol=1e-6)


# ------------------------------------------------------------------ recurrent batch norm


@pytest.mark.parametrize("statistics", ["unit", "shared"])
def test_masked_batch_norm_statistics_over_valid_frames_only(statistics):
    """batch_moments equal numpy's mean/variance of the concatenated valid frames (per
    unit, or one scalar); one training call sets the moving averages to
    m * init + (1 - m) * batch stats, whatever the padded length."""
    rng = np.random.default_rng(4)
    lengths = [9, 4, 6]
    valid = [rng.normal([1.0, -2.0, 5.0], [1.0, 3.0, 0.5], size=(n, 3)) for n in lengths]
    flat = np.concatenate(valid)
    mean = flat.mean(axis=0) if statistics == "unit" else flat.mean()
    var = flat.var(axis=0) if statistics == "unit" else flat.var()
    m, eps = 0.8, 1e-3
    outputs = {}
    for frames in (9, 15):
        layer = crnn.MaskedBatchNorm(statistics, momentum=m, epsilon=eps)
        layer.build((None, None, 3))
        assert tuple(layer.moving_mean.shape) == ((3,) if statistics == "unit" else ())
        x = _padded(valid, frames, rng)
        mask = crnn.length_mask(np.array(lengths), frames)
        got_mean, got_var = layer.batch_moments(tf.constant(x), mask)
        np.testing.assert_allclose(got_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_var.numpy(), var, rtol=1e-5)
        y = layer(x, mask=mask, training=True).numpy()
        np.testing.assert_allclose(layer.moving_mean.numpy(), m * 0.0 + (1 - m) * mean,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.moving_variance.numpy(), m * 1.0 + (1 - m) * var,
                                   rtol=1e-5)
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(y[b, :n], (valid[b] - mean) / np.sqrt(var + eps),
                                       rtol=1e-4, atol=1e-5)
            assert not y[b, n:].any()
        # Inference normalises with the moving averages.
        y_inf = layer(x, mask=mask, training=False).numpy()
        mm, mv = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        np.testing.assert_allclose(y_inf[1, :4], (valid[1] - mm) / np.sqrt(mv + eps),
                                   rtol=1e-4, atol=1e-5)
        outputs[frames] = y
    np.testing.assert_allclose(outputs[15][:, :9], outputs[9], atol=1e-5)


def test_masked_batch_norm_unit_statistics_on_conv_maps_and_bad_mode():
    """On (batch, frames, bands, channels) "unit" statistics are per channel over valid
    frames and all bands; an unknown mode is refused."""
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(2, 7, 4, 3)).astype("float32")
    x[1, 3:] = 1e4
    layer = crnn.MaskedBatchNorm("unit")
    layer.build(x.shape)
    mean, var = layer.batch_moments(tf.constant(x), crnn.length_mask(np.array([7, 3]), 7))
    flat = np.concatenate([x[0].reshape(-1, 3), x[1, :3].reshape(-1, 3)])
    np.testing.assert_allclose(mean.numpy(), flat.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(var.numpy(), flat.var(axis=0), rtol=1e-4)
    with pytest.raises(ValueError, match="statistics"):
        crnn.MaskedBatchNorm("batch")


@pytest.mark.parametrize("statistics", ["shared", "unit"])
def test_recurrent_bn_lstm_padding_invariant_in_training(statistics):
    """BiLSTM outputs on valid frames are the same for the batch padded to 9 or 15
    frames (training mode, batch statistics); padded frames output exactly 0; an
    utterance alone, unpadded, gives its outputs in the padded batch of one (the
    backward direction starts at its own last frame)."""
    keras.utils.set_random_seed(6)
    layer = crnn.RecurrentBatchNormLSTM(4, bidirectional=True, statistics=statistics)
    layer.build((None, None, 3))
    rng = np.random.default_rng(6)
    lengths = [9, 6, 2]
    valid = [rng.standard_normal((n, 3)) for n in lengths]
    ys = {}
    for frames in (9, 15):
        mask = crnn.length_mask(np.array(lengths), frames)
        ys[frames] = layer(_padded(valid, frames, rng), mask=mask, training=True).numpy()
        assert ys[frames].shape == (3, frames, 8)
        for b, n in enumerate(lengths):
            assert not ys[frames][b, n:].any()
    np.testing.assert_allclose(ys[15][:, :9], ys[9], atol=1e-6)
    assert np.abs(ys[9][1, :6]).min() > 0
    # One utterance: padded to 15 vs unpadded, training mode.
    padded = layer(_padded(valid[1:2], 15, rng), mask=crnn.length_mask(np.array([6]), 15),
                   training=True).numpy()[0]
    alone = layer(valid[1][None].astype("float32"), training=True).numpy()[0]
    np.testing.assert_allclose(padded[:6], alone, atol=1e-6)
    np.testing.assert_allclose(padded[0, 4:], alone[0, 4:], atol=1e-6)  # backward, frame 0


def test_recurrent_bn_lstm_first_steps_by_hand():
    """In inference (moving mean 0, variance 1) the forward output at frame 0 and the
    backward output at frame L-1 of a padded utterance are one LSTM step from the zero
    state: h = s(o) tanh(s(i) tanh(g)), gates from gamma * W x / sqrt(1 + eps) + beta + b."""
    keras.utils.set_random_seed(7)
    units = 3
    layer = crnn.RecurrentBatchNormLSTM(units, bidirectional=True, statistics="shared")
    layer.build((None, None, 2))
    rng = np.random.default_rng(7)
    for norm in layer.norms:  # non-trivial gamma and beta
        norm.gamma.assign(rng.uniform(0.5, 1.5, 4 * units).astype("float32"))
        norm.beta.assign(rng.normal(0, 0.3, 4 * units).astype("float32"))
    valid = rng.standard_normal((5, 2))
    y = layer(_padded([valid], 12, rng), mask=crnn.length_mask(np.array([5]), 12)).numpy()[0]

    def step(direction, frame):
        w = layer.projections[direction].kernel.numpy()
        norm = layer.norms[direction]
        z = norm.gamma.numpy() * (valid[frame] @ w) / np.sqrt(1 + 1e-3) + norm.beta.numpy()
        z = z + layer.rnns[direction].cell.bias.numpy()
        i, f, g, o = np.split(z, 4)
        return _sigmoid(o) * np.tanh(_sigmoid(i) * np.tanh(g))

    np.testing.assert_allclose(y[0, :units], step(0, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[4, units:], step(1, 4), rtol=1e-5, atol=1e-6)
    # Forget-gate bias starts at 1, the other gates at 0.
    np.testing.assert_array_equal(layer.rnns[0].cell.bias.numpy(),
                                  [0] * units + [1] * units + [0] * 2 * units)


def test_recurrent_bn_lstm_final_states_of_padded_utterances():
    """With return_sequences=False the output is the forward state at the last valid
    frame and the backward state at frame 0, as the sequence outputs say."""
    keras.utils.set_random_seed(8)
    seq = crnn.RecurrentBatchNormLSTM(2, return_sequences=True)
    last = crnn.RecurrentBatchNormLSTM(2, return_sequences=False)
    seq.build((None, None, 3))
    last.build((None, None, 3))
    last.set_weights(seq.get_weights())
    x = np.random.default_rng(8).standard_normal((2, 7, 3)).astype("float32")
    mask = crnn.length_mask(np.array([7, 4]), 7)
    ys, yl = seq(x, mask=mask).numpy(), last(x, mask=mask).numpy()
    np.testing.assert_allclose(yl[:, 2:], ys[:, 0, 2:], atol=1e-6)
    np.testing.assert_allclose(yl[0, :2], ys[0, 6, :2], atol=1e-6)
    np.testing.assert_allclose(yl[1, :2], ys[1, 3, :2], atol=1e-6)


def test_recurrent_bn_lstm_config_round_trip():
    """from_config(get_config()) with copied weights gives the same outputs; the
    unidirectional, unnormalised ablation has a biased projection and half the width."""
    keras.utils.set_random_seed(9)
    layer = crnn.RecurrentBatchNormLSTM(3, bidirectional=True, statistics="unit", l2=1e-3,
                                        name="recurrent_x")
    layer.build((None, None, 2))
    config = layer.get_config()
    assert {k: config[k] for k in ("units", "bidirectional", "return_sequences", "batch_norm",
                                   "statistics", "l2")} == dict(
        units=3, bidirectional=True, return_sequences=True, batch_norm=True,
        statistics="unit", l2=1e-3)
    clone = crnn.RecurrentBatchNormLSTM.from_config(config)
    clone.build((None, None, 2))
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(9).standard_normal((2, 5, 2)).astype("float32")
    mask = crnn.length_mask(np.array([5, 3]), 5)
    np.testing.assert_allclose(clone(x, mask=mask).numpy(), layer(x, mask=mask).numpy(),
                               atol=1e-7)
    assert len(layer.losses) == 4  # L2 on both kernels of both directions
    plain = crnn.RecurrentBatchNormLSTM(3, bidirectional=False, batch_norm=False)
    plain.build((None, None, 2))
    assert plain(x, mask=mask).shape == (2, 5, 3)
    assert _count(plain.trainable_weights) == 2 * 12 + 12 + 3 * 12 + 12
    assert not plain.non_trainable_weights


# --------------------------------------------------------------------------- VTLP vote


def _vote(copies):
    """Vote shares and mean probabilities of ``(utterances, copies, C)`` copy outputs,
    through the serving layers (the copies arrive folded, utterance after utterance)."""
    copies = np.asarray(copies, "float32")
    folded = tf.constant(copies.reshape(-1, copies.shape[-1]))
    units = tf.zeros(copies.shape[:2] + (1,))
    return (VoteOverWindows()([folded, units]).numpy(),
            MeanOverWindows()([folded, units]).numpy())


def test_majority_vote_beats_mean_probability_and_breaks_ties_by_it():
    """The class most copies pick wins even when another has the highest mean
    probability; ties go to the tied class with the highest mean."""
    assert VTLP_TTA_ALPHAS == (0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1)
    votes, mean = _vote([[[0.4, 0.35, 0.25], [0.4, 0.35, 0.25], [0.0, 0.05, 0.95]]])
    np.testing.assert_allclose(votes, [[2 / 3, 0, 1 / 3]], atol=1e-6)
    np.testing.assert_allclose(mean, [[0.8 / 3, 0.75 / 3, 1.45 / 3]], atol=1e-6)
    np.testing.assert_array_equal(decide(mean), [2])
    np.testing.assert_array_equal(decide(mean, votes), [0])
    # Utterance 0: a 2-2 tie of classes 0 and 1, whose means are 0.2875 and 0.3125
    # (class 2 has the highest mean, 0.4, but no vote). Utterance 1: class 2 wins.
    votes, mean = _vote([[[0.5, 0.1, 0.4], [0.5, 0.1, 0.4], [0.1, 0.5, 0.4], [0.05, 0.55, 0.4]],
                         [[0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3], [0.3, 0.6, 0.1]]])
    np.testing.assert_allclose(votes, [[0.5, 0.5, 0], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(mean[0], [0.2875, 0.3125, 0.4], atol=1e-6)
    np.testing.assert_array_equal(decide(mean, votes), [1, 2])


# --------------------------------------------------------------------------- optimiser


def test_layerwise_sgd_two_steps_by_hand():
    """eq. 6 per group: v = gamma v + eta g, w -= beta v, with the group's eta/gamma/beta
    picked by substring of the path; the ungrouped variable follows learning_rate."""
    a = keras.Variable(np.array([1.0, -2.0], "float32"), name="conv_block_a")
    b = keras.Variable(np.array([0.5, 3.0], "float32"), name="recurrent_b")
    c = keras.Variable(np.array([2.0], "float32"), name="classifier_c")
    groups = {"conv": {"match": "conv_block", "learning_rate": 0.1, "momentum": 0.5,
                       "beta": 2.0},
              "recurrent": {"match": "recurrent", "learning_rate": 0.02, "momentum": 0.9,
                            "beta": 0.25}}
    opt = LayerwiseSGD(learning_rate=0.3, momentum=0.2, beta=1.5, groups=groups)
    assert [opt.group_of(v.path) for v in (a, b, c)] == ["conv", "recurrent", None]
    assert opt.hyperparameters(c.path) == (None, 0.2, 1.5)
    g1 = [np.array([1.0, 2.0]), np.array([-4.0, 1.0]), np.array([0.5])]
    g2 = [np.array([-3.0, 0.5]), np.array([2.0, 2.0]), np.array([-1.0])]
    opt.apply([tf.constant(g, tf.float32) for g in g1], [a, b, c])
    opt.learning_rate = 0.05  # the ungrouped eta changes; the groups' stay constant
    opt.apply([tf.constant(g, tf.float32) for g in g2], [a, b, c])
    # By hand.
    # a: v1 = 0.1 g1 = [0.1, 0.2]; w = [1, -2] - 2 v1 = [0.8, -2.4]
    #    v2 = 0.5 v1 + 0.1 g2 = [0.05 - 0.3, 0.1 + 0.05] = [-0.25, 0.15]; w -= 2 v2
    np.testing.assert_allclose(a.numpy(), [1.3, -2.7], rtol=1e-6)
    # b: v1 = 0.02 g1 = [-0.08, 0.02]; w = [0.52, 2.995]
    #    v2 = 0.9 v1 + 0.02 g2 = [-0.032, 0.058]; w -= 0.25 v2 = [0.528, 2.9805]
    np.testing.assert_allclose(b.numpy(), [0.528, 2.9805], rtol=1e-6)
    # c: v1 = 0.3 * 0.5 = 0.15; w = 2 - 1.5 * 0.15 = 1.775
    #    v2 = 0.2 * 0.15 + 0.05 * -1 = -0.02; w = 1.775 + 1.5 * 0.02 = 1.805
    np.testing.assert_allclose(c.numpy(), [1.805], rtol=1e-6)
    np.testing.assert_allclose(opt.velocities[0].numpy(), [-0.25, 0.15], rtol=1e-6)


def test_layerwise_sgd_with_beta_one_is_keras_sgd():
    """With beta = 1 (grouped and ungrouped) three steps on a quadratic follow
    keras.optimizers.SGD(lr, momentum=gamma) exactly."""
    target = np.array([[1.0, -1.0], [0.5, 2.0]], "float32")
    scale = np.array([[1.0, 3.0], [0.2, 0.7]], "float32")

    def run(opt):
        ws = [keras.Variable(np.zeros((2, 2), "float32"), name="conv_block_k"),
              keras.Variable(np.ones(2, "float32"), name="other_k")]
        path = []
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(scale * tf.square(ws[0] - target)) + \
                    tf.reduce_sum(tf.square(ws[1] * ws[1] - 2.0))
            opt.apply(tape.gradient(loss, ws), ws)
            path.append([w.numpy().copy() for w in ws])
        return path

    layerwise = run(LayerwiseSGD(0.05, momentum=0.7, groups={
        "conv": {"match": "conv_block", "learning_rate": 0.05, "momentum": 0.7}}))
    sgd = run(keras.optimizers.SGD(0.05, momentum=0.7))
    for step_l, step_s in zip(layerwise, sgd):
        for wl, ws in zip(step_l, step_s):
            np.testing.assert_allclose(wl, ws, rtol=1e-6, atol=1e-7)
    assert np.abs(layerwise[2][0] - layerwise[0][0]).max() > 0.1
    # beta = 0.5 halves the first step.
    half = run(LayerwiseSGD(0.05, momentum=0.7, beta=0.5))
    np.testing.assert_allclose(half[0][0], 0.5 * sgd[0][0], rtol=1e-6)


def test_layerwise_sgd_validation_and_config_round_trip():
    """Momentum outside [0, 1), beta <= 0, a group without match or with unknown keys
    raise; get_config/from_config and Keras (de)serialisation keep the groups."""
    for kwargs in ({"momentum": 1.0}, {"momentum": -0.1}, {"beta": 0.0}, {"beta": -1.0},
                   {"groups": {"g": {"match": "x", "momentum": 1.5}}},
                   {"groups": {"g": {"match": "x", "beta": 0.0}}},
                   {"groups": {"g": {"learning_rate": 0.1}}},
                   {"groups": {"g": {"match": "x", "lr": 0.1}}}):
        with pytest.raises(ValueError):
            LayerwiseSGD(**kwargs)
    opt = crnn_optimizer(conv_lr=0.03, recurrent_lr=0.004, dense_lr=0.02, conv_momentum=0.8,
                         recurrent_momentum=0.5, momentum=0.6, conv_beta=1.0,
                         recurrent_beta=0.5)
    assert opt.groups == {
        "conv": {"match": "conv_block", "learning_rate": 0.03, "momentum": 0.8, "beta": 1.0},
        "recurrent": {"match": "recurrent", "learning_rate": 0.004, "momentum": 0.5,
                      "beta": 0.5}}
    for clone in (LayerwiseSGD.from_config(opt.get_config()),
                  keras.optimizers.deserialize(keras.optimizers.serialize(opt))):
        assert isinstance(clone, LayerwiseSGD)
        assert clone.groups == opt.groups
        assert (clone.momentum, clone.beta) == (0.6, 1.0)
        assert float(clone.learning_rate) == pytest.approx(0.02)
        assert clone.hyperparameters("crnn/recurrent_0/forward_bn/gamma") == (0.004, 0.5, 0.5)


# --------------------------------------------------------------------------- model


def test_paper_preset_layer_shapes_and_parameters_by_hand():
    """Paper preset, 128 mels, 4 classes, no batch norm, on (2, 64, 128) with lengths
    [64, 37]: block by block shapes and valid lengths, BiLSTM width, and parameters
    counted by hand."""
    model = crnn.build_crnn("paper", num_classes=4)
    c = model.config
    assert (c.n_mels, c.conv_filters, c.lstm_layers, c.lstm_units) == (128, (64, 64, 128, 128),
                                                                       1, 128)
    assert (c.conv_bn, c.recurrent_bn) == (False, False)
    assert (c.time_stride, c.lstm_input_dim) == (4, 8 * 128)
    rng = np.random.default_rng(11)
    features = rng.standard_normal((2, 64, 128)).astype("float32")
    lengths = tf.constant([64, 37], tf.int32)
    x = tf.constant(features)[..., None]
    shapes = [(32, 64, 64), (32, 32, 64), (16, 16, 128), (16, 8, 128)]
    valid = [[32, 19], [32, 19], [16, 10], [16, 10]]
    # 3x3 kernels and a bias: 9*1*64 + 64, 9*64*64 + 64, 9*64*128 + 128, 9*128*128 + 128.
    weights = [640, 36_928, 73_856, 147_584]
    for block, shape, expected, count in zip(model.conv_blocks, shapes, valid, weights):
        x, lengths = block(x, lengths)
        assert tuple(x.shape) == (2, *shape), block.name
        np.testing.assert_array_equal(lengths.numpy(), expected)
        assert not x.numpy()[1, expected[1]:].any()
        assert _count(block.trainable_weights) == count, block.name
    seq = tf.reshape(x, (2, 16, 8 * 128))
    mask = crnn.length_mask(lengths, 16)
    (rnn,) = model.recurrent_layers
    seq = rnn(seq, mask=mask)
    assert tuple(seq.shape) == (2, 16, 256)
    # Per direction: input projection 1024 x 512 + bias 512, recurrent kernel 128 x 512,
    # cell bias 512.
    assert _count(rnn.trainable_weights) == 2 * (524_288 + 512 + 65_536 + 512)
    assert _count(model.classifier.trainable_weights) == 256 * 4 + 4
    assert _count(model.trainable_weights) == 259_008 + 1_181_696 + 1_028 == 1_441_732
    assert _count(model.non_trainable_weights) == 0
    # The walk above is the model's own forward pass.
    probs = model.classifier(crnn.masked_mean(seq, mask)).numpy()
    np.testing.assert_allclose(model(length_batch(features, [64, 37])).numpy(), probs, atol=1e-6)


def test_paper_preset_parameters_with_batch_norm_by_hand():
    """With both batch norms the convolutions lose their bias and gain gamma and beta per
    channel, each BiLSTM direction trades its projection bias for gamma and beta of 512,
    and the moving statistics are per channel (convolutions) and scalar (BiLSTM)."""
    model = crnn.build_crnn("paper", num_classes=4, **BN)
    # 9*1*64 + 128, 9*64*64 + 128, 9*64*128 + 256, 9*128*128 + 256.
    assert [_count(b.trainable_weights) for b in model.conv_blocks] == [
        704, 36_992, 73_984, 147_712]
    assert _count(model.recurrent_layers[0].trainable_weights) == 2 * (
        524_288 + 2 * 512 + 65_536 + 512)
    assert _count(model.trainable_weights) == 259_392 + 1_182_720 + 1_028 == 1_443_140
    assert _count(model.non_trainable_weights) == 2 * (64 + 64 + 128 + 128) + 2 * 2 == 772


def test_variable_groups_cover_every_trainable_variable():
    """variable_group puts every trainable variable in conv, recurrent or dense (the
    parameter counts of the three parts), and crnn_optimizer's groups agree."""
    model = _tiny(seed=12, lstm_layers=2)
    groups = {}
    for v in model.trainable_variables:
        groups.setdefault(crnn.variable_group(v.path), []).append(v)
    assert sorted(groups) == ["conv", "dense", "recurrent"]
    assert _count(groups["conv"]) == (9 * 4 + 4) + (9 * 16 + 4)
    # Per direction: projection D x 4U and its bias 4U, recurrent U x 4U, cell bias 4U;
    # D is 4 bands x 4 channels, then 2 x 5 units.
    assert _count(groups["recurrent"]) == 2 * (16 * 20 + 20 + 5 * 20 + 20) + 2 * (
        10 * 20 + 20 + 5 * 20 + 20)
    assert _count(groups["dense"]) == 10 * 3 + 3
    opt = crnn_optimizer()
    names = {"conv": "conv", "recurrent": "recurrent", "dense": None}
    for v in model.trainable_variables:
        assert opt.group_of(v.path) == names[crnn.variable_group(v.path)], v.path
    assert crnn.variable_group("crnn/something/kernel") == "other"


def test_conv_and_lstm_layer_counts_and_bad_values():
    """conv_layers 1-6 (first k blocks of the 6-block pattern) and lstm_layers 1-4 build
    and run at the cpu widths; 0 or 7 convolutions, 0 or 5 BiLSTMs raise."""
    cpu = crnn.get_config("cpu")
    filters, strides = crnn.conv_pattern(cpu.conv_filters, cpu.conv_strides, 6)
    assert filters == (16, 16, 32, 32, 32, 32)
    assert strides == ((2, 2), (1, 2), (2, 2), (1, 2), (2, 2), (1, 2))
    x = length_batch(np.random.default_rng(13).standard_normal((2, 24, 128)), [24, 9])
    for k in range(1, 7):
        config = crnn.get_config("cpu", num_classes=3, conv_layers=k)
        assert config.conv_filters == filters[:k] and config.conv_strides == strides[:k]
        assert config.lstm_input_dim == (128 >> k) * filters[k - 1]
        assert config.time_stride == 2 ** ((k + 1) // 2)
        model = crnn.build_crnn("cpu", num_classes=3, conv_layers=k)
        assert len(model.conv_blocks) == k
        kernel = model.recurrent_layers[0].projections[0].kernel
        assert tuple(kernel.shape) == (config.lstm_input_dim, 4 * 32)
        assert model(x).shape == (2, 3)
    for n in range(1, 5):
        model = crnn.build_crnn("cpu", num_classes=3, lstm_layers=n, conv_layers=1)
        assert len(model.recurrent_layers) == n
        for rnn in model.recurrent_layers[1:]:
            assert tuple(rnn.projections[1].kernel.shape) == (64, 128)
        assert model(x).shape == (2, 3)
    for overrides in ({"conv_layers": 0}, {"conv_layers": 7}, {"lstm_layers": 0},
                      {"lstm_layers": 5}, {"num_classes": 1}):
        with pytest.raises(ValueError):
            crnn.build_crnn("cpu", **overrides)
    with pytest.raises(ValueError, match="unknown CRNN preset"):
        crnn.get_config("huge")
    config = crnn.get_config("paper", conv_layers=2, dropout=0.1)
    assert crnn.CRNNConfig.from_dict(config.to_dict()) == config


# --------------------------------------------------------------------------- training


def _separable(n_per_class=10, frames=16, seed=14):
    """Class k has energy in bands 5k..5k+4; random lengths 6..frames, zero padding."""
    rng = np.random.default_rng(seed)
    features, lengths, labels = [], [], []
    for k in range(3):
        for _ in range(n_per_class):
            n = int(rng.integers(6, frames + 1))
            x = np.zeros((frames, 16), "float32")
            x[:n] = 0.5 * rng.standard_normal((n, 16))
            x[:n, 5 * k:5 * k + 5] += 2.0
            features.append(x)
            lengths.append(n)
            labels.append(k)
    order = rng.permutation(len(labels))
    return (np.stack(features)[order], np.array(lengths, "int32")[order],
            np.array(labels, "int32")[order])


@pytest.mark.slow
def test_fit_lowers_loss_and_logs_group_gradient_norms():
    """A few epochs of the layer-wise SGD on separable data lower the training loss and
    log a gradient norm per epoch for the conv, recurrent and dense groups (their values
    are checked by hand in the save test)."""
    model = _tiny(seed=15)
    model.compile(optimizer=crnn_optimizer(conv_lr=0.05, recurrent_lr=0.05, dense_lr=0.05))
    features, lengths, labels = _separable()
    ds = tf.data.Dataset.from_tensor_slices(
        ({"features": features, "length": lengths}, labels)).batch(10)
    history = model.fit(ds, epochs=6, shuffle=False, verbose=0).history
    assert set(history) == {"loss", "accuracy", "grad_norm_conv", "grad_norm_recurrent",
                            "grad_norm_dense"}
    assert [len(history[key]) for key in sorted(history)] == [6] * 5
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert history["accuracy"][-1] > 0.9, history["accuracy"]
    assert model.optimizer.iterations.numpy() == 6 * 3


# --------------------------------------------------------------------------- save/export


@pytest.mark.slow
def test_keras_save_load_and_saved_model_export(tmp_path):
    """A trained tiny CRNN saved as .keras loads (same process) with identical predictions
    and its LayerwiseSGD state; the exported SavedModel's serve matches predictions."""
    model = _tiny(seed=16, **BN)
    model.compile(optimizer=crnn_optimizer(recurrent_beta=0.5))
    features, lengths, labels = _separable(n_per_class=3, frames=12)
    x = {"features": features, "length": lengths}
    # The logged gradient norms are those of each group's part of the full gradient
    # (cross-entropy + L2); a training-mode call does not change the weights.
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    logs = model.train_on_batch(x, labels, return_dict=True)
    for group in ("conv", "recurrent", "dense"):
        norm = np.sqrt(sum(np.sum(np.square(g.numpy())) for g, v in zip(
            grads, model.trainable_variables) if crnn.variable_group(v.path) == group))
        assert logs[f"grad_norm_{group}"] == pytest.approx(norm, rel=1e-4), group
    assert np.abs(model.conv_blocks[0].norm.moving_mean.numpy()).max() > 0
    batch = length_batch(features[:5], lengths[:5])
    expected = model(batch).numpy()

    path = os.path.join(tmp_path, "crnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, crnn.CRNN) and loaded.config == model.config
    np.testing.assert_allclose(loaded(batch).numpy(), expected, atol=1e-6)
    assert isinstance(loaded.optimizer, LayerwiseSGD)
    assert loaded.optimizer.groups == model.optimizer.groups
    assert loaded.optimizer.groups["recurrent"]["beta"] == 0.5
    np.testing.assert_allclose(loaded.optimizer.velocities[0].numpy(),
                               model.optimizer.velocities[0].numpy())
    assert np.abs(loaded.optimizer.velocities[0].numpy()).max() > 0

    export = os.path.join(tmp_path, "saved")
    model.export(export, input_signature=[{
        "features": tf.TensorSpec([None, None, 16], tf.float32, name="features"),
        "length": tf.TensorSpec([None], tf.int32, name="length")}])
    reloaded = tf.saved_model.load(export)  # keep a reference: serve uses its variables
    np.testing.assert_allclose(reloaded.serve(batch).numpy(), expected, atol=1e-5)
    # Another batch and padded length through the same signature.
    other = length_batch(np.pad(features[5:7], [(0, 0), (0, 9), (0, 0)]), lengths[5:7])
    np.testing.assert_allclose(reloaded.serve(other).numpy(),
                               model(other).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- protocol


def test_variant_config_gives_the_rows_of_tables_1_and_3():
    """Table 1 adds oversampling, per-example VTLP, then the 8 kHz front end, all without
    batch norm; Table 3 is that best model with recurrent BN at batch 16, 32 and 64;
    ``layerwise`` is the best model with eq. 6, ``conv_bn`` with batch norm in the
    convolution blocks; absent oversampled classes are dropped."""
    assert protocol.TABLE_1 == ("baseline", "oversampling", "vtlp", "8khz")
    assert protocol.TABLE_3 == ("recurrent_bn_16", "recurrent_bn_32", "recurrent_bn_64")
    base = protocol.TrainConfig(seed=3, max_epochs=12)
    net = crnn.get_config("cpu", num_classes=4)
    classes = ["anger", "happiness", "neutral", "sadness"]

    def row(name):
        return protocol.variant_config(name, base, net, classes)

    doubled = base.replace(oversample=("happiness", "anger"))
    best = doubled.replace(vtlp="example", features="etienne_8k")
    assert row("baseline") == (base, net)
    assert row("oversampling") == (doubled, net)
    assert row("vtlp_epoch") == (doubled.replace(vtlp="epoch"), net)
    assert row("vtlp") == (doubled.replace(vtlp="example"), net)
    assert row("8khz") == (best, net)
    assert (net.conv_bn, net.recurrent_bn) == (False, False)
    for batch in (16, 32, 64):
        assert row(f"recurrent_bn_{batch}") == (best.replace(batch_size=batch),
                                               net.replace(recurrent_bn=True))
    assert row("layerwise") == (best.replace(layerwise=True), net)
    assert row("conv_bn") == (best, net.replace(conv_bn=True))
    assert best.to_dict()["oversample"] == ["happiness", "anger"]
    train, _ = protocol.variant_config("8khz", base, net, ["anger", "neutral", "sadness"])
    assert train.oversample == ("anger",)
    with pytest.raises(ValueError, match="unknown variant 'dropout'"):
        protocol.variant_config("dropout", base, net, classes)
    with pytest.raises(ValueError, match="vtlp must be one of"):
        protocol.TrainConfig(vtlp="batch")


def _hyperparameters(model):
    """``{group: {(eta, gamma, beta)}}`` the optimiser applies to the model's variables."""
    opt, out = model.optimizer, {}
    for v in model.trainable_variables:
        eta, gamma, beta = opt.hyperparameters(v.path)
        eta = float(opt.learning_rate) if eta is None else eta
        out.setdefault(crnn.variable_group(v.path), set()).add(
            (round(eta, 6), round(gamma, 6), round(beta, 6)))
    return out


def test_build_model_uses_plain_momentum_unless_layerwise():
    """Without ``layerwise`` every variable gets the same eta and gamma and beta 1, i.e.
    SGD with momentum; with it each group gets its own eta, gamma and beta of eq. 6."""
    keras.utils.set_random_seed(17)
    net = crnn.get_config("cpu", **TINY)
    config = protocol.TrainConfig(learning_rate=0.03, momentum=0.8, conv_lr=0.02,
                                  recurrent_lr=0.005, conv_momentum=0.7,
                                  recurrent_momentum=0.6, conv_beta=2.0, recurrent_beta=0.5)
    plain = protocol.build_model(net, config)
    assert plain.optimizer.built and plain.config == net
    assert _hyperparameters(plain) == {g: {(0.03, 0.8, 1.0)}
                                       for g in ("conv", "recurrent", "dense")}
    layerwise = protocol.build_model(net, config.replace(layerwise=True))
    assert _hyperparameters(layerwise) == {"conv": {(0.02, 0.7, 2.0)},
                                           "recurrent": {(0.005, 0.6, 0.5)},
                                           "dense": {(0.03, 0.8, 1.0)}}


def test_front_end_scores_whole_utterances_or_the_eleven_copy_vote():
    config = protocol.TrainConfig(features="etienne_8k")
    stats = {"mean": -40.0, "std": 12.0}
    plain = protocol.front_end(config, stats)
    assert (plain.features, plain.normalise, plain.crop_frames) == ("etienne_8k", "zscore",
                                                                     None)
    assert (plain.warps, plain.aggregate, plain.statistics) == ((), "mean", stats)
    vote = protocol.front_end(config, stats, vote=True)
    assert (vote.warps, vote.aggregate) == (VTLP_TTA_ALPHAS, "vote")
