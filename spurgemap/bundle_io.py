"""The `model.spurge` container without torch: a zip of metadata.json, weights.safetensors and,
optionally, model.onnx (the whole tile -> probability graph, so CPU prediction needs no torch).

Reading never unpickles anything: a bundle from a stranger cannot run code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurgemap.errors import InputError

FORMAT = "spurgemap-bundle"
FORMAT_VERSION = 1
WEIGHTS, METADATA, ONNX = "weights.safetensors", "metadata.json", "model.onnx"
REQUIRED = ["format", "format_version", "spurgemap_version", "backbone", "input_size", "mean", "std",
            "class_names", "tile_size_px", "gsd_m", "threshold"]


@dataclass
class BundleFiles:
    meta: dict[str, Any]
    weights: bytes
    onnx: bytes | None


def write_bundle(path: Path, metadata: dict[str, Any], weights: bytes, onnx: bytes | None = None) -> bytes:
    """Atomically write a bundle; returns its bytes (callers hash them)."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"bundle metadata lacks {missing}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(METADATA, json.dumps(meta, indent=2, sort_keys=True), zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS, weights, zipfile.ZIP_STORED)
        if onnx is not None:
            zf.writestr(ONNX, onnx, zipfile.ZIP_STORED)
    data = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def read_bundle(path: Path, with_weights: bool = True) -> BundleFiles:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: bundle not found")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {WEIGHTS, METADATA} <= names:
                raise InputError(f"{path}: not a spurgemap bundle (needs {WEIGHTS} and {METADATA})")
            meta = json.loads(zf.read(METADATA))
            weights = zf.read(WEIGHTS) if with_weights else b""
            onnx = zf.read(ONNX) if ONNX in names else None
    except InputError:
        raise
    except Exception as exc:  # zip and JSON parsers raise many types; all mean 'corrupt'
        raise InputError(f"{path}: not a valid spurgemap bundle ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); retrain or re-download it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or [k for k in REQUIRED if k not in meta]:
        raise InputError(f"{path}: not a spurgemap bundle (metadata lacks required fields)")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise InputError(f"{path}: bundle format {meta['format_version']} is newer than this spurgemap "
                         "reads; upgrade spurgemap")
    return BundleFiles(meta, weights, onnx)
