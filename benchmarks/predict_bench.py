"""Whole-orthomosaic mapping throughput and memory, measured in one run.

    python benchmarks/predict_bench.py [--small 10000] [--large 32000] [--workdir bench-predict]

Generates demo orthomosaics of --small^2 (0.1 gigapixel) and --large^2 (>= 1 gigapixel) pixels, builds a
default-backbone bundle (tf_efficientnet_lite0, ImageNet weights, untrained head: speed does not depend
on the head), then runs, each in a fresh subprocess so peak RSS (VmHWM) is the stage's own:
  * read-only: the tile stream alone (windowed reads + validity), no model;
  * model-only: the predictor on batches already in memory (real tiles of the orthomosaic);
  * end to end: `spurgemap predict` (reader thread + inference + all map outputs).
Targets (issue #4): end-to-end >= 0.9 x min(model-only, read-only); peak RSS <= 1.5 GB and not growing
with size; >= 55 tiles/s end to end on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _bundle(path: Path) -> Path:
    if path.exists():
        return path
    from spurgemap.model.backbones import create_backbone
    from spurgemap.model.classifier import SpurgeClassifier, save_bundle
    from spurgemap.model.onnx import tile_onnx

    backbone, spec = create_backbone()
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    graph = tile_onnx(model, 250, spec.input_size, list(spec.mean), list(spec.std))
    save_bundle(path, model, {
        "spurgemap_version": "bench", "backbone": spec.name, "input_size": spec.input_size, "mean": list(spec.mean),
        "std": list(spec.std), "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 250,
        "gsd_m": 0.014, "threshold": 0.5}, onnx=graph)
    return path


def _ortho(work: Path, size: int) -> Path:
    from spurgemap.config import DemoConfig
    from spurgemap.demo.sites import make_demo_data

    out = work / f"ortho_{size}"
    path = out / "sites" / "site01" / "ortho.tif"
    if not path.exists():
        t0 = time.perf_counter()
        make_demo_data(DemoConfig(sites=1, size_px=size, seed=2), out)
        print(f"generated {size} x {size} px in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _child(mode: str, ortho: Path, bundle: Path, work: Path) -> dict[str, float]:
    from spurgemap.config import load_config
    from spurgemap.geo.raster import OrthoReader, gdal_session, open_ortho
    from spurgemap.predict.stream import Grid, TileStream

    cfg = load_config()
    t0 = time.perf_counter()
    if mode == "e2e":
        from spurgemap.predict import PredictInputs, run_predict

        res = run_predict(cfg, PredictInputs(ortho, bundle, work / f"maps_{ortho.parent.parent.parent.name}",
                                             overwrite=True))
        return {"tiles": res.predicted, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                "loop_seconds": res.seconds}
    with gdal_session(cfg.tile.gdal_cache_mb):
        info = open_ortho(ortho, 250)
        grid = Grid(info.width, info.height, 250, 250)
        keep = np.ones((grid.tile_rows, grid.tile_cols), bool)
        stream = TileStream(OrthoReader(info), grid, cfg.tile.min_valid_fraction, keep, (0, 0), 128,
                            cfg.tile.gdal_cache_mb)
        if mode == "read":
            n = 0
            t0 = time.perf_counter()
            with stream:
                for batch in stream.batches(32):
                    n += len(batch)
            return {"tiles": n, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}
        from spurgemap.model.bundle import read_bundle
        from spurgemap.predict.infer import make_predictor

        predict, _ = make_predictor(read_bundle(bundle), cfg.predict, 250)
        batches = []
        with stream:
            for batch in stream.batches(32):
                batches.append(np.stack([b.pixels for b in batch]))
                if len(batches) == 30:
                    break
        predict(batches[0])  # warm-up
        t0 = time.perf_counter()
        for b in batches[1:]:
            predict(b)
        n = sum(len(b) for b in batches[1:])
        return {"tiles": n, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--large", type=int, default=32000)
    ap.add_argument("--workdir", type=Path, default=Path("bench-predict"))
    ap.add_argument("--child", nargs=3, metavar=("MODE", "ORTHO", "BUNDLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, ortho, bundle = args.child
        print(json.dumps(_child(mode, Path(ortho), Path(bundle), args.workdir)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = _bundle(args.workdir / "lite0.spurge")
    small, large = _ortho(args.workdir, args.small), _ortho(args.workdir, args.large)
    results = {}
    for name, mode, ortho in [("read-only", "read", large), ("model-only", "model", large),
                              ("end to end", "e2e", large), ("end to end (small)", "e2e", small)]:
        with open(ortho, "rb") as fh:  # page cache warm for every run alike
            while fh.read(64 << 20):
                pass
        cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", mode, str(ortho), str(bundle)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[name] = json.loads(out)
        r = results[name]
        print(f"{name:>20}: {r['tiles']:6d} tiles in {r['seconds']:7.1f} s = {r['tiles'] / r['seconds']:6.1f} "
              f"tiles/s, peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
    rate = {k: v["tiles"] / v["seconds"] for k, v in results.items()}
    bound = min(rate["read-only"], rate["model-only"])
    print(f"\nlarge: {args.large}^2 = {args.large**2 / 1e9:.2f} Gpx; "
          f"small: {args.small}^2 = {args.small**2 / 1e9:.2f} Gpx")
    print(f"end to end / min(model-only, read-only) = {rate['end to end'] / bound:.2f} (target >= 0.9)")
    print(f"end to end {rate['end to end']:.1f} tiles/s (target >= 55 on 2 CPU cores); "
          f"peak RSS {results['end to end (small)']['peak_rss_mb']:.0f} MB at {args.small**2 / 1e9:.2f} Gpx, "
          f"{results['end to end']['peak_rss_mb']:.0f} MB at {args.large**2 / 1e9:.2f} Gpx (target <= 1500)")


if __name__ == "__main__":
    main()
