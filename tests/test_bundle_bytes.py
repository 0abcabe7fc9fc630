"""A bundle's bytes (and so its sha256, which the maps' provenance tags name) depend only on its content."""

from __future__ import annotations

import time

import torch

from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import read_bundle
from spurgemap.model.classifier import SpurgeClassifier, model_from_bundle, save_bundle

META = {"spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 32, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 40, "gsd_m": 0.014,
        "threshold": 0.5}


def test_the_same_model_saved_at_another_time_gives_the_same_bytes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    first = save_bundle(tmp_path / "a.spurge", model, META, onnx=b"graph")
    later = time.time() + 3 * 86400  # another day: zip members would carry another date
    monkeypatch.setattr(time, "time", lambda: later)
    second = save_bundle(tmp_path / "b.spurge", model, META, onnx=b"graph")
    assert (tmp_path / "a.spurge").read_bytes() == (tmp_path / "b.spurge").read_bytes()
    assert first == second == read_bundle(tmp_path / "b.spurge").sha256
    # and it still opens as the same model
    again, meta = model_from_bundle(read_bundle(tmp_path / "b.spurge"))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x)) and meta.tile_size_px == 40
    # a different model gives different bytes
    with torch.no_grad():
        model.head.bias.add_(1)
    assert save_bundle(tmp_path / "c.spurge", model, META, onnx=b"graph") != first
