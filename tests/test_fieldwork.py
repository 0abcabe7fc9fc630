"""survey-plan, zones and change on small predict outputs written here as `spurgemap predict` writes them."""

from __future__ import annotations

import json
import logging
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import typer
from affine import Affine
from pyproj import Geod
from shapely import Point, Polygon, box
from typer.testing import CliRunner

from spurgemap.cli.fieldwork import register
from spurgemap.config import ChangeConfig, SpurgemapConfig, SurveyPlanConfig, ZonesConfig
from spurgemap.core.errors import InputError
from spurgemap.fieldwork import (
    ChangeInputs,
    SurveyPlanInputs,
    ZonesInputs,
    run_change,
    run_survey_plan,
    run_zones,
)
from spurgemap.fieldwork.route import nearest_neighbour_order, route_length, two_opt
from spurgemap.geo.maps import write_cog
from spurgemap.predict.outputs import PALETTE

UTM = "EPSG:32612"


def _plan_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(survey_plan=SurveyPlanConfig(**kw))


def _zones_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(zones=ZonesConfig(**kw))


def _change_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(change=ChangeConfig(**kw))
CELL = 3.5
X0, Y0 = 500_000.0, 5_200_000.0
THRESHOLD = 0.42
H, W = 30, 40


def make_pct(seed: int = 0) -> np.ndarray:
    """Smooth probabilities (blobs of spurge) with noise, an irregular nodata edge and one lone present cell."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:H, 0:W]
    field = 50 + 48 * np.sin(c / 5.0) * np.cos(r / 4.0) + rng.normal(0, 6, (H, W))
    pct = np.clip(np.rint(field), 0, 100).astype(np.uint8)
    edge = (3 + 2 * np.sin(r[:, 0] / 3.0)).astype(int)
    for row, e in enumerate(edge):
        pct[row, :e] = 255
    pct[:4, -6:] = 255  # a missing corner
    pct[20:27, 30:37] = 5  # clear ground ...
    pct[23, 33] = 90  # ... around one lone present cell
    return pct


def write_maps(folder: Path, pct: np.ndarray, name: str = "site", transform: Affine | None = None,
               threshold: float = THRESHOLD, crs: str = UTM) -> Path:
    """`<name>_prob.tif` and `<name>_class.tif` with predict's tags (see predict/outputs.py)."""
    from pyproj import CRS

    folder.mkdir(parents=True, exist_ok=True)
    t = transform or Affine(CELL, 0, X0, 0, -CELL, Y0)
    wkt = CRS.from_user_input(crs).to_wkt()
    tags = {"spurgemap_version": "0.1.0", "bundle_sha256": "0" * 64, "threshold": f"{threshold:.6f}",
            "tile_size_px": "250", "stride_px": "250", "source": f"{name}.tif", "source_sha256": "0" * 64,
            "created": "2024-06-01T00:00:00Z", "model_backbone": "test", "units": "percent probability of leafy spurge"}
    cls = np.where(pct == 255, 255, pct >= threshold * 100).astype(np.uint8)
    write_cog(folder / f"{name}_prob.tif", pct, t, wkt, 255, tags, description="leafy spurge probability (%)")
    write_cog(folder / f"{name}_class.tif", cls, t, wkt, 255, {**tags, "classes": "0=absent,1=present"},
              colormap=PALETTE, overview_resampling="nearest", description="leafy spurge presence")
    return folder


def centre(r: np.ndarray | int, c: np.ndarray | int, t: Affine | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = t or Affine(CELL, 0, X0, 0, -CELL, Y0)
    return t.c + (np.asarray(c) + 0.5) * t.a, t.f + (np.asarray(r) + 0.5) * t.e


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct())


def cli(*args: object) -> object:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------- survey-plan


@pytest.fixture(scope="module")
def plan(maps, tmp_path_factory) -> tuple[Path, object, Path]:
    tmp = tmp_path_factory.mktemp("plan")
    plots = tmp / "plots.gpkg"
    # one surveyed polygon over a block of cells near the threshold, one surveyed point
    gpd.GeoDataFrame({"site_id": ["site", "site"], "plot_id": ["a", "b"]},
                     geometry=[box(X0 + 10 * CELL, Y0 - 16 * CELL, X0 + 16 * CELL, Y0 - 10 * CELL),
                               Point(X0 + 25.5 * CELL, Y0 - 5.5 * CELL)], crs=UTM).to_file(plots)
    res = run_survey_plan(_plan_cfg(n=16, min_spacing_m=12.0, seed=3),
                          SurveyPlanInputs(maps, tmp / "plan", exclude=[plots]))
    return maps, res, plots


def test_visits_respect_spacing_validity_and_surveys(plan):
    _, res, plots = plan
    pct = make_pct()
    gdf = gpd.read_file(res.files["gpkg"])
    assert len(gdf) == res.n_visits == 16
    xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    ll = gdf.to_crs(4326).geometry
    geod = Geod(ellps="WGS84")
    assert min(geod.inv(a.x, a.y, b.x, b.y)[2] for a, b in combinations(ll, 2)) >= 12.0 - 1e-3  # ground metres
    assert (pct[gdf.row, gdf.col] != 255).all()
    assert np.allclose(xy, np.column_stack(centre(gdf.row.to_numpy(), gdf.col.to_numpy())))
    surveyed = gpd.read_file(plots).union_all()
    cells = [box(x - CELL / 2, y - CELL / 2, x + CELL / 2, y + CELL / 2) for x, y in xy]
    assert not any(c.intersects(surveyed) for c in cells)
    assert np.allclose(gdf.probability, pct[gdf.row, gdf.col] / 100)
    p = gdf.probability.to_numpy()
    side = np.where(p < THRESHOLD, THRESHOLD, 1 - THRESHOLD)
    assert np.array_equal(gdf.confidence, np.rint(np.abs(p - THRESHOLD) / side * 100).astype(int))


def test_uncertain_half_is_closest_to_threshold_and_random_half_covers_bands(plan):
    _, res, plots = plan
    pct = make_pct()
    gdf = gpd.read_file(res.files["gpkg"])
    assert (gdf.reason == "uncertain").sum() == 8 and (gdf.reason == "random").sum() == 8
    # every eligible cell nearer the threshold than the worst uncertain pick is blocked by the spacing
    unc = gdf[gdf.reason == "uncertain"]
    worst = np.abs(unc.probability - THRESHOLD).max()
    surveyed = gpd.read_file(plots).union_all()
    xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    rr, cc = np.nonzero(pct != 255)
    for r, c in zip(rr, cc, strict=True):
        x, y = centre(r, c)
        if abs(pct[r, c] / 100 - THRESHOLD) >= worst - 1e-9 or ((gdf.row == r) & (gdf.col == c)).any():
            continue
        if box(x - CELL / 2, y - CELL / 2, x + CELL / 2, y + CELL / 2).intersects(surveyed):
            continue
        assert np.hypot(xy[:, 0] - x, xy[:, 1] - y).min() < 12.0, (r, c)
    summary = json.loads(res.files["summary"].read_text())
    bands = summary["bands"]
    assert len(bands) == 5 and all(b["random_visits"] >= 1 for b in bands if b["eligible_cells"] > 0)
    rnd = gdf[gdf.reason == "random"]
    for b in bands:
        n_h = int((rnd.band == b["band"]).sum())
        assert b["random_visits"] == n_h
        assert b["inclusion_probability"] == pytest.approx(n_h / b["eligible_cells"])
        assert np.allclose(rnd.weight[rnd.band == b["band"]], b["eligible_cells"] / n_h)
    assert "Horvitz-Thompson" in summary["accuracy_estimation"]
    assert summary["excluded_cells"] > 30


def test_route_is_a_short_permutation(plan):
    _, res, _ = plan
    gdf = gpd.read_file(res.files["gpkg"])
    assert list(gdf.visit) == list(range(1, 17))
    xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    summary = json.loads(res.files["summary"].read_text())
    start = np.array([summary["start"]["x"], summary["start"]["y"]])
    pct = make_pct()
    rr, cc = np.nonzero(pct != 255)
    assert start == pytest.approx([X0 + cc.min() * CELL, Y0 - (rr.max() + 1) * CELL])  # south-west corner
    walk = gpd.GeoSeries(gpd.points_from_xy(*np.vstack([start, xy]).T), crs=UTM).to_crs(4326)
    geod = Geod(ellps="WGS84")
    length = sum(geod.inv(a.x, a.y, b.x, b.y)[2] for a, b in pairwise(walk))
    assert res.route_length_m == pytest.approx(length, rel=2e-5)  # ground metres, not grid units
    assert summary["route_length_m"] <= summary["nearest_neighbour_length_m"] + 1e-6
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts = rng.uniform(0, 100, (25, 2))
        nn = nearest_neighbour_order(pts, np.zeros(2))
        best = two_opt(pts, nn, np.zeros(2))
        assert sorted(best) == list(range(25))
        assert route_length(pts, best, np.zeros(2)) <= route_length(pts, nn, np.zeros(2)) + 1e-9


def test_gpx_and_csv_close_the_survey_loop(plan, cfg):
    from spurgemap.geo.vector import read_plots
    from spurgemap.tile.survey import survey_from_frame

    _, res, _ = plan
    gdf = gpd.read_file(res.files["gpkg"])
    ll = gdf.to_crs(4326)
    wpt = pyogrio.read_dataframe(res.files["gpx"], layer="waypoints")
    assert wpt.crs.to_epsg() == 4326
    assert list(wpt["name"]) == [str(v) for v in gdf.visit]
    assert np.allclose(wpt.geometry.x, ll.geometry.x, atol=1e-7)
    assert np.allclose(wpt.geometry.y, ll.geometry.y, atol=1e-7)
    rte = pyogrio.read_dataframe(res.files["gpx"], layer="route_points")
    assert np.allclose(rte.geometry.x, ll.geometry.x, atol=1e-7)
    routes = pyogrio.read_dataframe(res.files["gpx"], layer="routes")
    assert len(routes) == 1 and len(routes.geometry[0].coords) == len(gdf)
    table = pd.read_csv(res.files["csv"], dtype=str, keep_default_na=False)
    assert list(table.columns[:6]) == ["visit", "site_id", "plot_id", "lon", "lat", "reason"]
    assert np.allclose(table.lon.astype(float), ll.geometry.x, atol=1e-7)
    filled = res.files["csv"].parent.parent / "filled.csv"
    table.assign(presence=["yes", "no"] * 8).to_csv(filled, index=False)
    layer = read_plots(filled)  # what `tile --plots` reads: a point survey
    assert layer.is_points and len(layer.geoms) == 16
    survey = survey_from_frame(layer.attributes, cfg.labels, str(filled))
    assert survey is not None and sum(survey.labels.values()) == 8
    assert res.files["qml"].read_text().startswith("<!DOCTYPE qgis")
    assert res.files["preview"].stat().st_size > 1000


def test_survey_plan_start_option_and_cli(maps, tmp_path):
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(UTM, 4326, always_xy=True).transform(X0 + 100, Y0 - 50)
    r = cli("survey-plan", maps, "--n", 6, "--min-spacing", 5, "--start", f"{lon},{lat}", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["start"]["x"] == pytest.approx(X0 + 100, abs=1e-3) and summary["visits"] == 6


def test_survey_plan_bad_inputs(maps, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no predict outputs"):
        run_survey_plan(_plan_cfg(n=4), SurveyPlanInputs(empty, tmp_path / "o"))
    with pytest.raises(InputError, match="at least 1"):
        run_survey_plan(_plan_cfg(n=0), SurveyPlanInputs(maps, tmp_path / "o"))
    with pytest.raises(InputError, match="larger than the mapped site") as exc:
        run_survey_plan(_plan_cfg(n=4, min_spacing_m=1000), SurveyPlanInputs(maps, tmp_path / "o"))
    assert "site_prob.tif" in str(exc.value)
    two = write_maps(write_maps(tmp_path / "two", make_pct(), "a"), make_pct(), "b")
    with pytest.raises(InputError, match="--name"):
        run_survey_plan(_plan_cfg(n=4), SurveyPlanInputs(two, tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    r = cli("survey-plan", empty, "--n", 3, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "empty" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("survey-plan", maps, "--n", 0, "--out", tmp_path / "o")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- zones


def present_cells(pct: np.ndarray) -> list:
    rr, cc = np.nonzero((pct != 255) & (pct >= THRESHOLD * 100))
    return [box(X0 + c * CELL, Y0 - (r + 1) * CELL, X0 + (c + 1) * CELL, Y0 - r * CELL) for r, c in zip(rr, cc,
                                                                                                      strict=True)]


@pytest.mark.parametrize("buffer,simplify", [(1.0, 0.25), (0.0, 2.0)])
def test_zones_cover_every_present_cell(maps, tmp_path, buffer, simplify):
    res = run_zones(_zones_cfg(buffer_m=buffer, simplify_m=simplify, rate_l_per_ha=100.0),
                    ZonesInputs(maps, tmp_path / "z"))
    gdf = gpd.read_file(res.files["gpkg"])
    cells = present_cells(make_pct())
    union = gdf.union_all()
    assert all(union.covers(c) for c in cells)  # whole cells, so centroids too
    assert all(union.contains(c.centroid) for c in cells)
    present = gpd.GeoSeries(cells).union_all()
    assert all(z.intersection(present).area > 0 for z in gdf.geometry)
    assert len(gdf) == res.zones == res.summary["zones"] > 3
    assert res.summary["present_cells_untreated"] == 0
    assert np.allclose(gdf.area_m2, gdf.geometry.area, rtol=1e-3)  # ground m² ~ UTM m²
    assert res.summary["treated_area_m2"] == pytest.approx(gdf.area_m2.sum(), abs=0.01)
    assert res.summary["herbicide_l"] == pytest.approx(gdf.area_m2.sum() / 1e4 * 100, abs=1e-3)
    mapped = (make_pct() != 255).sum() * CELL**2
    assert res.summary["share_of_site"] == pytest.approx(gdf.area_m2.sum() / mapped, abs=2e-3)
    pct = make_pct()
    z = gdf.iloc[int(np.argmax(gdf.present_cells))]
    inside = [pct[int((Y0 - c.centroid.y) // CELL), int((c.centroid.x - X0) // CELL)] / 100 for c in cells
              if z.geometry.contains(c.centroid)]
    assert z.present_cells == len(inside) and z.mean_prob == pytest.approx(np.mean(inside), abs=1e-4)
    assert sum(gdf.present_cells) == len(cells)


def test_zones_min_area_and_holes(maps, tmp_path):
    lone = box(X0 + 33 * CELL, Y0 - 24 * CELL, X0 + 34 * CELL, Y0 - 23 * CELL)  # 5.5 x 5.5 m once buffered
    res = run_zones(_zones_cfg(min_area_m2=31.0), ZonesInputs(maps, tmp_path / "z"))
    gdf = gpd.read_file(res.files["gpkg"])
    assert not gdf.union_all().intersects(lone)
    pct = make_pct()
    pres = np.pad((pct != 255) & (pct >= THRESHOLD * 100), 1)
    neighbours = sum(np.roll(np.roll(pres, dr, 0), dc, 1) for dr in (-1, 0, 1) for dc in (-1, 0, 1)) - pres
    singles = pres & (neighbours == 0)  # one-cell zones: 30.25 m² once buffered, everything else is larger
    assert singles[24, 34] and res.summary["present_cells_untreated"] == singles.sum() >= 1
    uncovered = [c for c in present_cells(pct) if not gdf.union_all().covers(c)]
    assert len(uncovered) == singles.sum()
    assert (gdf.area_m2 >= 31.0).all()
    assert all(Polygon(ring).area >= 31.0 for g in gdf.geometry for p in g.geoms for ring in p.interiors)
    small = run_zones(_zones_cfg(min_area_m2=29.0), ZonesInputs(maps, tmp_path / "z2"))
    assert gpd.read_file(small.files["gpkg"]).union_all().covers(lone) and small.zones == res.zones + singles.sum()


def test_zones_fill_holes_under_min_area(tmp_path):
    pct = np.full((7, 7), 10, np.uint8)
    pct[1:6, 1:6] = 90
    pct[3, 3] = 10  # a 1.5 x 1.5 m hole once the ring around it is buffered by 1 m
    maps = write_maps(tmp_path / "m", pct)
    holes = []
    for min_area in (2.0, 2.5):
        res = run_zones(_zones_cfg(min_area_m2=min_area), ZonesInputs(maps, tmp_path / f"z{min_area}"))
        (zone,) = gpd.read_file(res.files["gpkg"]).geometry
        holes.append([Polygon(r).area for p in zone.geoms for r in p.interiors])
    assert holes[0] == [pytest.approx(2.25, rel=2e-3)] and holes[1] == []


def test_zones_sprayer_and_google_earth_files(maps, tmp_path):
    res = run_zones(_zones_cfg(rate_l_per_ha=150.0), ZonesInputs(maps, tmp_path / "z"))
    info = pyogrio.read_info(res.files["shp"])
    fields = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert fields["RATE"] in ("float64", "int64") and all(len(f) <= 10 for f in fields)
    assert res.files["shp"].with_suffix(".prj").exists()
    shp = gpd.read_file(res.files["shp"])
    assert shp.crs.to_epsg() == 32612 and (shp.RATE == 150.0).all() and len(shp) == res.zones
    kml = pyogrio.read_dataframe(res.files["kml"])
    assert kml.crs.to_epsg() == 4326 and len(kml) == res.zones
    expected = gpd.read_file(res.files["gpkg"]).to_crs(4326).total_bounds
    assert np.allclose(kml.total_bounds, expected, atol=1e-7)
    rows = pd.read_csv(res.files["summary_csv"])
    assert rows.scope.iloc[0] == "site" and (rows.scope == "zone").sum() == res.zones
    assert res.files["qml"].exists() and res.files["preview"].stat().st_size > 1000
    r = cli("zones", maps, "--out", tmp_path / "z", "--rate", "-1")
    assert r.exit_code == 2 and "--rate" in r.output and len(r.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- change

ROW_SHIFT, COL_SHIFT = 2, -3  # after cell (i, j) lies on before cell (i + 2, j - 3)


def after_map(folder: Path, frac: tuple[float, float], seed: int = 1) -> tuple[Path, np.ndarray, list, list]:
    """The before map on another grid (offset by ``frac`` of a cell, other extent) with known flips."""
    before = make_pct()
    ha, wa = H + 1, W - 1
    pct = np.full((ha, wa), 255, np.uint8)
    for i in range(ha):
        for j in range(wa):
            r, c = i + ROW_SHIFT, j + COL_SHIFT
            if 0 <= r < H and 0 <= c < W:
                pct[i, j] = before[r, c]
    pct[10, 10:14] = 255  # a gap in the after flight
    common = [(i + ROW_SHIFT, j + COL_SHIFT) for i in range(ha) for j in range(wa) if pct[i, j] != 255]
    rng = np.random.default_rng(seed)
    absent = [rc for rc in common if before[rc] < THRESHOLD * 100]
    present = [rc for rc in common if before[rc] >= THRESHOLD * 100]
    new = [absent[k] for k in rng.choice(len(absent), 7, replace=False)]
    gone = [present[k] for k in rng.choice(len(present), 5, replace=False)]
    for (r, c), value in [*((rc, 80) for rc in new), *((rc, 10) for rc in gone)]:
        pct[r - ROW_SHIFT, c - COL_SHIFT] = value
    t = Affine(CELL, 0, X0 + (COL_SHIFT + frac[0]) * CELL, 0, -CELL, Y0 - (ROW_SHIFT + frac[1]) * CELL)
    return write_maps(folder, pct, "after", t), pct, new, gone


def expected_change(after_pct: np.ndarray) -> np.ndarray:
    before = make_pct()
    out = np.full((H, W), 255, np.uint8)
    for r in range(H):
        for c in range(W):
            i, j = r - ROW_SHIFT, c - COL_SHIFT
            if not (0 <= i < after_pct.shape[0] and 0 <= j < after_pct.shape[1]):
                continue
            if before[r, c] == 255 or after_pct[i, j] == 255:
                continue
            b, a = before[r, c] >= THRESHOLD * 100, after_pct[i, j] >= THRESHOLD * 100
            out[r, c] = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}[(int(b), int(a))]
    return out


def test_change_counts_areas_and_files(maps, tmp_path, caplog):
    after, apct, new, gone = after_map(tmp_path / "after", (0.1, 0.15))
    plots = tmp_path / "plots.geojson"
    plot = box(X0 + 5 * CELL, Y0 - 20 * CELL, X0 + 25 * CELL, Y0 - 5 * CELL)  # rows 5..19, cols 5..24
    gpd.GeoDataFrame({"site_id": ["s"], "plot_id": ["p1"]}, geometry=[plot], crs=UTM).to_file(plots)
    with caplog.at_level(logging.WARNING):
        res = run_change(_change_cfg(), ChangeInputs(maps, after, tmp_path / "c", plots))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    expected = expected_change(apct)
    with rasterio.open(res.files["tif"]) as src:
        got = src.read(1)
        assert src.nodata == 255 and src.colormap(1)[1][:3] == (230, 0, 126)
    assert np.array_equal(got, expected)
    assert res.counts["new"] == 7 and res.counts["gone"] == 5
    assert set(zip(*np.nonzero(got == 1), strict=True)) == set(new)
    assert set(zip(*np.nonzero(got == 2), strict=True)) == set(gone)
    assert res.counts["persisting"] == (expected == 3).sum() and res.counts["absent"] == (expected == 0).sum()
    s = res.summary
    k = 1 / s["classes"]["new"]["area_m2"] * 7 * CELL**2  # UTM scale factor: ground m² vs grid m²
    assert k == pytest.approx(1, abs=1e-3)
    assert s["classes"]["gone"]["area_m2"] == pytest.approx(5 * CELL**2 / k, abs=1e-3)
    assert s["classes"]["new"]["area_ha"] == pytest.approx(7 * CELL**2 / k / 1e4, abs=1e-6)
    assert s["net_spread_m2"] == pytest.approx(2 * CELL**2 / k, abs=1e-2)
    before_present = (res.counts["gone"] + res.counts["persisting"]) * CELL**2 / k
    assert s["net_spread_relative"] == pytest.approx(2 * CELL**2 / k / before_present, abs=1e-4)
    (p,) = s["plots"]
    sub = expected[5:20, 5:25]
    for value, name in ((1, "new"), (2, "gone"), (3, "persisting")):
        assert p["classes"][name]["area_m2"] == pytest.approx((sub == value).sum() * CELL**2 / k, abs=1e-2)
    polys = gpd.read_file(res.files["gpkg"], layer="change")
    styles = pyogrio.read_dataframe(res.files["gpkg"], layer="layer_styles", read_geometry=False)
    assert styles.useAsDefault.tolist() == [1] and "categorizedSymbol" in styles.styleQML[0]
    for value, name in ((1, "new"), (2, "gone"), (3, "persisting")):
        assert polys[polys.change_class == value].geometry.area.sum() == pytest.approx((expected == value).sum()
                                                                                      * CELL**2)
        assert (polys[polys.change_class == value].change == name).all()
    rows = pd.read_csv(res.files["summary_csv"])
    assert set(rows.scope) == {"site", "plot"}
    assert res.files["tif_qml"].exists() and res.files["preview"].stat().st_size > 1000


def test_change_warns_on_offset_and_resolution(maps, tmp_path, caplog):
    after, apct, _, _ = after_map(tmp_path / "after", (0.3, 0.0))
    with caplog.at_level(logging.WARNING):
        res = run_change(_change_cfg(), ChangeInputs(maps, after, tmp_path / "c"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "offset 0.30" in warnings[0].getMessage()
    assert np.array_equal(rasterio.open(res.files["tif"]).read(1), expected_change(apct))  # still nearest
    caplog.clear()
    coarse = write_maps(tmp_path / "coarse", make_pct(), transform=Affine(CELL * 1.1, 0, X0, 0, -CELL * 1.1, Y0))
    with caplog.at_level(logging.WARNING):
        run_change(_change_cfg(), ChangeInputs(maps, coarse, tmp_path / "c2"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_change_refuses_other_sites_and_bad_folders(maps, tmp_path):
    far = write_maps(tmp_path / "far", make_pct(), transform=Affine(CELL, 0, X0 + 5000, 0, -CELL, Y0))
    with pytest.raises(InputError, match="does not overlap") as exc:
        run_change(_change_cfg(), ChangeInputs(maps, far, tmp_path / "c"))
    assert "site_prob.tif" in str(exc.value)
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["none",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    odd = write_maps(tmp_path / "odd", make_pct(), crs=local)
    with pytest.raises(InputError, match="cannot be matched"):
        run_change(_change_cfg(), ChangeInputs(maps, odd, tmp_path / "c"))
    r = cli("change", maps, tmp_path / "nothing", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "nothing" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_nearest_cell_and_grid_mismatch():
    from spurgemap.fieldwork.change import grid_mismatch, sample_nearest

    t = Affine(2.0, 0, 100.0, 0, -2.0, 50.0)
    values = np.arange(12, dtype=np.uint8).reshape(3, 4)
    xs = np.array([100.1, 101.9, 102.0, 107.9, 99.9, 108.0, 100.5])
    ys = np.array([49.9, 48.1, 48.0, 44.1, 49.0, 49.0, 43.9])
    assert sample_nearest(values, t, xs, ys).tolist() == [0, 0, 5, 11, 255, 255, 255]
    assert grid_mismatch(t, Affine(2.0, 0, 100.0 + 2 * 0.7, 0, -2.0, 50.0 - 2 * 3.1)) == pytest.approx((0.3, 0.0))
    assert grid_mismatch(t, Affine(2.2, 0, 100.0, 0, -2.0, 50.0))[1] == pytest.approx(0.1)
