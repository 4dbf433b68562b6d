"""recipes/sngan_synthetic.py --client: per-client fine-tuning run apart, then pooled.

The smoke corpus with the tiny budgets of tests/test_recipe_sngan.py (without the
baseline GAN and the export, which --client does not touch). Fold test-f01 trains on
f03, m02, m04; with --clients 2 its clients are 1 = f03, m02 and 2 = m04.

The scenario of two machines: client 1 runs in the pooling run's folder (pre-training
first), client 2 in another folder holding a copy of that pretrain/ folder; client 2's
two folders are copied over, then the run without --client pools them. The recipe is
deterministic on one machine, so the pooled run must equal an uninterrupted one byte
for byte (synthetic records) and exactly (results.json).
"""

import contextlib
import io
import json
import os
import shutil

import pytest
from helpers import load_recipe

TINY = ["--folds", "1", "--clients", "2", "--ae-steps", "6", "--wgan-steps", "6",
        "--ft-steps", "6", "--ser-steps", "12", "--per-class", "10", "--steps-per-epoch", "3",
        "--verbose", "0", "--no-baseline", "--no-export"]
FOLD = "test-f01"


def _client_folders(k):
    """A client's two folders, relative to the run folder."""
    return [os.path.join("folds", FOLD, f"client{k}"),
            os.path.join("folds", FOLD, "synthetic", f"client{k}")]


def _main(recipe, argv):
    """``(exit status, stdout)`` of an in-process run, echoing its output."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = recipe.main(argv)
    print(buffer.getvalue())
    return status, buffer.getvalue()


def _files(root, folders):
    """``{relative path: (size, mtime_ns)}`` of every file under ``folders``."""
    found = {}
    for folder in folders:
        for here, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                path = os.path.join(here, name)
                st = os.stat(path)
                found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sngan_clients")
    recipe = load_recipe("sngan_synthetic")
    whole, pooled, other = (str(root / n) for n in ("whole", "pooled", "other"))
    assert _main(recipe, TINY + ["--out", whole])[0] == 0
    status, client1 = _main(recipe, TINY + ["--out", pooled, "--client", "1"])
    assert status == 0
    after_client1 = [sorted(os.listdir(os.path.join(pooled, *p)))
                     for p in ((), ("folds", FOLD), ("folds", FOLD, "synthetic"))]
    # "Another machine": its own run folder with a copy of the pre-trained GAN.
    shutil.copytree(os.path.join(pooled, "pretrain"), os.path.join(other, "pretrain"))
    status, client2 = _main(recipe, TINY + ["--out", other, "--client", "2"])
    assert status == 0
    for folder in _client_folders(2):
        shutil.copytree(os.path.join(other, folder), os.path.join(pooled, folder))
    before = _files(pooled, _client_folders(1) + _client_folders(2))
    status, pool = _main(recipe, TINY + ["--out", pooled])
    assert status == 0
    return {"recipe": recipe, "whole": whole, "pooled": pooled, "other": other,
            "client1": client1, "client2": client2, "pool": pool,
            "after_client1": after_client1, "before_pool": before}


@pytest.mark.slow
def test_a_client_job_trains_only_its_client_and_says_what_runs_next(runs):
    top, fold, synthetic = runs["after_client1"]
    assert "results.json" not in top and "pretrain" in top
    assert fold == ["client1", "synthetic"]  # no centralised GAN, no SER network
    assert synthetic == ["client1"]
    assert "client 1 of fold test-f01 (f03, m02): fine-tuning" in runs["client1"]
    last = runs["client1"].strip().splitlines()[-1]
    assert last.startswith("client(s) 1 done (1 trained, 0 found finished)")
    assert "folds/test-f01/client1 + folds/test-f01/synthetic/client1" in last
    assert "without --client" in last
    # The copied pre-trained GAN was restored, not trained again.
    for stage in ("stage1_autoencoder", "stage2_wgan_gp"):
        assert f"[{stage}] finished earlier" in runs["client2"]
    assert "client 2 of fold test-f01 (m04): fine-tuning" in runs["client2"]
    assert not os.path.exists(os.path.join(runs["other"], "folds", FOLD, "client1"))


@pytest.mark.slow
def test_pooling_run_reuses_every_client_without_training_or_writing(runs):
    pool = runs["pool"]
    for k, speakers in ((1, "f03, m02"), (2, "m04")):
        assert (f"client {k} of fold test-f01 ({speakers}): finished earlier; reusing "
                f"folds/test-f01/client{k} and folds/test-f01/synthetic/client{k}") in pool
        assert f"client {k} of fold test-f01 ({speakers}): fine-tuning" not in pool
        assert f"[test-f01_client{k}]" not in pool  # not even a finished checkpoint read
    assert _files(runs["pooled"], _client_folders(1) + _client_folders(2)) == \
        runs["before_pool"]  # every file of both clients untouched (size, mtime)


@pytest.mark.slow
def test_pooled_run_equals_an_uninterrupted_one(runs):
    whole, pooled = runs["whole"], runs["pooled"]
    for k in (1, 2):
        synthetic = _client_folders(k)[1]
        names = sorted(os.listdir(os.path.join(whole, synthetic)))
        assert names == sorted(os.listdir(os.path.join(pooled, synthetic)))
        for name in names:  # byte for byte: records and synthetic.json
            assert _read(os.path.join(whole, synthetic, name)) == \
                _read(os.path.join(pooled, synthetic, name)), name
        record = os.path.join(_client_folders(k)[0], "client.json")
        assert _read(os.path.join(whole, record)) == _read(os.path.join(pooled, record))
    assert _read(os.path.join(whole, "results.json")) == _read(os.path.join(pooled,
                                                                            "results.json"))
    assert _read(os.path.join(whole, "folds", FOLD, "predictions.npz")) == _read(
        os.path.join(pooled, "folds", FOLD, "predictions.npz"))


@pytest.mark.slow
def test_a_client_made_with_other_settings_is_refused(runs, capsys):
    """A client's record must match the pooling run: here another K (per-class count)
    and other pre-trained weights (as if its machine had pre-trained on its own)."""
    changed = os.path.join(os.path.dirname(runs["other"]), "changed")
    shutil.copytree(runs["other"], changed)
    path = os.path.join(changed, _client_folders(2)[0], "client.json")
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    record["pretrained_sha256"] = "0" * 64
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    argv = TINY + ["--out", changed, "--client", "2", "--per-class", "12"]  # the last wins
    assert runs["recipe"].main(argv) == 2
    err = capsys.readouterr().err
    assert "client 2 of fold test-f01" in err and "per_class: 5 there, 6 here" in err
    assert "pretrained_sha256: '000" in err and "run client 2 again" in err


def test_out_of_range_client_exits_2_naming_the_valid_clients(tmp_path, capsys):
    recipe = load_recipe("sngan_synthetic")
    out = str(tmp_path / "run")
    assert recipe.main(TINY + ["--out", out, "--client", "1,3"]) == 2
    err = capsys.readouterr().err
    assert "--client 3 is out of range: fold test-f01 has clients 1..2 (1 = f03, m02; " \
           "2 = m04)" in err
    assert not os.path.exists(os.path.join(out, "pretrain"))  # checked before training
    assert recipe.main(TINY + ["--out", out, "--client", "two"]) == 2
    assert "--client takes client numbers" in capsys.readouterr().err
