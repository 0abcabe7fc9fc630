"""Presence probabilities for batches of tiles: onnxruntime on CPU, torch (bf16, channels_last) on CUDA.

Both backends share the training preprocessing (`Prep`), so a tile is seen exactly as in training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from spurgemap.config import PredictConfig
from spurgemap.errors import InputError
from spurgemap.train.bundle import SpurgeClassifier
from spurgemap.train.engine import Prep, d4

log = logging.getLogger(__name__)
Predictor = Callable[[np.ndarray], np.ndarray]  # (B, H, W, 3) uint8 -> (B,) probabilities


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def make_predictor(model: SpurgeClassifier, meta: dict, cfg: PredictConfig) -> tuple[Predictor, str]:
    device = choose_device(cfg.device)
    backend = cfg.backend
    if backend == "auto":
        backend = "torch" if device.type == "cuda" else "onnx"
    prep = Prep(int(meta["input_size"]), tuple(meta["mean"]), tuple(meta["std"]), torch.device("cpu"),
                channels_last=False)
    syms = range(8) if cfg.tta else range(1)
    if backend == "onnx":
        if device.type == "cuda":
            raise InputError("--backend onnx runs on the CPU here; use --backend torch with --device cuda")
        run = _onnx_runner(model, int(meta["input_size"]))
        label = "onnxruntime fp32 (CPU)"
    else:
        model = model.to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        run = _torch_runner(model, device)
        label = f"torch {'bf16 ' if device.type == 'cuda' else 'fp32 '}({device.type})"

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        probs = [run(prep(d4(x, k))) for k in syms]
        return np.mean(probs, axis=0)

    return predict, label + (" with D4 TTA" if cfg.tta else "")


def _torch_runner(model: SpurgeClassifier, device: torch.device) -> Callable[[torch.Tensor], np.ndarray]:
    @torch.inference_mode()
    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return torch.sigmoid(model(x).float()).cpu().numpy()
        return torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last))).numpy()

    return run


def _onnx_runner(model: SpurgeClassifier, input_size: int) -> Callable[[torch.Tensor], np.ndarray]:
    import onnxruntime as ort

    from spurgemap.export import classifier_onnx

    onnx_bytes = classifier_onnx(model.cpu().eval(), input_size)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(["prob"], {"input": x.numpy().astype(np.float32, copy=False)})[0]

    return run
