"""report.html (keras_ser.report): written by experiment.write_results, self-contained,
rebuilt by ``keras-ser report RUN_DIR``, and rendered by a real headless Chromium.

Most tests build a small run folder by calling `experiment.write_results` on synthetic
fold results (with checkpoint histories, a GAN grid and the reference rows), so they
take seconds; one slow test renders the report of a real smoke run of recipes/crnn_vtlp.py
and keeps the browser's screenshot in the run folder (``report-screenshot.png``).
"""

import html
import json
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from helpers import load_recipe

from keras_ser import experiment, io, plots, report
from keras_ser.experiment import Metric, Reference

CLASSES = ["anger", "happiness", "neutral", "sadness"]
FOLDS = ["test-f01", "test-m02", "test-f03"]
ROWS = ["cnn", "cnn_gan"]
TITLES = {"cnn": "Plain CNN", "cnn_gan": "CNN + GAN"}


def _fold(row, fold, rng):
    confusion = rng.integers(0, 6, size=(4, 4)).tolist()
    ua = float(rng.uniform(0.3, 0.6))
    return {"row": row, "fold": fold, "classes": CLASSES, "seconds": 1.0, "repeat": 0,
            "test": {"wa": ua + 0.01, "ua": ua, "macro_f1": ua - 0.05,
                     "confusion": confusion}}


def _history(epochs, rng, gan=False):
    logs = []
    for e in range(epochs):
        entry = {"loss": 1.4 - 0.1 * e + 0.01 * rng.random(), "accuracy": 0.3 + 0.05 * e,
                 "val_ua": 0.25 + 0.04 * e, "val_wa": 0.26 + 0.04 * e}
        if gan:
            entry.update(d_loss=1.3 - 0.05 * e, g_loss=0.8 + 0.03 * e)
        logs.append(entry)
    return logs


def make_run(out, smoke=True, baseline=True):
    """A finished run folder, written the way a recipe writes one."""
    rng = np.random.default_rng(0)
    io.write_json(os.path.join(out, "config.json"), {
        "argv": ["--folds", "3"], "corpus": "smoke", "smoke_test_corpus": smoke, "seed": 0,
        "preset": "cpu", "classes": CLASSES})
    results = [_fold(r, f, rng) for r in ROWS for f in FOLDS]
    reference = None
    if baseline:
        base = [_fold(r, f, rng) for r in ("egemaps_global", "egemaps_speaker")
                for f in FOLDS]
        reference = Reference(["egemaps_global", "egemaps_speaker"], base, "egemaps_global")
    for row in ROWS:
        for fold in FOLDS:
            folder = experiment.fold_folder(out, row, fold)
            io.write_json(os.path.join(folder, "ckpt", "state.json"), {
                "epochs_done": 3, "history": _history(3, rng, gan=row == "cnn_gan")})
            io.write_json(os.path.join(folder, "result.json"), results[0])
            if row == "cnn_gan":
                for epoch in (1, 2):
                    plots.save_png(plots.spectrogram_grid(
                        rng.uniform(-1, 1, size=(4, 32, 16)).astype("float32")),
                        os.path.join(folder, "grids", f"generated_epoch{epoch:03d}.png"))
    summary = experiment.write_results(
        out, title="Synthetic recipe on smoke", header=["Protocol: loso-speaker, 3 folds."],
        entries=results, rows=ROWS, row_titles=TITLES,
        columns=[Metric("wa", "WA"), Metric("ua", "UA"), Metric("macro_f1", "macro-F1")],
        main=Metric("ua", "UA"), folds=results, smoke=smoke, started=time.time(),
        document={"classes": CLASSES}, baseline=reference)
    return summary


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report") / "run")
    make_run(out)
    return out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_write_results_writes_a_self_contained_report(run):
    page = _read(os.path.join(run, "report.html"))
    assert "<title>Synthetic recipe on smoke — keras-ser report</title>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    # Per-fold chart, confusion matrix, 2 training-curve figures (a model each), and the
    # last GAN grid of each of the 3 folds of cnn_gan.
    assert len(images) == 7
    assert all(src.startswith("data:image/png;base64,") for src in images)
    table = re.search(r'<table id="results">(.*?)</table>', page, re.DOTALL).group(1)
    body = re.findall(r"<tr[^>]*>", table.split("<tbody>")[1])
    assert len(body) == 4  # the two reference rows first, then the two models
    assert table.count('class="reference') == 2
    assert 'class="reference main-reference"' in table
    for title in ("Plain CNN", "CNN + GAN", "eGeMAPS + SVM, global z (reference)"):
        assert html.escape(title, quote=False) in table
    assert 'id="smoke-banner"' in page and "SMOKE-TEST CORPUS" in page
    assert "Training curves" in page and "GAN samples" in page
    assert "generated_epoch002.png" in page and "generated_epoch001.png" not in page
    assert "Configuration (config.json)" in page and "&quot;preset&quot;" in page


def test_no_banner_without_smoke_corpus_and_no_reference_rows_without_baseline(tmp_path):
    out = str(tmp_path / "run")
    make_run(out, smoke=False, baseline=False)
    page = _read(os.path.join(out, "report.html"))
    assert 'id="smoke-banner"' not in page
    assert 'class="reference' not in page
    table = re.search(r'<table id="results">(.*?)</table>', page, re.DOTALL).group(1)
    assert len(re.findall(r"<tr>", table.split("<tbody>")[1])) == 2


def test_keras_ser_report_rebuilds_the_same_page(run, capsys):
    path = os.path.join(run, "report.html")
    first = _read(path)
    os.remove(path)
    assert report.main([run]) == 0
    from keras_ser import cli

    assert cli.main(["report", run]) == 0  # the same through `keras-ser report`
    assert capsys.readouterr().out.split() == [path, path]
    assert _read(path) == first


def test_keras_ser_report_on_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "report.html")


def test_a_failing_report_warns_and_never_fails_the_run(tmp_path, monkeypatch, capsys):
    def broken(run_dir):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "build_report", broken)
    out = str(tmp_path / "run")
    summary = make_run(out)
    assert set(summary) >= set(ROWS)
    assert os.path.isfile(os.path.join(out, "results.json"))
    assert "warning: report.html not written: RuntimeError: boom" in capsys.readouterr().err


# ------------------------------------------------------------------ headless Chromium

CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({
    title: document.title,
    rows: document.querySelectorAll("#results tbody tr").length,
    widths: images.map(function (i) { return i.complete ? i.naturalWidth : -1; })});
  document.body.appendChild(out);
});
</script>"""


def _chromium():
    """The Chromium binary; skips outside CI when missing, fails under CI=true."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = ("Chromium not installed (apt-get install chromium; .ci/run installs it):"
                   " the report is not checked in a real browser")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _browser(binary, *args):
    return subprocess.run([binary, "--headless", "--disable-gpu", "--no-sandbox",
                           "--hide-scrollbars", "--allow-file-access-from-files", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def check_in_browser(run_dir, tmp_path):
    """Open the report in headless Chromium: the render check of a copy of the page with
    a checking script added (the report itself has none), and a screenshot of the page
    itself in ``run_dir/report-screenshot.png``."""
    binary = _chromium()
    page = _read(os.path.join(run_dir, "report.html"))
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "\n</body>"), encoding="utf-8")
    dom = _browser(binary, "--virtual-time-budget=10000", "--dump-dom",
                   checked.as_uri()).stdout
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the check script did not run; DOM starts {dom[:300]!r}"
    check = json.loads(html.unescape(found.group(1)))
    shot = os.path.join(run_dir, "report-screenshot.png")
    _browser(binary, f"--screenshot={shot}", "--window-size=1280,3600",
             "file://" + os.path.abspath(os.path.join(run_dir, "report.html")))
    return check, shot


def _assert_screenshot(shot):
    from PIL import Image

    assert os.path.getsize(shot) > 20_000
    with Image.open(shot) as image:
        assert image.size == (1280, 3600)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run, tmp_path):
    check, shot = check_in_browser(run, tmp_path)
    assert check["title"] == "Synthetic recipe on smoke — keras-ser report"
    assert check["rows"] == 4
    assert len(check["widths"]) == 7 and all(w > 0 for w in check["widths"]), check
    _assert_screenshot(shot)


@pytest.mark.slow
def test_smoke_run_report_renders_and_is_screenshot(tmp_path_factory, tmp_path):
    """A real smoke run of recipes/crnn_vtlp.py: its report renders, and the browser's
    screenshot stays in the run folder."""
    _chromium()
    out = str(tmp_path_factory.mktemp("crnn-report") / "run")
    assert load_recipe("crnn_vtlp").main(
        ["--folds", "1", "--variants", "oversampling,vtlp", "--max-epochs", "2",
         "--verbose", "0", "--no-export", "--out", out]) == 0
    results = json.loads(_read(os.path.join(out, "results.json")))
    check, shot = check_in_browser(out, tmp_path)
    assert check["title"] == f"{results['title']} — keras-ser report"
    assert check["rows"] == len(results["rows"]) == 2
    # Per-fold chart, confusion matrix, one training-curve figure per variant.
    assert len(check["widths"]) == 4 and all(w > 0 for w in check["widths"]), check
    _assert_screenshot(shot)
