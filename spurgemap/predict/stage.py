"""`spurgemap predict`: a whole orthomosaic in, presence maps (of labels.species) for QGIS out, in bounded memory.

Entry point: `run_predict(config, inputs) -> PredictResult`. Tiles stream from a reader thread
into batched inference; probabilities accumulate in per-cell arrays (O(cells), not O(pixels)).
State is checkpointed at batch boundaries in MAPS_DIR/.work, and batches are formed from one fixed
sequence of tiles, so a killed run resumes and writes byte-identical maps.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from shapely import box
from shapely.prepared import prep

from spurgemap import __version__
from spurgemap.config import SpurgemapConfig, dump_config
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import background_sha256, file_fingerprint, run_key
from spurgemap.core.labels import DEFAULT_SPECIES
from spurgemap.core.progress import progress
from spurgemap.core.workdir import preflight, resumable_workdir
from spurgemap.geo.maps import read_aoi
from spurgemap.geo.raster import OrthoInfo, OrthoReader, gdal_session, open_ortho, strip_cache_mb
from spurgemap.geo.vector import read_plots, reproject
from spurgemap.model.bundle import Bundle, BundleMeta, read_bundle
from spurgemap.predict.infer import make_predictor
from spurgemap.predict.mapset import MapSummary
from spurgemap.predict.outputs import write_maps
from spurgemap.predict.stream import Grid, TileStream

log = logging.getLogger(__name__)


@dataclass
class PredictInputs:
    ortho: Path
    model: Path | Bundle  # a bundle file, or one already opened (read once per campaign)
    out: Path
    aoi: Path | None = None
    plots: Path | None = None
    overwrite: bool = False


@dataclass
class PredictResult:
    out: Path
    files: dict[str, Path]
    tiles: int
    predicted: int
    seconds: float
    backend: str
    summary: MapSummary  # also written as <name>_summary.json

    @property
    def tiles_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0


def _timestamp() -> str:
    """Run time for provenance; SOURCE_DATE_EPOCH pins it for reproducible outputs."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tile_px(info: OrthoInfo, meta: BundleMeta, cfg: Any) -> int:
    """Tile size in raster pixels covering the same ground as a training tile.

    Reading a finer orthomosaic and shrinking its tiles is what `tile --gsd` did to the training
    tiles, so a model trained that way takes any finer imagery; imagery coarser than the model
    (tiles enlarged: detail the model learned from is missing) is refused beyond max_gsd_ratio.
    """
    ratio = info.gsd_m / meta.gsd_m
    tile = meta.tile_size_px
    if abs(ratio - 1) <= cfg.gsd_tolerance:
        return tile
    resampled = meta.source_gsd_m is not None
    low = 0.0 if resampled else 1 / cfg.max_gsd_ratio
    if not low <= ratio <= cfg.max_gsd_ratio:
        hint = ("resample the orthomosaic, or train on tiles made with `spurgemap tile --gsd` (then finer "
                "imagery is always accepted)" if ratio < 1 else
                "imagery coarser than the model's lacks the detail it learned from; fly lower or train on "
                "tiles of this resolution (`spurgemap tile --gsd`)")
        raise InputError(f"{info.path}: ground resolution {info.gsd_m * 100:.2f} cm/px is too far from the "
                         f"model's {meta.gsd_m * 100:.2f} cm/px (limit x{cfg.max_gsd_ratio}); {hint}")
    px = max(round(tile / ratio), 8)
    say = log.info if resampled and ratio < 1 else log.warning
    say("%s: %.2f cm/px vs the model's %.2f cm/px: reading %d-px tiles (%.2f m, the ground of a training "
        "tile) and resizing them to the model input", info.path, info.gsd_m * 100, meta.gsd_m * 100, px,
        px * info.gsd_m)
    return px


def _species(config: SpurgemapConfig, meta: BundleMeta) -> str:
    """The bundle's species, unless the config names another than the default."""
    return config.labels.species if config.labels.species != DEFAULT_SPECIES else meta.species


def run_predict(config: SpurgemapConfig, inputs: PredictInputs) -> PredictResult:
    model = inputs.model.path if isinstance(inputs.model, Bundle) else inputs.model
    preflight(inputs.out, inputs.overwrite, [inputs.ortho, model, inputs.aoi, inputs.plots])
    with background_sha256() as sha256, gdal_session(config.tile.gdal_cache_mb):
        return _run(config, inputs, sha256)


def _keep_mask(grid: Grid, info: OrthoInfo, aoi: Any) -> np.ndarray:
    """Which tile positions to read: all, or those touching the AOI."""
    keep = np.ones((grid.tile_rows, grid.tile_cols), dtype=bool)
    if aoi is None:
        return keep
    p = prep(aoi)
    t, size = info.transform, grid.tile
    for r in range(grid.tile_rows):
        for c in range(grid.tile_cols):
            x0, y0 = t @ (c * grid.stride, r * grid.stride)
            x1, y1 = t @ (c * grid.stride + size, r * grid.stride + size)
            keep[r, c] = p.intersects(box(x0, y1, x1, y0))
    return keep


def _run(config: SpurgemapConfig, inputs: PredictInputs, sha256: Callable[[Path], Future[str]]) -> PredictResult:
    start = time.perf_counter()
    cfg = config.predict
    bundle = inputs.model if isinstance(inputs.model, Bundle) else read_bundle(inputs.model)
    meta = bundle.meta
    info = open_ortho(inputs.ortho, 1, max_pixels=config.tile.max_pixels,
                      max_compression_ratio=config.tile.max_compression_ratio, bands=config.tile.bands,
                      value_range=config.tile.value_range)
    tile = _tile_px(info, meta, cfg)
    stride = cfg.stride_px or tile
    if tile % stride:
        raise InputError(f"--stride {stride} must divide the tile size ({tile} px)")
    grid = Grid(info.width, info.height, tile, stride)
    aoi = None
    if inputs.aoi is not None:
        aoi = read_aoi(inputs.aoi, info.crs_wkt)
        if not aoi.intersects(box(*info.bounds)):
            raise InputError(f"{inputs.aoi}: the AOI lies outside {info.path}; check its CRS and location")
    if inputs.plots is not None:  # a bad --plots fails now, not after the whole orthomosaic is mapped
        layer = read_plots(inputs.plots)
        reproject(layer.geoms, layer.crs_wkt, info.crs_wkt)
    if inputs.out.exists() and not inputs.out.is_dir():
        raise InputError(f"--out {inputs.out}: exists and is not a folder; choose another --out")
    keep = _keep_mask(grid, info, aoi)
    bundle_sha = bundle.sha256
    source_sha = sha256(info.path)  # for provenance only: the resume key needs no full read of the file
    key = run_key(bundle_sha, file_fingerprint(info.path), dump_config(config), str(inputs.aoi))
    work, resumed = resumable_workdir(inputs.out, inputs.overwrite, key, "predict",
                                      [info.path, bundle.path, inputs.aoi, inputs.plots])
    state = _load_state(work) if resumed else None
    sums = state["sums"] if state else np.zeros((grid.cell_rows, grid.cell_cols), np.float64)
    counts = state["counts"] if state else np.zeros((grid.cell_rows, grid.cell_cols), np.int32)
    spreads = state["spreads"] if state else np.zeros((grid.cell_rows, grid.cell_cols), np.float64)
    done = int(state["done"]) if state else 0
    next_tile = (int(state["next"][0]), int(state["next"][1])) if state else (0, 0)
    stamp = str(state["stamp"]) if state else _timestamp()
    predict, backend = make_predictor(bundle, cfg, tile)
    log.info("predicting %s with %s: %d x %d tiles of %d px, stride %d", info.path.name, backend,
             grid.tile_rows, grid.tile_cols, tile, stride)
    m = grid.per_tile
    batches = 0
    with progress(grid.n_tiles, "mapping") as advance, TileStream(
            OrthoReader(info), grid, cfg.min_valid_fraction, keep, next_tile,
            cfg.queue_batches * cfg.batch_size, _cache_mb(config, info, tile), advance) as stream:
        if state:
            stream.cell_valid[:] = state["cell_valid"]
            stream.preview[:] = state["preview"]
            stream.preview_valid[:] = state["preview_valid"]
            advance(int(state["positions"]))
        for batch in stream.batches(cfg.batch_size):
            views = predict(np.stack([b.pixels for b in batch]))
            probs, spread = views.mean(axis=1), views.max(axis=1) - views.min(axis=1)
            for b, p, d in zip(batch, probs, spread, strict=True):
                sums[b.row:b.row + m, b.col:b.col + m] += float(p)
                spreads[b.row:b.row + m, b.col:b.col + m] += float(d)
                counts[b.row:b.row + m, b.col:b.col + m] += 1
            done += len(batch)
            advance(len(batch))
            batches += 1
            if batches % cfg.checkpoint_every == 0:
                last = batch[-1]
                nxt = (last.row, last.col + 1) if last.col + 1 < grid.tile_cols else (last.row + 1, 0)
                _save_state(work, sums, counts, spreads, stream, done, nxt, stamp,
                            positions=_positions_before(grid, nxt))
        cell_valid = stream.cell_valid.copy()
        preview = (stream.preview.copy(), stream.preview_valid.copy())
    seconds = time.perf_counter() - start
    files, summary = write_maps(config, inputs, info, grid, meta, sums, counts, cell_valid, aoi, preview,
                                spreads if cfg.tta else None,
                                {"bundle_sha256": bundle_sha, "source_sha256": source_sha.result(), "created": stamp,
                                 "model": str(bundle.path),
                                 "backend": backend, "seconds": seconds, "tiles_predicted": done},
                                _species(config, meta))
    (inputs.out / "config.yaml").write_text(dump_config(config))
    shutil.rmtree(work, ignore_errors=True)
    return PredictResult(inputs.out, files, grid.n_tiles, done, seconds, backend, summary)


def _cache_mb(config: SpurgemapConfig, info: OrthoInfo, tile: int) -> int:
    """tile.gdal_cache_mb, raised (up to a quarter of the RAM) so a wide raster's blocks decode once."""
    need = min(strip_cache_mb(info, tile), os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**22)
    if need > config.tile.gdal_cache_mb:
        log.info("GDAL block cache %d MB for %s (tile.gdal_cache_mb %d holds less than the block rows one strip "
                 "touches)", need, info.path.name, config.tile.gdal_cache_mb)
        return need
    return config.tile.gdal_cache_mb


def _positions_before(grid: Grid, nxt: tuple[int, int]) -> int:
    return nxt[0] * grid.tile_cols + nxt[1]


def _save_state(work: Path, sums: np.ndarray, counts: np.ndarray, spreads: np.ndarray, stream: TileStream,
                done: int, nxt: tuple[int, int], stamp: str, positions: int) -> None:
    tmp = work / "state.tmp.npz"
    np.savez(tmp, sums=sums, counts=counts, spreads=spreads, cell_valid=stream.cell_valid, preview=stream.preview,
             preview_valid=stream.preview_valid, done=done, next=np.array(nxt),
             stamp=np.array(stamp), positions=positions, version=np.array(__version__))
    os.replace(tmp, work / "state.npz")


def _load_state(work: Path) -> dict[str, Any] | None:
    path = work / "state.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
