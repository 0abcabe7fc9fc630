"""The `model.spurge` container, without torch: a zip of metadata.json, weights.safetensors and,
optionally, model.onnx (the whole tile -> probability graph, so CPU prediction needs no torch).

The metadata is one typed `BundleMeta`; a bundle is opened once (`read_bundle`) and the loaded
`Bundle` is what stages pass around. Reading never unpickles anything: a bundle from a stranger
cannot run code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from spurgemap.core.errors import InputError
from spurgemap.core.hashing import bytes_sha256
from spurgemap.core.labels import DEFAULT_SPECIES

FORMAT = "spurgemap-bundle"
# 1: untyped metadata (still read); 2: the BundleMeta schema below (same keys, validated types).
FORMAT_VERSION = 2
WEIGHTS, METADATA, ONNX = "weights.safetensors", "metadata.json", "model.onnx"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip member can carry


class BundleMeta(BaseModel):
    """Everything predict, export and info need to use a classifier without its training run."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    spurgemap_version: str
    backbone: str
    backbone_weights: str | None = None
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    tile_size_px: int
    gsd_m: float
    source_gsd_m: float | None = None  # the imagery's own GSD when tiles were resampled to gsd_m (`tile --gsd`)
    species: str = DEFAULT_SPECIES  # what the present class is: map texts, Deepness class names
    threshold: float  # in the map's probability (after context and calibration)
    # issue 22 (model/calibration.py); absent in older bundles: no context, no calibration
    tile_threshold: float | None = None  # the same threshold in one tile's raw probability (per-tile clients)
    calibration: dict[str, Any] = {}  # {"method": none|platt|isotonic, "a", "b", "x", "y"}
    context: dict[str, Any] = {}  # {"lambda": weight of the neighbours' mean logit, ...}
    operating_point: str = "balanced"
    mode: str = "probe"
    training_config: dict[str, Any] = {}
    tile_set: str = ""
    tile_set_hash: str = ""
    metrics: dict[str, Any] = {}


@dataclass
class Bundle:
    meta: BundleMeta
    weights: bytes
    onnx: bytes | None
    sha256: str  # of the whole file: provenance tags name the exact model
    path: Path | None = None


def write_bundle(path: Path, meta: BundleMeta, weights: bytes, onnx: bytes | None = None) -> str:
    """Atomically write a bundle; returns its sha256."""
    body = meta.model_dump(mode="json")
    body["format"], body["format_version"] = FORMAT, FORMAT_VERSION
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # members carry a fixed date, not the write time: the same model gives the same bytes and
        # sha256 (a resumed or repeated training run, and the maps' provenance tags, agree)
        def put(name: str, payload: str | bytes, method: int) -> None:
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), payload, method)

        put(METADATA, json.dumps(body, indent=2, sort_keys=True), zipfile.ZIP_DEFLATED)
        put(WEIGHTS, weights, zipfile.ZIP_STORED)
        if onnx is not None:
            put(ONNX, onnx, zipfile.ZIP_STORED)
    data = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return bytes_sha256(data)


def read_bundle(path: Path) -> Bundle:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: bundle not found")
    if path.is_dir():
        inside = path / "model.spurge"
        hint = f"give {inside}" if inside.is_file() else "give the model.spurge file that `spurgemap train` wrote"
        raise InputError(f"{path}: is a folder, not a model bundle; {hint}")
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if not {WEIGHTS, METADATA} <= names:
                raise InputError(f"{path}: not a spurgemap bundle (needs {WEIGHTS} and {METADATA})")
            raw = json.loads(zf.read(METADATA))
            weights = zf.read(WEIGHTS)
            onnx = zf.read(ONNX) if ONNX in names else None
    except InputError:
        raise
    except Exception as exc:  # zip and JSON parsers raise many types; all mean 'corrupt'
        raise InputError(f"{path}: not a valid spurgemap bundle ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); retrain or re-download it") from None
    return Bundle(parse_meta(raw, path), weights, onnx, bytes_sha256(data), path)


def parse_meta(raw: Any, path: Path) -> BundleMeta:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(f"{path}: not a spurgemap bundle (metadata lacks required fields)")
    version = raw.get("format_version")
    if not isinstance(version, int):
        raise InputError(f"{path}: not a spurgemap bundle (metadata lacks required fields)")
    if version > FORMAT_VERSION:
        raise InputError(f"{path}: bundle format {version} is newer than this spurgemap reads; upgrade spurgemap")
    try:
        return BundleMeta.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{path}: not a spurgemap bundle (metadata lacks required fields: {where}: "
                         f"{err['msg']})") from None
