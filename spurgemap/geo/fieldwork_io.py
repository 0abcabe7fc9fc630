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
from spurgemap.geo.damage import damage_guard, gdal_message
from spurgemap.geo.maps import polygons_of, write_cog
from spurgemap.geo.raster import OrthoReader, open_ortho
from spurgemap.geo.vector import map_scale, read_plots, reproject


def read_band(path: Path) -> tuple[np.ndarray, Affine, str, dict[str, str]]:
    """Band 1 of a georeferenced GeoTIFF with its transform, CRS and tags; a bad file is one clear line."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a GeoTIFF")
    with damage_guard(path):  # truncated / overwritten: one line naming the damage, no raw GDAL warnings
        try:
            with rasterio.open(path) as src:
                if src.crs is None:
                    raise InputError(f"{path}: has no CRS; use the files `spurgemap predict` wrote")
                return src.read(1), src.transform, src.crs.to_wkt(), src.tags()
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: not a readable GeoTIFF ({gdal_message(exc)})") from None


def require_metres(crs_wkt: str, path: Path, command: str) -> None:
    """Buffers, spacings and areas are in ground metres: a map in degrees (EPSG:4326) would make a 1 m
    buffer 1 degree wide, so `zones` and `survey-plan` need a projected map."""
    crs = CRS.from_wkt(crs_wkt)
    if not crs.is_projected:
        raise InputError(f"{path}: the map is in {crs.name} (degrees); `{command}` needs a map in a "
                         "projected CRS in metres (e.g. UTM): run predict on a projected orthomosaic "
                         "(gdalwarp -t_srs EPSG:326NN)")


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


def tile_valid_fractions(ortho: Path, transform: Affine, crs_wkt: str, wanted: np.ndarray,
                         window_px: int) -> np.ndarray:
    """Valid share of the ``window_px`` tile that `tile` would cut around each wanted cell's centre.

    Why: `tile` skips a point plot's tile under ``tile.min_valid_fraction``; predict maps edge cells
    with far fewer valid pixels, so a plan drawn from the map alone loses visits when tiled. The
    orthomosaic is read one cell row at a time (full width strips); NaN where not wanted.
    """
    info = open_ortho(Path(ortho), 1)
    if not same_crs(info.crs_wkt, crs_wkt):
        raise InputError(f"{ortho}: is not in the map's CRS; give the orthomosaic the map was made from")
    out = np.full(wanted.shape, np.nan)
    it = info.transform  # both grids north-up (open_ortho and read_map refuse others)
    half = window_px / 2
    with OrthoReader(info) as reader:
        for r in np.flatnonzero(wanted.any(axis=1)):
            cols = np.flatnonzero(wanted[r])
            px = (transform.c + (cols + 0.5) * transform.a - it.c) / it.a
            py = (transform.f + (r + 0.5) * transform.e - it.f) / it.e
            c0 = np.rint(px - half).astype(int)
            r0 = int(np.rint(py - half))
            lo, hi = int(c0.min()), int(c0.max()) + window_px
            if info.mask_kind == "none":  # only the raster's own extent limits validity
                valid = np.zeros((window_px, hi - lo), bool)
                valid[max(-r0, 0):max(min(info.height - r0, window_px), 0),
                      max(-lo, 0):max(min(info.width - lo, hi - lo), 0)] = True
            else:
                valid = reader.read(lo, r0, hi - lo, window_px)[1]
            cum = np.concatenate([[0], np.cumsum(valid.sum(axis=0))])
            out[r, cols] = (cum[c0 - lo + window_px] - cum[c0 - lo]) / window_px**2
    return out


def utm_coordinates(lon: np.ndarray, lat: np.ndarray, x: np.ndarray, y: np.ndarray,
                    crs_wkt: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Easting, northing and EPSG code for a crew's GNSS: the map's own CRS when it is a metric EPSG
    CRS (UTM for drone maps), else the UTM zone (WGS 84) of the points' centre."""
    crs = CRS.from_wkt(crs_wkt)
    epsg = crs.to_epsg()
    metric = crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter")
    if epsg is not None and metric:
        return np.asarray(x, float), np.asarray(y, float), int(epsg)
    lon0, lat0 = float(np.mean(lon)), float(np.mean(lat))
    zone = min(int((lon0 + 180) // 6) + 1, 60)
    code = (32600 if lat0 >= 0 else 32700) + zone
    e, n = transform_xy(lon, lat, "EPSG:4326", f"EPSG:{code}", "UTM coordinates")
    return e, n, code


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
              route_name: str, types: Sequence[str] | None = None, start: tuple[float, float] | None = None,
              time: str | None = None) -> Path:
    """GPX 1.1 waypoints plus one route through them in the given order (any GPS app, QGIS).

    ``types``: each waypoint's ``<type>`` (the visit kind, which GPS apps can filter on); ``start``:
    (lon, lat) of the walk's start, the route's first point, so the app navigates from there; ``time``:
    ``<metadata><time>`` (ISO 8601 UTC), when the plan was made. Child order follows the GPX 1.1 schema.
    """
    ns = "http://www.topografix.com/GPX/1/1"
    root = ET.Element("gpx", {"version": "1.1", "creator": "spurgemap", "xmlns": ns})
    meta = ET.SubElement(root, "metadata")
    ET.SubElement(meta, "name").text = route_name
    if time is not None:
        ET.SubElement(meta, "time").text = time
    kinds = list(types) if types is not None else [None] * len(names)
    points = list(zip(names, descs, np.asarray(lon).tolist(), np.asarray(lat).tolist(), kinds, strict=True))
    for name, desc, x, y, kind in points:
        wpt = ET.SubElement(root, "wpt", {"lat": f"{y:.8f}", "lon": f"{x:.8f}"})
        ET.SubElement(wpt, "name").text = name
        ET.SubElement(wpt, "desc").text = desc
        if kind is not None:
            ET.SubElement(wpt, "type").text = kind
    rte = ET.SubElement(root, "rte")
    ET.SubElement(rte, "name").text = route_name
    if start is not None:
        pt = ET.SubElement(rte, "rtept", {"lat": f"{start[1]:.8f}", "lon": f"{start[0]:.8f}"})
        ET.SubElement(pt, "name").text = "start"
        ET.SubElement(pt, "type").text = "start"
    for name, desc, x, y, kind in points:
        pt = ET.SubElement(rte, "rtept", {"lat": f"{y:.8f}", "lon": f"{x:.8f}"})
        ET.SubElement(pt, "name").text = name
        ET.SubElement(pt, "desc").text = desc
        if kind is not None:
            ET.SubElement(pt, "type").text = kind
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


def set_layer_description(gpkg: Path, layer: str, text: str) -> None:
    """The GeoPackage's own description of a layer (``gpkg_contents``), shown by QGIS and ogrinfo."""
    import sqlite3

    con = sqlite3.connect(gpkg)
    try:
        con.execute("UPDATE gpkg_contents SET description = ? WHERE table_name = ?", (text, layer))
        con.commit()
    finally:
        con.close()


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
