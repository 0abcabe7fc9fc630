"""Sanity bounds a field crew would recognise, checked against the map itself (the config checks only
that a value is finite and in range): a walk that starts 8,000 km away is a typo, not a plan."""

from __future__ import annotations

import math

import numpy as np
from affine import Affine

from spurgemap.core.errors import InputError

MAX_START_KM = 50.0  # a walking route starts on or near the site; farther is a typo (LAT,LON swapped, a sign)


def start_distance_m(start: np.ndarray, transform: Affine, rows: np.ndarray, cols: np.ndarray,
                     units_per_m: float) -> float:
    """Ground distance (m) from `start` (map units) to the bounding box of the mapped cells; 0 inside."""
    x0, x1 = transform.c + cols.min() * transform.a, transform.c + (cols.max() + 1) * transform.a
    y1, y0 = transform.f + rows.min() * transform.e, transform.f + (rows.max() + 1) * transform.e
    sx, sy = float(start[0]), float(start[1])
    dx = max(x0 - sx, 0.0, sx - x1)
    dy = max(y0 - sy, 0.0, sy - y1)
    return math.hypot(dx, dy) / units_per_m


def check_start(start: np.ndarray, transform: Affine, rows: np.ndarray, cols: np.ndarray, units_per_m: float,
                given: object = None) -> None:
    """Refuse a --start farther than MAX_START_KM from the mapped site, naming the distance."""
    d = start_distance_m(start, transform, rows, cols, units_per_m) if np.isfinite(start).all() else math.inf
    if not d <= MAX_START_KM * 1000:
        far = f"{d / 1000:,.0f} km" if math.isfinite(d) else "outside the map's projection"
        shown = ",".join(f"{v:g}" for v in given) if isinstance(given, list | tuple) else "the start"
        raise InputError(f"--start {shown}: {far} from the mapped site (at most {MAX_START_KM:g} km); give "
                         "LON,LAT near the site, longitude first")
