"""Tiling throughput and memory on a generated orthomosaic of >= 0.5 gigapixel.

    python benchmarks/tile_bench.py [--size 22400] [--workdir bench-out] [--keep] [--rounds 3]

Measured in one run, each in a fresh subprocess (so peak RSS is the stage's own):
  * baseline: a plain windowed rasterio read of exactly the tile windows (RGB + alpha), one Python
    thread with GDAL decoding blocks on all cores (GDAL_NUM_THREADS=ALL_CPUS), as the tiler does;
  * `run_tile` with 1 worker and with 2 workers (reads, masks, writes every tile GeoTIFF + index).
Prints tiles/s, megapixels/s, peak RSS and the ratio tile-throughput / plain-read throughput:
medians over interleaved rounds, with every round's ratio, since a shared 2-core machine is noisy.
Targets (issue #2): ratio >= 0.8, peak RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PLOT_M = 10.0


def _make_inputs(work: Path, size: int) -> tuple[Path, Path]:
    import geopandas as gpd
    import rasterio
    from shapely import box
    from shapely.affinity import rotate

    from spurgemap.config import DemoConfig
    from spurgemap.demo.sites import make_demo_data

    ortho = work / "data" / "sites" / "site01" / "ortho.tif"
    if not ortho.exists():
        t0 = time.perf_counter()
        make_demo_data(DemoConfig(sites=1, size_px=size, seed=1), work / "data")
        print(f"generated {size} x {size} px orthomosaic in {time.perf_counter() - t0:.0f} s", flush=True)
    with rasterio.open(ortho) as ds:
        left, bottom, right, top = ds.bounds
    # 10 m plots on a 12 m grid over the valid interior; every 7th plot rotated by 25 degrees
    geoms, ids = [], []
    step, margin = 12.0, 4.0
    y = top - margin - PLOT_M
    n = 0
    while y > bottom + margin:
        x = left + margin
        while x + PLOT_M < right - margin:
            g = box(x, y, x + PLOT_M, y + PLOT_M)
            geoms.append(rotate(g, 25) if n % 7 == 3 else g)
            ids.append(f"p{n}")
            n += 1
            x += step
        y -= step
    plots = work / "bench_plots.gpkg"
    gpd.GeoDataFrame({"site_id": "site01", "plot_id": ids, "presence": "absent"},
                     geometry=geoms, crs=ds.crs).to_file(plots)
    return ortho, plots


def _child(mode: str, ortho: Path, plots: Path, work: Path, workers: int) -> dict[str, float]:
    from spurgemap.config import load_config

    cfg = load_config(overrides={"tile.threads": workers})
    t0 = time.perf_counter()
    if mode == "read":
        n, px = _plain_read(cfg, ortho, plots)
    else:
        from spurgemap.tile import TileInputs, run_tile

        res = run_tile(cfg, TileInputs([ortho], plots, work / f"tiles_w{workers}", overwrite=True))
        n = res.n_tiles + sum(res.skipped.values())
        px = n * cfg.tile.tile_size_px**2
    seconds = time.perf_counter() - t0
    rss_mb = _peak_rss_mb()
    return {"tiles": n, "pixels": px, "seconds": seconds, "peak_rss_mb": rss_mb}


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss would inherit the parent's across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plain_read(cfg, ortho: Path, plots: Path) -> tuple[int, int]:
    """The same windows the tiler reads, read with rasterio and nothing else done to them."""
    import math

    import rasterio
    from rasterio.windows import Window

    from spurgemap.geo.raster import open_ortho
    from spurgemap.geo.vector import read_plots
    from spurgemap.tile.plan import plan_jobs
    from spurgemap.tile.survey import survey_from_frame

    info = open_ortho(ortho, cfg.tile.tile_size_px)
    layer = read_plots(plots)
    survey = survey_from_frame(layer.attributes, cfg.labels, str(plots))
    assert survey is not None
    plan = plan_jobs(cfg, [info], layer, survey)
    size = cfg.tile.tile_size_px
    n = px = 0
    with rasterio.Env(GDAL_CACHEMAX=cfg.tile.gdal_cache_mb * 1024 * 1024, GDAL_NUM_THREADS="ALL_CPUS"), \
            rasterio.open(ortho) as ds:
        inv = ~ds.transform
        for job in plan.jobs:
            for spec in job.frame.tiles:
                if spec.aligned:
                    win = Window(spec.col_off, spec.row_off, size, size)
                else:
                    cols, rows = zip(*(inv @ xy for xy in spec.footprint.exterior.coords[:4]), strict=False)
                    c0, r0 = math.floor(min(cols)) - 2, math.floor(min(rows)) - 2
                    win = Window(c0, r0, math.ceil(max(cols)) + 2 - c0, math.ceil(max(rows)) + 2 - r0)
                data = ds.read(window=win)
                n += 1
                px += size * size
                assert data.shape[0] == 4
    return n, px


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=22400, help="orthomosaic edge in px (22400 = 0.5 Gpx)")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each mode, interleaved; medians are printed")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "ORTHO", "PLOTS", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, ortho, plots, workers = args.child
        print(json.dumps(_child(mode, Path(ortho), Path(plots), args.workdir, int(workers))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    ortho, plots = _make_inputs(args.workdir, args.size)
    with open(ortho, "rb") as fh:  # warm the page cache so neither run pays for the disk
        while fh.read(64 << 20):
            pass
    modes = [("plain read", "read", 1), ("tile 1 worker", "tile", 1), ("tile 2 workers", "tile", 2)]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in modes}
    # Rounds interleave the modes so a slow spell on a shared machine hits all of them alike;
    # each round's ratios use that round's own plain read.
    for _ in range(args.rounds):
        for name, mode, workers in modes:
            cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", mode, str(ortho),
                   str(plots), str(workers)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs[name].append(json.loads(out))
    gpx = args.size**2 / 1e9
    print(f"\northomosaic: {args.size} x {args.size} px = {gpx:.2f} gigapixel, RGBA, tiled 512, DEFLATE; "
          f"{args.rounds} round(s), medians")
    base = runs["plain read"]
    for name, rs in runs.items():
        rates = [r["pixels"] / r["seconds"] for r in rs]
        ratios = [rate / (b["pixels"] / b["seconds"]) for rate, b in zip(rates, base, strict=True)]
        r = rs[0]
        print(f"{name:>15}: {r['tiles']:6d} tiles in {statistics.median(x['seconds'] for x in rs):7.1f} s = "
              f"{statistics.median(x['tiles'] / x['seconds'] for x in rs):7.1f} tiles/s, "
              f"{statistics.median(rates) / 1e6:6.1f} Mpx/s, peak RSS {max(x['peak_rss_mb'] for x in rs):6.0f} MB, "
              f"ratio to plain read {statistics.median(ratios):.2f} (rounds: "
              f"{', '.join(f'{q:.2f}' for q in ratios)})")
    if not args.keep:
        shutil.rmtree(args.workdir / "tiles_w1", ignore_errors=True)
        shutil.rmtree(args.workdir / "tiles_w2", ignore_errors=True)


if __name__ == "__main__":
    main()
