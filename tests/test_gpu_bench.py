"""The GPU benchmark's command path, dry-run on CPU from an environment without GIS libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ["rasterio", "geopandas", "shapely", "pyproj", "pyogrio", "fiona", "osgeo",
           # declared by the hub / transformers but never imported on the suite's path: not in the wheelhouse
           "hf_xet", "kernels", "typer", "click", "shellingham", "tomlkit", "rich", "pygments", "markdown_it"]
BLOCKER = f'''import importlib.metadata
import importlib.util
import sys

BLOCK = {set(BLOCKED)!r}
_find = importlib.util.find_spec
_dist = importlib.metadata.distribution


def distribution(name):  # and no installed metadata either (version(), metadata() go through here)
    if name.replace("-", "_").lower() in BLOCK:
        raise importlib.metadata.PackageNotFoundError(name)
    return _dist(name)


importlib.metadata.distribution = distribution
importlib.metadata.version = lambda name: distribution(name).version
importlib.metadata.metadata = lambda name: distribution(name).metadata


def find_spec(name, package=None):  # "is it installed?" probes answer as on a machine without them
    return None if name.split(".")[0] in BLOCK else _find(name, package)


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError("blocked for the bare-GPU dry run: " + name, name=name)


importlib.util.find_spec = find_spec
sys.meta_path.insert(0, _Block())
'''


def test_the_gpu_command_runs_on_cpu_without_gis_libraries_and_prints_every_figure(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([sys.executable, "-c", "import rasterio"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker is live in the subprocess
    res = subprocess.run(["sh", str(ROOT / "benchmarks" / "gpu_bench.sh"), "--device", "cpu", "--tiny",
                          "--images", "2", "--steps", "6", "--dpm-steps", "5", "--token-steps", "2",
                          "--predict-tiles", "8", "--dtypes", "float32"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    for needle in ["device: cpu", "GPU: none", "reference, 1 image/call, PNDM 6, float32",
                   "ours, batch 8, float32, SDPA, channels_last", "channels_last off", "classic attention (no SDPA)",
                   "DPM-Solver++ 5", "closeness: mean |DPM++ 5 - PNDM 6|", "torch.compile", "peak VRAM",
                   "textual inversion, 1000 steps (one class):", "predict (lite0, uint8 preprocessing on cpu",
                   "tiles/s", "GPU figures: not measured"]:
        assert needle in out, (needle, out)
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr[-2000:]


def test_the_wheelhouse_holds_no_gis_library_and_no_torch():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_wheelhouse.py"), "--list"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names = {line.split("==")[0] for line in res.stdout.split()}
    assert {"diffusers", "transformers", "pydantic", "pydantic-core", "timm", "torchvision", "safetensors"} <= names
    assert not names & {"torch", "rasterio", "geopandas", "shapely", "pyproj", "pyogrio", "hf-xet", "rich"}
    assert not any(n.startswith(("nvidia-", "triton", "cuda-")) for n in names)  # torch brings those
