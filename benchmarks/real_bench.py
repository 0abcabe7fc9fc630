"""Real-imagery benchmark (issue 13): leave-one-frame-out on real drone frames of giant hogweed.

Usage:
    python benchmarks/real_bench.py [--data DIR] [--out DIR] [--variants a,b,...] [--list]

Data: JPG frames with same-named PNG pixel masks (value 1 = weed), e.g. the three frames of
`../shared/realdata/heracleum-dataset` (read in place, never copied into the repository).

Per frame (docs/real_bench.md has the assumptions; real_frames.py reads and scores the frames):
GSD from the EXIF/XMP (altitude x sensor width / (focal length x image width)), placed north-up in
its UTM zone as a separate site, and a grid of square plots of `plot_tiles` x `plot_tiles` tiles
(present when the mask covers >= --present-fraction of it) with a `fold` column of spatial strips
used as train.group_column. Per variant: `factor` resamples the frame (box filter) before tiling, or,
with `lib_gsd`, the library does (tile.gsd_m = factor x the frames' median GSD on the native frame;
predict follows the bundle's GSD); `labels` is train.labels (tile, or plot-mil: a plot is a bag).

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
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

# a sibling module: `python benchmarks/real_bench.py` puts benchmarks/ on sys.path
import real_frames as rf

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata" / "heracleum-dataset"
DEFAULT_OUT = REPO / "bench-out" / "real_bench"
TILE_PX = 250  # tile.tile_size_px, the default

log = logging.getLogger("real_bench")


@dataclass(frozen=True)
class Variant:
    name: str
    factor: float = 1.0        # ground resolution x native (tile = factor x 250 x GSD metres)
    lib_gsd: bool = False      # False: the benchmark box-filters the frame by `factor`; True: tile.gsd_m does it
    plot_tiles: int = 2        # plot edge in tiles (the survey unit)
    labels: str = "tile"       # train.labels: tile (plot label on all its tiles) or plot-mil (plot = bag)
    mode: str = "probe"        # train.mode
    trainable_blocks: int | None = None  # train.trainable_blocks (finetune: only the last N stages learn)
    input_size: int | None = None  # train.input_size (None: backbone's 224)
    epochs: int = 30
    lr: float | None = None
    stride_div: int = 1        # predict stride = tile / stride_div
    tta: bool = False          # predict.tta
    threshold: str = "bundle"  # bundle (chosen by cross-validation on the training frames) or a number
    fuse_exg: bool = False     # experiment: average the model probability with a training-fitted ExG probability
    note: str = ""

    @property
    def frame_factor(self) -> float:
        """Resampling the benchmark applies to the frame itself (none when the library does it)."""
        return 1.0 if self.lib_gsd else self.factor

    @property
    def survey_px(self) -> int:
        """Edge of a plot's tile in working-frame px: the ground of one tile at this variant's GSD."""
        return round(self.factor * TILE_PX) if self.lib_gsd else TILE_PX

    def describe(self) -> str:
        n = self.plot_tiles
        gsd = (f"GSD x{self.factor:g} by the library (tile.gsd_m; native frame, tile {self.factor * 250:g} "
               "native px read and resized)" if self.lib_gsd
               else f"GSD x{self.factor:g} (tile {self.factor * 250:g} native px)")
        blocks = "" if self.trainable_blocks is None else f" (last {self.trainable_blocks} stages)"
        return (f"{gsd}, {n}x{n}-tile plots, labels {self.labels}, {self.mode}{blocks} {self.epochs} epochs"
                + (f" lr {self.lr:g}" if self.lr else "")
                + f", input {self.input_size or 224} px, stride tile/{self.stride_div}"
                + (", TTA" if self.tta else "") + f", threshold {self.threshold}"
                + (", ExG fusion (experiment; fused threshold 0.5)" if self.fuse_exg else ""))

    def train_key(self) -> str:
        # new fields only add to the key when set, so work folders of earlier runs stay reusable
        return (f"f{self.factor:g}_p{self.plot_tiles}_{self.mode}_i{self.input_size or 224}_e{self.epochs}"
                + (f"_lr{self.lr:g}" if self.lr else "") + ("_libgsd" if self.lib_gsd else "")
                + ("" if self.labels == "tile" else f"_{self.labels}")
                + ("" if self.trainable_blocks is None else f"_tb{self.trainable_blocks}"))

    def predict_key(self) -> str:
        return f"{self.train_key()}_s{self.stride_div}_tta{int(self.tta)}"


BASE = Variant("baseline (defaults)", note="native GSD, 2x2-tile plots, probe, 224 px, stride = tile")
VARIANTS: dict[str, Variant] = {
    "baseline": BASE,
    "thr0.5": replace(BASE, name="threshold 0.5", threshold="0.5", note="fixed 0.5 instead of the CV threshold"),
    "plot1": replace(BASE, name="1-tile plots", plot_tiles=1, note="survey plot = one tile (no label copying)"),
    "mil": replace(BASE, name="plot-MIL labels", labels="plot-mil", note="2x2-tile plots as bags, native GSD"),
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
F2, F2P2 = VARIANTS["f2"], VARIANTS["f2-p2"]
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
    "f2-p2-mil": replace(F2P2, name="GSD x2, 2x2 plots, plot-MIL", labels="plot-mil"),
    # the same ground resolutions through the library (tile.gsd_m at tile, bundle gsd at predict)
    "lib-f2": replace(F2, name="lib GSD x2", lib_gsd=True, note="tile.gsd_m = 2 x native, 1-tile plots"),
    "lib-f2-p2": replace(F2P2, name="lib GSD x2, 2x2 plots", lib_gsd=True),
    "lib-f2-p2-mil": replace(F2P2, name="lib GSD x2, 2x2 plots, plot-MIL", lib_gsd=True, labels="plot-mil"),
    "lib-f1.5": replace(VARIANTS["f1.5"], name="lib GSD x1.5", lib_gsd=True,
                        note="tile.gsd_m = 1.5 x native, 1-tile plots"),
    "lib-f2-tta": replace(F2, name="lib GSD x2 + TTA", lib_gsd=True, tta=True),
    **{f"lib-f2-ft{n}": replace(F2, name=f"lib GSD x2 + fine-tune last {n} stage(s)", lib_gsd=True, mode="finetune",
                                trainable_blocks=n, epochs=10, lr=3e-4, note=f"train.trainable_blocks={n}, 10 epochs")
       for n in (1, 2)},
})
# the default set runs in ~6-9 min on 2 busy CPU cores (the native-resolution baseline is most of it);
# `--variants all` runs every variant (~45 min: fine-tuning and 320-px inputs on CPU)
DEFAULT_VARIANTS = "baseline,thr0.5,f2,f2-thr0.5,f3,f2-stride2,f2-tta"


# ------------------------------------------------------------------------------------- pipeline

def lib_gsd_m(v: Variant, frames: list[rf.Frame]) -> float | None:
    """tile.gsd_m of a lib_gsd variant: one value for every fold, as a user sets one per project
    (the frames' GSDs differ by ~1 %: 3.38 / 3.38 / 3.41 mm)."""
    return v.factor * float(np.median([f.gsd_m for f in frames])) if v.lib_gsd else None


def map_tile_px(wf: rf.Working, gsd_m: float | None, tolerance: float) -> int:
    """Tile edge in the mapped frame's px, by predict's rule (`_tile_px` in spurgemap/predict/stage.py):
    a bundle of tiles at gsd_m (tile records round it to the micrometre) maps a frame of GSD g with
    tiles of round(250 x gsd_m / g) px, or 250 px within predict.gsd_tolerance."""
    if gsd_m is None:
        return TILE_PX
    ratio = wf.gsd_m / round(gsd_m, 6)
    return TILE_PX if abs(ratio - 1) <= tolerance else max(round(TILE_PX / ratio), 8)


def _cfg(v: Variant, args: argparse.Namespace, gsd_m: float | None, **extra: Any) -> Any:
    from spurgemap.config import load_config

    over: dict[str, Any] = {"seed": args.seed, "train.mode": v.mode, "train.input_size": v.input_size,
                            "train.epochs": v.epochs, "train.threads": args.threads, "train.labels": v.labels,
                            "train.group_column": "fold", "train.device": "cpu", "tile.threads": 2,
                            "tile.gsd_m": gsd_m, "predict.tta": v.tta, "predict.device": "cpu"}
    if v.lr:
        over["train.lr"] = v.lr
    if v.trainable_blocks is not None:
        over["train.trainable_blocks"] = v.trainable_blocks
    over.update({k: __import__("yaml").safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)} | extra)
    return load_config(overrides=over)


def _timed(timing: dict[str, float], stage: str, fn: Any, *a: Any) -> None:
    t0 = time.perf_counter()
    fn(*a)
    timing[stage] = timing.get(stage, 0) + time.perf_counter() - t0


def train_fold(v: Variant, train_frames: list[rf.Frame], wfs: dict[str, rf.Working], args: argparse.Namespace,
               fold_dir: Path, cfg: Any, timing: dict[str, float]) -> dict[str, Any]:
    """Survey, tile and train on the training frames; the model lands in fold_dir/run."""
    import geopandas as gpd

    from spurgemap.tile import TileInputs, run_tile
    from spurgemap.train import TrainInputs, run_train

    # survey on the training frames only; pick the first strip scheme that gives both classes per fold
    scheme, rows = None, []
    for sch in ("cols", "rows", "quadrants"):
        rows = [r for f in train_frames for r in rf.make_survey(wfs[f.fid], v.plot_tiles, v.survey_px,
                                                              args.present_fraction, sch)]
        if rf.fold_ok(rows):
            scheme = sch
            break
    if scheme is None:
        return {"error": "no strip scheme gives absent and present plots in both CV folds"}
    plots = fold_dir / "plots.geojson"
    if not plots.exists():
        gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{train_frames[0].epsg}").to_file(
            plots, driver="GeoJSON")
    info: dict[str, Any] = {"fold_scheme": scheme, "train_frames": [f.fid for f in train_frames],
                            "train_plots": len(rows),
                            "train_plots_present": sum(r["presence"] == "present" for r in rows)}
    tiles_dir, run_dir = fold_dir / "tiles", fold_dir / "run"
    if not (tiles_dir / "tiles.gpkg").exists():
        _timed(timing, "tile", run_tile, cfg,
               TileInputs([wfs[f.fid].tif for f in train_frames], plots, tiles_dir, overwrite=True))
    info["train_tiles"] = json.loads((tiles_dir / "summary.json").read_text())["tiles_per_site_and_class"]
    if not (run_dir / "model.spurge").exists():
        cache = fold_dir.parents[2] / "feature-cache"  # work/feature-cache, shared by every variant
        _timed(timing, "train", run_train, cfg, TrainInputs(tiles_dir, run_dir, overwrite=True, feature_cache=cache))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info.update({"cv_balanced_accuracy": metrics["balanced_accuracy"], "cv_roc_auc": metrics["validation"]["roc_auc"],
                 "threshold_cv": metrics["threshold"], "best_epoch": metrics["best_epoch"], "_metrics": metrics})
    return info


def predict_fold(v: Variant, wf: rf.Working, model: Path, maps: Path, args: argparse.Namespace,
                 gsd_m: float | None, timing: dict[str, float]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Map the held-out frame; returns prob (%), class, map cell and tile edge in working px.

    The map's cells are `stride` px of the working frame from its top-left corner (prob.tif's transform
    = the frame's x Affine.scale(stride)), the grid rf.cell_table() builds; checked here on the map."""
    import rasterio

    from spurgemap.predict import PredictInputs, run_predict

    tile = map_tile_px(wf, gsd_m, _cfg(v, args, gsd_m).predict.gsd_tolerance)
    if tile % v.stride_div:
        raise SystemExit(f"{v.name}: stride tile/{v.stride_div} does not divide the {tile}-px tile")
    stride = tile // v.stride_div
    name = wf.frame.fid
    if not (maps / f"{name}_prob.tif").exists():
        cfg = _cfg(v, args, gsd_m, **{"predict.stride_px": stride if v.stride_div > 1 else None})
        _timed(timing, "predict", run_predict, cfg, PredictInputs(wf.tif, model, maps, overwrite=True))
    with rasterio.open(maps / f"{name}_prob.tif") as ds:
        prob_pct, t = ds.read(1), ds.transform
    with rasterio.open(maps / f"{name}_class.tif") as ds:
        cls = ds.read(1)
    if not (abs(t.a / wf.transform.a - stride) < 1e-6 and abs(t.c - wf.transform.c) < 1e-6
            and abs(t.f - wf.transform.f) < 1e-6):
        raise SystemExit(f"{maps}: map cells of {t.a / wf.transform.a:g} px at ({t.c}, {t.f}), expected {stride} "
                         f"px at the frame's corner ({wf.transform.c}, {wf.transform.f})")
    return prob_pct, cls, stride, tile


def run_fold(v: Variant, test: rf.Frame, frames: list[rf.Frame], wfs: dict[str, rf.Working], args: argparse.Namespace,
             work: Path, timing: dict[str, float], orig_frames: dict[str, rf.Working]) -> dict[str, Any]:
    """Train on every frame but `test`, map `test`, score its cells. Trained models and maps are reused
    by variants that share them (keyed by the settings they depend on)."""
    train_frames = [f for f in frames if f.fid != test.fid]
    seed = "" if args.seed == 0 else f"_seed{args.seed}"
    fold_dir = work / "runs" / (v.train_key() + seed) / f"test-{test.fid}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    gsd_m = lib_gsd_m(v, frames)
    info = train_fold(v, train_frames, wfs, args, fold_dir, _cfg(v, args, gsd_m), timing)
    if "error" in info:
        return info
    metrics = info.pop("_metrics")
    wf = wfs[test.fid]
    maps = work / "maps" / (v.predict_key() + seed) / f"test-{test.fid}"
    prob_pct, cls, stride, tile = predict_fold(v, wf, fold_dir / "run" / "model.spurge", maps, args, gsd_m, timing)
    valid = prob_pct != 255
    cells = rf.cell_table(wf, stride)
    assert cells["cover"].shape == prob_pct.shape, (cells["cover"].shape, prob_pct.shape)
    y = (cells["cover"][valid] >= args.present_fraction).astype(int)
    pmap = prob_pct.astype(np.float64) / 100
    thr = metrics["threshold"] if v.threshold == "bundle" else float(v.threshold)
    pred = cls[valid].astype(int) if v.threshold == "bundle" else None
    # ExG: threshold chosen on the training frames' cells of the same grid
    exg_thr, tr_y, tr_s = rf.training_cells([wfs[f.fid] for f in train_frames], stride, args.present_fraction)
    if v.fuse_exg:
        # experiment (not in the library): mean of the model probability and an ExG probability from a
        # logistic fit on the training frames' cells; decision threshold 0.5
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression().fit(tr_s[:, None], tr_y)
        p_exg = lr.predict_proba(cells["exg"].reshape(-1, 1))[:, 1].reshape(cells["exg"].shape)
        pmap, thr, pred = 0.5 * pmap + 0.5 * p_exg, 0.5, None
    # the same figures on a common grid of --eval-cell-px original pixels, whatever the variant's
    # resolution and stride (maps aggregated by area-weighted mean probability)
    orig, ep = orig_frames[test.fid], args.eval_cell_px
    cprob, cok = rf.to_common(pmap, valid, stride * test.width / wf.cover.shape[1], ep, orig.cover.shape)
    cc, full = rf.cell_table(orig, ep), rf.full_cells(orig.cover.shape, ep)
    cy = (cc["cover"][full][cok.ravel()] >= args.present_fraction).astype(int)
    exg_thr2, _, _ = rf.training_cells([orig_frames[f.fid] for f in train_frames], ep, args.present_fraction)
    info["common"] = {"cell_m": ep * test.gsd_m, "exg_threshold": exg_thr2,
                      **rf.graded(cy, cprob[cok], thr, cc["exg"][full][cok.ravel()], exg_thr2)}
    info.update({"threshold": thr, "exg_threshold": exg_thr, "cell_m": stride * wf.gsd_m, "tile_m": tile * wf.gsd_m,
                 "tile_gsd_m": gsd_m, "cells": int(valid.sum()), "cells_nodata": int((~valid).sum()),
                 **rf.graded(y, pmap[valid], thr, cells["exg"][valid], exg_thr, pred)})
    return info


def run_variant(v: Variant, frames: list[rf.Frame], args: argparse.Namespace, work: Path,
                wf_cache: dict[float, dict[str, rf.Working]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    for factor in (v.frame_factor, 1.0):
        if factor not in wf_cache:
            wf_cache[factor] = {f.fid: rf.working_frame(f, factor, work) for f in frames}
    per_frame = {}
    for test in frames:
        log.info("variant %s: held-out frame %s", v.name, test.fid)
        per_frame[test.fid] = run_fold(v, test, frames, wf_cache[v.frame_factor], args, work, timing,
                                       wf_cache[1.0])
    ok = [r for r in per_frame.values() if "error" not in r]
    mean, pooled = rf.summarize(ok)
    cmean, cpooled = rf.summarize([r["common"] for r in ok])

    def public(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (public(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}

    return {"variant": asdict(v), "per_frame": {k: public(r) for k, r in per_frame.items()},
            "mean": mean, "pooled": pooled, "common_mean": cmean, "common_pooled": cpooled,
            "seconds_new_work": round(time.perf_counter() - t0, 1),
            "stage_seconds": {k: round(s, 1) for k, s in timing.items()}}


# ------------------------------------------------------------------------------------- main

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
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE config override of every run (own --out)")
    args = p.parse_args(argv)
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:14s} {v.name}: {v.describe()}")
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
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frames = rf.read_frames(args.data, args)
    for f in frames:
        log.info("frame %s: %dx%d, GSD %.2f mm (%.1f m AGL, %.2f mm focal, %.2f mm sensor), EPSG:%d, footprint "
                 "%.1f x %.1f m", f.fid, f.width, f.height, f.gsd_m * 1000, f.exif["relative_altitude_m"],
                 f.exif["focal_mm"], f.exif["sensor_width_mm"], f.epsg, f.width * f.gsd_m, f.height * f.gsd_m)
    results, wf_cache = [], {}
    for n in names:
        res = run_variant(VARIANTS[n], frames, args, work, wf_cache)
        res["key"] = n
        results.append(res)
        m = res["mean"]
        print(f"[{n}] mean model BA {rf.fmt(m['model_balanced_accuracy'])} AUC {rf.fmt(m['model_roc_auc'])}"
              f" | ExG BA {rf.fmt(m['exg_balanced_accuracy'])} AUC {rf.fmt(m['exg_roc_auc'])}"
              f" | {res['seconds_new_work']:.0f} s", flush=True)
    total = time.perf_counter() - t0
    text = ("Per map cell (the variant's own cells; truth: mask >= {pf:.0%} of the cell)\n\n"
            + rf.table(results, frames) + "\n\nOn the common grid of {ep} original px ({m:.2f} m; maps "
            "aggregated by area-weighted mean probability)\n\n" + rf.table(results, frames, "common")
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
