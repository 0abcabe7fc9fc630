"""`model.spurge`: one self-describing file, a zip of safetensors weights and JSON metadata.

Loading never unpickles anything, so a bundle from a stranger cannot run code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from spurgemap.bundle_io import read_bundle, write_bundle
from spurgemap.errors import InputError


class SpurgeClassifier(torch.nn.Module):
    """Backbone features -> one presence logit. Sees tensors only: no paths, no CRS."""

    def __init__(self, backbone: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


def save_bundle(path: Path, model: torch.nn.Module, metadata: dict[str, Any], onnx: bytes | None = None) -> str:
    """Write atomically; returns the bundle's sha256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = write_bundle(path, metadata, st_save(state), onnx)
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    files = read_bundle(path)
    try:
        state = st_load(files.weights)
    except Exception as exc:  # safetensors raises its own error type for any corruption
        raise InputError(f"{path}: not a valid spurgemap bundle (weights: {str(exc).splitlines()[0]}); "
                         "retrain or re-download it") from None
    return state, files.meta


def model_from_bundle(path: Path) -> tuple[SpurgeClassifier, dict[str, Any]]:
    from spurgemap.train.backbones import create_backbone

    state, meta = load_bundle(path)
    backbone, spec = create_backbone(meta["backbone"], pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit backbone {meta['backbone']} "
                         f"({str(exc).splitlines()[0]})") from None
    return model.eval(), meta
