"""The bfloat16 paths that CUDA takes by default, run on CPU: the same code, the same dtypes.

`train.bf16` / `predict.bf16` default to "on CUDA only"; set to true they take that very autocast
path on the CPU, so a broken half-precision path fails here rather than on a user's GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spurgemap.config import TrainConfig, load_config
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import read_bundle
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.engine import Batchable, Trainer, predict_probs
from spurgemap.model.onnx import tile_onnx
from spurgemap.model.preprocess import Prep
from spurgemap.predict.infer import make_predictor

TILE, SIZE = 40, 32


def _model(seed: int = 0, scale: float = 5.0) -> SpurgeClassifier:
    torch.manual_seed(seed)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features)
    with torch.no_grad():
        model.head.weight.normal_(0, scale)  # probabilities spread, so a wrong dtype path shows
    return model


def _conv_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Tiles of different colours (plus noise), so a random model's outputs differ from tile to tile."""
    rng = np.random.default_rng(seed)
    base = rng.integers(20, 235, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 12, (n, TILE, TILE, 3)), 0, 255).astype(np.uint8)


def test_training_and_validation_in_bf16_autocast_on_cpu() -> None:
    cfg = TrainConfig(mode="finetune", bf16=True, batch_size=8, epochs=1, lr=1e-3)
    model = _model()
    prep = Prep(SIZE, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), channels_last=False)
    images, labels = _images(16), np.array([0, 1] * 8)
    data = Batchable(images, labels, np.zeros((0, TILE, TILE, 3), np.uint8), np.zeros(0, np.int64))
    dtypes = _conv_dtypes(model)
    trainer = Trainer(model, cfg, prep, data, None, None, seed=0)
    assert trainer.bf16
    before = model.head.weight.detach().clone()
    res = trainer.epoch(0, 0, np.arange(12), np.arange(12, 16), np.array(["a"] * 16))
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the backbone really ran in bfloat16
    assert model.head.weight.dtype == torch.float32 and not torch.equal(before, model.head.weight)
    assert np.isfinite(res.train_loss) and res.val_probs is not None and np.isfinite(res.val_probs).all()
    # bf16 predictions stay close to fp32 ones (same weights), and the off switch gives fp32
    bf16 = predict_probs(model, images, prep, 8, bf16=True)
    dtypes.clear()
    fp32 = predict_probs(model, images, prep, 8, bf16=False)
    assert set(dtypes) == {torch.float32}
    assert np.abs(bf16 - fp32).max() < 0.05 and np.ptp(fp32) > 0.2


def test_predict_torch_backend_in_bf16_on_cpu_matches_the_fp32_graph(tmp_path: Path) -> None:
    model = _model(1, scale=50.0).eval()
    path = tmp_path / "m.spurge"
    save_bundle(path, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": SIZE, "mean": [0.5] * 3,
        "std": [0.25] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": TILE, "gsd_m": 0.014,
        "threshold": 0.5}, onnx=tile_onnx(model, TILE, SIZE, [0.5] * 3, [0.25] * 3))
    bundle = read_bundle(path)
    cfg = load_config(overrides={"predict.backend": "torch", "predict.bf16": True, "predict.device": "cpu"}).predict
    bf16, label = make_predictor(bundle, cfg, TILE)
    assert "bf16 (cpu)" in label
    graph, graph_label = make_predictor(bundle, load_config(overrides={"predict.device": "cpu"}).predict, TILE)
    assert "OpenVINO fp32" in graph_label
    x = np.ascontiguousarray(_images(12, seed=3).transpose(0, 3, 1, 2))  # predict's tiles: channels first
    p16, p32 = np.asarray(bf16(x)).reshape(12, -1)[:, 0], np.asarray(graph(x)).reshape(12, -1)[:, 0]
    assert np.abs(p16 - p32).max() < 0.05 and np.ptp(p32) > 0.2
