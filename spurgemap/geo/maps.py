"""Map outputs QGIS opens as they are: COG rasters with provenance tags, RFC 7946 GeoJSON, GeoPackage.

Every file is written to a temporary name and renamed, so a reader never sees half a map. GDAL's
GeoPackage timestamps are pinned to the run's time so that a resumed run is byte-identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from shapely import Polygon, box
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from spurgemap.core.errors import InputError


def _tmp(path: Path) -> Path:
    """Hidden temporary sibling that keeps the extension (GDAL drivers check it)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_cog(path: Path, data: np.ndarray, transform: Affine, crs_wkt: str, nodata: int,
              tags: dict[str, str], colormap: dict[int, tuple[int, int, int, int]] | None = None,
              overview_resampling: str = "average", description: str = "") -> None:
    """A uint8 Cloud-Optimized GeoTIFF with internal overviews: (h, w) data, or (bands, h, w) with
    one `|`-separated description per band."""
    bands = data if data.ndim == 3 else data[None]
    staging = path.with_name(f".{path.name}.src.tif")
    profile = {"driver": "GTiff", "width": bands.shape[2], "height": bands.shape[1], "count": len(bands),
               "dtype": "uint8", "crs": CRS.from_wkt(crs_wkt), "transform": transform, "nodata": nodata}
    if colormap:
        profile["photometric"] = "palette"
    with rasterio.open(staging, "w", **profile) as dst:
        if colormap:
            dst.write_colormap(1, colormap)
        dst.write(bands)
        dst.update_tags(**tags)
        if description:
            for i, text in enumerate(description.split("|"), start=1):
                dst.set_band_description(i, text)
    tmp = _tmp(path)
    rasterio.shutil.copy(staging, tmp, driver="COG", compress="DEFLATE", predictor="2", blocksize=256,
                         overview_resampling=overview_resampling.upper(), resampling=overview_resampling.upper(),
                         overviews="AUTO")
    staging.unlink()
    os.replace(tmp, path)


def cell_boxes(transform: Affine, rows: np.ndarray, cols: np.ndarray) -> list[Polygon]:
    """Map polygons of grid cells (north-up transform)."""
    x0, y0 = transform.c + cols * transform.a, transform.f + rows * transform.e
    x1, y1 = x0 + transform.a, y0 + transform.e
    return [box(a, d, c, b) for a, b, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist(), strict=True)]


def write_geojson_4326(path: Path, table: pd.DataFrame, geoms: list[BaseGeometry], crs_wkt: str) -> None:
    """RFC 7946: lon/lat WGS 84, right-hand (counter-clockwise) exterior rings."""
    gdf = gpd.GeoDataFrame(table, geometry=geoms, crs=crs_wkt).to_crs(4326)
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    gdf.to_file(tmp, driver="GeoJSON", RFC7946="YES", COORDINATE_PRECISION=8)
    os.replace(tmp, path)


def write_gpkg(path: Path, table: pd.DataFrame, geoms: list[BaseGeometry], crs_wkt: str, layer: str,
               timestamp: str) -> None:
    gdf = gpd.GeoDataFrame(table, geometry=geoms, crs=crs_wkt)
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    # geometry type fixed so an empty layer still opens as polygons; GPKG 1.3 for QGIS 3.22's GDAL
    # pyogrio links its own GDAL: the pinned date must be set there, not through rasterio.Env
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": timestamp})
    try:
        gdf.to_file(tmp, driver="GPKG", layer=layer, geometry_type="MultiPolygon", promote_to_multi=True,
                    dataset_options={"VERSION": "1.3"})
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
    os.replace(tmp, path)


def polygons_of(mask: np.ndarray, transform: Affine) -> list[BaseGeometry]:
    """Dissolved polygons of the True cells of a (small, cell-grid) mask."""
    if not mask.any():
        return []
    out = [shape(geom) for geom, value in shapes(mask.astype(np.uint8), mask=mask, transform=transform,
                                                  connectivity=4) if value == 1]
    return out


def read_aoi(path: Path, crs_wkt: str) -> BaseGeometry:
    """An AOI layer dissolved into one geometry in the raster's CRS."""
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
    if gdf.empty or gdf.crs is None:
        raise InputError(f"{path}: the AOI layer is empty or has no CRS")
    geom = gdf.to_crs(crs_wkt).geometry.make_valid().union_all()
    return geom


def rasterize_on_tiles(tile_paths: list[Path], layer: Path) -> np.ndarray:
    """A polygon layer (any CRS) burnt into each tile's own grid: (N, H, W) bool, True inside."""
    from rasterio.features import rasterize

    masks = []
    geom_by_crs: dict[str, object] = {}
    for path in tile_paths:
        with rasterio.open(path) as src:
            wkt = src.crs.to_wkt()
            if wkt not in geom_by_crs:
                geom_by_crs[wkt] = read_aoi(layer, wkt)
            geom = geom_by_crs[wkt]
            shape = (src.height, src.width)
            if getattr(geom, "is_empty", True):
                masks.append(np.zeros(shape, bool))
                continue
            masks.append(rasterize([(geom, 1)], out_shape=shape, transform=src.transform, fill=0,
                                   dtype="uint8").astype(bool))
    return np.stack(masks)
