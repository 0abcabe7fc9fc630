"""File IO of the field-work commands: map rasters in, GPKG/GPX/SHP/KML/CSV/GeoTIFF out.

The map folder's layout (names, NODATA, summary) is `spurgemap.predict.mapset`'s; this module reads bands.

Why here: geo/ is the only package that touches rasterio, GDAL, pyproj or geopandas; the field-work
logic in ``spurgemap.fieldwork`` stays numpy + shapely and is tested on arrays.
"""

from __future__ import annotations

import csv
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from spurgemap.core.errors import InputError
from spurgemap.geo.maps import polygons_of, write_cog
from spurgemap.geo.vector import map_scale, read_plots, reproject


def read_band(path: Path) -> tuple[np.ndarray, Affine, str, dict[str, str]]:
    """Band 1 of a georeferenced GeoTIFF with its transform, CRS and tags; a bad file is one clear line."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"{path}: has no CRS; use the files `spurgemap predict` wrote")
            return src.read(1), src.transform, src.crs.to_wkt(), src.tags()
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: not a readable GeoTIFF ({str(exc).splitlines()[0]})") from None


def units_per_m(crs_wkt: str, x: float, y: float) -> float:

    try:
        return map_scale(crs_wkt, x, y)
    except Exception:  # a CRS pyproj cannot relate to the ellipsoid: trust its linear unit
        return 1.0 / (CRS.from_wkt(crs_wkt).axis_info[0].unit_conversion_factor or 1.0)


def transform_xy(xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, src: str,
                 dst: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates from one CRS to another; a CRS pair that cannot be related is one clear line."""
    try:
        src_crs, dst_crs = CRS.from_user_input(src), CRS.from_user_input(dst)
        if src_crs == dst_crs:
            return np.asarray(xs, float), np.asarray(ys, float)
        tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
        x2, y2 = tr.transform(np.asarray(xs, float), np.asarray(ys, float), errcheck=True)
    except Exception as exc:
        raise InputError(f"{what}: CRSs cannot be matched ({str(exc).splitlines()[0]})") from None
    return np.asarray(x2, float), np.asarray(y2, float)


def same_crs(a_wkt: str, b_wkt: str) -> bool:
    return bool(CRS.from_wkt(a_wkt) == CRS.from_wkt(b_wkt))


def read_layer_geoms(path: Path, crs_wkt: str) -> tuple[list[BaseGeometry], list[str]]:
    """Plots or survey points (any format ``tile`` reads) in the map's CRS, with 'site/plot' labels."""

    layer = read_plots(Path(path))
    geoms = reproject(layer.geoms, layer.crs_wkt, crs_wkt)
    labels = [f"{s}/{p}" for s, p in zip(layer.site_ids, layer.plot_ids, strict=True)]
    return geoms, labels


def mask_polygons(mask: np.ndarray, transform: Affine) -> list[BaseGeometry]:

    return polygons_of(mask, transform)


def write_vector(path: Path, table: pd.DataFrame, geoms: Sequence[BaseGeometry], crs_wkt: str, *,
                 driver: str = "GPKG", layer: str | None = None, to_wgs84: bool = False,
                 geometry_type: str | None = None) -> Path:
    """One layer with geopandas/pyogrio (GPKG, ESRI Shapefile, KML/LIBKML)."""
    gdf = gpd.GeoDataFrame(table.reset_index(drop=True), geometry=list(geoms), crs=crs_wkt)
    if to_wgs84:
        gdf = gdf.to_crs(4326)
    kwargs: dict[str, Any] = {}
    if geometry_type is not None:
        kwargs.update(geometry_type=geometry_type, promote_to_multi=geometry_type.startswith("Multi"))
    if layer is not None:
        kwargs["layer"] = layer
    if driver == "GPKG":  # GeoPackage 1.3: what QGIS 3.22's GDAL reads without a warning (as predict writes)
        kwargs["dataset_options"] = {"VERSION": "1.3"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapefile field-width notes
        gdf.to_file(path, driver=driver, engine="pyogrio", **kwargs)
    return path


def kml_driver() -> str:
    """LIBKML when this GDAL has it (styles, schema), else the plain KML driver."""
    return "LIBKML" if "w" in pyogrio.list_drivers().get("LIBKML", "") else "KML"


def write_gpx(path: Path, names: Sequence[str], descs: Sequence[str], lon: np.ndarray, lat: np.ndarray,
              route_name: str) -> Path:
    """GPX 1.1 waypoints plus one route through them in the given order (any GPS app, QGIS)."""
    ns = "http://www.topografix.com/GPX/1/1"
    root = ET.Element("gpx", {"version": "1.1", "creator": "spurgemap", "xmlns": ns})
    points = list(zip(names, descs, np.asarray(lon).tolist(), np.asarray(lat).tolist(), strict=True))
    for name, desc, x, y in points:
        wpt = ET.SubElement(root, "wpt", {"lat": f"{y:.8f}", "lon": f"{x:.8f}"})
        ET.SubElement(wpt, "name").text = name
        ET.SubElement(wpt, "desc").text = desc
    rte = ET.SubElement(root, "rte")
    ET.SubElement(rte, "name").text = route_name
    for name, desc, x, y in points:
        pt = ET.SubElement(rte, "rtept", {"lat": f"{y:.8f}", "lon": f"{x:.8f}"})
        ET.SubElement(pt, "name").text = name
        ET.SubElement(pt, "desc").text = desc
    ET.indent(root, space="  ")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
    return path


def write_rows(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_class_raster(path: Path, data: np.ndarray, transform: Affine, crs_wkt: str,
                       colormap: dict[int, tuple[int, int, int, int]], tags: dict[str, str], description: str,
                       nodata: int) -> Path:

    write_cog(path, data.astype(np.uint8), transform, crs_wkt, nodata, tags, colormap=colormap,
              overview_resampling="nearest", description=description)
    return path


def embed_style(gpkg: Path, layer: str, qml: str, name: str) -> None:
    """Store a default style in the GeoPackage's ``layer_styles`` table, as QGIS does itself.

    Why: QGIS prefers it over a sidecar ``.qml``, so a vector can be styled even when its sidecar name
    is taken (``change.qml`` belongs to ``change.tif``).
    """
    import sqlite3

    con = sqlite3.connect(gpkg)
    try:
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                               (layer,)).fetchone()[0]
        con.execute("CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                    "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
                    "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
                    "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME)")
        con.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                    "VALUES ('layer_styles', 'attributes', 'layer_styles')")
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, 'spurgemap', '', NULL, '2000-01-01T00:00:00Z')",
                    (layer, geom_col, name, qml))
        con.commit()
    finally:
        con.close()
