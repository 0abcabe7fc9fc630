"""Plot-aligned tile grids: pure geometry, no I/O.

The rule (documented in field_data/README.md):
* A plot's frame is its minimum rotated rectangle. Of its four edge directions, the one closest to
  east becomes the tile x axis, so a frame is rotated by at most 45 degrees against the raster.
* A plot of W x H pixels holds floor(W / T) x floor(H / T) tiles of T px (0.5 px tolerance),
  centred in the plot; the leftover margin is split equally on both sides and not tiled.
  A 10 m plot at 1.4 cm/px (~714 px) gives 2 x 2 tiles of 250 px with ~107 px margins.
* A plot smaller than one tile, and every point survey, gives one tile centred on the plot.
* Frames rotated less than the tolerance are snapped to the raster grid (one shift of at most
  half a pixel for the whole plot) and read without resampling; others are resampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from shapely import Point, Polygon, minimum_rotated_rectangle
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class TileSpec:
    """One tile in a plot's frame, placed on the orthomosaic."""

    row: int
    col: int
    transform: Affine  # tile pixel -> map coordinates (may be rotated)
    aligned: bool  # True: an exact pixel window of the raster, no resampling
    col_off: int  # raster pixel offsets of the tile origin (aligned tiles only)
    row_off: int
    footprint: Polygon
    plot_fraction: float  # share of the tile's area inside the plot


@dataclass(frozen=True)
class PlotFrame:
    rotation_deg: float
    width_px: float
    height_px: float
    tiles: tuple[TileSpec, ...]


def _footprint(t: Affine, size: int) -> Polygon:
    return Polygon([t @ (0, 0), t @ (size, 0), t @ (size, size), t @ (0, size)])


def _frame_axes(geom: BaseGeometry) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    rect = minimum_rotated_rectangle(geom)
    corners = list(rect.exterior.coords)[:4] if isinstance(rect, Polygon) else []
    if len(corners) < 4:
        return (1.0, 0.0), []
    (x0, y0), (x1, y1) = corners[0], corners[1]
    n = math.hypot(x1 - x0, y1 - y0) or 1.0
    e = ((x1 - x0) / n, (y1 - y0) / n)
    candidates = [e, (-e[0], -e[1]), (-e[1], e[0]), (e[1], -e[0])]
    u = max(candidates, key=lambda d: (round(d[0], 12), d[1]))
    return u, corners


def plot_frame(
    geom: BaseGeometry,
    raster_transform: Affine,
    tile_px: int,
    *,
    rotation_tolerance_deg: float = 0.5,
    point_size: float = 0.5,
) -> PlotFrame:
    """Tiles for one plot (polygon or survey point) in raster map coordinates.

    `point_size` is the plot edge in map units for point surveys.
    """
    gx, gy = raster_transform.a, -raster_transform.e
    if isinstance(geom, Point):
        geom = geom.buffer(point_size / 2, cap_style="square")
        u, corners = (1.0, 0.0), list[tuple[float, float]]()
    else:
        u, corners = _frame_axes(geom)
    angle = math.degrees(math.atan2(u[1], u[0]))
    aligned = abs(angle) <= rotation_tolerance_deg or not corners
    if aligned:
        u = (1.0, 0.0)
        minx, miny, maxx, maxy = geom.bounds
        corners = [(minx, maxy), (maxx, maxy), (maxx, miny), (minx, miny)]
    v = (u[1], -u[0])  # image "down" in map coordinates
    su = [cx * u[0] + cy * u[1] for cx, cy in corners]
    sv = [cx * v[0] + cy * v[1] for cx, cy in corners]
    width_px, height_px = (max(su) - min(su)) / gx, (max(sv) - min(sv)) / gy
    ncols = max(int((width_px + 0.5) // tile_px), 1)
    nrows = max(int((height_px + 0.5) // tile_px), 1)
    off_u = (width_px - ncols * tile_px) / 2
    off_v = (height_px - nrows * tile_px) / 2
    ox = min(su) * u[0] + min(sv) * v[0]
    oy = min(su) * u[1] + min(sv) * v[1]
    area = float(geom.area)
    tiles = []
    if aligned:
        inv = ~raster_transform
        c0, r0 = inv @ (ox, oy)
        col0, row0 = round(c0 + off_u), round(r0 + off_v)
    for r in range(nrows):
        for c in range(ncols):
            if aligned:
                col_off, row_off = col0 + c * tile_px, row0 + r * tile_px
                t = raster_transform @ Affine.translation(col_off, row_off)
            else:
                col_off = row_off = 0
                du, dv = (off_u + c * tile_px) * gx, (off_v + r * tile_px) * gy
                t = Affine(gx * u[0], gy * v[0], ox + du * u[0] + dv * v[0],
                           gx * u[1], gy * v[1], oy + du * u[1] + dv * v[1])
            fp = _footprint(t, tile_px)
            frac = float(fp.intersection(geom).area / fp.area) if area > 0 else 0.0
            tiles.append(TileSpec(r, c, t, aligned, col_off, row_off, fp, round(frac, 4)))
    return PlotFrame(0.0 if aligned else round(angle, 3), width_px, height_px, tuple(tiles))
