"""Which real tiles an augment run may learn from and edit: training tiles only.

The few-shot draw is `model.splits.few_shot`, the same function `train --shots` calls, so
augment and train always agree on the k tiles per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spurgemap.core.errors import InputError
from spurgemap.core.labels import LABELS
from spurgemap.model.splits import few_shot
from spurgemap.tile.tileset import TileSet

LABEL_NAMES = LABELS  # kept for existing imports


@dataclass
class Selection:
    """The real tiles an augment run may learn from and edit: training tiles only."""

    tiles: TileSet
    index: np.ndarray  # into tiles

    @property
    def ids(self) -> list[str]:
        return [self.tiles.tile_ids[i] for i in self.index]

    @property
    def labels(self) -> list[str]:
        return [LABEL_NAMES[int(self.tiles.labels[i])] for i in self.index]


def select_tiles(tiles: TileSet, sites: list[str], shots: int | None, seed: int,
                 tile_ids: list[str] | None = None) -> Selection:
    if tile_ids is not None:
        pos = {t: i for i, t in enumerate(tiles.tile_ids)}
        missing = [t for t in tile_ids if t not in pos]
        if missing:
            raise InputError(f"tiles {missing[:5]} are not in the tile set")
        return Selection(tiles, np.asarray(sorted(pos[t] for t in tile_ids), dtype=np.int64))
    unknown = sorted(set(sites) - set(tiles.sites.tolist()))
    if unknown:
        raise InputError(f"--sites: unknown sites {unknown}; the tile set has {sorted(set(tiles.sites))}")
    pool = np.flatnonzero(np.isin(tiles.sites, sites)) if sites else np.arange(len(tiles))
    if shots:
        pool = few_shot(pool, tiles.labels, shots, seed)
    if not len(pool):
        raise InputError("no tiles selected; check --sites")
    return Selection(tiles, pool)
