"""`predict` applies the bundle's context step and calibration (issue 22), identically in any block size."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from conftest import cli_ok, make_rgba
from scipy.ndimage import convolve

from spurgemap.model import calibration as cal
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, save_bundle

LAM, A, B, THRESHOLD = 0.6, 1.7, 0.4, 0.55


def _bundle(path: Path, **extra: object) -> Path:
    torch.manual_seed(3)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    with torch.no_grad():  # a head whose outputs vary across the raster, so misplacement shows
        model.head.weight.mul_(1500.0)
    save_bundle(path, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 100, "gsd_m": 0.014,
        "threshold": THRESHOLD, **extra})
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ctx")
    ortho = make_rgba(root / "ortho.tif", h=1050, w=930, seed=4)
    plain = _bundle(root / "plain.spurge")
    ctx = _bundle(root / "ctx.spurge", context={"lambda": LAM}, calibration={"method": "platt", "a": A, "b": B},
                  operating_point="recall=0.9", tile_threshold=0.42)
    cli_ok("predict", ortho, "--model", plain, "--out", root / "plain")
    cli_ok("predict", ortho, "--model", ctx, "--out", root / "ctx")
    return {"root": root, "ortho": ortho, "ctx_bundle": ctx}


def _cells(folder: Path) -> np.ndarray:
    """Cell probabilities (4 decimals) from the GeoJSON, on the map grid (NaN: not mapped)."""
    with rasterio.open(folder / "ortho_prob.tif") as ds:
        shape = ds.shape
    df = gpd.read_file(folder / "ortho_tiles.geojson")
    grid = np.full(shape, np.nan)
    grid[df["row"].to_numpy(), df["col"].to_numpy()] = df["probability"].to_numpy()
    return grid


def test_context_and_platt_on_the_map_equal_an_independent_computation(maps):
    raw, out = _cells(maps["root"] / "plain"), _cells(maps["root"] / "ctx")
    assert np.nanstd(raw) > 0.05  # the model's outputs vary over the raster
    z = cal.logit(raw)
    ok = np.isfinite(z)
    k = np.ones((3, 3))
    k[1, 1] = 0
    m = convolve(np.where(ok, z, 0), k, mode="constant") / np.maximum(convolve(ok * 1.0, k, mode="constant"), 1)
    expect = 1 / (1 + np.exp(-(A * ((1 - LAM) * z + LAM * m) + B)))
    np.testing.assert_array_equal(np.isfinite(out), ok)
    # raw is rounded to 4 decimals in the GeoJSON; the map used the unrounded probabilities
    np.testing.assert_allclose(out[ok], expect[ok], atol=2e-3)
    assert np.abs(out[ok] - raw[ok]).max() > 0.05  # the step did something
    with rasterio.open(maps["root"] / "ctx" / "ortho_class.tif") as ds:
        cls, tags = ds.read(1), ds.tags()
    np.testing.assert_array_equal(cls[ok], (out[ok] >= THRESHOLD).astype(np.uint8))
    assert tags["context_lambda"] == "0.6" and tags["calibration"] == "platt"
    assert tags["operating_point"] == "recall=0.9" and float(tags["threshold"]) == THRESHOLD
    summary = json.loads((maps["root"] / "ctx" / "ortho_summary.json").read_text())
    assert summary["context_lambda"] == LAM and summary["calibration"] == "platt"
    plain = json.loads((maps["root"] / "plain" / "ortho_summary.json").read_text())
    assert plain["context_lambda"] == 0 and plain["calibration"] == "none"


def test_map_does_not_depend_on_the_context_block_size(maps, tmp_path, monkeypatch):
    import spurgemap.predict.outputs as outputs

    monkeypatch.setattr(outputs, "map_probability", functools.partial(cal.map_probability, block_rows=1))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    cli_ok("predict", maps["ortho"], "--model", maps["ctx_bundle"], "--out", tmp_path / "one")
    monkeypatch.setattr(outputs, "map_probability", functools.partial(cal.map_probability, block_rows=3))
    cli_ok("predict", maps["ortho"], "--model", maps["ctx_bundle"], "--out", tmp_path / "three")
    for name in ("ortho_prob.tif", "ortho_class.tif"):
        with rasterio.open(tmp_path / "one" / name) as a, rasterio.open(tmp_path / "three" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    np.testing.assert_array_equal(_cells(tmp_path / "one"), _cells(maps["root"] / "ctx"))


def test_deepness_export_gets_the_per_tile_threshold_and_says_what_predict_adds(maps, tmp_path):
    import onnx

    cli_ok("export", maps["ctx_bundle"], "--onnx", tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["threshold"]) == 0.42 and json.loads(meta["map_threshold"]) == THRESHOLD
    assert "neighbours" in json.loads(meta["map_postprocessing"])
