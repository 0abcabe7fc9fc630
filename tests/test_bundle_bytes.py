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


def test_version_1_bundles_still_load_and_newer_ones_are_refused(tmp_path):
    """Bundles written before the typed schema (format_version 1, untyped JSON) open as BundleMeta."""
    import json
    import zipfile

    import pytest
    from safetensors.torch import save as st_save

    from spurgemap.core.errors import InputError

    torch.manual_seed(1)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    old = {"format": "spurgemap-bundle", "format_version": 1, **META, "mode": "probe", "metrics": {"x": 1}}
    path = tmp_path / "v1.spurge"
    with zipfile.ZipFile(path, "w") as zf:  # as spurgemap 0.1 wrote it
        zf.writestr("metadata.json", json.dumps(old))
        zf.writestr("weights.safetensors", st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
    bundle = read_bundle(path)
    assert bundle.meta.format_version == 1 and bundle.meta.threshold == 0.5 and bundle.onnx is None
    assert bundle.meta.mean == (0.5, 0.5, 0.5) and bundle.meta.metrics == {"x": 1}
    again, _ = model_from_bundle(bundle)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))
    newer = tmp_path / "v9.spurge"
    with zipfile.ZipFile(newer, "w") as zf:
        zf.writestr("metadata.json", json.dumps({**old, "format_version": 9}))
        zf.writestr("weights.safetensors", b"")
    with pytest.raises(InputError, match="newer than this spurgemap"):
        read_bundle(newer)
    broken = tmp_path / "typed.spurge"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("metadata.json", json.dumps({**old, "tile_size_px": "big"}))
        zf.writestr("weights.safetensors", b"")
    with pytest.raises(InputError, match="tile_size_px"):
        read_bundle(broken)
