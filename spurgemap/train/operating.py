"""From out-of-fold scores to what the map needs: context weight, calibration, operating point, metrics.

All of it is fitted on the validation folds' out-of-fold probabilities at the chosen epoch, on the
trusted labels (model/calibration.py), so nothing learned from a tile judges that same tile.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spurgemap.model import calibration as cal
from spurgemap.model.engine import Trainer, bag_max
from spurgemap.model.metrics import classification_metrics
from spurgemap.model.splits import Split
from spurgemap.tile.tileset import TileSet


def tile_neighbours(tiles: TileSet, idx: np.ndarray) -> list[np.ndarray]:
    """For each tile of `idx`, the positions (in idx) of its 8-neighbours: tiles of the same site
    whose footprint centre lies one tile step away in x, y or both."""
    if tiles.bounds is None:
        return [np.zeros(0, int) for _ in idx]
    b = tiles.bounds[idx]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    sites = tiles.sites[idx]
    out = []
    for i in range(len(idx)):
        dx, dy = np.abs(cx - cx[i]) / w[i], np.abs(cy - cy[i]) / h[i]
        near = (sites == sites[i]) & (dx < 1.5) & (dy < 1.5) & ((dx > 0.5) | (dy > 0.5))
        out.append(np.flatnonzero(near))
    return out


def fit_map_head(cfg: Any, tiles: TileSet, idx: np.ndarray, probs: np.ndarray, fold_of: np.ndarray
                 ) -> tuple[dict[str, Any], np.ndarray]:
    """Context weight, calibration and threshold from the out-of-fold `probs` of tiles `idx`.
    Returns the record (for the bundle and metrics.json) and the tiles' map probabilities."""
    z = cal.logit(probs)
    nbrs = tile_neighbours(tiles, idx)
    m = cal.neighbour_mean(z, nbrs)
    plots = tiles.plots[idx] if tiles.plots is not None else None
    verified = tiles.verified[idx] if tiles.verified is not None else None
    trusted = cal.trusted_labels(tiles.labels[idx], plots, verified, cfg.threshold_labels)
    # Tiles of one plot share the plot's copied label, so a neighbour in the same plot would make
    # the neighbour mean look more telling than it is: the weight is fitted on other plots' tiles.
    other = [n[plots[n] != plots[i]] for i, n in enumerate(nbrs)] if plots is not None else nbrs
    m_fit = cal.neighbour_mean(z, other)
    has = np.array([len(n) > 0 for n in other])
    lam, why = cal.fit_context(z, m_fit, has, trusted) if cfg.context else (0.0, "off (train.context false)")
    zc = (1 - lam) * z + lam * m
    calib = cal.fit_calibration(cfg.calibration, *trusted.scored(zc))
    p_map = calib(zc)
    threshold, achieved = cal.choose_operating_point(*trusted.scored(p_map), cfg.operating_point)
    record = {
        "threshold": threshold, "operating_point": cfg.operating_point, "operating_point_result": achieved,
        "threshold_labels": cfg.threshold_labels, "context": {"lambda": lam, "neighbours": 8, "why": why},
        "calibration": calib.to_dict(), "tile_threshold": tile_threshold(calib, threshold),
        "reliability": _cross_fitted_reliability(cfg.calibration, trusted, zc, fold_of),
        "trusted_items": {"negative_tiles": len(trusted.negatives), "positive_plots": len(trusted.positives)},
    }
    return record, p_map


def tile_threshold(calib: cal.Calibration, threshold: float) -> float:
    """The threshold in a single tile's raw probability (no neighbours: z' = z), for per-tile
    clients such as the Deepness export; calibrations are monotone, so one raw value matches."""
    grid = np.linspace(-30, 30, 60001)
    above = np.flatnonzero(calib(grid) >= threshold)
    z = grid[above[0]] if len(above) else grid[-1]
    return float(np.clip(cal.sigmoid(z), 1e-4, 1 - 1e-4))


def _cross_fitted_reliability(method: str, trusted: cal.Trusted, zc: np.ndarray, fold_of: np.ndarray
                              ) -> dict[str, Any]:
    """Reliability of the calibration on folds it was not fitted on (fit on the other folds)."""
    y, s = trusted.scored(zc)
    items = np.concatenate([trusted.negatives, trusted.top(zc)]) if trusted.positives else trusted.negatives
    folds = fold_of[items]
    p = np.zeros(len(y))
    for f in np.unique(folds):
        out = folds == f
        p[out] = cal.fit_calibration(method, y[~out], s[~out])(s[out]) if (~out).any() else cal.sigmoid(s[out])
    return cal.reliability(y, p)


def final_metrics(cfg: Any, tiles: TileSet, splits: list[Split], history: list[list[dict[str, Any]]],
                  oof: dict[str, list[float]], model: Any, trainer: Trainer, cross_val: bool,
                  bags: np.ndarray | None, best: int) -> dict[str, Any]:
    """Pooled out-of-fold metrics on the map's probabilities (per-fold ones may be undefined for a
    one-class fold); under plot-mil labels at the plot level, a plot scoring its likeliest tile."""
    val_idx = np.concatenate([s.val for s in splits])
    fold_of = np.concatenate([np.full(len(s.val), i) for i, s in enumerate(splits)])
    probs = np.concatenate([np.asarray(oof[f"{i}:{best}"]) for i in range(len(splits))])
    head, p_map = fit_map_head(cfg, tiles, val_idx, probs, fold_of)
    threshold = head["threshold"]
    y, p, first = (tiles.labels[val_idx], p_map, val_idx) if bags is None else \
        bag_max(bags, val_idx, tiles.labels, p_map)
    val = classification_metrics(y, p, threshold, tiles.groups[first])
    out: dict[str, Any] = {
        "balanced_accuracy": val["balanced_accuracy"], "validation": val, **head,
        "selection": "cross-validation by site" if cross_val else "validation sites",
        "labels": "plot-mil (metrics per plot)" if bags is not None else "tile",
        "best_epoch": best, "folds": [s.name for s in splits], "history": history,
        "present_plot_tiles_scored_absent": _scored_absent(tiles, val_idx, p_map, threshold),
        "_val_idx": val_idx, "_val_probs": p_map,
    }
    test = splits[0].test
    if len(test):
        trainer.model = model
        tp = map_probabilities(tiles, test, trainer.predict(test), head)
        ty, tp, tfirst = (tiles.labels[test], tp, test) if bags is None else bag_max(bags, test, tiles.labels, tp)
        out["test"] = classification_metrics(ty, tp, threshold, tiles.groups[tfirst])
    return out


def map_probabilities(tiles: TileSet, idx: np.ndarray, probs: np.ndarray, head: dict[str, Any]) -> np.ndarray:
    """Raw tile probabilities -> the map's (context among the tiles' own neighbours, calibration)."""
    z = cal.logit(probs)
    lam = head["context"]["lambda"]
    zc = (1 - lam) * z + lam * cal.neighbour_mean(z, tile_neighbours(tiles, idx))
    return cal.Calibration.from_dict(head["calibration"])(zc)


def _scored_absent(tiles: TileSet, idx: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Validation tiles of present plots (survey label, not verified) that the model scores absent:
    on real surveys many tiles of a present plot hold almost no weed."""
    m = tiles.labels[idx] == 1
    if tiles.verified is not None:
        m &= ~tiles.verified[idx]
    n, absent = int(m.sum()), int((probs[m] < threshold).sum())
    return {"tiles": absent, "of": n, "share": round(absent / n, 4) if n else None}
