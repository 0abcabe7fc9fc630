"""Prescription Shapefiles in the profile each sprayer terminal reads.

Why: terminals differ in what they accept (checked against their documentation): Raven, John
Deere and Trimble want WGS 84; John Deere an integer ``RATE`` in an ``Rx/`` folder with 8.3 file
names; Trimble ``TGT_RATE``; AgFusion reads the rate by column position (the first), at most 100
zones and 250 KB. Every profile names its files after the site, so prescriptions of several
sites can share a card.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from spurgemap.geo.fieldwork_io import write_vector
from spurgemap.geo.vector import reproject


@dataclass(frozen=True)
class Profile:
    wgs84: bool
    rate_field: str
    integer_rate: bool
    rate_first: bool
    max_zones: int
    max_bytes: int | None
    folder: str  # below ZONES/
    zipped: bool = False  # also one .zip of the Shapefile's parts (what a web portal upload takes)


PROFILES = {
    "generic": Profile(False, "RATE", False, False, 253, None, "."),
    "raven": Profile(True, "RATE", False, False, 253, None, "raven"),
    "deere": Profile(True, "RATE", True, False, 253, None, "deere/Rx"),
    "trimble": Profile(True, "TGT_RATE", False, False, 253, None, "trimble"),
    "agfusion": Profile(True, "RATE", False, True, 100, 250_000, "agfusion", zipped=True),
}
SHP_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def name_83(site: str) -> str:
    """An 8.3 stem (upper-case letters and digits, at most 8), unique per site name."""
    stem = re.sub(r"[^A-Z0-9]", "", site.upper()) or "ZONES"
    if len(stem) <= 8:
        return stem
    return stem[:5] + hashlib.sha1(site.encode()).hexdigest()[:3].upper()


def shapefile_path(out: Path, terminal: str, site: str) -> Path:
    prof = PROFILES[terminal]
    stem = name_83(site) if terminal == "deere" else f"{site}_zones"
    return out / prof.folder / f"{stem}.shp"


def shapefile_bytes(shp: Path) -> int:
    return sum(p.stat().st_size for p in (shp.with_suffix(s) for s in SHP_PARTS) if p.exists())


def write_terminal_shapefile(out: Path, terminal: str, site: str, table: pd.DataFrame,
                             zones: Sequence[BaseGeometry], crs_wkt: str) -> tuple[Path, float]:
    """The profile's Shapefile from a zone table (zone_id, area_m2, perimeter_m, mean_prob, rate, spray_volume_l).

    Returns (path, simplification in degrees applied to fit the size limit, 0 when none).
    """
    prof = PROFILES[terminal]
    path = shapefile_path(out, terminal, site)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = table["rate"].astype(float)
    cols: dict[str, object] = {"ZONE_ID": table.zone_id.astype("int32"), "AREA_M2": table.area_m2.astype(float),
                               "PERIM_M": table.perimeter_m.astype(float), "MEANPROB": table.mean_prob.astype(float),
                               prof.rate_field: rate.round().astype("int32") if prof.integer_rate else rate,
                               "VOL_L": pd.to_numeric(table.spray_volume_l, errors="coerce").fillna(0.0).astype(float)}
    if prof.rate_first:
        cols = {prof.rate_field: cols.pop(prof.rate_field), **cols}
    else:  # the rate field after the zone's own figures, as before, but not last
        cols = {k: cols[k] for k in ("ZONE_ID", "AREA_M2", "PERIM_M", "MEANPROB", prof.rate_field, "VOL_L")}
    frame = pd.DataFrame(cols)
    geoms = list(zones)
    crs = crs_wkt
    if prof.wgs84:
        crs = CRS.from_epsg(4326).to_wkt()
        geoms = reproject(geoms, crs_wkt, crs)
    tolerance = 0.0
    write_vector(path, frame, geoms, crs, driver="ESRI Shapefile", geometry_type="Polygon")
    while prof.max_bytes is not None and shapefile_bytes(path) > prof.max_bytes:
        tolerance = tolerance * 2 if tolerance else 2e-7  # ~2 cm, doubling
        simpler = [shapely.simplify(g, tolerance, preserve_topology=True) for g in geoms]
        write_vector(path, frame, simpler, crs, driver="ESRI Shapefile", geometry_type="Polygon")
    if prof.zipped:
        with zipfile.ZipFile(path.with_suffix(".zip"), "w", zipfile.ZIP_DEFLATED) as zf:
            for part in (path.with_suffix(s) for s in SHP_PARTS):
                if part.exists():
                    zf.write(part, part.name)
    return path, tolerance
