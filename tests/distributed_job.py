"""A small training job for the distribution tests (`tests/test_distribute.py`).

Runs in its own process, because the CPU must be split into logical devices and a
`tf.distribute.MultiWorkerMirroredStrategy` made before TensorFlow initialises::

    python tests/distributed_job.py TRAINER STRATEGY OUT_DIR [--epochs E] [--steps S]
        [--pause SECONDS]

TRAINER is ``multitask`` (the semi-supervised multitask DCGAN, its synchronised batch
norm), ``wgan_gp`` (Eskimez et al.'s spectral-normalised critic with the gradient
penalty) or ``crnn`` (Etienne et al.'s masked Conv + BN-BiLSTM with masked batch norm).
STRATEGY is ``default`` (one replica), ``mirrored`` (two logical CPUs) or
``multiworker`` (``TF_CONFIG`` from the environment). Every run trains through
`keras_ser.training.resumable.fit_resumable` on the same global batches of 8 examples
(a fixed seed) and writes ``OUT_DIR/result.npz``: every variable of the trainer (except
the seed generators' states), the trainable ones before training, and the epoch logs. ``--pause`` sleeps after each epoch
(so a test can kill a worker mid-run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH = 8


def _data(trainer: str):
    import numpy as np

    from keras_ser import metrics

    rng = np.random.default_rng(7)
    n = 4 * BATCH
    if trainer == "multitask":
        return {"features": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32),
                "emotion": np.where(rng.uniform(size=n) < 0.2, -1,
                                    rng.integers(0, 3, n)).astype(np.int32),
                "valence": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
                "activation": metrics.fuzzy_labels(rng.uniform(1, 5, n)).astype(np.float32),
                "unlabelled": rng.uniform(-1, 1, (n, 16, 32)).astype(np.float32)}
    if trainer == "wgan_gp":
        return {"features": rng.uniform(-1, 1, (n, 16, 16)).astype(np.float32)}
    lengths = rng.integers(6, 21, n).astype(np.int32)
    features = rng.normal(size=(n, 20, 16)).astype(np.float32)
    features *= (np.arange(20)[None, :, None] < lengths[:, None, None])
    return ({"features": features, "length": lengths}, rng.integers(0, 3, n).astype(np.int32))


def _trainer(name: str):
    import keras

    keras.utils.set_random_seed(0)
    if name == "multitask":
        from keras_ser.models import dcgan
        from keras_ser.training import multitask_gan

        config = dcgan.DCGANConfig(crop_frames=16, n_mels=32, filters=4, kernel_size=3,
                                   fc_units=8, z_dim=8, batch_size=BATCH, learning_rate=1e-3,
                                   dropout=0.0)
        d = dcgan.build_discriminator(config, dcgan.model_heads("multitask_dcgan", "emotion", 3),
                                      adversarial=True)
        trainer = multitask_gan.MultitaskGANTrainer(d, dcgan.build_generator(config), seed=0)
        trainer.compile(**multitask_gan.adam_optimizers(trainer, 1e-3))
        return trainer
    if name == "wgan_gp":
        from keras_ser.models import sngan
        from keras_ser.training import wgan_gp

        c = sngan.get_sngan_preset("cpu", frames=16, n_mels=16, z_dim=8, n_classes=3,
                                   dense_units=16, g_widths=(8, 8, 4, 4, 4, 4, 4, 4),
                                   d_widths=(4, 4, 4, 4, 8, 8, 8, 8), batch_size=BATCH,
                                   g_lr=1e-3, d_lr=1e-3)
        trainer = wgan_gp.WGANGPTrainer(sngan.build_generator(c),
                                        sngan.build_discriminator(c, "critic"), c, seed=0)
        trainer.compile(**wgan_gp.optimizers(c))
        return trainer
    from keras_ser.models import crnn
    from keras_ser.optimizers import crnn_optimizer

    model = crnn.build_crnn("cpu", n_mels=16, num_classes=3, conv_filters=(4, 4),
                            conv_strides=((2, 2), (1, 2)), lstm_units=5, conv_bn=True,
                            recurrent_bn=True)
    model.compile(optimizer=crnn_optimizer(0.05, 0.05, 0.05))
    model.optimizer.build(model.trainable_variables)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trainer", choices=("multitask", "wgan_gp", "crnn"))
    p.add_argument("strategy", choices=("default", "mirrored", "multiworker"))
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--pause", type=float, default=0.0)
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from keras_ser import distribute
    from keras_ser.training import resumable

    args.devices = 2 if args.strategy == "mirrored" else None
    distribute.configure(args)
    out = distribute.worker_folder(args.out)
    trainer = _trainer(args.trainer)
    arrays = _data(args.trainer)
    initial = {f"init/{i}/{v.path}": np.asarray(v.numpy())
               for i, v in enumerate(trainer.variables) if v.trainable}

    def data(first):
        # Epoch e trains on batches e * steps ...: a resumed run sees what it would have.
        ds = tf.data.Dataset.from_tensor_slices(arrays).batch(BATCH, drop_remainder=True)
        return ds.repeat().skip(first * args.steps)

    class Pause(resumable.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(args.pause)

    state = resumable.fit_resumable(
        trainer, data, directory=os.path.join(out, "ckpt"), epochs=args.epochs, seed=3,
        steps_per_epoch=args.steps, verbose=0, stage=args.trainer,
        callbacks=[Pause()] if args.pause else ())
    values = {f"var/{i}/{v.path}": np.asarray(v.numpy())
              for i, v in enumerate(trainer.variables) if v.name != "seed_generator_state"}
    logs = state["history"][-1] if state["history"] else {}
    values.update({f"log/{k}": np.float64(v) for k, v in logs.items()})
    values["replicas"] = np.int64(distribute.num_replicas())
    values.update(initial)
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "result.npz"), **values)
    print(f"{args.trainer} {args.strategy}: {distribute.num_replicas()} replicas, "
          f"{state['epochs_done']} epochs, chief={distribute.is_chief()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
