"""Frames, plot surveys, per-cell scores and tables for benchmarks/real_bench.py (see docs/real_bench.md).

Kept apart from the variants and the tile -> train -> predict pipeline so each file stays readable.
* ground resolution from the EXIF/XMP: GSD = relative altitude x sensor width / (focal length x
  image width); nadir view and flat ground assumed; sensor width from a small camera table
  (DJI FC220 = Mavic Pro, 1/2.3" sensor, 6.17 mm) or --sensor-width-mm;
* a projected CRS: the WGS 84 / UTM zone of the frame's GPS position (EPSG:326xx north); the frame
  is placed north-up with its centre at its GPS position moved east by i x --site-spacing-m, so the
  frames are separate, non-overlapping sites; the yaw is ignored (each frame is its own site);
* plots: a grid of square plots from the top-left corner; the survey's `fold` column (spatial strips
  alternating A/B) lets a frame with only absent plots take part in cross-validation.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Camera model (EXIF Model) -> sensor width in mm. FC220: DJI Mavic Pro, 1/2.3" CMOS, 6.17 x 4.55 mm;
# its 4000 x 2250 (16:9) pictures are a vertical crop of the 4000 x 3000 sensor, so the full width counts.
SENSOR_WIDTH_MM = {"FC220": 6.17, "FC330": 6.17, "FC300X": 6.17, "FC6310": 13.2, "L1D-20c": 13.2}


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


def training_cells(wfs: list[Working], stride: int, present_fraction: float
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """ExG threshold chosen on the training frames' full cells of a grid (never on the test frame),
    with their truth and ExG."""
    ys, ss = [], []
    for wf in wfs:
        c, full = cell_table(wf, stride), full_cells(wf.cover.shape, stride)
        ys.append((c["cover"][full] >= present_fraction).astype(int))
        ss.append(c["exg"][full])
    y, s = np.concatenate(ys), np.concatenate(ss)
    return best_threshold(y, s), y, s


def graded(y: np.ndarray, prob: np.ndarray, thr: float, exg: np.ndarray, exg_thr: float,
           pred: np.ndarray | None = None) -> dict[str, Any]:
    """Model and ExG scores on one grid, plus the raw values the pooled figures need."""
    pred = (prob >= thr).astype(int) if pred is None else pred
    exg_pred = (exg >= exg_thr).astype(int)
    return {"model": scores(y, pred, prob), "exg": scores(y, exg_pred, exg), "_y": y.tolist(),
            "_prob": prob.tolist(), "_pred": pred.tolist(), "_exg": exg.tolist(), "_exg_pred": exg_pred.tolist()}


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


def full_cells(shape: tuple[int, int], stride: int) -> np.ndarray:
    h, w = shape
    nr, nc = math.ceil(h / stride), math.ceil(w / stride)
    full = np.zeros((nr, nc), bool)
    full[: h // stride, : w // stride] = True
    return full


def summarize(ok: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
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

def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cell(m: dict[str, Any]) -> str:
    if m["balanced_accuracy"] is not None:
        return f"{fmt(m['balanced_accuracy'])}/{fmt(m['roc_auc'])}"
    if m["specificity"] is not None:
        return f"spec {fmt(m['specificity'])}"
    return f"sens {fmt(m['sensitivity'])}"


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
        row += [fmt(mn["model_balanced_accuracy"]), fmt(mn["model_roc_auc"]), fmt(mn["exg_balanced_accuracy"]),
                fmt(mn["exg_roc_auc"]), fmt(d),
                f"{_cell(po['model'])} ({_cell(po['exg'])})" if po else "-", f"{res['seconds_new_work']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
