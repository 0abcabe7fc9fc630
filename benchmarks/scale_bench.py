"""Campaign scaling: N demo orthomosaics through `predict` on 1 and 2 Dask workers, and the Dask
path's overhead for one orthomosaic against the in-process path.

    python benchmarks/scale_bench.py [--sites 4] [--size 4000] [--rounds 3] [--workdir bench-scale]

Rounds are interleaved (A B C D, A B C D, ...) and medians reported, because the machine may be
shared: A = campaign on 1 worker, B = campaign on 2 workers (speed-up = A / B), C = one
orthomosaic in process, D = the same orthomosaic as a one-task campaign on 1 worker (overhead =
D / C - 1; --overhead-ortho takes a larger one for C and D). Campaign times include starting and
stopping the LocalCluster: that is what a user waits for. The bundle is the default backbone with an
untrained head (speed does not depend on it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spurgemap.campaign import CampaignInputs, run_campaign
from spurgemap.config import DemoConfig, load_config
from spurgemap.demo.sites import make_demo_data
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.onnx import tile_onnx
from spurgemap.predict import PredictInputs, run_predict


def _bundle(path: Path) -> Path:
    if not path.exists():
        backbone, spec = create_backbone()
        model = SpurgeClassifier(backbone, spec.num_features).eval()
        graph = tile_onnx(model, 250, spec.input_size, list(spec.mean), list(spec.std))
        save_bundle(path, model, {
            "spurgemap_version": "bench", "backbone": spec.name, "input_size": spec.input_size,
            "mean": list(spec.mean), "std": list(spec.std), "class_names": ["no_spurge", "leafy_spurge"],
            "tile_size_px": 250, "gsd_m": 0.014, "threshold": 0.5}, onnx=graph)
    return path


def _fresh(call: str) -> None:
    code = ("from pathlib import Path; from spurgemap.config import load_config; "
            "from spurgemap.predict import PredictInputs, run_predict; "
            "from spurgemap.campaign import CampaignInputs, run_campaign; " + call)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("bench-scale"))
    ap.add_argument("--fresh", action="store_true", help="C and D each in a new process (imports included), "
                    "as a user runs them; otherwise in this warm process")
    ap.add_argument("--overhead-ortho", type=Path,
                    help="orthomosaic for C/D (default: the first demo site); campaigns map 1-10 Gpx sites, and "
                         "the Dask cost is fixed per campaign, so its share depends on the size")
    args = ap.parse_args()
    work = args.workdir
    data = work / f"data_{args.sites}x{args.size}"
    if not (data / "sites").exists():
        t0 = time.perf_counter()
        make_demo_data(DemoConfig(sites=args.sites, size_px=args.size, seed=5), data)
        print(f"generated {args.sites} sites of {args.size}^2 px in {time.perf_counter() - t0:.0f} s", flush=True)
    orthos = sorted((data / "sites").glob("*/ortho.tif"))
    bundle = _bundle(work / "bench.spurge")
    single = args.overhead_ortho or orthos[0]
    cfg = load_config()
    times: dict[str, list[float]] = {"A_1worker": [], "B_2workers": [], "C_inprocess_1": [], "D_dask_1": []}

    def timed(key: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        times[key].append(time.perf_counter() - t0)
        print(f"  {key}: {times[key][-1]:.1f} s", flush=True)

    def campaign(paths: list[Path], workers: int, out: str) -> None:
        res = run_campaign(cfg, CampaignInputs(paths, bundle, work / out, overwrite=True, workers=workers))
        assert not res.failed, res.failed

    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        timed("A_1worker", lambda: campaign(orthos, 1, "maps_a"))
        timed("B_2workers", lambda: campaign(orthos, 2, "maps_b"))
        if args.fresh:  # what a user waits for: each path in its own new process, imports included
            timed("C_inprocess_1", lambda: _fresh(
                f"run_predict(load_config(), PredictInputs(Path({str(single)!r}), Path({str(bundle)!r}), "
                f"Path({str(work / 'maps_c')!r}), overwrite=True))"))
            timed("D_dask_1", lambda: _fresh(
                f"run_campaign(load_config(), CampaignInputs([Path({str(single)!r})], Path({str(bundle)!r}), "
                f"Path({str(work / 'maps_d')!r}), overwrite=True, workers=1))"))
        else:
            timed("C_inprocess_1", lambda: run_predict(cfg, PredictInputs(single, bundle, work / "maps_c",
                                                                          overwrite=True)))
            timed("D_dask_1", lambda: campaign([single], 1, "maps_d"))
    a, b = (statistics.median(times[k]) for k in ("A_1worker", "B_2workers"))
    speedups = [x / y for x, y in zip(times["A_1worker"], times["B_2workers"], strict=True)]
    overheads = [d / c - 1 for c, d in zip(times["C_inprocess_1"], times["D_dask_1"], strict=True)]
    fixed = [d - c for c, d in zip(times["C_inprocess_1"], times["D_dask_1"], strict=True)]
    report = {
        "cores": os.cpu_count(), "sites": args.sites, "size_px": args.size, "rounds": args.rounds,
        "overhead_ortho": str(single), "fresh_processes": args.fresh,
        "median_seconds": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "all_seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup_2_vs_1_workers_median_of_ratios": round(statistics.median(speedups), 3),
        "speedup_2_vs_1_workers_ratio_of_medians": round(a / b, 3),
        "dask_overhead_single_ortho_median": round(statistics.median(overheads), 3),
        "dask_overhead_single_ortho_seconds_median": round(statistics.median(fixed), 2),
        "note": "interleaved rounds; campaign times include LocalCluster start/stop",
    }
    print(json.dumps(report, indent=2))
    (work / "scale_bench.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":  # Dask's spawned workers import this module: they must not run it
    main()
