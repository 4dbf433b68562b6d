"""``report.html``: a finished run on one self-contained page.

`build_report` reads only the run folder -- ``results.json`` and ``results.md`` (both from
`keras_ser.experiment.write_results`), ``config.json``, each training's checkpoint
``state.json`` (`keras_ser.training.resumable`: the per-epoch history) and the GAN grid
PNGs (``grids/`` folders, SN-GAN's comparison figures) anywhere in the run but the corpus,
export, TensorBoard and search folders -- and writes ``report.html`` (atomically):

- the smoke-test banner when ``config.json`` says ``smoke_test_corpus``;
- the run's header lines and the paper's table (reference rows marked), as HTML;
- a per-fold chart of the main metric for every row, the reference rows hatched;
- the confusion matrix of the best trained model, summed over its folds;
- training curves: loss and validation metric per epoch, a line per fold, per model
  and training stage;
- the last GAN grid of each training that wrote any;
- the remaining results sections (per-fold table, paired tests) and ``config.json``.

A part that cannot be drawn says so in the page; `keras_ser.experiment.write_results`
turns any other failure into a warning line, never a failed run.

Figures are drawn with matplotlib (`keras_ser.plots`) and embedded as base64 PNG data
URIs; the page has no script and no external resource, so it opens offline. The same
run folder gives the same page, so ``keras-ser report RUN_DIR`` (`main`) rebuilds it.
`keras_ser.experiment.write_results` calls `build_report` last.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
import tempfile

REPORT = "report.html"

#: Files under ``runs/`` shown as GAN pictures besides the ``grids/`` folders' last grids.
GAN_PICTURES = ("real_vs_generated.png", "same_noise_per_emotion.png", "generated.png")
MAX_GRIDS = 24
MAX_CURVES = 40


class NotARun(ValueError):
    """The folder is not a finished run (no ``results.json`` / ``results.md``)."""


# ----------------------------------------------------------------------------- reading

def _read_json(path):
    with open(path, encoding="utf-8") as f:
        # results.json holds NaN (p-values with one fold): the json module reads it.
        return json.load(f)


def _tables(markdown: str) -> list:
    """The Markdown tables of ``markdown``: ``(heading, header cells, body rows)``."""
    tables, heading, block = [], None, []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            tables.append((heading, block[0], body))
            block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def _main_metric(results: dict, tables: list) -> tuple:
    """``(key, title, percent)`` of the run's main metric (the per-fold table's)."""
    per_fold = next((t for t in tables if t[0] and " per fold" in t[0]), None)
    title = re.sub(r" per fold.*$", "", per_fold[0]) if per_fold else ""
    percent = per_fold is not None and "(%)" in per_fold[0]
    metrics = results.get("metrics", [])
    paper = tables[0] if tables else None
    titles = paper[1][2:2 + len(metrics)] if paper is not None else []
    if title in titles:
        return metrics[titles.index(title)], title, percent
    # The summary holds the columns' keys and the main one: a key besides them is it.
    for entry in results.get("summary", {}).values():
        extra = [k for k in entry if k != "folds" and k not in metrics]
        if extra:
            return extra[0], title, percent
    # A main metric among the columns under a longer title ("Test UA" for "UA").
    inside = sorted((len(t), k) for k, t in enumerate(titles)
                    if t and re.search(rf"(^|\W){re.escape(t)}(\W|$)", title))
    if inside:
        return metrics[inside[-1][1]], title, percent
    return (metrics[0] if metrics else None), title, percent


def _confusion_key(test: dict) -> str | None:
    keys = [k for k in test if k == "confusion" or k.endswith("confusion")
            or re.search(r"confusion\d*$", k)]
    for preferred in ("confusion", "emotion_confusion"):
        if preferred in keys:
            return preferred
    return keys[0] if keys else None


def _history(state_path: str) -> list:
    try:
        return list(_read_json(state_path).get("history") or [])
    except (OSError, ValueError):
        return []


def _series(history: list, names) -> dict:
    return {n: [float(h[n]) if isinstance(h.get(n), (int, float)) else math.nan
                for h in history] for n in names}


def _curves(history: list, main_key: str | None) -> dict:
    """The loss and validation-metric series to draw from one training's history."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    if "loss" in keys:
        loss = ["loss"] + (["val_loss"] if "val_loss" in keys else [])
    else:
        loss = [k for k in keys if k.endswith("loss") and not k.startswith("val_")][:4]
    metric = []
    for name in ([f"val_{main_key}"] if main_key else []) + ["val_ua", "val_wa"]:
        if name in keys:
            metric = [name]
            break
    if not metric:
        metric = [k for k in keys if k.startswith("val_") and "loss" not in k
                  and not k.endswith("_n")][:1]
    return {"loss": _series(history, loss), "metric": _series(history, metric)}


#: Top-level folders of a run that hold none of its trainings: the corpus, the export,
#: TensorBoard, the hyper-parameter search's trials.
SKIP = ("smoke", "export", "logs", "search", ".workers")
#: Folder names that only wrap checkpoints or fold folders.
WRAPPERS = ("runs", "folds", "ckpt", "checkpoint", "checkpoints")


def _walk(run_dir: str):
    """``os.walk`` of the run folder without `SKIP` and hidden folders, sorted."""
    for folder, dirs, files in os.walk(run_dir):
        top = os.path.relpath(folder, run_dir) == "."
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (top and d in SKIP))
        yield folder, sorted(files)


def _trainings(run_dir: str, rows: list, folds: list) -> dict:
    """``{(row, stage): {fold: state.json path}}`` of every checkpoint folder of the run
    (`keras_ser.training.resumable`: ``runs/<row>/<fold>/ckpt``,
    ``folds/<fold>/<stage>/checkpoint``, ``pretrain/<stage>/checkpoint``, ...): the fold
    is the path's part naming one of the run's folds (``-run<k>`` repeats included), the
    row the part naming a row, the stage what is left."""
    found = {}
    for folder, files in _walk(run_dir):
        if "state.json" not in files:
            continue
        parts = [p for p in os.path.relpath(folder, run_dir).split(os.sep)
                 if p not in WRAPPERS]
        fold = next((p for p in parts if re.sub(r"-run\d+$", "", p) in folds), None)
        row = next((p for p in parts if p in rows), "")
        stage = "/".join(p for p in parts if p not in (fold, row))
        found.setdefault((row, stage), {})[fold or "-"] = os.path.join(folder, "state.json")
    return found


def _gan_pictures(run_dir: str) -> list:
    """The last grid of each ``grids/`` folder and tag, and the GAN comparison figures."""
    pictures = []
    for folder, files in _walk(run_dir):
        pngs = [f for f in files if f.endswith(".png") and not f.startswith(".")]
        if os.path.basename(folder) == "grids":
            last = {}
            for name in pngs:
                last[re.sub(r"_?epoch\d+\.png$|\d+\.png$", "", name)] = name
            pictures += [os.path.join(folder, n) for n in last.values()]
        else:
            pictures += [os.path.join(folder, n) for n in pngs if n in GAN_PICTURES]
    return pictures[:MAX_GRIDS]


# ----------------------------------------------------------------------------- HTML

def _inline(text: str) -> str:
    """Markdown inline (bold, code) of escaped text."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _markdown(text: str) -> str:
    """The little Markdown results.md uses: headings, bullets, tables, paragraphs."""
    out, bullets, block = [], [], []

    def flush():
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()
        if block:
            out.append(_table_html(block[0], [r for r in block[1:] if not all(
                set(c) <= set("-: ") for c in r)]))
            block.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if line.startswith("- "):
            bullets.append(line[2:])
            continue
        flush()
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def _table_html(header, body, row_classes=None, table_id=None) -> str:
    head = "".join(f"<th>{_inline(c)}</th>" for c in header)
    rows = []
    for k, cells in enumerate(body):
        cls = (row_classes or {}).get(k)
        rows.append(f"<tr{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>" + "".join(
            (f"<th scope=\"row\">{_inline(c)}</th>" if j == 0 else f"<td>{_inline(c)}</td>")
            for j, c in enumerate(cells)) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return (f'<div class="wide"><table{ident}><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>")


def _img(path: str, alt: str, cls: str = "") -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    kind = f' class="{cls}"' if cls else ""
    return (f'<figure><img{kind} src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1150px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .4em;text-align:right}
.wide{overflow-x:auto;max-width:100%}
thead th{background:#f0f0f0;text-align:center}tbody th{text-align:left;font-weight:normal}
tr.reference{background:#f6f6f6;font-style:italic}
tr.reference.main-reference th::after{content:" \\2605";}
.smoke{background:#fff3cd;border:2px solid #e0a800;padding:.7em 1em;font-weight:bold}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}
figure img.grid{max-height:420px}
figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:40em}
.note{color:#555;font-size:.9em}
"""


def _split_results_md(text: str) -> tuple:
    """``(header, paper-table heading, paper-table section, rest)``: results.md's
    Markdown in four parts."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    if not starts:
        return "\n".join(lines[1:]), "", "", ""
    first = starts[0]
    table_end = first + 1
    while table_end < len(lines) and not lines[table_end].startswith("## "):
        table_end += 1
    header = [ln for ln in lines[1:first] if not ln.startswith("**")]  # banner drawn apart
    return ("\n".join(header), lines[first][3:].strip(),
            "\n".join(lines[first + 1:table_end]), "\n".join(lines[table_end:]))


def build_report(run_dir: str) -> str:
    """Write ``<run_dir>/report.html`` from the run folder alone; returns its path.

    Raises:
        NotARun: ``run_dir`` has no ``results.json`` and ``results.md``.
    """
    from keras_ser import baselines, io, plots
    from tfrecords_tools import smoke as smoke_corpus

    run_dir = os.fspath(run_dir)
    results_json = os.path.join(run_dir, "results.json")
    results_md = os.path.join(run_dir, "results.md")
    if not (os.path.isfile(results_json) and os.path.isfile(results_md)):
        raise NotARun(f"{run_dir} is not a finished run: no results.json and results.md "
                      "(a recipe writes them when every fold is done)")
    results = _read_json(results_json)
    with open(results_md, encoding="utf-8") as f:
        markdown = f.read()
    config_path = os.path.join(run_dir, "config.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    title = results.get("title") or os.path.basename(os.path.abspath(run_dir))
    rows = list(results.get("rows", []))
    summary = results.get("summary", {})
    folds = results.get("folds", [])
    tables = _tables(markdown)
    main_key, main_title, percent = _main_metric(results, tables)
    reference = results.get("reference")
    reference_rows = [r for r in rows if r in baselines.ROWS]

    header_md, table_heading, table_md, rest_md = _split_results_md(markdown)
    paper = _tables(table_md)
    parts = [f"<h1>{_inline(title)}</h1>"]
    if config.get("smoke_test_corpus"):
        parts.append(f'<p class="smoke" id="smoke-banner">{html.escape(smoke_corpus.BANNER)}</p>')
    parts.append(_markdown(header_md))
    parts.append(f"<h2>{_inline(table_heading)}</h2>")
    if paper:
        _, head, body = paper[0]
        classes = {}
        for k, row in enumerate(rows[:len(body)]):
            if row in reference_rows:
                classes[k] = "reference main-reference" if row == reference else "reference"
        parts.append(_table_html(head, body, classes, table_id="results"))
        notes = [ln for ln in table_md.splitlines() if ln.strip() and not ln.startswith("|")]
        if reference_rows:
            notes.append("Shaded italic rows: the reference (eGeMAPS + linear SVM) rows"
                         + ("; ★ the one the p column tests against." if reference else "."))
        parts += [f'<p class="note">{_inline(n)}</p>' for n in notes]

    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        figures = []

        def figure(name, draw, alt):
            path = os.path.join(tmp, f"{len(figures):03d}-{name}.png")
            try:
                draw(path)
            except (ValueError, KeyError, TypeError, IndexError) as err:
                figures.append(f'<p class="note">{html.escape(alt)}: not drawn ({err})</p>')
                return
            figures.append(_img(path, alt))

        # Per-fold chart of the main metric, every row.
        per_fold_table = next((t for t in tables if t[0] and " per fold" in t[0]), None)
        chart = []
        if per_fold_table is not None:
            _, head, body = per_fold_table
            titles = head[1:]
            names = [r[0] for r in body]

            def number(cell):
                try:
                    return float(cell)
                except ValueError:
                    return None
            values = {t: [number(r[1 + j]) if 1 + j < len(r) else None for r in body]
                      for j, t in enumerate(titles)}
            ref_titles = [titles[k] for k, r in enumerate(rows[:len(titles)])
                          if r in reference_rows]
            figure("per-fold", lambda p: plots.per_fold_png(
                values, names, p, title=f"{main_title} per fold, every row",
                ylabel=main_title + (" (%)" if percent else ""), reference_rows=ref_titles),
                f"{main_title} per test fold for every row (reference rows hatched)")
            chart, figures = figures, []

        # Confusion matrix of the best trained model.
        networks = [r for r in rows if r not in baselines.ROWS
                    and main_key in summary.get(r, {})] or [
                        r for r in rows if main_key in summary.get(r, {})]
        confusion = []
        row_titles = {}
        if paper:
            for k, row in enumerate(rows[:len(paper[0][2])]):
                row_titles[row] = paper[0][2][k][0]
        if networks:
            def mean(row):
                value = summary[row][main_key].get("mean")
                return (float(value) if isinstance(value, (int, float))
                        and math.isfinite(value) else -math.inf)
            best = max(networks, key=mean)
            # A fold result per row (``row``, ``test``), or one per fold with every
            # row's scores (``scores: {row: test}``, recipes/sngan_synthetic.py).
            tests = [f["test"] for f in folds if f.get("row") == best and "test" in f] + [
                f["scores"][best] for f in folds if isinstance(f.get("scores"), dict)
                and isinstance(f["scores"].get(best), dict)]
            key = _confusion_key(tests[0]) if tests else None
            matrices = [t[key] for t in tests if key and t.get(key) is not None]
            if matrices:
                import numpy as np

                total = np.sum([np.asarray(m, dtype=float) for m in matrices], axis=0)
                names = results.get("classes") or config.get("classes") or []
                if len(names) != total.shape[0]:
                    names = [str(i) for i in range(total.shape[0])]
                label = row_titles.get(best, best)
                figure("confusion", lambda p: plots.confusion_matrix_png(
                    total, names, p, title=f"test, summed over {len(matrices)} fold run(s)"),
                    f"Confusion matrix of the best model by {main_title}: {label} ({key}, "
                    "summed over folds)")
            confusion, figures = figures, []

        # Training curves from each training's state.json history.
        trainings = _trainings(run_dir, rows, sorted({str(f.get("fold")) for f in folds}))
        for (row, stage), states in list(trainings.items())[:MAX_CURVES]:
            curves = {fold: _curves(_history(path), main_key) for fold, path in states.items()}
            curves = {f: c for f, c in curves.items() if any(c["loss"].values())
                      or any(c["metric"].values())}
            if not curves:
                continue
            metric_names = sorted({n for c in curves.values() for n in c["metric"]})
            label = " / ".join(x for x in (row_titles.get(row, row), stage) if x) or "training"
            figure("curves", lambda p, curves=curves, label=label, names=metric_names:
                   plots.training_curves_png(
                       curves, p, title=label, loss_label="loss",
                       metric_label=", ".join(names) or "validation metric"),
                   f"Training curves: {label} ({len(curves)} fold(s))")
        curves_html, figures = figures, []

        grids = [_img(p, os.path.relpath(p, run_dir), "grid") for p in _gan_pictures(run_dir)]

        parts.append(f"<h2>{_inline(main_title or 'Main metric')} per fold (chart)</h2>")
        parts += chart or ['<p class="note">No per-fold table in results.md.</p>']
        parts.append("<h2>Confusion matrix of the best model</h2>")
        parts += confusion or ['<p class="note">No confusion matrix in the fold results.</p>']
        parts.append("<h2>Training curves</h2>")
        parts.append('<p class="note">Loss and validation metric per epoch, a line per fold, '
                     "from each training's checkpoint history (state.json).</p>")
        parts += curves_html or ['<p class="note">No training history in this run.</p>']
        if grids:
            parts.append("<h2>GAN samples</h2>")
            parts.append('<p class="note">The last grid each GAN training wrote.</p>')
            parts += grids
    parts.append(_markdown(rest_md))
    parts.append("<h2>Configuration (config.json)</h2>")
    parts.append("<pre>" + html.escape(json.dumps(config, indent=1, sort_keys=False))
                 + "</pre>")
    document = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)} — keras-ser report</title>\n"
                f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(parts)
                + '\n<p class="note">Written by keras_ser.report from this run folder '
                "(rebuild: keras-ser report RUN_DIR).</p>\n</body>\n</html>\n")
    return io.write_text(os.path.join(run_dir, REPORT), document)


def main(argv=None) -> int:
    """``keras-ser report RUN_DIR``: (re)build ``RUN_DIR/report.html``.

    Returns:
        0, or 2 (message on stderr) when RUN_DIR is not a finished run.
    """
    parser = argparse.ArgumentParser(
        prog="keras-ser report",
        description="Rebuild report.html (self-contained: figures embedded, no script, "
                    "opens offline) from a finished run folder.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a recipe's run folder (with results.json and results.md)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        print(f"error: {args.run_dir}: no such folder", file=sys.stderr)
        return 2
    try:
        path = build_report(args.run_dir)
    except NotARun as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"error: {args.run_dir}: cannot read the run ({err})", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
