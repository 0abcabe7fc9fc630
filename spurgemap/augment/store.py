"""Files of the augment stage: class-token folders, synthetic images, manifest rows, preview."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.torch import load_file, save_file

from spurgemap.augment.manifest import MANIFEST_COLUMNS
from spurgemap.core.errors import InputError
from spurgemap.core.ids import safe_id

log = logging.getLogger(__name__)
TOKENS_META = "tokens.json"
COLUMNS = [*MANIFEST_COLUMNS, "model_hash", "j", "tiny_model", "note", "retries"]


def save_tokens(folder: Path, embeddings: dict[str, Any], meta: dict[str, Any]) -> list[Path]:
    """One safetensors file per class token, {token: (num_vectors, dim)}: what diffusers'
    `load_textual_inversion` reads, so the tokens work in any diffusers pipeline too."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for token, emb in embeddings.items():
        path = folder / f"{safe_id(token) or 'token'}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({token: emb.contiguous()}, str(tmp), metadata={"token": token, "model_hash": meta["model_hash"]})
        os.replace(tmp, path)
        files.append(path)
    meta = {**meta, "files": {t: f.name for t, f in zip(embeddings, files, strict=True)}}
    tmp = folder / (TOKENS_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / TOKENS_META)
    return files


def read_tokens_meta(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    meta_path = folder / TOKENS_META
    if not meta_path.exists():
        raise InputError(f"{folder}: not a token folder (no {TOKENS_META}); write one with "
                         "`spurgemap augment learn-tokens`")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_path}: not valid JSON ({exc.msg})") from None
    for token, name in meta.get("files", {}).items():
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents or not path.exists():
            raise InputError(f"{folder}: token file {name!r} for {token} is missing")
    return meta


def load_tokens_into(pipe: Any, folder: Path, model_hash: str) -> dict[str, str]:
    """Add the class tokens to the pipeline's tokenizer and text encoder; returns label -> token."""
    meta = read_tokens_meta(folder)
    dim = int(pipe.text_encoder.get_input_embeddings().weight.shape[1])
    for token, name in meta["files"].items():
        try:
            tensors = load_file(str(Path(folder) / name))
        except Exception as exc:  # safetensors raises its own error type (and OSError) for damaged files
            raise InputError(f"{Path(folder) / name}: not a readable safetensors file ({type(exc).__name__}); "
                             "learn the tokens again with `spurgemap augment learn-tokens`") from None
        if token not in tensors or tensors[token].ndim != 2 or tensors[token].shape[1] != dim:
            raise InputError(f"{folder / name}: holds no {dim}-wide embedding for {token}; the tokens were "
                             "learned with another model architecture - learn them again with this --model")
        pipe.load_textual_inversion(tensors, token=token)
    if meta.get("model_hash") not in (None, model_hash):
        log.warning(
            "%s: tokens were learned with model %s (%s), generating with %s", folder, meta.get("model_id"),
            meta.get("model_hash"), model_hash)
    return dict(meta["labels"])


def image_path(root: Path, tile_id: str, j: int) -> Path:
    rel = Path("images") / (safe_id(tile_id) or "tile") / f"{j:04d}.png"
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise InputError(f"tile id {tile_id!r} cannot be used as a file name")
    return path


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(rgb).save(tmp, compress_level=1)
    os.replace(tmp, path)


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    fields = COLUMNS if new else _header(path)  # a resumed run keeps the columns its file began with
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def _header(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return next(csv.reader(fh), COLUMNS) or COLUMNS


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("path")]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: (str(r["source_tile_id"]), int(r["j"]), str(r["path"])))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_preview(path: Path, real: dict[str, np.ndarray], synthetic: dict[str, list[np.ndarray]],
                  labels: dict[str, str], per_row: int = 5, rows: int = 6, cell: int = 128) -> None:
    """Real tiles (first column) beside their synthetic variants, alternating classes."""
    by_class: dict[str, list[str]] = {}
    for tid in sorted(real):
        if synthetic.get(tid):
            by_class.setdefault(labels[tid], []).append(tid)
    order: list[str] = []
    queues = list(by_class.values())
    while len(order) < rows and any(queues):
        for q in queues:
            if q and len(order) < rows:
                order.append(q.pop(0))
    if not order:
        return
    pad = 4
    per_row = min(per_row, max(len(synthetic[t]) for t in order))
    canvas = Image.new("RGB", ((per_row + 1) * (cell + pad) + pad, len(order) * (cell + pad) + pad), "white")
    for r, tid in enumerate(order):
        cells = [real[tid], *synthetic[tid][:per_row]]
        for c, img in enumerate(cells):
            thumb = Image.fromarray(img).resize((cell, cell), Image.Resampling.BILINEAR)
            canvas.paste(thumb, (pad + c * (cell + pad), pad + r * (cell + pad)))
    tmp = path.with_suffix(".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)
