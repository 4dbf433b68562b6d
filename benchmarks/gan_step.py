"""Seconds per WGAN-GP step of the Eskimez SN-GAN: Keras/TensorFlow vs PyTorch, fp32 vs bf16.

One step is what `keras_ser.training.wgan_gp.WGANGPTrainer.train_step` does for a batch of
32 patches: one critic step with the gradient penalty (lambda = 10), then one generator
step, each with its own Adam (the preset's learning rates, betas 0.5 / 0.99, epsilon 1e-7).
It is timed for each `keras_ser.models.sngan.SNGAN_PRESETS` entry asked for, in two
precisions:

- fp32: everything in float32;
- bf16: Keras with the global policy ``mixed_bfloat16`` while the models are built (reset to
  ``float32`` afterwards), PyTorch with ``torch.autocast(device_type="cpu",
  dtype=torch.bfloat16)`` around the forward passes. Both keep float32 weights and compute
  the losses in float32.

The PyTorch side mirrors `sngan.build_generator` and `sngan.build_discriminator(config,
"critic")` layer for layer: the same widths, 3x3 kernels, TensorFlow's "same" padding
(asymmetric, (0, 1), for the stride-2 convolutions), nearest-neighbour upsampling, leaky
ReLU 0.2, tanh, Glorot-uniform kernels and zero biases, and
`torch.nn.utils.parametrizations.spectral_norm` (one power iteration) on every convolution
and linear layer. The script asserts that both frameworks have the same trainable parameter
counts and, with the Keras weights copied into an unnormalised PyTorch copy, the same
outputs. The step does the same calls in both: the generator and the critic (real, fake,
mixed) run in training mode in the critic step (one power iteration per call), the critic
in inference mode in the generator step; the penalty differentiates twice through the
critic.

The steps do the same work but not bit-identical maths: PyTorch's spectral norm computes
W / sigma with sigma = u^T W v (u, v from the power iteration, detached) in every forward
pass and backpropagates through that formula for sigma, so its weight gradient has an extra
term (a few element-wise passes over each kernel, which costs seconds on the paper's two
134M-weight dense layers); Keras's `SpectralNormalization` writes W / sigma back into the
kernel and lets no gradient through sigma (see ../shared/STACK_NOTES.md). The two
frameworks also draw different noise and initial weights, so their losses are not
comparable with each other; within one framework the fp32 and bf16 runs start from the
same weights, noise and batch, and their first losses are printed side by side.

Measurement, in one process: per preset and precision, the Keras case and the PyTorch case
are built, warmed up (``--warmup`` steps each, excluded; the first Keras call traces the
`tf.function`), then timed in alternating rounds (one Keras step, one PyTorch step, ...) so
that a busy spell of the machine hits both alike. Networks too large to hold twice (the
paper preset: about 12 GB for the PyTorch case alone) run back to back instead, each case
freed before the next is built (``--order``). Both frameworks use ``--threads`` intra- and
inter-op threads.
A Keras bf16 failure is reported (and the table says so) rather than worked around.
The load average at the start and the end is printed: other processes on the machine slow
PyTorch's OpenMP threads much more than TensorFlow's thread pool (busy-waiting barriers
under oversubscription); ``OMP_WAIT_POLICY=PASSIVE`` in the environment softens that.

Usage::

    python benchmarks/gan_step.py [--presets paper,cpu] [--steps N] [--warmup K]
        [--threads T] [--order auto|interleaved|sequential] [--skip-torch | --skip-keras]
        [--json PATH]

PyTorch is optional (``pip install -e .[bench]``); without it only the Keras numbers are
printed (exit code 2 with ``--skip-keras``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 32
PRECISIONS = ("fp32", "bf16")
DEFAULT_STEPS = {"paper": 3, "cpu": 20}
DEFAULT_WARMUP = {"paper": 1, "cpu": 3}
#: ``--order auto`` interleaves the two frameworks when G + D have at most this many
#: parameters; the paper networks (281M) run back to back (both at once need > 20 GB).
AUTO_INTERLEAVE_PARAMS = 50_000_000
LOSS_KEYS = ("d_loss", "g_loss", "gp", "w_distance")
TORCH_MISSING = ("PyTorch is not installed; install the benchmark extra with "
                 "`pip install -e .[bench]` (torch==2.13.0) for the PyTorch numbers.")


# --------------------------------------------------------------------------- PyTorch mirror

def torch_networks(config, spectral_norm: bool = True):
    """PyTorch generator and critic with the layers of `sngan.build_generator` / critic.

    Returns:
        ``(generator, critic)``: ``generator(z, condition)`` -> ``(batch, frames, mels)``,
        ``critic(patches)`` -> ``(batch, 1)``. Tensors are NCHW inside, so the generator's
        reshape is (C, h, w) and the critic flattens (C, h, w); `copy_keras_weights`
        permutes the two affected dense layers accordingly.
    """
    import torch
    from torch import nn

    k, slope = config.kernel_size, config.leaky_slope
    h, w = config.frames // 16, config.n_mels // 16
    total = max(k - 2, 0)  # TF "same" padding of a stride-2 conv on an even size
    same_stride2 = (total // 2, total - total // 2, total // 2, total - total // 2)

    def wrap(layer):
        nn.init.xavier_uniform_(layer.weight)  # Keras: glorot_uniform kernel, zero bias
        nn.init.zeros_(layer.bias)
        if spectral_norm:
            return nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=1)
        return layer

    g0 = config.g_widths[0]
    body = [wrap(nn.Linear(config.z_dim + config.n_classes, config.dense_units)),
            nn.LeakyReLU(slope),
            wrap(nn.Linear(config.dense_units, h * w * g0)), nn.LeakyReLU(slope),
            nn.Unflatten(1, (g0, h, w))]
    cin = g0
    for i, width in enumerate(config.g_widths):
        body += [wrap(nn.Conv2d(cin, width, k, padding=k // 2)), nn.LeakyReLU(slope)]
        if i % 2:
            body.append(nn.Upsample(scale_factor=2, mode="nearest"))
        cin = width
    body += [wrap(nn.Conv2d(cin, 1, k, padding=k // 2)), nn.Tanh(), nn.Flatten(1, 2)]

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*body)

        def forward(self, z, condition):
            return self.body(torch.cat([z, condition], dim=1))

    layers = [nn.Unflatten(1, (1, config.frames))]
    cin = 1
    for i, width in enumerate(config.d_widths):
        if i % 2:
            layers += [nn.ZeroPad2d(same_stride2), wrap(nn.Conv2d(cin, width, k, stride=2))]
        else:
            layers.append(wrap(nn.Conv2d(cin, width, k, padding=k // 2)))
        layers.append(nn.LeakyReLU(slope))
        cin = width
    layers += [nn.Flatten(), wrap(nn.Linear(h * w * cin, config.dense_units)),
               nn.LeakyReLU(slope), wrap(nn.Linear(config.dense_units, 1))]
    return Generator(), nn.Sequential(*layers)


def torch_param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def keras_param_count(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def copy_keras_weights(kmodel, tmodule, config) -> None:
    """Copy the kernels and biases of a Keras SN-GAN network into an unnormalised mirror."""
    import keras
    import torch
    from torch import nn

    from keras_ser.models import sngan

    h, w = config.frames // 16, config.n_mels // 16
    klayers = sngan.spectral_layers(kmodel)
    tlayers = [m for m in tmodule.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(klayers) == len(tlayers), (len(klayers), len(tlayers))
    with torch.no_grad():
        for kl, tl in zip(klayers, tlayers):
            kernel = keras.ops.convert_to_numpy(kl.layer.kernel)
            bias = keras.ops.convert_to_numpy(kl.layer.bias)
            if kernel.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
                kernel = kernel.transpose(3, 2, 0, 1)
            elif kl.layer.name == "dense2" and kmodel.name == "generator":
                # outputs reshaped (h, w, C) in Keras, (C, h, w) here
                n_in = kernel.shape[0]
                kernel = kernel.reshape(n_in, h, w, -1).transpose(0, 3, 1, 2).reshape(n_in, -1).T
                bias = bias.reshape(h, w, -1).transpose(2, 0, 1).reshape(-1)
            elif kl.layer.name == "dense" and kmodel.name != "generator":
                # inputs flattened from (h, w, C) in Keras, from (C, h, w) here
                n_out = kernel.shape[1]
                kernel = kernel.reshape(h, w, -1, n_out).transpose(2, 0, 1, 3).reshape(-1, n_out).T
            else:
                kernel = kernel.T
            assert tuple(tl.weight.shape) == kernel.shape, (kl.name, tl.weight.shape, kernel.shape)
            tl.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            tl.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))


def check_mirror(kgen, kcritic, config) -> tuple:
    """Max |Keras - PyTorch| of the generator and critic outputs with the same weights.

    Uses the networks without spectral normalisation on the PyTorch side and Keras's
    inference path (which uses the stored kernels as they are), batch 2.
    """
    import torch

    tgen, tcritic = torch_networks(config, spectral_norm=False)
    copy_keras_weights(kgen, tgen, config)
    copy_keras_weights(kcritic, tcritic, config)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, config.z_dim)).astype(np.float32)
    c = np.eye(config.n_classes, dtype=np.float32)[[0, 1]]
    x = rng.uniform(-1, 1, (2, config.frames, config.n_mels)).astype(np.float32)
    k_fake = np.asarray(kgen([z, c], training=False))
    k_score = np.asarray(kcritic(x, training=False))
    with torch.no_grad():
        t_fake = tgen(torch.from_numpy(z), torch.from_numpy(c)).numpy()
        t_score = tcritic(torch.from_numpy(x)).numpy()
    assert k_fake.shape == t_fake.shape and k_score.shape == t_score.shape
    diffs = (float(np.abs(k_fake - t_fake).max()), float(np.abs(k_score - t_score).max()))
    scale = max(1.0, float(np.abs(k_score).max()))
    assert diffs[0] < 1e-3 and diffs[1] < 1e-3 * scale, (
        f"the PyTorch mirror disagrees with Keras on the same weights: {diffs}")
    del tgen, tcritic
    return diffs


class TorchCase:
    """The WGAN-GP step of `WGANGPTrainer.train_step` in PyTorch."""

    framework = "torch"

    def __init__(self, config, precision, real, init_state=None, seed=0):
        import torch

        self.torch = torch
        self.config = config
        self.generator, self.critic = torch_networks(config)
        if init_state is not None:
            self.generator.load_state_dict(init_state[0])
            self.critic.load_state_dict(init_state[1])
        self.init_state = init_state or (copy.deepcopy(self.generator.state_dict()),
                                         copy.deepcopy(self.critic.state_dict()))
        self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=config.g_lr,
                                      betas=(config.beta_1, config.beta_2), eps=1e-7)
        self.d_opt = torch.optim.Adam(self.critic.parameters(), lr=config.d_lr,
                                      betas=(config.beta_1, config.beta_2), eps=1e-7)
        self.real = torch.from_numpy(real)
        self.noise = torch.Generator().manual_seed(seed)
        self.bf16 = precision == "bf16"
        self.params = (torch_param_count(self.generator), torch_param_count(self.critic))

    def _autocast(self):
        if self.bf16:
            return self.torch.autocast(device_type="cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _z(self, batch):
        c = self.config
        return (self.torch.randn(batch, c.z_dim, generator=self.noise),
                self.torch.zeros(batch, c.n_classes))

    def step(self) -> dict:
        torch, G, D, real = self.torch, self.generator, self.critic, self.real
        batch = real.shape[0]
        G.train()
        D.train()
        # Critic step: power iteration in every call (Keras: training=True).
        with self._autocast():
            with torch.no_grad():
                fake = G(*self._z(batch)).float()
            real_score = D(real).float()
            fake_score = D(fake).float()
        eps = torch.rand(batch, generator=self.noise).view(-1, 1, 1)
        mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
        with self._autocast():
            mixed_score = D(mixed).float()
        (grads,) = torch.autograd.grad(mixed_score.sum(), mixed, create_graph=True)
        norms = torch.sqrt(grads.float().square().sum(dim=(1, 2)) + 1e-12)
        gp = (norms - 1.0).square().mean()
        w = real_score.mean() - fake_score.mean()
        d_loss = -w + self.config.gp_weight * gp
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        # Generator step: critic without power iteration (Keras: training=False).
        D.eval()
        D.requires_grad_(False)
        with self._autocast():
            g_loss = -D(G(*self._z(batch))).float().mean()
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        D.requires_grad_(True)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "gp": gp.item(),
                "w_distance": w.item()}


# --------------------------------------------------------------------------- Keras

class KerasCase:
    """`WGANGPTrainer.train_step` in a `tf.function`, as `fit` runs it on this CPU."""

    framework = "keras"

    def __init__(self, config, precision, real, init_weights=None, models=None, seed=0):
        import keras
        import tensorflow as tf

        from keras_ser.models import sngan
        from keras_ser.training import wgan_gp

        policy = "mixed_bfloat16" if precision == "bf16" else "float32"
        keras.mixed_precision.set_global_policy(policy)
        try:
            if models is None:
                models = (sngan.build_generator(config),
                          sngan.build_discriminator(config, "critic"))
            self.generator, self.critic = models
            if init_weights is not None:
                self.generator.set_weights(init_weights[0])
                self.critic.set_weights(init_weights[1])
            self.trainer = wgan_gp.WGANGPTrainer(self.generator, self.critic, config,
                                                 seed=seed)
            self.trainer.compile(**wgan_gp.optimizers(config))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.real = tf.constant(real)
        self.function = tf.function(self.trainer.train_step, reduce_retracing=True)
        self.params = (keras_param_count(self.generator), keras_param_count(self.critic))

    def step(self) -> dict:
        for tracker in self.trainer.metrics:  # per-step values instead of running means
            tracker.reset_state()
        out = self.function({"features": self.real})
        return {k: float(out[k]) for k in LOSS_KEYS}


def keras_models(config):
    """fp32 generator and critic, and a copy of their initial weights."""
    from keras_ser.models import sngan

    gen, critic = sngan.build_generator(config), sngan.build_discriminator(config, "critic")
    return (gen, critic), (gen.get_weights(), critic.get_weights())


# --------------------------------------------------------------------------- timing

def _error(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def run_cases(factories: dict, warmup: int, steps: int, interleave: bool,
              cleanup=gc.collect) -> dict:
    """Build, warm up and time the cases; ``{name: {"times", "losses", "median", ...}}``.

    Args:
        factories: Name -> zero-argument callable building a case (``.step()`` -> losses).
        warmup: Untimed steps per case.
        steps: Timed steps per case.
        interleave: Build all cases, warm each up, then time alternating rounds (one step
            of each case per round). Otherwise each case is built, run and freed in turn
            (back to back), for networks too large to hold twice in memory.
        cleanup: Called after a case is freed (back to back) or after all (interleaved).
    """
    results = {name: {"times": [], "losses": []} for name in factories}

    def build(name):
        try:
            return factories[name]()
        except Exception as err:  # noqa: BLE001 -- reported, not hidden
            results[name]["error"] = _error(err)
            print(f"  {name}: build FAILED: {results[name]['error']}", flush=True)
            return None

    def one_step(name, case, timed):
        t0 = time.perf_counter()
        try:
            losses = case.step()
        except Exception as err:  # noqa: BLE001 -- reported, not hidden
            results[name]["error"] = _error(err)
            print(f"  {name}: step FAILED ({'timed' if timed else 'warm-up'}): "
                  f"{results[name]['error']}", flush=True)
            return False
        if timed:
            results[name]["times"].append(time.perf_counter() - t0)
        results[name]["losses"].append(losses)
        return True

    def warm(name, case):
        return all(one_step(name, case, False) for _ in range(warmup))

    if interleave:
        live = {}
        for name in factories:
            case = build(name)
            if case is not None:
                live[name] = case
        live = {name: case for name, case in live.items() if warm(name, case)}
        for _ in range(steps):
            for name in list(live):
                if not one_step(name, live[name], True):
                    del live[name]
        del live
        cleanup()
    else:
        for name in factories:
            case = build(name)
            if case is not None and warm(name, case):
                for _ in range(steps):
                    if not one_step(name, case, True):
                        break
            del case
            cleanup()
    cleanup()
    for name, res in results.items():
        if res["times"] and "error" not in res:
            res["median"] = float(np.median(res["times"]))
            res["mean"] = float(np.mean(res["times"]))
            print(f"  {name:<6} median {res['median']:.4f} s/step, mean {res['mean']:.4f} "
                  f"({len(res['times'])} steps: {', '.join(f'{t:.3f}' for t in res['times'])})",
                  flush=True)
    return results


def bench_preset(preset: str, args, use_keras: bool, use_torch: bool) -> dict:
    """Parameter counts, mirror check and the timed cases of one preset (both precisions)."""
    import keras

    from keras_ser.models import sngan

    config = sngan.get_sngan_preset(preset)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(preset, 10)
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP.get(preset, 3)
    real = np.random.default_rng(0).uniform(
        -1, 1, (BATCH, config.frames, config.n_mels)).astype(np.float32)
    entry = {"steps": steps, "warmup": warmup, "params": {}, "cases": {}}
    print(f"\n== preset {preset}: {config.frames}x{config.n_mels}, {warmup} warm-up + "
          f"{steps} timed steps per case", flush=True)

    keras_init, fp32_models = None, None
    if use_keras:
        t0 = time.perf_counter()
        fp32_models, keras_init = keras_models(config)
        entry["params"]["keras"] = {"generator": keras_param_count(fp32_models[0]),
                                    "critic": keras_param_count(fp32_models[1])}
        print(f"  keras  params: generator {entry['params']['keras']['generator']:,}, "
              f"critic {entry['params']['keras']['critic']:,} "
              f"(built in {time.perf_counter() - t0:.1f} s)", flush=True)
    if use_torch:
        tgen, tcritic = torch_networks(config)
        entry["params"]["torch"] = {"generator": torch_param_count(tgen),
                                    "critic": torch_param_count(tcritic)}
        del tgen, tcritic
        print(f"  torch  params: generator {entry['params']['torch']['generator']:,}, "
              f"critic {entry['params']['torch']['critic']:,}", flush=True)
    if use_keras and use_torch:
        assert entry["params"]["keras"] == entry["params"]["torch"], (
            f"parameter counts differ for {preset}: {entry['params']}")
        diffs = check_mirror(*fp32_models, config)
        entry["mirror_max_abs_diff"] = {"generator": diffs[0], "critic": diffs[1]}
        print(f"  mirror check, same weights without SN: max |keras - torch| generator "
              f"{diffs[0]:.2e}, critic {diffs[1]:.2e}", flush=True)

    interleave = (args.order == "interleaved" or (
        args.order == "auto" and sum(entry["params"].get(
            "keras", entry["params"].get("torch", {})).values()) <= AUTO_INTERLEAVE_PARAMS))
    entry["order"] = "interleaved" if interleave else "back to back"
    held = {"keras_models": fp32_models, "keras_init": keras_init, "torch_init": None}
    del fp32_models, keras_init

    def keras_factory(precision):
        def make():
            models = held.pop("keras_models", None) if precision == "fp32" else None
            return KerasCase(config, precision, real, models=models,
                             init_weights=None if precision == "fp32" else held["keras_init"])
        return make

    def torch_factory(precision):
        def make():
            case = TorchCase(config, precision, real, init_state=held["torch_init"])
            held["torch_init"] = case.init_state
            return case
        return make

    def cleanup():
        gc.collect()
        keras.backend.clear_session()
        _release_free_memory()

    for precision in PRECISIONS:
        print(f"-- {preset} {precision} ({entry['order']})", flush=True)
        factories = {}
        if use_keras:
            factories["keras"] = keras_factory(precision)
        if use_torch:
            factories["torch"] = torch_factory(precision)
        entry["cases"][precision] = run_cases(factories, warmup, steps, interleave, cleanup)
        held.pop("keras_models", None)
    held.clear()
    cleanup()
    return entry


def _release_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc), so the next case has room."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="paper,cpu",
                        help="comma-separated keras_ser.models.sngan.SNGAN_PRESETS names")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per case (default: 3 for paper, 20 for cpu)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per case first (default: 1 for paper, 3 for cpu)")
    parser.add_argument("--order", choices=("auto", "interleaved", "sequential"),
                        default="auto", help="alternate Keras and PyTorch steps, or run "
                        "each case back to back (auto: interleaved when both fit in memory)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="intra- and inter-op threads of both frameworks (default: all "
                        "cores)")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-torch", action="store_true", help="Keras numbers only")
    skip.add_argument("--skip-keras", action="store_true", help="PyTorch numbers only")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    use_torch = not args.skip_torch
    if use_torch:
        try:
            import torch
        except ImportError:
            print(TORCH_MISSING, file=sys.stderr)
            if args.skip_keras:
                return 2
            print("Running the Keras part only.", file=sys.stderr)
            use_torch = False
    use_keras = not args.skip_keras

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if use_torch:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)

    import keras

    from keras_ser.models import sngan

    for name in presets:
        sngan.get_sngan_preset(name)  # unknown names fail before any work

    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "keras": keras.__version__, "numpy": np.__version__}
    if use_torch:
        versions["torch"] = torch.__version__
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    omp_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"batch {BATCH}, {args.threads} threads per framework, OMP_WAIT_POLICY {omp_policy}, "
          "one step = 1 critic step (with gradient penalty) + 1 generator step")
    load_start = os.getloadavg()
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in load_start)} "
          f"({os.cpu_count()} cores)", flush=True)

    report = {"versions": versions, "threads": args.threads, "batch": BATCH,
              "omp_wait_policy": omp_policy, "load_start": load_start, "presets": {}}
    t_start = time.perf_counter()
    for preset in presets:
        report["presets"][preset] = bench_preset(preset, args, use_keras, use_torch)
    wall = time.perf_counter() - t_start
    report["wall_seconds"] = wall

    # Losses of the first steps (warm-up included), fp32 vs bf16 from the same start.
    print("\nFirst losses, fp32 vs bf16, same initial weights, noise and batch per framework:")
    for preset, entry in report["presets"].items():
        for fw in ("keras", "torch"):
            runs = [entry["cases"].get(p, {}).get(fw, {}).get("losses", []) for p in PRECISIONS]
            if not runs[0] or not runs[1]:
                continue
            for i, (a, b) in enumerate(zip(runs[0][:3], runs[1][:3])):
                print(f"  {preset:<5} {fw:<5} step {i + 1}: " + "; ".join(
                    f"{k} {a[k]:.5g} / {b[k]:.5g}" for k in LOSS_KEYS))

    def median(preset, precision, fw):
        return report["presets"][preset]["cases"].get(precision, {}).get(fw, {}).get("median")

    def cell(preset, precision, fw):
        res = report["presets"][preset]["cases"].get(precision, {}).get(fw)
        if res is None:
            return "skipped"
        if "error" in res:
            return "failed"
        return fmt(res.get("median"))

    print("\nMedian seconds per WGAN-GP step (1 critic + 1 generator step, batch 32):\n")
    print("| preset | precision | keras s/step | torch s/step | keras/torch ratio |")
    print("|---|---|---|---|---|")
    for preset in report["presets"]:
        for precision in PRECISIONS:
            k, t = median(preset, precision, "keras"), median(preset, precision, "torch")
            ratio = fmt(k / t, 2) if k and t else "n/a"
            print(f"| {preset} | {precision} | {cell(preset, precision, 'keras')} | "
                  f"{cell(preset, precision, 'torch')} | {ratio} |")
    print("\nbf16 speed-up (fp32 s/step / bf16 s/step):\n")
    print("| preset | keras | torch |")
    print("|---|---|---|")
    speedups = {}
    for preset in report["presets"]:
        row = []
        for fw in ("keras", "torch"):
            a, b = median(preset, "fp32", fw), median(preset, "bf16", fw)
            speedups.setdefault(preset, {})[fw] = a / b if a and b else None
            row.append(fmt(a / b, 2) if a and b else "n/a")
        print(f"| {preset} | {row[0]} | {row[1]} |")
    report["bf16_speedup"] = speedups
    errors = [(p, prec, fw, res["error"]) for p, e in report["presets"].items()
              for prec, cases in e["cases"].items() for fw, res in cases.items()
              if "error" in res]
    for p, prec, fw, err in errors:
        print(f"\nFAILED {fw} {p} {prec}: {err}")
    report["load_end"] = os.getloadavg()
    print(f"\nwall time {wall:.0f} s; load average at the end: "
          f"{', '.join(f'{x:.2f}' for x in report['load_end'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.exit(main())
