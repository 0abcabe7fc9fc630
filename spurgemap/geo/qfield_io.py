"""File IO of the QField package: the observation GeoPackage, context layers and an offline basemap.

Why here: geo/ is the only package that touches GDAL, rasterio, pyproj or geopandas; the project XML
itself (``fieldwork/qfield.py``) is plain text.
"""

from __future__ import annotations

import logging
import math
import shutil
import sqlite3
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.geometry.base import BaseGeometry

from spurgemap.geo.fieldwork_io import write_vector
from spurgemap.geo.vector import read_plots, reproject

log = logging.getLogger(__name__)


def crs_xml_fields(crs_wkt: str) -> dict[str, str]:
    """What a QGIS ``<spatialrefsys>`` holds: authid (QGIS reads it first), WKT, PROJ string, name."""
    crs = CRS.from_wkt(crs_wkt)
    auth = crs.to_authority(min_confidence=70)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "you will likely lose ...": QGIS reads authid and WKT first
        proj4 = crs.to_proj4() or ""
    return {"wkt": crs.to_wkt(), "proj4": proj4, "authid": f"{auth[0]}:{auth[1]}" if auth else "",
            "srid": auth[1] if auth and auth[0] == "EPSG" else "", "description": crs.name,
            "geographicflag": "true" if crs.is_geographic else "false"}


def write_observations(path: Path, table: pd.DataFrame, geoms: Sequence[BaseGeometry], crs_wkt: str,
                       layer: str, fields: Sequence[tuple[str, str]]) -> Path:
    """The visits as one point layer plus empty (NULL) columns for the crew: ``fields`` is (name, SQL type).

    Why SQL: pandas has no nullable column GDAL writes as a GeoPackage INTEGER or DATE; QGIS and QField
    read the declared type and pick the form widget's value type from it.
    """
    write_vector(path, table, geoms, crs_wkt, layer=layer, geometry_type="Point")
    con = sqlite3.connect(path)
    try:
        for name, sql_type in fields:
            con.execute(f'ALTER TABLE "{layer}" ADD COLUMN "{name}" {sql_type}')
        con.commit()
    finally:
        con.close()
    return path


def write_context_layers(path: Path, sources: Sequence[Path], crs_wkt: str) -> dict[str, str]:
    """Surveyed plots/points (any layer ``tile`` reads) into one GeoPackage in the map CRS.

    Returns {layer name: geometry type} for the project: polygons go to ``plots``, points to
    ``surveyed_points`` (a layer holds one geometry type).
    """
    polys: list[tuple[str, str, BaseGeometry]] = []
    pts: list[tuple[str, str, BaseGeometry]] = []
    for src in sources:
        layer = read_plots(Path(src))
        geoms = reproject(layer.geoms, layer.crs_wkt, crs_wkt)
        for s, p, g in zip(layer.site_ids, layer.plot_ids, geoms, strict=True):
            (pts if g.geom_type == "Point" else polys).append((s, p, g))
    written: dict[str, str] = {}
    for name, rows, gtype in (("plots", polys, "MultiPolygon"), ("surveyed_points", pts, "Point")):
        if rows:
            table = pd.DataFrame({"site_id": [r[0] for r in rows], "plot_id": [r[1] for r in rows]})
            write_vector(path, table, [r[2] for r in rows], crs_wkt, layer=name, geometry_type=gtype)
            written[name] = gtype
    return written


def copy_vector_layer(src: Path, dst: Path, layer: str, crs_wkt: str) -> str | None:
    """One polygon layer (predict's presence polygons, a zones file) into ``dst``; its geometry type or None."""
    import geopandas as gpd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gdf = gpd.read_file(src)
    except Exception as exc:  # an optional context layer: the package is still useful without it
        log.warning("%s: not added to the QField project (%s)", src, str(exc).splitlines()[0])
        return None
    if gdf.empty or gdf.crs is None:
        return None
    gdf = gdf.to_crs(CRS.from_wkt(crs_wkt))
    table = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    write_vector(dst, table, list(gdf.geometry), crs_wkt, layer=layer, geometry_type="MultiPolygon")
    return "MultiPolygon"


def read_polygons(path: Path | None, crs_wkt: str) -> list[BaseGeometry]:
    """Polygons of a zones layer in the map CRS, to outline on the field sheet; [] when unreadable."""
    import geopandas as gpd

    if path is None:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gdf = gpd.read_file(path)
    except Exception:  # an optional outline: the sheet is still useful without it
        return []
    if gdf.empty or gdf.crs is None:
        return []
    gdf = gdf.to_crs(CRS.from_wkt(crs_wkt))
    return [g for g in gdf.geometry if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]


def write_basemap(src: Path, dst: Path, max_side_px: int) -> bool:
    """The orthomosaic as a JPEG-compressed Cloud-Optimized GeoTIFF (alpha becomes a mask), for offline use.

    Why JPEG: a phone holds a whole site at a tenth of the deflate size. Larger than ``max_side_px`` on
    its longer side, it is averaged down. Returns False (with a warning) for imagery that is not 8-bit RGB.
    """
    try:
        ds = rasterio.open(src)
    except rasterio.errors.RasterioIOError as exc:
        log.warning("%s: no basemap in the QField project (%s)", src, str(exc).splitlines()[0])
        return False
    with ds:
        if ds.count not in (3, 4) or ds.dtypes[0] != "uint8" or ds.crs is None:
            log.warning("%s: no basemap in the QField project (needs 8-bit RGB or RGBA with a CRS, found %d "
                        "band(s) of %s)", src, ds.count, ds.dtypes[0])
            return False
        factor = max(1.0, max(ds.width, ds.height) / max_side_px)
        opts: dict[str, Any] = {"driver": "COG", "compress": "JPEG", "quality": 85, "blocksize": 512,
                                "overviews": "AUTO", "resampling": "AVERAGE", "overview_resampling": "AVERAGE"}
        if factor == 1.0:
            rasterio.shutil.copy(ds, dst, **opts)
        else:
            w, h = math.ceil(ds.width / factor), math.ceil(ds.height / factor)
            t = ds.transform @ ds.transform.scale(ds.width / w, ds.height / h)
            with WarpedVRT(ds, width=w, height=h, transform=t, resampling=Resampling.average) as vrt:
                rasterio.shutil.copy(vrt, dst, **opts)
    return True


def copy_raster(src: Path, dst: Path) -> Path:
    """A map raster copied as it is (predict's COGs are already small)."""
    shutil.copyfile(src, dst)
    return dst


def raster_crs_wkt(path: Path) -> str:
    with rasterio.open(path) as ds:
        return str(ds.crs.to_wkt())


def map_source(prob_path: Path) -> Path | None:
    """The orthomosaic a predict map was made from (its ``source`` tag), when that file is still there."""
    try:
        with rasterio.open(prob_path) as ds:
            src = ds.tags().get("source")
    except rasterio.errors.RasterioIOError:
        return None
    if not src:
        return None
    path = Path(src)
    if not path.is_absolute():
        path = prob_path.parent / path
    return path if path.exists() else None


def raster_extent(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as ds:
        b = ds.bounds
    return (float(b.left), float(b.bottom), float(b.right), float(b.top))


def read_rgb_window(path: Path, bounds: tuple[float, float, float, float], max_side_px: int,
                    crs_wkt: str) -> tuple[np.ndarray, tuple[float, float, float, float]] | None:
    """The orthomosaic over ``bounds`` (map CRS), read down to ``max_side_px``: (h, w, 4) uint8 RGBA and its
    extent, for printing; None when it cannot be read or is not in the map CRS."""
    from rasterio.windows import Window

    try:
        with rasterio.open(path) as ds:
            if ds.crs is None or CRS.from_wkt(ds.crs.to_wkt()) != CRS.from_wkt(crs_wkt) or ds.count < 3:
                return None
            inv = ~ds.transform
            c0, r0 = inv @ (bounds[0], bounds[3])
            c1, r1 = inv @ (bounds[2], bounds[1])
            # clipped to the raster, not a boundless read (rasterio's boundless path warns about Affine *)
            col, row = max(0, math.floor(min(c0, c1))), max(0, math.floor(min(r0, r1)))
            col1, row1 = min(ds.width, math.ceil(max(c0, c1))), min(ds.height, math.ceil(max(r0, r1)))
            if col1 <= col or row1 <= row:
                return None
            win = Window(col, row, col1 - col, row1 - row)
            factor = max(1.0, max(win.width, win.height) / max_side_px)
            shape = (max(1, int(win.height / factor)), max(1, int(win.width / factor)))
            rgb = ds.read([1, 2, 3], window=win, out_shape=(3, *shape), resampling=Resampling.average)
            mask = ds.dataset_mask(window=win, out_shape=shape, resampling=Resampling.nearest)
            left, top = ds.transform @ (col, row)
            right, bottom = ds.transform @ (col + win.width, row + win.height)
    except rasterio.errors.RasterioIOError:
        return None
    if rgb.dtype != np.uint8:
        return None
    rgba = np.concatenate([rgb, mask[None].astype(np.uint8)]).transpose(1, 2, 0)
    return rgba, (float(left), float(min(bottom, top)), float(right), float(max(bottom, top)))


def utm_of(lon: np.ndarray, lat: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """WGS 84 UTM coordinates in the zone of the points' mean longitude (one zone per site, as a GPS shows)."""
    from pyproj import Transformer

    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    zone = int((float(np.mean(lon)) + 180) // 6) % 60 + 1
    north = float(np.mean(lat)) >= 0
    tr = Transformer.from_crs(4326, (32600 if north else 32700) + zone, always_xy=True)
    e, n = tr.transform(lon, lat)
    return f"{zone}{'N' if north else 'S'}", np.asarray(e, float), np.asarray(n, float)
