"""Does filling a tile's invalid pixels bias the classifier? Measured on demo sites against truth.tif.

    python benchmarks/collar_bias.py DATA_DIR BUNDLE [--sites site02,site03]

DATA_DIR is a `spurgemap demo-data` folder and BUNDLE a model trained on other sites. Takes every fully
valid tile of the sites, masks an artificial collar (a straight strip covering 25 % or 50 % of the tile,
and an irregular wobbly edge), fills it by each rule and compares the classifier's probabilities with the
unmasked tile's: mean |dp|, mean signed dp (bias), class agreement, and balanced accuracy against the
truth (present = any truth pixel in the tile, as the predict accuracy test counts).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import distance_transform_edt

from spurgemap.config import load_config
from spurgemap.geo.raster import OrthoReader, open_ortho
from spurgemap.model.bundle import read_bundle
from spurgemap.predict.infer import make_predictor
from spurgemap.predict.stream import fill_invalid

Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _mean_fill(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = px.copy()  # (3, h, w), channels first as predict's tiles
    out[:, ~valid] = px[:, valid].mean(axis=1).round().astype(np.uint8)[:, None]
    return out


def _nearest(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.all():
        return px
    near = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return px[:, near[0], near[1]]


def _black(px: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid[None], px, 0).astype(np.uint8)


FILLS: dict[str, Fill] = {"mirror across edge (adopted)": fill_invalid, "nearest valid pixel": _nearest,
                          "tile mean colour": _mean_fill,
                          "black (no fill)": _black}


def _masks(t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cols = np.arange(t)[None, :]
    rows = np.arange(t)[:, None]
    edge = (0.3 * t + 0.12 * t * np.sin(rows / t * 2 * np.pi * 1.5 + rng.uniform(0, 6))
            + rng.normal(0, 3, (t, 1)))
    return {"strip 25 %": np.broadcast_to(cols >= t // 4, (t, t)),
            "strip 50 %": np.broadcast_to(cols >= t // 2, (t, t)),
            "irregular ~30 %": cols >= edge}


def _balanced(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(((pred[truth] == 1).mean() + (pred[~truth] == 0).mean()) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--sites", default="site02,site03")
    args = ap.parse_args()
    bundle = read_bundle(args.bundle)
    t, thr = bundle.meta.tile_size_px, bundle.meta.threshold
    predict, _ = make_predictor(bundle, load_config().predict, t)
    tiles, truth = [], []
    for site in args.sites.split(","):
        folder = args.data / "sites" / site
        info = open_ortho(folder / "ortho.tif", t)
        with rasterio.open(folder / "truth.tif") as ds:
            tr = ds.read(1) == 1
        with OrthoReader(info) as reader:
            for r in range(info.height // t):
                for c in range(info.width // t):
                    rgb, valid, _ = reader.read(c * t, r * t, t, t)
                    if valid.all():
                        tiles.append(rgb.copy())
                        truth.append(tr[r * t:(r + 1) * t, c * t:(c + 1) * t].any())
    x, y = np.stack(tiles), np.array(truth)
    base = predict(x).mean(axis=1)
    print(f"{len(x)} fully valid tiles ({y.sum()} with spurge) on {args.sites}; unmasked balanced accuracy "
          f"{_balanced((base >= thr).astype(int), y):.3f}")
    rng = np.random.default_rng(0)
    print(f"{'collar':>16} {'fill':>30} {'mean|dp|':>9} {'mean dp':>8} {'agree':>6} {'bal.acc':>7}")
    for mname, keep in _masks(t, rng).items():
        for fname, fill in FILLS.items():
            filled = np.stack([fill(tile, keep) for tile in x])
            p = predict(filled).mean(axis=1)
            d = p - base
            agree = ((p >= thr) == (base >= thr)).mean()
            print(f"{mname:>16} {fname:>30} {np.abs(d).mean():9.4f} {d.mean():+8.4f} {agree:6.3f} "
                  f"{_balanced((p >= thr).astype(int), y):7.3f}")


if __name__ == "__main__":
    main()
