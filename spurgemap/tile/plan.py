"""Match plots to orthomosaics and lay out their tile grids, before any pixel is read."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from affine import Affine
from shapely import Point, box
from shapely.geometry.base import BaseGeometry

from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.ids import safe_id
from spurgemap.geo.raster import OrthoInfo
from spurgemap.geo.vector import PlotLayer, reproject
from spurgemap.tile.grid import PlotFrame, plot_frame
from spurgemap.tile.survey import Survey

log = logging.getLogger(__name__)


@dataclass
class PlotJob:
    site_id: str
    plot_id: str
    site_dir: str
    ortho: OrthoInfo
    geom: BaseGeometry  # in the orthomosaic's CRS
    frame: PlotFrame
    class_id: int
    extras: dict[str, Any]
    tile_ids: list[str]
    scale: float = 1.0  # tile pixel / raster pixel: > 1 when tiles are resampled to a coarser tile.gsd_m


@dataclass
class Plan:
    jobs: list[PlotJob] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def _coverage(geom: BaseGeometry, footprint: BaseGeometry) -> float:
    if isinstance(geom, Point):
        return 1.0 if footprint.contains(geom) else 0.0
    return float(geom.intersection(footprint).area / geom.area) if geom.area > 0 else 0.0


def _safe_ids(layer: PlotLayer) -> dict[tuple[str, str], tuple[str, str]]:
    """File-safe (site, plot) ids, refusing ids that are empty or collide once made safe."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    taken: dict[tuple[str, str], tuple[str, str]] = {}
    for key in zip(layer.site_ids, layer.plot_ids, strict=False):
        safe = (safe_id(key[0]), safe_id(key[1]))
        if not all(safe):
            raise InputError(f"{layer.source}: id {key[0]!r}/{key[1]!r} has no usable characters")
        if safe in taken and taken[safe] != key:
            raise InputError(f"{layer.source}: ids {taken[safe]} and {key} become the same file name; "
                             "rename one")
        taken[safe] = key
        out[key] = safe
    return out


def plan_jobs(config: SpurgemapConfig, infos: list[OrthoInfo], layer: PlotLayer, survey: Survey) -> Plan:
    plan = Plan(repaired=list(layer.repaired))
    safe = _safe_ids(layer)
    keys = list(zip(layer.site_ids, layer.plot_ids, strict=False))
    per_ortho = [reproject(layer.geoms, layer.crs_wkt, info.crs_wkt) for info in infos]
    footprints = [box(*info.bounds) for info in infos]
    t = config.tile
    for i, key in enumerate(keys):
        name = f"{key[0]}/{key[1]}"
        cover = [_coverage(geoms[i], fp) for geoms, fp in zip(per_ortho, footprints, strict=False)]
        # Best coverage wins; among equals, an orthomosaic whose folder or name is the site id.
        best = max(range(len(infos)), key=lambda j: (
            round(cover[j], 6), key[0] in (infos[j].path.parent.name, infos[j].path.stem)))
        if cover[best] <= 0:
            plan.uncovered.append(name)
            continue
        if key not in survey.labels:
            plan.unlabelled.append(name)
            continue
        if cover[best] < 0.999:  # reprojection round-off leaves full plots at 0.99999...
            plan.partial.append(name)
        info = infos[best]
        point_size = t.point_plot_size_m * info.res_x / info.gsd_m
        scale = t.gsd_m / info.gsd_m if t.gsd_m else 1.0  # the grid of tile pixels on the ground
        frame = plot_frame(per_ortho[best][i], info.transform @ Affine.scale(scale), t.tile_size_px,
                           rotation_tolerance_deg=t.rotation_tolerance_deg, point_size=point_size)
        s_site, s_plot = safe[key]
        ids = [f"{s_site}_{s_plot}_r{spec.row}c{spec.col}" for spec in frame.tiles]
        plan.jobs.append(PlotJob(key[0], key[1], s_site, info, per_ortho[best][i], frame,
                                 survey.labels[key], survey.extras.get(key, {}), ids, scale))
    if plan.uncovered:
        log.warning("%d plot(s) lie on no orthomosaic: %s", len(plan.uncovered),
                    ", ".join(plan.uncovered[:20]))
    if plan.unlabelled:
        log.warning("%d plot(s) have no survey label and are skipped: %s", len(plan.unlabelled),
                    ", ".join(plan.unlabelled[:20]))
    if plan.partial:
        log.warning("%d plot(s) extend beyond their orthomosaic: %s", len(plan.partial),
                    ", ".join(plan.partial[:20]))
    if t.gsd_m and any(job.scale < 1 for job in plan.jobs):
        log.warning("tile.gsd_m=%g is finer than some orthomosaics' own GSD: their tiles are enlarged "
                    "(%s resampling) and hold no more detail than the imagery", t.gsd_m, t.resampling)
    if not plan.jobs:
        files = ", ".join(str(i.path) for i in infos)
        if len(plan.uncovered) == len(keys):
            raise InputError(f"{layer.source}: no plot lies on the orthomosaic(s) {files}; "
                             "check that plots and orthomosaics are of the same place and CRS")
        raise InputError(f"{layer.source}: no labelled plot lies on the orthomosaic(s) {files}")
    return plan


def block_row_groups(jobs: list[PlotJob]) -> list[list[PlotJob]]:
    """Plots grouped by the raster block row they start in, left to right.

    One thread works through a group with its own GDAL handle, so blocks decoded for one plot are
    still cached for its neighbours instead of being decoded again by another thread.
    """
    groups: dict[tuple[str, int], list[PlotJob]] = {}
    for job in jobs:
        inv = ~job.ortho.transform
        minx, _, _, maxy = job.geom.bounds
        _, row = inv @ (minx, maxy)
        key = (str(job.ortho.path), int(row // job.ortho.block_shape[0]))
        groups.setdefault(key, []).append(job)
    for group in groups.values():
        group.sort(key=lambda j: j.geom.bounds[0])
    return [groups[k] for k in sorted(groups)]
