"""The tifffile tile writer against the GDAL one: GDAL must read back the same georeferencing,
CRS, pixels and mask, and CRSs without an exact EPSG code must fall back to GDAL."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from conftest import GSD, ORIGIN, make_rgba, px_to_map, square, write_plots
from rasterio.crs import CRS

from spurgemap.core.hashing import file_sha256
from spurgemap.geo.geotiff import write_rgb_geotiff
from spurgemap.geo.raster import gdal_session
from spurgemap.geo.tiles import write_tile, write_tile_gdal
from spurgemap.tile import TileInputs, run_tile

NORTH_UP = Affine(GSD, 0, ORIGIN[0] + 0.3, 0, -GSD, ORIGIN[1] - 0.7)
ROTATED = NORTH_UP @ Affine.rotation(25)
# a transverse Mercator that is no EPSG CRS (central meridian -111.5)
CUSTOM_TM = ("+proj=tmerc +lat_0=0 +lon_0=-111.5 +k=0.9996 +x_0=500000 +y_0=0 +datum=WGS84 "
             "+units=m +no_defs")


def _pixels(seed: int = 0, size: int = 250) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    valid = np.ones((size, size), bool)
    valid[:17] = False  # a collar, as on an orthomosaic edge
    valid[100:110, 40:43] = False
    return rgb, valid


def _both(tmp_path: Path, rgb, valid, transform, crs_wkt: str, compress: str) -> tuple[Path, Path]:
    fast, ref = tmp_path / "fast.tif", tmp_path / "gdal.tif"
    with gdal_session(64):
        assert write_rgb_geotiff(fast, rgb, valid, transform, crs_wkt, compress)
        write_tile_gdal(ref, rgb, valid, transform, crs_wkt, compress)
    return fast, ref


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north_up", "rotated"])
@pytest.mark.parametrize("compress", ["none", "deflate"])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "all_valid"])
def test_tifffile_tile_reads_back_like_gdal_tile(tmp_path, transform, compress, masked):
    rgb, valid = _pixels()
    if not masked:
        valid[:] = True
    crs = CRS.from_epsg(32612).to_wkt()
    fast, ref = _both(tmp_path, rgb, valid, transform, crs, compress)
    with rasterio.open(fast) as f, rasterio.open(ref) as g:
        assert f.transform == g.transform == transform
        assert f.crs == g.crs and f.crs.to_epsg() == 32612 and f.crs.to_wkt() == g.crs.to_wkt()
        assert f.profile == g.profile  # dtype, count, interleave, compression, blocks
        assert f.colorinterp == g.colorinterp
        np.testing.assert_array_equal(f.read(), rgb)
        np.testing.assert_array_equal(f.read(), g.read())
        assert f.mask_flag_enums == g.mask_flag_enums
        np.testing.assert_array_equal(f.dataset_mask(), np.where(valid, 255, 0))
        np.testing.assert_array_equal(f.read_masks(1), g.read_masks(1))
        # tifffile always adds the baseline X/YResolution tags; nothing else may differ
        assert {k: v for k, v in f.tags().items() if "RESOLUTION" not in k} == g.tags()
    # the GeoTIFF keys are the ones GDAL writes, byte for byte
    with tifffile.TiffFile(fast) as tf, tifffile.TiffFile(ref) as tg:
        for code in (34735, 34737):
            assert tf.pages[0].tags[code].value == tg.pages[0].tags[code].value
        assert len(tf.pages) == len(tg.pages) == (2 if masked else 1)


def test_strided_input_is_written_in_order(tmp_path):
    """The tiler passes views into a larger plot read; the writer must not assume contiguity."""
    big, _ = _pixels(1, size=400)
    view = big[:, 50:300, 100:350]
    fast, _ = _both(tmp_path, view, np.ones((250, 250), bool), NORTH_UP,
                    CRS.from_epsg(32612).to_wkt(), "none")
    with rasterio.open(fast) as f:
        np.testing.assert_array_equal(f.read(), view)


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north_up", "rotated"])
def test_template_tiles_are_the_bytes_tifffile_writes(tmp_path, transform):
    """Uncompressed, fully valid tiles are patched into a cached template: same bytes as tifffile."""
    from spurgemap.geo import geotiff

    wkt = CRS.from_epsg(32612).to_wkt()
    big, _ = _pixels(5, size=400)
    valid = np.ones((250, 250), bool)
    geotiff._template.cache_clear()
    for i, (view, t) in enumerate([(big[:, 0:250, 0:250], transform),
                                   (big[:, 100:350, 120:370], transform @ Affine.translation(37, -12))]):
        fast, ref = tmp_path / f"fast{i}.tif", tmp_path / f"ref{i}.tif"
        assert write_rgb_geotiff(fast, view, valid, t, wkt, "none")
        with tifffile.TiffWriter(ref) as tif:
            geotiff._write_pages(tif, view, valid, geotiff._georef_tags(t), wkt, "none", 1)
        assert fast.read_bytes() == ref.read_bytes()
        with rasterio.open(fast) as f:
            assert f.transform.almost_equals(t, precision=1e-9)
            np.testing.assert_array_equal(f.read(), view)
    assert geotiff._template.cache_info().hits == 1  # the second tile came from the template


@pytest.mark.parametrize("crs", [CUSTOM_TM, "EPSG:2263", "EPSG:4326"], ids=["no_epsg", "us_feet", "degrees"])
def test_crs_without_exact_metric_epsg_falls_back_to_gdal(tmp_path, crs):
    rgb, valid = _pixels()
    wkt = CRS.from_user_input(crs).to_wkt()
    assert not write_rgb_geotiff(tmp_path / "x.tif", rgb, valid, NORTH_UP, wkt, "none")
    assert not (tmp_path / "x.tif").exists()
    with gdal_session(64):
        write_tile(tmp_path / "t.tif", rgb, valid, ROTATED, wkt, "none")
    with rasterio.open(tmp_path / "t.tif") as f:
        assert f.crs == CRS.from_wkt(wkt) and f.transform == ROTATED
        np.testing.assert_array_equal(f.read(), rgb)
        np.testing.assert_array_equal(f.dataset_mask(), np.where(valid, 255, 0))


def test_lzw_falls_back_to_gdal(tmp_path):
    rgb, valid = _pixels()
    crs = CRS.from_epsg(32612).to_wkt()
    assert not write_rgb_geotiff(tmp_path / "x.tif", rgb, valid, NORTH_UP, crs, "lzw")
    with gdal_session(64):
        write_tile(tmp_path / "t.tif", rgb, valid, NORTH_UP, crs, "lzw")
    with rasterio.open(tmp_path / "t.tif") as f:
        assert f.compression.name == "lzw"
        np.testing.assert_array_equal(f.read(), rgb)


def test_tiling_a_non_epsg_orthomosaic_keeps_its_crs(tmp_path, cfg):
    """End to end through the fallback: tiles carry the orthomosaic's own CRS and hash."""
    ortho = make_rgba(tmp_path / "o.tif", collar=60, crs=CRS.from_proj4(CUSTOM_TM))
    plots = write_plots(tmp_path / "p.gpkg", [
        dict(site_id="s1", plot_id="A", presence="present", geometry=square(*px_to_map(600, 550), 10.0)),
        dict(site_id="s1", plot_id="B", presence="absent", geometry=square(*px_to_map(560, 600), 7.0, 30))],
        crs=CRS.from_proj4(CUSTOM_TM))
    res = run_tile(cfg, TileInputs([ortho], plots, tmp_path / "tiles"))
    assert res.n_tiles == 8  # 2 x 2 tiles per plot
    with rasterio.open(ortho) as src:
        crs = src.crs
    digest = file_sha256(ortho)
    assert res.summary["orthomosaics"][0]["sha256"] == digest
    index = gpd.read_file(tmp_path / "tiles" / "tiles.gpkg")
    assert set(index["source_sha256"]) == {digest}
    for rel in index["path"]:
        with rasterio.open(tmp_path / "tiles" / rel) as t:
            assert t.crs == crs and t.crs.to_epsg() is None


def test_background_hash_can_be_stopped(tmp_path):
    """run_tile hashes the source while tiling; a failed run must not wait for a whole-file hash."""
    data = tmp_path / "f.bin"
    data.write_bytes(b"x" * 3000)
    assert file_sha256(data, chunk=1000) == hashlib.sha256(b"x" * 3000).hexdigest()
    stop = threading.Event()
    stop.set()
    with pytest.raises(RuntimeError, match="stopped"):
        file_sha256(data, chunk=1000, stop=stop)


def test_rotated_resampling_fast_path_matches_the_alpha_path():
    """Fully valid patches skip GDAL's alpha band; the pixels must not change."""
    from affine import Affine as A

    from spurgemap.geo.tiles import resample_into_frame

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (3, 420, 420), dtype=np.uint8)
    src_t = A(0.014, 0, 500_000, 0, -0.014, 5_200_000)
    dst_t = A.translation(500_000 + 0.014 * 150, 5_200_000 - 0.014 * 40) @ A.rotation(-25) @ A.scale(0.014, -0.014)
    wkt = __import__("pyproj").CRS.from_epsg(32612).to_wkt()
    valid = np.ones((420, 420), bool)
    fast_rgb, fast_valid = resample_into_frame(rgb, valid, src_t, dst_t, wkt, (250, 250), "bilinear")
    valid_slow = valid.copy()
    valid_slow[-1, -1] = False  # far outside the tile: forces the alpha path without touching the tile
    slow_rgb, slow_valid = resample_into_frame(rgb, valid_slow, src_t, dst_t, wkt, (250, 250), "bilinear")
    assert fast_valid.all() and slow_valid.all()
    assert np.array_equal(fast_rgb, slow_rgb)
