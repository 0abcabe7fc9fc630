"""Scale bar and north arrow for the matplotlib maps (previews, field sheet).

Why: a crew reads distances off a printed map; without a scale bar and north a map of a field with
no landmarks cannot be matched to the ground.
"""

from __future__ import annotations

import math
from typing import Any


def nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k metres) of about a fifth of the map width."""
    target = max(span_m / 5.0, 1e-6)
    base = 10 ** math.floor(math.log10(target))
    return float(next(m * base for m in (5, 2, 1) if m * base <= target * 1.0001))


def scale_bar(ax: Any, units_per_m: float = 1.0, fontsize: float = 7) -> float:
    """Four alternating black/white segments in the lower right (the walk starts in the south-west),
    labelled in metres; returns the length (m)."""
    from matplotlib.patches import Rectangle

    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    width, height = abs(x1 - x0), abs(y1 - y0)
    length_m = nice_length(width / units_per_m)
    length = length_m * units_per_m
    left, bottom = max(x0, x1) - 0.04 * width - length, min(y0, y1) + 0.05 * height
    bar_h = 0.012 * height
    ax.add_patch(Rectangle((left - 0.01 * width, bottom - 0.035 * height), length + 0.02 * width,
                           0.075 * height, facecolor="white", alpha=0.75, edgecolor="none", zorder=9))
    for i in range(4):
        ax.add_patch(Rectangle((left + i * length / 4, bottom), length / 4, bar_h, facecolor="black" if i % 2 == 0
                               else "white", edgecolor="black", lw=0.6, zorder=10))
    unit = "m" if length_m >= 1 else "cm"
    shown = length_m if length_m >= 1 else length_m * 100
    for frac in (0.0, 0.5, 1.0):
        label = f"{shown * frac:g}" + (f" {unit}" if frac == 1.0 else "")
        ax.text(left + frac * length, bottom + bar_h * 1.6, label, ha="center", va="bottom", fontsize=fontsize,
                zorder=10)
    return length_m


def north_arrow(ax: Any, fontsize: float = 9) -> None:
    """An arrow with N in the upper right (the maps are north-up grids: grid north)."""
    ax.annotate("N", xy=(0.94, 0.95), xytext=(0.94, 0.83), xycoords="axes fraction", textcoords="axes fraction",
                ha="center", va="center", fontsize=fontsize, fontweight="bold", zorder=11,
                arrowprops={"facecolor": "black", "edgecolor": "white", "width": 4, "headwidth": 11,
                            "headlength": 9, "lw": 0.5},
                bbox={"boxstyle": "circle,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def decorate(ax: Any, units_per_m: float = 1.0) -> None:
    scale_bar(ax, units_per_m)
    north_arrow(ax)
