"""Pixels for one plot: read once, cut or resample its tiles, write them; runs in a thread."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine
from shapely import Polygon

from spurgemap.config import SpurgemapConfig
from spurgemap.core.labels import LABELS
from spurgemap.geo.raster import OrthoReader
from spurgemap.geo.tiles import resample_into_frame, write_tile
from spurgemap.tile.plan import PlotJob

MAX_PLOT_READ_PX = 16_000_000  # larger aligned plots are read tile by tile
ROTATED_BLOCK = 8  # rotated plots are warped in blocks of up to 8 x 8 tiles (~2000 px square)
_RESERVED = {"tile_id", "site_id", "plot_id", "label", "class_id", "label_source", "valid_fraction",
             "plot_fraction", "row", "col", "rotation_deg", "resampling", "path", "source",
             "source_sha256", "gsd_m", "source_gsd_m", "geometry"}


@dataclass
class TileOutcome:
    tile_id: str
    record: dict[str, Any] | None  # None when skipped
    footprint: Polygon
    crs_wkt: str
    skip_reason: str = ""
    clipped: int = 0


def _aligned_patches(job: PlotJob, reader: OrthoReader, size: int):
    specs = job.frame.tiles
    c0 = min(s.col_off for s in specs)
    r0 = min(s.row_off for s in specs)
    w = max(s.col_off for s in specs) + size - c0
    h = max(s.row_off for s in specs) + size - r0
    if w * h <= MAX_PLOT_READ_PX:
        rgb, valid, clipped = reader.read(c0, r0, w, h)
        for s in specs:
            rs, cs = s.row_off - r0, s.col_off - c0
            yield s, rgb[:, rs:rs + size, cs:cs + size], valid[rs:rs + size, cs:cs + size], clipped
            clipped = 0
    else:
        for s in specs:
            yield s, *reader.read(s.col_off, s.row_off, size, size)


def _rotated_patches(job: PlotJob, reader: OrthoReader, size: int, resampling: str, crs_wkt: str,
                     block: int = ROTATED_BLOCK):
    """Rotated tiles, warped in blocks of up to ROTATED_BLOCK x ROTATED_BLOCK tiles.

    A plot's tiles share one frame, so one read and one warp per block replace one per tile:
    neighbouring tiles' source windows overlap, and each GDAL warp call costs ~2 ms to set up.
    Each output pixel depends only on its own map position, so the pixels are those of a
    per-tile warp.
    """
    specs = {(s.row, s.col): s for s in job.frame.tiles}
    nrows = 1 + max(r for r, _ in specs)
    ncols = 1 + max(c for _, c in specs)
    inv = ~reader.info.transform
    for br in range(0, nrows, block):
        for bc in range(0, ncols, block):
            nr, nc = min(block, nrows - br), min(block, ncols - bc)
            origin = specs[(br, bc)].transform
            h, w = nr * size, nc * size
            cols, rows = zip(*(inv @ (origin @ xy) for xy in ((0, 0), (w, 0), (0, h), (w, h))), strict=True)
            c0, r0 = math.floor(min(cols)) - 2, math.floor(min(rows)) - 2
            c1, r1 = math.ceil(max(cols)) + 2, math.ceil(max(rows)) + 2
            rgb, valid, clipped = reader.read(c0, r0, c1 - c0, r1 - r0)
            src_transform = reader.info.transform @ Affine.translation(c0, r0)
            out_rgb, out_valid = resample_into_frame(rgb, valid, src_transform, origin, crs_wkt, (h, w),
                                                     resampling, same_scale=job.scale == 1.0)
            for r in range(nr):
                for c in range(nc):
                    ys, xs = slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size)
                    yield specs[(br + r, bc + c)], out_rgb[:, ys, xs], out_valid[ys, xs], clipped
                    clipped = 0


def process_plot(job: PlotJob, reader: OrthoReader, config: SpurgemapConfig, out_dir: Path,
                 verify: dict[str, int]) -> list[TileOutcome]:
    """Outcomes in tile order; records get `source_sha256` from the caller (hashed meanwhile)."""
    t = config.tile
    size = t.tile_size_px
    crs_wkt = job.ortho.crs_wkt
    names = LABELS
    site_dir = out_dir / "tiles" / job.site_dir
    site_dir.mkdir(parents=True, exist_ok=True)
    if site_dir.resolve().parent != (out_dir / "tiles").resolve():  # ids are sanitised; backstop
        raise RuntimeError(f"tile folder escapes the output folder: {site_dir}")
    resampling: str = t.resampling
    if job.scale != 1.0:  # tile.gsd_m: every tile is resampled; shrinking averages the pixels under it
        resampling = "average" if job.scale > 1 else t.resampling
        block = max(1, int(ROTATED_BLOCK / max(job.scale, 1.0)))  # bounds the source pixels read at once
        patches = _rotated_patches(job, reader, size, resampling, crs_wkt, block)
    elif job.frame.tiles[0].aligned:
        patches = _aligned_patches(job, reader, size)
    else:
        patches = _rotated_patches(job, reader, size, resampling, crs_wkt)
    extras = {k: v for k, v in job.extras.items() if k not in _RESERVED}
    index = {(s.row, s.col): i for i, s in enumerate(job.frame.tiles)}  # blocks of wide plots come out of order
    outcomes: dict[int, TileOutcome] = {}
    for spec, rgb, valid, clipped in patches:
        i = index[(spec.row, spec.col)]
        tile_id = job.tile_ids[i]
        frac = float(valid.mean())
        if frac < t.min_valid_fraction:
            reason = "no_valid_pixels" if frac == 0 else "low_valid_fraction"
            outcomes[i] = TileOutcome(tile_id, None, spec.footprint, crs_wkt, reason, clipped)
            continue
        path = site_dir / f"{tile_id}.tif"
        # backstop for sanitised ids; lexical (resolving every tile path cost ~0.2 ms a tile)
        if path.name != f"{tile_id}.tif" or path.parent != site_dir or tile_id in (".", ".."):
            raise RuntimeError(f"tile path escapes the output folder: {path}")
        write_tile(path, rgb, valid, spec.transform, crs_wkt, t.compress, t.compress_level)
        class_id = verify.get(tile_id, job.class_id)
        record = {
            "tile_id": tile_id, "site_id": job.site_id, "plot_id": job.plot_id,
            "label": names[class_id], "class_id": class_id,
            "label_source": "verify" if tile_id in verify else "survey",
            "valid_fraction": round(frac, 4), "plot_fraction": spec.plot_fraction,
            "row": spec.row, "col": spec.col, "rotation_deg": job.frame.rotation_deg,
            "resampling": "none" if spec.aligned and job.scale == 1.0 else resampling,
            "path": path.relative_to(out_dir).as_posix(), "source": str(job.ortho.path),
            "source_sha256": "", "gsd_m": round(job.ortho.gsd_m * job.scale, 6),
            **({"source_gsd_m": round(job.ortho.gsd_m, 6)} if job.scale != 1.0 else {}), **extras,
        }
        outcomes[i] = TileOutcome(tile_id, record, spec.footprint, crs_wkt, "", clipped)
    return [outcomes[i] for i in sorted(outcomes)]
