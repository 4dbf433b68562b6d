"""Speaker-adversarial x-vector SER of Tu et al. 2019: gradient reversal and its schedule,
DAT and CGT gradients by hand, masked statistics pooling and padding invariance, Table 1
parameter counts, the four strategies' training steps, saving and export."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import length_batch, padded

from keras_ser.models import xvector as xv

#: Deterministic tiny net: no dropout, no batch norm (receptive field 1 + 2 + 2 = 5).
TINY = {"input_dim": 5, "tdnn": ((4, 3, 1), (3, 2, 2)), "lstm_units": 3, "fc_units": 4,
        "head_units": (5, 4), "num_emotions": 3, "num_speakers": 4, "dropout": 0.0,
        "batch_norm": False}


def _tiny(strategy="ser_only", seed=0, build=True, **kwargs):
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in TINY}
    keras.utils.set_random_seed(seed)
    model = xv.SpeakerAdversarialSER(xv.XVectorConfig(**{**TINY, **overrides}),
                                     strategy=strategy, **kwargs)
    if build:
        model.build()
    return model


def _data(rng, lengths, dim=5, frames=None, emotions=3, speakers=4):
    frames = frames or max(lengths)
    valid = [rng.standard_normal((n, dim)) for n in lengths]
    x = length_batch(padded(valid, frames, rng), lengths)
    n = len(lengths)
    labels = {"emotion": tf.constant(rng.integers(0, emotions, n), tf.int32),
              "speaker": tf.constant(rng.integers(0, speakers, n), tf.int32)}
    return x, labels, valid


def _ce(labels, probs):
    return keras.losses.sparse_categorical_crossentropy(labels, probs)


def _count(weights):
    return sum(int(np.prod(v.shape)) for v in weights)


# --------------------------------------------------------------------------- GRL


def test_grl_is_identity_forward_and_minus_lambda_backward():
    rng = np.random.default_rng(0)
    layer = xv.GradientReversal(0.7)
    x = tf.constant(rng.standard_normal((3, 6)), tf.float32)
    g = tf.constant(rng.standard_normal((3, 6)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * g)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(grad, np.float32(-0.7) * g.numpy())
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1
    with pytest.raises(ValueError):
        xv.GradientReversal(float("nan"))


def test_set_lambda_changes_the_gradient_without_retracing():
    layer = xv.GradientReversal(1.0)
    traces = []

    @tf.function
    def grad_of(x):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(3.0 * layer(x))
        return tape.gradient(loss, x)

    x = tf.ones((2, 3))
    np.testing.assert_allclose(grad_of(x).numpy(), -3.0)
    layer.set_lambda(0.25)
    np.testing.assert_allclose(grad_of(x).numpy(), -0.75)
    layer.set_lambda(tf.constant(2.0))
    np.testing.assert_allclose(grad_of(x).numpy(), -6.0)
    assert len(traces) == 1
    assert layer.lambda_ == 2.0


def test_grl_config_round_trip_and_keras_save_load(tmp_path):
    layer = xv.GradientReversal(0.4, name="reverse")
    layer.set_lambda(0.3)
    clone = xv.GradientReversal.from_config(layer.get_config())
    assert clone.name == "reverse" and clone.lambda_ == pytest.approx(0.3)

    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(xv.GradientReversal(0.9, name="grl")(
        keras.layers.Dense(3)(inputs)))
    model = keras.Model(inputs, outputs)
    model.get_layer("grl").set_lambda(0.6)
    path = os.path.join(tmp_path, "grl.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = tf.constant(np.random.default_rng(2).standard_normal((5, 4)), tf.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-7)
    assert isinstance(loaded.get_layer("grl"), xv.GradientReversal)
    assert loaded.get_layer("grl").lambda_ == pytest.approx(0.6)
    # The reloaded layer still reverses: first-layer kernel gradients are -0.6 times
    # those of the same network without the reversal.
    with tf.GradientTape(persistent=True) as tape:
        hidden = loaded.layers[1](x)
        with_grl = tf.reduce_sum(loaded.layers[3](loaded.layers[2](hidden)) ** 2)
        without = tf.reduce_sum(loaded.layers[3](hidden) ** 2)
    kernel = loaded.layers[1].kernel
    np.testing.assert_allclose(tape.gradient(with_grl, kernel).numpy(),
                               -0.6 * tape.gradient(without, kernel).numpy(), rtol=1e-5)


def test_ganin_schedule_values_and_callback_from_epoch_and_batch_index():
    assert xv.ganin_lambda(0.0, 0.5) == 0.0
    assert xv.ganin_lambda(1.0, 0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert xv.ganin_lambda(0.25, 2.0, gamma=4.0) == pytest.approx(
        2.0 * (2 / (1 + math.exp(-1.0)) - 1))
    with pytest.raises(ValueError):
        xv.ganin_lambda(1.5)
    layer = xv.GradientReversal(0.0)
    # A fresh callback, as after a restart at epoch 2: the step comes from the indices.
    schedule = xv.GRLSchedule(layer, lambda_max=0.8, total_steps=12, steps_per_epoch=4)
    schedule.on_train_begin()
    schedule.on_epoch_begin(2)
    schedule.on_train_batch_begin(1)
    expected = xv.ganin_lambda((2 * 4 + 1 + 1) / 12, 0.8)
    assert layer.lambda_ == pytest.approx(expected) and schedule.current == expected
    schedule.on_train_batch_begin(3)
    assert layer.lambda_ == pytest.approx(xv.ganin_lambda(1.0, 0.8))
    schedule.on_epoch_begin(5)  # beyond the planned run: p stays 1
    schedule.on_train_batch_begin(0)
    assert layer.lambda_ == pytest.approx(xv.ganin_lambda(1.0, 0.8))
    constant = xv.GRLSchedule(layer, lambda_max=0.3, total_steps=5, steps_per_epoch=5,
                              schedule="constant")
    constant.on_epoch_begin(0)
    constant.on_train_batch_begin(0)
    assert layer.lambda_ == pytest.approx(0.3)
    with pytest.raises(ValueError):
        xv.GRLSchedule(layer, 1.0, 10, schedule="linear")
    with pytest.raises(ValueError):
        xv.GRLSchedule(keras.layers.Dense(2), 1.0, 10)


# --------------------------------------------------------------------------- DAT / CGT


def test_dat_gradients_are_reversed_for_the_embedding_only():
    """d(DAT loss)/de = dL_y/de - lambda dL_s/de; the speaker head gets dL_s; the
    embedding parameters get the same difference; MTL adds instead."""
    rng = np.random.default_rng(3)
    lam = 0.37
    model = _tiny("dat", seed=3, grl_lambda=lam)
    x, labels, _ = _data(rng, [9, 6, 12, 7])
    e = model.embed(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(e)
        total = model.head_losses(e, labels)["loss"]
        l_y = tf.reduce_mean(_ce(labels["emotion"], model.emotion_head(e)))
        l_s = tf.reduce_mean(_ce(labels["speaker"], model.speaker_head(e)))
    g_y, g_s = tape.gradient(l_y, e).numpy(), tape.gradient(l_s, e).numpy()
    assert np.abs(g_s).max() > 1e-4
    np.testing.assert_allclose(tape.gradient(total, e).numpy(), g_y - lam * g_s, atol=1e-6)
    for head, loss in ((model.speaker_head, l_s), (model.emotion_head, l_y)):
        for got, want in zip(tape.gradient(total, head.trainable_variables),
                             tape.gradient(loss, head.trainable_variables)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)

    variables = model.embedding.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        total = model.strategy_losses(x, labels)["loss"]
        e = model.embed(x)
        l_y = tf.reduce_mean(_ce(labels["emotion"], model.emotion_head(e)))
        l_s = tf.reduce_mean(_ce(labels["speaker"], model.speaker_head(e)))
    for got, gy, gs in zip(tape.gradient(total, variables), tape.gradient(l_y, variables),
                           tape.gradient(l_s, variables)):
        np.testing.assert_allclose(got.numpy(), gy.numpy() - lam * gs.numpy(), atol=1e-6)

    mtl = _tiny("mtl", seed=3)
    e = mtl.embed(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(e)
        total = mtl.head_losses(e, labels)["loss"]
        l_y = tf.reduce_mean(_ce(labels["emotion"], mtl.emotion_head(e)))
        l_s = tf.reduce_mean(_ce(labels["speaker"], mtl.speaker_head(e)))
    np.testing.assert_allclose(tape.gradient(total, e).numpy(),
                               (tape.gradient(l_y, e) + tape.gradient(l_s, e)).numpy(),
                               atol=1e-6)


def test_cgt_perturbations_and_train_step_loss_by_hand():
    """X^s = X + eps grad_X sum_i L_s,i, X^y likewise (zero on padding, each utterance's
    own gradient); one train step's loss is eq. 4 computed by hand."""
    rng = np.random.default_rng(4)
    eps, alpha = 10.0, 0.25
    model = _tiny("cgt", seed=4, cgt_epsilon=eps, cgt_alpha=alpha)
    x, labels, _ = _data(rng, [9, 6, 12, 7], frames=14)
    features, lengths = x["features"], x["length"]

    def losses(inp):
        e = model.embed({"features": inp, "length": lengths})
        return (_ce(labels["emotion"], model.emotion_head(e)),
                _ce(labels["speaker"], model.speaker_head(e)))

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        ce_y, ce_s = losses(features)
        sum_y, sum_s = tf.reduce_sum(ce_y), tf.reduce_sum(ce_s)
    grad_y = tape.gradient(sum_y, features).numpy()
    grad_s = tape.gradient(sum_s, features).numpy()
    padded = np.arange(14)[None, :] >= lengths.numpy()[:, None]
    assert np.all(grad_s[padded] == 0) and np.abs(grad_s[~padded]).max() > 1e-4
    x_s = features.numpy() + eps * grad_s
    x_y = features.numpy() + eps * grad_y

    out = model.cgt_losses(x, labels, training=False)
    np.testing.assert_allclose(out["features_s"].numpy(), x_s, atol=1e-6)
    np.testing.assert_allclose(out["features_y"].numpy(), x_y, atol=1e-6)
    # Each utterance's perturbation is its own gradient: utterance 1 alone gives row 1.
    alone = model.cgt_losses(
        {"features": features[1:2, :6], "length": lengths[1:2]},
        {k: v[1:2] for k, v in labels.items()})
    np.testing.assert_allclose(alone["features_s"].numpy()[0], x_s[1, :6], atol=1e-6)

    l_y_s = tf.reduce_mean(losses(tf.constant(x_s))[0]).numpy()
    l_s_y = tf.reduce_mean(losses(tf.constant(x_y))[1]).numpy()
    l_y, l_s = tf.reduce_mean(ce_y).numpy(), tf.reduce_mean(ce_s).numpy()
    eq4 = (1 - alpha) * (l_y + l_s) + alpha * (l_y_s + l_s_y)
    assert abs(l_y_s - l_y) > 1e-3  # the perturbation matters
    assert float(out["loss"]) == pytest.approx(eq4, rel=1e-6)
    assert float(out["emotion_loss_perturbed"]) == pytest.approx(l_y_s, rel=1e-6)
    model.compile(optimizer=xv.paper_optimizer(0.1))
    before = [v.numpy() for v in model.trainable_variables]
    logs = model.train_on_batch(x, labels, return_dict=True)
    assert logs["loss"] == pytest.approx(eq4, rel=1e-5)
    assert logs["emotion_loss"] == pytest.approx(l_y, rel=1e-5)
    assert logs["speaker_loss"] == pytest.approx(l_s, rel=1e-5)
    assert all(np.abs(v.numpy() - b).max() > 0
               for v, b in zip(model.trainable_variables, before))


# --------------------------------------------------------------------------- masking


def test_statistics_pooling_matches_numpy_over_valid_frames():
    rng = np.random.default_rng(5)
    lengths = np.array([7, 3, 1, 5])
    x = rng.standard_normal((4, 7, 6)).astype("float32")
    x[1, 3:] = np.nan  # padding is never read, even NaN
    x[3, :5] = 2.5  # a constant utterance: std floored at sqrt(1e-5)
    mask = np.arange(7)[None, :] < lengths[:, None]
    pooled = xv.StatisticsPooling()(tf.constant(x), mask=tf.constant(mask)).numpy()
    for b, n in enumerate(lengths):
        valid = x[b, :n].astype(np.float64)
        np.testing.assert_allclose(pooled[b, :6], valid.mean(0), atol=1e-6)
        np.testing.assert_allclose(pooled[b, 6:], np.maximum(valid.std(0), np.sqrt(1e-5)),
                                   atol=1e-6)
    np.testing.assert_allclose(pooled[3, 6:], np.sqrt(1e-5), rtol=1e-5)
    xt = tf.constant(np.nan_to_num(x))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = tf.reduce_sum(xv.StatisticsPooling()(xt, mask=tf.constant(mask)))
    grad = tape.gradient(out, xt).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[~mask] == 0)


def test_padding_changes_no_output_in_inference_and_training():
    """Garbage past the lengths, other padded lengths (also below the receptive field)
    and a lone unpadded utterance give the same outputs; in training the batch-norm
    statistics and moving averages ignore the padding too."""
    rng = np.random.default_rng(6)
    model = _tiny("dat", seed=6, batch_norm=True, dropout=0.5)
    lengths = [11, 3, 8, 5]  # 3 < receptive field 5
    valid = [rng.standard_normal((n, 5)) for n in lengths]
    for layer in model._flatten_layers():  # non-trivial moving statistics
        if hasattr(layer, "moving_variance"):
            layer.moving_mean.assign(rng.standard_normal(layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
    a = length_batch(padded(valid, 11, rng), lengths)
    b = length_batch(padded(valid, 20, rng, garbage=-50.0), lengths)
    probs = model(a).numpy()
    np.testing.assert_allclose(model(b).numpy(), probs, atol=1e-5)
    np.testing.assert_allclose(model.embed(b).numpy(), model.embed(a).numpy(), atol=1e-5)
    np.testing.assert_allclose(model.speaker_probabilities(b).numpy(),
                               model.speaker_probabilities(a).numpy(), atol=1e-5)
    alone = model({"features": tf.constant(valid[2][None], tf.float32)}).numpy()
    np.testing.assert_allclose(alone[0], probs[2], atol=1e-5)
    short = [valid[1], valid[3][:4]]  # padded length 4 < receptive field
    c = length_batch(padded(short, 4, rng), [3, 4])
    d = length_batch(padded(short, 9, rng), [3, 4])
    np.testing.assert_allclose(model(c).numpy(), model(d).numpy(), atol=1e-5)
    np.testing.assert_allclose(model(c).numpy()[0], probs[1], atol=1e-5)

    train = _tiny("mtl", seed=7, batch_norm=True)  # dropout 0: deterministic training
    state = [w.numpy() for w in train.weights]
    initial = [w.numpy() for w in train.embedding.non_trainable_weights]
    outs, moving = [], []
    for batch in (a, b):
        train.set_weights(state)
        outs.append(train.embed(batch, training=True).numpy())
        moving.append([w.numpy() for w in train.embedding.non_trainable_weights])
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)
    assert len(initial) == 8  # mean and variance of 4 masked batch norms
    for m0, m1, s in zip(moving[0], moving[1], initial):
        np.testing.assert_allclose(m1, m0, atol=1e-5)
        assert np.abs(m0 - s).max() > 1e-4


# --------------------------------------------------------------------------- sizes


def _expected_counts(input_dim, tdnn, lstm, fc, hidden, emotions, speakers):
    """(trainable, non-trainable) by hand: Conv1D K*in*N + N; LSTM 4 (u (in + u) + u) per
    direction; Dense in*out + out; every batch norm 2 units trainable + 2 units moving."""
    trainable = non_trainable = 0
    width = input_dim
    for n, k, _ in tdnn:
        trainable += k * width * n + n + 2 * n
        non_trainable += 2 * n
        width = n
    trainable += 2 * 4 * (lstm * (width + lstm) + lstm) + 2 * (2 * lstm)
    non_trainable += 2 * (2 * lstm)
    trainable += 2 * lstm * fc + fc + 2 * fc
    non_trainable += 2 * fc
    for classes in (emotions, speakers):
        width = 2 * fc
        for units in hidden:
            trainable += width * units + units + 2 * units
            non_trainable += 2 * units
            width = units
        trainable += width * classes + classes
    return trainable, non_trainable + 1  # + the GRL's lambda


def test_paper_and_mandarin_parameter_counts_and_layer_shapes_by_hand():
    paper = xv.SpeakerAdversarialSER(xv.get_config("paper"), strategy="dat")
    paper.build()
    # IEMOCAP column of Table 1, written out:
    tdnn = (39 * 5 * 128 + 128) + 2 * 128 + (128 * 3 * 64 + 64) + 2 * 64   # 25,472+24,768
    blstm = 2 * 4 * (64 * (64 + 64) + 64) + 2 * 128                        # 66,304
    fc = 128 * 256 + 256 + 2 * 256                                          # 33,536
    heads = 2 * ((512 * 64 + 64) + 2 * 64 + (64 * 64 + 64) + 2 * 64) + (64 * 4 + 4) \
        + (64 * 8 + 8)                                                      # 75,276
    trainable = tdnn + blstm + fc + heads
    non_trainable = 2 * (128 + 64 + 128 + 256) + 2 * 2 * (2 * 64) + 1     # + lambda
    assert (trainable, non_trainable) == (225228, 1665)
    assert _count(paper.trainable_weights) == trainable
    assert _count(paper.non_trainable_weights) == non_trainable
    assert paper.count_params() == 226893
    assert _expected_counts(39, ((128, 5, 2), (64, 3, 4)), 64, 256, (64, 64), 4, 8) == \
        (trainable, non_trainable)
    # Both heads exist after build, with Table 1's widths.
    assert paper.emotion_head.output_layer.kernel.shape == (64, 4)
    assert paper.speaker_head.output_layer.kernel.shape == (64, 8)
    assert paper.speaker_head.dense[0].kernel.shape == (512, 64)
    lines = []
    paper.summary(print_fn=lambda line, *a, **k: lines.append(line))
    assert "226,893" in "\n".join(lines)
    x = length_batch(np.zeros((2, 40, 39)), [40, 20])
    shapes = {name: (tuple(t.shape), n.numpy().tolist())
              for name, t, n in paper.embedding.frame_outputs(x["features"], x["length"])}
    assert shapes == {"input": ((2, 40, 39), [40, 20]), "tdnn_0": ((2, 32, 128), [32, 12]),
                      "tdnn_1": ((2, 24, 64), [24, 4]), "blstm": ((2, 24, 128), [24, 4]),
                      "fc": ((2, 24, 256), [24, 4])}
    assert paper.embed(x).shape == (2, 512) and paper(x).shape == (2, 4)

    mandarin = xv.SpeakerAdversarialSER(xv.get_config("mandarin"), strategy="cgt")
    mandarin.build()
    trainable = ((39 * 5 * 128 + 128) + 256 + (128 * 3 * 128 + 128) + 256
                 + 2 * 4 * (128 * (128 + 128) + 128) + 512
                 + (256 * 512 + 512) + 1024
                 + 2 * ((1024 * 128 + 128) + 256 + (128 * 128 + 128) + 256)
                 + (128 * 4 + 4) + (128 * 200 + 200))
    non_trainable = 2 * (128 + 128 + 256 + 512) + 2 * 2 * (2 * 128) + 1
    assert (trainable, non_trainable) == (793932, 3073)
    assert _count(mandarin.trainable_weights) == trainable
    assert _count(mandarin.non_trainable_weights) == non_trainable
    assert _expected_counts(39, ((128, 5, 2), (128, 3, 4)), 128, 512, (128, 128), 4, 200) \
        == (trainable, non_trainable)
    shapes = [tuple(t.shape) for _, t, _ in mandarin.embedding.frame_outputs(
        x["features"], x["length"])]
    assert shapes == [(2, 40, 39), (2, 32, 128), (2, 24, 128), (2, 24, 256), (2, 24, 512)]
    assert mandarin.speaker_probabilities(x).shape == (2, 200)
    assert xv.get_config("cpu") == xv.get_config("paper")
    assert xv.XVectorConfig.from_dict(xv.get_config("mandarin").to_dict()) == \
        xv.get_config("mandarin")
    with pytest.raises(ValueError, match="mandarin"):
        xv.get_config("iemocap")
    with pytest.raises(ValueError):
        xv.SpeakerAdversarialSER(strategy="gan")
    opt = xv.paper_optimizer()
    assert float(opt.learning_rate) == pytest.approx(1e-3)
    assert (opt.momentum, opt.nesterov) == (0.9, True)


# --------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("strategy", xv.STRATEGIES)
def test_fit_two_epochs_and_which_heads_are_trained(strategy):
    """Two epochs per strategy: finite logs; ser_only leaves the speaker head (weights
    and batch-norm statistics) untouched, the others train it; DAT's λ follows the
    Ganin schedule to its end value."""
    rng = np.random.default_rng(8)
    model = _tiny(strategy, seed=8, batch_norm=True, dropout=0.5, grl_lambda=0.5)
    model.compile(optimizer=xv.paper_optimizer(0.05))
    model.optimizer.build(model.trainable_variables)  # as the protocol builds it
    x, labels, _ = _data(rng, rng.integers(3, 15, 8).tolist())
    head = [w.numpy() for w in model.speaker_head.weights]
    emotion = [w.numpy() for w in model.emotion_head.weights]
    schedule = xv.GRLSchedule(model, lambda_max=0.5, total_steps=4, steps_per_epoch=2)
    history = model.fit(x, labels, batch_size=4, epochs=2, shuffle=False, verbose=0,
                        validation_data=(x, labels), callbacks=[schedule]).history
    for key in ("loss", "emotion_loss", "speaker_loss", "emotion_accuracy",
                "speaker_accuracy", "val_loss", "val_emotion_accuracy"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    changed = [np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.speaker_head.weights,
                                                               head)]
    assert all(np.abs(w.numpy() - b).max() > 0
               for w, b in zip(model.emotion_head.weights, emotion))
    if strategy == "ser_only":
        assert not any(changed)
        assert history["loss"] == history["emotion_loss"]
    else:
        assert all(changed)
    assert model.grl.lambda_ == pytest.approx(xv.ganin_lambda(1.0, 0.5))


@pytest.mark.slow
def test_mirrored_strategy_builds_and_trains_a_step():
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = _tiny("dat", seed=9, batch_norm=True, dropout=0.5)
        model.compile(optimizer=xv.paper_optimizer())
    rng = np.random.default_rng(9)
    x, labels, _ = _data(rng, [8, 5, 11, 6])
    model.grl.set_lambda(0.2)
    logs = model.fit(x, labels, batch_size=4, epochs=1, verbose=0,
                     callbacks=[xv.GRLSchedule(model, 0.3, 1, schedule="constant")]).history
    assert np.isfinite(logs["loss"][0]) and model.grl.lambda_ == pytest.approx(0.3)


# --------------------------------------------------------------------------- save/export


@pytest.mark.slow
def test_keras_save_load_fresh_process_and_saved_model_export(tmp_path):
    rng = np.random.default_rng(10)
    model = _tiny("dat", seed=10, batch_norm=True, dropout=0.5, grl_lambda=0.8,
                  cgt_epsilon=0.2)
    model.compile(optimizer=xv.paper_optimizer())
    x, labels, _ = _data(rng, [9, 4, 12, 7])
    model.train_on_batch(x, labels)
    model.grl.set_lambda(0.2)
    expected = model(x).numpy()
    path = os.path.join(tmp_path, "tu.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, xv.SpeakerAdversarialSER)
    assert (loaded.config, loaded.strategy, loaded.grl_lambda, loaded.cgt_epsilon) == \
        (model.config, "dat", 0.8, 0.2)
    assert loaded.grl.lambda_ == pytest.approx(0.2)
    np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(loaded.speaker_probabilities(x).numpy(),
                               model.speaker_probabilities(x).numpy(), atol=1e-6)

    np.save(os.path.join(tmp_path, "x.npy"), x["features"].numpy())
    script = ("import sys, numpy as np, keras\n"
              "import keras_ser.models.xvector  # registers the classes\n"
              "p = sys.argv[1]\n"
              "m = keras.models.load_model(p + '/tu.keras')\n"
              "x = {'features': np.load(p + '/x.npy'), 'length': np.array([9, 4, 12, 7],"
              " 'int32')}\n"
              "np.save(p + '/y.npy', keras.ops.convert_to_numpy(m(x)))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env)
    np.testing.assert_allclose(np.load(os.path.join(tmp_path, "y.npy")), expected,
                               atol=1e-6)

    inputs = {"features": keras.Input((None, 5), name="features"),
              "length": keras.Input((), dtype="int32", name="length")}
    wrapper = keras.Model(inputs, model(inputs))
    np.testing.assert_allclose(wrapper(x).numpy(), expected, atol=1e-6)
    export = os.path.join(tmp_path, "saved")
    wrapper.export(export, verbose=False)
    reloaded = tf.saved_model.load(export)
    np.testing.assert_allclose(reloaded.serve(x).numpy(), expected, atol=1e-5)
    other = length_batch(np.pad(x["features"].numpy()[1:3], [(0, 0), (0, 7), (0, 0)]), [4, 12])
    np.testing.assert_allclose(reloaded.serve(other).numpy(), expected[1:3], atol=1e-5)
