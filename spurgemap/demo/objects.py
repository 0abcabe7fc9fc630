"""Per-site object lists: shrubs, spurge patches and their umbels, distractor flowers.

Objects are generated once per site and kept as flat arrays sorted by row, so each strip can pick
out the few it touches with a binary search instead of holding a full-size mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
B = NDArray[np.bool_]

# Plants per square metre in a patch, by patch kind (cryptic patches use a fixed small count).
DENSITY = {"sparse": (6.0, 15.0), "medium": (15.0, 40.0), "dense": (40.0, 110.0)}


@dataclass(frozen=True)
class Stamps:
    """Soft discs to composite, sorted by y (row) for fast strip selection."""

    x: F64
    y: F64
    r: F32
    alpha: F32
    rgb: F32  # (n, 3)
    truth: B

    @staticmethod
    def build(x: F64, y: F64, r: F32, alpha: F32, rgb: F32, truth: B) -> Stamps:
        order = np.lexsort((x, y))
        return Stamps(
            x[order].astype(np.float64),
            y[order].astype(np.float64),
            r[order].astype(np.float32),
            alpha[order].astype(np.float32),
            np.ascontiguousarray(rgb[order], dtype=np.float32),
            truth[order].astype(bool),
        )

    @staticmethod
    def concat(parts: list[Stamps]) -> Stamps:
        return Stamps.build(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.r for p in parts]),
            np.concatenate([p.alpha for p in parts]),
            np.concatenate([p.rgb for p in parts]),
            np.concatenate([p.truth for p in parts]),
        )


@dataclass(frozen=True)
class Shrubs:
    x: F64
    y: F64
    r: F64
    dx: F64  # shadow offset, px
    dy: F64
    amp: F64  # (n, 3) outline wobble harmonics
    phase: F64
    rgb: F64  # (n, 3)


@dataclass(frozen=True)
class Patch:
    cx: float
    cy: float
    radius: float  # px, semi-major axis
    aspect: float
    angle: float  # radians
    kind: str  # cryptic | sparse | medium | dense
    density: float  # plants per m^2 (unused for cryptic)


def make_shrubs(rng: np.random.Generator, size: int, gsd: float) -> Shrubs:
    area_m2 = (size * gsd) ** 2
    n = int(rng.poisson(area_m2 / 60.0))
    r = rng.uniform(0.35, 1.2, n) / gsd
    # Afternoon sun from the south-east: shadows fall north-west (up-left on a north-up image).
    phi = math.radians(225.0 + rng.uniform(-20.0, 20.0))
    length = r * rng.uniform(0.55, 0.85, n)
    sage = rng.random(n) < 0.4
    dark = np.stack([rng.uniform(44, 62, n), rng.uniform(66, 86, n), rng.uniform(34, 48, n)], 1)
    grey = np.stack([rng.uniform(98, 116, n), rng.uniform(108, 122, n), rng.uniform(86, 100, n)], 1)
    return Shrubs(
        x=rng.uniform(0, size, n),
        y=rng.uniform(0, size, n),
        r=r,
        dx=length * math.cos(phi),
        dy=length * math.sin(phi),
        amp=rng.uniform(0.0, 0.12, (n, 3)) / np.arange(1, 4)[None, :],
        phase=rng.uniform(0.0, 2 * math.pi, (n, 3)),
        rgb=np.where(sage[:, None], grey, dark),
    )


def plants_in_patch(rng: np.random.Generator, p: Patch, gsd: float) -> tuple[F64, F64]:
    """Stem positions: half scattered, half in clumps, which is how spurge spreads by roots."""
    a, b = p.radius, p.radius * p.aspect
    if p.kind == "cryptic":
        n = int(rng.integers(3, 9))
    else:
        n = max(3, int(rng.poisson(p.density * math.pi * a * b * gsd * gsd)))
    nclump = max(1, n // 12)
    rc = np.sqrt(rng.random(nclump))
    tc = rng.uniform(0, 2 * math.pi, nclump)
    clx, cly = a * rc * np.cos(tc), b * rc * np.sin(tc)
    n_clumped = n // 2
    which = rng.integers(0, nclump, n_clumped)
    sig = 0.18 * p.radius
    ux = clx[which] + rng.normal(0, sig, n_clumped)
    uy = cly[which] + rng.normal(0, sig, n_clumped)
    rr = np.sqrt(rng.random(n - n_clumped))
    tt = rng.uniform(0, 2 * math.pi, n - n_clumped)
    ux = np.concatenate([ux, a * rr * np.cos(tt)])
    uy = np.concatenate([uy, b * rr * np.sin(tt)])
    keep = (ux / a) ** 2 + (uy / b) ** 2 <= 1.0
    ux, uy = ux[keep], uy[keep]
    c, s = math.cos(p.angle), math.sin(p.angle)
    return p.cx + ux * c - uy * s, p.cy + ux * s + uy * c


def umbels(rng: np.random.Generator, x: F64, y: F64, pale: B) -> tuple[Stamps, Stamps]:
    """Bract discs (truth) and the darker foliage under them, for plants at (x, y).

    Each umbel is a main disc plus 0-3 satellite bracts: 3-8 px across at 1.4 cm/px.
    """
    n = x.size
    r0 = np.where(pale, rng.uniform(1.2, 2.2, n), rng.uniform(1.4, 3.0, n)).astype(np.float32)
    extra = np.where(pale, rng.integers(0, 2, n), rng.integers(0, 4, n))
    col = np.stack([rng.uniform(190, 220, n), rng.uniform(200, 225, n), rng.uniform(60, 110, n)], 1)
    col = np.where(pale[:, None], col + (np.array([218.0, 220.0, 165.0]) - col) * 0.45, col)
    owner = np.concatenate([np.arange(n), np.repeat(np.arange(n), extra)])
    m = owner.size - n
    dist = rng.uniform(1.5, 3.0, m)
    ang = rng.uniform(0, 2 * math.pi, m)
    bx = np.concatenate([x, x[owner[n:]] + dist * np.cos(ang)])
    by = np.concatenate([y, y[owner[n:]] + dist * np.sin(ang)])
    br = np.concatenate([r0, rng.uniform(0.9, 1.7, m).astype(np.float32)])
    bright = rng.uniform(0.9, 1.06, owner.size)[:, None]
    brgb = (col[owner] * bright).astype(np.float32)
    balpha = np.where(pale[owner], 0.9, 1.0).astype(np.float32)
    bracts = Stamps.build(bx, by, br, balpha, brgb, np.ones(owner.size, bool))
    lr = (r0 + rng.uniform(2.5, 4.5, n)).astype(np.float32)
    lrgb = np.stack([rng.uniform(60, 80, n), rng.uniform(86, 104, n), rng.uniform(50, 64, n)], 1)
    lalpha = np.where(pale, rng.uniform(0.15, 0.3, n), rng.uniform(0.3, 0.5, n)).astype(np.float32)
    leaves = Stamps.build(x, y, lr, lalpha, lrgb.astype(np.float32), np.zeros(n, bool))
    return bracts, leaves


def make_flowers(rng: np.random.Generator, size: int, gsd: float) -> Stamps:
    """Other forbs and seed heads: small bright dots a classifier must not call spurge."""
    n = int(rng.poisson((size * gsd) ** 2 * 0.8))
    palette = np.array(
        [
            [236, 236, 228],  # white yarrow / daisy
            [146, 104, 168],  # purple lupine
            [214, 168, 188],  # pink
            [232, 188, 44],  # deep yellow balsamroot
            [204, 190, 150],  # dry grass seed head
        ],
        np.float32,
    )
    kind = rng.choice(palette.shape[0], n, p=[0.3, 0.2, 0.1, 0.1, 0.3])
    rgb = palette[kind] * rng.uniform(0.9, 1.05, (n, 1)).astype(np.float32)
    return Stamps.build(
        rng.uniform(0, size, n),
        rng.uniform(0, size, n),
        rng.uniform(0.8, 2.0, n).astype(np.float32),
        np.full(n, 0.9, np.float32),
        rgb,
        np.zeros(n, bool),
    )


def plot_patches(rng: np.random.Generator, cx: F64, cy: F64, cell: float, kind: str) -> list[Patch]:
    """One patch per cell of a grid over a present plot, so spurge reaches most of its tiles."""
    out: list[Patch] = []
    for x, y in zip(cx, cy, strict=True):
        if kind != "cryptic" and rng.random() < 0.1:
            continue
        jx, jy = rng.uniform(-0.3, 0.3, 2) * cell
        lo, hi = (0.25, 0.45) if kind == "cryptic" else (0.35, 0.7)
        dlo, dhi = DENSITY.get(kind, (0.0, 0.0))
        out.append(
            Patch(
                float(x + jx),
                float(y + jy),
                float(rng.uniform(lo, hi) * cell),
                float(rng.uniform(0.6, 1.0)),
                float(rng.uniform(0, math.pi)),
                kind,
                float(math.exp(rng.uniform(math.log(dlo), math.log(dhi)))) if dhi else 0.0,
            )
        )
    return out


def background_patches(rng: np.random.Generator, size: int, gsd: float) -> list[Patch]:
    """Infestations outside the plots; the map predictor is scored on these too."""
    n = int(rng.poisson((size * gsd) ** 2 / 120.0)) + 2
    kinds = rng.choice(["cryptic", "sparse", "medium", "dense"], n, p=[0.2, 0.3, 0.3, 0.2])
    out: list[Patch] = []
    for k in kinds:
        dlo, dhi = DENSITY.get(str(k), (1.0, 1.0))
        out.append(
            Patch(
                float(rng.uniform(0, size)),
                float(rng.uniform(0, size)),
                float(math.exp(rng.uniform(math.log(0.4), math.log(3.0))) / gsd),
                float(rng.uniform(0.5, 1.0)),
                float(rng.uniform(0, math.pi)),
                str(k),
                float(math.exp(rng.uniform(math.log(dlo), math.log(dhi)))),
            )
        )
    return out
