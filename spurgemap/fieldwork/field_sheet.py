"""``PLAN/field_sheet.pdf``: the survey plan on paper (matplotlib, no display needed).

Why: phones run flat and crews still carry a clipboard. Page 1 is the map (orthophoto, probability,
numbered visits in walking order, scale bar, north arrow) over the first rows of the visit table with
blank presence and cover columns; further pages carry the rest of the table. The numbers match
``visits.csv``, ``visits.gpx`` and the QField layer, so what is written here can be typed into any.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from shapely.geometry.base import BaseGeometry

from spurgemap import __version__
from spurgemap.fieldwork.map_furniture import decorate
from spurgemap.geo import qfield_io as qio
from spurgemap.predict.mapset import NODATA

A4 = (8.27, 11.69)
ROWS_FIRST, ROWS_MORE = 16, 38  # table rows on the map page and on each further page
KIND_COLOURS = {"uncertain": "#ffa000", "random": "#006edc"}
BACKGROUND_PX = 2400  # orthophoto pixels across the printed map (about 300 dpi over 8 inches)


@dataclass
class SheetInputs:
    site: str
    table: pd.DataFrame  # visits in walking order: visit, lon, lat and a kind (``kind`` or ``reason``)
    x: np.ndarray  # visit centres in the map CRS
    y: np.ndarray
    start: np.ndarray
    pct: np.ndarray
    transform: Affine
    crs_wkt: str
    threshold: float
    units_per_m: float
    route_length_m: float
    species: str = "leafy spurge"
    ortho: Path | None = None
    zones: list[BaseGeometry] = field(default_factory=list)  # spray zones to outline (map CRS)


def _kind(table: pd.DataFrame) -> list[str]:
    col = next((c for c in ("kind", "reason") if c in table.columns), None)
    return [str(v) for v in table[col]] if col else [""] * len(table)


def _overlay(pct: np.ndarray, over_photo: bool) -> np.ndarray:
    """RGBA of the probability: over a photo, transparent at 0 % and more opaque towards 100 %, so clear
    ground shows the imagery and likely spurge stands out (as the QGIS style does)."""
    from matplotlib import colormaps

    p = np.where(pct == NODATA, 0, pct).astype(float) / 100
    rgba = colormaps["RdPu"](p)
    rgba[..., 3] = np.where(pct == NODATA, 0.0, 0.55 * p if over_photo else 0.9)
    return rgba


def _map(ax: Any, s: SheetInputs) -> None:
    h, w = s.pct.shape
    t = s.transform
    extent = (t.c, t.c + w * t.a, t.f + h * t.e, t.f)
    bounds = (extent[0], extent[2], extent[1], extent[3])
    photo = qio.read_rgb_window(s.ortho, bounds, BACKGROUND_PX, s.crs_wkt) if s.ortho else None
    if photo is not None:
        rgba, (left, bottom, right, top) = photo
        ax.imshow(rgba, extent=(left, right, bottom, top), interpolation="bilinear", zorder=1)
    ax.imshow(_overlay(s.pct, photo is not None), extent=extent, interpolation="nearest", zorder=2)
    for g in s.zones:
        for poly in getattr(g, "geoms", [g]):
            for ring in [poly.exterior, *poly.interiors]:
                ax.plot(*ring.xy, color="#ff7800", lw=1.2, zorder=3)
    ax.plot(np.r_[s.start[0], s.x], np.r_[s.start[1], s.y], "--", color="#222222", lw=0.8, zorder=3)
    ax.plot(s.start[0], s.start[1], "k^", ms=8, zorder=4)
    ax.annotate("start", (s.start[0], s.start[1]), xytext=(6, 4), textcoords="offset points", fontsize=7,
                zorder=4, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                "alpha": 0.8})
    for i, (a, b, kind) in enumerate(zip(s.x, s.y, _kind(s.table), strict=True)):
        label = str(s.table["visit"].iloc[i]) if "visit" in s.table.columns else str(i + 1)
        ax.plot(a, b, "o", ms=13, color=KIND_COLOURS.get(kind, "#444444"), mec="white", mew=1.2, zorder=5)
        ax.text(a, b, label, ha="center", va="center", fontsize=6.5, color="white", fontweight="bold", zorder=6)
    handles = [ax.plot([], [], "o", color=c, mec="white", ms=8, label=k)[0] for k, c in KIND_COLOURS.items()]
    if s.zones:
        handles.append(ax.plot([], [], "-", color="#ff7800", lw=1.2, label="spray zone")[0])
    ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.85)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    decorate(ax, s.units_per_m)


def _grid_label(epsg: int) -> str:
    """'UTM 12N' for WGS 84 UTM codes, else the EPSG code (what a GNSS setting shows)."""
    if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760:
        return f"UTM {epsg % 100}{'N' if epsg < 32700 else 'S'}"
    return f"EPSG:{epsg}"


def _coords(s: SheetInputs) -> tuple[str, np.ndarray, np.ndarray]:
    """Grid label, easting, northing: the table's own columns (as in visits.csv) when it has them."""
    t = s.table
    if {"easting", "northing", "epsg"} <= set(t.columns) and t["epsg"].nunique() == 1:
        return _grid_label(int(t["epsg"].iloc[0])), t["easting"].to_numpy(float), t["northing"].to_numpy(float)
    zone, e, n = qio.utm_of(t["lon"].to_numpy(float), t["lat"].to_numpy(float))
    return f"UTM {zone}", e, n


def _rows(s: SheetInputs) -> list[list[str]]:
    lon, lat = s.table["lon"].to_numpy(float), s.table["lat"].to_numpy(float)
    _, e, n = _coords(s)
    plot = s.table["plot_id"] if "plot_id" in s.table.columns else s.table["visit"]
    visit = s.table["visit"] if "visit" in s.table.columns else pd.Series(range(1, len(s.table) + 1))
    return [[str(v), str(p), k, f"{a:.6f}", f"{b:.6f}", f"{ee:.1f}", f"{nn:.1f}", "", "", ""]
            for v, p, k, a, b, ee, nn in zip(visit, plot, _kind(s.table), lon, lat, e, n, strict=True)]


def _table(fig: Any, rect: tuple[float, float, float, float], rows: list[list[str]], zone: str, capacity: int) -> None:
    """Rows of equal height (a full page of ``capacity`` rows fills ``rect``), tall enough to write in."""
    ax = fig.add_axes(rect)
    ax.axis("off")
    head = ["#", "plot", "kind", "lon", "lat", f"{zone} E", "N", "spurge? Y/N", "cover %", "notes"]
    widths = [0.04, 0.08, 0.09, 0.1, 0.1, 0.1, 0.11, 0.1, 0.08, 0.2]
    n = max(len(rows), 1)
    tab = ax.table(cellText=rows or [[""] * len(head)], colLabels=head, colWidths=widths, loc="upper center",
                   cellLoc="center", bbox=[0, 1 - (n + 1) / (capacity + 1), 1, (n + 1) / (capacity + 1)])
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    for (r, _), cell in tab.get_celld().items():
        cell.set_linewidth(0.5)
        if r == 0:
            cell.set_facecolor("#e8e8e8")
            cell.set_text_props(fontweight="bold")


def _header(fig: Any, s: SheetInputs, page: int, pages: int) -> None:
    fig.text(0.05, 0.965, f"{s.species.capitalize()} survey - site {s.site}", fontsize=14, fontweight="bold")
    fig.text(0.95, 0.965, f"page {page} of {pages}", fontsize=8, ha="right")
    if page == 1:
        fig.text(0.05, 0.945, f"planned {dt.date.today().isoformat()} by spurgemap {__version__}: "
                 f"{len(s.table)} visits, walk {s.route_length_m:.0f} m; map threshold p = {s.threshold:.2f}; "
                 "pink = higher probability", fontsize=7.5)
        fig.text(0.05, 0.922, f"Site: {s.site}      Date: ______________      Crew: "
                 "__________________________      Start time: ________", fontsize=10)


def write_field_sheet(path: Path, s: SheetInputs) -> Path:
    """One A4 page per site (map + first rows), more pages only when the table does not fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    rows = _rows(s)
    zone = _coords(s)[0] if rows else ""
    chunks = [rows[:ROWS_FIRST]] + [rows[i:i + ROWS_MORE] for i in range(ROWS_FIRST, len(rows), ROWS_MORE)]
    meta = {"Title": f"{s.species} survey, site {s.site}", "Creator": f"spurgemap {__version__}"}
    with PdfPages(path, metadata=meta) as pdf:
        for page, chunk in enumerate(chunks, 1):
            fig = plt.figure(figsize=A4)
            _header(fig, s, page, len(chunks))
            if page == 1:
                _map(fig.add_axes((0.05, 0.43, 0.9, 0.48)), s)
                _table(fig, (0.05, 0.03, 0.9, 0.38), chunk, zone, ROWS_FIRST)
            else:
                _table(fig, (0.05, 0.03, 0.9, 0.9), chunk, zone, ROWS_MORE)
            fig.text(0.5, 0.008, "spurge? Y = leafy spurge found in the plot, N = none; cover % of the plot. "
                     "Visit numbers match visits.csv, visits.gpx and the QField layer.", fontsize=6.5, ha="center")
            pdf.savefig(fig)
            plt.close(fig)
    return path
