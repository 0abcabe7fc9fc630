"""Damaged inputs give one line naming the file: no raw GDAL lines, no traceback, no misleading 'no CRS'."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fieldwork_maps import make_pct, write_maps
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
HOW = ("truncated", "garbage", "metadata")  # cut in half; garbage image directory; non-UTF-8 tag bytes


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "spurgemap.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)


def _damage(good: Path, bad: Path, how: str) -> Path:
    data = good.read_bytes()
    if how == "truncated":
        bad.write_bytes(data[:len(data) // 2])
    elif how == "metadata":  # bytes that are not UTF-8 in GDAL's XML tags (rasterio used to print a traceback)
        at = data.find(b'<Item name="created"')
        assert at > 0
        junk = b"<\xff\xfe\xfd>" + b"\x80" * 30
        bad.write_bytes(data[:at] + junk + data[at + len(junk):])
    else:  # the header kept its TIFF magic, the first image directory (where bytes 4-8 point) is garbage
        ifd = int.from_bytes(data[4:8], "little")
        junk = np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8).tobytes()
        bad.write_bytes(data[:ifd] + junk + data[ifd + len(junk):])
    return bad


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """A real tiled, compressed RGB GeoTIFF, its damaged copies, map folders (intact and damaged), a bundle."""
    root = tmp_path_factory.mktemp("damaged")
    good = root / "ortho.tif"
    with rasterio.open(good, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint8",
                       crs="EPSG:32612", transform=from_origin(500_000, 5_200_000, 0.014, 0.014), tiled=True,
                       compress="deflate") as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 600, 600), dtype=np.uint8))
        dst.update_tags(created="2024-06-01T00:00:00Z", software="drone")
    ok = write_maps(root / "maps_ok", make_pct())
    for how in HOW:
        _damage(good, root / f"{how}.tif", how)
        (root / f"maps_{how}").mkdir()
        for name in ("site_prob.tif", "site_class.tif"):
            _damage(ok / name, root / f"maps_{how}" / name, how)
    (root / "plots.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    import torch

    from spurgemap.model.backbones import create_backbone
    from spurgemap.model.classifier import SpurgeClassifier, save_bundle

    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    save_bundle(root / "m.spurge", SpurgeClassifier(backbone, spec.num_features).eval(), {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 100, "gsd_m": 0.014,
        "threshold": 0.5})
    (root / "run").mkdir()
    return root


def _one_clean_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for bad in ("CPLE_", "Traceback", "UnicodeDecodeError", "has no CRS", "unexpected error",
                "previous exception"):
        assert bad not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


COMMANDS = {
    "info": lambda f: ["info", f"{f}.tif"],
    "tile": lambda f: ["tile", f"{f}.tif", "--plots", "plots.geojson", "--out", "out"],
    "predict": lambda f: ["predict", f"{f}.tif", "--model", "m.spurge", "--out", "out"],
    "zones": lambda f: ["zones", f"maps_{f}", "--out", "out"],
    "survey-plan": lambda f: ["survey-plan", f"maps_{f}", "--out", "out"],
    "change": lambda f: ["change", "maps_ok", f"maps_{f}", "--out", "out"],
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_damaged_geotiff_is_one_line(field: Path, command: str, how: str) -> None:
    proc = _cli(*COMMANDS[command](how), cwd=field)
    bad = f"maps_{how}/site_prob.tif" if command in ("zones", "survey-plan", "change") else f"{how}.tif"
    _one_clean_line(proc, f"spurgemap: error: {bad}: ")
    assert not (field / "out").exists() and not list(field.glob(".out.*"))


def test_a_folder_given_as_the_model_is_one_line(field: Path) -> None:
    line = _one_clean_line(_cli("predict", "ortho.tif", "--model", "run", "--out", "out", cwd=field),
                           "run: is a folder, not a model bundle")
    assert "IsADirectoryError" not in line
    _one_clean_line(_cli("predict", "ortho.tif", "truncated.tif", "--model", "run", "--out", "out", cwd=field),
                    "--model run: is a folder, not a model bundle")  # a campaign


def test_export_of_a_folder_is_one_line(field: Path) -> None:
    from typer.testing import CliRunner

    from spurgemap.cli.app import app

    res = CliRunner().invoke(app, ["export", str(field / "run"), "--onnx", str(field / "m.onnx")])
    assert res.exit_code == 2 and res.stderr.strip().endswith("run: is a folder, not a model bundle; give the "
                                                             "model.spurge file that `spurgemap train` wrote")
    assert not (field / "m.onnx").exists()


def test_the_guard_restores_what_it_borrows(field: Path) -> None:
    import logging
    import threading

    from spurgemap.core.errors import InputError
    from spurgemap.geo.damage import damage_guard
    from spurgemap.geo.raster import open_ortho

    logger = logging.getLogger("rasterio")
    hooks = (sys.excepthook, sys.unraisablehook, logger.propagate, list(logger.handlers))
    with pytest.raises(InputError, match="damaged or truncated file"):
        open_ortho(field / "metadata.tif", 1)
    assert open_ortho(field / "ortho.tif", 1).width == 600
    assert (sys.excepthook, sys.unraisablehook, logger.propagate, list(logger.handlers)) == hooks
    seen: list[object] = []

    def worker() -> None:  # in a worker thread the guard changes nothing process-wide
        with damage_guard(field / "ortho.tif"):
            seen.append((sys.excepthook, logger.propagate))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(hooks[0], hooks[2])]
