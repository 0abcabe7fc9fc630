"""`spurgemap change`: where leafy spurge appeared, disappeared or stayed between two maps of a site.

Two flights never share a grid exactly, so the after-map is read at the before-map's cell centres
(nearest cell): no new probabilities are invented and every before cell gets one after class. A
warning says when the grids are offset by more than a quarter cell or differ in resolution, since
cells then compare ground that only partly overlaps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from shapely import union_all
from shapely.geometry.base import BaseGeometry

from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.fieldwork.preview import change_preview
from spurgemap.fieldwork.styles import CHANGE_CLASSES, change_raster_qml, change_vector_qml
from spurgemap.geo import fieldwork_io as io
from spurgemap.predict.mapset import NODATA, MapLayers, read_map

log = logging.getLogger(__name__)
ABSENT, NEW, GONE, PERSISTING = 0, 1, 2, 3
CLASS_NAMES = {ABSENT: "absent", NEW: "new", GONE: "gone", PERSISTING: "persisting"}


@dataclass
class ChangeInputs:
    before: Path
    after: Path
    out: Path
    plots: Path | None = None
    before_name: str | None = None
    after_name: str | None = None
    overwrite: bool = False
    allow_model_change: bool = False  # --allow-model-change: compare maps of other models / thresholds anyway


@dataclass
class ChangeResult:
    out: Path
    files: dict[str, Path]
    counts: dict[str, int]
    summary: dict[str, Any]


def grid_mismatch(before: Affine, after: Affine) -> tuple[float, float]:
    """(largest offset of the after grid's cell edges from the before grid's, in before cells;
    largest relative difference in cell size)."""
    offsets = []
    for origin_b, origin_a, size in ((before.c, after.c, before.a), (before.f, after.f, before.e)):
        frac = ((origin_a - origin_b) / size) % 1.0
        offsets.append(min(frac, 1.0 - frac))
    res = max(abs(after.a / before.a - 1), abs(after.e / before.e - 1))
    return float(max(offsets)), float(res)


def cell_centres(transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(shape)
    return transform.c + (cols + 0.5) * transform.a, transform.f + (rows + 0.5) * transform.e


def sample_nearest(values: np.ndarray, transform: Affine, xs: np.ndarray, ys: np.ndarray,
                   nodata: int = NODATA) -> np.ndarray:
    """The value of the cell (north-up grid) holding each point; nodata outside the grid."""
    col = np.floor((xs - transform.c) / transform.a)
    row = np.floor((ys - transform.f) / transform.e)
    h, w = values.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & np.isfinite(col) & np.isfinite(row)
    out = np.full(xs.shape, nodata, values.dtype)
    out[inside] = values[row[inside].astype(int), col[inside].astype(int)]
    return out


def change_classes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """0 absent in both, 1 new, 2 gone, 3 persisting, 255 where either map has no data."""
    valid = (before != NODATA) & (after != NODATA)
    change = (before == 1).astype(np.uint8) * 2 + (after == 1).astype(np.uint8)
    change = np.select([change == 1, change == 2, change == 3], [NEW, GONE, PERSISTING], ABSENT).astype(np.uint8)
    return np.where(valid, change, NODATA).astype(np.uint8)


def class_areas(change: np.ndarray, cell_m2: float) -> dict[str, dict[str, float]]:
    out = {}
    for value, name in CLASS_NAMES.items():
        n = int((change == value).sum())
        out[name] = {"cells": n, "area_m2": round(n * cell_m2, 3), "area_ha": round(n * cell_m2 / 1e4, 6)}
    return out


def spread(areas: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Net spread = new - gone area, also relative to the area present before (in the common area)."""
    new, gone = areas["new"]["area_m2"], areas["gone"]["area_m2"]
    before = gone + areas["persisting"]["area_m2"]
    net = new - gone
    return {"net_spread_m2": round(net, 3), "net_spread_ha": round(net / 1e4, 6),
            "before_present_m2": round(before, 3), "after_present_m2": round(new + areas["persisting"]["area_m2"], 3),
            "net_spread_relative": round(net / before, 4) if before else None}


def per_plot(geoms: list[BaseGeometry], labels: list[str], polys: dict[int, list[BaseGeometry]],
             units_per_m: float) -> list[dict[str, Any]]:
    """Area per change class inside each plot (polygon intersection, as predict's per-plot areas)."""
    unions = {k: union_all(v) if v else None for k, v in polys.items()}
    rows = []
    for label, g in zip(labels, geoms, strict=True):
        site, _, plot = label.partition("/")
        areas = {CLASS_NAMES[k]: {"area_m2": round(g.intersection(u).area / units_per_m**2, 3) if u else 0.0}
                 for k, u in unions.items()}
        for a in areas.values():
            a["area_ha"] = round(a["area_m2"] / 1e4, 6)
        rows.append({"site_id": site, "plot_id": plot, "plot_area_m2": round(g.area / units_per_m**2, 3),
                     "classes": areas, **spread(areas)})
    return rows


DEFAULT_SPECIES = "leafy spurge"  # maps of versions that wrote no species tag


def model_difference(b: MapLayers, a: MapLayers) -> list[str]:
    """What differs between the models behind two maps: species, bundle (SHA-256) or threshold.

    Why: a new model or threshold moves cells across the threshold on its own; `change` would report
    that as the weed spreading or retreating.
    """
    out = []
    sb, sa = b.tags.get("species", DEFAULT_SPECIES), a.tags.get("species", DEFAULT_SPECIES)
    if sb != sa:
        out.append(f"species {sb!r} vs {sa!r}")
    hb, ha = b.tags.get("bundle_sha256"), a.tags.get("bundle_sha256")
    if hb != ha:
        out.append(f"model bundle {(hb or 'unknown')[:12]} vs {(ha or 'unknown')[:12]}")
    if abs(b.threshold - a.threshold) > 1e-6:
        out.append(f"threshold {b.threshold:g} vs {a.threshold:g}")
    return out


def run_change(config: SpurgemapConfig, inputs: ChangeInputs) -> ChangeResult:
    params = config.change

    check_target(Path(inputs.out), inputs.overwrite, [inputs.before, inputs.after, inputs.plots])
    b = read_map(inputs.before, inputs.before_name)
    a = read_map(inputs.after, inputs.after_name)
    differ = model_difference(b, a)
    if differ and not inputs.allow_model_change:
        raise InputError(f"{b.folder} and {a.folder}: maps of different models ({'; '.join(differ)}), so "
                         "cells would change with the model, not the weed; map both seasons with one model, "
                         "or pass --allow-model-change")
    note = f"NOT LIKE WITH LIKE: {'; '.join(differ)} (--allow-model-change)" if differ else ""
    if note:
        log.warning("%s and %s: %s", b.folder, a.folder, note)
    xs, ys = cell_centres(b.transform, b.cls.shape)
    offset, res = grid_mismatch(b.transform, a.transform)
    same = io.same_crs(b.crs_wkt, a.crs_wkt)
    if same:
        if res > params.max_resolution_diff or offset > params.max_offset_cells:
            log.warning("%s and %s: grids differ (offset %.2f cells, cell size %.1f %%); the after-map is read "
                        "at the before-map's cell centres", b.prob_path, a.prob_path, offset, 100 * res)
    else:
        xs, ys = io.transform_xy(xs.ravel(), ys.ravel(), b.crs_wkt, a.crs_wkt, f"{a.prob_path} vs {b.prob_path}")
        xs, ys = xs.reshape(b.cls.shape), ys.reshape(b.cls.shape)
        log.warning("%s is in another CRS than %s: the after-map is read at the before-map's cell centres",
                    a.prob_path, b.prob_path)
    after_cls = sample_nearest(a.cls, a.transform, xs, ys)
    change = change_classes(b.cls, after_cls)
    if (change == NODATA).all():
        raise InputError(f"{a.prob_path}: does not overlap {b.prob_path} (no cell mapped in both)")
    cell_m2 = abs(b.transform.a * b.transform.e) / b.units_per_m**2
    areas = class_areas(change, cell_m2)
    polys = {k: io.mask_polygons(change == k, b.transform) for k in (NEW, GONE, PERSISTING)}
    summary: dict[str, Any] = {
        "before": str(b.prob_path), "after": str(a.prob_path), "same_model": not differ, "model_change": note or None,
        "before_model": _model_of(b), "after_model": _model_of(a), "same_crs": same,
        "grid_offset_cells": round(offset, 4) if same else None,
        "resolution_difference": round(res, 4) if same else None,
        "common_area_m2": round(float((change != NODATA).sum() * cell_m2), 3), "classes": areas,
        **spread(areas), "parameters": params.model_dump(mode="json"),
    }
    if inputs.plots is not None:
        geoms, labels = io.read_layer_geoms(inputs.plots, b.crs_wkt)
        mapped = union_all(io.mask_polygons(change != NODATA, b.transform))
        on_map = [i for i, g in enumerate(geoms) if g.intersects(mapped)]  # other sites' plots say nothing
        summary["plots"] = per_plot([geoms[i] for i in on_map], [labels[i] for i in on_map], polys, b.units_per_m)
        summary["plots_not_on_map"] = len(geoms) - len(on_map)
    import pandas as pd

    with staged_dir(Path(inputs.out), inputs.overwrite, "change", [inputs.before, inputs.after, inputs.plots]) as tmp:
        files = {"tif": tmp / "change.tif", "tif_qml": tmp / "change.qml", "gpkg": tmp / "change.gpkg",
                 "gpkg_qml": tmp / "change_polygons.qml", "summary_json": tmp / "change_summary.json",
                 "summary_csv": tmp / "change_summary.csv", "preview": tmp / "preview.png"}
        colormap = {k: rgba for k, (_, rgba) in CHANGE_CLASSES.items()} | {NODATA: (0, 0, 0, 0)}
        io.write_class_raster(files["tif"], change, b.transform, b.crs_wkt, colormap,
                              {"before": str(b.prob_path), "after": str(a.prob_path),
                               "classes": "0=absent,1=new,2=gone,3=persisting", "same_model": str(not differ),
                               **({"model_change": note} if note else {})},
                              f"{b.tags.get('species', DEFAULT_SPECIES)} change" + (f" ({note})" if note else ""),
                              NODATA)
        files["tif_qml"].write_text(change_raster_qml(), encoding="utf-8")
        geoms_out, rows = [], []
        for k, parts in polys.items():
            for g in parts:
                geoms_out.append(g)
                area = g.area / b.units_per_m**2
                rows.append({"change_class": k, "change": CLASS_NAMES[k], "area_m2": round(area, 3),
                             "area_ha": round(area / 1e4, 6), "model_change": note})
        table = pd.DataFrame(rows, columns=["change_class", "change", "area_m2", "area_ha", "model_change"])
        io.write_vector(files["gpkg"], table, geoms_out, b.crs_wkt, layer="change", geometry_type="MultiPolygon")
        # change.qml belongs to change.tif: the vector's default style lives inside the GeoPackage
        files["gpkg_qml"].write_text(change_vector_qml(), encoding="utf-8")
        io.embed_style(files["gpkg"], "change", change_vector_qml(), "change classes")
        if note:
            io.set_layer_description(files["gpkg"], "change", note)
        files["summary_json"].write_text(json.dumps(summary, indent=2))
        io.write_rows(files["summary_csv"], _csv_rows(summary),
                      ["scope", "site_id", "plot_id", "change", "cells", "area_m2", "area_ha"])
        change_preview(files["preview"], change, b.transform, CHANGE_CLASSES, f"{b.name} {note}".strip())
    files = {k: Path(inputs.out) / v.name for k, v in files.items()}
    return ChangeResult(Path(inputs.out), files, {k: int(v["cells"]) for k, v in areas.items()}, summary)


def _model_of(m: MapLayers) -> dict[str, Any]:
    return {"species": m.tags.get("species", DEFAULT_SPECIES), "bundle_sha256": m.tags.get("bundle_sha256"),
            "threshold": m.threshold}


def _csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"scope": "site", "change": k, **v} for k, v in summary["classes"].items()]
    if summary["model_change"]:  # first, where a reader of the table cannot miss it
        rows.insert(0, {"scope": "warning", "change": summary["model_change"]})
    rows.append({"scope": "site", "change": "net_spread", "area_m2": summary["net_spread_m2"],
                 "area_ha": summary["net_spread_ha"]})
    for p in summary.get("plots", []):
        for k, v in p["classes"].items():
            rows.append({"scope": "plot", "site_id": p["site_id"], "plot_id": p["plot_id"], "change": k, **v})
        rows.append({"scope": "plot", "site_id": p["site_id"], "plot_id": p["plot_id"], "change": "net_spread",
                     "area_m2": p["net_spread_m2"], "area_ha": p["net_spread_ha"]})
    return rows
