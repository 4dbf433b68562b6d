"""Fold results -> `results.json` and `results.md` tables (mean ± std over folds).

A fold result is the dict of `keras_ser.training.protocol.train_fold`: ``model``,
``fold``, ``test`` metrics (``emotion_ua``, ``<dim>_ua5``, ``<dim>_ua3``, ``<dim>_r``,
confusion matrices) and ``validation`` metrics.
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

import numpy as np

from keras_ser import metrics
from keras_ser.models import dcgan

#: (metric key, column title, is a percentage) of the paper's Table 1 and our additions.
COLUMNS = (
    ("emotion_ua", "UA emotion", True),
    ("emotion_wa", "WA emotion", True),
    ("valence_ua5", "UA valence 5-class", True),
    ("valence_ua3", "UA valence 3-class", True),
    ("valence_r", "r valence", False),
    ("activation_ua5", "UA activation 5-class", True),
    ("activation_ua3", "UA activation 3-class", True),
    ("activation_r", "r activation", False),
)


def summarise(results: Sequence[dict]) -> dict:
    """Per model: every scalar test metric as a list over folds with mean and std.

    Returns:
        ``{model: {metric: {"folds": [...], "mean": m, "std": s}, "folds": [names],
        "confusion": summed confusion of the primary head or None}}``; std is the
        population std over folds (NaN-free folds only).
    """
    out = {}
    for model in dcgan.MODELS:
        rows = [r for r in results if r["model"] == model]
        if not rows:
            continue
        entry = {"folds": [r["fold"] for r in rows]}
        keys = sorted({k for r in rows for k, v in r["test"].items() if np.ndim(v) == 0})
        for key in keys:
            values = [float(r["test"][key]) for r in rows if key in r["test"]]
            finite = [v for v in values if not math.isnan(v)]
            mean, std = metrics.mean_std(finite) if finite else (float("nan"), float("nan"))
            entry[key] = {"folds": values, "mean": mean, "std": std}
        for conf_key in ("emotion_confusion", "valence_confusion5", "activation_confusion5"):
            mats = [np.array(r["test"][conf_key]) for r in rows if conf_key in r["test"]]
            if mats:
                entry[conf_key] = np.sum(mats, axis=0).astype(int).tolist()
        out[model] = entry
    return out


def best_model(summary: dict, key: str = "primary_ua") -> str:
    """The model with the highest mean of ``key`` over folds.

    Raises:
        ValueError: No model has the metric.
    """
    scored = {m: e[key]["mean"] for m, e in summary.items()
              if key in e and not math.isnan(e[key]["mean"])}
    if not scored:
        raise ValueError(f"no model has the metric '{key}'")
    return max(scored, key=scored.get)


def _cell(entry: dict, key: str, percent: bool) -> str:
    if key not in entry or math.isnan(entry[key]["mean"]):
        return "–"
    mean, std = entry[key]["mean"], entry[key]["std"]
    if percent:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary: dict) -> str:
    """The paper's results table: one row per model, metric columns with mean ± std.

    Columns without any value are dropped.
    """
    used = [(k, t, p) for k, t, p in COLUMNS if any(k in e for e in summary.values())]
    lines = ["| Model | folds | " + " | ".join(t for _, t, _ in used) + " |",
             "|---|---|" + "---|" * len(used)]
    for model, entry in summary.items():
        cells = [_cell(entry, k, p) for k, _, p in used]
        lines.append(f"| {dcgan.MODEL_TITLES[model]} | {len(entry['folds'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def fold_table(results: Sequence[dict], key: str = "primary_ua") -> str:
    """Per-fold primary UA of every model (rows: folds; columns: models), in percent."""
    models = [m for m in dcgan.MODELS if any(r["model"] == m for r in results)]
    folds = list(dict.fromkeys(r["fold"] for r in results))
    lines = ["| Fold | " + " | ".join(dcgan.MODEL_TITLES[m] for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for fold in folds:
        cells = []
        for m in models:
            hit = [r for r in results if r["model"] == m and r["fold"] == fold]
            cells.append(f"{100 * hit[0]['test'][key]:.1f}" if hit else "–")
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out_dir: str, results: Sequence[dict], header: str, extra: dict) -> dict:
    """Write ``results.json`` and ``results.md`` atomically; return the summary.

    Args:
        out_dir: Run folder.
        results: Fold results.
        header: Markdown text above the tables (corpus, protocol, targets, wall time).
        extra: Added to ``results.json`` (config, timings).
    """
    summary = summarise(results)
    document = {**extra, "summary": summary, "folds": list(results)}
    for name, text in (("results.json", json.dumps(document, indent=1, default=float)),
                       ("results.md", "\n\n".join([header, "## Test results (mean ± std "
                                                   "over folds)", markdown_table(summary),
                                                   "## Primary-task UA per fold (%)",
                                                   fold_table(results)]) + "\n")):
        path = os.path.join(out_dir, name)
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)
    return summary
