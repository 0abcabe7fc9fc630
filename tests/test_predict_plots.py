"""`spurgemap predict --plots` on demo data: per-plot spurge area against shapely on the class map and truth.tif."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from conftest import cli_ok
from pyproj import Proj
from rasterio.features import geometry_mask
from shapely import box, union_all

from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.onnx import tile_onnx
from spurgemap.model.preprocess import Prep

TILE, INPUT = 250, 64
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _truth_bundle(path: Path, ortho: Path, truth: Path) -> Path:
    """A bundle whose head is fitted (least squares on backbone features of the map's own tiles) to
    +-6 logits around a 2% truth share: a stand-in for a trained model that maps this site well."""
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    with rasterio.open(ortho) as ds:
        rgb = ds.read(indexes=[1, 2, 3])
    with rasterio.open(truth) as ds:
        t = ds.read(1)
    h, w = t.shape
    wins, share = [], []
    for r in range(0, h - TILE + 1, TILE):
        for c in range(0, w - TILE + 1, TILE):
            wins.append(rgb[:, r:r + TILE, c:c + TILE])
            share.append((t[r:r + TILE, c:c + TILE] == 1).mean())
    prep = Prep(INPUT, MEAN, STD, torch.device("cpu"), channels_last=False)
    with torch.inference_mode():
        feats = model.backbone(prep(torch.from_numpy(np.stack(wins)))).double().numpy()
    target = np.where(np.array(share) >= 0.02, 6.0, -6.0)
    w_ls, *_ = np.linalg.lstsq(np.hstack([feats, np.ones((len(feats), 1))]), target, rcond=None)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w_ls[:-1]).float()[None])
        model.head.bias.fill_(float(w_ls[-1]))
    save_bundle(path, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": INPUT, "mean": MEAN,
        "std": STD, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": TILE, "gsd_m": 0.014,
        "threshold": 0.5}, onnx=tile_onnx(model, TILE, INPUT, list(MEAN), list(STD)))
    return path


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plots")
    cli_ok("demo-data", root / "data", "--sites", 1, "--size", 2600, "--seed", 4)
    site = root / "data" / "sites" / "site01"
    bundle = _truth_bundle(root / "m.spurge", site / "ortho.tif", site / "truth.tif")
    cli_ok("predict", site / "ortho.tif", "--model", bundle, "--out", root / "maps",
           "--plots", root / "data" / "plots.geojson")
    return {"maps": root / "maps", "truth": site / "truth.tif", "plots": root / "data" / "plots.geojson"}


def test_per_plot_spurge_area_is_the_present_cells_inside_the_plot(mapped):
    summary = json.loads((mapped["maps"] / "ortho_summary.json").read_text())
    with rasterio.open(mapped["maps"] / "ortho_class.tif") as ds:
        cls, t, crs = ds.read(1), ds.transform, ds.crs
    rows, cols = np.nonzero(cls == 1)
    cells = [box(*(t @ (c, r + 1)), *(t @ (c + 1, r))) for r, c in zip(rows, cols, strict=True)]
    present = union_all(cells)
    plots = gpd.read_file(mapped["plots"]).to_crs(crs)
    got = {(p["site_id"], p["plot_id"]): p for p in summary["plots"]}
    assert len(got) == len(plots) == 9
    with rasterio.open(mapped["truth"]) as ds:
        truth, tt = ds.read(1), ds.transform
    # UTM map units are not ground metres: areas scale by the projection's areal scale factor here
    lon, lat = gpd.GeoSeries([plots.union_all().centroid], crs=crs).to_crs(4326).iloc[0].coords[0]
    to_ground = 1 / Proj(crs.to_wkt()).get_factors(lon, lat).areal_scale
    assert abs(to_ground - 1) > 1e-4  # the factor matters at this precision
    hit_areas, truth_shares, shares = [], [], []
    for _, plot in plots.iterrows():
        p = got[(str(plot.site_id), str(plot.plot_id))]
        assert p["plot_area_m2"] == pytest.approx(plot.geometry.area * to_ground, abs=2e-3)
        hit = plot.geometry.intersection(present).area * to_ground
        assert p["spurge_area_m2"] == pytest.approx(hit, abs=2e-3)
        inside = geometry_mask([plot.geometry], truth.shape, tt, invert=True)
        truth_shares.append(float((truth[inside] == 1).mean()))
        shares.append(p["spurge_share"])
        hit_areas.append(p["spurge_area_m2"])
    hit_areas = np.array(hit_areas)
    assert (hit_areas > 0).sum() >= 2 and (hit_areas < 0.5 * 100).sum() >= 2, hit_areas  # plots differ
    r = np.corrcoef(shares, truth_shares)[0, 1]
    print("per-plot mapped share vs truth share:", np.round(shares, 3), np.round(truth_shares, 3), f"r={r:.2f}")
    assert r >= 0.6
