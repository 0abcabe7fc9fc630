"""Preview PNGs of the field-work outputs over the probability map (matplotlib, Agg: no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from shapely.geometry.base import BaseGeometry

from spurgemap.fieldwork.map_furniture import decorate
from spurgemap.predict.mapset import NODATA


def _figure(shape: tuple[int, int]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = shape
    scale = 7.0 / max(h, w)
    return plt.subplots(figsize=(max(w * scale, 3.5) + 1.5, max(h * scale, 3.5)), dpi=110)


def _extent(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = shape
    return (transform.c, transform.c + w * transform.a, transform.f + h * transform.e, transform.f)


def _prob(ax: Any, pct: np.ndarray, transform: Affine) -> Any:
    data = np.ma.masked_equal(pct, NODATA)
    im = ax.imshow(data, extent=_extent(transform, pct.shape), cmap="RdPu", vmin=0, vmax=100,
                   interpolation="nearest")
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    return im


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def visits_preview(path: Path, pct: np.ndarray, transform: Affine, x: np.ndarray, y: np.ndarray,
                   start: np.ndarray, name: str, reasons: Sequence[str], units_per_m: float = 1.0) -> None:
    fig, ax = _figure(pct.shape)
    im = _prob(ax, pct, transform)
    fig.colorbar(im, ax=ax, label="leafy spurge probability (%)", shrink=0.8)
    ax.plot(np.r_[start[0], x], np.r_[start[1], y], "-", color="#333333", lw=1)
    for reason, colour in (("uncertain", "#ffa000"), ("random", "#006edc")):
        pick = np.asarray([r == reason for r in reasons], bool)
        ax.plot(x[pick], y[pick], "o", color=colour, mec="white", ms=6, label=reason)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.06), ncol=2)
    ax.plot(start[0], start[1], "k^", ms=7)
    for i, (a, b) in enumerate(zip(x, y, strict=True), 1):
        ax.annotate(str(i), (a, b), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set_title(f"{name}: {len(x)} visits in walking order", fontsize=9)
    decorate(ax, units_per_m)
    _save(fig, path)


def _outline(ax: Any, geoms: Sequence[BaseGeometry], colour: str) -> None:
    for g in geoms:
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                xs, ys = ring.xy
                ax.plot(xs, ys, color=colour, lw=1.2)


def zones_preview(path: Path, pct: np.ndarray, transform: Affine, zones: Sequence[BaseGeometry], name: str,
                  units_per_m: float = 1.0) -> None:
    fig, ax = _figure(pct.shape)
    im = _prob(ax, pct, transform)
    fig.colorbar(im, ax=ax, label="leafy spurge probability (%)", shrink=0.8)
    _outline(ax, zones, "#ff7800")
    ax.set_title(f"{name}: {len(zones)} treatment zones", fontsize=9)
    decorate(ax, units_per_m)
    _save(fig, path)


def change_preview(path: Path, change: np.ndarray, transform: Affine, classes: dict[int, tuple[str, Any]],
                   name: str, units_per_m: float = 1.0) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = _figure(change.shape)
    colours = [(*(c / 255 for c in rgba[:3]), max(rgba[3], 80) / 255) for _, rgba in classes.values()]
    ax.imshow(np.ma.masked_equal(change, NODATA), extent=_extent(transform, change.shape),
              cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    ax.legend(handles=[Patch(color=c, label=label) for c, (label, _) in zip(colours, classes.values(), strict=True)],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"{name}: change", fontsize=9)
    decorate(ax, units_per_m)
    _save(fig, path)
