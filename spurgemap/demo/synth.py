"""Procedural drone-orthomosaic scene: grassland, soil, shrubs and leafy-spurge umbels.

Pure numpy/scipy so the geo layer can stay the only place that touches raster libraries.
Everything a pixel depends on is a function of its global coordinates (hashed lattice noise,
per-site object lists), so any window renders identically whether drawn alone or inside a
larger one: that is what lets huge sites be written strip by strip in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

from spurgemap.demo.layout import Plot
from spurgemap.demo.objects import Shrubs, Stamps

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

_M1 = np.uint32(0x9E3779B1)
_M2 = np.uint32(0x85EBCA77)
_M3 = np.uint32(0x2C1B3C6D)
_M4 = np.uint32(0x297A2D39)
_INV32 = np.float32(1.0 / 4294967296.0)
CHUNK_COLS = 4096


def _hash01(ix: NDArray[np.int64], iy: NDArray[np.int64], salt: int) -> F32:
    """Stateless integer hash -> [0, 1): the same lattice point always gets the same value."""
    x = (ix & 0xFFFFFFFF).astype(np.uint32)
    y = (iy & 0xFFFFFFFF).astype(np.uint32)
    h = (x * _M1) ^ (y * _M2) ^ np.uint32(salt & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= _M3
    h ^= h >> np.uint32(12)
    h *= _M4
    h ^= h >> np.uint32(15)
    return h.astype(np.float32) * _INV32


def _axis(start: int, stop: int, period: float, offset: float) -> tuple[NDArray[np.int64], F32]:
    t = (np.arange(start, stop, dtype=np.float64) + 0.5) / period + offset
    i0 = np.floor(t).astype(np.int64)
    f = (t - i0).astype(np.float32)
    return i0, f * f * (np.float32(3.0) - np.float32(2.0) * f)


def _lattice_x(
    rows: tuple[int, int], cols: tuple[int, int], period_xy: tuple[float, float], salt: int
) -> tuple[F32, NDArray[np.int64], F32]:
    """Noise lattice rows interpolated along x, plus each output row's lattice row and weight."""
    px, py = period_xy
    off = (salt % 997) / 97.0
    ix, sx = _axis(cols[0], cols[1], px, off)
    iy, sy = _axis(rows[0], rows[1], py, off * 1.37)
    lx = np.arange(ix.min(), ix.max() + 2, dtype=np.int64)
    ly = np.arange(iy.min(), iy.max() + 2, dtype=np.int64)
    lat = _hash01(lx[None, :], ly[:, None], salt)
    jx = ix - lx[0]
    along_x: F32 = lat[:, jx] * (1 - sx) + lat[:, jx + 1] * sx
    return along_x, iy - ly[0], sy


def value_noise(
    rows: tuple[int, int], cols: tuple[int, int], period_xy: tuple[float, float], salt: int
) -> F32:
    """Smooth lattice noise in [0, 1) for a window; separable so it costs ~3 ops per pixel."""
    along_x, jy, sy = _lattice_x(rows, cols, period_xy, salt)
    out: F32 = along_x[jy] * (1 - sy)[:, None] + along_x[jy + 1] * sy[:, None]
    return out


def grain(rows: tuple[int, int], cols: tuple[int, int], salt: int) -> F32:
    """Per-pixel white noise in [0, 1), a pure function of pixel coordinates."""
    ix = np.arange(cols[0], cols[1], dtype=np.int64)[None, :]
    iy = np.arange(rows[0], rows[1], dtype=np.int64)[:, None]
    return _hash01(ix, iy, salt)


def fbm(
    rows: tuple[int, int], cols: tuple[int, int], octaves: list[tuple[float, float]], salt: int
) -> F32:
    """Weighted sum of coarse value-noise octaves (period px, weight), about [0, 1].

    The y interpolation of all octaves is one small matrix product, so coarse octaves cost
    almost nothing per pixel; the result is identical for any window containing a pixel.
    """
    total = sum(w for _, w in octaves)
    h = rows[1] - rows[0]
    stack: list[F32] = []
    weights: list[F32] = []
    for k, (period, weight) in enumerate(octaves):
        along_x, jy, sy = _lattice_x(rows, cols, (period, period), salt * 31 + k * 7919 + 1)
        wy = np.zeros((h, along_x.shape[0]), np.float32)
        scale = np.float32(weight / total)
        wy[np.arange(h), jy] = (1 - sy) * scale
        wy[np.arange(h), jy + 1] = sy * scale
        stack.append(along_x)
        weights.append(wy)
    out: F32 = np.dot(np.hstack(weights), np.vstack(stack))
    return out


@dataclass(frozen=True)
class Collar:
    """Wobbly nodata border like a stitched ODM orthomosaic; margins are depths in px."""

    top: F32  # per column
    bottom: F32  # per column
    left: F32  # per row
    right: F32  # per row
    corners: tuple[float, float, float, float]  # diagonal cut legs: TL, TR, BL, BR (0 = none)
    size: int
    depth: float  # max margin depth of any edge

    def valid(self, rows: tuple[int, int], cols: tuple[int, int]) -> NDArray[np.bool_]:
        r = np.arange(rows[0], rows[1], dtype=np.float32)[:, None]
        c = np.arange(cols[0], cols[1], dtype=np.float32)[None, :]
        s = np.float32(self.size - 1)
        ok = (r >= self.top[None, cols[0] : cols[1]]) & (
            s - r >= self.bottom[None, cols[0] : cols[1]]
        )
        ok &= (c >= self.left[rows[0] : rows[1], None]) & (
            s - c >= self.right[rows[0] : rows[1], None]
        )
        tl, tr, bl, br = self.corners
        if tl > 0:
            ok &= r + c >= tl
        if tr > 0:
            ok &= r + (s - c) >= tr
        if bl > 0:
            ok &= (s - r) + c >= bl
        if br > 0:
            ok &= (s - r) + (s - c) >= br
        return ok


def _margin(rng: np.random.Generator, size: int, depth: float) -> F32:
    """One edge's collar depth: slow swell + ragged image-footprint steps + pixel jag."""
    t = np.arange(size, dtype=np.float64)
    knots = rng.random(6)
    slow = np.interp(t, np.linspace(0, size - 1, knots.size), knots)
    slow = gaussian_filter1d(slow, size / 12.0)
    slow = (slow - slow.min()) / max(float(np.ptp(slow)), 1e-9)
    steps = np.zeros(size)
    pos = 0
    while pos < size:
        run = int(rng.integers(max(8, size // 60), max(16, size // 10)))
        steps[pos : pos + run] = rng.random()
        pos += run
    steps = gaussian_filter1d(steps, 2.0)
    jag = rng.random(size)
    m = depth * (0.1 + 0.5 * slow + 0.3 * steps + 0.1 * jag)
    out: F32 = np.minimum(m, depth).astype(np.float32)
    return out


def make_collar(rng: np.random.Generator, size: int) -> Collar:
    depth = 0.035 * size
    corners = tuple(
        float(rng.uniform(1.2, 2.0) * depth) if rng.random() < 0.6 else 0.0 for _ in range(4)
    )
    return Collar(
        top=_margin(rng, size, depth),
        bottom=_margin(rng, size, depth),
        left=_margin(rng, size, depth),
        right=_margin(rng, size, depth),
        corners=(corners[0], corners[1], corners[2], corners[3]),
        size=size,
        depth=depth,
    )


@dataclass(frozen=True)
class Scene:
    """Everything needed to render any window of one site."""

    size: int
    gsd_m: float
    salt: int
    collar: Collar
    plots: list[Plot]
    shrubs: Shrubs
    leaves: Stamps
    flowers: Stamps
    bracts: Stamps


_GREEN = np.array([78, 104, 46], np.float32)
_OLIVE = np.array([118, 122, 66], np.float32)
_TAN = np.array([168, 152, 108], np.float32)
_SOIL = np.array([150, 124, 96], np.float32)
_T = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :]
_LUT_MID = _GREEN[:, None] + (_OLIVE - _GREEN)[:, None] * np.clip(_T * 2, 0, 1)
_LUT = _LUT_MID + (_TAN[:, None] - _LUT_MID) * np.clip(_T * 2 - 1, 0, 1)


def _ground(scene: Scene, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[F32, F32]:
    """Grass/soil base colour (3, h, w) and a fine texture field reused by shrubs."""
    m = 1.0 / scene.gsd_m
    s = scene.salt
    dry = fbm(rows, cols, [(12 * m, 0.5), (4 * m, 0.3), (1.4 * m, 0.2)], s + 11)
    soil = fbm(rows, cols, [(6 * m, 0.45), (2 * m, 0.35), (0.5 * m, 0.2)], s + 23)
    clump = fbm(rows, cols, [(0.3 * m, 1.0)], s + 37)
    fine = value_noise(rows, cols, (max(0.06 * m, 2.0), max(0.06 * m, 2.0)), s + 41)
    b1 = value_noise(rows, cols, (max(0.025 * m, 1.5), max(0.11 * m, 4.0)), s + 53)
    b2 = value_noise(rows, cols, (max(0.11 * m, 4.0), max(0.03 * m, 2.0)), s + 59)
    g = grain(rows, cols, s + 67)

    blade = np.maximum(b1, b2, out=b1)
    tmp = np.empty_like(blade)
    # Dryness: large-scale green/tan mosaic, roughened by clumps so it never looks like a gradient.
    d = np.multiply(dry, 2.6 * 255, out=dry)
    d += np.multiply(clump, 0.7 * 255, out=tmp)
    d += np.multiply(g, 0.25 * 255, out=tmp)
    d -= 1.275 * 255
    level = np.clip(d, 0, 255, out=d).astype(np.uint8)
    # Brightness: blades, finer mottling and per-pixel grain (gaps between blades read dark).
    shade = np.multiply(blade, 0.42, out=blade)
    shade += np.multiply(fine, 0.22, out=tmp)
    shade += np.multiply(g, 0.18, out=tmp)
    shade += np.multiply(clump, 0.12, out=tmp)
    shade += 0.46
    # Bare soil: thresholded noise with a soft rim and a little grass left on it.
    bare = np.subtract(soil, 0.62, out=soil)
    bare *= 9.0
    np.clip(bare, 0.0, 1.0, out=bare)
    bare *= 1.0 - 0.25 * (shade - 0.46) / 0.42
    np.clip(bare, 0.0, 1.0, out=bare)
    soil_shade = 0.8 + 0.25 * fine + 0.2 * g
    soil_shade *= bare
    shade *= 1.0 - bare
    rgb = np.empty((3, *d.shape), np.float32)
    for k in range(3):
        np.take(_LUT[k], level, out=rgb[k])
        rgb[k] *= shade
        rgb[k] += np.multiply(soil_shade, _SOIL[k], out=tmp)
    return rgb, 0.6 * fine + 0.4 * g


def _draw_shrubs(
    scene: Scene, rgb: F32, fine: F32, rows: tuple[int, int], cols: tuple[int, int]
) -> None:
    sh = scene.shrubs
    if sh.x.size == 0:
        return
    h, w = rgb.shape[1:]
    reach = sh.r * 1.4
    shadow = np.zeros((h, w), np.float32)
    bodies: list[int] = []
    for pass_shadow in (True, False):
        cx = sh.x + (sh.dx if pass_shadow else 0.0)
        cy = sh.y + (sh.dy if pass_shadow else 0.0)
        hit = (
            (cx + reach >= cols[0])
            & (cx - reach < cols[1])
            & (cy + reach >= rows[0])
            & (cy - reach < rows[1])
        )
        for i in np.flatnonzero(hit):
            r0 = max(rows[0], int(cy[i] - reach[i]))
            r1 = min(rows[1], int(cy[i] + reach[i]) + 1)
            c0 = max(cols[0], int(cx[i] - reach[i]))
            c1 = min(cols[1], int(cx[i] + reach[i]) + 1)
            if r0 >= r1 or c0 >= c1:
                continue
            yy = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - cy[i]
            xx = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - cx[i]
            dist = np.hypot(xx, yy)
            theta = np.arctan2(yy, xx)
            wob = 1.0 + sum(
                sh.amp[i, k] * np.cos((k + 2) * theta + sh.phase[i, k])
                for k in range(sh.amp.shape[1])
            )
            edge = sh.r[i] * wob
            win = (slice(r0 - rows[0], r1 - rows[0]), slice(c0 - cols[0], c1 - cols[0]))
            if pass_shadow:
                m = np.clip((edge - dist) / 4.0 + 0.5, 0.0, 1.0).astype(np.float32)
                np.maximum(shadow[win], m, out=shadow[win])
                continue
            bodies.append(int(i))
            m = np.clip((edge - dist) / 1.5 + 0.5, 0.0, 1.0).astype(np.float32)
            # Sun-side highlight and dark crown interior read as a 3-D shrub from above.
            sun = -(xx * sh.dx[i] + yy * sh.dy[i]) / (np.hypot(sh.dx[i], sh.dy[i]) * sh.r[i] + 1e-6)
            tex = 0.55 + 0.7 * fine[win] + 0.25 * np.clip(sun, -1, 1) - 0.2 * (dist / sh.r[i]) ** 2
            for k in range(3):
                col = sh.rgb[i, k] * tex
                rgb[k][win] += (col - rgb[k][win]) * m
        if pass_shadow:
            rgb *= 1.0 - 0.55 * shadow[None]


def _composite(
    rgb: F32, truth: U8 | None, st: Stamps, rows: tuple[int, int], cols: tuple[int, int]
) -> None:
    """Alpha-blend soft discs: coverage adds up (capped at 1), colour is the coverage-weighted mean.

    Sums run in the global stamp order, so a pixel gets the same value in any window.
    """
    if st.x.size == 0:
        return
    pad = float(st.r.max()) + 2.0
    lo, hi = np.searchsorted(st.y, [rows[0] - pad, rows[1] + pad])
    sel = np.arange(lo, hi)
    sel = sel[(st.x[sel] >= cols[0] - pad) & (st.x[sel] < cols[1] + pad)]
    if sel.size == 0:
        return
    h, w = rgb.shape[1:]
    rad = np.ceil(st.r[sel] + 1.0).astype(np.int64)
    idx_parts: list[NDArray[np.int64]] = []
    w_parts: list[F32] = []
    c_parts: list[F32] = []
    for R in np.unique(rad):
        g = sel[rad == R]
        off = np.arange(-R, R + 1)
        dy, dx = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
        px = np.floor(st.x[g]).astype(np.int64)
        py = np.floor(st.y[g]).astype(np.int64)
        fx = (st.x[g] - px - 0.5).astype(np.float32)[:, None]
        fy = (st.y[g] - py - 0.5).astype(np.float32)[:, None]
        dist = np.hypot(dx[None, :] - fx, dy[None, :] - fy)
        r = st.r[g][:, None]
        wt = np.clip(r + 0.5 - dist, 0.0, 1.0) * st.alpha[g][:, None]
        rr = py[:, None] + dy[None, :] - rows[0]
        cc = px[:, None] + dx[None, :] - cols[0]
        keep = (wt > 0) & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        shade = 1.08 - 0.22 * np.clip(dist / r, 0, 1)
        idx_parts.append((rr * w + cc)[keep])
        w_parts.append(wt[keep].astype(np.float32))
        c_parts.append((st.rgb[g][:, None, :] * shade[:, :, None])[keep].astype(np.float32))
    idx = np.concatenate(idx_parts)
    if idx.size == 0:
        return
    wt = np.concatenate(w_parts)
    col = np.concatenate(c_parts)
    used, inv = np.unique(idx, return_inverse=True)
    cover = np.bincount(inv, weights=wt, minlength=used.size)
    alpha = np.minimum(cover, 1.0).astype(np.float32)
    flat = rgb.reshape(3, -1)
    for k in range(3):
        mean = (np.bincount(inv, weights=wt * col[:, k], minlength=used.size) / cover).astype(
            np.float32
        )
        flat[k, used] += (mean - flat[k, used]) * alpha
    if truth is not None:
        tf = truth.reshape(-1)
        tf[used[alpha >= 0.5]] = 1


def render_window(scene: Scene, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[U8, U8]:
    """RGBA (4, h, w) uint8 and truth (h, w) uint8 (0/1, 255 outside the valid area)."""
    rgb, fine = _ground(scene, rows, cols)
    _draw_shrubs(scene, rgb, fine, rows, cols)
    truth = np.zeros(rgb.shape[1:], np.uint8)
    _composite(rgb, None, scene.leaves, rows, cols)
    _composite(rgb, None, scene.flowers, rows, cols)
    _composite(rgb, truth, scene.bracts, rows, cols)
    valid = scene.collar.valid(rows, cols)
    out = np.empty((4, *truth.shape), np.uint8)
    np.clip(rgb + 0.5, 0, 255, out=rgb)
    out[:3] = rgb.astype(np.uint8) * valid[None]
    out[3] = valid.astype(np.uint8) * 255
    truth[~valid] = 255
    return out, truth


def render_strip(scene: Scene, row0: int, row1: int, col0: int = 0, width: int | None = None) -> tuple[U8, U8]:
    """A strip of `width` columns from `col0` (default: full width), rendered in column chunks so
    float temporaries stay small."""
    width = scene.size - col0 if width is None else width
    rgba = np.empty((4, row1 - row0, width), np.uint8)
    truth = np.empty((row1 - row0, width), np.uint8)
    for c0 in range(0, width, CHUNK_COLS):
        c1 = min(width, c0 + CHUNK_COLS)
        rgba[:, :, c0:c1], truth[:, c0:c1] = render_window(scene, (row0, row1), (col0 + c0, col0 + c1))
    return rgba, truth


def plot_counts(plot: Plot, truth: U8, row0: int) -> tuple[int, int, int]:
    """(pixels inside, spurge pixels inside, invalid pixels inside) of a plot within a strip."""
    y0, y1, x0, x1 = plot.bbox_px()
    r0, r1 = max(row0, y0), min(row0 + truth.shape[0], y1)
    c0, c1 = max(0, x0), min(truth.shape[1], x1)
    if r0 >= r1 or c0 >= c1:
        return 0, 0, 0
    inside = plot.mask((r0, r1), (c0, c1))
    t = truth[r0 - row0 : r1 - row0, c0:c1][inside]
    return int(inside.sum()), int((t == 1).sum()), int((t == 255).sum())


def site_salt(seed: int, site: int) -> int:
    return int(np.random.default_rng([seed % 2**63, site, 7]).integers(1, 2**31))
