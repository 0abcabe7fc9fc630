"""demo-data -> tile through the CLI, the committed field_data examples, `info` and `demo`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import cli_ok
from test_zones_prescriptions import ISOXML_XSD
from typer.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "field_data" / "examples"
runner = CliRunner()


_ok = cli_ok


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "field"
    _ok("demo-data", out, "--sites", 3, "--size", 3000, "--seed", 0)
    return out


def test_demo_data_then_tile(demo, tmp_path):
    orthos = sorted((demo / "sites").glob("*/ortho.tif"))
    assert len(orthos) == 3
    res = _ok("tile", *orthos, "--plots", demo / "plots.geojson", "--survey", demo / "survey.csv",
              "--out", tmp_path / "tiles")
    assert "108 tiles" in res.stdout
    idx = gpd.read_file(tmp_path / "tiles" / "tiles.gpkg")
    assert len(idx) == 108 and idx.crs.to_epsg() == 32612
    assert (idx.groupby(["site_id", "plot_id"]).size() == 4).all()  # 10 m plots -> 2 x 2 tiles
    assert set(idx.resampling) == {"none", "bilinear"}  # the demo has axis-aligned and rotated plots
    # labels agree with the ground truth the generator wrote: present tiles hold far more spurge
    share = []
    for _, t in idx.iterrows():
        with rasterio.open(demo / "sites" / t.site_id / "truth.tif") as ds:
            truth = ds.read(1, window=rasterio.windows.from_bounds(*t.geometry.bounds, ds.transform))
        share.append((truth == 1).mean())
    idx["truth_share"] = share
    means = idx.groupby("label").truth_share.mean()
    assert means["absent"] < 0.01 and means["present"] > 5 * means["absent"] + 0.01
    survey = json.loads((tmp_path / "tiles" / "summary.json").read_text())
    assert survey["tiles"] == 108 and survey["partially_covered_plots"] == []


def test_committed_examples_match_demo_and_tile(demo, tmp_path):
    assert (EXAMPLES / "survey.csv").read_text() == (demo / "survey.csv").read_text()
    a = gpd.read_file(EXAMPLES / "plots.geojson")
    b = gpd.read_file(demo / "plots.geojson")
    assert a.geometry.geom_equals_exact(b.geometry, 1e-9).all()
    orthos = sorted((demo / "sites").glob("*/ortho.tif"))
    _ok("tile", *orthos, "--plots", EXAMPLES / "plots.geojson", "--survey", EXAMPLES / "survey.csv",
        "--verify", EXAMPLES / "verify.csv", "--out", tmp_path / "t1")
    idx = gpd.read_file(tmp_path / "t1" / "tiles.gpkg").set_index("tile_id")
    assert idx.loc["site01_P1_r0c0", "label"] == "absent" and idx.loc["site01_P1_r0c0", "label_source"] == "verify"
    # the point survey: one 0.5 m plot per point -> one tile centred on it
    _ok("tile", *orthos, "--plots", EXAMPLES / "points.csv", "--out", tmp_path / "t2")
    pts = gpd.read_file(tmp_path / "t2" / "tiles.gpkg")
    assert len(pts) == 27 and (pts.plot_fraction < 0.1).all()


def test_info_on_ortho_and_tiles(demo, tmp_path):
    res = _ok("info", demo / "sites" / "site01" / "ortho.tif")
    info = json.loads(res.stdout)
    assert info["crs"] == "EPSG:32612" and info["gsd_cm"] == pytest.approx(1.4, abs=0.01)
    assert info["mask"] == "alpha" and info["size_px"] == [3000, 3000]
    _ok("tile", demo / "sites" / "site02" / "ortho.tif", "--plots", demo / "plots.geojson",
        "--survey", demo / "survey.csv", "--out", tmp_path / "t")
    tiles = json.loads(_ok("info", tmp_path / "t").stdout)
    assert tiles["tiles"] == 36 and sum(tiles["per_site"].values()) == 36


def test_demo_command_runs_the_built_stages(tmp_path):
    res = _ok("demo", tmp_path / "run", "--sites", 3, "--size", 3000)  # 3000 px: cells left to plan on every site
    assert "tiles in" in res.stdout and "balanced accuracy" in res.stdout and "ha spurge" in res.stdout
    assert "skipped: no diffusion model configured" in " ".join(res.stdout.split())
    assert (tmp_path / "run" / "train" / "model.spurge").exists()
    assert len(list((tmp_path / "run" / "maps").glob("*/ortho_class.tif"))) == 3
    assert (tmp_path / "run" / "tiles" / "tiles.gpkg").exists()
    assert (tmp_path / "run" / "config.yaml").exists()
    arr = rasterio.open(next((tmp_path / "run" / "tiles" / "tiles").rglob("*.tif"))).read()
    assert arr.shape == (3, 250, 250) and np.ptp(arr) > 50
    # the second season is mapped and compared; zones and a survey plan come from it
    for site in ("site01", "site02", "site03"):
        with rasterio.open(tmp_path / "run" / "change" / site / "change.tif") as ds:
            change = ds.read(1)
        with rasterio.open(tmp_path / "run" / "maps" / site / "ortho_class.tif") as ds:
            before = ds.read(1)
        # the change map lives on last year's grid: its present cells are exactly gone + persisting
        both = change != 255
        assert both.sum() >= 0.8 * (before != 255).sum()
        assert np.array_equal((before == 1)[both], np.isin(change, (2, 3))[both])
        assert (change == 3).sum() > (change == 2).sum()  # spurge spreads more than it retreats
        zones = tmp_path / "run" / "zones" / site
        assert (zones / f"{site}_zones.shp").exists() and (zones / "TASKDATA" / "TASKDATA.XML").exists()
        assert (zones / "deere" / "Rx" / f"{site.upper()}.shp").exists() and (zones / "infestations.csv").exists()
        assert all((zones / t / f"{site}_zones.shp").exists() for t in ("raven", "trimble", "agfusion"))
        records = pd.read_csv(zones / "infestations.csv")
        assert (records.obs_date == "2025-06-15").all()  # the second season's flight date, from its TIFF tags
        if ISOXML_XSD.is_file():  # ../shared beside the clone (tests/test_zones_prescriptions.py insists under CI)
            from lxml import etree

            schema = etree.XMLSchema(etree.parse(str(ISOXML_XSD)))
            assert schema.validate(etree.parse(str(zones / "TASKDATA" / "TASKDATA.XML"))), schema.error_log
    flat = " ".join(res.stdout.split())
    assert "change: site01 new" in flat and "zones: site01" in flat and "survey-plan: site01" in flat
    # 3000-px sites keep mapped cells outside their plots: every site gets a plan, as many visits as printed
    printed = {m.group(1): int(m.group(2)) for m in re.finditer(r"(site0\d) (\d+) visits", flat)}
    assert sorted(printed) == ["site01", "site02", "site03"] and min(printed.values()) >= 1
    for site in ("site01", "site02", "site03"):
        plan = tmp_path / "run" / "survey_plan" / site
        assert len(pd.read_csv(plan / "visits.csv")) == printed[site] and (plan / "visits.gpx").exists()
        # the crew's outputs come with every plan: QField package and printable sheet
        assert (plan / "field_sheet.pdf").read_bytes().startswith(b"%PDF-")
        assert (plan / f"{site}_qfield.zip").exists() and (plan / "qfield" / f"{site}.qgs").exists()
        assert (plan / "qfield" / "basemap.tif").exists()  # the demo orthomosaic, found from the map's tags
