"""`spurgemap predict ORTHO...`: a campaign of orthomosaics mapped as Dask tasks, one per orthomosaic.

Entry point: `run_campaign(config, inputs) -> CampaignResult`. Each orthomosaic is `run_predict`
into MAPS/<name>/ on a worker, so its maps equal a run on that orthomosaic alone. A failure stays
that orthomosaic's (a row in campaign_summary.csv with its error); a re-run redoes only the
orthomosaics without finished maps. The driver then writes campaign_summary.csv and
campaign_presence.gpkg (all presence layers in one campaign CRS, with a site column).
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import as_completed

from spurgemap.campaign.engine import dask_engine
from spurgemap.campaign.tasks import one_line, predict_task
from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.ids import safe_id
from spurgemap.core.progress import progress
from spurgemap.core.workdir import claim_dir
from spurgemap.geo.campaign import campaign_crs, crs_name, merge_presence
from spurgemap.predict.mapset import HEADLINE_COLUMNS, LEGACY_KEYS, MapSummary, finished_summary, map_files

log = logging.getLogger(__name__)
SUMMARY = "campaign_summary.csv"
PRESENCE = "campaign_presence.gpkg"
COLUMNS = ["site", "orthomosaic", "status", "error", *HEADLINE_COLUMNS, "folder"]  # + leafy spurge's old columns


@dataclass
class CampaignInputs:
    orthos: list[Path]
    model: Path
    out: Path
    aoi: Path | None = None
    plots: Path | None = None
    overwrite: bool = False
    workers: int | None = None  # LocalCluster processes (default: one per 2 cores)
    scheduler: str | None = None  # tcp://host:8786 of a running Dask cluster
    crs: str | None = None  # campaign CRS; default: the first finished map's


@dataclass
class CampaignResult:
    out: Path
    rows: list[dict[str, Any]]
    crs: str
    seconds: float
    workers: int
    dashboard: str | None
    presence_polygons: int
    redone: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    summaries: dict[str, MapSummary] = field(default_factory=dict)  # site -> its map's summary (finished ones)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def expand_orthos(paths: list[Path], list_file: Path | None) -> list[Path]:
    """Paths, globs (also when the shell did not expand them) and `--list` files, in order, deduplicated."""
    items = [str(p) for p in paths]
    if list_file is not None:
        if not list_file.is_file():
            raise InputError(f"--list {list_file}: file not found")
        items += [ln.strip() for ln in list_file.read_text().splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    out: list[Path] = []
    for item in items:
        hits = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not hits:
            raise InputError(f"{item}: no file matches this pattern")
        out += [Path(h) for h in hits]
    seen: set[Path] = set()
    unique = [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]  # type: ignore[func-returns-value]
    if not unique:
        raise InputError("no orthomosaic given; pass paths, globs or --list FILE")
    return unique


def site_names(orthos: list[Path]) -> list[str]:
    """File stems, or parent folder names when stems collide (sites/<site>/ortho.tif)."""
    for names in ([p.stem for p in orthos], [p.resolve().parent.name for p in orthos]):
        safe = [safe_id(n) for n in names]
        if all(safe) and len(set(safe)) == len(safe):
            return safe
    raise InputError("orthomosaics share both file names and folder names; rename them so that each "
                     "orthomosaic's file stem (or folder) is unique")


def _finished(folder: Path, ortho: Path) -> Path | None:
    return finished_summary(folder, ortho.stem)


def _row(site: str, ortho: Path, folder: Path, status: str, error: str, summary: MapSummary | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(site=site, orthomosaic=str(ortho), status=status, error=error, folder=folder.name)
    if summary is not None:
        row.update(summary.headline())  # leafy spurge's old columns too, as predict keeps its old keys
    return row


def run_campaign(config: SpurgemapConfig, inputs: CampaignInputs,
                 on_start: Callable[[str | None, int], None] | None = None) -> CampaignResult:
    start = time.perf_counter()
    if inputs.model.is_dir():
        raise InputError(f"--model {inputs.model}: is a folder, not a model bundle; give the model.spurge file "
                         "that `spurgemap train` wrote")
    if not inputs.model.is_file():
        raise InputError(f"--model {inputs.model}: bundle not found")
    names = site_names(inputs.orthos)
    out = inputs.out
    claim_dir(out, "predict", [*inputs.orthos, inputs.model, inputs.aoi, inputs.plots])
    crs_text = inputs.crs
    if crs_text:
        campaign_crs(crs_text, None)  # a bad --campaign-crs fails before any work
    dump = config.model_dump(mode="json")
    todo = [i for i, (n, p) in enumerate(zip(names, inputs.orthos, strict=True))
            if inputs.overwrite or _finished(out / n, p) is None]
    outcome: dict[int, tuple[str, str]] = {}
    workers, dashboard = 0, None
    if todo:
        with dask_engine(inputs.workers, inputs.scheduler) as engine:
            workers, dashboard = engine.workers, engine.dashboard
            if on_start:
                on_start(dashboard, workers)
            log.info("%d of %d orthomosaics to map on %d Dask worker(s)%s", len(todo), len(names), workers,
                     f"; dashboard {dashboard}" if dashboard else "")
            futures = {engine.client.submit(
                predict_task, dump, str(inputs.orthos[i].resolve()), str(inputs.model.resolve()),
                str((out / names[i]).resolve()), str(inputs.aoi.resolve()) if inputs.aoi else None,
                str(inputs.plots.resolve()) if inputs.plots else None,
                inputs.overwrite, key=f"predict-{names[i]}-{os.getpid()}-{time.time_ns()}", pure=False): i
                for i in todo}
            with progress(len(todo), "orthomosaics", unit="orthos") as advance:
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        res = future.result()
                        outcome[i] = (res["status"], res["error"])
                    except Exception as exc:  # a killed worker (KilledWorker) or a lost connection
                        outcome[i] = ("failed", one_line(exc))
                    if outcome[i][0] != "ok":
                        log.warning("%s failed: %s", names[i], outcome[i][1])
                    advance(1)
    rows, summaries = [], {}
    for i, (name, ortho) in enumerate(zip(names, inputs.orthos, strict=True)):
        path = _finished(out / name, ortho)
        status, error = outcome.get(i, ("ok", "")) if path is not None else outcome.get(i, ("failed", "no maps"))
        if status == "ok" and path is None:
            status, error = "failed", "no finished maps"
        if path is not None and status == "ok":
            summaries[name] = MapSummary.from_json(path)
        rows.append(_row(name, ortho, out / name, status, error, summaries.get(name)))
    ok = [(r["site"], map_files(out / r["folder"], Path(r["orthomosaic"]).stem)["presence"])
          for r in rows if r["status"] == "ok"]
    crs_wkt = campaign_crs(crs_text, ok[0][1] if ok else None)
    polygons = merge_presence(ok, crs_wkt, out / PRESENCE)
    legacy = [k for k in LEGACY_KEYS.values() if any(k in r for r in rows)]
    tmp = out / f".{SUMMARY}.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS + legacy, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / SUMMARY)
    return CampaignResult(out, rows, crs_name(crs_wkt), time.perf_counter() - start, workers, dashboard,
                          polygons, len(todo), {"summary": out / SUMMARY, "presence": out / PRESENCE}, summaries)
