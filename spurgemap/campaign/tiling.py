"""`spurgemap tile ORTHO... --workers/--scheduler`: plot groups cut as Dask tasks, one per orthomosaic.

The plan (matching plots to orthomosaics, tile ids) is made once by `run_tile` in this process;
workers only cut and write the tiles of their orthomosaic's plot groups into the staged folder
(shared storage on a cluster), and `run_tile` then writes tiles.gpkg and summary.json from the
outcomes in plan order, so the tile set equals the in-process one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from distributed import Client, as_completed

from spurgemap.campaign.engine import dask_engine
from spurgemap.campaign.tasks import tile_task
from spurgemap.config import SpurgemapConfig
from spurgemap.core.progress import progress
from spurgemap.tile.plan import PlotJob
from spurgemap.tile.stage import TileInputs, TileResult, run_tile
from spurgemap.tile.worker import TileOutcome

log = logging.getLogger(__name__)


GroupRunner = Callable[[SpurgemapConfig, list[list[PlotJob]], Path, dict[str, int]], list[list[TileOutcome]]]


def dask_group_runner(client: Client) -> GroupRunner:
    def run(config: SpurgemapConfig, groups: list[list[PlotJob]], tmp: Path,
            verify: dict[str, int]) -> list[list[TileOutcome]]:
        by_ortho: dict[str, list[int]] = {}
        for i, group in enumerate(groups):
            by_ortho.setdefault(str(group[0].ortho.path), []).append(i)
        dump = config.model_dump(mode="json")
        futures = {client.submit(tile_task, dump, [groups[i] for i in idx], str(tmp.resolve()), verify,
                                 pure=False): idx for idx in by_ortho.values()}
        results: list[list[TileOutcome]] = [[] for _ in groups]
        with progress(len(futures), "tiling orthomosaics", unit="orthos") as advance:
            for future in as_completed(futures):
                for i, res in zip(futures[future], future.result(), strict=True):
                    results[i] = res
                advance(1)
        return results

    return run


def run_tile_distributed(config: SpurgemapConfig, inputs: TileInputs, workers: int | None = None,
                         scheduler: str | None = None) -> tuple[TileResult, str | None]:
    with dask_engine(workers, scheduler) as engine:
        log.info("tiling on %d Dask worker(s)%s", engine.workers,
                 f"; dashboard {engine.dashboard}" if engine.dashboard else "")
        inputs.group_runner = dask_group_runner(engine.client)
        return run_tile(config, inputs), engine.dashboard
