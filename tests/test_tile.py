"""Plot-aligned tiling: pixels, geometry, labels, CRS and masks, checked against independent reads."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import GSD, UTM, make_rgba, px_to_map, square, texture, write_csv, write_plots, write_raster
from rasterio.enums import ColorInterp
from scipy.ndimage import map_coordinates

from spurgemap.geo.tiles import read_tile
from spurgemap.tile import TileInputs, run_tile


def _tile(tmp: Path, cfg, ortho: Path, plots: Path, **kw):
    return run_tile(cfg, TileInputs([ortho], plots, tmp / "tiles", **kw))


def _index(tmp: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(tmp / "tiles" / "tiles.gpkg").set_index("tile_id")


def _read(tmp: Path, rel: str):
    with rasterio.open(tmp / "tiles" / rel) as ds:
        return ds.read(), ds.transform, ds.crs, ds.read_masks(1)


def test_axis_aligned_plot_gives_exact_pixels(tmp_path, cfg):
    ortho = make_rgba(tmp_path / "o.tif")
    with rasterio.open(ortho) as ds:
        src = ds.read([1, 2, 3])
    # a 10 m plot = 714.3 px: 2 x 2 tiles of 250 px, centred, margins of ~107 px
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s1", plot_id="A", presence="present",
                                                   geometry=square(*px_to_map(600, 550), 10.0))])
    res = _tile(tmp_path, cfg, ortho, plots)
    assert res.n_tiles == 4
    idx = _index(tmp_path)
    assert sorted(idx.index) == ["s1_A_r0c0", "s1_A_r0c1", "s1_A_r1c0", "s1_A_r1c1"]
    for _tid, row in idx.iterrows():
        data, transform, crs, _ = _read(tmp_path, row["path"])
        col_off = round((transform.c - px_to_map(0, 0)[0]) / GSD)
        row_off = round((px_to_map(0, 0)[1] - transform.f) / GSD)
        assert transform.a == pytest.approx(GSD) and transform.b == 0
        assert crs.to_epsg() == 32612
        np.testing.assert_array_equal(data, src[:, row_off:row_off + 250, col_off:col_off + 250])
        assert row["resampling"] == "none" and row["rotation_deg"] == 0
        assert row["valid_fraction"] == 1.0 and row["plot_fraction"] == 1.0
    # the grid is centred in the plot: plot spans 242.9..957.1 px -> tiles start at 350 - 250 = 100 + ...
    r0c0 = idx.loc["s1_A_r0c0"].geometry.bounds
    plot_left = px_to_map(600, 0)[0] - 5.0
    assert r0c0[0] - plot_left == pytest.approx((714.2857 - 500) / 2 * GSD, abs=GSD)


def test_rotated_plot_is_resampled_in_its_own_frame(tmp_path, cfg):
    ortho = make_rgba(tmp_path / "o.tif", h=1400, w=1400)
    with rasterio.open(ortho) as ds:
        src = ds.read([1, 2, 3]).astype(float)
        inv = ~ds.transform
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s1", plot_id="R", presence="absent",
                                                   geometry=square(*px_to_map(700, 700), 10.0, 30))])
    res = _tile(tmp_path, cfg, ortho, plots)
    assert res.n_tiles == 4  # frame-aligned 2 x 2, not a bounding-box cut
    idx = _index(tmp_path)
    for _, row in idx.iterrows():
        data, t, _, _ = _read(tmp_path, row["path"])
        assert row["rotation_deg"] == pytest.approx(30, abs=0.01)
        assert np.hypot(t.a, t.d) == pytest.approx(GSD) and abs(t.b) > 0  # rotated geotransform
        jj, ii = np.mgrid[0:250, 0:250] + 0.5
        xs, ys = t @ (ii, jj)
        cols, rows = inv @ (xs, ys)
        # independent bilinear sample at pixel centres (scipy indexes pixel centres at integers)
        ref = np.stack([map_coordinates(src[b], [rows - 0.5, cols - 0.5], order=1) for b in range(3)])
        diff = np.abs(data.astype(float) - ref)[:, 2:-2, 2:-2]
        assert diff.mean() < 0.6 and diff.max() <= 3
        assert row["plot_fraction"] == 1.0
    # the four tiles lie inside the rotated plot
    plot = square(*px_to_map(700, 700), 10.0, 30)
    assert all(plot.buffer(1e-6).contains(g) for g in idx.geometry)


@pytest.mark.parametrize("collar", [0, 300], ids=["inside", "over_collar"])
def test_rotated_blocks_give_the_pixels_of_per_tile_warps(tmp_path, cfg, monkeypatch, collar):
    """Rotated plots are warped a block of tiles at a time; blocks must not change pixels or order."""
    from spurgemap.tile import worker

    ortho = make_rgba(tmp_path / "o.tif", h=1500, w=1500, collar=collar)
    # 11 m at 1.4 cm/px = 786 px: 3 x 3 tiles, warped as blocks of 2 x 2, 2 x 1, 1 x 2 and 1 x 1
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s1", plot_id="R", presence="absent",
                                                   geometry=square(*px_to_map(750, 750), 11.0, 20))])
    results = {}
    for block in (2, 1):
        monkeypatch.setattr(worker, "ROTATED_BLOCK", block)
        out = tmp_path / f"b{block}"
        res = run_tile(cfg, TileInputs([ortho], plots, out))
        idx = gpd.read_file(out / "tiles.gpkg")
        results[block] = {tid: read_tile(out / rel) for tid, rel in zip(idx.tile_id, idx.path, strict=True)}
        assert res.n_tiles + sum(res.skipped.values()) == 9
        assert list(idx.tile_id) == sorted(idx.tile_id)  # row-major, whatever the block order
    assert results[2].keys() == results[1].keys()
    for tid, data in results[1].items():
        assert np.abs(results[2][tid].astype(int) - data).max() <= 1, tid


def test_labels_survey_and_verification(tmp_path, cfg):
    ortho = make_rgba(tmp_path / "o.tif", h=1600, w=1600)
    plots = write_plots(tmp_path / "p.geojson", [
        dict(site_id="s1", plot_id="A", geometry=square(*px_to_map(400, 400), 10.0)),
        dict(site_id="s1", plot_id="B", geometry=square(*px_to_map(1200, 1200), 10.0, 20)),
        dict(site_id="s1", plot_id="C", geometry=square(*px_to_map(400, 1200), 10.0)),
    ])
    survey = write_csv(tmp_path / "survey.csv", "site_id,plot_id,presence,cover_pct,surveyor",
                       "s1,A, Present ,12.5,ann", "s1,B,NO,0,bob")
    verify = write_csv(tmp_path / "verify.csv", "tile_id,label", "s1_A_r1c1,absent")
    res = _tile(tmp_path, cfg, ortho, plots, survey=survey, verify=verify)
    idx = _index(tmp_path)
    assert res.unlabelled_plots == ["s1/C"]
    a = idx[idx.plot_id == "A"]
    assert set(a.label) == {"present", "absent"}
    assert idx.loc["s1_A_r1c1", "label"] == "absent" and idx.loc["s1_A_r1c1", "label_source"] == "verify"
    assert (a.drop(index="s1_A_r1c1").class_id == 1).all()
    assert (idx[idx.plot_id == "B"].label == "absent").all()
    assert set(a.surveyor) == {"ann"} and set(a.cover_pct.astype(float)) == {12.5}
    assert res.per_site == {"s1": {"no_spurge": 5, "leafy_spurge": 3}}


def test_plots_in_another_crs_are_reprojected(tmp_path, cfg):
    ortho = make_rgba(tmp_path / "o.tif")
    native = square(*px_to_map(600, 600), 10.0, 15)
    gpd.GeoDataFrame({"site_id": ["s"], "plot_id": ["P"], "presence": ["yes"]},
                     geometry=[native], crs=UTM).to_crs(4326).to_file(tmp_path / "p4326.geojson")
    write_plots(tmp_path / "pn.gpkg", [dict(site_id="s", plot_id="P", presence="yes", geometry=native)])
    _tile(tmp_path, cfg, ortho, tmp_path / "p4326.geojson")
    a = _index(tmp_path)
    run_tile(cfg, TileInputs([ortho], tmp_path / "pn.gpkg", tmp_path / "tiles2"))
    b = gpd.read_file(tmp_path / "tiles2" / "tiles.gpkg").set_index("tile_id")
    assert a.crs.to_epsg() == 32612 and len(a) == 4
    for tid in a.index:
        assert a.loc[tid].geometry.hausdorff_distance(b.loc[tid].geometry) < 0.001


def test_alpha_collar_and_nodata_tiles_are_skipped(tmp_path, cfg):
    # left 400 columns transparent: a plot straddling it loses its left tiles
    ortho = make_rgba(tmp_path / "o.tif", collar=400)
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s", plot_id="P", presence="present",
                                                   geometry=square(*px_to_map(400, 600), 10.0))])
    res = _tile(tmp_path, cfg, ortho, plots)
    assert res.n_tiles == 2 and res.skipped == {"no_valid_pixels": 2}
    assert set(_index(tmp_path).col) == {1}
    # same with a nodata value instead of alpha; lowering the threshold keeps a partial tile, masked
    rgb = texture(1200, 1200)
    rgb[:, :, :300] = 0
    nod = write_raster(tmp_path / "n.tif", rgb, nodata=0)
    cfg.tile.min_valid_fraction = 0.3
    run_tile(cfg, TileInputs([nod], plots, tmp_path / "t2"))
    idx = gpd.read_file(tmp_path / "t2" / "tiles.gpkg").set_index("tile_id")
    partial = idx[idx.valid_fraction < 1]
    assert len(partial) == 2 and partial.valid_fraction.between(0.3, 0.9).all()
    with rasterio.open(tmp_path / "t2" / partial.iloc[0]["path"]) as ds:
        m = ds.read_masks(1)
        assert (m == 0).mean() == pytest.approx(1 - partial.iloc[0]["valid_fraction"], abs=0.01)


def test_point_survey_gives_one_centred_tile(tmp_path, cfg):
    ortho = make_rgba(tmp_path / "o.tif")
    x, y = px_to_map(600, 500)
    csv = write_csv(tmp_path / "pts.csv", "site_id,plot_id,easting,northing,epsg,presence",
                    f"s,p1,{x},{y},32612,present", f"s,p2,{x + 5},{y - 5},32612,absent")
    res = _tile(tmp_path, cfg, ortho, csv)
    idx = _index(tmp_path)
    assert res.n_tiles == 2
    c = idx.loc["s_p1_r0c0"].geometry.centroid
    assert abs(c.x - x) <= GSD and abs(c.y - y) <= GSD
    assert idx.loc["s_p1_r0c0", "plot_fraction"] == pytest.approx(0.25 / (250 * GSD) ** 2, rel=0.05)


def test_uint16_needs_and_uses_value_range(tmp_path, cfg):
    data = (texture(600, 600).astype(np.uint16) * 16)  # 12-bit values
    ortho = write_raster(tmp_path / "o16.tif", data)
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s", plot_id="P", presence="1",
                                                   geometry=square(*px_to_map(300, 300), 3.5))])
    from spurgemap.core.errors import InputError

    with pytest.raises(InputError, match="value-range"):
        _tile(tmp_path, cfg, ortho, plots)
    cfg.tile.value_range = (0.0, 4095.0)
    _tile(tmp_path, cfg, ortho, plots)
    idx = _index(tmp_path)
    tile_data, t, _, _ = _read(tmp_path, idx.iloc[0]["path"])
    col, row = ~rasterio.open(ortho).transform @ (t.c, t.f)
    expect = np.clip(np.rint(data[:, round(row):round(row) + 250, round(col):round(col) + 250] / 4095 * 255),
                     0, 255)
    np.testing.assert_array_equal(tile_data, expect)


def test_band_order_from_colour_interpretation(tmp_path, cfg):
    rgb = texture(600, 600)
    bgr = rgb[::-1].copy()
    ortho = write_raster(tmp_path / "bgr.tif", bgr,
                         colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    plots = write_plots(tmp_path / "p.gpkg", [dict(site_id="s", plot_id="P", presence="1",
                                                   geometry=square(*px_to_map(300, 300), 3.5))])
    _tile(tmp_path, cfg, ortho, plots)
    data, t, _, _ = _read(tmp_path, _index(tmp_path).iloc[0]["path"])
    col, row = (round(v) for v in ~rasterio.open(ortho).transform @ (t.c, t.f))
    np.testing.assert_array_equal(data, rgb[:, row:row + 250, col:col + 250])
