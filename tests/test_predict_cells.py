"""Every map cell of `predict` against an independent torch computation on windows read with rasterio.

The bundle's head is fitted (least squares on backbone features) so the logit tracks a tile's excess
green with a spread of several units: probabilities span most of 0..1 and a wrong cell, a shifted or
a transposed grid shows up as a large error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import GSD, make_rgba
from pyproj import Transformer
from rasterio.windows import Window

from spurgemap.config import load_config
from spurgemap.geo.maps import write_cog
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import read_bundle
from spurgemap.model.classifier import SpurgeClassifier, model_from_bundle, save_bundle
from spurgemap.model.onnx import tile_onnx
from spurgemap.model.preprocess import Prep
from spurgemap.predict import PredictInputs, run_predict

TILE, INPUT, SIZE, COLLAR = 40, 32, 410, 50  # 410 px: the last row/column of tiles runs off the raster
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# Cells must be fully valid to be mapped here: predict fills the invalid pixels of a tile (mirrored
# from the valid ones), which this independent computation does not redo, so only whole tiles compare.
MIN_VALID = 1.0


def _excess_green(rgb: np.ndarray) -> float:
    """2g - r - b on chromatic coordinates, averaged over a (3, H, W) window."""
    x = rgb.astype(np.float64)
    s = x.sum(axis=0) + 1e-6
    r, g, b = x / s
    return float((2 * g - r - b).mean())


def _read(path: Path, row: int, col: int, size: int) -> tuple[np.ndarray, float]:
    """RGB window (3, size, size) and its valid share (alpha == 255, outside the raster invalid)."""
    with rasterio.open(path) as ds:
        win = Window(col, row, size, size)
        data = ds.read(window=win, boundless=True, fill_value=0)
    return data[:3], float((data[3] == 255).mean())


def green_bundle(path: Path, ortho: Path, x0: int = 0, tile: int = TILE, input_size: int = INPUT) -> Path:
    """A test_efficientnet bundle (with its ONNX graph) whose logit tracks excess green, +-6 units.

    The head is the least-squares fit of a scaled excess green on backbone features of windows of
    `ortho` (columns from `x0`), so probabilities span most of 0..1 across that raster.
    """
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    prep = Prep(input_size, MEAN, STD, torch.device("cpu"), channels_last=False)
    with rasterio.open(ortho) as ds:
        image = ds.read(indexes=[1, 2, 3])
    h, w = image.shape[1:]
    wins, exg = [], []
    for r in range(0, h - tile, tile // 2):
        for c in range(x0, w - tile, tile // 2):
            rgb = image[:, r:r + tile, c:c + tile]
            wins.append(rgb)
            exg.append(_excess_green(rgb))
    with torch.inference_mode():
        feats = model.backbone(prep(torch.from_numpy(np.stack(wins)))).double().numpy()
    e = np.array(exg)
    target = np.clip(6 * (e - np.median(e)) / e.std(), -6, 6)  # logits of several units either way
    design = np.hstack([feats, np.ones((len(feats), 1))])
    w_ls, *_ = np.linalg.lstsq(design, target, rcond=None)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w_ls[:-1]).float()[None])
        model.head.bias.fill_(float(w_ls[-1]))
    save_bundle(path, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": input_size, "mean": MEAN,
        "std": STD, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": tile, "gsd_m": GSD,
        "threshold": 0.5}, onnx=tile_onnx(model, tile, input_size, list(MEAN), list(STD)))
    return path


def green_ortho(path: Path, size: int, collar: int, seed: int = 5) -> Path:
    """RGBA texture with regions of different greenness and an alpha collar on the left."""
    ortho = make_rgba(path, size, size, seed=seed, collar=collar)
    with rasterio.open(ortho, "r+") as ds:
        data = ds.read().astype(np.int16)
        yy, xx = np.mgrid[:size, :size]
        boost = (np.where(xx > size / 2, 70, -50) + np.where(yy > size / 2, 40, -30)
                 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0))
        data[1] = np.clip(data[1] + boost, 0, 255)
        data[:3, :, :collar] = 0
        ds.write(data.astype(np.uint8))
    return ortho


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cells")
    ortho = green_ortho(root / "ortho.tif", SIZE, COLLAR)
    bundle = green_bundle(root / "green.spurge", ortho, COLLAR)
    return {"root": root, "ortho": ortho, "bundle": bundle}


@pytest.fixture(scope="module")
def expected(scene) -> dict[tuple[int, int], float | None]:
    """Probability of the tile whose top-left pixel is (row, col), None where any pixel is invalid."""
    model, meta = model_from_bundle(read_bundle(scene["bundle"]))
    prep = Prep(meta.input_size, meta.mean, meta.std, torch.device("cpu"), channels_last=False)
    keys, wins, out = [], [], {}
    for r in range(0, SIZE, TILE // 2):
        for c in range(0, SIZE, TILE // 2):
            rgb, valid = _read(scene["ortho"], r, c, TILE)
            if valid >= MIN_VALID:
                keys.append((r, c))
                wins.append(rgb)
            else:
                out[(r, c)] = None
    with torch.inference_mode():
        p = torch.sigmoid(model(prep(torch.from_numpy(np.stack(wins))))).double().numpy()
    out.update(dict(zip(keys, p.tolist(), strict=True)))
    return out


def _predict(scene, stride: int, name: str) -> tuple[np.ndarray, np.ndarray, Path]:
    cfg = load_config(overrides={"predict.stride_px": stride, "predict.min_valid_fraction": MIN_VALID})
    res = run_predict(cfg, PredictInputs(scene["ortho"], scene["bundle"], scene["root"] / name))
    with rasterio.open(res.files["prob"]) as ds:
        prob = ds.read(1)
    with rasterio.open(res.files["class"]) as ds:
        cls = ds.read(1)
    return prob, cls, res.files["tiles"]


@pytest.fixture(scope="module")
def one_cell_per_tile(scene) -> tuple[np.ndarray, np.ndarray, Path]:
    return _predict(scene, TILE, "s40")


def _expected_grid(expected, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Per cell: the mean probability (in %) of the tiles covering it, NaN unless all are fully valid."""
    per = TILE // stride
    grid = np.full(shape, np.nan)
    for r in range(shape[0]):
        for c in range(shape[1]):
            ps = [expected.get((tr * stride, tc * stride)) for tr in range(r - per + 1, r + 1)
                  for tc in range(c - per + 1, c + 1) if tr >= 0 and tc >= 0 and tr * stride < SIZE
                  and tc * stride < SIZE]
            if ps and all(p is not None for p in ps):
                grid[r, c] = 100 * np.mean(ps)
    return grid


def _whole_cells(ortho: Path, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Cells whose pixels are all valid (alpha 255), outside the raster counting as invalid."""
    with rasterio.open(ortho) as ds:
        alpha = ds.read(4)
    pad = np.zeros((shape[0] * stride, shape[1] * stride), bool)
    pad[:alpha.shape[0], :alpha.shape[1]] = alpha == 255
    return pad.reshape(shape[0], stride, shape[1], stride).all(axis=(1, 3))


def test_one_cell_per_tile_equals_the_independent_probability(expected, one_cell_per_tile):
    prob, cls, _ = one_cell_per_tile
    assert prob.shape == (-(-SIZE // TILE),) * 2
    want = _expected_grid(expected, TILE, prob.shape)
    inside = ~np.isnan(want)
    assert inside.sum() >= 60
    got = prob[inside].astype(float)
    assert np.abs(got - np.round(want[inside])).max() <= 1
    assert (cls[inside] == (prob[inside] >= 50)).all()
    # the map is far from constant: the check compares a wide spread of values
    assert np.percentile(got, 90) - np.percentile(got, 10) >= 50, np.percentile(got, [10, 90])
    # and it discriminates: the same comparison one cell off, or transposed, fails by a wide margin
    for wrong in (np.roll(want, 1, axis=1), np.roll(want, 1, axis=0), want.T):
        both = inside & ~np.isnan(wrong)
        assert np.abs(prob[both] - wrong[both]).max() >= 20


def test_tiles_without_enough_valid_pixels_are_nodata(scene, one_cell_per_tile):
    prob, cls, _ = one_cell_per_tile
    nodata = ~_whole_cells(scene["ortho"], TILE, prob.shape)
    # the collar columns (0..49 invalid: tile 1 is 25% valid) and the last row/column (10 of 40 px)
    assert nodata[:, :2].all() and nodata[-1].all() and nodata[:, -1].all()
    assert (prob[nodata] == 255).all() and (cls[nodata] == 255).all()
    assert (prob[~nodata] <= 100).all() and set(np.unique(cls[~nodata])) == {0, 1}


def test_half_stride_cells_average_the_tiles_covering_them(scene, expected):
    prob, _, _ = _predict(scene, TILE // 2, "s20")
    want = _expected_grid(expected, TILE // 2, prob.shape)
    inside = ~np.isnan(want)
    assert inside.sum() >= 250
    assert np.abs(prob[inside] - np.round(want[inside])).max() <= 1
    # every whole cell is mapped (those beside the collar from filled tiles), every other one is nodata
    whole = _whole_cells(scene["ortho"], TILE // 2, prob.shape)
    assert ((prob != 255) == whole).all() and (inside <= whole).all()
    # a cell is not simply the value of the tile starting on it: the average matters
    own = np.full(prob.shape, np.nan)
    for (r, c), p in expected.items():
        if p is not None and r % 20 == 0 and c % 20 == 0:
            own[r // 20, c // 20] = 100 * p
    both = inside & ~np.isnan(own)
    assert np.abs(want[both] - own[both]).max() >= 5


def test_geojson_cells_match_the_raster_under_their_centroid(one_cell_per_tile, scene):
    prob, cls, tiles = one_cell_per_tile
    feats = json.loads(tiles.read_text())["features"]
    with rasterio.open(scene["root"] / "s40" / "ortho_prob.tif") as ds:
        transform, crs = ds.transform, ds.crs
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    assert len(feats) == int((prob != 255).sum())
    seen = set()
    for f in feats:
        ring = np.array(f["geometry"]["coordinates"][0][:-1])
        x, y = to_utm.transform(ring[:, 0].mean(), ring[:, 1].mean())
        col, row = (int(np.floor(v)) for v in ~transform @ (x, y))
        seen.add((row, col))
        assert abs(100 * f["properties"]["probability"] - prob[row, col]) <= 0.5 + 1e-9
        assert f["properties"]["class"] == ("present" if cls[row, col] == 1 else "absent")
    assert len(seen) == len(feats)


def test_cog_overviews_match_an_independent_downsample(tmp_path):
    rng = np.random.default_rng(0)
    n = 2048
    coarse = rng.integers(0, 101, (n // 64, n // 64))
    prob = np.kron(coarse, np.ones((64, 64), int)).astype(np.uint8)
    prob = np.clip(prob + rng.integers(-3, 4, (n, n)), 0, 100).astype(np.uint8)
    prob[:300, :300] = 255  # a nodata corner
    # class cells flip at pixel level, so a 2x2 average and a nearest pick differ in many blocks
    cls = np.where(prob == 255, 255, prob.astype(int) + rng.integers(-20, 21, (n, n)) >= 50).astype(np.uint8)
    from affine import Affine

    t = Affine(0.56, 0, 500_000, 0, -0.56, 5_200_000)
    wkt = rasterio.crs.CRS.from_epsg(32612).to_wkt()
    write_cog(tmp_path / "p.tif", prob, t, wkt, 255, {})
    write_cog(tmp_path / "c.tif", cls, t, wkt, 255, {}, colormap={0: (0, 0, 0, 0), 1: (255, 0, 0, 255)},
              overview_resampling="nearest")

    def mean2(a: np.ndarray) -> np.ndarray:
        return a.reshape(n // 2, 2, n // 2, 2)

    for path, data in ((tmp_path / "p.tif", prob), (tmp_path / "c.tif", cls)):
        with rasterio.open(path) as ds:
            assert ds.overviews(1) and ds.overviews(1)[0] == 2
        with rasterio.open(path, overview_level=0) as ov:
            assert (ov.width, ov.height) == (n // 2, n // 2)
            got = ov.read(1).astype(float)
        if path.name == "p.tif":
            blocks = mean2(data).astype(float)
            valid = blocks != 255
            avg = np.where(valid, blocks, 0).sum(axis=(1, 3)) / np.maximum(valid.sum(axis=(1, 3)), 1)
            region = valid.all(axis=(1, 3))
            assert np.abs(got[region] - avg[region]).max() <= 1
            assert (got[~valid.any(axis=(1, 3))] == 255).all()
            assert got[region].std() > 20  # not a constant image
        else:
            assert set(np.unique(got)) <= {0, 1, 255}
            assert set(np.unique(got)) == {0, 1, 255}
            assert (got == data[::2, ::2]).all()  # GDAL's nearest takes each 2x2 block's top-left pixel
