"""Infestation records for state weed databases (EDDMapS, iMapInvasives; NAISMA mapping standards).

Why: a database takes one record per population: gross area (the polygon around it, here the
spray zone), infested area (inside the canopy, here the present cells), percent cover, species
name and code, date, examiner, a WGS 84 point with its uncertainty, and where the record came from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

M2_PER_ACRE = 4046.8564224
GENERIC = ["record_id", "site", "zone_id", "species", "scientific_name", "species_code", "status", "obs_date",
           "examiner", "latitude", "longitude", "coord_uncertainty_m", "gross_area_m2", "gross_area_acres",
           "infested_area_m2", "infested_area_acres", "percent_cover", "data_source"]
# EDDMapS spellings of the columns it names; the exact upload template is the database's to confirm.
EDDMAPS = {"obs_date": "ObsDate", "status": "Status", "latitude": "Latitude", "longitude": "Longitude",
           "infested_area_acres": "InfestAcre", "gross_area_acres": "GrossAcre", "percent_cover": "Percentcov"}
STATUS = {"generic": "present", "eddmaps": "Positive"}


def infestation_table(site: str, table: pd.DataFrame, lon: np.ndarray, lat: np.ndarray, cell_m2: float,
                      cell_m: float, *, species: str, scientific: str, code: str, date: str | None,
                      examiner: str | None,
                      source: str, spelling: str) -> pd.DataFrame:
    """One row per zone from the zone table (zone_id, area_m2, present_cells) and zone centroids."""
    gross = table.area_m2.to_numpy(float)
    infested = table.present_cells.to_numpy(float) * cell_m2
    uncertainty = math.ceil(cell_m * math.sqrt(2) / 2 * 10) / 10  # a centroid is good to half a cell diagonal
    rows: dict[str, Any] = {
        "record_id": [f"{site}-Z{int(z):03d}" for z in table.zone_id], "site": site,
        "zone_id": table.zone_id.astype(int).to_numpy(), "species": species, "scientific_name": scientific,
        "species_code": code,
        "status": STATUS[spelling], "obs_date": date or "", "examiner": examiner or "",
        "latitude": np.round(lat, 7), "longitude": np.round(lon, 7), "coord_uncertainty_m": uncertainty,
        "gross_area_m2": np.round(gross, 2), "gross_area_acres": np.round(gross / M2_PER_ACRE, 5),
        "infested_area_m2": np.round(infested, 2), "infested_area_acres": np.round(infested / M2_PER_ACRE, 5),
        "percent_cover": np.round(np.divide(100 * infested, gross, out=np.zeros_like(gross), where=gross > 0), 1),
        "data_source": source,
    }
    out = pd.DataFrame(rows, columns=GENERIC)
    return out.rename(columns=EDDMAPS) if spelling == "eddmaps" else out
