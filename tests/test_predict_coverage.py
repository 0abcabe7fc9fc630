"""Predict coverage (collar and border cells are mapped) and the confidence layer, checked on values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import cli_ok

from spurgemap.config import load_config
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import read_bundle
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.onnx import tile_onnx
from spurgemap.model.preprocess import d4_numpy
from spurgemap.predict import PredictInputs, run_predict
from spurgemap.predict.infer import make_predictor
from spurgemap.predict.mapset import read_map
from spurgemap.predict.stream import fill_invalid

TILE = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """One demo site (its collar is irregular) and a small random model with a graph, outputs spread."""
    root = tmp_path_factory.mktemp("cov")
    cli_ok("demo-data", root / "data", "--sites", 1, "--size", 2600, "--seed", 5)
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    with rasterio.open(root / "data" / "sites" / "site01" / "ortho.tif") as ds:
        rgb = ds.read((1, 2, 3), window=((1000, 1600), (1000, 1600)))
    with torch.no_grad():  # a head along the features' first principal axis: outputs spread over 0..1
        x = torch.from_numpy(rgb).float().div(255).unfold(1, 64, 64).unfold(2, 64, 64)
        x = x.permute(1, 2, 0, 3, 4).reshape(-1, 3, 64, 64).sub(0.5).div(0.5)
        f = model.backbone(x)
        centred = f - f.mean(0)
        axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        gain = 2.5 / (centred @ axis).std()
        model.head.weight.copy_(gain * axis[None])
        model.head.bias.fill_(float(-(gain * f.mean(0) @ axis)))
    mean, std = [0.5] * 3, [0.5] * 3
    bundle = root / "tiny.spurge"
    save_bundle(bundle, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": mean,
        "std": std, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": TILE, "gsd_m": 0.014,
        "threshold": 0.45}, onnx=tile_onnx(model, TILE, 64, mean, std))
    return {"root": root, "ortho": root / "data" / "sites" / "site01" / "ortho.tif", "bundle": bundle}


def _cell_share(ortho: Path, cell: int) -> np.ndarray:
    with rasterio.open(ortho) as ds:
        valid = ds.read(4) > 0
    h, w = valid.shape
    pad = np.pad(valid.astype(float), ((0, -h % cell), (0, -w % cell)))  # outside the raster: invalid
    return pad.reshape(pad.shape[0] // cell, cell, pad.shape[1] // cell, cell).mean(axis=(1, 3))


def test_fill_mirrors_the_valid_image_across_the_collar_edge() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (3, 12, 12), dtype=np.uint8)  # channels first, as predict's tiles
    valid = np.zeros((12, 12), bool)
    valid[:, 4:] = True  # a straight collar of 4 columns on the left
    out = fill_invalid(px, valid)
    assert out.shape == px.shape and np.array_equal(out[:, :, 4:], px[:, :, 4:])
    for j in range(4):  # column j mirrors column 2 * 4 - j
        assert np.array_equal(out[:, :, j], px[:, :, 8 - j])
    ragged = rng.random((12, 12)) > 0.6  # scattered valid pixels: mirror or nearest, always real values
    got = fill_invalid(px, ragged)
    assert np.array_equal(got[:, ragged], px[:, ragged])
    pool = {tuple(v) for v in px[:, ragged].T}
    assert all(tuple(v) in pool for v in got[:, ~ragged].T)
    assert fill_invalid(px, np.ones((12, 12), bool)) is px


@pytest.fixture(scope="module")
def mapped(site) -> dict:
    cfg = load_config(overrides={"predict.low_confidence": 30})
    out = site["root"] / "maps"
    res = run_predict(cfg, PredictInputs(site["ortho"], site["bundle"], out))
    return {"res": res, "out": out}


def test_every_cell_with_half_its_pixels_valid_is_mapped_outer_ring_included(site, mapped):
    with rasterio.open(mapped["res"].files["prob"]) as ds:
        prob = ds.read(1)
    share = _cell_share(site["ortho"], TILE)
    expected = share >= 0.5
    assert prob.shape == share.shape
    assert np.array_equal(prob != 255, expected)
    ring = np.ones_like(expected)
    ring[1:-1, 1:-1] = False
    assert (expected & ring).sum() >= 8 and ((share > 0) & (share < 0.5)).any()  # a real, ragged collar
    assert (prob[ring & expected] != 255).all()
    # within one cell of the orthomosaic's valid area: unmapped cells hold under half a cell of valid pixels
    assert share[prob == 255].max() < 0.5 and share[prob != 255].min() >= 0.5


def test_confidence_layer_summary_and_fieldwork_agree_with_the_formula(site, mapped):
    files, summary = mapped["res"].files, mapped["res"].summary
    with rasterio.open(files["prob"]) as ds:
        pct = ds.read(1)
    with rasterio.open(files["confidence"]) as ds:
        conf, nodata, count = ds.read(1), ds.nodata, ds.count
    t = 0.45
    p = pct / 100
    want = np.where(p < t, (t - p) / t, (p - t) / (1 - t)) * 100
    mapped_cells = pct != 255
    assert nodata == 255 and count == 1 and np.array_equal(conf == 255, ~mapped_cells)
    assert np.abs(conf[mapped_cells] - want[mapped_cells]).max() <= 0.5 + 1e-9
    assert conf[mapped_cells].min() < 30 < conf[mapped_cells].max()  # the model's outputs do vary
    share = _cell_share(site["ortho"], TILE)
    low = mapped_cells & (conf < 30)
    assert summary.low_confidence_below == 30
    assert summary.low_confidence_share == pytest.approx((share * low).sum() / (share * mapped_cells).sum(),
                                                            abs=1e-4)
    assert json.loads(files["summary_json"].read_text())["low_confidence_share"] == summary.low_confidence_share
    assert (mapped["out"] / "ortho_confidence.qml").read_text().startswith("<!DOCTYPE qgis")
    layers = read_map(mapped["out"])  # the field work commands read the file, and it matches their formula
    assert layers.conf is not None and np.array_equal(layers.conf, conf)
    from spurgemap.fieldwork.survey_plan import confidence

    assert np.array_equal(confidence(layers.pct, layers.threshold), conf)


def test_tta_adds_the_spread_of_the_eight_views_as_band_two(site, tmp_path):
    cfg = load_config(overrides={"predict.tta": True})
    res = run_predict(cfg, PredictInputs(site["ortho"], site["bundle"], tmp_path / "m"))
    with rasterio.open(res.files["confidence"]) as ds:
        conf, spread = ds.read(1), ds.read(2)
    assert np.array_equal(spread == 255, conf == 255)
    predict, _ = make_predictor(read_bundle(site["bundle"]), load_config().predict, TILE)
    with rasterio.open(site["ortho"]) as ds:
        cells = [(5, 5), (4, 6), (6, 3)]  # interior cells: fully valid tiles
        tiles = np.stack([ds.read((1, 2, 3), window=((r * TILE, (r + 1) * TILE), (c * TILE, (c + 1) * TILE)))
                          for r, c in cells])
    views = np.stack([predict(d4_numpy(tiles, k, axes=(2, 3)))[:, 0] for k in range(8)], axis=1)
    want = np.rint((views.max(axis=1) - views.min(axis=1)) * 100)
    got = np.array([spread[r, c] for r, c in cells])
    assert np.abs(got - want).max() <= 1 and want.max() >= 1
