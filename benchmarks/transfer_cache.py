"""Epoch time of the NITK transfer classifiers with and without the frozen-feature cache.

`keras_ser.protocols.transfer.train_classifier` computes the frozen part of a transfer
network once per image (`FeatureCache`) and trains only the rest; without the cache
every step runs the whole network on the images, as the report's PyTorch code does.
Both give the same updates (``tests/test_transfer.py``); this script measures what the
cache saves.

For each classifier asked for, one process builds the network (random weights, the
``--preset``), draws ``--images`` spectrogram images and labels, and then alternates
timed epochs: one epoch of ``fit`` on cached features, one epoch on images, ... for
``--epochs`` rounds, after one warm-up epoch of each (tracing excluded). The cached
epoch includes nothing of the cache's one-off cost, which is printed separately (the
first pass over the images). Printed per classifier: median seconds per epoch of each,
their ratio, and the one-off cost; with the CPU flags that matter to TensorFlow here.

Usage::

    python benchmarks/transfer_cache.py [--classifiers resnet50_fc,vgg16_fc,vgg16_half]
        [--preset cpu|paper] [--images 256] [--epochs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from machine import describe  # benchmarks/machine.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    """Time cached and uncached epochs of each classifier and print the table.

    Args:
        argv: Options (see the module docstring; default ``sys.argv[1:]``):
            ``--classifiers`` (comma-separated keys of
            `keras_ser.models.transfer.CLASSIFIERS`), ``--preset``, ``--images`` (random
            ``(n, 224, 224, 1)`` images in [0, 255], 7 random classes), ``--epochs``
            (timed rounds after one warm-up), ``--json`` (write the rows there).

    Returns:
        0. Printed per classifier: median seconds per epoch, cached and uncached, their
        ratio and the one-off seconds of filling the cache (in memory).

    Raises:
        KeyError: Unknown classifier or preset.
        SystemExit: Bad options (argparse).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifiers", default="resnet50_fc,vgg16_fc,vgg16_half")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import keras_ser  # noqa: F401, I001  (first: its hook keeps TensorFlow quiet)

    import keras
    import numpy as np

    from keras_ser.models import transfer
    from keras_ser.protocols import transfer as protocol

    print(describe())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.images, 224, 224, 1)).astype(np.float32)
    labels = rng.integers(0, 7, args.images)
    config = transfer.get_config(args.preset).replace(standardise=True)
    rows = []
    print(f"{args.images} images, preset {args.preset} (network input {config.input_size} px),"
          f" batch {config.batch_size}, {args.epochs} timed epochs each\n")
    print(f"{'classifier':<12} {'cached s/epoch':>15} {'uncached s/epoch':>17} {'ratio':>7} "
          f"{'one-off cache s':>16}")
    for name in args.classifiers.split(","):
        keras.utils.set_random_seed(1)
        net = transfer.build_transfer(name, 7, config)
        start = time.perf_counter()
        feats = protocol.FeatureCache(None).features(net, images)
        one_off = time.perf_counter() - start
        net.standardise(feats)
        cases = {"cached": (net.compile(net.head), feats, False),
                 "uncached": (net.compile(net.logits), images, True)}
        times = {k: [] for k in cases}
        for round_ in range(args.epochs + 1):
            for key, (model, inputs, rgb) in cases.items():
                data, steps = protocol._batches(inputs, labels, 7, config.batch_size, 0,
                                                (round_, round_ + 1), rgb)
                start = time.perf_counter()
                model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
                if round_:  # round 0 traces the step functions
                    times[key].append(time.perf_counter() - start)
        cached, uncached = (statistics.median(times[k]) for k in ("cached", "uncached"))
        rows.append({"classifier": name, "cached_s": cached, "uncached_s": uncached,
                     "ratio": uncached / cached, "cache_fill_s": one_off})
        print(f"{name:<12} {cached:>15.2f} {uncached:>17.2f} {uncached / cached:>6.1f}x "
              f"{one_off:>16.2f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": describe(), "preset": args.preset, "images": args.images,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
