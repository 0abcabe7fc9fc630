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


def uncertainty(pct: np.ndarray, threshold: float) -> np.ndarray:
    """1 at the threshold, 0 at p = 0 or 1: the binary margin (1 - |2p - 1| at t = 0.5), i.e. one minus
    the map's confidence, on each side scaled to the room left between the threshold and 0 or 1."""
    p = pct.astype(float) / 100
    side = np.where(p < threshold, threshold, 1 - threshold)
    return 1 - np.abs(p - threshold) / np.maximum(side, 1e-9)


def select_visits(pct: np.ndarray, eligible: np.ndarray, threshold: float, n: int, spacing_cells: tuple[float, float,
                  float], edges: tuple[float, ...], seed: int, min_uncertainty: float = 0.0) -> Selection:
    """Random and uncertain visits taken in turn, so that when the spacing binds both get their share.

    Random visits: a round-robin over the probability bands (equal allocation, leftover quota moves to
    bands with cells left). Uncertain visits: only cells with ``uncertainty >= min_uncertainty`` (as
    sits' ``min_uncert``: fewer visits rather than confident cells called uncertain), the most
    uncertain first, alternately below and above the threshold. ``spacing_cells`` is (cell width,
    cell height, spacing) in one unit.
    """
    rng = np.random.default_rng(seed)
    spacing = _Spacing(pct.shape, *spacing_cells)
    bands = bands_of(pct, edges)
    width = pct.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    reason: list[str] = []
    quota = {RANDOM: n // 2, UNCERTAIN: n - n // 2}
    random_queues = [list(rng.permutation(np.flatnonzero(eligible & (bands == h)))[::-1])
                     for h in range(len(edges) + 1)]
    unc = uncertainty(pct, threshold).ravel()
    below = pct.ravel().astype(float) / 100 < threshold
    tie = rng.random(unc.size)
    cand = np.flatnonzero(eligible.ravel() & (unc >= min_uncertainty - 1e-9))
    side_queues = []
    for side in (below[cand], ~below[cand]):  # most uncertain last, so pop() takes it
        cells = cand[side]
        side_queues.append(list(cells[np.lexsort((tie[cells], unc[cells]))]))
    queues = {RANDOM: random_queues, UNCERTAIN: side_queues}
    turn = {RANDOM: 0, UNCERTAIN: 0}

    def take(kind: str) -> bool:
        """One visit of this kind: the next queue in turn that still has a cell the spacing allows."""
        qs = queues[kind]
        for k in range(len(qs)):
            q = qs[(turn[kind] + k) % len(qs)]
            while q:
                r, c = divmod(int(q.pop()), width)
                if spacing.take(r, c):
                    turn[kind] = (turn[kind] + k + 1) % len(qs)
                    rows.append(r)
                    cols.append(c)
                    reason.append(kind)
                    return True
        return False

    active = [kind for kind in (RANDOM, UNCERTAIN) if quota[kind] > 0]
    while active:
        for kind in list(active):
            if not take(kind) or sum(r == kind for r in reason) >= quota[kind]:
                active.remove(kind)
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
