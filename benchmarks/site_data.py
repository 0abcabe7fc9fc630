"""Real multi-site datasets for benchmarks/site_bench.py: each image a site with weed truth.

A dataset is a folder of RGB images with weed truth as polygons (AnyLabeling/LabelMe JSON, e.g.
`../shared/realdata/paglab-uav-weed/tiles`) or as same-named PNG masks (value > 0 = weed, e.g.
`../shared/realdata/heracleum-dataset`). The images are read in place and never copied into the
repository: each becomes a north-up GeoTIFF in the benchmark's work folder, placed in a projected
CRS at an assumed ground resolution, with a grid of square survey plots laid on its full cells.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

EPSG = 32633  # an arbitrary projected CRS: the sources carry no georeferencing


@dataclass
class Site:
    sid: str
    image: Path
    row: int  # position in the source's layout (the hold-out is by rows); -1 when unknown
    col: int
    rgb: np.ndarray  # (h, w, 3) uint8
    weed: np.ndarray  # (h, w) bool
    other: np.ndarray | None = None  # (h, w) bool: labelled non-target plants (hard negatives), if any


def _polygon_masks(json_path: Path, shape: tuple[int, int], target: str) -> tuple[np.ndarray, np.ndarray]:
    doc = json.loads(json_path.read_text())
    masks = {True: Image.new("1", (shape[1], shape[0]), 0), False: Image.new("1", (shape[1], shape[0]), 0)}
    for s in doc.get("shapes", []):
        pts = [tuple(p) for p in s.get("points", [])]
        if len(pts) >= 3:
            ImageDraw.Draw(masks[s.get("label") == target]).polygon(pts, fill=1)
    return np.asarray(masks[True], dtype=bool), np.asarray(masks[False], dtype=bool)


def read_sites(data: Path, target: str = "weed") -> list[Site]:
    """Every image of `data` with its truth; tile_R_C names give the layout row and column."""
    sites = []
    for img in sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                      and not p.stem.endswith("_mask")):
        js, png = img.with_suffix(".json"), img.with_suffix(".png")
        if img.suffix.lower() == ".png" or not (js.exists() or png.exists()):
            continue
        rgb = np.asarray(Image.open(img).convert("RGB"))
        if js.exists():
            weed, other = _polygon_masks(js, rgb.shape[:2], target)
        else:
            weed, other = np.asarray(Image.open(png)) > 0, None
            if weed.ndim == 3:
                weed = weed.any(axis=2)
        m = re.search(r"(\d+)_(\d+)$", img.stem)
        row, col = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
        sites.append(Site(img.stem, img, row, col, rgb, weed, other))
    if not sites:
        raise SystemExit(f"{data}: no image with a .json polygon file or a .png mask")
    return sites


def site_transform(site: Site, index: int, gsd_m: float, spacing_m: float) -> Any:
    """North-up transform: sites laid out on their source rows/columns, `spacing_m` apart."""
    from affine import Affine

    r, c = (site.row, site.col) if site.row >= 0 else divmod(index, 10)
    return Affine(gsd_m, 0, 500000.0 + c * spacing_m, 0, -gsd_m, 5000000.0 - r * spacing_m)


def channel_stats(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled per-channel mean and standard deviation of RGB images."""
    px = np.concatenate([im.reshape(-1, 3).astype(np.float64) for im in images])
    return px.mean(axis=0), px.std(axis=0)


def match_colours(rgb: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise one image's channels to a target mean and std (per-orthomosaic normalisation)."""
    m, s = channel_stats([rgb])
    out = (rgb.astype(np.float64) - m) / np.maximum(s, 1e-6) * std + mean
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_site(site: Site, path: Path, transform: Any, rgb: np.ndarray | None = None) -> None:
    import rasterio

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = site.weed.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                       crs=f"EPSG:{EPSG}", transform=transform, compress="deflate", tiled=True) as ds:
        ds.write((site.rgb if rgb is None else rgb).transpose(2, 0, 1))


def plots_of(site: Site, transform: Any, cell_px: int, plot_cells: int, present_fraction: float,
             ) -> list[dict[str, Any]]:
    """Square plots of plot_cells x plot_cells map cells over the image's full cells (a partial last
    row/column is not surveyed); present when the weed covers >= present_fraction of the plot.
    `block`: a spatial block of sites (2 layout rows x 5 columns), for blocked cross-validation."""
    from shapely import box

    edge = cell_px * plot_cells
    h, w = site.weed.shape
    out = []
    for r in range(h // edge):
        for c in range(w // edge):
            cov = float(site.weed[r * edge:(r + 1) * edge, c * edge:(c + 1) * edge].mean())
            x0, y0 = transform * (c * edge, r * edge)
            x1, y1 = transform * ((c + 1) * edge, (r + 1) * edge)
            out.append({"site_id": site.sid, "plot_id": f"p{r}{c}", "presence": "present"
                        if cov >= present_fraction else "absent", "cover": round(cov, 4),
                        "block": f"b{site.row // 2}-{site.col // 5}", "geometry": box(x0, y1, x1, y0)})
    return out


def cell_truth(site: Site, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Per map cell (predict's grid: `stride` px from the top-left): weed cover of the cell's image
    part, and the mean excess-green index (2g - r - b on chromatic coordinates)."""
    h, w = site.weed.shape
    nr, nc = math.ceil(h / stride), math.ceil(w / stride)
    rgb = site.rgb.astype(np.float64)
    chrom = rgb / np.maximum(rgb.sum(axis=2, keepdims=True), 1)
    exg_px = 2 * chrom[..., 1] - chrom[..., 0] - chrom[..., 2]
    cover, exg = np.zeros((nr, nc)), np.zeros((nr, nc))
    for r in range(nr):
        for c in range(nc):
            win = (slice(r * stride, (r + 1) * stride), slice(c * stride, (c + 1) * stride))
            cover[r, c], exg[r, c] = site.weed[win].mean(), exg_px[win].mean()
    return cover, exg
