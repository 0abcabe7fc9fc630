"""Run `tile` on every raster in shared/realdata with one plot at its centre; print the outcome.

Usage: python benchmarks/realdata_sweep.py [REALDATA_DIR]
Each file is either tiled (tiles written) or refused with the one-line message a user would see.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import rasterio
from shapely import box

from spurgemap.config import load_config
from spurgemap.core.errors import SpurgemapError
from spurgemap.tile import TileInputs, run_tile

RASTER_SUFFIXES = {".tif", ".tiff", ".jpg"}
# Files that need an explicit, documented option to be tiled; the sweep tries them both ways.
OPTIONS: dict[str, dict[str, object]] = {
    "odm_orthophoto.tif@fieldimager-workshop10": {"tile.value_range": (0, 255)},
    "EX2.Indices.tif": {"tile.value_range": (0, 255), "tile.bands": (1, 2, 3)},
    "RGBA.uint16.tif": {"tile.value_range": (0, 65535)},
    "all-nodata.tif": {"tile.value_range": (0, 65535)},
}


def centre_plot(path: Path, tmp: Path, tile_px: int) -> Path:
    """A square plot of ~1.2 tiles at the raster centre, in the raster's CRS (or UTM if none)."""
    try:
        with rasterio.open(path) as ds:
            t, w, h, crs = ds.transform, ds.width, ds.height, ds.crs
    except Exception:
        t, w, h, crs = None, 0, 0, None
    if t is None or crs is None:
        geom, crs = box(0, 0, 1, 1), "EPSG:32612"
    else:
        cx, cy = t @ (w / 2, h / 2)
        half = abs(t.a) * tile_px * 0.6
        geom = box(cx - half, cy - half, cx + half, cy + half)
    out = tmp / f"{path.stem}_plots.gpkg"
    gpd.GeoDataFrame({"site_id": ["x"], "plot_id": ["c"], "presence": ["absent"]},
                     geometry=[geom], crs=crs).to_file(out)
    return out


def _options(path: Path) -> dict[str, object] | None:
    return OPTIONS.get(path.name) or OPTIONS.get(f"{path.name}@{path.parent.name}")


def try_tile(path: Path, overrides: dict[str, object] | None = None) -> tuple[str, str]:
    cfg = load_config(overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        plots = centre_plot(path, Path(tmp), cfg.tile.tile_size_px)
        try:
            res = run_tile(cfg, TileInputs([path], plots, Path(tmp) / "tiles"))
        except SpurgemapError as exc:
            return "refused", str(exc).replace(str(path), "FILE")
    return "tiled", f"{res.n_tiles} tile(s), skipped {res.skipped or 'none'}"


def sweep(root: Path) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES):
        name = str(path.relative_to(root))
        rows.append((name, *try_tile(path)))
        opts = _options(path)
        if opts:
            rows.append((f"{name} with {opts}", *try_tile(path, opts)))
    return rows


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "realdata")
    for name, status, detail in sweep(root):
        print(f"{status:8} {name}: {detail}")


if __name__ == "__main__":
    main()
