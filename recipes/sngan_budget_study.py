"""How long to train the SN-GAN: a budget study on top of ``sngan_synthetic.py``.

    python recipes/sngan_budget_study.py --corpus emodb --data ../shared/data/emodb \\
        --unlabelled ../shared/data/speech_unlabeled --folds 03,08 --scales 0.125,0.5,2

Eskimez et al. (Interspeech 2020, Sec. 4.4) pre-train 200K autoencoder and 200K WGAN-GP
iterations; a CPU user cannot. This study answers what a smaller budget buys: the
whole SN-GAN recipe (`sngan_synthetic.py`) runs once per budget point, with the
preset's pre-training and fine-tuning iterations (``ae_steps``, ``wgan_steps``,
``ft_steps``) multiplied by each ``--scales`` factor and everything else fixed (the SER
network's iterations, K patches per class, folds, seed). Per point it reports, mean ±
std over the folds:

- TSTR, the synthetic-only macro-F1 over the real-only one (centralised generator);
- the gain of real + synthetic patches over real alone (macro-F1 points, centralised);
- the Fréchet distance of the centralised generator's patches to real ones;
- the wall time of the invocation that finished the point.

Outputs: ``budget_study.md``, ``budget_study.json`` and ``budget_study.png`` under
``--out``; each point's full run under ``--out/x<scale>/`` (resumable like any run).
Our choices: the Chatziagapi et al. baseline GAN and the eGeMAPS rows are skipped
(``--no-baseline --baseline none``) and ``--clients 1`` (one per-client generator) to
spend the time on the budgets.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

from keras_ser import experiment, io, metrics, plots
from keras_ser.protocols import sngan as protocol

KEYS = {"tstr": ("centralised", "tstr"), "gain_f1": ("real+centralised", "gain_f1"),
        "macro_f1": ("real", "macro_f1"), "synthetic_f1": ("centralised", "macro_f1"),
        "mixed_f1": ("real+centralised", "macro_f1")}


def sngan_recipe():
    """``recipes/sngan_synthetic.py`` as a module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sngan_synthetic.py")
    spec = importlib.util.spec_from_file_location("recipe_sngan_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    """Command-line options; the rest goes to ``sngan_synthetic.py`` unchanged."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--scales", default="0.125,0.5,2",
                   help="multipliers of the preset's ae/wgan/ft iterations")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--out", default="runs/sngan_budget_study")
    return p.parse_known_args(argv)


def point(run: str, scale: float, budgets: protocol.Budgets, seconds) -> dict:
    """One budget point from its run's ``results.json``."""
    doc = io.read_json(os.path.join(run, "results.json"))
    folds = {}
    for r in doc["folds"]:
        for key, (row, metric) in KEYS.items():
            value = r["scores"].get(row, {}).get(metric)
            if value is not None:
                folds.setdefault(key, []).append(float(value))
        folds.setdefault("fd", []).append(float(r["frechet"]["centralised"]))
    entry = {"scale": scale, **{k: getattr(budgets, k) for k in ("ae_steps", "wgan_steps",
                                                                 "ft_steps")},
             "folds": [r["fold"] for r in doc["folds"]], "seconds": seconds}
    for key, values in folds.items():
        mean, std = metrics.mean_std(values)
        entry[key] = {"folds": values, "mean": mean, "std": std}
    return entry


def table(points: list) -> str:
    """The study as a Markdown table."""
    def cell(p, key, scale=1.0, digits=2):
        v = p.get(key)
        return "–" if not v else f"{scale * v['mean']:.{digits}f} ± {scale * v['std']:.{digits}f}"

    lines = [("| AE / WGAN-GP / fine-tuning iterations | real F1 | TSTR | real + synthetic "
              "gain (F1 points) | Fréchet distance | wall time |"), "|---|---|---|---|---|---|"]
    for p in points:
        wall = "–" if p["seconds"] is None else f"{p['seconds'] / 60:.1f} min"
        lines.append(f"| {p['ae_steps']} / {p['wgan_steps']} / {p['ft_steps']} | "
                     f"{cell(p, 'macro_f1', 100, 1)} | {cell(p, 'tstr')} | "
                     f"{cell(p, 'gain_f1', 100, 1)} | {cell(p, 'fd')} | {wall} |")
    return "\n".join(lines)


@experiment.recipe_main
def main(argv=None) -> int:
    """Run every budget point, then write the table and the plot; the exit status of
    the first failing point, else 0."""
    args, rest = parse_args(argv)
    try:
        scales = sorted(float(s) for s in args.scales.split(",") if s.strip())
    except ValueError:
        raise experiment.BadInput(f"--scales must be numbers, got {args.scales!r}") from None
    if not scales or min(scales) <= 0:
        raise experiment.BadInput("--scales needs positive factors")
    base = protocol.BUDGETS[args.preset if any(a.split("=")[0] == "--data" for a in rest)
                            else "smoke"]
    recipe, points = sngan_recipe(), []
    os.makedirs(args.out, exist_ok=True)
    for scale in scales:
        budgets = base.replace(**{k: max(1, round(scale * getattr(base, k)))
                                  for k in ("ae_steps", "wgan_steps", "ft_steps")})
        run = os.path.join(args.out, f"x{scale:g}")
        timing = os.path.join(run, "study_seconds.json")
        done = os.path.isfile(os.path.join(run, "results.json"))
        print(f"== budget x{scale:g}: {budgets.ae_steps} AE / {budgets.wgan_steps} WGAN-GP / "
              f"{budgets.ft_steps} fine-tuning iterations", flush=True)
        start = time.time()
        code = recipe.main(["--preset", args.preset, "--out", run, "--no-export",
                            "--no-baseline", "--baseline", "none", "--clients", "1",
                            "--ae-steps", str(budgets.ae_steps), "--wgan-steps",
                            str(budgets.wgan_steps), "--ft-steps", str(budgets.ft_steps),
                            *rest])
        if code:
            return code
        if not done and not os.path.isfile(timing):
            io.write_json(timing, {"seconds": round(time.time() - start, 1)})
        seconds = io.read_json(timing)["seconds"] if os.path.isfile(timing) else None
        points.append(point(run, scale, budgets, seconds))
    text = (f"# SN-GAN budget study ({args.preset} preset)\n\n"
            f"Each point: `sngan_synthetic.py {' '.join(rest)}` with the iterations below; "
            "centralised generator; mean ± std over folds. Wall time: the invocation that "
            "finished the point (pre-training, every fold, 2 cores).\n\n" + table(points) + "\n")
    io.write_text(os.path.join(args.out, "budget_study.md"), text)
    io.write_json(os.path.join(args.out, "budget_study.json"), {"points": points})
    plots.budget_study_png(points, os.path.join(args.out, "budget_study.png"),
                           title="SN-GAN: what a budget buys")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
