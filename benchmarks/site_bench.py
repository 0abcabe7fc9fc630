"""Real multi-site benchmark (issue 22): spatial hold-out over many real sites, with bootstrap intervals.

Usage:
    python benchmarks/site_bench.py [--data DIR] [--out DIR] [--variants a,b] [--list]

Data (read in place, never copied): a folder of images with weed polygons (JSON) or PNG masks, one
site per image (benchmarks/site_data.py), default `../shared/realdata/paglab-uav-weed/tiles` (weed in
potato: the potato plants are green hard negatives). Each image becomes a GeoTIFF at an assumed GSD
(--gsd-m, 2 mm/px), with square plots of --plot-cells x --plot-cells map cells over its full cells,
present when the weed covers >= --present-fraction of the plot.

Hold-out: sites whose layout row is >= --test-from-row are the test block; a guard band of
--guard-rows rows before it is left out of training (no plant in both training and test). The
library runs as a user runs it: `tile` the training sites, `train` (cross-validation by site picks
the epoch, the context step, the calibration and the threshold), `predict` each test site. Every
map cell is scored against the truth (present: weed >= --present-fraction of the cell's image part):
balanced accuracy, precision and recall of present cells (from `_class.tif`), ROC-AUC and the
expected calibration error (from `_prob.tif`), pooled over the test sites with 95 % bootstrap
intervals over sites, and the excess-green index as a reference (ROC-AUC; its balanced accuracy
with a threshold fitted on the training sites' cells).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import site_data as sd  # a sibling module: `python benchmarks/site_bench.py` puts benchmarks/ on sys.path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata" / "paglab-uav-weed" / "tiles"
DEFAULT_OUT = REPO / "bench-out" / "site_bench"
CELL_PX = 250
log = logging.getLogger("site_bench")


@dataclass(frozen=True)
class Variant:
    name: str
    train: dict[str, Any] = field(default_factory=dict)  # config overrides for tile + train
    predict: dict[str, Any] = field(default_factory=dict)  # config overrides for predict only
    note: str = ""
    data: str = ""  # "" = the images as they are; "colour-norm" = each orthomosaic's colours standardised

    def train_key(self) -> str:
        key = "_".join(f"{k}={v}" for k, v in sorted(self.train.items())) or "defaults"
        return f"{self.data}_{key}" if self.data else key

    def predict_key(self) -> str:
        return self.train_key() + "".join(f"_{k}={v}" for k, v in sorted(self.predict.items()))


BEFORE = {"train.threshold_labels": "tile", "train.context": False, "train.calibration": "none",
          "train.group_by": "site"}
VARIANTS: dict[str, Variant] = {
    "before": Variant("before issue 22", BEFORE, note="tile-label threshold, no context or calibration, site folds"),
    "defaults": Variant("defaults", note="the library's defaults"),
    "site-folds": Variant("folds of single sites", {"train.group_by": "site"}),
    "no-context": Variant("no context step", {"train.context": False}),
    "no-calibration": Variant("no calibration", {"train.calibration": "none"}),
    "tile-labels-thr": Variant("threshold on tile labels", {"train.threshold_labels": "tile"}),
    "trusted-thr": Variant("threshold on trusted labels", {"train.threshold_labels": "trusted"},
                           note="absent tiles + each present plot by its likeliest tile"),
    "recall0.9": Variant("operating point recall=0.9", {"train.operating_point": "recall=0.9"}),
    "precision0.9": Variant("operating point precision=0.9", {"train.operating_point": "precision=0.9"}),
    "isotonic": Variant("isotonic calibration", {"train.calibration": "isotonic"}),
    "grid-blocks": Variant("folds by 2 x 5 blocks of the layout",
                           {"train.group_column": "block", "train.group_by": "site"},
                           note="cross-validation over the benchmark's own blocks of neighbouring sites"),
    "lite2": Variant("EfficientNet-Lite2 backbone", {"train.backbone": "tf_efficientnet_lite2"}),
    "tile-thr-no-cal": Variant("tile-label threshold, no calibration",
                               {"train.threshold_labels": "tile", "train.calibration": "none"}),
    "tile-thr-no-ctx": Variant("tile-label threshold, no context",
                               {"train.threshold_labels": "tile", "train.context": False}),
    "colour-norm": Variant("per-orthomosaic colour normalisation", data="colour-norm",
                           note="each site's channel mean/std matched to the training sites' pooled ones"),
}
DEFAULT_VARIANTS = "before,defaults,site-folds,no-context,trusted-thr"


def _cfg(args: argparse.Namespace, over: dict[str, Any]) -> Any:
    from spurgemap.config import load_config

    base = {"seed": args.seed, "train.device": "cpu", "predict.device": "cpu", "train.threads": args.threads}
    return load_config(overrides={**base, **over})


def prepare(args: argparse.Namespace, work: Path) -> tuple[list[sd.Site], dict[str, Path], dict[str, Any]]:
    sites = sd.read_sites(args.data)
    tifs, transforms = {}, {}
    for i, s in enumerate(sites):
        transforms[s.sid] = sd.site_transform(s, i, args.gsd_m, args.spacing_m)
        tifs[s.sid] = work / "sites" / s.sid / "ortho.tif"
        sd.write_site(s, tifs[s.sid], transforms[s.sid])
    return sites, tifs, transforms


def site_images(v: Variant, sites: list[sd.Site], train: list[sd.Site], tifs: dict[str, Path],
                transforms: dict[str, Any], work: Path) -> dict[str, Path]:
    """The orthomosaics a variant maps: as they are, or colour-normalised per orthomosaic.

    The target statistics come from the training sites only; a test site is standardised with its
    own pixels (unlabelled, the flight being mapped), so no label of the test block is used.
    """
    if not v.data:
        return tifs
    mean, std = sd.channel_stats([s.rgb for s in train])
    out = {}
    for s in sites:
        out[s.sid] = work / f"sites-{v.data}" / s.sid / "ortho.tif"
        sd.write_site(s, out[s.sid], transforms[s.sid], rgb=sd.match_colours(s.rgb, mean, std))
    return out


def split_sites(sites: list[sd.Site], args: argparse.Namespace) -> tuple[list[sd.Site], list[sd.Site], list[str]]:
    test = [s for s in sites if s.row >= args.test_from_row]
    guard = [s.sid for s in sites if args.test_from_row - args.guard_rows <= s.row < args.test_from_row]
    train = [s for s in sites if s.row < args.test_from_row - args.guard_rows]
    return train, test, guard


def train_variant(v: Variant, train: list[sd.Site], tifs: dict[str, Path], transforms: dict[str, Any],
                  args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, float]]:
    import geopandas as gpd

    from spurgemap.tile import TileInputs, run_tile
    from spurgemap.train import TrainInputs, run_train

    timing: dict[str, float] = {}
    base = work / (f"tiles-{v.data}" if v.data else "tiles")
    plots = base / "plots.geojson"
    if not plots.exists():
        rows = [p for s in train for p in sd.plots_of(s, transforms[s.sid], CELL_PX, args.plot_cells,
                                                      args.present_fraction)]
        base.mkdir(parents=True, exist_ok=True)
        gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{sd.EPSG}").to_file(plots, driver="GeoJSON")
    tiles = base / "set"
    if not (tiles / "tiles.gpkg").exists():
        t0 = time.perf_counter()
        run_tile(_cfg(args, {}), TileInputs([tifs[s.sid] for s in train], plots, tiles, overwrite=True))
        timing["tile"] = time.perf_counter() - t0
    run = work / "runs" / v.train_key()
    if not (run / "model.spurge").exists():
        t0 = time.perf_counter()
        run_train(_cfg(args, v.train), TrainInputs(tiles, run, overwrite=True, feature_cache=work / "feature-cache"))
        timing["train"] = time.perf_counter() - t0
    return run, timing


def predict_sites(v: Variant, run: Path, test: list[sd.Site], tifs: dict[str, Path], args: argparse.Namespace,
                  work: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    import rasterio

    from spurgemap.model.bundle import read_bundle
    from spurgemap.predict import PredictInputs, run_predict

    bundle = read_bundle(run / "model.spurge")
    cfg = _cfg(args, {**v.train, **v.predict})
    maps_root = work / "maps" / v.predict_key()
    t0 = time.perf_counter()
    out = {}
    for s in test:
        maps = maps_root / s.sid
        if not (maps / "ortho_class.tif").exists():
            run_predict(cfg, PredictInputs(tifs[s.sid], bundle, maps, overwrite=True))
        with rasterio.open(maps / "ortho_prob.tif") as ds:
            prob = ds.read(1)
        with rasterio.open(maps / "ortho_class.tif") as ds:
            cls = ds.read(1)
        out[s.sid] = (prob, cls)
    return out, time.perf_counter() - t0


def pooled_scores(y: np.ndarray, pred: np.ndarray, prob: np.ndarray, exg: np.ndarray, exg_thr: float
                  ) -> dict[str, float | None]:
    from sklearn.metrics import balanced_accuracy_score, precision_score, recall_score, roc_auc_score

    from spurgemap.model.calibration import reliability

    both = len(set(y.tolist())) == 2
    out: dict[str, float | None] = {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else None,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)) if y.any() else None,
        "roc_auc": float(roc_auc_score(y, prob)) if both else None,
        "ece": float(reliability(y, prob)["ece"]),
        "exg_roc_auc": float(roc_auc_score(y, exg)) if both else None,
        "exg_balanced_accuracy": float(balanced_accuracy_score(y, exg >= exg_thr)) if both else None,
    }
    for r in (0.8, 0.9):  # precision where the map's own ranking reaches recall r (oracle threshold)
        if both:
            t = np.quantile(prob[y == 1], 1 - r, method="lower")
            out[f"precision_at_recall_{r}"] = float(y[prob >= t].mean())
    return out


def score(sites: list[sd.Site], maps: dict[str, tuple[np.ndarray, np.ndarray]], args: argparse.Namespace,
          exg_thr: float) -> dict[str, Any]:
    per_site, cells = {}, []
    for s in sites:
        prob_pct, cls = maps[s.sid]
        cover, exg = sd.cell_truth(s, CELL_PX)
        ok = prob_pct != 255
        y = (cover[ok] >= args.present_fraction).astype(int)
        rows = (y, cls[ok].astype(int), prob_pct[ok] / 100.0, exg[ok])
        cells.append(rows)
        per_site[s.sid] = {"cells": int(ok.sum()), "present": int(y.sum()),
                           "accuracy": float((rows[1] == y).mean())}
    cat = [np.concatenate(c) for c in zip(*cells, strict=True)]
    pooled = pooled_scores(*cat, exg_thr)
    rng = np.random.default_rng(args.seed)
    boots: dict[str, list[float]] = {k: [] for k in pooled}
    for _ in range(args.bootstrap):
        pick = rng.integers(0, len(cells), len(cells))
        b = pooled_scores(*[np.concatenate([cells[i][j] for i in pick]) for j in range(4)], exg_thr)
        for k, val in b.items():
            if val is not None:
                boots[k].append(val)
    ci = {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in boots.items() if v}
    return {"pooled": pooled, "ci95": ci, "per_site": per_site, "cells": len(cat[0]),
            "present_cells": int(cat[0].sum()), "_cells": cells}


def paired(a: list[tuple[np.ndarray, ...]], b: list[tuple[np.ndarray, ...]], args: argparse.Namespace,
           exg_thr: float) -> dict[str, list[float]]:
    """95 % bootstrap interval of (b - a) per metric, both scored on the same resampled sites."""
    rng = np.random.default_rng(args.seed + 1)
    out: dict[str, list[float]] = {}
    for _ in range(args.bootstrap):
        pick = rng.integers(0, len(a), len(a))
        sa = pooled_scores(*[np.concatenate([a[i][j] for i in pick]) for j in range(4)], exg_thr)
        sb = pooled_scores(*[np.concatenate([b[i][j] for i in pick]) for j in range(4)], exg_thr)
        for k, va in sa.items():
            vb = sb.get(k)
            if va is not None and vb is not None:
                out.setdefault(k, []).append(vb - va)
    return {k: [float(np.percentile(v, 2.5)), float(np.mean(v)), float(np.percentile(v, 97.5))]
            for k, v in out.items()}


def picture(path: Path, sites: list[sd.Site], maps: dict[str, tuple[np.ndarray, np.ndarray]], title: str,
            n: int = 12) -> None:
    """Held-out maps over the imagery: present cells shaded by probability, called cells outlined in
    magenta, the weed truth outlined in yellow (potato outlines, the hard negatives, in cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = sorted(sites, key=lambda s: -s.weed.mean())[:n]
    cols = 4
    fig, axes = plt.subplots((len(pick) + cols - 1) // cols, cols, figsize=(cols * 3.2, 3.4 * ((len(pick) + 3) // 4)))
    for ax, s in zip(np.ravel(axes), pick, strict=False):
        prob, cls = maps[s.sid]
        h, w = s.weed.shape
        ax.imshow(s.rgb)
        ok = prob != 255
        p = np.where(ok, prob / 100.0, np.nan)
        extent = (0, prob.shape[1] * CELL_PX, prob.shape[0] * CELL_PX, 0)
        ax.imshow(np.ma.masked_invalid(p), cmap="magma", alpha=0.35, vmin=0, vmax=1, extent=extent)
        called = np.where(ok, cls == 1, False).astype(float)
        ax.contour(np.kron(called, np.ones((CELL_PX, CELL_PX)))[:h, :w], levels=[0.5], colors="magenta",
                   linewidths=1.5)
        ax.contour(s.weed.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
        if s.other is not None and s.other.any():
            ax.contour(s.other.astype(float), levels=[0.5], colors="cyan", linewidths=0.4)
        ax.set_title(f"{s.sid} (weed {100 * s.weed.mean():.1f} %)", fontsize=8)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis("off")
    for ax in np.ravel(axes)[len(pick):]:
        ax.axis("off")
    fig.suptitle(f"{title}: held-out maps (shade: probability; magenta: called present; yellow: weed truth; "
                 "cyan: potato)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def exg_threshold(train: list[sd.Site], args: argparse.Namespace) -> float:
    """ExG threshold maximising balanced accuracy on the training sites' cells."""
    from sklearn.metrics import roc_curve

    ys, xs = [], []
    for s in train:
        cover, exg = sd.cell_truth(s, CELL_PX)
        ys.append((cover.ravel() >= args.present_fraction).astype(int))
        xs.append(exg.ravel())
    fpr, tpr, thr = roc_curve(np.concatenate(ys), np.concatenate(xs))
    return float(thr[int(np.argmax(tpr - fpr))])


def fmt(d: dict[str, Any], key: str) -> str:
    v, ci = d["pooled"].get(key), d["ci95"].get(key)
    return "-" if v is None else f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.3f}"


def table(results: list[dict[str, Any]]) -> str:
    keys = ["balanced_accuracy", "precision", "recall", "roc_auc", "ece", "precision_at_recall_0.8",
            "exg_roc_auc", "exg_balanced_accuracy"]
    head = "| variant | " + " | ".join(k.replace("_", " ") for k in keys) + " | threshold | s |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for r in results:
        lines.append(f"| {r['variant']['name']} | " + " | ".join(fmt(r, k) for k in keys)
                     + f" | {r['threshold']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated of {','.join(VARIANTS)}")
    p.add_argument("--list", action="store_true")
    p.add_argument("--gsd-m", type=float, default=0.002, help="assumed ground resolution (m/px)")
    p.add_argument("--spacing-m", type=float, default=100.0, help="distance between neighbouring sites")
    p.add_argument("--plot-cells", type=int, default=1, help="plot edge in map cells")
    p.add_argument("--present-fraction", type=float, default=0.02)
    p.add_argument("--test-from-row", type=int, default=13)
    p.add_argument("--guard-rows", type=int, default=1)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:16s} {v.name}: {v.train} {v.predict} {v.note}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("spurgemap", "rasterio", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.out / f"work-p{args.plot_cells}-s{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    sites, tifs, transforms = prepare(args, work)
    train, test, guard = split_sites(sites, args)
    log.info("%d sites: %d training, %d guard band (left out), %d test", len(sites), len(train), len(guard),
             len(test))
    exg_thr = exg_threshold(train, args)
    results = []
    for name in args.variants.split(","):
        v = VARIANTS[name]
        t0 = time.perf_counter()
        v_tifs = site_images(v, sites, train, tifs, transforms, work)
        run, timing = train_variant(v, train, v_tifs, transforms, args, work)
        maps, t_pred = predict_sites(v, run, test, v_tifs, args, work)
        res = score(test, maps, args, exg_thr)
        meta = json.loads((run / "metrics.json").read_text())
        res.update({"key": name, "variant": asdict(v), "threshold": meta["threshold"],
                    "train_metrics": {k: meta.get(k) for k in ("calibration", "context", "operating_point")},
                    "seconds": time.perf_counter() - t0, "timing": {**timing, "predict": t_pred}})
        results.append(res)
        picture(args.out / f"maps-{name}-p{args.plot_cells}.png", test, maps, v.name)
        print(f"[{name}] BA {fmt(res, 'balanced_accuracy')} P {fmt(res, 'precision')} R {fmt(res, 'recall')} "
              f"AUC {fmt(res, 'roc_auc')} ECE {fmt(res, 'ece')}", flush=True)
    for r in results[1:]:
        r["vs_first"] = paired(results[0]["_cells"], r["_cells"], args, exg_thr)
    text = table(results) + "\n\nPaired differences against the first variant (95 % bootstrap over sites):\n\n"
    text += "\n".join(f"- {r['variant']['name']}: " + ", ".join(
        f"{k} {v[1]:+.3f} [{v[0]:+.3f}, {v[2]:+.3f}]" for k, v in r["vs_first"].items()
        if k in ("balanced_accuracy", "precision", "recall", "roc_auc", "ece")) for r in results[1:])
    for r in results:
        r.pop("_cells")
    print(text)
    summary = {"data": str(args.data), "args": {k: str(v) for k, v in vars(args).items()},
               "sites": {"train": len(train), "guard": guard, "test": [s.sid for s in test]},
               "exg_threshold": exg_thr, "results": results, "table": text}
    (args.out / f"results-p{args.plot_cells}-s{args.seed}.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
