"""The survey loop the README promises: predict -> survey-plan on two sites -> crew fills in presence
-> `tile --plots visits.csv` keeps every visit -> `train` runs on the result."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import (
    GSD,
    ORIGIN,
    cli_ok,
    square,
    write_plots,
    write_raster,
)
from rasterio.enums import ColorInterp

TINY = ("--set", "train.backbone=test_efficientnet", "--set", "train.input_size=64", "--epochs", 2)
PX = 2000  # 28 m at 1.4 cm/px: 8 x 8 map cells of 250 px (3.5 m)


def drone_ortho(path: Path, seed: int) -> Path:
    """An RGBA orthomosaic with a ragged transparent edge, as OpenDroneMap writes them: the edge cells
    are mapped by predict but hold 10-90 % valid pixels."""
    rows, cols = np.mgrid[0:PX, 0:PX]
    edge = 180 + 120 * np.sin(rows / 170.0 + seed)
    alpha = ((cols > edge) & (rows + cols > 700) & (cols < PX - 60 - 90 * np.cos(rows / 230.0))) * 255
    rgb = np.random.default_rng(seed).integers(30, 220, (3, PX, PX), dtype=np.uint8)  # cheap to make
    path.parent.mkdir(parents=True)
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return write_raster(path, np.concatenate([rgb, alpha[None].astype(np.uint8)]), colorinterp=interp,
                        tiled=True, blockxsize=256, blockysize=256, transform=__import__("affine").Affine(
                            GSD, 0, ORIGIN[0] + seed * 100, 0, -GSD, ORIGIN[1]))


def tiny_bundle(path: Path) -> Path:
    import torch

    from spurgemap.model.backbones import create_backbone
    from spurgemap.model.classifier import SpurgeClassifier, save_bundle

    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    save_bundle(path, SpurgeClassifier(backbone, spec.num_features).eval(), {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 250, "gsd_m": GSD,
        "threshold": 0.5})
    return path


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("loop")
    orthos = [drone_ortho(root / "sites" / f"S0{s}" / "ortho.tif", s) for s in (1, 2)]
    model = tiny_bundle(root / "model.spurge")
    plans = []
    for s, ortho in enumerate(orthos, start=1):
        x0 = ORIGIN[0] + s * 100
        # last season's surveyed plot (left out of the plan); its site id is the botanists' own
        plots = write_plots(root / f"plots{s}.geojson", [{"site_id": f"S0{s}", "plot_id": "P1",
                                                           "geometry": square(x0 + 14, ORIGIN[1] - 14, 5)}])
        cli_ok("predict", ortho, "--model", model, "--out", root / "maps" / f"S0{s}")
        cli_ok("survey-plan", root / "maps" / f"S0{s}", "--n", 12, "--min-spacing", 4, "--plots", plots,
               "--out", root / "plan" / f"S0{s}")
        plans.append(root / "plan" / f"S0{s}")
    return {"root": root, "orthos": orthos, "plans": plans}


def test_two_sites_plans_tile_back_without_loss_and_train(loop, tiny_weights):
    root: Path = loop["root"]  # type: ignore[assignment]
    tables = [pd.read_csv(p / "visits.csv", dtype=str, keep_default_na=False) for p in loop["plans"]]
    # the site's real id (as the plots and the site folder name it), not the map's file stem "ortho"
    assert [sorted(set(t.site_id)) for t in tables] == [["S01"], ["S02"]]
    for t in tables:
        assert list(t.plot_id) == [f"{t.site_id[0]}-V{i:02d}" for i in range(1, len(t) + 1)]
        assert set(t.epsg) == {"32612"} and len(t) >= 6
    for plan in loop["plans"]:
        summary = json.loads((plan / "summary.json").read_text())
        # edge cells predict maps but tile would drop were left out, from the orthomosaic itself
        assert summary["tile_check"]["checked"] and summary["tile_check"]["cells_dropped"] > 0
    both = pd.concat(tables, ignore_index=True)
    assert both.plot_id.is_unique
    both["presence"] = np.where(np.arange(len(both)) % 2 == 0, "present", "absent")  # what the crew found
    filled = root / "visits_filled.csv"
    both.to_csv(filled, index=False)
    cli_ok("tile", *loop["orthos"], "--plots", filled, "--out", root / "tiles2")
    idx = gpd.read_file(root / "tiles2" / "tiles.gpkg")
    summary = json.loads((root / "tiles2" / "summary.json").read_text())
    assert summary["skipped_tiles"] == {} and summary["uncovered_plots"] == []
    assert len(idx) == len(both)  # every visit kept: one tile each
    got = idx.set_index("plot_id").loc[both.plot_id]
    assert list(got.site_id) == list(both.site_id) and list(got.label) == list(both.presence)
    assert (got.valid_fraction >= 0.9).all()
    # the tile lies on the visit: its centre is the visit's UTM coordinates
    cx, cy = got.geometry.centroid.x.to_numpy(), got.geometry.centroid.y.to_numpy()
    assert np.allclose(cx, both.easting.astype(float), atol=0.02)
    assert np.allclose(cy, both.northing.astype(float), atol=0.02)
    res = cli_ok("train", root / "tiles2", "--out", root / "run2", "--weights", tiny_weights, *TINY)
    metrics = json.loads((root / "run2" / "metrics.json").read_text())
    assert (root / "run2" / "model.spurge").exists() and 0.0 <= metrics["balanced_accuracy"] <= 1.0
    assert "balanced accuracy" in res.stdout


def test_site_id_rules():
    from spurgemap.core.ids import site_id_of

    assert site_id_of(["ortho", "site01", "sites"]) == "site01"
    assert site_id_of(["odm_orthophoto", "odm_orthophoto", "field 7"]) == "field_7"
    assert site_id_of(["north_pasture", "flights"]) == "north_pasture"
    assert site_id_of(["ortho", "maps"]) == ""


def test_tile_valid_fractions_are_the_tiles_valid_share(tmp_path):
    """Each cell's fraction is the valid share of the tile-sized window centred on it (brute force)."""
    import rasterio
    from affine import Affine

    from spurgemap.geo.fieldwork_io import tile_valid_fractions

    WKT = __import__("pyproj").CRS.from_epsg(32612).to_wkt()
    ortho = drone_ortho(tmp_path / "S01" / "ortho.tif", 1)
    with rasterio.open(ortho) as ds:
        alpha, t = ds.read(4) > 0, ds.transform
    for stride in (250, 125):  # map cells of one tile, and of half a tile (the window then overlaps)
        shape = (PX // stride, PX // stride)
        frac = tile_valid_fractions(ortho, t @ Affine.scale(stride), WKT, np.ones(shape, bool), 250)
        pad = np.pad(alpha, 125)  # outside the raster is invalid
        for r in range(shape[0]):
            for c in range(shape[1]):
                # the window starts at the centre - 125 px, rounded half to even as `tile` snaps it
                cy, cx = (int(np.rint((i + 0.5) * stride - 125)) + 125 for i in (r, c))
                assert frac[r, c] == pytest.approx(pad[cy:cy + 250, cx:cx + 250].mean()), (stride, r, c)
        assert (frac < 0.9).sum() >= 5 and (frac == 1).sum() >= 5
    plain = write_raster(tmp_path / "rgb.tif", np.full((3, 600, 600), 90, np.uint8))  # no mask: all valid
    frac = tile_valid_fractions(plain, Affine(3.5, 0, ORIGIN[0], 0, -3.5, ORIGIN[1]), WKT, np.ones((3, 3), bool), 250)
    assert frac[0, 0] == 1 and frac[0, 2] == pytest.approx(0.4) and frac[2, 2] == pytest.approx(0.4**2)
