"""`spurgemap tile`: orthomosaics + surveyed plots -> a labelled, plot-aligned tile set.

Entry point: `run_tile(config, inputs) -> TileResult`. Every check that can fail runs before the
first pixel is read; pixels are then streamed plot by plot into a staged folder that replaces
TILES_DIR only when everything succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurgemap import __version__
from spurgemap.config import SpurgemapConfig, dump_config
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import background_sha256
from spurgemap.core.progress import progress
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.geo.raster import OrthoInfo, OrthoReader, gdal_session, open_ortho
from spurgemap.geo.vector import read_plots, write_tile_index
from spurgemap.tile.plan import Plan, PlotJob, block_row_groups, plan_jobs
from spurgemap.tile.survey import Survey, read_survey, read_verification, survey_from_frame
from spurgemap.tile.worker import TileOutcome, process_plot

log = logging.getLogger(__name__)


@dataclass
class TileInputs:
    orthos: list[Path]
    plots: Path
    out: Path
    survey: Path | None = None
    verify: Path | None = None
    plots_crs: str | None = None
    overwrite: bool = False
    # Runs the plot groups elsewhere (campaign.tiling: Dask tasks), returning outcomes per group in order;
    # None: threads in this process.
    group_runner: Callable[[SpurgemapConfig, list[list[PlotJob]], Path, dict[str, int]],
                           list[list[TileOutcome]]] | None = None


@dataclass
class TileResult:
    out: Path
    n_tiles: int
    per_site: dict[str, dict[str, int]]
    skipped: dict[str, int]
    uncovered_plots: list[str]
    unlabelled_plots: list[str]
    seconds: float
    megapixels: float
    summary: dict[str, Any] = field(default_factory=dict)
    unvisited_plots: list[str] = field(default_factory=list)  # empty presence in the survey: skipped

    @property
    def tiles_per_second(self) -> float:
        return self.n_tiles / self.seconds if self.seconds > 0 else 0.0


def _load_survey(config: SpurgemapConfig, inputs: TileInputs, layer_attrs: Any, source: str) -> Survey:
    if inputs.survey is not None:
        return read_survey(inputs.survey, config.labels)
    row_offset = 2 if source.lower().endswith(".csv") else 1
    survey = survey_from_frame(layer_attrs, config.labels, source, require_label=False, row_offset=row_offset)
    if survey is None:
        raise InputError(f"{source}: no presence column on the plot layer; give --survey SURVEY.csv")
    return survey


def _open_all(config: SpurgemapConfig, orthos: list[Path]) -> list[OrthoInfo]:
    if not orthos:
        raise InputError("no orthomosaic given; pass one or more GeoTIFF paths")
    t = config.tile
    infos = [open_ortho(p, t.tile_size_px, bands=t.bands, value_range=t.value_range,
                        max_pixels=t.max_pixels, max_compression_ratio=t.max_compression_ratio)
             for p in orthos]
    if len({i.path.resolve() for i in infos}) != len(infos):
        raise InputError("the same orthomosaic is given twice")
    return infos


def _inputs(inputs: TileInputs) -> list[Path | None]:
    """What --out must not equal, contain or lie inside."""
    return [*inputs.orthos, inputs.plots, inputs.survey, inputs.verify]


def run_tile(config: SpurgemapConfig, inputs: TileInputs) -> TileResult:
    with background_sha256() as sha256, gdal_session(config.tile.gdal_cache_mb):
        return _run_tile(config, inputs, sha256)


def _run_tile(config: SpurgemapConfig, inputs: TileInputs,
              hash_later: Callable[[Path], Future[str]]) -> TileResult:
    start = time.perf_counter()
    check_target(inputs.out, inputs.overwrite, _inputs(inputs))
    infos = _open_all(config, inputs.orthos)
    pending = {info.path: hash_later(info.path) for info in infos}
    layer = read_plots(inputs.plots, inputs.plots_crs)
    survey = _load_survey(config, inputs, layer.attributes, layer.source)
    plot_keys = set(zip(layer.site_ids, layer.plot_ids, strict=False))
    unknown = sorted(f"{s}/{p}" for s, p in survey.labels if (s, p) not in plot_keys)
    if unknown:
        raise InputError(f"{survey.source}: plot ids not in {layer.source}: {', '.join(unknown[:10])}")
    plan = plan_jobs(config, infos, layer, survey)
    verify = read_verification(inputs.verify, config.labels) if inputs.verify else {}
    all_ids = {spec_id for job in plan.jobs for spec_id in job.tile_ids}
    bad = sorted(set(verify) - all_ids)
    if bad:
        raise InputError(f"{inputs.verify}: tile ids not produced by this tiling: {', '.join(bad[:10])}")
    total = sum(len(job.frame.tiles) for job in plan.jobs)
    outcomes: list[TileOutcome] = []
    readers = {info.path: OrthoReader(info) for info in infos}
    with staged_dir(inputs.out, inputs.overwrite, "tile", _inputs(inputs)) as tmp:
        try:
            groups = block_row_groups(plan.jobs)
            if inputs.group_runner is not None:
                outcomes = [o for res in inputs.group_runner(config, groups, tmp, verify) for o in res]
            else:
                with progress(total, "tiling") as advance, ThreadPoolExecutor(config.tile.threads) as pool:
                    def work(group: list[PlotJob]) -> list[TileOutcome]:
                        res: list[TileOutcome] = []
                        with gdal_session(config.tile.gdal_cache_mb):
                            for job in group:
                                done = process_plot(job, readers[job.ortho.path], config, tmp, verify)
                                advance(len(done))
                                res.extend(done)
                        return res

                    for res in pool.map(work, groups):
                        outcomes.extend(res)
        finally:
            for reader in readers.values():
                reader.close()
        hashes = {path: future.result() for path, future in pending.items()}
        by_source = {str(path): digest for path, digest in hashes.items()}
        for o in outcomes:
            if o.record is not None:
                o.record["source_sha256"] = by_source[o.record["source"]]
        kept = [o for o in outcomes if o.record is not None]
        if not kept:
            files = ", ".join(str(i.path) for i in infos)
            raise InputError(f"{files}: no tile of the plots in {inputs.plots} has enough valid "
                             f"pixels (tile.min_valid_fraction={config.tile.min_valid_fraction}); "
                             "check that the plots lie on valid (non-transparent) pixels")
        by_crs: dict[str, list[TileOutcome]] = {}
        for o in kept:
            by_crs.setdefault(o.crs_wkt, []).append(o)
        for i, (crs_wkt, group) in enumerate(by_crs.items()):
            write_tile_index(tmp / "tiles.gpkg", [o.record for o in group if o.record],
                             [o.footprint for o in group], crs_wkt,
                             layer="tiles" if i == 0 else f"tiles_{i}")
        seconds = time.perf_counter() - start
        result = _summarise(config, inputs, plan, outcomes, seconds, hashes, survey)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2))
        (tmp / "config.yaml").write_text(dump_config(config))
    result.out = inputs.out
    return result


def _summarise(config: SpurgemapConfig, inputs: TileInputs, plan: Plan, outcomes: list[TileOutcome],
               seconds: float, hashes: dict[Path, str], survey: Survey) -> TileResult:
    names = config.labels.names()
    per_site: dict[str, dict[str, int]] = {}
    skipped: Counter[str] = Counter()
    clipped = 0
    for o in outcomes:
        clipped += o.clipped
        if o.record is None:
            skipped[o.skip_reason] += 1
            continue
        site = per_site.setdefault(o.record["site_id"], dict.fromkeys(names, 0))
        site[names[o.record["class_id"]]] += 1
    if clipped:
        log.warning("%d valid pixels fell outside --value-range %s and were clipped to 0/255",
                    clipped, config.tile.value_range)
    n = sum(sum(v.values()) for v in per_site.values())
    unvisited = [f"{s}/{p}" for s, p in survey.unvisited]
    mpx = n * config.tile.tile_size_px**2 / 1e6
    summary = {
        "spurgemap_version": __version__,
        "tiles": n,
        "tiles_per_site_and_class": per_site,
        "skipped_tiles": dict(skipped),
        "skipped_tile_ids": {o.tile_id: o.skip_reason for o in outcomes if o.record is None},
        "uncovered_plots": plan.uncovered,
        "partially_covered_plots": plan.partial,
        "unlabelled_plots": plan.unlabelled,
        "unvisited_plots": unvisited,  # empty presence: not visited, skipped
        "repaired_plots": plan.repaired,
        "clipped_pixels": clipped,
        "orthomosaics": [{"path": str(p), "sha256": h} for p, h in hashes.items()],
        "plots": str(inputs.plots),
        "survey": str(inputs.survey) if inputs.survey else None,
        "verify": str(inputs.verify) if inputs.verify else None,
        "seconds": round(seconds, 3),
        "tiles_per_second": round(n / seconds, 2) if seconds else None,
    }
    return TileResult(inputs.out, n, per_site, dict(skipped), plan.uncovered, plan.unlabelled,
                      seconds, mpx, summary, unvisited)
