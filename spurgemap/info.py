"""`spurgemap info`: the essentials of whatever file the user points at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.numpy import load as load_weights

from spurgemap.core.errors import InputError
from spurgemap.geo.raster import open_ortho
from spurgemap.geo.vector import read_tile_index
from spurgemap.model.bundle import read_bundle


def describe(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_dir():
        if (path / "tiles.gpkg").exists():
            return _describe_tiles(path)
        raise InputError(f"{path}: a folder without tiles.gpkg is not a tile set")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _describe_ortho(path)
    if path.suffix.lower() == ".spurge":
        return _describe_bundle(path)
    raise InputError(f"{path}: unknown kind of file; give an orthomosaic (.tif), a tile set folder "
                     "or a model bundle (.spurge)")


def _describe_bundle(path: Path) -> dict[str, Any]:
    bundle = read_bundle(path)
    meta = bundle.meta.model_dump()
    try:
        state = load_weights(bundle.weights)
    except Exception as exc:  # safetensors raises its own error type for any corruption
        raise InputError(f"{path}: not a valid spurgemap bundle (weights: {str(exc).splitlines()[0]})") from None
    keep = ["spurgemap_version", "backbone", "backbone_weights", "mode", "input_size", "mean", "std",
            "species", "class_names", "tile_size_px", "gsd_m", "source_gsd_m", "threshold", "tile_set_hash", "metrics"]
    return {"kind": "model bundle", "path": str(path), **{k: meta.get(k) for k in keep},
            "parameters": int(sum(v.size for v in state.values()))}


def _describe_ortho(path: Path) -> dict[str, Any]:
    info = open_ortho(path, 1)
    return {
        "kind": "orthomosaic", "path": str(path), "size_px": [info.width, info.height],
        "bands": info.count, "rgb_bands": list(info.rgb_bands), "dtype": info.dtype,
        "crs": f"EPSG:{info.epsg}" if info.epsg else info.crs_wkt[:80], "bounds": list(info.bounds),
        "pixel_size": [info.res_x, info.res_y], "gsd_cm": round(info.gsd_m * 100, 3),
        "mask": info.mask_kind, "block_shape": list(info.block_shape),
        "megapixels": round(info.megapixels, 2),
    }


def _describe_tiles(path: Path) -> dict[str, Any]:
    index = read_tile_index(path / "tiles.gpkg")
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    counts = index.groupby(["site_id", "label"]).size()
    return {
        "kind": "tile set", "path": str(path), "tiles": len(index),
        "per_site": {f"{s}/{lab}": int(n) for (s, lab), n in counts.items()},
        "crs": str(index.crs), "gsd_cm": sorted({round(g * 100, 3) for g in index["gsd_m"]}),
        "skipped": summary.get("skipped_tiles", {}),
    }
