"""Whole-orthomosaic mapping throughput and memory, measured in one run.

    python benchmarks/predict_bench.py [--small 10000] [--large 0] [--rounds 3] [--workdir bench-predict]
                                      [--int8]

Generates demo orthomosaics of --small^2 (0.1 gigapixel) and, if --large > 0, --large^2 (32000: >= 1
gigapixel; slow on 2 cores, so optional) pixels, builds a default-backbone bundle (tf_efficientnet_lite0,
ImageNet weights, untrained head: speed does not depend on the head), then runs, each in a fresh
subprocess so peak RSS (VmHWM) is the stage's own, --rounds rounds of, interleaved:
  * model-only: the predictor on >= 5000 tiles already in memory (real tiles of the orthomosaic);
  * end to end: `spurgemap predict` (reader thread + collar fill + inference + all map outputs);
  * model-only int8 (with --int8): the same graph statically quantised (QDQ, per-channel), calibrated on
    tiles of another orthomosaic, with its cell agreement against fp32.
Ratios use the median of the rounds, so a machine shared with other jobs skews them less than rates.
Targets (issue #14): end-to-end >= 0.9 x model-only; peak RSS flat with size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
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


def _ortho(work: Path, size: int, seed: int = 2) -> Path:
    from spurgemap.config import DemoConfig
    from spurgemap.demo.sites import make_demo_data

    out = work / f"ortho_{size}" if seed == 2 else work / f"ortho_{size}_seed{seed}"
    path = out / "sites" / "site01" / "ortho.tif"
    if not path.exists():
        t0 = time.perf_counter()
        make_demo_data(DemoConfig(sites=1, size_px=size, seed=seed), out)
        print(f"generated {size} x {size} px in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _int8_graph(graph: bytes | None, work: Path) -> bytes:
    """Static int8 QDQ, per-channel weights, calibrated on tiles of a *different* demo orthomosaic."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "lite0_int8.onnx"
    if out.exists():
        return out.read_bytes()
    assert graph is not None
    fp32, pre = work / "lite0_fp32.onnx", work / "lite0_pre.onnx"
    fp32.write_bytes(graph)
    quant_pre_process(str(fp32), str(pre))
    from spurgemap.geo.raster import OrthoReader, open_ortho

    calib = _ortho(work, 2600, seed=11)
    info = open_ortho(calib, 250)
    with OrthoReader(info) as reader:
        tiles = [reader.read(c * 250, r * 250, 250, 250) for r in range(2, 8) for c in range(2, 8)]
    data = [rgb.transpose(1, 2, 0)[None].copy() for rgb, valid, _ in tiles if valid.all()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"tiles": d} for d in data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return out.read_bytes()


def _child(mode: str, ortho: Path, bundle: Path, work: Path, backend: str) -> dict[str, float]:
    from spurgemap.config import load_config
    from spurgemap.geo.raster import OrthoReader, gdal_session, open_ortho
    from spurgemap.predict.stream import Grid, TileStream

    cfg = load_config(overrides={"predict.backend": backend})
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "e2e":
        from spurgemap.predict import PredictInputs, run_predict

        res = run_predict(cfg, PredictInputs(ortho, bundle, work / f"maps_{ortho.parent.parent.parent.name}",
                                             overwrite=True))
        return {"tiles": res.predicted, "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
                "loop_seconds": res.seconds, "cpu_seconds": time.process_time() - c0}
    with gdal_session(cfg.tile.gdal_cache_mb):
        info = open_ortho(ortho, 250)
        grid = Grid(info.width, info.height, 250, 250)
        keep = np.ones((grid.tile_rows, grid.tile_cols), bool)
        stream = TileStream(OrthoReader(info), grid, cfg.predict.min_valid_fraction, keep, (0, 0), 128,
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

        b = read_bundle(bundle)
        if mode == "int8":
            b = replace(b, onnx=_int8_graph(b.onnx, work))
        predict, _ = make_predictor(b, cfg.predict, 250)
        batches = []
        with stream:
            for batch in stream.batches(32):
                batches.append(np.stack([b.pixels for b in batch]))
                if len(batches) == 30:
                    break
        predict(batches[0])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        n, probs = 0, []
        while n < 5000:  # the same 30 batches again: the model's speed does not depend on the pixels
            for b in batches[1:]:
                p = predict(b)
                if len(probs) < len(batches) - 1:
                    probs.append(p[:, 0])
                n += len(b)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        np.save(work / f"probs_{mode}.npy", np.concatenate(probs))
        return {"tiles": n, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "cpu_seconds": cpu}


def _run(mode: str, ortho: Path, bundle: Path, work: Path, backend: str) -> dict[str, float]:
    with open(ortho, "rb") as fh:  # page cache warm for every run alike
        while fh.read(64 << 20):
            pass
    cmd = [sys.executable, __file__, "--workdir", str(work), "--backend", backend, "--child", mode, str(ortho),
           str(bundle)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    r["rate"] = r["tiles"] / r["seconds"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--large", type=int, default=0, help="0: skip the >= 1 gigapixel run (32000 for it)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--int8", action="store_true", help="also time a static int8 graph (and its agreement)")
    ap.add_argument("--workdir", type=Path, default=Path("bench-predict"))
    ap.add_argument("--backend", default="auto", help="predict.backend: auto (OpenVINO on CPU), onnx, openvino")
    ap.add_argument("--bundle", type=Path, help="a trained 250-px bundle (int8 agreement means more on one)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "ORTHO", "BUNDLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, ortho, bundle = args.child
        print(json.dumps(_child(mode, Path(ortho), Path(bundle), args.workdir, args.backend)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or _bundle(args.workdir / "lite0.spurge")
    small = _ortho(args.workdir, args.small)
    modes = [("model-only", "model", small), ("end to end", "e2e", small)]
    if args.int8:
        modes.append(("model-only int8", "int8", small))
    if args.large:
        modes.append(("end to end large", "e2e", _ortho(args.workdir, args.large)))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in modes}
    for k in range(args.rounds):  # interleaved, so load from other jobs hits every mode alike
        for name, mode, ortho in modes:
            r = _run(mode, ortho, bundle, args.workdir, args.backend)
            runs[name].append(r)
            print(f"round {k + 1} {name:>16}: {r['tiles']:6d} tiles in {r['seconds']:7.1f} s = {r['rate']:6.1f} "
                  f"tiles/s, peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
    med = {name: float(np.median([r["rate"] for r in rs])) for name, rs in runs.items()}
    print(f"\nsmall: {args.small}^2 = {args.small**2 / 1e9:.2f} Gpx; medians of {args.rounds} interleaved rounds")
    print(_ratio(runs, "end to end"))
    if args.int8:
        p32, p8 = np.load(args.workdir / "probs_model.npy"), np.load(args.workdir / "probs_int8.npy")
        print(f"int8 / fp32 model-only = {med['model-only int8'] / med['model-only']:.2f} (adopt if >= 1.3); "
              f"class agreement at 0.5 {((p32 >= 0.5) == (p8 >= 0.5)).mean():.4f}, "
              f"max |dp| {np.abs(p32 - p8).max():.4f} over {len(p32)} tiles")
    rss = {"small": max(r["peak_rss_mb"] for r in runs["end to end"])}
    if args.large:
        big = runs["end to end large"]
        rss["large"] = max(r["peak_rss_mb"] for r in big)
        print(f"large: {args.large}^2 = {args.large**2 / 1e9:.2f} Gpx: end to end {med['end to end large']:.1f} "
              f"tiles/s, {_ratio(runs, 'end to end large')}")
    print(f"peak RSS end to end: {rss} MB (flat with size: target)")
    _cpu_bound(runs, "end to end large" if args.large else "end to end")


def _ratio(runs: dict[str, list[dict[str, float]]], e2e: str) -> str:
    """End to end against model-only: medians, each round's ratio, and the mapping loop alone."""
    model = float(np.median([r["rate"] for r in runs["model-only"]]))
    ends = runs[e2e]
    rounds = [round(e["rate"] / m["rate"], 2) for e, m in zip(ends, runs["model-only"], strict=True)]
    loop = float(np.median([e["tiles"] / e["loop_seconds"] for e in ends])) / model
    return (f"end to end / model-only = {np.median([e['rate'] for e in ends]) / model:.2f} (target >= 0.9); "
            f"per round: {rounds}; excluding start-up and map writing: {loop:.2f}")


def _cpu_bound(runs: dict[str, list[dict[str, float]]], e2e: str) -> None:
    """Where the cores go: when the model alone keeps every core busy, whatever CPU the reader needs
    is taken from it, and end to end / model-only cannot exceed model CPU / end-to-end CPU per tile."""
    def per_tile(name: str) -> float:
        return float(np.median([r["cpu_seconds"] / r["tiles"] for r in runs[name]])) * 1e3

    model, whole = per_tile("model-only"), per_tile(e2e)
    busy = np.median([r["cpu_seconds"] / r["seconds"] for r in runs["model-only"]])
    print(f"CPU per tile: model-only {model:.2f} ms ({busy:.2f} cores busy), {e2e} {whole:.2f} ms "
          f"(reader, batching, start-up and maps: {whole - model:.2f} ms); with the model keeping every core busy, "
          f"end to end / model-only <= {model / whole:.2f}")


if __name__ == "__main__":
    main()
