"""CPU inference variants, timed batch by batch in ONE process so a shared machine's load hits all alike.

    python benchmarks/ort_variants.py BUNDLE INT8_ONNX DATA_DIR [--rounds 20] [--batch 32]

BUNDLE: a trained 250-px bundle with its graph; INT8_ONNX: the same graph statically quantised
(`predict_bench.py --int8` writes it: QDQ, per-channel, calibrated on another orthomosaic); DATA_DIR: a
`spurgemap demo-data` folder. Variants run in turn on the same in-memory batch each round:
  * fp32: predict's session (graph optimisation ALL, default threads) - the reference;
  * fp32 intra_op=2 sequential, fp32 without the memory arena: session options;
  * int8 QDQ;
  * features per D4 view: train's onnxruntime feature graph (uint8 tile -> features).
Prints the median tiles/s ratio to fp32 over the rounds, and int8's cell agreement with fp32 on every
tile of every demo site (the bundle's threshold).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from spurgemap.geo.raster import OrthoReader, open_ortho
from spurgemap.model.bundle import read_bundle
from spurgemap.predict.stream import fill_invalid


def _session(graph: bytes, **options: Any) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in options.items():
        setattr(opts, k, v)
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray, out: str) -> np.ndarray:
    return np.concatenate([session.run([out], {"tiles": x[i:i + 8]})[0] for i in range(0, len(x), 8)])


def _site_tiles(data: Path, tile: int) -> np.ndarray:
    tiles = []
    for ortho in sorted((data / "sites").glob("*/ortho.tif")):
        info = open_ortho(ortho, tile)
        with OrthoReader(info) as reader:
            for r in range(-(-info.height // tile)):
                for c in range(-(-info.width // tile)):
                    rgb, valid, _ = reader.read(c * tile, r * tile, tile, tile)
                    if valid.mean() >= 0.5:
                        tiles.append(fill_invalid(rgb, valid).transpose(1, 2, 0).copy())
    return np.stack(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("int8", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import torch  # deferred: only the feature graph's export needs it

    from spurgemap.model.classifier import model_from_bundle
    from spurgemap.model.onnx import features_onnx

    bundle = read_bundle(args.bundle)
    meta, graph = bundle.meta, bundle.onnx
    assert graph is not None, "bundle without a graph"
    model, _ = model_from_bundle(bundle)
    with torch.no_grad():
        feats = features_onnx(model.eval(), meta.tile_size_px, meta.input_size, list(meta.mean), list(meta.std))
    variants = {
        "fp32 (predict)": (_session(graph), "prob"),
        "fp32 intra_op=2, sequential": (_session(graph, intra_op_num_threads=2,
                                                 execution_mode=ort.ExecutionMode.ORT_SEQUENTIAL), "prob"),
        "fp32 no memory arena": (_session(graph, enable_cpu_mem_arena=False), "prob"),
        "int8 QDQ per-channel": (_session(args.int8.read_bytes()), "prob"),
        "features per D4 view (train)": (_session(feats), "features"),
    }
    tiles = _site_tiles(args.data, meta.tile_size_px)
    t = meta.threshold
    p32 = _run(variants["fp32 (predict)"][0], tiles, "prob")
    p8 = _run(variants["int8 QDQ per-channel"][0], tiles, "prob")
    print(f"int8 vs fp32 on {len(tiles)} cells of {args.data}: class agreement {((p32 >= t) == (p8 >= t)).mean():.4f}, "
          f"mean |dp| {np.abs(p32 - p8).mean():.4f}, max |dp| {np.abs(p32 - p8).max():.4f}")
    rates: dict[str, list[float]] = {k: [] for k in variants}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        x = tiles[rng.choice(len(tiles), args.batch, replace=False)]
        for name, (session, out) in variants.items():
            t0 = time.perf_counter()
            _run(session, x, out)
            rates[name].append(args.batch / (time.perf_counter() - t0))
    ref = np.array(rates["fp32 (predict)"])
    print(f"{args.rounds} rounds of {args.batch} tiles, variants interleaved; ratio = median of per-round ratios")
    for name, r in rates.items():
        print(f"{name:>30}: median {np.median(r):6.1f} tiles/s, x{np.median(np.array(r) / ref):.2f} of fp32")


if __name__ == "__main__":
    main()
