"""Styled KMZ of the spray zones for Google Earth and phones (GDAL's LIBKML driver).

Why: a plain KML opens in Google Earth's default look. LIBKML turns each feature's OGR style
string (the ``OGR_STYLE`` field) into an inline KML ``<Style>``; zones are filled by how likely
spurge is (yellow -> red) and a point layer puts a label (zone number and rate) on each zone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from shapely.geometry.base import BaseGeometry


def has_libkml() -> bool:
    return "w" in pyogrio.list_drivers().get("LIBKML", "")


def colour(prob: float) -> str:
    """An OGR colour #RRGGBB for a probability 0..1: yellow (just over the threshold) to red (sure)."""
    p = min(max(prob, 0.0), 1.0)
    return f"#FF{round(220 * (1 - p)):02X}00"


def write_zones_kmz(path: Path, names: Sequence[str], descriptions: Sequence[str], probs: Sequence[float],
                    zones: Sequence[BaseGeometry], crs_wkt: str) -> Path:
    """One ``zones`` layer: the filled polygons, then a labelled point on each zone (LIBKML's append is
    unreliable for KMZ, and one mixed layer is what Google Earth shows as one folder)."""
    styles = [f"BRUSH(fc:{colour(p)}99);PEN(c:{colour(p)}FF,w:2px)" for p in probs]
    polys = gpd.GeoDataFrame({"Name": list(names), "Description": list(descriptions), "OGR_STYLE": styles},
                             geometry=list(zones), crs=crs_wkt).to_crs(4326)
    points = [z.point_on_surface() for z in zones]
    label_style = [f'SYMBOL(c:#FFFFFFFF,s:0.5);LABEL(c:#FFFFFFFF,t:"{n}")' for n in names]
    labels = gpd.GeoDataFrame({"Name": list(names), "Description": list(descriptions), "OGR_STYLE": label_style},
                              geometry=points, crs=crs_wkt).to_crs(4326)
    both = gpd.GeoDataFrame(pd.concat([polys, labels], ignore_index=True), crs=4326)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both.to_file(path, driver="LIBKML", layer="zones", engine="pyogrio", geometry_type="Unknown")
    return path
