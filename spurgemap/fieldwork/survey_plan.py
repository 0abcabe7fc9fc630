"""`spurgemap survey-plan`: which map cells a crew should visit next, and in what order.

Half the visits are a stratified random sample over probability bands: with known inclusion
probabilities they give a design-unbiased accuracy estimate of the map. The other half are uncertain
cells (at least ``survey_plan.min_uncertainty``) on both sides of the threshold, where a label
teaches the model most; the two halves are drawn in turn so that neither takes all the room. No two
visits are closer than the minimum spacing (so one visit is one independent observation), surveyed
cells are left out, and so are cells whose tile `tile` would skip (so a filled-in plan tiles back).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from shapely import STRtree, box, points
from shapely.geometry.base import BaseGeometry

from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.ids import safe_id, site_id_of
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.fieldwork.checks import check_start
from spurgemap.fieldwork.field_sheet import SheetInputs, write_field_sheet
from spurgemap.fieldwork.preview import visits_preview
from spurgemap.fieldwork.qfield import QFieldInputs, check_package_inputs, write_qfield_package
from spurgemap.fieldwork.route import walking_order
from spurgemap.fieldwork.sampling import RANDOM, UNCERTAIN, Selection, band_table, select_visits, uncertainty
from spurgemap.fieldwork.styles import visits_vector_qml
from spurgemap.geo import fieldwork_io as io
from spurgemap.geo.qfield_io import map_source, read_polygons
from spurgemap.predict.confidence import confidence
from spurgemap.predict.mapset import MapLayers, read_map

log = logging.getLogger(__name__)
ACCURACY_RECIPE = (
    "Overall accuracy from the visits: use only the 'random' visits. For each probability band h, "
    "N_h = eligible cells in the band, n_h = random visits in it, a_h = share of them where the map's "
    "class agrees with what was found. Stratified estimate: OA = sum_h (N_h / N) * a_h with N = sum_h N_h "
    "(the Horvitz-Thompson estimator with inclusion probability pi_h = n_h / N_h, i.e. weight w_i = N_h / n_h "
    "per visit: OA = sum_i w_i * correct_i / sum_i w_i; the 'weight' column holds w_i). Variance: "
    "V = sum_h (N_h / N)^2 * a_h (1 - a_h) / (n_h - 1). The 'uncertain' visits are chosen on purpose "
    "and must not enter the estimate. The spacing rule makes each band's draw approximately, not exactly, "
    "simple random."
)


@dataclass
class SurveyPlanInputs:
    maps: Path
    out: Path
    name: str | None = None
    exclude: list[Path] = field(default_factory=list)  # --plots / --survey layers already visited
    overwrite: bool = False
    site_id: str | None = None  # --site-id; default: the plots' site, else from the orthomosaic's path
    ortho: Path | None = None  # --ortho; default: the map's `source` tag (to check tile's valid fraction)
    zones: Path | None = None  # a zones layer to show in the QField project


@dataclass
class SurveyPlanResult:
    out: Path
    files: dict[str, Path]
    n_visits: int
    route_length_m: float
    summary: dict[str, Any]


def cells_touching(geoms: list[BaseGeometry], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Cells whose square intersects any of the geometries (points on an edge count for both cells)."""
    hit = np.zeros(shape, bool)
    if not geoms:
        return hit
    rows, cols = np.indices(shape)
    x0 = transform.c + cols.ravel() * transform.a
    y0 = transform.f + rows.ravel() * transform.e
    cells = box(x0, y0 + transform.e, x0 + transform.a, y0)
    tree = STRtree(cells)
    idx = tree.query(list(geoms), predicate="intersects")[1]
    hit.ravel()[np.unique(idx)] = True
    return hit


def site_of_map(m: MapLayers, plot_sites: set[str], given: str | None) -> str:
    """The site id the plan's visits carry: --site-id, else the one site of the surveyed plots on the map,
    else the orthomosaic's name the way `tile` matches it (``sites/<site>/ortho.tif`` is <site>)."""
    if given is not None:
        if not safe_id(given):
            raise InputError(f"--site-id {given!r}: has no usable characters (letters, digits, . _ -)")
        return safe_id(given)
    if len(plot_sites) == 1:
        return safe_id(next(iter(plot_sites)))
    names: list[str] = []
    if m.tags.get("source"):
        src = PurePath(m.tags["source"])
        names += [src.stem, *(q.name for q in src.parents)]
    names += [m.name, Path(m.folder).resolve().name]
    return site_id_of(names) or "site"


def tile_keeps(config: SpurgemapConfig, m: MapLayers, eligible: np.ndarray,
               ortho: Path | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Cells whose tile `tile` would keep (``tile.min_valid_fraction``), read from the orthomosaic."""
    path = ortho if ortho is not None else (Path(m.tags["source"]) if m.tags.get("source") else None)
    need = config.tile.min_valid_fraction
    if path is None or not path.is_file():
        if ortho is not None:
            raise InputError(f"--ortho {ortho}: file not found")
        log.warning("%s: its orthomosaic %s is not here, so visits are not checked against "
                    "tile.min_valid_fraction=%g; give --ortho PATH", m.prob_path, path, need)
        return eligible, {"checked": False, "orthomosaic": str(path) if path else None}
    window = int(m.tags.get("tile_size_px", config.tile.tile_size_px))
    frac = io.tile_valid_fractions(path, m.transform, m.crs_wkt, eligible, window)
    # half a pixel column of margin: `tile` may snap the tile by up to half a pixel
    keep = eligible & (np.nan_to_num(frac) >= min(need + 0.5 / window, 1.0))
    return keep, {"checked": True, "orthomosaic": str(path), "min_valid_fraction": need, "window_px": window,
                  "cells_dropped": int((eligible & ~keep).sum())}


def report_shortfall(m: MapLayers, sel: Selection, eligible: np.ndarray, params: Any) -> dict[str, Any]:
    """Say when fewer visits of a kind than asked were found, and why; the summary's 'uncertain' part."""
    need = params.min_uncertainty
    uncertain_cells = eligible & (uncertainty(m.pct, m.threshold) >= need - 1e-9)
    lo, hi = m.threshold * need, m.threshold + (1 - m.threshold) * (1 - need)
    counts = {kind: sum(r == kind for r in sel.reason) for kind in (RANDOM, UNCERTAIN)}
    asked = {RANDOM: params.n // 2, UNCERTAIN: params.n - params.n // 2}
    if counts[UNCERTAIN] < asked[UNCERTAIN]:
        log.warning("%s: only %d of %d uncertain visits: %d eligible cells have %.2f <= p <= %.2f "
                    "(survey_plan.min_uncertainty=%g) and the %g m spacing keeps %d of them", m.prob_path,
                    counts[UNCERTAIN], asked[UNCERTAIN], int(uncertain_cells.sum()), lo, hi, need,
                    params.min_spacing_m, counts[UNCERTAIN])
    if counts[RANDOM] < asked[RANDOM]:
        log.warning("%s: only %d of %d random visits fit %g m apart in the %d eligible cells", m.prob_path,
                    counts[RANDOM], asked[RANDOM], params.min_spacing_m, int(eligible.sum()))
    below = [m.pct[r, c] < m.threshold * 100 for kind, r, c in zip(sel.reason, sel.rows, sel.cols, strict=True)
             if kind == UNCERTAIN]
    return {"min_uncertainty": need, "probability_from": round(lo, 4), "probability_to": round(hi, 4),
            "eligible_cells": int(uncertain_cells.sum()), "below_threshold": int(sum(below)),
            "above_threshold": len(below) - int(sum(below))}


def run_survey_plan(config: SpurgemapConfig, inputs: SurveyPlanInputs) -> SurveyPlanResult:
    params = config.survey_plan
    if params.n < 1:
        raise InputError(f"--n {params.n}: ask for at least 1 visit")
    if params.min_spacing_m < 0:
        raise InputError(f"--min-spacing {params.min_spacing_m}: must be >= 0 metres")
    read = [inputs.maps, *inputs.exclude, *(p for p in (inputs.ortho, inputs.zones) if p)]
    check_target(Path(inputs.out), inputs.overwrite, read)
    check_package_inputs(inputs.ortho, inputs.zones)
    m = read_map(inputs.maps, inputs.name)
    io.require_metres(m.crs_wkt, m.prob_path, "survey-plan")
    eligible = m.valid.copy()
    if not eligible.any():
        raise InputError(f"{m.prob_path}: has no mapped cells")
    given_start = None
    if params.start_lonlat is not None:  # checked before any slow work: a far start is a typo
        sx, sy = io.transform_xy([params.start_lonlat[0]], [params.start_lonlat[1]], "EPSG:4326", m.crs_wkt,
                                 "--start")
        given_start = np.array([sx[0], sy[0]])
        vr, vc = np.nonzero(eligible)
        check_start(given_start, m.transform, vr, vc, m.units_per_m, params.start_lonlat)
    excluded = np.zeros_like(eligible)
    plot_sites: set[str] = set()
    rows_m, cols_m = m.pct.shape
    extent = box(*(m.transform @ (0, rows_m)), *(m.transform @ (cols_m, 0)))
    for path in inputs.exclude:
        geoms, labels = io.read_layer_geoms(path, m.crs_wkt)
        excluded |= cells_touching(geoms, m.transform, eligible.shape)
        plot_sites |= {lab.split("/", 1)[0] for g, lab in zip(geoms, labels, strict=True) if g.intersects(extent)}
    site = site_of_map(m, plot_sites, inputs.site_id)
    eligible &= ~excluded
    if not eligible.any():
        raise InputError(f"{m.prob_path}: every mapped cell is already surveyed ({len(inputs.exclude)} layers)")
    eligible, tile_check = tile_keeps(config, m, eligible, inputs.ortho)
    if not eligible.any():
        raise InputError(f"{m.prob_path}: no cell left whose tile `tile` would keep "
                         f"(tile.min_valid_fraction={config.tile.min_valid_fraction:g})")
    rr, cc = np.nonzero(eligible)
    dx, dy = m.transform.a / m.units_per_m, -m.transform.e / m.units_per_m
    diag = math.hypot((cc.max() - cc.min() + 1) * dx, (rr.max() - rr.min() + 1) * dy)
    if params.min_spacing_m > diag:
        raise InputError(f"{m.prob_path}: --min-spacing {params.min_spacing_m:g} m is larger than the mapped "
                         f"site ({diag:.0f} m across); choose a smaller spacing")
    sel = select_visits(m.pct, eligible, m.threshold, params.n, (dx, dy, params.min_spacing_m),
                        params.band_edges_pct, params.seed, params.min_uncertainty)
    uncertain = report_shortfall(m, sel, eligible, params)
    # centres in map units, distances in ground metres
    x = m.transform.c + (sel.cols + 0.5) * m.transform.a
    y = m.transform.f + (sel.rows + 0.5) * m.transform.e
    if given_start is not None:
        start = given_start
    else:  # south-west corner of the mapped cells
        start = np.array([m.transform.c + cc.min() * m.transform.a, m.transform.f + (rr.max() + 1) * m.transform.e])
    xy = np.column_stack([x, y]) / m.units_per_m
    order, length, nn_length = walking_order(xy, start / m.units_per_m)
    bands = band_table(m.pct, eligible, sel, params.band_edges_pct)
    table = visits_table(m, sel, order, x, y, site, {b["band"]: b["weight"] for b in bands})
    summary: dict[str, Any] = {
        "map": str(m.prob_path), "site_id": site, "threshold": m.threshold, "requested": params.n,
        "visits": len(order), "uncertain_visits": int(sum(r == UNCERTAIN for r in sel.reason)),
        "random_visits": int(sum(r == RANDOM for r in sel.reason)),
        "uncertain": uncertain,
        "min_spacing_m": params.min_spacing_m, "excluded_cells": int((excluded & m.valid).sum()),
        "tile_check": tile_check, "eligible_cells": int(eligible.sum()), "route_length_m": round(length, 2),
        "nearest_neighbour_length_m": round(nn_length, 2),
        "start": {"x": float(start[0]), "y": float(start[1])}, "bands": bands,
        "accuracy_estimation": ACCURACY_RECIPE, "parameters": params.model_dump(mode="json"),
    }
    with staged_dir(Path(inputs.out), inputs.overwrite, "survey-plan", read) as tmp:
        files = {"gpkg": tmp / "visits.gpkg", "gpx": tmp / "visits.gpx", "csv": tmp / "visits.csv",
                 "qml": tmp / "visits.qml", "summary": tmp / "summary.json", "preview": tmp / "preview.png"}
        io.write_vector(files["gpkg"], table, points(np.column_stack([x[order], y[order]])), m.crs_wkt,
                        layer="visits", geometry_type="Point")
        desc = [f"{r} p={p:.2f} {c}" for r, p, c in zip(table.reason, table.probability, table.cell_id, strict=True)]
        slon, slat = io.transform_xy([start[0]], [start[1]], m.crs_wkt, "EPSG:4326", str(m.prob_path))
        io.write_gpx(files["gpx"], list(table.plot_id), desc, table.lon.to_numpy(), table.lat.to_numpy(),
                     f"{site} survey route", list(table.reason), (float(slon[0]), float(slat[0])),
                     dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        io.write_rows(files["csv"], table.assign(presence="").to_dict("records"), CSV_COLUMNS)
        files["qml"].write_text(visits_vector_qml(), encoding="utf-8")
        files["summary"].write_text(json.dumps(summary, indent=2, default=_jsonable))
        visits_preview(files["preview"], m.pct, m.transform, x[order], y[order], start, f"site {site}",
                       list(table.reason), m.units_per_m)
        ortho = inputs.ortho or map_source(m.prob_path)
        files["sheet"] = write_field_sheet(tmp / "field_sheet.pdf", SheetInputs(
            site, table, x[order], y[order], start, m.pct, m.transform, m.crs_wkt, m.threshold, m.units_per_m,
            length, config.labels.species, ortho, read_polygons(inputs.zones, m.crs_wkt)))
        files.update(write_qfield_package(tmp, QFieldInputs(
            site, table, list(points(np.column_stack([x[order], y[order]]))), m.crs_wkt, m.prob_path, m.threshold,
            config.labels.species, ortho, list(inputs.exclude), inputs.zones)))
    files = {k: Path(inputs.out) / v.name for k, v in files.items()}
    return SurveyPlanResult(Path(inputs.out), files, len(order), length, summary)


# visits.csv, a point survey `tile --plots/--survey` reads (field_data/README.md documents each column)
CSV_COLUMNS = ["visit", "site_id", "plot_id", "lon", "lat", "easting", "northing", "epsg", "reason",
               "probability", "map_class", "cell_id", "presence"]


def visits_table(m: MapLayers, sel: Selection, order: np.ndarray, x: np.ndarray, y: np.ndarray, site: str,
                 weight: dict[int, float | None]) -> pd.DataFrame:
    """One row per visit in walking order; plot ids `<site>-V01` are unique across sites and plans."""
    n = len(order)
    width = max(2, len(str(n)))
    rows, cols = sel.rows[order], sel.cols[order]
    lon, lat = io.transform_xy(x[order], y[order], m.crs_wkt, "EPSG:4326", str(m.prob_path))
    east, north, epsg = io.utm_coordinates(lon, lat, x[order], y[order], m.crs_wkt)
    conf = m.conf if m.conf is not None else confidence(m.pct, m.threshold)
    reason = [sel.reason[i] for i in order]
    return pd.DataFrame({
        "visit": np.arange(1, n + 1), "name": [f"{site}-V{i:0{width}d}" for i in range(1, n + 1)],
        "site_id": site, "plot_id": [f"{site}-V{i:0{width}d}" for i in range(1, n + 1)],
        "cell_id": [f"r{r}c{c}" for r, c in zip(rows, cols, strict=True)], "row": rows, "col": cols,
        "probability": m.pct[rows, cols].astype(float) / 100,
        "map_class": np.where(m.cls[rows, cols] == 1, "present", "absent"),
        "confidence": conf[rows, cols].astype(int),
        "uncertainty": np.round(uncertainty(m.pct, m.threshold)[rows, cols], 3), "reason": reason,
        "band": sel.band[order],
        "weight": [weight[b] if r == RANDOM else 0.0 for r, b in zip(reason, sel.band[order], strict=True)],
        "lon": np.round(lon, 8), "lat": np.round(lat, 8), "easting": np.round(east, 3),
        "northing": np.round(north, 3), "epsg": epsg,
    })


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)
