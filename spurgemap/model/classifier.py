"""The spurge classifier (backbone -> one presence logit) and its weights in a bundle.

Loading never unpickles anything (safetensors), so a bundle from a stranger cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from spurgemap.core.errors import InputError
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import Bundle, BundleMeta, read_bundle, write_bundle


class SpurgeClassifier(torch.nn.Module):
    """Backbone features -> one presence logit. Sees tensors only: no paths, no CRS."""

    def __init__(self, backbone: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


def save_bundle(path: Path, model: torch.nn.Module, meta: BundleMeta | dict[str, Any],
                onnx: bytes | None = None) -> str:
    """Write atomically; returns the bundle's sha256."""
    typed = meta if isinstance(meta, BundleMeta) else BundleMeta.model_validate(meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_bundle(path, typed, st_save(state), onnx)


def _opened(bundle: Bundle | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else read_bundle(bundle)


def load_bundle(bundle: Bundle | Path) -> tuple[dict[str, torch.Tensor], BundleMeta]:
    b = _opened(bundle)
    try:
        state = st_load(b.weights)
    except Exception as exc:  # safetensors raises its own error type for any corruption
        raise InputError(f"{b.path}: not a valid spurgemap bundle (weights: {str(exc).splitlines()[0]}); "
                         "retrain or re-download it") from None
    return state, b.meta


def model_from_bundle(bundle: Bundle | Path) -> tuple[SpurgeClassifier, BundleMeta]:
    b = _opened(bundle)
    state, meta = load_bundle(b)
    backbone, spec = create_backbone(meta.backbone, pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{b.path}: weights do not fit backbone {meta.backbone} "
                         f"({str(exc).splitlines()[0]})") from None
    return model.eval(), meta
