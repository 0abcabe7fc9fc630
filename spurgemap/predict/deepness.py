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
from spurgemap.core.workdir import check_out_vs_inputs
from spurgemap.model.bundle import BundleMeta, read_bundle
from spurgemap.model.classifier import model_from_bundle
from spurgemap.model.onnx import DEFAULT_OPSET, DeepnessWrapper, onnx_bytes
from spurgemap.predict.styles import class_labels


def deepness_metadata(meta: BundleMeta, bundle_sha256: str) -> dict[str, Any]:
    """Deepness' metadata keys (values JSON-encoded later) plus spurgemap's own provenance.

    `resolution` is what Deepness shows and uses: cm/px with 2 decimals (its spin box rounds to
    that), which is also how GeoDeep rounds the raster's pixel size (4 decimals in metres) before
    comparing; the exact training ground resolution stays in `gsd_m`. `seg_thresh` is 0.5, the
    threshold in channel 1's rescaled units (see `model.onnx`); the bundle's own threshold is in
    `threshold`.
    """
    tile = meta.tile_size_px
    return {
        "model_type": "Segmentor",
        "class_names": {str(k): v for k, v in class_labels(meta.species).items()},  # channel names, as in _class.tif
        "resolution": round(meta.gsd_m * 100.0, 2),  # cm/px, as Deepness' spin box shows it
        "tile_size": tile,
        "tiles_size": tile,  # Deepness' docs and helper script write this; the plugin reads tile_size
        "tiles_overlap": 0,  # percent; tiles are classified as a whole, overlap would only cost time
        "standardization_mean": [0.0, 0.0, 0.0],  # the graph standardises itself
        "standardization_std": [1.0, 1.0, 1.0],
        "seg_thresh": 0.5,  # channel 1 is rescaled so that the bundle's threshold is 0.5
        "seg_small_segment": 0,  # no small-segment filtering: a tile is the smallest unit anyway
        "spurgemap_version": __version__,
        "backbone": meta.backbone,
        "input_size": meta.input_size,
        "threshold": _tile_threshold(meta),
        "map_threshold": meta.threshold,
        "map_postprocessing": _postprocessing(meta),
        "gsd_m": meta.gsd_m,
        "bundle_class_names": list(meta.class_names),
        "bundle_sha256": bundle_sha256,
    }


def _tile_threshold(meta: BundleMeta) -> float:
    """The per-tile model's threshold: the bundle's map threshold taken back through its calibration."""
    return meta.tile_threshold if meta.tile_threshold is not None else meta.threshold


def _postprocessing(meta: BundleMeta) -> str:
    lam = float(meta.context.get("lambda", 0.0))
    if not lam and meta.calibration.get("method", "none") == "none":
        return "none: the map is this model's per-tile output"
    return (f"`spurgemap predict` adds on top of this per-tile model: each cell's logit mixed with its 8 neighbours' "
            f"mean (weight {lam:g}), then {meta.calibration.get('method', 'none')} calibration, then the threshold "
            f"{meta.threshold:.4f}; this export classifies each tile alone at the equivalent threshold")


def export_deepness(bundle: Path, out: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write a Deepness-ready ONNX model for `bundle` to `out` atomically; returns the metadata written.

    A missing or corrupt bundle raises InputError (one line) from `read_bundle`.
    """
    bundle, out = Path(bundle), Path(out)
    check_out_vs_inputs(out, [bundle], "--onnx")
    if out.is_dir():
        raise InputError(f"--onnx {out}: is a folder; give a file name such as model.onnx")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist; create it or choose another output path")
    opened = read_bundle(bundle)
    model, meta = model_from_bundle(opened)
    tile = meta.tile_size_px
    threshold = _tile_threshold(meta)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"{bundle}: threshold {threshold} must lie strictly between 0 and 1; retrain the model")
    wrapper = DeepnessWrapper(model, tile, meta.input_size, list(meta.mean), list(meta.std), threshold)
    proto = onnx.load_from_string(onnx_bytes(wrapper, torch.zeros(2, 3, tile, tile), "output", opset))
    # Deepness reads the channel count from the declared output shape, GeoDeep the tile size from the
    # input's: both must be numbers, not symbols. Batch stays dynamic (Deepness then lets users pick it).
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, ("batch", 2, tile, tile), strict=True):
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value
    metadata = deepness_metadata(meta, opened.sha256)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name, proto.doc_string = "spurgemap", f"{meta.species} tile classifier from {bundle.name}"
    onnx.checker.check_model(proto)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return metadata
