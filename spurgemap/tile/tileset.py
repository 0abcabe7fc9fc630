"""The tile-set format in memory: `TileSet` (ids, sites, labels, pixels) loaded once from TILES_DIR.

Stages after `tile` take a `TileSet` as well as a folder, so a grid of runs reads the tiles once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spurgemap.core.errors import InputError
from spurgemap.core.labels import LABEL_IDS as LABELS  # label words; earlier sets' class names too
from spurgemap.geo.tiles import read_tile
from spurgemap.geo.vector import bounds_in_metres, read_tile_index


@dataclass
class TileSet:
    tile_ids: list[str]
    sites: np.ndarray  # site id per tile
    groups: np.ndarray  # split groups per tile (site ids, or a cluster column)
    labels: np.ndarray  # 0 absent, 1 present
    images: np.ndarray  # (N, H, W, 3) uint8
    tile_px: int
    gsd_m: float
    digest: str  # hash of ids, labels and pixels: ties a bundle to the data it was trained on
    root: Path | None = None  # the folder it was loaded from (None when built in memory)
    bounds: np.ndarray | None = None  # (N, 4) footprint minx, miny, maxx, maxy in metres (no CRS)
    plots: np.ndarray | None = None  # "site/plot" per tile: the bags of multiple-instance labels
    verified: np.ndarray | None = None  # True where the label comes from a per-tile verify CSV
    source_gsd_m: float | None = None  # imagery's own GSD when tiles were resampled (`tile --gsd`)
    pixels_digest: str = ""  # hash of ids and pixels only: backbone features do not depend on labels

    def __len__(self) -> int:
        return len(self.tile_ids)


def load_tile_set(tiles_dir: Path, group_column: str = "site_id") -> TileSet:
    tiles_dir = Path(tiles_dir)
    index = read_tile_index(tiles_dir / "tiles.gpkg")
    if index.empty:
        raise InputError(f"{tiles_dir}: the tile set is empty; run `spurgemap tile` on plots with valid pixels")
    if group_column not in index.columns:
        raise InputError(f"{tiles_dir}: tile index has no column {group_column!r} for grouping sites")
    index = index.sort_values("tile_id").reset_index(drop=True)
    images = []
    pixels = hashlib.sha256()
    for tid, rel in zip(index.tile_id, index.path, strict=True):
        path = (tiles_dir / rel).resolve()
        if tiles_dir.resolve() not in path.parents or not path.exists():
            raise InputError(f"{tiles_dir}: tile file {rel!r} of {tid} is missing or outside the tile set")
        img = read_tile(path)
        pixels.update(f"{tid}:".encode())
        pixels.update(img.tobytes())
        images.append(img)
    digest = hashlib.sha256(pixels.digest() + "|".join(map(str, index.label)).encode())
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"{tiles_dir}: tiles have different sizes {sorted(shapes)}; re-tile with one tile size")
    labels = index.label.map(LABELS)
    if labels.isna().any():
        raise InputError(f"{tiles_dir}: unknown labels {sorted(set(index.label[labels.isna()]))} in tiles.gpkg")
    return TileSet(
        tile_ids=list(index.tile_id), sites=index.site_id.astype(str).to_numpy(),
        groups=index[group_column].astype(str).to_numpy(), labels=labels.to_numpy(np.int64),
        images=np.stack(images), tile_px=images[0].shape[0], gsd_m=float(np.median(index.gsd_m)),
        digest=digest.hexdigest()[:16], pixels_digest=pixels.hexdigest()[:16], root=tiles_dir,
        bounds=bounds_in_metres(index),
        plots=(index.site_id.astype(str) + "/" + index.plot_id.astype(str)).to_numpy()
        if "plot_id" in index else None,
        verified=(index["label_source"] == "verify").to_numpy() if "label_source" in index else None,
        source_gsd_m=float(np.nanmedian(index.source_gsd_m)) if "source_gsd_m" in index else None,
    )
