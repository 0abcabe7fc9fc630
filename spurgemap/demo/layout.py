"""Survey-plot layout: square plots in rows, one row rotated, no overlaps, clear of the collar.

Rotated plots exercise the tiler's resampling path; packing them with a separating-axis test
(rather than bounding boxes) is what lets nine 10 m plots fit on the smallest allowed site.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spurgemap.core.errors import InputError

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Plot:
    """A square plot in pixel space (x = column, y = row, both at pixel edges)."""

    plot_id: str
    cx: float
    cy: float
    size: float
    angle_deg: float  # counter-clockwise on the north-up map
    kind: str = "absent"  # absent | cryptic | sparse | medium | dense

    @property
    def present(self) -> bool:
        return self.kind != "absent"

    def _axes(self) -> tuple[float, float]:
        a = math.radians(self.angle_deg)
        return math.cos(a), math.sin(a)

    def corners(self) -> F64:
        """(4, 2) corners as (x, y) pixel coordinates, clockwise on screen from top-left."""
        c, s = self._axes()
        h = self.size / 2.0
        local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        x = self.cx + local[:, 0] * c + local[:, 1] * s
        y = self.cy - local[:, 0] * s + local[:, 1] * c
        return np.stack([x, y], axis=1)

    def local(self, x: F64, y: F64) -> tuple[F64, F64]:
        """Pixel coordinates -> plot frame (u along the plot's first edge, v along the second)."""
        c, s = self._axes()
        dx, dy = x - self.cx, y - self.cy
        return dx * c - dy * s, dx * s + dy * c

    def to_pixel(self, u: F64, v: F64) -> tuple[F64, F64]:
        c, s = self._axes()
        return self.cx + u * c + v * s, self.cy - u * s + v * c

    def contains(self, x: F64, y: F64, pad: float = 0.0) -> NDArray[np.bool_]:
        u, v = self.local(x, y)
        h = self.size / 2.0 + pad
        return (np.abs(u) <= h) & (np.abs(v) <= h)

    def bbox_px(self) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) integer window covering the plot."""
        k = self.corners()
        return (
            math.floor(float(k[:, 1].min())),
            math.ceil(float(k[:, 1].max())) + 1,
            math.floor(float(k[:, 0].min())),
            math.ceil(float(k[:, 0].max())) + 1,
        )

    def mask(self, rows: tuple[int, int], cols: tuple[int, int]) -> NDArray[np.bool_]:
        """Pixels whose centres fall inside the plot (the usual rasterisation rule)."""
        y = np.arange(rows[0], rows[1], dtype=np.float64)[:, None] + 0.5
        x = np.arange(cols[0], cols[1], dtype=np.float64)[None, :] + 0.5
        return self.contains(x, y)


def _min_shift(a: F64, b: F64, gap: float) -> float:
    """Smallest +x shift of polygon b (centred at 0) that leaves >= gap from polygon a."""
    best = math.inf
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges:
            n = np.array([ey, -ex]) / math.hypot(ex, ey)
            if n[0] < 0:
                n = -n
            if n[0] < 1e-9:
                continue
            need = ((a @ n).max() + gap - (b @ n).min()) / n[0]
            best = min(best, float(need))
    return best


def _row_shapes(size: float, angles: list[float], gap: float) -> tuple[list[float], float, float]:
    """Centre x offsets (from the row's left edge), total width and height of one packed row."""
    shapes = [Plot("", 0.0, 0.0, size, a).corners() for a in angles]
    xs = [-float(shapes[0][:, 0].min())]
    for prev, cur in itertools.pairwise(shapes):
        xs.append(xs[-1] + _min_shift(prev, cur, gap))
    width = xs[-1] + float(shapes[-1][:, 0].max())
    height = max(float(np.ptp(s[:, 1])) for s in shapes)
    return xs, width, height


def layout_plots(
    rng: np.random.Generator, n: int, plot_px: float, lo: float, hi: float, gap: float
) -> list[Plot]:
    """n plots inside the square [lo, hi]^2; the rotated row gets the largest angles that fit.

    Angles are drawn in 10-40 degrees and shrunk only when the site is too small for them.
    """
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    counts = [ncols] * (nrows - 1) + [n - ncols * (nrows - 1)]
    rot_row = int(rng.integers(nrows))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    u = rng.random(counts[rot_row])
    span = hi - lo
    for amax in np.arange(40.0, -0.5, -1.0):
        amin = min(10.0, float(amax))
        rows = []
        for r, k in enumerate(counts):
            angles = (
                [sign * (amin + (amax - amin) * float(t)) for t in u] if r == rot_row else [0.0] * k
            )
            rows.append((angles, *_row_shapes(plot_px, angles, gap)))
        if (
            max(w for _, _, w, _ in rows) <= span
            and sum(h for *_, h in rows) + gap * (nrows - 1) <= span
        ):
            break
    else:
        need = math.ceil(ncols * plot_px + (ncols + 1) * gap)
        raise InputError(
            f"demo: {n} plots of {plot_px:.0f} px do not fit in the valid area ({span:.0f} px); "
            f"raise demo.size_px (need roughly {math.ceil(need / 0.9)}) or lower demo.plot_size_m"
        )
    slack_y = span - sum(h for *_, h in rows) - gap * (nrows - 1)
    vy = rng.dirichlet(np.ones(nrows + 1)) * slack_y
    plots: list[Plot] = []
    y = lo
    for r, (angles, xs, width, height) in enumerate(rows):
        y += float(vy[r])
        vx = rng.dirichlet(np.ones(len(angles) + 1)) * (span - width)
        x = lo + np.cumsum(vx)[:-1]
        for j, a in enumerate(angles):
            own = float(np.ptp(Plot("", 0.0, 0.0, plot_px, a).corners()[:, 1]))
            cy = y + height / 2.0 + (rng.random() - 0.5) * (height - own)
            plots.append(Plot(f"P{len(plots) + 1}", float(x[j] + xs[j]), cy, plot_px, a))
        y += height + gap
    return plots
