"""Frozen-backbone features on the CPU through onnxruntime, the same fast path `predict` uses.

torch on a 2-core CPU runs the backbone ~2.5x slower than onnxruntime; a probe's features are computed
once per (tile, D4 view), so this is most of a CPU `train` (and of `evaluate`'s shared feature cache).
The graph takes uint8 tiles and holds the preprocessing, so only each view's pixels cross over.
CUDA keeps torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch

from spurgemap.model.classifier import SpurgeClassifier
from spurgemap.model.onnx import features_onnx
from spurgemap.model.preprocess import Prep, d4_numpy

ORT_CHUNK = 8  # as predict: on 2 cores chunks of 8 run as fast as 32 with a smaller arena


def onnx_features(model: SpurgeClassifier, images: np.ndarray, prep: Prep, symmetries: int,
                  advance: Callable[[int], None] | None = None) -> torch.Tensor:
    """(N, S, F) features for each (N, T, T, 3) uint8 image under each of S D4 symmetries."""
    if not len(images):
        return torch.zeros((0, symmetries, 1))
    tile = images.shape[1]
    graph = features_onnx(model, tile, prep.input_size, list(prep.mean), list(prep.std))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(images), ORT_CHUNK):
        chunk = images[start:start + ORT_CHUNK]
        views = [session.run(["features"], {"tiles": d4_numpy(chunk, k)})[0] for k in range(symmetries)]
        out.append(np.stack(views, axis=1))
        if advance:
            advance(len(chunk))
    return torch.from_numpy(np.concatenate(out))
