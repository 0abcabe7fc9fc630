"""Separate Dask scheduler/worker processes (the CLIs), and `accelerate launch --cpu` for augment:
each compared with the single-process outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from affine import Affine
from conftest import cli_ok, make_rgba, make_tile_set, square, write_plots
from PIL import Image
from safetensors.torch import save_file
from test_campaign import write_bundle

from spurgemap.augment.tiny import write_tiny_model
from spurgemap.campaign.grid import run_evaluate_distributed
from spurgemap.config import load_config
from spurgemap.evaluate import EvaluateInputs, run_evaluate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "SOURCE_DATE_EPOCH": "1790000000"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, killed at the end."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0", "--no-show"],
                              env=ENV, stdout=(logs / "s.log").open("w"), stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1", "--name", str(i),
             "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(logs / f"w{i}")],
            env=ENV, stdout=(logs / f"w{i}.log").open("w"), stderr=subprocess.STDOUT))
    try:
        from distributed import Client

        deadline = time.time() + 90
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=max(1, deadline - time.time()))
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_predict_and_tile_on_a_scheduler_equal_the_in_process_runs(scheduler, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    orthos = [make_rgba(tmp_path / f"site{i}.tif", 600, 800, seed=i) for i in range(2)]
    bundle = write_bundle(tmp_path / "model.spurge", 0.5)
    res = cli_ok("predict", *orthos, "--model", bundle, "--out", tmp_path / "maps", "--scheduler", scheduler)
    assert "2 of 2 mapped" in res.output
    for o in orthos:
        cli_ok("predict", o, "--model", bundle, "--out", tmp_path / "alone" / o.stem)
        for name in ("prob", "class"):
            a = (tmp_path / "maps" / o.stem / f"{o.stem}_{name}.tif").read_bytes()
            assert a == (tmp_path / "alone" / o.stem / f"{o.stem}_{name}.tif").read_bytes()
        assert ((tmp_path / "maps" / o.stem / f"{o.stem}_tiles.geojson").read_text()
                == (tmp_path / "alone" / o.stem / f"{o.stem}_tiles.geojson").read_text())
    summary = pd.read_csv(tmp_path / "maps" / "campaign_summary.csv")
    alone = [json.loads((tmp_path / "alone" / o.stem / f"{o.stem}_summary.json").read_text()) for o in orthos]
    assert list(summary.status) == ["ok", "ok"]
    assert list(summary.tiles_predicted) == [s["tiles_predicted"] for s in alone] and summary.tiles_predicted.min() > 0

    # tile: a second pair of orthomosaics 20 m apart, two plots on each (one rotated)
    (tmp_path / "tiling").mkdir()
    tile_orthos = [make_rgba(tmp_path / "tiling" / f"site{i}.tif", 600, 800, seed=i,
                             transform=Affine(0.014, 0, 500_000 + 20 * i, 0, -0.014, 5_200_000)) for i in range(2)]
    write_plots(tmp_path / "plots.geojson", [
        {"site_id": f"site{i}", "plot_id": f"p{j}", "presence": (i + j) % 2,
         "geometry": square(500_000 + 20 * i + 2.5 + 4 * j, 5_200_000 - 3.5, 3.6, 20.0 * j)}
        for i in range(2) for j in range(2)])
    orthos = tile_orthos
    cli_ok("tile", *orthos, "--plots", tmp_path / "plots.geojson", "--out", tmp_path / "t1")
    cli_ok("tile", *orthos, "--plots", tmp_path / "plots.geojson", "--out", tmp_path / "t2", "--scheduler", scheduler)
    a, b = (gpd.read_file(tmp_path / t / "tiles.gpkg") for t in ("t1", "t2"))
    assert len(a) == 4 and set(a.site_id) == {"site0", "site1"} and set(a.rotation_deg.round()) == {0, 20}
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b))
    for rel in a.path:
        assert (tmp_path / "t1" / rel).read_bytes() == (tmp_path / "t2" / rel).read_bytes()


def test_evaluate_cells_on_the_scheduler_equal_the_sequential_grid(scheduler, tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    tiles = make_tile_set(tmp_path / "tiles", sites=3, per_class=3)
    cfg = load_config(overrides={
        "train.backbone": "test_efficientnet", "train.weights": str(weights), "train.input_size": 64,
        "train.epochs": 2, "train.batch_size": 8, "evaluate.methods": ["baseline", "randaugment"],
        "evaluate.shots": [1], "evaluate.seeds": [0, 1]})
    seq = run_evaluate(cfg, EvaluateInputs(tiles, tmp_path / "seq"))
    dist = run_evaluate_distributed(cfg, EvaluateInputs(tiles, tmp_path / "dist"), scheduler=scheduler)
    assert seq.trained == 4 and dist.trained == 0  # every cell was made by the workers
    assert (tmp_path / "seq" / "results.csv").read_bytes() == (tmp_path / "dist" / "results.csv").read_bytes()


def test_accelerate_two_cpu_processes_make_the_single_process_set(tmp_path):
    """`accelerate launch --multi_gpu` starts torchrun processes; without CUDA they run on CPU over gloo.

    (`--cpu --num_processes 2` needs mpirun: without it accelerate starts one process.) Both runs
    use one thread per process: float sums depend on the thread count, not on the split.
    """
    tiny = write_tiny_model(tmp_path / "tiny-sd")
    tiles = make_tile_set(tmp_path / "tiles", sites=2, per_class=2)
    args = ["augment", "run", str(tiles), "--model", str(tiny), "--num-synthetic", "2", "--steps", "5",
            "--strengths", "1.0", "--token-steps", "1", "--batch-size", "2", "--shots", "1", "--method", "dafusion"]
    env = {**ENV, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one = subprocess.run([sys.executable, "-m", "spurgemap.cli", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=400)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                          "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no",
                          "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "spurgemap.cli",
                          *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes (accelerate)" in two.stdout
    assert two.stderr.count("learned <no_spurge>") == 1  # tokens learned once, by rank 0
    m1, m2 = (pd.read_csv(tmp_path / d / "manifest.csv") for d in ("one", "two"))
    assert len(m1) == 4
    pd.testing.assert_frame_equal(m1, m2)
    for p in m1.path:
        with Image.open(tmp_path / "one" / p) as x, Image.open(tmp_path / "two" / p) as y:
            assert np.array_equal(np.asarray(x), np.asarray(y))
    assert not (tmp_path / "two" / ".work").exists()
