"""`model.spurge`: one self-describing file, a zip of safetensors weights and JSON metadata.

Loading never unpickles anything, so a bundle from a stranger cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from spurgemap.errors import InputError

FORMAT = "spurgemap-bundle"
FORMAT_VERSION = 1
WEIGHTS, METADATA = "weights.safetensors", "metadata.json"
REQUIRED = ["format", "format_version", "spurgemap_version", "backbone", "input_size", "mean", "std",
            "class_names", "tile_size_px", "gsd_m", "threshold"]


class SpurgeClassifier(torch.nn.Module):
    """Backbone features -> one presence logit. Sees tensors only: no paths, no CRS."""

    def __init__(self, backbone: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


def save_bundle(path: Path, model: torch.nn.Module, metadata: dict[str, Any]) -> str:
    """Write atomically; returns the bundle's sha256."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"bundle metadata lacks {missing}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(METADATA, json.dumps(meta, indent=2, sort_keys=True), zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS, st_save(state), zipfile.ZIP_STORED)
    data = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: bundle not found")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {WEIGHTS, METADATA} <= names:
                raise InputError(f"{path}: not a spurgemap bundle (needs {WEIGHTS} and {METADATA})")
            meta = json.loads(zf.read(METADATA))
            state = st_load(zf.read(WEIGHTS))
    except InputError:
        raise
    except Exception as exc:  # zip, JSON and safetensors parsers raise many types; all mean 'corrupt'
        raise InputError(f"{path}: not a valid spurgemap bundle ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); retrain or re-download it") from None
    if meta.get("format") != FORMAT or [k for k in REQUIRED if k not in meta]:
        raise InputError(f"{path}: not a spurgemap bundle (metadata lacks required fields)")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise InputError(f"{path}: bundle format {meta['format_version']} is newer than this spurgemap "
                         "reads; upgrade spurgemap")
    return state, meta


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


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
