"""Which tiles train fits on, decided once: the splits, the spatial neighbours left out, the few-shot draw.

Why one place: evaluate hands the same draw (as tile ids) to augment and train, and train's token
guard needs the tiles train will not use. Before, evaluate re-derived train's draw without the
neighbours `train.group_by: spatial` drops, and generated variants from tiles train never saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from spurgemap.core.errors import InputError
from spurgemap.model.splits import Split, few_shot, make_splits, near_groups, spatial_blocks, spatial_groups
from spurgemap.tile.tileset import TileSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainDraw:
    """The splits with their training draws, and the final fit's tiles (cross-validation only)."""

    splits: list[Split]
    final: np.ndarray | None  # training tiles of the final fit on all non-test sites; None with --val-sites
    dropped: list[str]  # training sites left out as neighbours of held-out sites (group_by: spatial)

    @property
    def model_tiles(self) -> np.ndarray:
        """The tiles the bundled model is fitted on."""
        return self.final if self.final is not None else self.splits[0].train

    def unused(self, tiles: TileSet) -> np.ndarray:
        """Tiles off limits to every phase: held out, or of a held-out site's neighbour."""
        held = np.concatenate([np.concatenate([s.val, s.test]) for s in self.splits])
        near = np.flatnonzero(np.isin(tiles.groups, self.dropped))
        return np.unique(np.concatenate([held, near]).astype(np.int64))


def plan_training(tiles: TileSet, cfg: Any, seed: int, tile_ids: list[str] | None = None) -> TrainDraw:
    """The splits of `cfg` (train's section), drawn with `train.shots`, or fitted on exactly `tile_ids`."""
    splits, dropped = _make_splits(tiles, cfg, seed)
    if tile_ids is not None:
        return TrainDraw([_given(tiles, cfg, splits, tile_ids)], None, dropped)
    if cfg.shots:
        splits = [Split(s.name, few_shot(s.train, tiles.labels, cfg.shots, seed), s.val, s.test) for s in splits]
    final = None
    if not cfg.val_sites:
        pool = np.flatnonzero(~np.isin(tiles.groups, cfg.test_sites + dropped))
        final = few_shot(pool, tiles.labels, cfg.shots, seed) if cfg.shots else pool
    return TrainDraw(splits, final, dropped)


def draw_tile_ids(tiles: TileSet, cfg: Any, seed: int) -> list[str]:
    """Ids of the tiles train fits its model on with these settings (evaluate's k-shot draw)."""
    return [tiles.tile_ids[i] for i in plan_training(tiles, cfg, seed).model_tiles]


def _given(tiles: TileSet, cfg: Any, splits: list[Split], tile_ids: list[str]) -> Split:
    if cfg.val_sites == [] or len(splits) != 1:
        raise InputError("explicit training tiles need train.val_sites (one split); set --val-sites")
    pos = {t: i for i, t in enumerate(tiles.tile_ids)}
    missing = [t for t in tile_ids if t not in pos]
    if missing:
        raise InputError(f"training tiles {missing[:5]} are not in the tile set")
    idx = np.asarray(sorted({pos[t] for t in tile_ids}), dtype=np.int64)
    outside = [tiles.tile_ids[i] for i in np.setdiff1d(idx, splits[0].train)]
    if outside:
        raise InputError(f"training tiles {outside[:5]} are held out or next to a held-out site; draw them "
                         "from the training sites (train.draw_tile_ids)")
    return Split(splits[0].name, idx, splits[0].val, splits[0].test)


def _make_splits(tiles: TileSet, cfg: Any, seed: int) -> tuple[list[Split], list[str]]:
    """Splits by group (or spatial cluster of groups); warns about held-out sites next to training
    sites and, under group_by=spatial, drops those neighbours from training. Returns the dropped."""
    held = cfg.val_sites + cfg.test_sites
    groups = tiles.groups
    if cfg.group_by == "spatial":
        if tiles.bounds is None:
            raise InputError("train.group_by=spatial needs tile footprints; load the tile set from its folder")
        if not held:
            groups = spatial_groups(groups, tiles.bounds, cfg.spatial_distance_m)
            log.info("spatial groups (%.0f m): %s", cfg.spatial_distance_m, ", ".join(sorted(set(groups))))
    elif cfg.group_by == "blocks" and not cfg.val_sites and tiles.bounds is not None:
        pool = ~np.isin(groups, cfg.test_sites)  # test sites stay themselves
        blocked = groups.astype(object)
        blocked[pool] = spatial_blocks(groups[pool], tiles.bounds[pool], seed=seed)
        groups = np.array(blocked.tolist())
        if len(set(groups.tolist())) < len(set(tiles.groups.tolist())):
            log.info("cross-validation over %d spatial blocks of sites", len(set(groups.tolist())))
    splits = make_splits(groups, tiles.labels, cfg.val_sites, cfg.test_sites, cfg.folds, seed)
    if cfg.folds and len(splits) < cfg.folds:
        log.warning("train.folds=%d: only %d folds can each hold absent and present tiles; using %d",
                    cfg.folds, len(splits), len(splits))
    near = []
    if held and tiles.bounds is not None:
        others = sorted(set(tiles.groups.tolist()) - set(held))
        near = near_groups(tiles.groups, tiles.bounds, held, others, cfg.spatial_distance_m)
    if not near:
        return splits, []
    pairs = ", ".join(f"{a} ~ {b} ({gap:.0f} m)" for a, b, gap in near[:10])
    if cfg.group_by != "spatial":
        log.warning("held-out sites lie within train.spatial_distance_m=%g m of training sites: %s; the same "
                    "plants may be in both and validation looks better than the truth (set "
                    "train.group_by=spatial to drop those training sites)", cfg.spatial_distance_m, pairs)
        return splits, []
    dropped = sorted({b for _, b, _ in near})
    log.warning("train.group_by=spatial: training sites %s lie within %g m of held-out sites (%s) and are "
                "left out of training", dropped, cfg.spatial_distance_m, pairs)
    out = []
    for sp in splits:
        train = sp.train[~np.isin(tiles.groups[sp.train], dropped)]
        if set(tiles.labels[train].tolist()) != {0, 1}:
            raise InputError(f"without the neighbours {dropped} of the held-out sites, training has one class "
                             "only; choose other --val-sites/--test-sites or lower train.spatial_distance_m")
        out.append(Split(sp.name, train, sp.val, sp.test))
    return out, dropped
