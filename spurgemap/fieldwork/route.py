"""A walking order for the visits: nearest neighbour, then 2-opt (an open path from a fixed start).

Why not an exact solver: a crew walks tens to a few hundred points; nearest neighbour + 2-opt is
within a few percent of optimal there and needs nothing beyond numpy.
"""

from __future__ import annotations

import numpy as np


def _path(xy: np.ndarray, start: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(start, float).reshape(1, 2), np.asarray(xy, float).reshape(-1, 2)])


def route_length(xy: np.ndarray, order: np.ndarray, start: np.ndarray) -> float:
    """Length from ``start`` through ``xy[order]`` (units of ``xy``)."""
    pts = _path(np.asarray(xy, float)[np.asarray(order, int)], start)
    return float(np.hypot(*np.diff(pts, axis=0).T).sum())


def nearest_neighbour_order(xy: np.ndarray, start: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, float).reshape(-1, 2)
    left = np.ones(len(xy), bool)
    here = np.asarray(start, float)
    order = []
    for _ in range(len(xy)):
        d = np.hypot(*(xy - here).T)
        d[~left] = np.inf
        nxt = int(np.argmin(d))
        order.append(nxt)
        left[nxt] = False
        here = xy[nxt]
    return np.asarray(order, int)


def two_opt(xy: np.ndarray, order: np.ndarray, start: np.ndarray, max_passes: int = 200) -> np.ndarray:
    """Reverse segments while that shortens the open path; the start stays first, the end is free."""
    nodes = _path(np.asarray(xy, float).reshape(-1, 2), start)
    path = np.concatenate([[0], np.asarray(order, int) + 1])
    n = len(path)
    if n < 3:
        return np.asarray(order, int)
    for _ in range(max_passes):
        improved = False
        for i in range(1, n - 1):
            pts = nodes[path]
            a, b = pts[i - 1], pts[i]
            js = np.arange(i + 1, n)
            c = pts[js]
            nxt_ok = js + 1 < n
            d = pts[np.minimum(js + 1, n - 1)]
            old = np.hypot(*(b - a)) + np.where(nxt_ok, np.hypot(*(d - c).T), 0.0)
            new = np.hypot(*(c - a).T) + np.where(nxt_ok, np.hypot(*(d - b).T), 0.0)
            gain = old - new
            k = int(np.argmax(gain))
            if gain[k] > 1e-9:
                j = int(js[k])
                path[i:j + 1] = path[i:j + 1][::-1]
                improved = True
        if not improved:
            break
    return path[1:] - 1


def walking_order(xy: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(order, 2-opt length, nearest-neighbour length); 2-opt never lengthens the route."""
    nn = nearest_neighbour_order(xy, start)
    best = two_opt(xy, nn, start)
    return best, route_length(xy, best, start), route_length(xy, nn, start)
