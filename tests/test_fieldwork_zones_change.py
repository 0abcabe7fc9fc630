"""zones and change on small predict outputs written as `spurgemap predict` writes them."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine
from fieldwork_maps import (  # tests/ is on sys.path (pytest rootdir conftest)
    CELL,
    THRESHOLD,
    UTM,
    X0,
    Y0,
    H,
    W,
    change_cfg,
    cli,
    make_pct,
    write_maps,
    zones_cfg,
)
from shapely import Polygon, box

from spurgemap.core.errors import InputError
from spurgemap.fieldwork import (
    ChangeInputs,
    ZonesInputs,
    run_change,
    run_zones,
)


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct())


# --------------------------------------------------------------------------------------------- zones


def present_cells(pct: np.ndarray) -> list:
    rr, cc = np.nonzero((pct != 255) & (pct >= THRESHOLD * 100))
    return [box(X0 + c * CELL, Y0 - (r + 1) * CELL, X0 + (c + 1) * CELL, Y0 - r * CELL) for r, c in zip(rr, cc,
                                                                                                      strict=True)]


@pytest.mark.parametrize("buffer,simplify", [(1.0, 0.25), (0.0, 2.0)])
def test_zones_cover_every_present_cell(maps, tmp_path, buffer, simplify):
    res = run_zones(zones_cfg(buffer_m=buffer, simplify_m=simplify, rate_l_per_ha=100.0),
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
    assert res.summary["spray_volume_l"] == pytest.approx(gdf.area_m2.sum() / 1e4 * 100, abs=1e-3)
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
    res = run_zones(zones_cfg(min_area_m2=31.0), ZonesInputs(maps, tmp_path / "z"))
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
    small = run_zones(zones_cfg(min_area_m2=29.0), ZonesInputs(maps, tmp_path / "z2"))
    assert gpd.read_file(small.files["gpkg"]).union_all().covers(lone) and small.zones == res.zones + singles.sum()


def test_zones_fill_holes_under_min_area(tmp_path):
    pct = np.full((7, 7), 10, np.uint8)
    pct[1:6, 1:6] = 90
    pct[3, 3] = 10  # a 1.5 x 1.5 m hole once the ring around it is buffered by 1 m
    maps = write_maps(tmp_path / "m", pct)
    holes = []
    for min_area in (2.0, 2.5):
        res = run_zones(zones_cfg(min_area_m2=min_area), ZonesInputs(maps, tmp_path / f"z{min_area}"))
        (zone,) = gpd.read_file(res.files["gpkg"]).geometry
        holes.append([Polygon(r).area for p in zone.geoms for r in p.interiors])
    assert holes[0] == [pytest.approx(2.25, rel=2e-3)] and holes[1] == []


def test_zones_sprayer_and_google_earth_files(maps, tmp_path):
    res = run_zones(zones_cfg(rate_l_per_ha=150.0), ZonesInputs(maps, tmp_path / "z"))
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
        res = run_change(change_cfg(), ChangeInputs(maps, after, tmp_path / "c", plots))
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
        res = run_change(change_cfg(), ChangeInputs(maps, after, tmp_path / "c"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "offset 0.30" in warnings[0].getMessage()
    assert np.array_equal(rasterio.open(res.files["tif"]).read(1), expected_change(apct))  # still nearest
    caplog.clear()
    coarse = write_maps(tmp_path / "coarse", make_pct(), transform=Affine(CELL * 1.1, 0, X0, 0, -CELL * 1.1, Y0))
    with caplog.at_level(logging.WARNING):
        run_change(change_cfg(), ChangeInputs(maps, coarse, tmp_path / "c2"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_change_refuses_other_sites_and_bad_folders(maps, tmp_path):
    far = write_maps(tmp_path / "far", make_pct(), transform=Affine(CELL, 0, X0 + 5000, 0, -CELL, Y0))
    with pytest.raises(InputError, match="does not overlap") as exc:
        run_change(change_cfg(), ChangeInputs(maps, far, tmp_path / "c"))
    assert "site_prob.tif" in str(exc.value)
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["none",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    odd = write_maps(tmp_path / "odd", make_pct(), crs=local)
    with pytest.raises(InputError, match="cannot be matched"):
        run_change(change_cfg(), ChangeInputs(maps, odd, tmp_path / "c"))
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
