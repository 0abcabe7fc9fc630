"""One campaign-wide presence layer: every site's presence polygons in one CRS, with a site column."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS
from pyproj.exceptions import CRSError

from spurgemap.core.errors import InputError


def campaign_crs(text: str | None, first_map: Path | None) -> str:
    """The campaign CRS as WKT: `--campaign-crs` when given, else that of the first finished map."""
    if text:
        try:
            return CRS.from_user_input(text).to_wkt()
        except CRSError:
            raise InputError(f"--campaign-crs {text!r}: not a CRS (use e.g. EPSG:32612)") from None
    if first_map is None:
        return CRS.from_epsg(4326).to_wkt()
    return CRS.from_user_input(pyogrio.read_info(first_map, layer="presence")["crs"]).to_wkt()


def crs_name(wkt: str) -> str:
    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def merge_presence(layers: list[tuple[str, Path]], crs_wkt: str, out: Path) -> int:
    """Each site's `presence` layer reprojected from its native CRS to `crs_wkt`; returns polygons."""
    frames = []
    for site, path in layers:
        gdf = gpd.read_file(path, layer="presence", engine="pyogrio")
        gdf.insert(0, "site", site)
        frames.append(gdf.to_crs(crs_wkt) if gdf.crs is not None else gdf.set_crs(crs_wkt))
    columns = ["site", "area_m2", "area_ha"]
    merged = (gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs_wkt) if frames
              else gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=crs_wkt))
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    tmp.unlink(missing_ok=True)
    merged.to_file(tmp, driver="GPKG", layer="presence", geometry_type="MultiPolygon", promote_to_multi=True,
                   engine="pyogrio")
    os.replace(tmp, out)
    return len(merged)
