"""Tiny generated rasters and plot layers: every test makes the data it needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from shapely import Polygon, box
from shapely.affinity import rotate

from spurgemap.config import load_config
from spurgemap.geo.tiles import write_tile
from spurgemap.geo.vector import write_tile_index

os.environ.setdefault("HF_HUB_OFFLINE", "1")

UTM = "EPSG:32612"
ORIGIN = (500_000.0, 5_200_000.0)
GSD = 0.014


def texture(h: int, w: int, seed: int = 0, bands: int = 3) -> np.ndarray:
    """Smooth random RGB (so interpolation checks are meaningful) with fine detail on top."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(20, 235, size=(bands, h // 16 + 2, w // 16 + 2))
    smooth = zoom(coarse, (1, 16, 16), order=1)[:, :h, :w]
    return np.clip(smooth + rng.normal(0, 6, size=(bands, h, w)), 0, 255).astype(np.uint8)


def write_raster(path: Path, data: np.ndarray, *, transform: Affine | None = None, crs: Any = UTM,
                 colorinterp: list[ColorInterp] | None = None, **profile: Any) -> Path:
    count, h, w = data.shape
    prof = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
            "crs": crs, "transform": transform or Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])}
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def make_rgba(path: Path, h: int = 1200, w: int = 1200, seed: int = 0, collar: int = 0,
              **profile: Any) -> Path:
    rgb = texture(h, w, seed)
    alpha = np.full((1, h, w), 255, np.uint8)
    if collar:
        alpha[:, :, :collar] = 0
        rgb[:, :, :collar] = 0
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return write_raster(path, np.concatenate([rgb, alpha]), colorinterp=interp,
                        tiled=True, blockxsize=256, blockysize=256, compress="deflate", **profile)


def square(cx: float, cy: float, size: float, angle: float = 0.0) -> Polygon:
    half = size / 2
    poly = Polygon([(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
                    (cx - half, cy + half)])
    return rotate(poly, angle, origin=(cx, cy)) if angle else poly


def px_to_map(col: float, row: float) -> tuple[float, float]:
    return ORIGIN[0] + col * GSD, ORIGIN[1] - row * GSD


def write_plots(path: Path, rows: list[dict[str, Any]], crs: Any = UTM) -> Path:
    gdf = gpd.GeoDataFrame(rows, geometry=[r.pop("geometry") for r in rows], crs=crs)
    gdf.to_file(path)
    return path


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def cfg():
    return load_config()


def cli_ok(*args: Any) -> Any:
    """Run the CLI in-process and insist it succeeded (the output explains a failure)."""
    from typer.testing import CliRunner

    from spurgemap.cli.app import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output + str(res.exception)
    return res


# A tiny tile set as `spurgemap tile` writes it: separable classes, several sites.
PX = 64
TILE_CRS = __import__("pyproj").CRS.from_epsg(32612).to_wkt()


def _tile_image(rng: np.random.Generator, present: bool) -> np.ndarray:
    img = np.empty((PX, PX, 3), np.uint8)
    img[...] = (70, 110, 50)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    if present:  # yellow-green bracts
        for _ in range(25):
            y, x = rng.integers(2, PX - 3, 2)
            img[y - 2:y + 2, x - 2:x + 2] = (205, 215, 80)
    return img


def write_test_backbone(root: Path) -> Path:
    """Seeded random weights of timm's tiny test_efficientnet, as a local file (no download)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    weights = root / "test_efficientnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    return weights


def make_tile_set(root: Path, sites: int = 3, per_class: int = 5, seed: int = 0,
                  labels_for: dict[str, list[int]] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    (root / "tiles").mkdir(parents=True)
    records, geoms = [], []
    for s in range(sites):
        site = f"s{s}"
        for i, lab in enumerate((labels_for or {}).get(site, [0] * per_class + [1] * per_class)):
            tid = f"{site}_p{i}_r0c0"
            x0, y0 = 500_000 + s * 1000 + i * 2, 5_200_000.0
            t = Affine(0.014, 0, x0, 0, -0.014, y0)
            (root / "tiles" / site).mkdir(exist_ok=True)
            write_tile(root / "tiles" / site / f"{tid}.tif", _tile_image(rng, bool(lab)).transpose(2, 0, 1),
                       np.ones((PX, PX), bool), t, TILE_CRS, "deflate")
            records.append({"tile_id": tid, "site_id": site, "plot_id": f"p{i}",
                            "label": "present" if lab else "absent", "class_id": lab,
                            "path": f"tiles/{site}/{tid}.tif", "gsd_m": 0.014, "cluster": f"c{s % 2}"})
            geoms.append(box(x0, y0 - PX * 0.014, x0 + PX * 0.014, y0))
    write_tile_index(root / "tiles.gpkg", records, geoms, TILE_CRS)
    return root


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One plain line saying how many checks did not run here, and why (CI runs them all)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for rep in skipped:
        reason = str(rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    parts = "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items()))
    terminalreporter.write_line(f"spurgemap: {len(skipped)} checks skipped on this machine ({parts}); "
                                "CI installs QGIS and has ../shared, so it runs them all")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion folder (the augment tests' model)."""
    from spurgemap.augment.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """A small tile set of 3 sites x 3 tiles per class (the augment tests' tiles)."""
    return make_tile_set(tmp_path_factory.mktemp("aug") / "tiles", sites=3, per_class=3)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Seeded weights of timm's tiny `test_efficientnet`, as a local file (nothing is downloaded)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("w") / "test_efficientnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path
