"""Real-imagery benchmark (issue 13): leave-one-frame-out on real drone frames of giant hogweed.

Usage:
    python benchmarks/real_bench.py [--data DIR] [--out DIR] [--variants a,b,...] [--list]

Data: JPG frames with same-named PNG pixel masks (value 1 = weed), e.g. the three frames of
`../shared/realdata/heracleum-dataset` (read in place, never copied into the repository).

Per frame (see docs/real_bench.md for the assumptions):
* ground resolution from the EXIF/XMP: GSD = relative altitude x sensor width / (focal length x
  image width); nadir view and flat ground assumed; sensor width from a small camera table
  (DJI FC220 = Mavic Pro, 1/2.3" sensor, 6.17 mm) or --sensor-width-mm;
* a projected CRS: the WGS 84 / UTM zone of the frame's GPS position (EPSG:326xx north); the frame
  is placed north-up with its centre at its GPS position moved east by i x --site-spacing-m, so the
  frames are separate, non-overlapping sites; the yaw is ignored (each frame is its own site);
* per variant the frame is resampled by `factor` (box filter) and written as a GeoTIFF, so a
  250-px tile covers factor x 250 x GSD metres;
* plots: a grid of square plots of `plot_tiles` x `plot_tiles` tiles from the top-left corner;
  a plot is present when the mask covers >= --present-fraction (2 %) of it; the survey carries a
  `fold` column (spatial strips of the frame, alternating A/B) used as train.group_column, so
  cross-validation on the training frames never needs the held-out frame, and a frame with only
  absent plots can take part (default leave-one-site-out would refuse it).

Leave-one-frame-out: for each frame, `tile` the other frames, `train` on them (2-fold grouped
cross-validation on the strips picks the epoch and the decision threshold), `predict` the held-out
frame, and score the class map per map cell: a cell is present when the mask covers >= 2 % of
it (of its valid part). Scores: balanced accuracy (class map), ROC-AUC (`_prob.tif`), the same for
the excess-green index (ExG = 2g - r - b on chromatic coordinates, mean per cell; its threshold
maximises balanced accuracy on the training frames' cells). A frame whose cells are all absent has
no balanced accuracy / ROC-AUC: its specificity is reported and it counts in the pooled figures.

Prints a table and writes `results.json` (and the work files) under --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata" / "heracleum-dataset"
DEFAULT_OUT = REPO / "bench-out" / "real_bench"

# Camera model (EXIF Model) -> sensor width in mm. FC220: DJI Mavic Pro, 1/2.3" CMOS, 6.17 x 4.55 mm;
# its 4000 x 2250 (16:9) pictures are a vertical crop of the 4000 x 3000 sensor, so the full width counts.
SENSOR_WIDTH_MM = {"FC220": 6.17, "FC330": 6.17, "FC300X": 6.17, "FC6310": 13.2, "L1D-20c": 13.2}

log = logging.getLogger("real_bench")


@dataclass(frozen=True)
class Variant:
    name: str
    factor: float = 1.0        # frame downsampling before tiling (tile = factor x 250 x GSD metres)
    plot_tiles: int = 2        # plot edge in tiles (the survey unit; its label goes to all its tiles)
    mode: str = "probe"        # train.mode
    input_size: int | None = None  # train.input_size (None: backbone's 224)
    epochs: int = 30
    lr: float | None = None
    stride_div: int = 1        # predict stride = tile / stride_div
    tta: bool = False          # predict.tta
    threshold: str = "bundle"  # bundle (chosen by cross-validation on the training frames) or a number
    fuse_exg: bool = False     # experiment: average the model probability with a training-fitted ExG probability
    note: str = ""

    def describe(self) -> str:
        n = self.plot_tiles
        return (f"GSD x{self.factor:g} (tile {self.factor * 250:g} native px), {n}x{n}-tile "
                f"plots, {self.mode} {self.epochs} epochs" + (f" lr {self.lr:g}" if self.lr else "")
                + f", input {self.input_size or 224} px, stride tile/{self.stride_div}"
                + (", TTA" if self.tta else "") + f", threshold {self.threshold}"
                + (", ExG fusion (experiment; fused threshold 0.5)" if self.fuse_exg else ""))

    def train_key(self) -> str:
        return f"f{self.factor:g}_p{self.plot_tiles}_{self.mode}_i{self.input_size or 224}_e{self.epochs}" + (
            f"_lr{self.lr:g}" if self.lr else "")

    def predict_key(self) -> str:
        return f"{self.train_key()}_s{self.stride_div}_tta{int(self.tta)}"


BASE = Variant("baseline (defaults)", note="native GSD, 2x2-tile plots, probe, 224 px, stride = tile")
VARIANTS: dict[str, Variant] = {
    "baseline": BASE,
    "thr0.5": replace(BASE, name="threshold 0.5", threshold="0.5", note="fixed 0.5 instead of the CV threshold"),
    "plot1": replace(BASE, name="1-tile plots", plot_tiles=1, note="survey plot = one tile (no label copying)"),
    "f2": replace(BASE, name="GSD x2", factor=2.0, plot_tiles=1, note="tile 1.7 m, 1-tile plots"),
    "f2-p2": replace(BASE, name="GSD x2, 2x2 plots", factor=2.0, plot_tiles=2),
    "f3": replace(BASE, name="GSD x3", factor=3.0, plot_tiles=1, note="tile 2.5 m, 1-tile plots"),
    "f1.5": replace(BASE, name="GSD x1.5", factor=1.5, plot_tiles=1, note="tile 1.3 m, 1-tile plots"),
    "in320": replace(BASE, name="input 320", input_size=320),
    "in128": replace(BASE, name="input 128", input_size=128),
    "stride2": replace(BASE, name="stride tile/2", stride_div=2),
    "tta": replace(BASE, name="TTA", tta=True),
    "finetune": replace(BASE, name="fine-tune", mode="finetune", epochs=4, lr=3e-4, input_size=128,
                        note="all layers, 4 epochs, lr 3e-4, 128 px (CPU budget)"),
}
F2 = VARIANTS["f2"]
VARIANTS.update({
    "f2-tta": replace(F2, name="GSD x2 + TTA", tta=True),
    "f2-stride2": replace(F2, name="GSD x2 + stride tile/2", stride_div=2),
    "f2-in320": replace(F2, name="GSD x2 + input 320", input_size=320),
    "f2-thr0.5": replace(F2, name="GSD x2 + threshold 0.5", threshold="0.5"),
    "f2-fuse": replace(F2, name="GSD x2 + ExG fusion", fuse_exg=True,
                       note="experiment: mean of model and logistic(ExG) probabilities, threshold 0.5"),
    "fuse": replace(BASE, name="ExG fusion", fuse_exg=True),
    "f2-finetune": replace(F2, name="GSD x2 + fine-tune", mode="finetune", epochs=5, lr=3e-4, input_size=160,
                           note="all layers, 5 epochs, lr 3e-4, 160 px (CPU budget)"),
})
# the default set runs in ~6-9 min on 2 busy CPU cores (the native-resolution baseline is most of it);
# `--variants all` runs every variant (~45 min: fine-tuning and 320-px inputs on CPU)
DEFAULT_VARIANTS = "baseline,thr0.5,f2,f2-thr0.5,f3,f2-stride2,f2-tta"


# ----------------------------------------------------------------------------------------- frames

@dataclass
class Frame:
    fid: str
    jpg: Path
    mask_path: Path
    width: int
    height: int
    gsd_m: float
    epsg: int
    centre: tuple[float, float]  # easting, northing of the frame centre (after the site offset)
    exif: dict[str, Any]


def _xmp_value(raw: bytes, key: str) -> float | None:
    m = re.search(rb'drone-dji:' + key.encode() + rb'="([+-]?[0-9.]+)"', raw)
    return float(m.group(1)) if m else None


def _dms(v: Any) -> float:
    d, m, s = (float(x) for x in v)
    return d + m / 60 + s / 3600


def read_frames(data: Path, args: argparse.Namespace) -> list[Frame]:
    from PIL import ExifTags, Image
    from pyproj import Transformer

    frames = []
    jpgs = sorted(p for p in data.glob("*.jpg") if p.with_suffix(".png").exists())
    if not jpgs:
        sys.exit(f"{data}: no JPG frames with same-named PNG masks")
    for i, jpg in enumerate(jpgs):
        with Image.open(jpg) as im:
            exif = im.getexif()
            width, height = im.size
        sub = exif.get_ifd(0x8769)
        gps = exif.get_ifd(0x8825)
        tags = {ExifTags.TAGS.get(k, k): v for k, v in {**exif, **sub}.items()}
        model = str(tags.get("Model", "")).strip("\x00 ")
        focal = float(args.focal_mm or tags.get("FocalLength") or 0)
        sensor = args.sensor_width_mm or SENSOR_WIDTH_MM.get(model)
        raw = jpg.read_bytes()[:200_000]
        alt = args.altitude_m or _xmp_value(raw, "RelativeAltitude")
        if not (focal and sensor and alt):
            sys.exit(f"{jpg}: camera {model!r}: need focal length, sensor width and altitude above ground "
                     "(give --focal-mm/--sensor-width-mm/--altitude-m)")
        gsd = alt * sensor / 1000 / (focal / 1000 * width)
        lat = _dms(gps[2]) * (1 if gps.get(1, "N") == "N" else -1)
        lon = _dms(gps[4]) * (1 if gps.get(3, "E") == "E" else -1)
        zone = int((lon + 180) // 6) + 1
        epsg = (32600 if lat >= 0 else 32700) + zone
        if frames and epsg != frames[0].epsg:
            epsg = frames[0].epsg  # one CRS for all frames
        e, n = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
        frames.append(Frame(jpg.stem, jpg, jpg.with_suffix(".png"), width, height, gsd, epsg,
                            (e + i * args.site_spacing_m, n),
                            {"model": model, "focal_mm": focal, "sensor_width_mm": sensor,
                             "relative_altitude_m": alt, "lat": lat, "lon": lon,
                             "gimbal_pitch_deg": _xmp_value(raw, "GimbalPitchDegree"),
                             "yaw_deg": _xmp_value(raw, "GimbalYawDegree"),
                             "focal_35mm": tags.get("FocalLengthIn35mmFilm")}))
    return frames


@dataclass
class Working:
    """One frame at one resolution factor: GeoTIFF, mask coverage and per-pixel ExG."""
    frame: Frame
    tif: Path
    gsd_m: float
    cover: np.ndarray  # float32 (H, W), mask fraction per working pixel
    exg: np.ndarray  # float32 (H, W)
    transform: Any


def _resample(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if arr.ndim == 2:
        return np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BOX))
    return np.stack([_resample(arr[..., c], w, h) for c in range(arr.shape[2])], axis=-1)


def working_frame(frame: Frame, factor: float, work: Path) -> Working:
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    w, h = round(frame.width / factor), round(frame.height / factor)
    gsd = frame.gsd_m * frame.width / w
    with Image.open(frame.jpg) as im:
        rgb = np.asarray(im.convert("RGB"))
    with Image.open(frame.mask_path) as im:
        mask = (np.asarray(im)[..., 0] if np.asarray(im).ndim == 3 else np.asarray(im)) > 0
    if (w, h) != (frame.width, frame.height):
        rgb = np.clip(np.rint(_resample(rgb.astype(np.float32), w, h)), 0, 255).astype(np.uint8)
        cover = _resample(mask.astype(np.float32), w, h)
    else:
        cover = mask.astype(np.float32)
    x0 = frame.centre[0] - w * gsd / 2
    y0 = frame.centre[1] + h * gsd / 2
    transform = from_origin(x0, y0, gsd, gsd)
    tif = work / "frames" / f"f{factor:g}" / f"{frame.fid}.tif"
    if not tif.exists():
        tif.parent.mkdir(parents=True, exist_ok=True)
        tmp = tif.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                           crs=f"EPSG:{frame.epsg}", transform=transform, tiled=True,
                           photometric="RGB") as ds:
            ds.write(np.moveaxis(rgb, -1, 0))
        os.replace(tmp, tif)
    f = rgb.astype(np.float32)
    s = f.sum(-1) + 1e-6
    exg = (2 * f[..., 1] - f[..., 0] - f[..., 2]) / s
    return Working(frame, tif, gsd, cover, exg.astype(np.float32), transform)


# ------------------------------------------------------------------------------------ plots/survey

def fold_of(cols: np.ndarray, rows: np.ndarray, n_cols: int, n_rows: int, scheme: str) -> np.ndarray:
    """Spatial strips of a frame alternating between folds A and B (4 strips)."""
    if scheme == "cols":
        strip = cols * 4 // max(n_cols, 1)
    elif scheme == "rows":
        strip = rows * 4 // max(n_rows, 1)
    else:  # quadrants in a checkerboard
        strip = (cols * 2 // max(n_cols, 1)) + (rows * 2 // max(n_rows, 1))
    return np.where(strip % 2 == 0, "A", "B")


def make_survey(wf: Working, plot_tiles: int, tile_px: int, present_fraction: float, scheme: str
                ) -> list[dict[str, Any]]:
    from shapely import box

    edge = plot_tiles * tile_px
    n_cols, n_rows = wf.cover.shape[1] // edge, wf.cover.shape[0] // edge
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    folds = fold_of(cols.ravel(), rows.ravel(), n_cols, n_rows, scheme)
    out = []
    t = wf.transform
    for (r, c), fold in zip(zip(rows.ravel(), cols.ravel(), strict=True), folds, strict=True):
        cov = float(wf.cover[r * edge:(r + 1) * edge, c * edge:(c + 1) * edge].mean())
        x0, y0 = t * (c * edge, r * edge)
        x1, y1 = t * ((c + 1) * edge, (r + 1) * edge)
        out.append({"site_id": f"f{wf.frame.fid}", "plot_id": f"r{r}c{c}",
                    "presence": "present" if cov >= present_fraction else "absent",
                    "cover": round(cov, 4), "fold": fold, "geometry": box(x0, y1, x1, y0)})
    return out


def fold_ok(rows: list[dict[str, Any]]) -> bool:
    for fold in ("A", "B"):
        labels = {r["presence"] for r in rows if r["fold"] == fold}
        if labels != {"present", "absent"}:
            return False
    return True


# ------------------------------------------------------------------------------------- scoring

def cell_table(wf: Working, stride: int, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Mask coverage and mean ExG per map cell (cells of `stride` px from the top-left corner)."""
    h, w = wf.cover.shape
    nr, nc = math.ceil(h / stride), math.ceil(w / stride)
    cover = np.zeros((nr, nc), np.float64)
    exg = np.zeros((nr, nc), np.float64)
    for r in range(nr):
        for c in range(nc):
            win = (slice(r * stride, (r + 1) * stride), slice(c * stride, (c + 1) * stride))
            cover[r, c] = wf.cover[win].mean()
            exg[r, c] = wf.exg[win].mean()
    return {"cover": cover, "exg": exg}


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    if len(set(y.tolist())) < 2:
        return float(np.median(score))
    s = np.sort(np.unique(score))
    cands = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    scores = [balanced_accuracy_score(y, score >= t) for t in cands]
    return float(cands[int(np.argmax(scores))])


def scores(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    both = len(set(y.tolist())) == 2
    return {"n": len(y), "present": int(y.sum()),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else None,
            "roc_auc": float(roc_auc_score(y, score)) if both else None,
            "specificity": float((pred[y == 0] == 0).mean()) if (y == 0).any() else None,
            "sensitivity": float((pred[y == 1] == 1).mean()) if (y == 1).any() else None,
            "accuracy": float((pred == y).mean())}


# ------------------------------------------------------------------------------------- pipeline

def _cfg(v: Variant, args: argparse.Namespace, **extra: Any) -> Any:
    from spurgemap.config import load_config

    over: dict[str, Any] = {"seed": args.seed, "train.mode": v.mode, "train.input_size": v.input_size,
                            "train.epochs": v.epochs, "train.threads": args.threads,
                            "train.group_column": "fold", "train.device": "cpu", "tile.workers": 2,
                            "predict.tta": v.tta, "predict.device": "cpu"}
    if v.lr:
        over["train.lr"] = v.lr
    over.update(extra)
    return load_config(overrides=over)


def run_fold(v: Variant, test: Frame, frames: list[Frame], wfs: dict[str, Working], args: argparse.Namespace,
             work: Path, timing: dict[str, float], orig_frames: dict[str, Working]) -> dict[str, Any]:
    """Train on every frame but `test`, map `test`, score its cells. Trained models and maps are reused
    by variants that share them (keyed by the settings they depend on)."""
    import geopandas as gpd
    import rasterio

    from spurgemap.predict import PredictInputs, run_predict
    from spurgemap.tile import TileInputs, run_tile
    from spurgemap.train import TrainInputs, run_train

    tile_px = 250
    train_frames = [f for f in frames if f.fid != test.fid]
    seed = "" if args.seed == 0 else f"_seed{args.seed}"
    fold_dir = work / "runs" / (v.train_key() + seed) / f"test-{test.fid}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    # survey on the training frames only; pick the first strip scheme that gives both classes per fold
    scheme, rows = None, []
    for sch in ("cols", "rows", "quadrants"):
        rows = [r for f in train_frames for r in make_survey(wfs[f.fid], v.plot_tiles, tile_px,
                                                              args.present_fraction, sch)]
        if fold_ok(rows):
            scheme = sch
            break
    if scheme is None:
        return {"error": "no strip scheme gives absent and present plots in both CV folds"}
    plots = fold_dir / "plots.geojson"
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{test.epsg}")
    if not plots.exists():
        gdf.to_file(plots, driver="GeoJSON")
    info: dict[str, Any] = {"fold_scheme": scheme, "train_frames": [f.fid for f in train_frames],
                            "train_plots": len(rows), "train_plots_present": sum(r["presence"] == "present"
                                                                                 for r in rows)}
    cfg = _cfg(v, args)
    tiles_dir = fold_dir / "tiles"
    if not (tiles_dir / "tiles.gpkg").exists():
        t0 = time.perf_counter()
        run_tile(cfg, TileInputs([wfs[f.fid].tif for f in train_frames], plots, tiles_dir, overwrite=True))
        timing["tile"] = timing.get("tile", 0) + time.perf_counter() - t0
    summ = json.loads((tiles_dir / "summary.json").read_text())
    info["train_tiles"] = summ["tiles_per_site_and_class"]
    run_dir = fold_dir / "run"
    if not (run_dir / "model.spurge").exists():
        t0 = time.perf_counter()
        run_train(cfg, TrainInputs(tiles_dir, run_dir, overwrite=True, feature_cache=work / "feature-cache"))
        timing["train"] = timing.get("train", 0) + time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info["cv_balanced_accuracy"] = metrics["balanced_accuracy"]
    info["cv_roc_auc"] = metrics["validation"]["roc_auc"]
    info["threshold_cv"] = metrics["threshold"]
    info["best_epoch"] = metrics["best_epoch"]

    stride = tile_px // v.stride_div
    maps = work / "maps" / (v.predict_key() + seed) / f"test-{test.fid}"
    name = test.fid
    if not (maps / f"{name}_prob.tif").exists():
        t0 = time.perf_counter()
        run_predict(_cfg(v, args, **{"predict.stride_px": stride if v.stride_div > 1 else None}),
                    PredictInputs(wfs[test.fid].tif, run_dir / "model.spurge", maps, overwrite=True))
        timing["predict"] = timing.get("predict", 0) + time.perf_counter() - t0
    with rasterio.open(maps / f"{name}_prob.tif") as ds:
        prob_pct = ds.read(1)
    with rasterio.open(maps / f"{name}_class.tif") as ds:
        cls = ds.read(1)
    valid = prob_pct != 255
    cells = cell_table(wfs[test.fid], stride)
    assert cells["cover"].shape == prob_pct.shape, (cells["cover"].shape, prob_pct.shape)
    y = (cells["cover"][valid] >= args.present_fraction).astype(int)
    prob = prob_pct[valid].astype(np.float64) / 100
    if v.threshold == "bundle":
        pred = cls[valid].astype(int)
        thr = metrics["threshold"]
    else:
        thr = float(v.threshold)
        pred = (prob >= thr).astype(int)
    # ExG: threshold chosen on the training frames' cells (same grid), never on the test frame
    tr_y, tr_s = [], []
    for f in train_frames:
        c = cell_table(wfs[f.fid], stride)
        full = _full_cells(wfs[f.fid].cover.shape, stride)
        tr_y.append((c["cover"][full] >= args.present_fraction).astype(int))
        tr_s.append(c["exg"][full])
    exg_thr = best_threshold(np.concatenate(tr_y), np.concatenate(tr_s))
    exg = cells["exg"][valid]
    pmap = prob_pct.astype(np.float64) / 100
    if v.fuse_exg:
        # experiment (not in the library): mean of the model probability and an ExG probability from a
        # logistic fit on the training frames' cells; decision threshold 0.5
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression().fit(np.concatenate(tr_s)[:, None], np.concatenate(tr_y))
        p_exg = lr.predict_proba(cells["exg"].reshape(-1, 1))[:, 1].reshape(cells["exg"].shape)
        pmap = 0.5 * pmap + 0.5 * p_exg
        prob = pmap[valid]
        thr = 0.5
        pred = (prob >= thr).astype(int)
    # the same figures on a common grid of --eval-cell-px original pixels, whatever the variant's
    # resolution and stride (maps aggregated by area-weighted mean probability)
    orig = orig_frames[test.fid]
    ep = args.eval_cell_px
    cell_orig = stride * test.width / wfs[test.fid].cover.shape[1]
    cprob, cok = to_common(pmap, valid, cell_orig, ep, orig.cover.shape)
    cc = common_cells(orig, ep)
    full = _full_cells(orig.cover.shape, ep)
    cy = (cc["cover"][full][cok.ravel()] >= args.present_fraction).astype(int)
    cp = cprob[cok]
    tr_y2, tr_s2 = [], []
    for f in train_frames:
        c = common_cells(orig_frames[f.fid], ep)
        fl = _full_cells(orig_frames[f.fid].cover.shape, ep)
        tr_y2.append((c["cover"][fl] >= args.present_fraction).astype(int))
        tr_s2.append(c["exg"][fl])
    exg_thr2 = best_threshold(np.concatenate(tr_y2), np.concatenate(tr_s2))
    ce = cc["exg"][full][cok.ravel()]
    info["common"] = {"cell_m": ep * test.gsd_m, "model": scores(cy, (cp >= thr).astype(int), cp),
                      "exg": scores(cy, (ce >= exg_thr2).astype(int), ce), "exg_threshold": exg_thr2,
                      "_y": cy.tolist(), "_prob": cp.tolist(), "_pred": (cp >= thr).astype(int).tolist(),
                      "_exg": ce.tolist(), "_exg_pred": (ce >= exg_thr2).astype(int).tolist()}
    info.update({"threshold": thr, "exg_threshold": exg_thr, "cell_m": stride * wfs[test.fid].gsd_m,
                 "tile_m": tile_px * wfs[test.fid].gsd_m, "cells": int(valid.sum()),
                 "cells_nodata": int((~valid).sum()),
                 "model": scores(y, pred, prob), "exg": scores(y, (exg >= exg_thr).astype(int), exg),
                 "_y": y.tolist(), "_prob": prob.tolist(), "_pred": pred.tolist(), "_exg": exg.tolist(),
                 "_exg_pred": (exg >= exg_thr).astype(int).tolist()})
    return info


def _overlap(n_fine: int, fine: float, n_coarse: int, coarse: float) -> np.ndarray:
    """(n_coarse, n_fine) lengths of overlap between coarse cells and fine cells on one axis."""
    a0 = np.arange(n_coarse)[:, None] * coarse
    b0 = np.arange(n_fine)[None, :] * fine
    return np.clip(np.minimum(a0 + coarse, b0 + fine) - np.maximum(a0, b0), 0, None)


def to_common(values: np.ndarray, valid: np.ndarray, cell_orig_px: float, eval_px: int,
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean of a map (cells of `cell_orig_px` original pixels) on the common grid of
    `eval_px` original pixels; a common cell is valid when >= half of it is covered by valid cells."""
    h, w = shape
    nR, nC = h // eval_px, w // eval_px
    wr = _overlap(values.shape[0], cell_orig_px, nR, eval_px)
    wc = _overlap(values.shape[1], cell_orig_px, nC, eval_px)
    v = valid.astype(np.float64)
    num = wr @ (np.where(valid, values, 0) * v) @ wc.T
    den = wr @ v @ wc.T
    ok = den >= 0.5 * eval_px * eval_px
    return np.where(ok, num / np.maximum(den, 1e-9), np.nan), ok


def common_cells(orig: Working, eval_px: int) -> dict[str, np.ndarray]:
    return cell_table(orig, eval_px)


def _full_cells(shape: tuple[int, int], stride: int) -> np.ndarray:
    h, w = shape
    nr, nc = math.ceil(h / stride), math.ceil(w / stride)
    full = np.zeros((nr, nc), bool)
    full[: h // stride, : w // stride] = True
    return full


def run_variant(v: Variant, frames: list[Frame], args: argparse.Namespace, work: Path,
                wf_cache: dict[float, dict[str, Working]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    if v.factor not in wf_cache:
        wf_cache[v.factor] = {f.fid: working_frame(f, v.factor, work) for f in frames}
    wfs = wf_cache[v.factor]
    if 1.0 not in wf_cache:
        wf_cache[1.0] = {f.fid: working_frame(f, 1.0, work) for f in frames}
    per_frame = {}
    for test in frames:
        log.info("variant %s: held-out frame %s", v.name, test.fid)
        per_frame[test.fid] = run_fold(v, test, frames, wfs, args, work, timing, wf_cache[1.0])
    ok = [r for r in per_frame.values() if "error" not in r]
    mean, pooled = _summary(ok)
    cmean, cpooled = _summary([r["common"] for r in ok])

    def public(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (public(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}

    return {"variant": asdict(v), "per_frame": {k: public(r) for k, r in per_frame.items()},
            "mean": mean, "pooled": pooled, "common_mean": cmean, "common_pooled": cpooled,
            "seconds_new_work": round(time.perf_counter() - t0, 1),
            "stage_seconds": {k: round(s, 1) for k, s in timing.items()}}


def _summary(ok: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pooled: dict[str, Any] = {}
    if ok:
        y = np.concatenate([r["_y"] for r in ok])
        def cat(k: str) -> np.ndarray:
            return np.concatenate([r[k] for r in ok])

        pooled = {"model": scores(y, cat("_pred"), cat("_prob")), "exg": scores(y, cat("_exg_pred"), cat("_exg"))}
    mean = {}
    for who in ("model", "exg"):
        for m in ("balanced_accuracy", "roc_auc"):
            vals = [r[who][m] for r in ok if r[who][m] is not None]
            mean[f"{who}_{m}"] = float(np.mean(vals)) if vals else None
    return mean, pooled


# ------------------------------------------------------------------------------------- report

def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cell(m: dict[str, Any]) -> str:
    if m["balanced_accuracy"] is not None:
        return f"{_f(m['balanced_accuracy'])}/{_f(m['roc_auc'])}"
    if m["specificity"] is not None:
        return f"spec {_f(m['specificity'])}"
    return f"sens {_f(m['sensitivity'])}"


def table(results: list[dict[str, Any]], frames: list[Frame], grid: str = "map") -> str:
    """grid: 'map' scores per map cell (the variant's own cells), 'common' on the common grid."""
    fids = [f.fid for f in frames]
    head = (["variant", "cell m"] + [f"{fid} BA/AUC (ExG)" for fid in fids]
            + ["mean BA", "mean AUC", "ExG mean BA", "ExG mean AUC", "dAUC", "pooled BA/AUC (ExG)", "s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        row = [res["variant"]["name"]]
        first = next((r for r in res["per_frame"].values() if "error" not in r), None)
        if first is None:
            lines.append("| " + " | ".join([*row, "error"]) + " |")
            continue
        row.append(f"{(first['common'] if grid == 'common' else first)['cell_m']:.2f}")
        for fid in fids:
            r = res["per_frame"][fid]
            if "error" in r:
                row.append("error")
                continue
            r = r["common"] if grid == "common" else r
            row.append(f"{_cell(r['model'])} ({_cell(r['exg'])})")
        mn, po = (res["common_mean"], res["common_pooled"]) if grid == "common" else (res["mean"], res["pooled"])
        ma, ea = mn["model_roc_auc"], mn["exg_roc_auc"]
        d = None if ma is None or ea is None else ma - ea
        row += [_f(mn["model_balanced_accuracy"]), _f(mn["model_roc_auc"]), _f(mn["exg_balanced_accuracy"]),
                _f(mn["exg_roc_auc"]), _f(d),
                f"{_cell(po['model'])} ({_cell(po['exg'])})" if po else "-", f"{res['seconds_new_work']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of JPG frames + PNG masks")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results.json, table and work files")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of: {','.join(VARIANTS)}; or all")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    p.add_argument("--present-fraction", type=float, default=0.02, help="mask cover for a present plot/cell")
    p.add_argument("--eval-cell-px", type=int, default=250,
                   help="common scoring grid in original frame pixels (default 250 = the native tile)")
    p.add_argument("--site-spacing-m", type=float, default=1000.0, help="eastward offset between frames")
    p.add_argument("--sensor-width-mm", type=float, default=None, help="override the camera table")
    p.add_argument("--focal-mm", type=float, default=None, help="override EXIF FocalLength")
    p.add_argument("--altitude-m", type=float, default=None, help="override the XMP RelativeAltitude")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete the work folder first (no reuse of runs)")
    args = p.parse_args(argv)
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:12s} {v.name}: {v.describe()}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("spurgemap", "rasterio", "fiona", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = list(VARIANTS) if args.variants == "all" else [n.strip() for n in args.variants.split(",") if n.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        sys.exit(f"unknown variants {bad}; --list shows them")
    work = args.out / "work"
    if args.fresh and work.exists():
        import shutil
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frames = read_frames(args.data, args)
    for f in frames:
        log.info("frame %s: %dx%d, GSD %.2f mm (%.1f m AGL, %.2f mm focal, %.2f mm sensor), EPSG:%d, footprint "
                 "%.1f x %.1f m", f.fid, f.width, f.height, f.gsd_m * 1000, f.exif["relative_altitude_m"],
                 f.exif["focal_mm"], f.exif["sensor_width_mm"], f.epsg, f.width * f.gsd_m, f.height * f.gsd_m)
    results, wf_cache = [], {}
    for n in names:
        res = run_variant(VARIANTS[n], frames, args, work, wf_cache)
        res["key"] = n
        results.append(res)
        print(f"[{n}] mean model BA {_f(res['mean']['model_balanced_accuracy'])} AUC {_f(res['mean']['model_roc_auc'])}"
              f" | ExG BA {_f(res['mean']['exg_balanced_accuracy'])} AUC {_f(res['mean']['exg_roc_auc'])}"
              f" | {res['seconds_new_work']:.0f} s", flush=True)
    total = time.perf_counter() - t0
    text = ("Per map cell (the variant's own cells; truth: mask >= {pf:.0%} of the cell)\n\n"
            + table(results, frames) + "\n\nOn the common grid of {ep} original px ({m:.2f} m; maps "
            "aggregated by area-weighted mean probability)\n\n" + table(results, frames, "common")
            ).format(pf=args.present_fraction, ep=args.eval_cell_px, m=args.eval_cell_px * frames[0].gsd_m)
    print(text)
    print(f"total {total:.0f} s (work reused from earlier runs in {work} is not re-timed; --fresh to redo)")
    out = {"data": str(args.data), "frames": [{**asdict(f), "jpg": str(f.jpg), "mask_path": str(f.mask_path)}
                                              for f in frames],
           "present_fraction": args.present_fraction, "seconds_total": round(total, 1), "results": results,
           "table": text,
           "settings_hash": hashlib.sha256(json.dumps(vars(args), default=str).encode()).hexdigest()[:12]}
    (args.out / "results.json").write_text(json.dumps(out, indent=2, default=str))
    (args.out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
