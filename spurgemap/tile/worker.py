"""Pixels for one plot: read once, cut or resample its tiles, write them; runs in a thread."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine
from shapely import Polygon

from spurgemap.config import SpurgemapConfig
from spurgemap.geo.raster import OrthoReader
from spurgemap.geo.tiles import resample_into_frame, write_tile
from spurgemap.tile.grid import TileSpec
from spurgemap.tile.plan import PlotJob

MAX_PLOT_READ_PX = 16_000_000  # larger aligned plots are read tile by tile
_RESERVED = {"tile_id", "site_id", "plot_id", "label", "class_id", "label_source", "valid_fraction",
             "plot_fraction", "row", "col", "rotation_deg", "resampling", "path", "source",
             "source_sha256", "gsd_m", "geometry"}


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


def _rotated_patch(spec: TileSpec, reader: OrthoReader, size: int, resampling: str, crs_wkt: str):
    inv = ~reader.info.transform
    cols, rows = zip(*(inv @ xy for xy in spec.footprint.exterior.coords[:4]), strict=False)
    c0, r0 = math.floor(min(cols)) - 2, math.floor(min(rows)) - 2
    c1, r1 = math.ceil(max(cols)) + 2, math.ceil(max(rows)) + 2
    rgb, valid, clipped = reader.read(c0, r0, c1 - c0, r1 - r0)
    src_transform = reader.info.transform @ Affine.translation(c0, r0)
    out_rgb, out_valid = resample_into_frame(rgb, valid, src_transform, spec.transform, crs_wkt,
                                             size, resampling)
    return out_rgb, out_valid, clipped


def process_plot(job: PlotJob, reader: OrthoReader, config: SpurgemapConfig, out_dir: Path,
                 verify: dict[str, int]) -> list[TileOutcome]:
    """Outcomes in tile order; records get `source_sha256` from the caller (hashed meanwhile)."""
    t = config.tile
    size = t.tile_size_px
    crs_wkt = job.ortho.crs_wkt
    names = ["absent", "present"]
    site_dir = out_dir / "tiles" / job.site_dir
    site_dir.mkdir(parents=True, exist_ok=True)
    if site_dir.resolve().parent != (out_dir / "tiles").resolve():  # ids are sanitised; backstop
        raise RuntimeError(f"tile folder escapes the output folder: {site_dir}")
    if job.frame.tiles[0].aligned:
        patches = _aligned_patches(job, reader, size)
    else:
        patches = ((s, *_rotated_patch(s, reader, size, t.resampling, crs_wkt)) for s in job.frame.tiles)
    extras = {k: v for k, v in job.extras.items() if k not in _RESERVED}
    outcomes = []
    for (spec, rgb, valid, clipped), tile_id in zip(patches, job.tile_ids, strict=False):
        frac = float(valid.mean())
        if frac < t.min_valid_fraction:
            reason = "no_valid_pixels" if frac == 0 else "low_valid_fraction"
            outcomes.append(TileOutcome(tile_id, None, spec.footprint, crs_wkt, reason, clipped))
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
            "resampling": "none" if spec.aligned else t.resampling,
            "path": path.relative_to(out_dir).as_posix(), "source": str(job.ortho.path),
            "source_sha256": "", "gsd_m": round(job.ortho.gsd_m, 6), **extras,
        }
        outcomes.append(TileOutcome(tile_id, record, spec.footprint, crs_wkt, "", clipped))
    return outcomes
