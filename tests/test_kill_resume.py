"""A real SIGKILL mid-run, then the same command again: the result equals an uninterrupted run's.

Each stage runs as `python -m spurgemap.cli ...` in a subprocess. The test waits for the stage's own
checkpoint in OUT/.work (or a finished grid cell for evaluate), kills the process with SIGKILL while
it is still running and before its outputs exist, re-runs the command, and compares every output
with a reference run made without interruption.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tile_set
from test_predict_cells import green_bundle, green_ortho

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "SOURCE_DATE_EPOCH": "1790000000",
       "OMP_NUM_THREADS": "1"}  # one thread: the test machine's cores are shared
TIMING = {"seconds", "tiles_per_second", "hectares_per_hour", "images_per_second"}


def _cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "spurgemap.cli", *map(str, args)]


def _run(*args: object) -> None:
    proc = subprocess.run(_cmd(*args), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _kill_when(args: tuple[object, ...], ready: Callable[[], bool], timeout: float = 120) -> None:
    """Start the command, SIGKILL it as soon as `ready()`; insist it was still running then."""
    proc = subprocess.Popen(_cmd(*args), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"finished before its checkpoint: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _without_timing(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def _json(path: Path) -> object:
    return _without_timing(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ksd") / "tiny-sd"
    _run("augment", "tiny-model", out)  # the CLI's own tiny model, loaded by augment and evaluate below
    return out


def test_predict_killed_mid_run_resumes_byte_identical(tmp_path):
    ortho = green_ortho(tmp_path / "ortho.tif", 1000, 60)
    green_bundle(tmp_path / "m.spurge", ortho, 60)  # probabilities that vary across the map
    args = ("predict", ortho, "--model", tmp_path / "m.spurge", "--stride", 20, "--set", "predict.checkpoint_every=1",
            "--set", "predict.batch_size=8")
    _run(*args, "--out", tmp_path / "ref")
    state = tmp_path / "run" / ".work" / "state.npz"
    _kill_when((*args, "--out", tmp_path / "run"), state.exists)
    assert not (tmp_path / "run" / "ortho_prob.tif").exists()
    with np.load(state) as z:
        done = int(z["done"])
    assert 0 < done < 49 * 49  # killed part-way through the 49 x 49 tile positions
    _run(*args, "--out", tmp_path / "run")
    assert not (tmp_path / "run" / ".work").exists()
    ref = {p.name for p in (tmp_path / "ref").iterdir()}
    assert ref == {p.name for p in (tmp_path / "run").iterdir()}
    for name in sorted(ref):
        a, b = tmp_path / "ref" / name, tmp_path / "run" / name
        if name.endswith("_summary.json"):
            assert _json(a) == _json(b)
        elif name.endswith("_summary.csv") or name.endswith(".tif") or name.endswith(".geojson") \
                or name.endswith(".gpkg") or name.endswith(".png"):
            assert a.read_bytes() == b.read_bytes(), name
    import rasterio

    with rasterio.open(tmp_path / "ref" / "ortho_prob.tif") as ds:
        prob = ds.read(1)
    valid = prob[prob != 255]
    assert valid.std() > 5  # a map worth comparing


def test_train_killed_mid_run_resumes_to_the_same_model(tmp_path, tiny_weights):
    tiles = make_tile_set(tmp_path / "tiles", sites=3, per_class=5)
    args = ("train", tiles, "--backbone", "test_efficientnet", "--weights", tiny_weights, "--mode", "finetune",
            "--epochs", 4, "--set", "train.input_size=64", "--set", "train.batch_size=16", "--set", "train.lr=0.01")
    _run(*args, "--out", tmp_path / "ref")
    ckpt = tmp_path / "run" / ".work" / "checkpoint.pt"
    _kill_when((*args, "--out", tmp_path / "run"), ckpt.exists)
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model.spurge").exists()
    saved = torch.load(ckpt, weights_only=True)  # never unpickle: the checkpoint holds tensors and plain data
    assert (saved["phase"], saved["epoch"]) < (3, 0)  # 3 folds then a final fit: killed in a fold
    _run(*args, "--out", tmp_path / "run")
    ref, run = _json(tmp_path / "ref" / "metrics.json"), _json(tmp_path / "run" / "metrics.json")
    assert ref == run
    assert len(ref["history"]) == 3 and all(len(h) == 4 for h in ref["history"])
    assert (tmp_path / "ref" / "model.spurge").read_bytes() == (tmp_path / "run" / "model.spurge").read_bytes()


def _rows_written(path: Path) -> bool:
    return path.exists() and len(path.read_text().strip().splitlines()) >= 2  # a header and a row


def test_augment_killed_mid_run_resumes_without_duplicates(tmp_path, tiny_sd):
    tiles = make_tile_set(tmp_path / "tiles", sites=2, per_class=3)
    # real-guidance needs no token learning (the slow part on a CPU); 6 tiles x 2 images, 2 per batch
    args = ("augment", tiles, "--model", tiny_sd, "--method", "real-guidance", "--num-synthetic", 2,
            "--steps", 10, "--batch-size", 2, "--sites", "s0")
    _run(*args, "--out", tmp_path / "ref")
    rows = tmp_path / "run" / ".work" / "rows.csv"
    _kill_when((*args, "--out", tmp_path / "run"), lambda: _rows_written(rows))
    assert not (tmp_path / "run" / "manifest.csv").exists()
    made = len(rows.read_text().strip().splitlines()) - 1
    ref = pd.read_csv(tmp_path / "ref" / "manifest.csv", dtype=str)
    assert 0 < made < len(ref) == 12
    _run(*args, "--out", tmp_path / "run")
    run = pd.read_csv(tmp_path / "run" / "manifest.csv", dtype=str)
    key = ["source_tile_id", "j"]
    pd.testing.assert_frame_equal(ref.sort_values(key).reset_index(drop=True),
                                  run.sort_values(key).reset_index(drop=True))
    assert not run.duplicated(key).any()
    for p in ref.path:
        assert (tmp_path / "ref" / p).read_bytes() == (tmp_path / "run" / p).read_bytes(), p
    assert _json(tmp_path / "ref" / "summary.json") == {**_json(tmp_path / "run" / "summary.json"),
                                                       "generated_this_run": len(ref)}


def test_evaluate_killed_mid_grid_resumes_and_caches(tmp_path, tiny_weights, tiny_sd):
    tiles = make_tile_set(tmp_path / "tiles", sites=3, per_class=4)
    args = ("evaluate", tiles, "--config", ROOT / "configs" / "evaluate-cpu.yaml", "--diffusion-model", tiny_sd,
            "--methods", "baseline,real-guidance", "--shots", "1", "--seeds", "0,1",
            "--set", "train.backbone=test_efficientnet", "--set", f"train.weights={tiny_weights}",
            "--set", "train.input_size=64", "--set", "train.epochs=2", "--set", "train.batch_size=8",
            "--set", "augment.num_synthetic=2", "--set", "augment.steps=10")
    _run(*args, "--out", tmp_path / "ref")
    res = pd.read_csv(tmp_path / "ref" / "results.csv")
    assert list(res.columns) == ["method", "k", "seed", "split", "metric", "value", "randaugment"]
    cells = {(m, 1, s) for m in ("baseline", "real-guidance") for s in (0, 1)}
    assert set(res[["method", "k", "seed"]].itertuples(index=False, name=None)) == cells
    assert set(res.split) == {"validation", "test"}
    per_cell = res.groupby(["method", "k", "seed", "split"]).metric.apply(sorted)
    assert per_cell.map(tuple).nunique() == 1 and "balanced_accuracy" in per_cell.iloc[0]
    ba = res[res.metric == "balanced_accuracy"].value
    assert ba.notna().all() and ba.between(0, 1).all() and ba.nunique() > 1
    # a finished grid cell, then SIGKILL while later cells are still training
    runs = tmp_path / "run" / "runs"
    _kill_when((*args, "--out", tmp_path / "run"), lambda: any(runs.glob("**/metrics.json")))
    assert not (tmp_path / "run" / "results.csv").exists()
    finished = list(runs.glob("**/train/metrics.json"))
    assert 1 <= len(finished) < len(cells)
    _run(*args, "--out", tmp_path / "run")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "results.csv"), res)
    for m in (tmp_path / "ref" / "runs").glob("**/train/metrics.json"):
        twin = tmp_path / "run" / m.relative_to(tmp_path / "ref")
        assert _json(m) == _json(twin), m
    # a second run over the finished folder trains nothing and writes the same table
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ref" / "runs").glob("**/metrics.json")}
    _run(*args, "--out", tmp_path / "ref")
    assert {p: p.stat().st_mtime_ns for p in before} == before
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref" / "results.csv"), res)
