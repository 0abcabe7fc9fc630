"""Frozen-backbone features on the CPU through the same ONNX runtime `predict` uses (OpenVINO, else
onnxruntime).

torch on a 2-core CPU runs the backbone ~2.5x slower than onnxruntime; a probe's features are computed
once per (tile, D4 view), so this is most of a CPU `train` (and of `evaluate`'s shared feature cache).
The graph takes uint8 tiles and holds the preprocessing, so only each view's pixels cross over.
CUDA keeps torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from spurgemap.core.cpu_graphs import CHUNK, cpu_runner, default_cpu_backend
from spurgemap.model.classifier import SpurgeClassifier
from spurgemap.model.onnx import features_onnx
from spurgemap.model.preprocess import Prep, d4_numpy


def onnx_features(model: SpurgeClassifier, images: np.ndarray, prep: Prep, symmetries: int,
                  advance: Callable[[int], None] | None = None) -> torch.Tensor:
    """(N, S, F) features for each (N, T, T, 3) uint8 image under each of S D4 symmetries."""
    if not len(images):
        return torch.zeros((0, symmetries, 1))
    tile = images.shape[1]
    graph = features_onnx(model, tile, prep.input_size, list(prep.mean), list(prep.std))
    run = cpu_runner(default_cpu_backend(), graph, "tiles", "features")
    out = []
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        views = [run(d4_numpy(chunk, k)) for k in range(symmetries)]
        out.append(np.stack(views, axis=1))
        if advance:
            advance(len(chunk))
    return torch.from_numpy(np.concatenate(out))
