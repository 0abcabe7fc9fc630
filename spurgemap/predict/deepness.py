"""The Deepness (QGIS plugin) export: the classifier as a Deepness "Segmentor" ONNX file.

Why Segmentor, and what each metadata key means, is documented in `model.onnx` and the README.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx
import torch

from spurgemap import __version__
from spurgemap.core.errors import InputError
from spurgemap.model.bundle import BundleMeta, read_bundle
from spurgemap.model.classifier import model_from_bundle
from spurgemap.model.onnx import DEFAULT_OPSET, DeepnessWrapper, onnx_bytes


def deepness_metadata(meta: BundleMeta, bundle_sha256: str) -> dict[str, Any]:
    """Deepness' metadata keys (values JSON-encoded later) plus spurgemap's own provenance."""
    tile = meta.tile_size_px
    names = meta.class_names
    class_names = {str(i): str(n) for i, n in enumerate(names)} if isinstance(names, list) else \
        {str(k): str(v) for k, v in dict(names).items()}
    return {
        "model_type": "Segmentor",
        "class_names": class_names,
        "resolution": round(meta.gsd_m * 100.0, 6),  # cm/px
        "tile_size": tile,
        "tiles_size": tile,  # Deepness' docs and helper script write this; the plugin reads tile_size
        "tiles_overlap": 0,  # percent; tiles are classified as a whole, overlap would only cost time
        "standardization_mean": [0.0, 0.0, 0.0],  # the graph standardises itself
        "standardization_std": [1.0, 1.0, 1.0],
        "seg_thresh": meta.threshold,
        "seg_small_segment": 1,  # no median filtering: a tile is the smallest unit anyway
        "spurgemap_version": __version__,
        "backbone": meta.backbone,
        "input_size": meta.input_size,
        "threshold": meta.threshold,
        "bundle_sha256": bundle_sha256,
    }


def export_deepness(bundle: Path, out: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write a Deepness-ready ONNX model for `bundle` to `out` atomically; returns the metadata written.

    A missing or corrupt bundle raises InputError (one line) from `load_bundle`.
    """
    bundle, out = Path(bundle), Path(out)
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist; create it or choose another output path")
    opened = read_bundle(bundle)
    model, meta = model_from_bundle(opened)
    tile = meta.tile_size_px
    wrapper = DeepnessWrapper(model, tile, meta.input_size, list(meta.mean), list(meta.std))
    proto = onnx.load_from_string(onnx_bytes(wrapper, torch.zeros(2, 3, tile, tile), "output", opset))
    metadata = deepness_metadata(meta, opened.sha256)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name, proto.doc_string = "spurgemap", f"leafy spurge tile classifier from {bundle.name}"
    onnx.checker.check_model(proto)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return metadata
