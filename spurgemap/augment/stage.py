"""`spurgemap augment`: DA-Fusion and the other diffusion augmentations, written as a synthetic set.

Entry points: `run_learn_tokens(config, inputs)` (textual inversion on training tiles only) and
`run_augment(config, inputs)` (SYN_DIR with images/, manifest.csv, preview.png, summary.json).
Work is checkpointed per image in SYN_DIR/.work, so a killed run continues without duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spurgemap import __version__
from spurgemap.augment.batching import FP16_HINT, batches
from spurgemap.augment.diffusion import DiffusionModel, describe, lent, load_model
from spurgemap.augment.erase import erase_concepts
from spurgemap.augment.generate import SKIPPED, generate, guard_counts, read_skipped, write_skipped
from spurgemap.augment.manifest import MANIFEST, PROVENANCE, write_provenance
from spurgemap.augment.methods import Generator, methods_used, needs_tokens, plan_jobs
from spurgemap.augment.select import LABEL_NAMES, Selection, select_tiles
from spurgemap.augment.store import (
    load_tokens_into,
    read_rows,
    read_tokens_meta,
    save_tokens,
    write_manifest,
    write_preview,
)
from spurgemap.augment.tokens import learn_tokens
from spurgemap.config import SpurgemapConfig, dump_config
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import run_key
from spurgemap.core.progress import progress
from spurgemap.core.workdir import check_target, preflight, resumable_workdir, staged_dir
from spurgemap.geo.maps import rasterize_on_tiles
from spurgemap.geo.vector import read_tile_index
from spurgemap.tile.tileset import TileSet, load_tile_set

log = logging.getLogger(__name__)


@dataclass
class TokenInputs:
    tiles: Path | TileSet  # a tile-set folder, or one already loaded
    out: Path
    tile_ids: list[str] | None = None  # an explicit selection (evaluate's k-shot draw)
    overwrite: bool = False


@dataclass
class TokenResult:
    out: Path
    tokens: dict[str, str]  # label -> token
    loss_before: dict[str, float]
    loss_after: dict[str, float]
    tiles_used: int
    steps: int
    seconds: float
    tiny_model: bool


def _learn(config: SpurgemapConfig, model: DiffusionModel, sel: Selection, folder: Path) -> TokenResult:
    start = time.perf_counter()
    tc = config.augment.tokens
    if len(tc.tokens) != 2:
        raise InputError("augment.tokens.tokens needs exactly two tokens: absent class, present class")
    pairs = [(tok, name) for tok, name in zip(tc.tokens, LABEL_NAMES, strict=True) if name in sel.labels]
    skipped = [tok for tok, name in zip(tc.tokens, LABEL_NAMES, strict=True) if name not in sel.labels]
    if skipped:
        log.warning("no %s tiles selected: token %s is not learned", "/".join(skipped), ", ".join(skipped))
    images = {tok: sel.tiles.images[sel.index[np.asarray(sel.labels) == name]] for tok, name in pairs}
    with progress(tc.steps * len(images), "learning class tokens", unit="steps") as advance:
        learned = learn_tokens(model.pipe, images, tc, model.resolution, config.seed, advance)
    labels = {name: tok for tok, name in pairs}
    meta = {
        "spurgemap_version": __version__, "model_id": model.model_id, "model_hash": model.model_hash,
        "tiny_model": model.tiny, "labels": labels,
        "num_vectors": tc.num_vectors, "steps": tc.steps, "seed": config.seed, "tile_ids": sel.ids,
        "loss_before": learned.loss_before, "loss_after": learned.loss_after,
        "loss_curve": {k: [round(v, 5) for v in c] for k, c in learned.curves.items()},
        "config": config.augment.tokens.model_dump(mode="json"),
    }
    save_tokens(folder, learned.embeddings, meta)
    seconds = time.perf_counter() - start
    log.info("learned %s from %d tiles in %.1f s (%.1f steps/s)", ", ".join(tc.tokens), len(sel.index),
             seconds, tc.steps * len(images) / max(seconds, 1e-9))
    return TokenResult(folder, labels, learned.loss_before, learned.loss_after, len(sel.index),
                       tc.steps, seconds, model.tiny)


ERASED_UNET = "erased_unet.safetensors"


def _apply_erasure(config: SpurgemapConfig, model: DiffusionModel, places: list[Path], save_to: Path) -> None:
    """Erase the configured concepts from the loaded UNet (never from the files on disk), reusing an
    erased UNet saved earlier for the same model content and erase settings (not the seed: erasure
    draws from a fixed seed, so every seed and k of an experiment shares one erased UNet)."""
    ec = config.augment.erase
    if not ec.concepts:
        return
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    key = run_key(model.model_hash, ec.model_dump_json(exclude={"cache_dir"}), length=12)
    cache = Path(ec.cache_dir).expanduser() if ec.cache_dir else None
    name = f"erased-unet-{key}.safetensors" if cache else ERASED_UNET
    candidates = ([cache / name] if cache else []) + [folder / ERASED_UNET for folder in places]
    for path in candidates:
        if path.exists():
            with safe_open(str(path), "pt") as fh:
                if (fh.metadata() or {}).get("key") == key:
                    state = load_file(str(path), device=str(model.device))
                    model.pipe.unet.load_state_dict({k: v.to(model.dtype) for k, v in state.items()})
                    log.info("erased UNet (%s) reused from %s", ", ".join(ec.concepts), path)
                    break
    else:
        with progress(ec.iterations, f"erasing {', '.join(ec.concepts)}", unit="it") as advance:
            res = erase_concepts(model.pipe, ec, model.resolution, 0, advance)
        log.info("concept erasure: ESD objective %.4f -> %.4f after %d iterations", res.loss_before,
                 res.loss_after, res.iterations)
        target = (cache or save_to) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        state = {k: v.contiguous() for k, v in model.pipe.unet.state_dict().items()}
        save_file(state, str(tmp), metadata={"key": key, "concepts": json.dumps(ec.concepts),
                                             "loss_before": f"{res.loss_before:.6f}",
                                             "loss_after": f"{res.loss_after:.6f}"})
        os.replace(tmp, target)
    model.model_hash = f"{model.model_hash}-erased-{key}"
    model.model_id = f"{model.model_id} (erased: {', '.join(ec.concepts)})"


def _model(config: SpurgemapConfig) -> DiffusionModel:
    a = config.augment
    return load_model(a.model, allow_download=a.allow_download, config_source=a.model_config_dir,
                      device=a.device, dtype=a.dtype)


def run_learn_tokens(config: SpurgemapConfig, inputs: TokenInputs) -> TokenResult:
    a = config.augment
    tiles = inputs.tiles.root if isinstance(inputs.tiles, TileSet) else inputs.tiles
    check_target(inputs.out, inputs.overwrite, [tiles])
    sel = select_tiles(_tile_set(inputs.tiles), a.sites, a.shots, config.seed, inputs.tile_ids)
    model = _model(config)
    with staged_dir(inputs.out, inputs.overwrite, "augment learn-tokens", [tiles]) as tmp:
        _apply_erasure(config, model, [], tmp)
        res = _learn(config, model, sel, tmp)
        (tmp / "config.yaml").write_text(dump_config(config))
    res.out = inputs.out
    return res


@dataclass
class AugmentInputs:
    tiles: Path | TileSet  # a tile-set folder, or one already loaded
    out: Path
    tokens: Path | None = None
    mask_layer: Path | None = None
    tile_ids: list[str] | None = None
    overwrite: bool = False
    # Several processes (accelerate launch): this one makes every `world`-th batch; rank 0 prepares
    # (work folder, erasure, tokens) before the others start and writes the manifest after they end.
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] | None = None  # accelerate's wait_for_everyone
    model: DiffusionModel | None = None  # already loaded (evaluate's grid): used, then put back as it was


@dataclass
class AugmentResult:
    out: Path
    images: int
    generated: int  # this run (less than images when resumed)
    per_method: dict[str, int]
    per_label: dict[str, int]
    seconds: float
    images_per_second: float
    resumed: bool
    tiny_model: bool
    tokens: Path | None = None
    token_result: TokenResult | None = field(default=None, repr=False)
    guard: dict[str, dict[str, int]] = field(default_factory=dict)  # per method: retried (kept), skipped


def _inputs(inputs: AugmentInputs) -> list[Path | None]:
    """What --out must not equal, contain or lie inside (tokens may be OUT/tokens of an earlier run)."""
    tiles = inputs.tiles.root if isinstance(inputs.tiles, TileSet) else inputs.tiles
    tokens = inputs.tokens
    if tokens is not None and Path(tokens).resolve().is_relative_to(Path(inputs.out).resolve()):
        tokens = None
    return [tiles, inputs.mask_layer, tokens]


def _key(config: SpurgemapConfig, sel: Selection, model: DiffusionModel, inputs: AugmentInputs) -> str:
    text = "|".join([dump_config(config), sel.tiles.digest, ",".join(sel.ids), model.model_hash,
                     str(inputs.tokens.resolve()) if inputs.tokens else "",
                     str(inputs.mask_layer.resolve()) if inputs.mask_layer else ""])
    return run_key(text)


def _check_token_leakage(meta: dict[str, Any], sel: Selection, folder: Path) -> None:
    extra = sorted(set(meta.get("tile_ids", [])) - set(sel.ids))
    if extra:
        raise InputError(f"{folder}: these tokens were learned from {len(extra)} tile(s) outside the tiles being "
                         f"augmented (e.g. {extra[0]}); learn tokens from the same training selection")


def run_augment(config: SpurgemapConfig, inputs: AugmentInputs) -> AugmentResult:
    start = time.perf_counter()
    a = config.augment
    preflight(inputs.out, inputs.overwrite and not inputs.rank, _inputs(inputs))
    methods_used(a)  # validates compose settings before anything loads
    sel = select_tiles(_tile_set(inputs.tiles), a.sites, a.shots, config.seed, inputs.tile_ids)
    if inputs.tokens is not None and not needs_tokens(a):
        log.warning("--tokens is ignored: method %s uses no learned tokens", a.method)
    elif inputs.tokens is not None:
        _check_token_leakage(read_tokens_meta(inputs.tokens), sel, inputs.tokens)
    if (inputs.out / MANIFEST).exists() and not inputs.overwrite:
        raise InputError(f"{inputs.out}: already holds a finished synthetic set; pass --overwrite to replace it")
    existed = inputs.out.exists()
    if inputs.model is None or a.erase.concepts:  # erasure rewrites the UNet: never on a lent model
        return _run(config, inputs, sel, _model(config), existed, start)
    with lent(inputs.model) as model:
        return _run(config, inputs, sel, model, existed, start)


def _run(config: SpurgemapConfig, inputs: AugmentInputs, sel: Selection, model: DiffusionModel, existed: bool,
         start: float) -> AugmentResult:
    a = config.augment
    gen = Generator(model, a)
    masks = None
    if "inpaint" in methods_used(a) and a.inpaint.mask == "layer":
        if inputs.mask_layer is None:
            raise InputError("augment.inpaint.mask is 'layer' but no --mask-layer was given")
        root = sel.tiles.root
        if root is None:
            raise InputError("--mask-layer needs the tile set's folder (the tiles' georeference); pass TILES_DIR")
        paths = [root / p for p in _tile_paths(root, sel.ids)]
        masks = rasterize_on_tiles(paths, inputs.mask_layer)
    sync = inputs.barrier or (lambda: None)
    if inputs.rank:
        sync()  # main process first: the others reuse its work folder, erased UNet and tokens
    work, resumed = resumable_workdir(inputs.out, inputs.overwrite and not inputs.rank,
                                      _key(config, sel, model, inputs), "augment", _inputs(inputs))
    if not resumed and not inputs.rank:  # --overwrite: nothing of an earlier run (other tiles, seed, tokens)
        _clear_outputs(inputs.out, keep=inputs.tokens)
    _apply_erasure(config, model, [p for p in (inputs.tokens, inputs.out) if p is not None], inputs.out)
    token_res = None
    labels_to_tokens: dict[str, str] = {}
    token_tiles: list[str] | None = None
    if needs_tokens(a):
        folder = inputs.tokens or inputs.out / "tokens"
        if inputs.tokens is None and not (folder / "tokens.json").exists():
            token_res = _learn(config, model, sel, folder)
        labels_to_tokens = load_tokens_into(model.pipe, folder, model.model_hash)
        token_tiles = list(read_tokens_meta(folder).get("tile_ids", []))
        if not inputs.rank:
            write_provenance(inputs.out, token_tiles, str(folder.resolve()))
    elif not inputs.rank:
        write_provenance(inputs.out, None, None)
    if not inputs.rank:
        sync()
    jobs = plan_jobs(sel.ids, sel.labels, a, labels_to_tokens, config.seed)
    rows = _done_rows(work, inputs.out)
    done = {(r["source_tile_id"], int(r["j"])) for r in [*rows, *read_skipped(work)]}
    todo = [jb for jb in jobs if (jb.tile_id, jb.j) not in done]
    if resumed and done:
        log.info("resuming: %d of %d images already made", len(done), len(jobs))
    if inputs.world > 1:  # whole batches, so each image is made exactly as in one process
        todo = [jb for b in batches(todo, gen.cfg.batch_size)[inputs.rank::inputs.world] for jb in b]
    generated = generate(gen, sel, todo, masks, inputs.out, work, inputs.rank, rows, model)
    if inputs.world > 1:
        sync()
        if inputs.rank:  # rank 0 writes the manifest and summary (and removes the work folder)
            return AugmentResult(inputs.out, 0, generated, {}, {}, time.perf_counter() - start, 0.0, resumed,
                                 model.tiny)
        rows = _done_rows(work, inputs.out)
        generated = len(rows) - len(done)
    skipped = read_skipped(work)
    if skipped and not rows:
        _give_up(inputs, existed, skipped, a.retries)
    seconds = time.perf_counter() - start
    _finish(config, inputs, sel, rows, model, work, seconds, generated, skipped)
    return AugmentResult(
        inputs.out, len(rows), generated, dict(Counter(r["method"] for r in rows)),
        dict(Counter(r["label"] for r in rows)), seconds, generated / max(seconds, 1e-9), resumed, model.tiny,
        inputs.tokens or (inputs.out / "tokens" if needs_tokens(a) else None), token_res,
        guard_counts(rows, skipped))


def _give_up(inputs: AugmentInputs, existed: bool, skipped: list[dict[str, str]], retries: int) -> None:
    """Every image was rejected: remove what this run wrote (all of OUT if it made OUT) and say why."""
    reasons = Counter(r["reason"] for r in skipped)
    if existed:
        _clear_outputs(inputs.out, keep=inputs.tokens)
        shutil.rmtree(inputs.out / ".work", ignore_errors=True)
    else:
        shutil.rmtree(inputs.out, ignore_errors=True)
    raise InputError(f"{inputs.out}: all {len(skipped)} synthetic images were rejected "
                     f"({', '.join(f'{n} {why}' for why, n in reasons.most_common())}) even after {retries} "
                     f"retries with other seeds, so nothing was written; {FP16_HINT}")


def _done_rows(work: Path, out: Path) -> list[dict[str, Any]]:
    """Images already made, by every process (rows.csv, rows-<rank>.csv)."""
    return [r for f in sorted(work.glob("rows*.csv")) for r in read_rows(f) if (out / r["path"]).exists()]


def _clear_outputs(out: Path, keep: Path | None) -> None:
    for name in ("images", "tokens", MANIFEST, PROVENANCE, SKIPPED, "preview.png", "summary.json"):
        path = out / name
        if keep is not None and (path.resolve() == keep.resolve() or path.resolve() in keep.resolve().parents):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _tile_set(tiles: Path | TileSet) -> TileSet:
    return tiles if isinstance(tiles, TileSet) else load_tile_set(tiles)


def _tile_paths(tiles_dir: Path, ids: list[str]) -> list[str]:
    index = read_tile_index(tiles_dir / "tiles.gpkg").set_index("tile_id")
    return [str(index.loc[t, "path"]) for t in ids]


def _finish(config: SpurgemapConfig, inputs: AugmentInputs, sel: Selection, rows: list[dict[str, Any]],
            model: DiffusionModel, work: Path, seconds: float, generated: int,
            skipped: list[dict[str, str]]) -> None:
    out = inputs.out
    write_manifest(out / MANIFEST, rows)
    if skipped:  # jobs the NaN / constant-image guard gave up on: no image, so not in the manifest
        write_skipped(out / SKIPPED, skipped)
    real = {sel.ids[k]: sel.tiles.images[i] for k, i in enumerate(sel.index)}
    syn: dict[str, list[np.ndarray]] = {}
    for r in sorted(rows, key=lambda r: (r["source_tile_id"], int(r["j"]))):
        if len(syn.setdefault(r["source_tile_id"], [])) < 5:
            with Image.open(out / r["path"]) as im:
                syn[r["source_tile_id"]].append(np.asarray(im.convert("RGB")))
    write_preview(out / "preview.png", real, syn, dict(zip(sel.ids, sel.labels, strict=True)))
    summary = {
        "spurgemap_version": __version__, "images": len(rows), "generated_this_run": generated,
        "real_tiles": len(sel.index), "per_method": dict(Counter(r["method"] for r in rows)),
        "per_label": dict(Counter(r["label"] for r in rows)), "seconds": round(seconds, 2),
        "notes": dict(Counter(r["note"] for r in rows if r.get("note"))),
        "guard": guard_counts(rows, skipped),  # per method: kept after a retry, skipped (see skipped.csv)
        "images_per_second": round(generated / max(seconds, 1e-9), 3), "model": describe(model),
        "tile_set": str(sel.tiles.root), "tile_set_hash": sel.tiles.digest,
        "warning": ("generated with a TINY RANDOM diffusion model: these images test the mechanics "
                    "and carry no information") if model.tiny else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "config.yaml").write_text(dump_config(config))
    shutil.rmtree(work, ignore_errors=True)
