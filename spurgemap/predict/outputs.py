"""Turn per-cell probabilities into the map files, styles, summary and preview."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine

from spurgemap import __version__
from spurgemap.config import SpurgemapConfig
from spurgemap.core.labels import ABSENT, LABELS, PRESENT
from spurgemap.geo.maps import cell_boxes, polygons_of, write_cog, write_geojson_4326, write_gpkg
from spurgemap.geo.raster import OrthoInfo
from spurgemap.geo.vector import read_plots, reproject
from spurgemap.model.bundle import BundleMeta
from spurgemap.model.calibration import map_probability
from spurgemap.predict.confidence import confidence, tta_spread
from spurgemap.predict.mapset import (
    CLASS_CODES,
    NODATA,
    PALETTE,
    PRESENCE_LAYER,
    PRESENCE_RGB,
    MapSummary,
    PlotArea,
    map_files,
)
from spurgemap.predict.stream import Grid
from spurgemap.predict.styles import DEFAULT_SPECIES, legends, write_styles

log = logging.getLogger(__name__)


def write_maps(config: SpurgemapConfig, inputs: Any, info: OrthoInfo, grid: Grid, meta: BundleMeta,
               sums: np.ndarray, counts: np.ndarray, cell_valid: np.ndarray, aoi: Any,
               preview: tuple[np.ndarray, np.ndarray], spreads: np.ndarray | None, prov: dict[str, Any],
               species: str = DEFAULT_SPECIES) -> tuple[dict[str, Path], MapSummary]:
    """Maps, styles and summary (`predict.mapset`: names, keys and their leafy-spurge aliases); texts name `species`."""
    out: Path = inputs.out
    text = legends(species)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(info.path).stem
    threshold = meta.threshold
    transform = info.transform @ Affine.scale(grid.stride)
    # every cell with enough valid pixels is mapped (its tile's collar was filled by the reader)
    has = (counts > 0) & (cell_valid > 0) & (cell_valid >= config.predict.min_valid_fraction)
    if aoi is not None:
        has = has & _cells_in(aoi, transform, has.shape)
    # rounded once, so the GeoJSON's probability and class and the rasters always agree
    # the bundle's context step and calibration (model/calibration.py), then rounded once
    prob = np.round(map_probability(sums / np.maximum(counts, 1), has, meta.calibration, meta.context), 4)
    pct = np.where(has, np.rint(np.nan_to_num(prob) * 100), NODATA).astype(np.uint8)
    cls = np.where(has, (np.nan_to_num(prob) >= threshold).astype(np.uint8), NODATA).astype(np.uint8)
    tags = {"spurgemap_version": __version__, "bundle_sha256": prov["bundle_sha256"],
            "threshold": f"{threshold:.6f}", "tile_size_px": str(grid.tile), "stride_px": str(grid.stride),
            "source": str(info.path), "source_sha256": prov["source_sha256"], "created": prov["created"],
            "model_backbone": meta.backbone, "units": f"percent probability of {species}", "species": species,
            "context_lambda": f"{float(meta.context.get('lambda', 0.0)):g}",
            "calibration": str(meta.calibration.get("method", "none")), "operating_point": meta.operating_point}
    files = map_files(out, name)
    write_cog(files["prob"], pct, transform, info.crs_wkt, NODATA, tags, description=text["prob"])
    write_cog(files["class"], cls, transform, info.crs_wkt, NODATA, {**tags, "classes": CLASS_CODES},
              colormap=PALETTE, overview_resampling="nearest", description=text["presence"])
    conf = confidence(pct, threshold)
    conf_bands, conf_desc = conf, "confidence (0 at the threshold, 100 at p = 0 or 1)"
    if spreads is not None:  # --tta: band 2 = how much the 8 D4 views disagree
        conf_bands = np.stack([conf, tta_spread(spreads, counts, has)])
        conf_desc += "|D4 TTA spread (max - min of the 8 views' probabilities, percentage points)"
    write_cog(files["confidence"], conf_bands, transform, info.crs_wkt, NODATA,
              {**tags, "units": "confidence 0..100", "low_confidence": str(config.predict.low_confidence)},
              description=conf_desc)
    rows, cols = (np.asarray(a) for a in np.nonzero(has))
    table = pd.DataFrame({"row": rows, "col": cols, "probability": prob[rows, cols],
                          "class": np.where(cls[rows, cols] == PRESENT, LABELS[PRESENT], LABELS[ABSENT])})
    write_geojson_4326(files["tiles"], table, cell_boxes(transform, rows, cols), info.crs_wkt)
    cell_m2 = (grid.stride * info.gsd_m) ** 2
    to_m2 = (info.gsd_m / info.res_x) ** 2  # map units² -> ground m²
    present_polys = polygons_of(cls == 1, transform)
    areas = [g.area * to_m2 for g in present_polys]
    write_gpkg(files["presence"], pd.DataFrame({"area_m2": np.round(areas, 3),
                                                "area_ha": np.round(np.array(areas) / 1e4, 6)}),
               present_polys, info.crs_wkt, PRESENCE_LAYER, prov["created"])
    valid_m2 = float((cell_valid * has).sum() * cell_m2)
    spurge_m2 = float((cell_valid * (cls == 1)).sum() * cell_m2)
    low_m2 = float((cell_valid * (has & (conf < config.predict.low_confidence))).sum() * cell_m2)
    hours = prov["seconds"] / 3600
    summary = MapSummary(
        spurgemap_version=__version__, orthomosaic=str(info.path), model=prov["model"],
        threshold=threshold, operating_point=meta.operating_point,
        context_lambda=float(meta.context.get("lambda", 0.0)),
        calibration=str(meta.calibration.get("method", "none")), backend=prov["backend"],
        tile_size_px=grid.tile, stride_px=grid.stride,
        cells=int(has.sum()), present_cells=int((cls == 1).sum()), tiles_predicted=prov["tiles_predicted"],
        species=species, mapped_area_ha=round(valid_m2 / 1e4, 4),
        present_area_ha=round(spurge_m2 / 1e4, 4),
        present_share=round(spurge_m2 / valid_m2, 4) if valid_m2 else 0.0,
        low_confidence_below=config.predict.low_confidence,
        low_confidence_share=round(low_m2 / valid_m2, 4) if valid_m2 else 0.0,
        seconds=round(prov["seconds"], 2),
        tiles_per_second=round(prov["tiles_predicted"] / prov["seconds"], 2) if prov["seconds"] else None,
        hectares_per_hour=round(valid_m2 / 1e4 / hours, 2) if hours else None,
        created=prov["created"],
    )
    if inputs.plots is not None:
        summary.plots, summary.plots_not_on_map = _per_plot(inputs.plots, info, present_polys, to_m2,
                                                            polygons_of(has, transform))
    files["summary_json"].write_text(summary.to_json())
    _write_csv(files["summary_csv"], summary)
    for path in write_styles(out, name, threshold, species, config.predict.low_confidence):
        files[path.stem.removeprefix(f"{name}_") + "_qml"] = path
    _preview(files["preview"], info, preview, pct, has, grid.stride, threshold)
    return files, summary


def _cells_in(aoi: Any, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Cells whose centre lies in the AOI."""
    from shapely import contains_xy

    rows, cols = np.indices(shape)
    cx = transform.c + (cols.ravel() + 0.5) * transform.a  # north-up grid
    cy = transform.f + (rows.ravel() + 0.5) * transform.e
    return np.asarray(contains_xy(aoi, cx, cy)).reshape(shape)


def _per_plot(plots: Path, info: OrthoInfo, present: list[Any], to_m2: float,
              mapped: list[Any]) -> tuple[list[PlotArea], int]:
    """Present area per plot, for the plots that touch a mapped cell (and how many do not).

    Why: a survey of many sites lists other sites' plots too; with 0 m² they would read as "absent".
    """
    from shapely import union_all

    layer = read_plots(plots)
    geoms = reproject(layer.geoms, layer.crs_wkt, info.crs_wkt)
    spurge = union_all(present) if present else None
    site_area = union_all(mapped) if mapped else None
    rows = []
    for site, plot, g in zip(layer.site_ids, layer.plot_ids, geoms, strict=True):
        if site_area is None or not g.intersects(site_area):
            continue
        area = g.area * to_m2
        hit = g.intersection(spurge).area * to_m2 if spurge is not None and area else 0.0
        rows.append(PlotArea(site, plot, round(area, 3), round(hit, 3), round(hit / area, 4) if area else 0.0))
    return rows, len(geoms) - len(rows)


def _write_csv(path: Path, summary: MapSummary) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows(summary.csv_rows())
    os.replace(tmp, path)


def _preview(path: Path, info: OrthoInfo, preview: tuple[np.ndarray, np.ndarray], pct: np.ndarray,
             has: np.ndarray, stride: int, threshold: float) -> None:
    """The orthomosaic with presence cells tinted magenta (stronger with probability)."""
    from PIL import Image

    rgb, valid = preview
    h, w = rgb.shape[:2]
    # each preview pixel shows the map cell under its centre
    rows = np.minimum(((np.arange(h) + 0.5) * info.height / h) // stride, pct.shape[0] - 1).astype(int)
    cols = np.minimum(((np.arange(w) + 0.5) * info.width / w) // stride, pct.shape[1] - 1).astype(int)
    p = pct[np.ix_(rows, cols)].astype(np.float32)
    ok = has[np.ix_(rows, cols)]
    alpha = np.where(ok & (p >= threshold * 100), 0.35 + 0.4 * np.clip(p / 100, 0, 1), 0)[..., None]
    overlay = np.array(PRESENCE_RGB, np.float32)
    img = rgb.astype(np.float32) * (1 - alpha) + overlay * alpha
    img[~valid] = 255
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(tmp)
    os.replace(tmp, path)
