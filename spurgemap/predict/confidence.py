"""Per-cell confidence a user can threshold, shared by `predict` (writes it) and the field work commands.

conf = |p - t| / t for p < t and |p - t| / (1 - t) for p >= t, x 100, rounded: 0 at the model's
threshold t, 100 at p = 0 or p = 1. It is computed from the *written* percent probability, so a
`_confidence.tif` and a value recomputed from `_prob.tif` always agree.
"""

from __future__ import annotations

import numpy as np

from spurgemap.predict.mapset import NODATA


def confidence(pct: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 0..100 from uint8 percent probabilities (NODATA stays NODATA)."""
    p = pct.astype(float) / 100
    side = np.where(p < threshold, threshold, 1 - threshold)
    conf = np.rint(np.abs(p - threshold) / np.maximum(side, 1e-9) * 100).clip(0, 100)
    return np.where(pct == NODATA, NODATA, conf).astype(np.uint8)


def tta_spread(spread_sums: np.ndarray, counts: np.ndarray, has: np.ndarray) -> np.ndarray:
    """uint8 0..100: the range (max - min) of the 8 D4 views' probabilities, in percentage points,
    averaged over the tiles covering the cell (NODATA where the cell is not mapped)."""
    mean = np.rint(spread_sums / np.maximum(counts, 1) * 100).clip(0, 100)
    return np.where(has, mean, NODATA).astype(np.uint8)
