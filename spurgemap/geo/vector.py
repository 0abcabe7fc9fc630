"""Plot layers in, tile indexes out: the only place that reads or writes vector files."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from shapely import Point, make_valid
from shapely.geometry.base import BaseGeometry

from spurgemap.core.errors import InputError
from spurgemap.geo.tables import ID_COLUMNS, find_column, read_csv

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}
_EASTING = ["easting", "east", "utm_e", "x"]
_NORTHING = ["northing", "north", "utm_n", "y"]
_LON = ["lon", "longitude", "long"]
_LAT = ["lat", "latitude"]


@dataclass
class PlotLayer:
    """Plots as shapely geometries in one CRS, with their attribute table (no geometry column)."""

    site_ids: list[str]
    plot_ids: list[str]
    geoms: list[BaseGeometry]
    crs_wkt: str
    attributes: pd.DataFrame
    source: str
    repaired: list[str] = field(default_factory=list)

    @property
    def is_points(self) -> bool:
        return bool(self.geoms) and all(isinstance(g, Point) for g in self.geoms)


def _points_from_csv(path: Path, crs: str | None) -> gpd.GeoDataFrame:
    df = read_csv(path)
    cols = list(df.columns)
    e, n = find_column(cols, _EASTING), find_column(cols, _NORTHING)
    lon, lat = find_column(cols, _LON), find_column(cols, _LAT)
    epsg_col = find_column(cols, ["epsg", "crs", "srid"])
    if e and n:
        xcol, ycol = e, n
        if crs is None and epsg_col is not None:
            codes = set(df[epsg_col].astype(str).str.strip())
            if len(codes) != 1:
                raise InputError(f"{path}: rows use several EPSG codes {sorted(codes)}; split the file")
            crs = f"EPSG:{codes.pop().upper().removeprefix('EPSG:')}"
        if crs is None:
            raise InputError(f"{path}: easting/northing need an 'epsg' column or --crs EPSG:<code>")
    elif lon and lat:
        xcol, ycol, crs = lon, lat, crs or "EPSG:4326"
    else:
        raise InputError(f"{path}: a point CSV needs easting,northing (+ epsg) or lon,lat columns")
    try:
        xs, ys = pd.to_numeric(df[xcol]), pd.to_numeric(df[ycol])
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric coordinates ({exc})") from None
    try:
        return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(xs, ys), crs=crs)
    except Exception as exc:
        raise InputError(f"{path}: unknown CRS {crs!r} ({str(exc).splitlines()[0]})") from None


def read_plots(path: Path, crs: str | None = None) -> PlotLayer:
    """Read plot polygons or survey points (vector file or point CSV), validated and repaired."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes)")
    if path.suffix.lower() == ".csv":
        gdf = _points_from_csv(path, crs)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gdf = gpd.read_file(path)
        except Exception as exc:
            raise InputError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
        if crs is not None:
            gdf = gdf.set_crs(crs, allow_override=True)
    if gdf.empty:
        raise InputError(f"{path}: contains no features")
    if gdf.crs is None:
        raise InputError(f"{path}: has no CRS; save it with one or pass --crs EPSG:<code>")
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    site_col = find_column(cols, ID_COLUMNS["site_id"])
    plot_col = find_column(cols, ID_COLUMNS["plot_id"])
    if plot_col is None or site_col is None:
        raise InputError(f"{path}: needs columns plot_id and site_id (found {cols})")
    sites = gdf[site_col].astype(str).str.strip().tolist()
    plots = gdf[plot_col].astype(str).str.strip().tolist()
    empty = [i + 1 for i, (s, p) in enumerate(zip(sites, plots, strict=False)) if not s or not p or p == "None"]
    if empty:
        raise InputError(f"{path}: features {empty[:10]} have an empty site_id or plot_id")
    counts = Counter(zip(sites, plots, strict=True))
    dups = sorted(f"{s}/{p}" for (s, p), n in counts.items() if n > 1)
    if dups:
        raise InputError(f"{path}: duplicate plot ids: {', '.join(dups[:10])}")
    geoms, repaired = [], []
    for s, p, g in zip(sites, plots, gdf.geometry, strict=False):
        if g is None or g.is_empty:
            raise InputError(f"{path}: plot {s}/{p} has no geometry")
        if g.geom_type not in ("Polygon", "MultiPolygon", "Point"):
            raise InputError(f"{path}: plot {s}/{p} is a {g.geom_type}; use polygons or points")
        if not g.is_valid:
            g = make_valid(g)
            if g.geom_type == "GeometryCollection":
                g = g.buffer(0)
            if g.is_empty or g.area == 0:
                raise InputError(f"{path}: plot {s}/{p} has an invalid geometry that cannot be repaired")
            repaired.append(f"{s}/{p}")
        geoms.append(g)
    if repaired:
        log.warning("%s: repaired invalid geometries of plots %s", path, ", ".join(repaired))
    attrs = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    attrs = attrs.rename(columns={site_col: "site_id", plot_col: "plot_id"})
    return PlotLayer(sites, plots, geoms, gdf.crs.to_wkt(), attrs, str(path), repaired)


def reproject(geoms: list[BaseGeometry], src_wkt: str, dst_wkt: str) -> list[BaseGeometry]:
    src, dst = CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt)
    if src == dst:
        return list(geoms)
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return [shapely.transform(g, tr.transform, interleaved=False) for g in geoms]


def map_scale(crs_wkt: str, x: float, y: float) -> float:
    """Map units per ground metre at a point (UTM ~0.9996-1.0004, Web Mercator 1/cos(lat))."""
    from pyproj import Proj

    crs = CRS.from_wkt(crs_wkt)
    geodetic = crs.geodetic_crs
    assert geodetic is not None
    lon, lat = Transformer.from_crs(crs, geodetic, always_xy=True).transform(x, y)
    unit = crs.axis_info[0].unit_conversion_factor or 1.0
    return float(Proj(crs).get_factors(lon, lat).meridional_scale) / unit


def write_tile_index(path: Path, records: list[dict[str, Any]], geoms: list[BaseGeometry],
                     crs_wkt: str, layer: str = "tiles") -> None:
    gdf = gpd.GeoDataFrame(pd.DataFrame(records), geometry=geoms, crs=crs_wkt)
    mode = "a" if path.exists() else "w"
    gdf.to_file(path, layer=layer, driver="GPKG", mode=mode)


def read_tile_index(path: Path) -> gpd.GeoDataFrame:
    """All layers of a tiles.gpkg (one per orthomosaic CRS), concatenated."""
    import pyogrio

    if not path.exists():
        raise InputError(f"{path}: no tile index; run `spurgemap tile` first")
    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    frames = [gpd.read_file(path, layer=name) for name in layers]
    if len(frames) == 1:
        return frames[0]
    return pd.concat([f.to_crs(frames[0].crs) for f in frames], ignore_index=True)


def bounds_in_metres(index: gpd.GeoDataFrame) -> Any:
    """(N, 4) minx, miny, maxx, maxy of each footprint in metres: the index CRS when it is metric,
    else its local UTM zone, so distances between sites need no CRS downstream."""
    crs = index.crs
    if crs is not None and crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        return index.geometry.bounds.to_numpy(float)
    if crs is None:
        raise InputError("tile index has no CRS; re-run `spurgemap tile`")
    return index.to_crs(index.estimate_utm_crs()).geometry.bounds.to_numpy(float)
