"""The field outputs of `zones` that other tools take as they are (issue 24).

Sprayer terminals (a Shapefile per terminal profile, ISO 11783-10 TASKDATA), state weed databases
(infestation records) and Google Earth (a styled KMZ). The zone geometry and figures come from
``zones.py``; this module only decides names, caps and which writer gets what.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shapely import Polygon, union_all

from spurgemap import __version__
from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.fieldwork.records import infestation_table
from spurgemap.fieldwork.styles import zones_vector_qml
from spurgemap.geo import fieldwork_io as io
from spurgemap.geo.isoxml import MAX_ZONES, IsoZone, write_taskdata
from spurgemap.geo.kmz import has_libkml, write_zones_kmz
from spurgemap.geo.records_io import flight_date, raster_tags
from spurgemap.geo.terminals import PROFILES, write_terminal_shapefile
from spurgemap.predict.mapset import MapLayers

log = logging.getLogger(__name__)
GENERIC_MAP_NAMES = {"ortho", "orthomosaic", "orthophoto", "odm_orthophoto", "mosaic"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def site_name(given: str | None, map_name: str, folder: Path) -> str:
    """The site in file names and records: --site, else the map's name (its folder's for a generic name)."""
    name = given or (folder.resolve().name if map_name.lower() in GENERIC_MAP_NAMES else map_name)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not safe:
        raise InputError(f"--site {given!r}: needs letters or digits (it names the files)")
    return safe


def zone_cap(config: SpurgemapConfig) -> tuple[int, str]:
    """The zone cap and why: zones.max_zones, else the strictest of the chosen terminals and ISOXML."""
    if config.zones.max_zones is not None:
        return config.zones.max_zones, "--max-zones"
    terminal = min(config.zones.terminals, key=lambda t: PROFILES[t].max_zones)
    cap = min(PROFILES[terminal].max_zones, MAX_ZONES)
    return cap, f"--terminal {terminal}" if cap < MAX_ZONES else "ISOXML zone codes"


def check_date(date: str | None) -> str | None:
    """A real calendar date as YYYY-MM-DD (databases reject 2024-02-30)."""
    if date is None:
        return None
    try:
        if not _DATE.match(date):
            raise ValueError
        dt.date.fromisoformat(date)
    except ValueError:
        raise InputError(f"--date {date!r}: give the observation date as YYYY-MM-DD") from None
    return date


def write_field_outputs(tmp: Path, config: SpurgemapConfig, m: MapLayers, site: str, table: pd.DataFrame,
                        zones: list[Polygon], summary: dict[str, Any], date: str | None = None,
                        examiner: str | None = None) -> dict[str, Path]:
    """Terminal Shapefile, TASKDATA, infestation records and KMZ into the staging folder ``tmp``."""
    params = config.zones
    files: dict[str, Path] = {}
    summary["terminals"] = {}
    for terminal in dict.fromkeys(params.terminals):
        shp, tolerance = write_terminal_shapefile(tmp, terminal, site, table, zones, m.crs_wkt)
        files.setdefault("shp", shp)
        files[f"shp_{terminal}"] = shp
        if tolerance:
            log.warning("%s: outlines simplified by %.1e degrees to stay under %d bytes (--terminal %s)",
                        shp.name, tolerance, PROFILES[terminal].max_bytes or 0, terminal)
        if terminal == "generic":  # QGIS applies a sidecar style of the same name
            files["shp_qml"] = shp.with_suffix(".qml")
            files["shp_qml"].write_text(zones_vector_qml(), encoding="utf-8")
        summary["terminals"][terminal] = {"shapefile": str(shp.relative_to(tmp)), "simplified_deg": tolerance}

    volume = summary["spray_volume_l_per_ha"]
    if volume is not None and zones:
        product = config.treatment.chosen()
        iso = [IsoZone(f"zone {int(r.zone_id)}", float(r.rate), z, float(r.area_m2))
               for r, z in zip(table.itertuples(), zones, strict=True)]
        # the field: the hull of the mapped cells and zones, 0.5 m wider so no zone edge grazes it
        hull = union_all([*zones, *io.mask_polygons(m.valid, m.transform)]).convex_hull
        field = hull.buffer(0.5 * m.units_per_m, join_style="mitre")
        written = write_taskdata(tmp / "TASKDATA", iso, m.crs_wkt, task=site, software_version=__version__,
                                 product=product.name if product else None,
                                 grid_cell_m=m.cell_m if params.isoxml_grid else None,
                                 field=(field, field.area / m.units_per_m**2))
        files["taskdata"] = written[0]
        if len(written) > 1:
            files["taskdata_grid"] = written[1]
        summary["isoxml"] = {"file": "TASKDATA/TASKDATA.XML", "kind": "grid type 2" if params.isoxml_grid
                             else "treatment zone polygons", "ddi": "0001 setpoint volume per area (mm³/m²)",
                             "rate_mm3_per_m2": round(volume * 100)}
    else:
        summary["isoxml"] = None
        if not zones:
            log.info("no zones: no TASKDATA written")
        else:
            log.info("no TASKDATA written: a prescription needs a spray volume; give --carrier L/ha")

    date = check_date(date)
    where = "--date"
    if date is None:
        date, where = flight_date(m.prob_path)
        if date is None:
            log.warning("infestation records have no observation date (%s); give --date YYYY-MM-DD", where)
    tags = raster_tags(m.prob_path)
    source = f"spurgemap {tags.get('spurgemap_version', __version__)} model {tags.get('bundle_sha256', '?')[:12]}"
    centroids = [z.centroid for z in zones]
    lon, lat = io.transform_xy([c.x for c in centroids], [c.y for c in centroids], m.crs_wkt, "EPSG:4326",
                               str(m.prob_path))
    cell_m2 = abs(m.transform.a * m.transform.e) / m.units_per_m**2
    records = infestation_table(site, table, np.asarray(lon), np.asarray(lat), cell_m2, m.cell_m,
                                species=config.labels.species, scientific=config.labels.scientific_name,
                                code=config.labels.species_code, date=date,
                                examiner=examiner, source=source, spelling=params.records)
    files["records_csv"] = tmp / "infestations.csv"
    files["records_gpkg"] = tmp / "infestations.gpkg"
    records.to_csv(files["records_csv"], index=False)
    io.write_vector(files["records_gpkg"], records, zones, m.crs_wkt, layer="infestations",
                    geometry_type="MultiPolygon")
    summary["records"] = {"spelling": params.records, "rows": len(records), "obs_date": date, "date_from": where,
                          "species_code": config.labels.species_code}

    if has_libkml() and zones:
        files["kmz"] = tmp / f"{site}_zones.kmz"
        rate_text = f"{volume:g} L/ha" if volume is not None else "spray"
        names = [f"zone {int(z)}" for z in table.zone_id]
        descs = [f"{a:.1f} m², {rate_text}, mean probability {p:.2f}"
                 for a, p in zip(table.area_m2, table.mean_prob, strict=True)]
        write_zones_kmz(files["kmz"], names, descs, table.mean_prob.tolist(), zones, m.crs_wkt)
    elif zones:
        log.info("GDAL has no LIBKML driver here: no styled KMZ (zones.kml is written)")
    return files


def tank_text(summary: dict[str, Any]) -> str:
    """A short dose line for the command's output."""
    parts = []
    if summary.get("spray_volume_l") is not None:
        parts.append(f"{summary['spray_volume_l']:.1f} L spray")
    prod = summary.get("product")
    if prod:
        unit = prod["unit"].split("/")[0]
        parts.append(f"{prod[f'total_{unit.lower()}']:.3f} {unit} {prod['name']}")
    if summary.get("tank_loads") is not None:
        parts.append(f"{summary['tank_loads']} tank load{'s' if summary['tank_loads'] != 1 else ''}")
    saving = summary.get("saving_vs_broadcast")
    if saving is not None and not math.isnan(saving):
        parts.append(f"{100 * saving:.0f} % less than broadcast")
    return ", ".join(parts)
