"""ISO 11783-10 (ISOXML V4-3) task data: treatment zones as polygons or as a type-2 grid.

Why by hand (ElementTree): the file is small and fixed in shape, and every number must be a plain
decimal (terminals reject exponent notation); the tests validate it against the V4-3 XSD.
One task (TSK) holds one treatment zone (TZN) per spray zone with its process data value
(PDV, DDI 1 = setpoint volume per area application rate in mm³/m², 1 L/ha = 100 mm³/m²), and a
zero-rate zone 0 used by the terminal outside every zone, outside the field and on lost position.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS
from shapely import Polygon, contains_xy, get_parts
from shapely.geometry.base import BaseGeometry

from spurgemap.geo.vector import reproject

DDI_VOLUME_PER_AREA = "0001"  # setpoint volume per area application rate, mm³/m²
MM3_PER_M2_PER_L_HA = 100  # 1 L/ha = 1e6 mm³ / 1e4 m²
OFF_ZONE = 0  # treatment zone code of "no spray" (default, out of field, position lost)
MAX_ZONES = 254 - 1  # codes 1..253 (0 is the off zone, 254 is the schema's maximum)


@dataclass
class IsoZone:
    name: str
    rate_l_per_ha: float
    geometry: BaseGeometry  # in the map CRS
    area_m2: float


def plain(value: float, digits: int = 9) -> str:
    """A plain decimal (never 1e-05), trailing zeros dropped."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _points(parent: ET.Element, coords: Sequence[tuple[float, float]]) -> None:
    for lon, lat in coords:  # closed: the first point repeated last, as V4 readers expect
        ET.SubElement(parent, "PNT", {"A": "2", "C": plain(lat), "D": plain(lon)})


def _polygon(parent: ET.Element, poly: Polygon, name: str, area_m2: float, kind: str = "2") -> None:
    """A PLN: kind 2 = treatment zone, 1 = partfield boundary."""
    pln = ET.SubElement(parent, "PLN", {"A": kind, "B": name[:32], "C": str(round(area_m2))})
    ext = ET.SubElement(pln, "LSG", {"A": "1"})
    _points(ext, list(poly.exterior.coords))
    for ring in poly.interiors:
        _points(ET.SubElement(pln, "LSG", {"A": "2"}), list(ring.coords))


def _root(software_version: str) -> ET.Element:
    return ET.Element("ISO11783_TaskData", {
        "VersionMajor": "4", "VersionMinor": "3", "ManagementSoftwareManufacturer": "spurgemap",
        "ManagementSoftwareVersion": software_version[:32], "DataTransferOrigin": "1"})


def _rate(rate_l_per_ha: float) -> str:
    return str(round(rate_l_per_ha * MM3_PER_M2_PER_L_HA))


def grid_codes(zones_wgs84: Sequence[BaseGeometry], cell_m: float) -> tuple[np.ndarray, float, float, float, float]:
    """Zone codes (1..n, 0 outside) on a lon/lat grid of about ``cell_m``: rows from the south.

    Returns (codes, min_lat, min_lon, cell_lat_deg, cell_lon_deg); a cell takes the zone that holds
    its centre (the later zone when zones touch).
    """
    minx = min(g.bounds[0] for g in zones_wgs84)
    miny = min(g.bounds[1] for g in zones_wgs84)
    maxx = max(g.bounds[2] for g in zones_wgs84)
    maxy = max(g.bounds[3] for g in zones_wgs84)
    dlat = cell_m / 111_320.0
    dlon = cell_m / (111_320.0 * math.cos(math.radians((miny + maxy) / 2)))
    rows = max(1, math.ceil((maxy - miny) / dlat))
    cols = max(1, math.ceil((maxx - minx) / dlon))
    lat = miny + (np.arange(rows) + 0.5) * dlat
    lon = minx + (np.arange(cols) + 0.5) * dlon
    codes = np.zeros((rows, cols), np.uint8)
    for code, zone in enumerate(zones_wgs84, 1):  # each zone tests only the cells under its bounds
        x0, y0, x1, y1 = zone.bounds
        c0, c1 = max(int((x0 - minx) // dlon), 0), min(int((x1 - minx) // dlon) + 1, cols)
        r0, r1 = max(int((y0 - miny) // dlat), 0), min(int((y1 - miny) // dlat) + 1, rows)
        glon, glat = np.meshgrid(lon[c0:c1], lat[r0:r1])
        window = codes[r0:r1, c0:c1]
        window[contains_xy(zone, glon, glat)] = code
    return codes, miny, minx, dlat, dlon


def write_taskdata(folder: Path, zones: Sequence[IsoZone], crs_wkt: str, *, task: str, software_version: str,
                   product: str | None = None, grid_cell_m: float | None = None,
                   field: tuple[BaseGeometry, float] | None = None) -> list[Path]:
    """``folder/TASKDATA.XML`` (and ``GRD00000.bin`` with a grid); zones in the map CRS, areas in m².

    ``field`` (boundary in the map CRS, area in m²) becomes the task's partfield (PFD), which some
    terminals need to import a prescription.
    """
    folder.mkdir(parents=True, exist_ok=True)
    to_wgs84 = CRS.from_epsg(4326).to_wkt()
    wgs84 = reproject([z.geometry for z in zones], crs_wkt, to_wgs84)
    root = _root(software_version)
    if product:
        ET.SubElement(root, "PDT", {"A": "PDT1", "B": product[:32], "F": "1"})
    ET.SubElement(root, "VPN", {"A": "VPN1", "B": "0", "C": "0.01", "D": "1", "E": "l/ha"})
    task_attrs = {"A": "TSK1", "B": task[:32]}
    if field is not None:
        boundary, area = field
        pfd = ET.SubElement(root, "PFD", {"A": "PFD1", "C": task[:32], "D": str(round(area))})
        (outline,) = reproject([boundary], crs_wkt, to_wgs84)
        for part in get_parts(outline):
            _polygon(pfd, part, task, area * part.area / max(outline.area, 1e-30), kind="1")
        task_attrs["E"] = "PFD1"
    tsk = ET.SubElement(root, "TSK", {**task_attrs, "G": "1", "H": str(OFF_ZONE), "I": str(OFF_ZONE),
                                      "J": str(OFF_ZONE)})
    pdv_extra = {"C": "PDT1"} if product else {}

    def zone(code: int, name: str, rate: float) -> ET.Element:
        tzn = ET.SubElement(tsk, "TZN", {"A": str(code), "B": name[:32]})
        ET.SubElement(tzn, "PDV", {"A": DDI_VOLUME_PER_AREA, "B": _rate(rate), **pdv_extra, "E": "VPN1"})
        return tzn

    zone(OFF_ZONE, "no spray", 0.0)
    for code, (z, geom) in enumerate(zip(zones, wgs84, strict=True), 1):
        tzn = zone(code, z.name, z.rate_l_per_ha)
        if grid_cell_m is None:
            for part in get_parts(geom):
                _polygon(tzn, part, z.name, z.area_m2 * part.area / max(geom.area, 1e-30))
    written = [folder / "TASKDATA.XML"]
    if grid_cell_m is not None and zones:
        codes, lat0, lon0, dlat, dlon = grid_codes(wgs84, grid_cell_m)
        data = codes.tobytes()  # one byte per cell, row 0 the southern row, west to east
        ET.SubElement(tsk, "GRD", {"A": plain(lat0), "B": plain(lon0), "C": plain(dlat, 12), "D": plain(dlon, 12),
                                   "E": str(codes.shape[1]), "F": str(codes.shape[0]), "G": "GRD00000",
                                   "H": str(len(data)), "I": "2"})
        (folder / "GRD00000.bin").write_bytes(data)
        written.append(folder / "GRD00000.bin")
    ET.indent(root, space=" ")
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    (folder / "TASKDATA.XML").write_text(xml, encoding="utf-8")
    return written
