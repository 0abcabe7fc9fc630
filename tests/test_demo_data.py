"""The demo generator must produce ODM-like rasters whose survey labels agree with the truth."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from rasterio.enums import ColorInterp
from rasterio.features import geometry_mask

from spurgemap.config import DemoConfig
from spurgemap.core.errors import InputError
from spurgemap.demo.scene import build_scene
from spurgemap.demo.sites import DemoResult, make_demo_data
from spurgemap.demo.synth import render_window

SIZE = 2600
SUBTILE = 250


def _cfg(**settings: Any) -> DemoConfig:
    return DemoConfig.model_validate({"sites": 1, "size_px": SIZE, **settings})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    calls: list[tuple[int, int]] = []
    res = make_demo_data(
        _cfg(sites=3, seed=0), tmp_path_factory.mktemp("demo"), lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (3 * SIZE, 3 * SIZE)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    return res


def _read(path: Path) -> NDArray[np.uint8]:
    with rasterio.open(path) as src:
        data: NDArray[np.uint8] = src.read()
    return data


def _survey(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _plots_in_raster_crs(res: DemoResult, site: str) -> Any:
    gdf = gpd.read_file(res.plots_path)
    with rasterio.open(res.out / "sites" / site / "ortho.tif") as src:
        crs = src.crs
    return gdf[gdf.site_id == site].to_crs(crs)


def test_layout_of_outputs(demo: DemoResult) -> None:
    assert demo.site_ids == ["site01", "site02", "site03"]
    assert all(p.exists() for p in demo.ortho_paths + demo.truth_paths)
    assert demo.n_plots == 27
    assert "seed=0" in (demo.out / "README.txt").read_text()
    assert demo.megapixels == pytest.approx(3 * SIZE * SIZE / 1e6)


def test_ortho_looks_like_odm_output(demo: DemoResult) -> None:
    bounds = []
    for path in demo.ortho_paths:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32612
            assert src.res == pytest.approx((0.014, 0.014))
            assert src.transform.b == 0 and src.transform.d == 0 and src.transform.e < 0
            assert (src.width, src.height, src.count) == (SIZE, SIZE, 4)
            assert src.dtypes == ("uint8",) * 4
            assert src.colorinterp[3] == ColorInterp.alpha
            assert src.block_shapes[0] == (512, 512)
            struct = src.tags(ns="IMAGE_STRUCTURE")
            assert struct["COMPRESSION"] == "DEFLATE" and struct["PREDICTOR"] == "2"
            # Plausible UTM 12N eastings/northings for Montana.
            assert 300_000 < src.bounds.left < 800_000 and 4_900_000 < src.bounds.top < 5_450_000
            bounds.append(src.bounds)
    for a, b in itertools.combinations(bounds, 2):
        assert a.right < b.left or b.right < a.left or a.top < b.bottom or b.top < a.bottom


def test_truth_raster_matches_grid(demo: DemoResult) -> None:
    for ortho, truth in zip(demo.ortho_paths, demo.truth_paths, strict=True):
        with rasterio.open(ortho) as o, rasterio.open(truth) as t:
            assert t.crs == o.crs and t.transform == o.transform and t.shape == o.shape
            assert t.nodata == 255 and t.block_shapes[0] == (512, 512)
            assert t.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
            alpha, tv = o.read(4), t.read(1)
        assert set(np.unique(tv)) <= {0, 1, 255}
        assert np.array_equal(tv == 255, alpha == 0)
        assert 0.001 < (tv == 1).mean() < 0.2


def test_collar_is_irregular(demo: DemoResult) -> None:
    for path in demo.ortho_paths:
        rgba = _read(path)
        alpha = rgba[3]
        assert set(np.unique(alpha)) == {0, 255}
        assert 0.02 < (alpha == 0).mean() < 0.30
        assert (rgba[:3, alpha == 0] == 0).all()
        assert (rgba[:3, alpha == 255].max(axis=0) > 0).mean() > 0.99
        rows = np.arange(SIZE // 4, 3 * SIZE // 4)
        first = np.argmax(alpha[rows] > 0, axis=1).astype(float)
        resid = first - np.polyval(np.polyfit(rows, first, 1), rows)
        assert resid.std() > 2.0  # a wobbly edge, not a straight cut
        assert first.max() < SIZE * 0.1


def test_spurge_pixels_are_yellow_green(demo: DemoResult) -> None:
    for ortho, truth in zip(demo.ortho_paths, demo.truth_paths, strict=True):
        rgb = _read(ortho)[:3].astype(float)
        t = _read(truth)[0]
        r, g, b = (rgb[k][t == 1].mean() for k in range(3))
        assert g > b + 60 and r > b + 40
        # Background grass is clearly different from spurge.
        _, bg, bb = (rgb[k][t == 0].mean() for k in range(3))
        assert bg < g - 40 and bb < 110


def test_plots_geojson_is_wgs84_in_montana(demo: DemoResult) -> None:
    gdf = gpd.read_file(demo.plots_path)
    assert gdf.crs.to_epsg() == 4326
    minx, miny, maxx, maxy = gdf.total_bounds
    assert -116.1 < minx < maxx < -104.0 and 44.3 < miny < maxy < 49.0
    assert len(gdf) == 27
    assert sorted(gdf.plot_id.unique(), key=lambda s: int(s[1:])) == [f"P{i}" for i in range(1, 10)]
    for site in demo.site_ids:
        plots = _plots_in_raster_crs(demo, site)
        assert plots.geometry.area.to_numpy() == pytest.approx(100.0, rel=1e-3)
        angles = []
        for geom in plots.geometry:
            (x0, y0), (x1, y1) = list(geom.exterior.coords)[:2]
            angles.append(abs(math.degrees(math.atan2(y1 - y0, x1 - x0))) % 90)
        angles = [min(a, 90 - a) for a in angles]
        assert sum(a < 0.01 for a in angles) >= 3
        rotated = [a for a in angles if a > 0.01]
        assert len(rotated) >= 2 and all(9.9 < a < 40.1 for a in rotated)
        for a, b in itertools.combinations(plots.geometry, 2):
            assert not a.intersects(b)


def test_survey_consistent_with_truth(demo: DemoResult) -> None:
    rows = _survey(demo.survey_path)
    assert list(rows[0]) == ["site_id", "plot_id", "presence", "cover_pct", "date", "surveyor"]
    for site, ortho, truth in zip(demo.site_ids, demo.ortho_paths, demo.truth_paths, strict=True):
        labels = {r["plot_id"]: r for r in rows if r["site_id"] == site}
        assert sum(r["presence"] == "present" for r in labels.values()) >= 3
        assert sum(r["presence"] == "absent" for r in labels.values()) >= 3
        with rasterio.open(ortho) as src:
            transform, alpha = src.transform, src.read(4)
        t = _read(truth)[0]
        covers = []
        for plot_id, geom in zip(*_plot_frame(demo, site), strict=True):
            row = labels[plot_id]
            touched = ~geometry_mask([geom], t.shape, transform, all_touched=True)
            inside = ~geometry_mask([geom], t.shape, transform)
            assert (alpha[touched] == 255).all(), f"{site}/{plot_id} overlaps the collar"
            cover = 100.0 * (t[inside] == 1).mean()
            assert float(row["cover_pct"]) == pytest.approx(cover, abs=0.15)
            if row["presence"] == "absent":
                assert (t[touched] == 1).sum() == 0, f"{site}/{plot_id} absent but has spurge"
            else:
                assert row["presence"] == "present" and cover > 0
                covers.append(cover)
                hits = _subtile_hits(geom, transform, t)
                assert hits.mean() >= 0.75, f"{site}/{plot_id}: spurge in {hits.sum()}/9 sub-tiles"
        assert min(covers) < 1.0  # a cryptic plot
        assert max(covers) > 3 * min(covers)  # densities vary


def _plot_frame(res: DemoResult, site: str) -> tuple[list[str], list[Any]]:
    plots = _plots_in_raster_crs(res, site)
    return list(plots.plot_id), list(plots.geometry)


def _subtile_hits(geom: Any, transform: Any, t: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Spurge presence in a 3 x 3 grid of 250 px squares spread over the plot's own frame."""
    inv = ~transform
    corners = np.array([inv @ c for c in list(geom.exterior.coords)[:4]])
    e1 = corners[1] - corners[0]
    e2 = corners[3] - corners[0]
    side = float(np.hypot(*e1))
    e1, e2 = e1 / side, e2 / np.hypot(*e2)
    r0, c0 = np.floor(corners.min(0)).astype(int)[::-1]
    r1, c1 = np.ceil(corners.max(0)).astype(int)[::-1]
    yy, xx = np.mgrid[r0:r1, c0:c1]
    d = np.stack([xx + 0.5 - corners[0][0], yy + 0.5 - corners[0][1]], -1)
    u, v = d @ e1, d @ e2
    window = t[r0:r1, c0:c1] == 1
    starts = np.linspace(0, side - SUBTILE, 3)
    hits = np.zeros((3, 3), bool)
    for i, su in enumerate(starts):
        for j, sv in enumerate(starts):
            sel = (u >= su) & (u < su + SUBTILE) & (v >= sv) & (v < sv + SUBTILE)
            hits[i, j] = window[sel].any()
    return hits


def test_same_seed_same_data_other_seed_differs(demo: DemoResult, tmp_path: Path) -> None:
    again = make_demo_data(_cfg(seed=0), tmp_path / "again")
    assert np.array_equal(_read(again.ortho_paths[0]), _read(demo.ortho_paths[0]))
    assert np.array_equal(_read(again.truth_paths[0]), _read(demo.truth_paths[0]))
    site01 = [r for r in _survey(demo.survey_path) if r["site_id"] == "site01"]
    assert _survey(again.survey_path) == site01
    a = gpd.read_file(again.plots_path)
    b = gpd.read_file(demo.plots_path)
    b = b[b.site_id == "site01"].reset_index(drop=True)
    assert list(a.plot_id) == list(b.plot_id)
    assert all(g1.equals_exact(g2, 1e-12) for g1, g2 in zip(a.geometry, b.geometry, strict=True))

    other = make_demo_data(_cfg(seed=1), tmp_path / "other")
    assert not np.array_equal(_read(other.ortho_paths[0]), _read(demo.ortho_paths[0]))
    assert not gpd.read_file(other.plots_path).geometry.iloc[0].equals(b.geometry.iloc[0])


def test_windows_render_identically_to_the_whole() -> None:
    """Strips must join seamlessly: any window equals the same crop of a larger render."""
    scene = build_scene(3, 0, SIZE, 0.014, 9, 10.0)
    big_rgba, big_truth = render_window(scene, (400, 1500), (300, 1400))
    rgba, truth = render_window(scene, (777, 1301), (911, 1333))
    assert np.array_equal(rgba, big_rgba[:, 377:901, 611:1033])
    assert np.array_equal(truth, big_truth[377:901, 611:1033])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epsg": 4326}, "demo.epsg"),
        ({"plot_size_m": 14.0}, "demo.size_px"),
        ({"plot_size_m": 0.2}, "demo.plot_size_m"),
    ],
)
def test_bad_settings_raise_input_error(
    settings: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=message):
        make_demo_data(_cfg(**settings), tmp_path / "x")
    assert not (tmp_path / "x" / "sites").exists()


def test_second_season_spreads_spurge_on_a_shifted_smaller_flight(demo: DemoResult, tmp_path: Path) -> None:
    two = make_demo_data(_cfg(seed=0, years=2), tmp_path / "two")
    # the first season does not depend on how many seasons are made
    assert np.array_equal(_read(two.ortho_paths[0]), _read(demo.ortho_paths[0]))
    later = two.later_orthos[2][0]
    assert later == tmp_path / "two" / "year2" / "sites" / "site01" / "ortho.tif"
    with rasterio.open(two.ortho_paths[0]) as a, rasterio.open(later) as b:
        assert b.crs == a.crs and b.width == b.height == SIZE - 60
        dx, dy = (b.transform.c - a.transform.c) / a.res[0], (a.transform.f - b.transform.f) / a.res[1]
        assert (round(dx, 6), round(dy, 6)) == (27, 15)  # ~0.1 cell: under the quarter cell change warns at
    t1 = _read(two.truth_paths[0])[0][15:15 + SIZE - 60, 27:27 + SIZE - 60]
    t2 = _read(two.later_truths[2][0])[0]
    both = (t1 != 255) & (t2 != 255)
    assert both.mean() > 0.9
    s1, s2 = (t1[both] == 1).mean(), (t2[both] == 1).mean()
    assert s2 > 1.4 * s1  # one season of spread
    # spread grows around last year's patches: new spurge lies near old spurge
    from scipy.ndimage import distance_transform_edt

    near_old = distance_transform_edt(~((t1 == 1) & both)) * 0.014 < 3.0  # within 3 m
    new = (t2 == 1) & (t1 != 1) & both
    assert near_old[new].mean() > 0.8
