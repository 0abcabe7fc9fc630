"""survey-plan on small predict outputs written as `spurgemap predict` writes them."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from itertools import combinations, pairwise
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from fieldwork_maps import (  # tests/ is on sys.path (pytest rootdir conftest)
    CELL,
    THRESHOLD,
    UTM,
    X0,
    Y0,
    centre,
    cli,
    make_pct,
    plan_cfg,
    write_maps,
)
from pyproj import Geod
from shapely import Point, box

from spurgemap.core.errors import InputError
from spurgemap.fieldwork import (
    SurveyPlanInputs,
    run_survey_plan,
)
from spurgemap.fieldwork.route import nearest_neighbour_order, route_length, two_opt


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct())


# --------------------------------------------------------------------------------------------- survey-plan


@pytest.fixture(scope="module")
def plan(maps, tmp_path_factory) -> tuple[Path, object, Path]:
    tmp = tmp_path_factory.mktemp("plan")
    plots = tmp / "plots.gpkg"
    # one surveyed polygon over a block of cells near the threshold, one surveyed point
    gpd.GeoDataFrame({"site_id": ["site", "site"], "plot_id": ["a", "b"]},
                     geometry=[box(X0 + 10 * CELL, Y0 - 16 * CELL, X0 + 16 * CELL, Y0 - 10 * CELL),
                               Point(X0 + 25.5 * CELL, Y0 - 5.5 * CELL)], crs=UTM).to_file(plots)
    res = run_survey_plan(plan_cfg(n=16, min_spacing_m=12.0, seed=3),
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
    # on each side of the threshold, every eligible cell nearer it than that side's worst uncertain pick
    # is blocked by the spacing
    unc = gdf[gdf.reason == "uncertain"]
    assert (unc.uncertainty >= 0.4).all()
    assert (unc.probability < THRESHOLD).any() and (unc.probability >= THRESHOLD).any()
    surveyed = gpd.read_file(plots).union_all()
    xy = np.column_stack([gdf.geometry.x, gdf.geometry.y])
    rr, cc = np.nonzero(pct != 255)
    for below in (True, False):
        side = unc[(unc.probability < THRESHOLD) == below]
        worst = np.abs(side.probability - THRESHOLD).max()
        for r, c in zip(rr, cc, strict=True):
            x, y = centre(r, c)
            if (pct[r, c] / 100 < THRESHOLD) != below or abs(pct[r, c] / 100 - THRESHOLD) >= worst - 1e-9:
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
    assert list(wpt["name"]) == list(gdf.plot_id) == [f"site-V{v:02d}" for v in gdf.visit]
    assert np.allclose(wpt.geometry.x, ll.geometry.x, atol=1e-7)
    assert np.allclose(wpt.geometry.y, ll.geometry.y, atol=1e-7)
    assert list(wpt["type"]) == list(gdf.reason)  # the visit kind, as GPS apps filter on it
    rte = pyogrio.read_dataframe(res.files["gpx"], layer="route_points")
    assert rte["name"].iloc[0] == "start"  # the walk starts where the plan says, then the visits in order
    assert np.allclose(rte.geometry.x[1:], ll.geometry.x, atol=1e-7)
    summary = json.loads(res.files["summary"].read_text())
    start = gpd.GeoSeries([Point(summary["start"]["x"], summary["start"]["y"])], crs=UTM).to_crs(4326)[0]
    assert (rte.geometry.x[0], rte.geometry.y[0]) == pytest.approx((start.x, start.y), abs=1e-7)
    routes = pyogrio.read_dataframe(res.files["gpx"], layer="routes")
    assert len(routes) == 1 and len(routes.geometry[0].coords) == len(gdf) + 1
    gpx = ET.parse(res.files["gpx"]).getroot()
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    assert [c.tag.split("}")[1] for c in gpx][:2] == ["metadata", "wpt"]  # GPX 1.1: metadata comes first
    when = dt.datetime.strptime(gpx.find("g:metadata/g:time", ns).text, "%Y-%m-%dT%H:%M:%SZ")
    assert abs((dt.datetime.now(dt.UTC).replace(tzinfo=None) - when).total_seconds()) < 3600
    for wp in gpx.findall("g:wpt", ns):  # schema order inside a waypoint: name, desc, then type
        assert [c.tag.split("}")[1] for c in wp] == ["name", "desc", "type"]
    table = pd.read_csv(res.files["csv"], dtype=str, keep_default_na=False)
    assert list(table.columns[:9]) == ["visit", "site_id", "plot_id", "lon", "lat", "easting", "northing", "epsg",
                                       "reason"]
    assert np.allclose(table.lon.astype(float), ll.geometry.x, atol=1e-7)
    # UTM beside lon/lat: the map's own EPSG code and coordinates (to the millimetre)
    assert set(table.epsg) == {"32612"} and (table.site_id == "site").all()
    assert np.allclose(table.easting.astype(float), gdf.geometry.x, atol=1e-3)
    assert np.allclose(table.northing.astype(float), gdf.geometry.y, atol=1e-3)
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
        run_survey_plan(plan_cfg(n=4), SurveyPlanInputs(empty, tmp_path / "o"))
    with pytest.raises(InputError, match="at least 1"):
        run_survey_plan(plan_cfg(n=0), SurveyPlanInputs(maps, tmp_path / "o"))
    with pytest.raises(InputError, match="larger than the mapped site") as exc:
        run_survey_plan(plan_cfg(n=4, min_spacing_m=1000), SurveyPlanInputs(maps, tmp_path / "o"))
    assert "site_prob.tif" in str(exc.value)
    two = write_maps(write_maps(tmp_path / "two", make_pct(), "a"), make_pct(), "b")
    with pytest.raises(InputError, match="--name"):
        run_survey_plan(plan_cfg(n=4), SurveyPlanInputs(two, tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    r = cli("survey-plan", empty, "--n", 3, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "empty" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("survey-plan", maps, "--n", 0, "--out", tmp_path / "o")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


