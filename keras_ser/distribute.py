"""Scaling out on TensorFlow's own engines (placeholder, being written)."""

from __future__ import annotations

import argparse

STRATEGIES = ("default", "mirrored", "multiworker")
TUNER_ROLES = ("local", "chief", "worker")


def add_options(p: argparse.ArgumentParser) -> None:
    """The scaling options every recipe has: ``--strategy``, ``--tuner-role``,
    ``--tuner-address``, ``--data-service``."""
    g = p.add_argument_group("scaling out")
    g.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy of every trainer: default (one device), "
                        "mirrored (all local GPUs, or --devices), multiworker (TF_CONFIG)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="mirrored: replicas (default: every GPU, else 1 CPU); on a CPU-only "
                        "host N logical CPU devices are made (for testing)")
    g.add_argument("--tuner-role", choices=TUNER_ROLES, default="local",
                   help="distributed KerasTuner search: the chief runs the oracle at "
                        "--tuner-address, workers run trials (default local)")
    g.add_argument("--tuner-address", default=None, metavar="HOST:PORT",
                   help="the oracle's address (default: KERASTUNER_ORACLE_IP/_PORT)")
    g.add_argument("--data-service", default=None, metavar="grpc://HOST:PORT",
                   help="tf.data service dispatcher for the training input pipeline")
