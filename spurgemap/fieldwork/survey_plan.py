"""`spurgemap survey-plan`: which map cells a crew should visit next, and in what order.

Half the visits are a stratified random sample over probability bands: with known inclusion
probabilities they give a design-unbiased accuracy estimate of the map. The other half are the cells
closest to the threshold, where a label teaches the model most. No two visits are closer than the
minimum spacing (so one visit is one independent observation) and surveyed cells are left out.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from shapely import STRtree, box, points
from shapely.geometry.base import BaseGeometry

from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.ids import safe_id
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.fieldwork.preview import visits_preview
from spurgemap.fieldwork.route import walking_order
from spurgemap.fieldwork.styles import visits_vector_qml
from spurgemap.geo import fieldwork_io as io
from spurgemap.predict.confidence import confidence
from spurgemap.predict.mapset import read_map

log = logging.getLogger(__name__)
UNCERTAIN, RANDOM = "uncertain", "random"
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


@dataclass
class SurveyPlanResult:
    out: Path
    files: dict[str, Path]
    n_visits: int
    route_length_m: float
    summary: dict[str, Any]


@dataclass
class Selection:
    rows: np.ndarray
    cols: np.ndarray
    reason: list[str]
    band: np.ndarray


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


class _Spacing:
    """Blocks every cell whose centre is closer than the spacing to an accepted visit."""

    def __init__(self, shape: tuple[int, int], dx: float, dy: float, spacing: float) -> None:
        self.blocked = np.zeros(shape, bool)
        self.kr, self.kc = math.ceil(spacing / dy), math.ceil(spacing / dx)
        rr, cc = np.mgrid[-self.kr:self.kr + 1, -self.kc:self.kc + 1]
        self.disk = np.hypot(rr * dy, cc * dx) < spacing * (1 - 1e-9)
        self.disk[self.kr, self.kc] = True

    def take(self, r: int, c: int) -> bool:
        if self.blocked[r, c]:
            return False
        h, w = self.blocked.shape
        r0, r1, c0, c1 = max(r - self.kr, 0), min(r + self.kr + 1, h), max(c - self.kc, 0), min(c + self.kc + 1, w)
        win = self.disk[r0 - r + self.kr:r1 - r + self.kr, c0 - c + self.kc:c1 - c + self.kc]
        self.blocked[r0:r1, c0:c1] |= win
        return True


def bands_of(pct: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.digitize(pct.astype(float), np.asarray(edges, float))


def select_visits(pct: np.ndarray, eligible: np.ndarray, threshold: float, n: int, spacing_cells: tuple[float, float,
                  float], edges: tuple[float, ...], seed: int) -> Selection:
    """Random stratified half first (so its design stays clean), then the uncertain half around it.

    ``spacing_cells`` is (cell width, cell height, spacing) in one unit.
    """
    rng = np.random.default_rng(seed)
    spacing = _Spacing(pct.shape, *spacing_cells)
    bands = bands_of(pct, edges)
    rows: list[int] = []
    cols: list[int] = []
    reason: list[str] = []
    n_random = n // 2
    queues = []
    for h in range(len(edges) + 1):
        cells = np.flatnonzero(eligible & (bands == h))
        queues.append(list(rng.permutation(cells)[::-1]))
    while sum(r == RANDOM for r in reason) < n_random and any(queues):
        for q in queues:  # round-robin: equal allocation, leftover quota moves to bands with cells left
            while q and sum(r == RANDOM for r in reason) < n_random:
                flat = int(q.pop())
                r, c = divmod(flat, pct.shape[1])
                if spacing.take(r, c):
                    rows.append(r)
                    cols.append(c)
                    reason.append(RANDOM)
                    break
    cand = np.flatnonzero(eligible)
    dist = np.abs(pct.ravel()[cand].astype(float) / 100 - threshold)
    tie = rng.random(len(cand))
    for flat in cand[np.lexsort((tie, dist))]:
        if len(reason) >= n:
            break
        r, c = divmod(int(flat), pct.shape[1])
        if spacing.take(r, c):
            rows.append(r)
            cols.append(c)
            reason.append(UNCERTAIN)
    rr, cc = np.asarray(rows, int), np.asarray(cols, int)
    return Selection(rr, cc, reason, bands[rr, cc])


def band_table(pct: np.ndarray, eligible: np.ndarray, sel: Selection, edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per band: eligible cells N_h, random visits n_h, inclusion probability and weight."""
    bands = bands_of(pct, edges)
    lows = (0.0, *edges)
    highs = (*edges, 100.0)
    out = []
    for h in range(len(edges) + 1):
        big_n = int((eligible & (bands == h)).sum())
        small_n = int(sum(1 for b, r in zip(sel.band, sel.reason, strict=True) if b == h and r == RANDOM))
        out.append({"band": h, "prob_from_pct": lows[h], "prob_to_pct": highs[h], "eligible_cells": big_n,
                    "random_visits": small_n, "inclusion_probability": small_n / big_n if big_n else 0.0,
                    "weight": big_n / small_n if small_n else None})
    return out


def run_survey_plan(config: SpurgemapConfig, inputs: SurveyPlanInputs) -> SurveyPlanResult:
    params = config.survey_plan

    if params.n < 1:
        raise InputError(f"--n {params.n}: ask for at least 1 visit")
    if params.min_spacing_m < 0:
        raise InputError(f"--min-spacing {params.min_spacing_m}: must be >= 0 metres")
    check_target(Path(inputs.out), inputs.overwrite)
    m = read_map(inputs.maps, inputs.name)
    eligible = m.valid.copy()
    if not eligible.any():
        raise InputError(f"{m.prob_path}: has no mapped cells")
    excluded = np.zeros_like(eligible)
    for path in inputs.exclude:
        geoms, _ = io.read_layer_geoms(path, m.crs_wkt)
        excluded |= cells_touching(geoms, m.transform, eligible.shape)
    eligible &= ~excluded
    if not eligible.any():
        raise InputError(f"{m.prob_path}: every mapped cell is already surveyed ({len(inputs.exclude)} layers)")
    rr, cc = np.nonzero(eligible)
    dx, dy = m.transform.a / m.units_per_m, -m.transform.e / m.units_per_m
    diag = math.hypot((cc.max() - cc.min() + 1) * dx, (rr.max() - rr.min() + 1) * dy)
    if params.min_spacing_m > diag:
        raise InputError(f"{m.prob_path}: --min-spacing {params.min_spacing_m:g} m is larger than the mapped "
                         f"site ({diag:.0f} m across); choose a smaller spacing")
    sel = select_visits(m.pct, eligible, m.threshold, params.n, (dx, dy, params.min_spacing_m),
                        params.band_edges_pct, params.seed)
    if len(sel.reason) < params.n:
        log.warning("only %d of %d visits fit %g m apart on %s", len(sel.reason), params.n,
                    params.min_spacing_m, m.prob_path.name)
    # centres in map units, distances in ground metres
    x = m.transform.c + (sel.cols + 0.5) * m.transform.a
    y = m.transform.f + (sel.rows + 0.5) * m.transform.e
    if params.start_lonlat is not None:
        sx, sy = io.transform_xy([params.start_lonlat[0]], [params.start_lonlat[1]], "EPSG:4326", m.crs_wkt,
                                 "--start")
        start = np.array([sx[0], sy[0]])
    else:  # south-west corner of the mapped cells
        start = np.array([m.transform.c + cc.min() * m.transform.a, m.transform.f + (rr.max() + 1) * m.transform.e])
    xy = np.column_stack([x, y]) / m.units_per_m
    order, length, nn_length = walking_order(xy, start / m.units_per_m)
    conf = m.conf if m.conf is not None else confidence(m.pct, m.threshold)
    bands = band_table(m.pct, eligible, sel, params.band_edges_pct)
    weight = {b["band"]: b["weight"] for b in bands}
    site = safe_id(m.name) or "site"
    lon, lat = io.transform_xy(x[order], y[order], m.crs_wkt, "EPSG:4326", str(m.prob_path))
    table = pd.DataFrame({
        "visit": np.arange(1, len(order) + 1), "name": [str(i) for i in range(1, len(order) + 1)], "site_id": site,
        "plot_id": [f"v{i:03d}" for i in range(1, len(order) + 1)],
        "cell_id": [f"r{r}c{c}" for r, c in zip(sel.rows[order], sel.cols[order], strict=True)],
        "row": sel.rows[order], "col": sel.cols[order],
        "probability": m.pct[sel.rows, sel.cols][order].astype(float) / 100,
        "map_class": np.where(m.cls[sel.rows, sel.cols][order] == 1, "present", "absent"),
        "confidence": conf[sel.rows, sel.cols][order].astype(int),
        "reason": [sel.reason[i] for i in order], "band": sel.band[order],
        "weight": [weight[b] if sel.reason[i] == RANDOM else 0.0 for i, b in zip(order, sel.band[order],
                                                                                   strict=True)],
        "lon": np.round(lon, 8), "lat": np.round(lat, 8),
    })
    summary: dict[str, Any] = {
        "map": str(m.prob_path), "threshold": m.threshold, "requested": params.n, "visits": len(order),
        "uncertain_visits": int(sum(r == UNCERTAIN for r in sel.reason)),
        "random_visits": int(sum(r == RANDOM for r in sel.reason)),
        "min_spacing_m": params.min_spacing_m, "excluded_cells": int((excluded & m.valid).sum()),
        "eligible_cells": int(eligible.sum()), "route_length_m": round(length, 2),
        "nearest_neighbour_length_m": round(nn_length, 2),
        "start": {"x": float(start[0]), "y": float(start[1])}, "bands": bands,
        "accuracy_estimation": ACCURACY_RECIPE, "parameters": params.model_dump(mode="json"),
    }
    with staged_dir(Path(inputs.out), inputs.overwrite) as tmp:
        files = {"gpkg": tmp / "visits.gpkg", "gpx": tmp / "visits.gpx", "csv": tmp / "visits.csv",
                 "qml": tmp / "visits.qml", "summary": tmp / "summary.json", "preview": tmp / "preview.png"}
        io.write_vector(files["gpkg"], table, points(np.column_stack([x[order], y[order]])), m.crs_wkt,
                        layer="visits", geometry_type="Point")
        desc = [f"{r} p={p:.2f} {c}" for r, p, c in zip(table.reason, table.probability, table.cell_id, strict=True)]
        io.write_gpx(files["gpx"], [str(v) for v in table.visit], desc, lon, lat, f"{site} survey route")
        csv_cols = ["visit", "site_id", "plot_id", "lon", "lat", "reason", "probability", "map_class", "cell_id",
                    "presence"]
        io.write_rows(files["csv"], table.assign(presence="").to_dict("records"), csv_cols)
        files["qml"].write_text(visits_vector_qml(), encoding="utf-8")
        files["summary"].write_text(json.dumps(summary, indent=2, default=_jsonable))
        visits_preview(files["preview"], m.pct, m.transform, x[order], y[order], start, m.name,
                       list(table.reason))
    files = {k: Path(inputs.out) / v.name for k, v in files.items()}
    return SurveyPlanResult(Path(inputs.out), files, len(order), length, summary)


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)
