"""Functions that run on Dask workers. They take paths and a config dump, never big objects,
and return small dicts, so nothing heavy is pickled between machines."""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from spurgemap.config import SpurgemapConfig
from spurgemap.geo.raster import OrthoReader, gdal_session
from spurgemap.model.bundle import Bundle, read_bundle
from spurgemap.predict.stage import PredictInputs, run_predict
from spurgemap.tile.plan import PlotJob
from spurgemap.tile.worker import TileOutcome, process_plot


@lru_cache(maxsize=2)
def _bundle(path: str, mtime: float) -> Bundle:
    """The bundle is read once per worker process (mtime in the key: a retrained bundle is reread)."""
    return read_bundle(Path(path))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def predict_task(config: dict[str, Any], ortho: str, model: str, out: str, aoi: str | None,
                 plots: str | None, overwrite: bool) -> dict[str, Any]:
    """One orthomosaic mapped by `run_predict` into its own folder; errors come back as a status."""
    start = time.perf_counter()
    try:
        cfg = SpurgemapConfig.model_validate(config)
        bundle = _bundle(model, Path(model).stat().st_mtime)
        res = run_predict(cfg, PredictInputs(Path(ortho), bundle, Path(out), Path(aoi) if aoi else None,
                                             Path(plots) if plots else None, overwrite))
    except Exception as exc:  # any failure is this orthomosaic's status, never the campaign's
        return {"status": "failed", "error": one_line(exc), "seconds": round(time.perf_counter() - start, 2)}
    return {"status": "ok", "error": "", "summary_file": str(res.files["summary_json"]),
            "seconds": round(res.seconds, 2)}


def tile_task(config: dict[str, Any], groups: list[list[PlotJob]], out: str,
              verify: dict[str, int]) -> list[list[TileOutcome]]:
    """Plot groups of one orthomosaic cut into tiles under `out` (the staged tile-set folder)."""
    cfg = SpurgemapConfig.model_validate(config)
    results: list[list[TileOutcome]] = []
    readers: dict[Path, OrthoReader] = {}
    try:
        with gdal_session(cfg.tile.gdal_cache_mb):
            for group in groups:
                res: list[TileOutcome] = []
                for job in group:
                    reader = readers.get(job.ortho.path)
                    if reader is None:
                        reader = readers[job.ortho.path] = OrthoReader(job.ortho)
                    res.extend(process_plot(job, reader, cfg, Path(out), verify))
                results.append(res)
    finally:
        for reader in readers.values():
            reader.close()
    return results
