"""Presence probabilities for batches of tiles.

CPU: the bundle's own ONNX graph (uint8 tiles -> probability, preprocessing included) on OpenVINO
(fp32; 1.5x onnxruntime on 2 cores, identical classes) or onnxruntime; torch is never imported,
which saves ~0.5 GB of RSS and the export time. Bundles without a graph, or tiles resampled to
another size, fall back to exporting the classifier at start-up.
CUDA: torch with bf16 autocast and channels_last. All paths share the training preprocessing.
Tiles arrive channels-first, (B, 3, H, W), as GDAL reads them fastest (see `channels_first`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spurgemap.config import PredictConfig
from spurgemap.core.cpu_graphs import CPU_BACKENDS, channels_first, cpu_runner, default_cpu_backend, has_openvino
from spurgemap.core.errors import InputError
from spurgemap.model.bundle import Bundle
from spurgemap.model.preprocess import d4_numpy

log = logging.getLogger(__name__)
# (B, 3, H, W) uint8 -> (B, V) probabilities, one column per D4 view (V = 8 with TTA, else 1)
Predictor = Callable[[np.ndarray], np.ndarray]
# torch.onnx.export keeps global state: two campaign tasks on one Dask worker's threads must not export at once
_EXPORT_LOCK = threading.Lock()


def _cuda_wanted(name: str) -> bool:
    """Whether to use CUDA; torch is imported only where an NVIDIA driver could be present."""
    if name == "cpu":
        return False
    has_driver = Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None
    available = False
    if has_driver:
        import torch  # deferred: CPU-only machines never load torch here

        available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return available


def make_predictor(bundle: Bundle, cfg: PredictConfig, tile: int) -> tuple[Predictor, str]:
    cuda = _cuda_wanted(cfg.device)
    backend: str = cfg.backend
    if backend == "auto":
        backend = "torch" if cuda else default_cpu_backend()
    if backend in CPU_BACKENDS and cuda:
        raise InputError(f"--backend {backend} runs on the CPU here; use --backend torch with --device cuda")
    if backend == "openvino" and not has_openvino():
        raise InputError("--backend openvino: the openvino package is not installed; pip install openvino, "
                         "or use --backend onnx")
    syms = range(8) if cfg.tta else range(1)
    tta = " with D4 TTA" if cfg.tta else ""
    graph = bundle.onnx
    if backend in CPU_BACKENDS and graph is not None and tile == bundle.meta.tile_size_px:
        run = cpu_runner(backend, channels_first(graph), "tiles", "prob")

        def predict_graph(batch: np.ndarray) -> np.ndarray:
            return np.stack([run(d4_numpy(batch, k, axes=(2, 3))) for k in syms], axis=1)

        return predict_graph, f"{CPU_BACKENDS[backend]} fp32 (CPU, bundle graph)" + tta
    return _torch_predictor(bundle, backend, cuda, syms, tta, cfg.bf16)


def _torch_predictor(bundle: Bundle, backend: str, cuda: bool, syms: range,
                     tta: str, bf16_setting: bool | None = None) -> tuple[Predictor, str]:
    # Deferred on purpose: torch (and the torch side of model/) loads only when this path runs.
    import torch

    from spurgemap.model.classifier import model_from_bundle
    from spurgemap.model.engine import autocast, use_bf16
    from spurgemap.model.onnx import classifier_onnx
    from spurgemap.model.preprocess import Prep, d4

    model, meta = model_from_bundle(bundle)
    device = torch.device("cuda" if cuda else "cpu")
    prep = Prep(meta.input_size, meta.mean, meta.std, torch.device("cpu"),
                channels_last=False)
    if backend in CPU_BACKENDS:
        with _EXPORT_LOCK:
            graph = classifier_onnx(model.eval(), meta.input_size)
        cpu_run = cpu_runner(backend, graph, "input", "prob")
        del model

        def run(x: torch.Tensor) -> np.ndarray:
            return cpu_run(x.numpy().astype(np.float32, copy=False))

        label = f"{CPU_BACKENDS[backend]} fp32 (CPU, exported at start-up)"
    else:
        net = model.to(device).eval().to(memory_format=torch.channels_last)
        bf16 = use_bf16(bf16_setting, device)

        @torch.inference_mode()
        def run(x: torch.Tensor) -> np.ndarray:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                return torch.sigmoid(net(x).float()).cpu().numpy()

        label = f"torch {'bf16' if bf16 else 'fp32'} ({device.type})"

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        return np.stack([run(prep(d4(x, k))) for k in syms], axis=1)

    return predict, label + tta
