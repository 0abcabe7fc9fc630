"""`spurgemap zones`: spot-spray treatment zones from the present cells of a map.

Present cells are dissolved and buffered (GNSS and boom error), slivers of holes and specks of
zones below the minimum area are dropped, and outlines are simplified for sprayer terminals, which
choke on thousands of vertices. Simplification never uncovers a present cell: the simplified
zones are unioned with the present cells themselves.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shapely import Polygon, contains_xy, get_parts, union_all
from shapely.geometry.base import BaseGeometry

from spurgemap.config import SpurgemapConfig, ZonesConfig
from spurgemap.core.errors import InputError
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.fieldwork.prescriptions import check_date, site_name, write_field_outputs, zone_cap
from spurgemap.fieldwork.preview import zones_preview
from spurgemap.fieldwork.styles import zones_vector_qml
from spurgemap.fieldwork.treatment import dose_columns, dose_summary
from spurgemap.fieldwork.zone_cap import cap_zones
from spurgemap.geo import fieldwork_io as io
from spurgemap.geo.fieldwork_io import write_rows
from spurgemap.predict.mapset import read_map

log = logging.getLogger(__name__)


@dataclass
class ZonesInputs:
    maps: Path
    out: Path
    name: str | None = None
    overwrite: bool = False
    site: str | None = None  # file names and records; default the map's name (its folder's for "ortho")
    date: str | None = None  # observation date YYYY-MM-DD; default the flight date in the tags
    examiner: str | None = None


@dataclass
class ZonesResult:
    out: Path
    files: dict[str, Path]
    zones: int
    treated_area_m2: float
    summary: dict[str, Any]


def _fill_small_holes(geom: BaseGeometry, min_area: float) -> list[Polygon]:
    out = []
    for poly in get_parts(geom):
        if isinstance(poly, Polygon) and not poly.is_empty:
            keep = [ring for ring in poly.interiors if Polygon(ring).area >= min_area]
            out.append(Polygon(poly.exterior, keep))
    return out


def make_zones(present: list[BaseGeometry], buffer: float, min_area: float, simplify: float) -> list[Polygon]:
    """Zones in map units (buffer and simplify in map units, min_area in map units²), west to east."""
    if not present:
        return []
    cover = union_all(present)
    grown = cover.buffer(buffer, quad_segs=4, join_style="mitre", mitre_limit=2.0) if buffer > 0 else cover
    filled = union_all(_fill_small_holes(grown, min_area))
    if simplify > 0:
        filled = union_all([filled.simplify(simplify, preserve_topology=True), cover])
    zones = [p for p in _fill_small_holes(filled, min_area) if p.area >= min_area]
    return sorted(zones, key=lambda p: (p.bounds[0], -p.bounds[3]))


def zone_table(zones: list[Polygon], cx: np.ndarray, cy: np.ndarray, prob: np.ndarray, units_per_m: float,
               config: SpurgemapConfig) -> pd.DataFrame:
    """Area, perimeter, mean probability of the present cells inside, rate, spray volume and dose per zone."""
    rows = []
    for i, z in enumerate(zones, 1):
        inside = contains_xy(z, cx, cy)
        area = z.area / units_per_m**2
        rows.append({"zone_id": i, "area_m2": round(area, 3), "area_ha": round(area / 1e4, 6),
                     "perimeter_m": round(z.length / units_per_m, 3), "present_cells": int(inside.sum()),
                     "mean_prob": round(float(prob[inside].mean()), 4) if inside.any() else 0.0})
    cols = ["zone_id", "area_m2", "area_ha", "perimeter_m", "present_cells", "mean_prob"]
    table = pd.DataFrame(rows, columns=cols)
    return pd.concat([table, dose_columns(table.area_ha.astype(float), config)], axis=1)


def _sane(params: ZonesConfig, cell_m: float) -> ZonesConfig:
    """--simplify beyond --buffer would cut the outline into the safety buffer: clamp it, and say so; a
    buffer of many cells is legal but worth a word (the config already refuses > 1 km)."""
    if params.buffer_m > 0 and params.simplify_m > params.buffer_m:
        log.warning("--simplify %g m is larger than --buffer %g m and would eat into the safety buffer; "
                    "simplifying by %g m", params.simplify_m, params.buffer_m, params.buffer_m)
        params = params.model_copy(update={"simplify_m": params.buffer_m})
    if params.buffer_m > 10 * cell_m:
        log.warning("--buffer %g m is %.0f map cells of %.2f m: zones reach far beyond the mapped weed",
                    params.buffer_m, params.buffer_m / cell_m, cell_m)
    return params


def run_zones(config: SpurgemapConfig, inputs: ZonesInputs) -> ZonesResult:
    params = config.zones

    for opt, value in (("--buffer", params.buffer_m), ("--min-area", params.min_area_m2),
                       ("--simplify", params.simplify_m)):
        if value < 0:
            raise InputError(f"{opt} {value:g}: must be >= 0")
    dose_summary(config, 0.0, 0.0)  # checks --rate/--carrier/--product before any work
    check_date(inputs.date)
    check_target(Path(inputs.out), inputs.overwrite, [inputs.maps])
    m = read_map(inputs.maps, inputs.name)
    site = site_name(inputs.site, m.name, m.folder)
    io.require_metres(m.crs_wkt, m.prob_path, "zones")
    params = _sane(params, m.cell_m)
    upm = m.units_per_m
    present = m.cls == 1
    zones = make_zones(io.mask_polygons(present, m.transform), params.buffer_m * upm, params.min_area_m2 * upm**2,
                       params.simplify_m * upm)
    cap, why = zone_cap(config)
    zones, merged, distance = cap_zones(zones, cap, params.merge_step_m * upm)
    if merged:
        log.warning("%d zones merged into their neighbours (zones within %.2f m) to fit the cap of %d zones (%s)",
                    merged, distance / upm, cap, why)
    rr, cc = np.nonzero(present)
    cx = m.transform.c + (cc + 0.5) * m.transform.a
    cy = m.transform.f + (rr + 0.5) * m.transform.e
    table = zone_table(zones, cx, cy, m.pct[rr, cc] / 100, upm, config)
    covered = contains_xy(union_all(zones), cx, cy) if zones else np.zeros(len(cx), bool)
    if (~covered).any():
        log.warning("%d present cells lie in zones under --min-area %g m² and are not treated",
                    int((~covered).sum()), params.min_area_m2)
    cell_m2 = abs(m.transform.a * m.transform.e) / upm**2
    site_m2 = float(m.valid.sum() * cell_m2)
    treated = float(table.area_m2.sum())
    dose = dose_summary(config, treated / 1e4, site_m2 / 1e4)
    summary: dict[str, Any] = {
        "map": str(m.prob_path), "site": site, "threshold": m.threshold, "zones": len(zones),
        "zones_merged_for_cap": merged, "zone_cap": cap, "merge_distance_m": round(distance / upm, 3),
        "treated_area_m2": round(treated, 3), "treated_area_ha": round(treated / 1e4, 6),
        "mapped_area_m2": round(site_m2, 3), "share_of_site": round(treated / site_m2, 4) if site_m2 else 0.0,
        "present_cells": int(present.sum()), "present_cells_untreated": int((~covered).sum()),
        "rate_l_per_ha": dose["spray_volume_l_per_ha"], **dose,
        "parameters": params.model_dump(mode="json"), "treatment": config.treatment.model_dump(mode="json"),
    }
    with staged_dir(Path(inputs.out), inputs.overwrite, "zones", [inputs.maps]) as tmp:
        files = {"gpkg": tmp / "zones.gpkg", "kml": tmp / "zones.kml",
                 "qml": tmp / "zones.qml", "summary_json": tmp / "zones_summary.json",
                 "summary_csv": tmp / "zones_summary.csv", "preview": tmp / "preview.png"}
        io.write_vector(files["gpkg"], table, zones, m.crs_wkt, layer="zones", geometry_type="MultiPolygon")
        kml = pd.DataFrame({"Name": [f"zone {i}" for i in table.zone_id],
                            "Description": [f"{a:.1f} m², mean probability {p:.2f}"
                                            for a, p in zip(table.area_m2, table.mean_prob, strict=True)]})
        io.write_vector(files["kml"], kml, zones, m.crs_wkt, driver=io.kml_driver(), to_wgs84=True)
        files["qml"].write_text(zones_vector_qml(), encoding="utf-8")
        files.update(write_field_outputs(tmp, config, m, site, table, zones, summary, inputs.date, inputs.examiner))
        files["summary_json"].write_text(json.dumps({**summary, "zone_list": table.to_dict("records")}, indent=2))
        site_row = {"scope": "site", "zone_id": "", "area_m2": summary["treated_area_m2"],
                    "area_ha": summary["treated_area_ha"], "share_of_site": summary["share_of_site"],
                    "spray_volume_l": summary["spray_volume_l"], "water_l": summary.get("water_l")}
        product_cols = [c for c in table.columns if c.startswith("product_")]
        if product_cols and summary["product"]:
            unit = product_cols[0].removeprefix("product_")
            site_row[product_cols[0]] = summary["product"][f"total_{unit}"]
        write_rows(files["summary_csv"], [site_row, *table.assign(scope="zone").to_dict("records")],
                   ["scope", "zone_id", "area_m2", "area_ha", "perimeter_m", "present_cells", "mean_prob",
                    "share_of_site", "rate", "spray_volume_l", *product_cols, "water_l"])
        zones_preview(files["preview"], m.pct, m.transform, zones, m.name)
    files = {k: Path(inputs.out) / v.relative_to(tmp) for k, v in files.items()}
    return ZonesResult(Path(inputs.out), files, len(zones), treated, summary)
