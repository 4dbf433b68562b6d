"""Training steps per second on 1 vs 2 replicas of `tf.distribute.MirroredStrategy`.

For each trainer and preset asked for, the same global batch (the preset's batch size) is
trained through Keras ``fit`` -- the path every recipe takes
(`keras_ser.training.resumable.fit_resumable`) -- once on one replica and once on two,
one after the other in this process, and steps per second are printed side by side with
their ratio (2 replicas / 1 replica). The trainers are the ones `tests/test_distribute.py`
checks for equal results:

- ``multitask``: Chang & Scherer's semi-supervised multitask DCGAN (generator,
  discriminator and three head updates per step; labelled + unlabelled crops);
- ``wgan_gp``: Eskimez et al.'s spectral-normalised WGAN-GP pre-training step;
- ``crnn``: Etienne et al.'s Conv + BiLSTM on padded utterances (our benchmark shape:
  batch 32, 300 frames = 3 s at a 10 ms hop, lengths 1-3 s).

A replica is a GPU when the host has at least two (the script a GPU user runs: the ratio
then approaches 2 for compute-bound presets); otherwise the CPU is split into two logical
devices, which share the same cores: on a CPU-only host the ratio measures the overhead
of splitting the batch and all-reducing gradients and batch-norm moments, not a speed-up.

Usage::

    python benchmarks/scaling.py [--trainers multitask,wgan_gp,crnn]
        [--presets cpu,paper] [--steps N] [--warmup K] [--json PATH]

The SN-GAN ``paper`` preset takes 10-20 s per step on a 2-core CPU (its two dense layers
hold 134M weights, held once per replica); with the defaults the whole script runs for
about ten minutes here. ``--presets cpu`` alone takes about one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from machine import describe  # benchmarks/machine.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAINERS = ("multitask", "wgan_gp", "crnn")


def _multitask(preset, strategy):
    import numpy as np

    from keras_ser import metrics
    from keras_ser.models import dcgan
    from keras_ser.training import multitask_gan

    config = dcgan.DCGAN_PRESETS[preset]
    with strategy.scope():
        d = dcgan.build_discriminator(config, dcgan.model_heads("multitask_dcgan", "emotion", 4))
        trainer = multitask_gan.MultitaskGANTrainer(d, dcgan.build_generator(config), seed=0)
        trainer.compile(**multitask_gan.adam_optimizers(trainer, config.learning_rate))
    rng, n = np.random.default_rng(0), config.batch_size
    shape = (n, config.crop_frames, config.n_mels)
    batch = {"features": rng.uniform(-1, 1, shape).astype(np.float32),
             "unlabelled": rng.uniform(-1, 1, shape).astype(np.float32),
             "emotion": rng.integers(0, 4, n).astype(np.int32),
             "valence": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
             "activation": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32)}
    return trainer, batch, n


def _wgan_gp(preset, strategy):
    import numpy as np

    from keras_ser.models import sngan
    from keras_ser.training import wgan_gp

    c = sngan.get_sngan_preset(preset)
    with strategy.scope():
        trainer = wgan_gp.WGANGPTrainer(sngan.build_generator(c),
                                        sngan.build_discriminator(c, "critic"), c, seed=0)
        trainer.compile(**wgan_gp.optimizers(c))
    rng = np.random.default_rng(0)
    features = rng.uniform(-1, 1, (c.batch_size, c.frames, c.n_mels)).astype(np.float32)
    return trainer, {"features": features}, c.batch_size


def _crnn(preset, strategy):
    import numpy as np

    from keras_ser.models import crnn
    from keras_ser.optimizers import crnn_optimizer

    batch, frames = 32, 300
    with strategy.scope():
        model = crnn.build_crnn(preset, num_classes=4)
        model.compile(optimizer=crnn_optimizer())
        model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    lengths = rng.integers(100, frames + 1, batch).astype(np.int32)
    features = rng.normal(size=(batch, frames, model.config.n_mels)).astype(np.float32)
    features *= np.arange(frames)[None, :, None] < lengths[:, None, None]
    return model, ({"features": features, "length": lengths},
                   rng.integers(0, 4, batch).astype(np.int32)), batch


BUILDERS = {"multitask": _multitask, "wgan_gp": _wgan_gp, "crnn": _crnn}


def steps_per_second(trainer, batch, warmup: int, steps: int) -> float:
    """Global steps per second of ``trainer.fit`` on one repeated ``batch``, timed from
    the end of the ``warmup``-th step (tracing and first-call costs excluded) to the end
    of the last; each step's logs are read on the host, so a step has finished when its
    time is taken."""
    import keras
    import tensorflow as tf

    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            [float(v) for v in (logs or {}).values()]
            ends.append(time.perf_counter())

    ds = tf.data.Dataset.from_tensors(batch).repeat()
    trainer.fit(ds, epochs=1, steps_per_epoch=warmup + steps, callbacks=[Clock()],
                verbose=0, shuffle=False)
    return steps / (ends[-1] - ends[warmup - 1])


def strategies():
    """``{1: one-replica strategy, 2: two-replica strategy}`` (GPUs, else logical CPUs)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= 2:
        devices = ["/gpu:0", "/gpu:1"]
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return {1: tf.distribute.MirroredStrategy(devices[:1]),
            2: tf.distribute.MirroredStrategy(devices[:2])}, devices


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainers", default=",".join(TRAINERS))
    p.add_argument("--presets", default="cpu,paper")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per case (>= 1)")
    p.add_argument("--json", default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    trainers = [t for t in args.trainers.split(",") if t]
    presets = [x for x in args.presets.split(",") if x]
    unknown = sorted(set(trainers) - set(TRAINERS))
    if unknown or args.warmup < 1 or args.steps < 1:
        p.error(f"unknown trainers {unknown}" if unknown else "--warmup and --steps >= 1")

    import gc

    import keras
    import tensorflow as tf

    print(describe())
    strategy, devices = strategies()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; replicas on "
          f"{', '.join(devices)}; {args.warmup} warm-up + {args.steps} timed steps per case")
    print()
    print("| trainer | preset | global batch | steps/s, 1 replica | steps/s, 2 replicas "
          "| ratio 2 / 1 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in trainers:
        for preset in presets:
            speed = {}
            for replicas in (1, 2):
                keras.utils.set_random_seed(0)
                trainer, batch, size = BUILDERS[name](preset, strategy[replicas])
                speed[replicas] = steps_per_second(trainer, batch, args.warmup, args.steps)
                del trainer
                gc.collect()
            row = {"trainer": name, "preset": preset, "batch": size,
                   "steps_per_s_1": speed[1], "steps_per_s_2": speed[2],
                   "ratio": speed[2] / speed[1]}
            rows.append(row)
            print(f"| {name} | {preset} | {size} | {speed[1]:.3f} | {speed[2]:.3f} | "
                  f"{row['ratio']:.2f} |", flush=True)
    print()
    print(describe().replace("machine:", "at the end:"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": describe(), "devices": devices, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
