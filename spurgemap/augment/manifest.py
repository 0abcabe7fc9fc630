"""The synthetic-set format: `manifest.csv` rows tie each synthetic image to its source tile.

That tie (`source_tile_id`) is what lets the leakage guard drop every variant of a validation or
test tile before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from spurgemap.core.errors import InputError
from spurgemap.tile.tileset import LABELS, TileSet

# One row per synthetic image; `augment` writes it, `train` reads it.
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["path", "source_tile_id", "label", "method", "strength", "seed", "prompt", "model_id"]
# Beside the manifest: what else the set learned from (the class tokens' training tiles), so `train`
# can refuse a set whose tokens saw validation or test tiles without needing the tokens folder.
PROVENANCE = "provenance.json"


def write_provenance(folder: Path, token_tile_ids: list[str] | None, tokens: str | None) -> None:
    tmp = folder / (PROVENANCE + ".tmp")
    tmp.write_text(json.dumps({"token_tile_ids": token_tile_ids, "tokens": tokens}, indent=2))
    tmp.replace(folder / PROVENANCE)


def read_token_tiles(folder: Path) -> list[str] | None:
    """Tiles the set's class tokens were learned from; None when it used no tokens (or is too old to say)."""
    path = folder / PROVENANCE
    if not path.exists():  # a set written before provenance.json: its own tokens folder may say
        path = folder / "tokens" / "tokens.json"
        if not path.exists():
            return None
        try:
            return list(json.loads(path.read_text())["tile_ids"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: malformed; it needs \"tile_ids\", the tiles the tokens were learned "
                             "from; write the set again with `spurgemap augment --overwrite`") from None
    try:
        meta = json.loads(path.read_text())
        ids = meta["token_tile_ids"]
        if ids is not None and not (isinstance(ids, list) and all(isinstance(t, str) for t in ids)):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: malformed; it must be JSON with \"token_tile_ids\": a list of tile ids "
                         "(or null); write the set again with `spurgemap augment`") from None
    return ids


@dataclass
class SyntheticSet:
    images: np.ndarray  # (M, H, W, 3) uint8, resized to the tile size
    source: np.ndarray  # index into TileSet per synthetic image
    labels: np.ndarray
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    token_tiles: dict[str, list[int]] = field(default_factory=dict)  # set folder -> tiles its tokens saw

    def __len__(self) -> int:
        return len(self.source)


def _read_image(path: Path, size: int, manifest: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{manifest}: lists {path.name} but {path} is missing; the set is incomplete - "
                         "write it again with `spurgemap augment --overwrite`")
    try:
        with Image.open(path) as src:
            rgb = src.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def load_synthetic(dirs: list[Path], tiles: TileSet) -> SyntheticSet:
    """Read augment outputs; refuse manifests that do not belong to this tile set."""
    index = {tid: i for i, tid in enumerate(tiles.tile_ids)}
    images, source, labels, rows = [], [], [], []
    token_tiles: dict[str, list[int]] = {}
    for d in dirs:
        d = Path(d)
        manifest = d / MANIFEST
        if not manifest.exists():
            raise InputError(f"{d}: no {MANIFEST}; pass a folder written by `spurgemap augment`")
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{manifest}: missing columns {missing}; a manifest written by `spurgemap augment` "
                             f"has {', '.join(MANIFEST_COLUMNS)}")
        unknown = sorted(set(df.source_tile_id) - set(index))
        if unknown:
            raise InputError(f"{manifest}: does not match the tile set: source tiles {unknown[:5]} "
                             f"({len(unknown)} in all) are not in it")
        bad_label = df[df.label.map(LABELS).isna()]
        if len(bad_label):
            raise InputError(f"{manifest}: unknown labels {sorted(set(bad_label.label))[:5]}")
        for row in df.itertuples():
            src = index[row.source_tile_id]
            if LABELS[row.label] != tiles.labels[src]:
                raise InputError(f"{manifest}: {row.path} is labelled {row.label} but its source tile "
                                 f"{row.source_tile_id} is not; the manifest does not match the tile set")
            path = (d / row.path).resolve()
            if d.resolve() not in path.parents:
                raise InputError(f"{manifest}: path {row.path!r} points outside {d}")
            images.append(_read_image(path, tiles.tile_px, manifest))
            source.append(src)
            labels.append(LABELS[row.label])
        rows.append(df.assign(synthetic_dir=str(d)))
        ids = read_token_tiles(d)
        if ids is not None:
            token_tiles[str(d)] = [index[t] for t in ids if t in index]
            if len(token_tiles[str(d)]) < len(ids):
                raise InputError(f"{d / PROVENANCE}: its class tokens were learned from tiles that are not in "
                                 "this tile set; make the synthetic set from this tile set")
    shape = (0, tiles.tile_px, tiles.tile_px, 3)
    return SyntheticSet(
        images=np.stack(images) if images else np.zeros(shape, np.uint8),
        source=np.asarray(source, dtype=np.int64), labels=np.asarray(labels, dtype=np.int64),
        rows=pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=MANIFEST_COLUMNS),
        token_tiles=token_tiles,
    )


def restrict_synthetic(syn: SyntheticSet, train_idx: np.ndarray) -> np.ndarray:
    """Indices of synthetic images usable in training: only variants of training tiles.

    This is the leakage guard: a variant of a validation or test tile never reaches training.
    """
    allowed = np.isin(syn.source, train_idx)
    return np.flatnonzero(allowed)


def token_leaks(syn: SyntheticSet, held_out: np.ndarray) -> dict[str, np.ndarray]:
    """Set folder -> held-out (validation/test) tiles its class tokens were learned from.

    The second leakage guard: dropping variants of held-out tiles is not enough when the tokens that
    shaped every variant were learned from those tiles.
    """
    out = {}
    for folder, tiles in syn.token_tiles.items():
        bad = np.intersect1d(np.asarray(tiles, dtype=np.int64), held_out)
        if len(bad):
            out[folder] = bad
    return out
