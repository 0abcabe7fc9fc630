"""Which cells to visit: the stratified random half, the uncertain half, and the spacing rule between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

UNCERTAIN, RANDOM = "uncertain", "random"


@dataclass
class Selection:
    rows: np.ndarray
    cols: np.ndarray
    reason: list[str]
    band: np.ndarray


class _Spacing:
    """Blocks every cell whose centre is closer than the spacing to an accepted visit."""

    def __init__(self, shape: tuple[int, int], dx: float, dy: float, spacing: float) -> None:
        self.blocked = np.zeros(shape, bool)
        self.kr, self.kc = math.ceil(spacing / dy), math.ceil(spacing / dx)
        rr, cc = np.mgrid[-self.kr:self.kr + 1, -self.kc:self.kc + 1]
        self.disk = np.hypot(rr * dy, cc * dx) < spacing * (1 - 1e-9)
        self.disk[self.kr, self.kc] = True

    def take(self, r: int, c: int) -> bool:
        if self.blocked[r, c]:
            return False
        h, w = self.blocked.shape
        r0, r1, c0, c1 = max(r - self.kr, 0), min(r + self.kr + 1, h), max(c - self.kc, 0), min(c + self.kc + 1, w)
        win = self.disk[r0 - r + self.kr:r1 - r + self.kr, c0 - c + self.kc:c1 - c + self.kc]
        self.blocked[r0:r1, c0:c1] |= win
        return True


def bands_of(pct: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.digitize(pct.astype(float), np.asarray(edges, float))


def select_visits(pct: np.ndarray, eligible: np.ndarray, threshold: float, n: int, spacing_cells: tuple[float, float,
                  float], edges: tuple[float, ...], seed: int) -> Selection:
    """Random stratified half first (so its design stays clean), then the uncertain half around it.

    ``spacing_cells`` is (cell width, cell height, spacing) in one unit.
    """
    rng = np.random.default_rng(seed)
    spacing = _Spacing(pct.shape, *spacing_cells)
    bands = bands_of(pct, edges)
    rows: list[int] = []
    cols: list[int] = []
    reason: list[str] = []
    n_random = n // 2
    queues = []
    for h in range(len(edges) + 1):
        cells = np.flatnonzero(eligible & (bands == h))
        queues.append(list(rng.permutation(cells)[::-1]))
    while sum(r == RANDOM for r in reason) < n_random and any(queues):
        for q in queues:  # round-robin: equal allocation, leftover quota moves to bands with cells left
            while q and sum(r == RANDOM for r in reason) < n_random:
                flat = int(q.pop())
                r, c = divmod(flat, pct.shape[1])
                if spacing.take(r, c):
                    rows.append(r)
                    cols.append(c)
                    reason.append(RANDOM)
                    break
    cand = np.flatnonzero(eligible)
    dist = np.abs(pct.ravel()[cand].astype(float) / 100 - threshold)
    tie = rng.random(len(cand))
    for flat in cand[np.lexsort((tie, dist))]:
        if len(reason) >= n:
            break
        r, c = divmod(int(flat), pct.shape[1])
        if spacing.take(r, c):
            rows.append(r)
            cols.append(c)
            reason.append(UNCERTAIN)
    rr, cc = np.asarray(rows, int), np.asarray(cols, int)
    return Selection(rr, cc, reason, bands[rr, cc])


def band_table(pct: np.ndarray, eligible: np.ndarray, sel: Selection, edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per band: eligible cells N_h, random visits n_h, inclusion probability and weight."""
    bands = bands_of(pct, edges)
    lows = (0.0, *edges)
    highs = (*edges, 100.0)
    out = []
    for h in range(len(edges) + 1):
        big_n = int((eligible & (bands == h)).sum())
        small_n = int(sum(1 for b, r in zip(sel.band, sel.reason, strict=True) if b == h and r == RANDOM))
        out.append({"band": h, "prob_from_pct": lows[h], "prob_to_pct": highs[h], "eligible_cells": big_n,
                    "random_visits": small_n, "inclusion_probability": small_n / big_n if big_n else 0.0,
                    "weight": big_n / small_n if small_n else None})
    return out
