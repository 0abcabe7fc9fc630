"""`spurgemap evaluate --workers/--scheduler`: grid cells as Dask tasks, one GPU per worker.

Each task runs `evaluate_cell` (the very cell `run_evaluate` would run, into the same folder);
cells already finished are skipped by the cache. `run_evaluate` then runs here, finds every cell
cached, and writes results.csv and summary.md exactly as the sequential run does.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from distributed import as_completed, get_worker

from spurgemap.campaign.engine import dask_engine
from spurgemap.config import SpurgemapConfig
from spurgemap.core.progress import progress
from spurgemap.core.workdir import claim_dir
from spurgemap.evaluate.stage import EvaluateInputs, EvaluateResult, evaluate_cell, run_evaluate
from spurgemap.tile.tileset import TileSet, load_tile_set

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _tiles(path: str, group_column: str) -> TileSet:
    """Read once per worker process, not once per cell."""
    return load_tile_set(Path(path), group_column)


def _pin_gpu() -> None:
    """LocalCluster workers are named 0..n-1: worker i takes GPU i (mod the GPUs it sees)."""
    if not torch.cuda.is_available():
        return
    try:
        name = get_worker().name
    except ValueError:  # not on a worker
        return
    if isinstance(name, int) or str(name).isdigit():
        torch.cuda.set_device(int(name) % torch.cuda.device_count())


def cell_task(config: dict[str, Any], tiles: str, out: str, method: str, k: int, seed: int) -> bool:
    _pin_gpu()
    cfg = SpurgemapConfig.model_validate(config)
    return evaluate_cell(cfg, _tiles(tiles, cfg.train.group_column), Path(out), method, k, seed)


def run_evaluate_distributed(config: SpurgemapConfig, inputs: EvaluateInputs, workers: int | None = None,
                             scheduler: str | None = None) -> EvaluateResult:
    if isinstance(inputs.tiles, TileSet):
        raise TypeError("distributed evaluate needs the tile-set folder, not a loaded TileSet")
    e = config.evaluate
    grid = [(m, k, s) for m in e.methods for k in e.shots for s in e.seeds]
    claim_dir(inputs.out, "evaluate", [Path(inputs.tiles)])
    dump = config.model_dump(mode="json")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with dask_engine(workers, scheduler, gpus=gpus, one_task_per_worker=True) as engine:
        log.info("%d grid cells on %d Dask worker(s)%s%s", len(grid), engine.workers,
                 f" ({gpus} GPU(s), one per worker)" if gpus and engine.local else "",
                 f"; dashboard {engine.dashboard}" if engine.dashboard else "")
        futures = [engine.client.submit(cell_task, dump, str(Path(inputs.tiles).resolve()),
                                        str(inputs.out.resolve()), m, k, s, pure=False) for m, k, s in grid]
        with progress(len(futures), "grid cells", unit="cells") as advance:
            for future in as_completed(futures):
                future.result()  # a failed cell (bad sites, unknown method) fails the grid, as sequentially
                advance(1)
    return run_evaluate(config, inputs)
