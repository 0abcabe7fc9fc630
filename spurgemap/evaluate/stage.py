"""`spurgemap evaluate`: the DA-Fusion few-shot experiment, stricter than the paper's protocol.

For every (method, k, seed): draw k training tiles per class from the training sites, learn tokens
and generate synthetic tiles from those only, train, select on the validation sites, and report
on test sites that never took part in any choice. Each run lives in its own folder keyed by its
settings, so a rerun or an added method reuses finished work and a killed run resumes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurgemap import __version__
from spurgemap.augment.diffusion import DiffusionModel, content_hash, load_model
from spurgemap.augment.manifest import MANIFEST
from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import run_key
from spurgemap.core.ids import safe_id
from spurgemap.core.workdir import claim_dir, preflight
from spurgemap.evaluate.protocol import apply_protocol, parse_arm
from spurgemap.evaluate.report import write_reports
from spurgemap.tile.tileset import TileSet, load_tile_set
from spurgemap.train.draw import draw_tile_ids
from spurgemap.train.stage import TrainInputs, run_train

log = logging.getLogger(__name__)
METRICS = ("balanced_accuracy", "roc_auc", "accuracy")


@dataclass
class EvaluateInputs:
    tiles: Path | TileSet  # a tile-set folder, or one already loaded
    out: Path


@dataclass
class EvaluateResult:
    out: Path
    results: pd.DataFrame
    runs: int
    trained: int  # runs trained in this call (0 when everything was cached)
    seconds: float
    val_sites: list[str]
    test_sites: list[str]
    tiny_model: bool


def _sites(tiles: TileSet, config: SpurgemapConfig) -> tuple[list[str], list[str]]:
    e = config.evaluate
    sites = sorted(set(tiles.groups.tolist()))
    val, test = list(e.val_sites), list(e.test_sites)
    if not val and not test:
        if len(sites) < 3:
            raise InputError(f"evaluate needs at least 3 sites (train, validation, test); the tile set has {sites}")
        val, test = [sites[-2]], [sites[-1]]
    elif not val or not test:
        raise InputError("give both --val-sites and --test-sites (or neither, for the automatic choice)")
    unknown = sorted(set(val + test) - set(sites))
    if unknown:
        raise InputError(f"unknown sites {unknown}; the tile set has {sites}")
    if set(val) & set(test):
        raise InputError(f"sites {sorted(set(val) & set(test))} are both validation and test")
    if not set(sites) - set(val) - set(test):
        raise InputError("no site is left for training once validation and test sites are taken")
    return val, test


def _run_config(config: SpurgemapConfig, method: str, k: int, seed: int, val: list[str],
                test: list[str]) -> SpurgemapConfig:
    cfg = config.model_copy(deep=True)
    cfg.seed = seed
    cfg.train.shots = k
    cfg.train.val_sites = val
    cfg.train.test_sites = test
    arm = parse_arm(method)
    cfg.train.augment.randaugment = arm.randaugment  # on top of synthetic tiles for "<method>+randaugment"
    if arm.generative:
        cfg.augment.method = arm.method  # type: ignore[assignment]  # validated by the schema below
        cfg.augment.model = config.evaluate.diffusion_model or config.augment.model
        cfg.augment.sites = []
        cfg.augment.shots = None
    return type(cfg).model_validate(cfg.model_dump())


def _run_dir(root: Path, cfg: SpurgemapConfig, method: str, k: int, seed: int, digest: str,
             model_hash: str) -> Path:
    """A cell's folder, keyed by everything its result depends on: the code version, the settings,
    the tiles with their sites, and the diffusion model's content (not its path)."""
    parts = [__version__, cfg.train.model_dump_json(), cfg.labels.model_dump_json(), str(cfg.seed), digest]
    if parse_arm(method).generative:  # generation settings matter only to generative runs
        parts += [cfg.augment.model_dump_json(exclude={"model": True, "erase": {"cache_dir"}}), model_hash]
    key = run_key(*parts, length=12)
    return root / "runs" / safe_id(method) / f"k{k}" / f"seed{seed}-{key}"


class SharedModel:
    """The diffusion model of a grid, loaded once on first use and lent to every generative cell
    (augment puts it back as it found it); with concept erasure each cell loads its own, since
    erasure rewrites the UNet."""

    def __init__(self, config: SpurgemapConfig, model_hash: str) -> None:
        self.config = config
        self.model_hash = model_hash  # content_hash of the model folder, computed once for the cell keys
        self.model: DiffusionModel | None = None
        self.loads = 0

    def get(self) -> DiffusionModel | None:
        a = self.config.augment
        if a.erase.concepts:
            return None
        if self.model is None:
            self.model = load_model(self.config.evaluate.diffusion_model or a.model, allow_download=a.allow_download,
                                    config_source=a.model_config_dir, device=a.device, dtype=a.dtype,
                                    known_hash=self.model_hash or None)
            self.loads += 1
        return self.model


def _one_run(cfg: SpurgemapConfig, tiles: TileSet, method: str, k: int,
             run: Path, cache: Path, shared: SharedModel | None = None) -> tuple[dict[str, Any], bool]:
    """Train (and generate) one grid cell unless its finished metrics are already on disk."""
    metrics_path = run / "train" / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text()), False
    synthetic: list[Path] = []
    chosen = draw_tile_ids(tiles, cfg.train, cfg.seed)  # drawn once: augment and train get these very tiles
    if parse_arm(method).generative:
        syn = run / "synthetic"
        if not (syn / MANIFEST).exists():
            run_augment(cfg, AugmentInputs(tiles, syn, tile_ids=chosen, model=shared.get() if shared else None))
        synthetic = [syn]
    res = run_train(cfg, TrainInputs(tiles, run / "train", synthetic, feature_cache=cache, tile_ids=chosen))
    return res.metrics, True


def _rows(method: str, k: int, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for split, block in (("validation", metrics.get("validation")), ("test", metrics.get("test"))):
        for name in METRICS:
            value = (block or {}).get(name)
            rows.append({"method": method, "k": k, "seed": seed, "split": split, "metric": name,
                         "value": float("nan") if value is None else float(value),
                         "randaugment": parse_arm(method).randaugment})
    return rows


def run_evaluate(config: SpurgemapConfig, inputs: EvaluateInputs) -> EvaluateResult:
    start = time.perf_counter()
    e = config.evaluate
    if not e.methods:
        raise InputError("--methods: empty; name at least one arm, e.g. baseline,dafusion")
    generative = [m for m in e.methods if parse_arm(m).generative]
    if generative and not (e.diffusion_model or config.augment.model):
        raise InputError(f"methods {generative} need a diffusion model: pass --diffusion-model "
                         "(a diffusers folder; `spurgemap augment tiny-model DIR` makes a tiny random one)")
    tiles = inputs.tiles
    # evaluate adds to its folder like an overwrite: only to one spurgemap wrote
    preflight(inputs.out, True, [tiles.root if isinstance(tiles, TileSet) else tiles])
    if not isinstance(tiles, TileSet):
        tiles = load_tile_set(tiles, config.train.group_column)
    out = claim_dir(inputs.out, "evaluate", [tiles.root])
    config, val, test, digest, model_hash = _grid_keys(config, tiles, out)
    shared = SharedModel(config, model_hash)
    grid = [(m, k, s) for m in e.methods for k in e.shots for s in e.seeds]
    rows: list[dict[str, Any]] = []
    trained, times = 0, dict[str, list[float]]()
    tiny = False
    for n, (method, k, seed) in enumerate(grid, start=1):
        cfg = _run_config(config, method, k, seed, val, test)
        run = _run_dir(out, cfg, method, k, seed, digest, model_hash)
        t0 = time.perf_counter()
        metrics, fresh = _one_run(cfg, tiles, method, k, run, out / "cache" / "features", shared)
        if parse_arm(method).generative:
            tiny = tiny or _synthetic_is_tiny(run / "synthetic")
        rows += _rows(method, k, seed, metrics)
        if fresh:
            trained += 1
            times.setdefault(method, []).append(time.perf_counter() - t0)
        eta = _eta(times, [m for m, _, _ in grid[n:]])
        test_ba = (metrics.get("test") or {}).get("balanced_accuracy", float("nan"))
        log.info("[%d/%d] %s k=%d seed=%d: test balanced accuracy %.3f (%s)%s", n, len(grid), method, k, seed,
                 test_ba, "trained" if fresh else "cached", eta)
    results = pd.DataFrame(rows, columns=["method", "k", "seed", "split", "metric", "value", "randaugment"])
    write_reports(out, results, config, val, test, tiny, tiles.root)
    return EvaluateResult(out, results, len(grid), trained, time.perf_counter() - start, val, test, tiny)


def _eta(times: dict[str, list[float]], left: list[str]) -> str:
    """Time left, from the cells measured so far of the same arm (arms cost very differently); an arm
    with no finished cell yet is guessed from the others and said so. Cached cells may lower it."""
    if not left or not times:
        return ""
    every = [t for ts in times.values() for t in ts]
    seconds = sum(float(np.mean(times.get(m) or every)) for m in left)
    guessed = sorted({m for m in left if m not in times})
    return f", ETA {seconds / 60:.1f} min" + (f" (guessed for {', '.join(guessed)})" if guessed else "")


def _grid_keys(config: SpurgemapConfig, tiles: TileSet,
               out: Path) -> tuple[SpurgemapConfig, list[str], list[str], str, str]:
    """What names a grid cell's folder: sites, tile set (with its site mapping) and model content."""
    config = apply_protocol(config)
    e = config.evaluate
    val, test = _sites(tiles, config)
    generative = [m for m in e.methods if parse_arm(m).generative]
    model_spec = e.diffusion_model or config.augment.model
    model_hash = content_hash(model_spec) if generative and model_spec else ""
    digest = run_key(tiles.digest, *tiles.tile_ids, *map(str, tiles.sites), *map(str, tiles.groups))
    if generative and config.augment.erase.concepts and not config.augment.erase.cache_dir:  # one erased UNet
        # for the whole grid (set only when erasing: the folder lands in every bundle's training config)
        config = config.model_copy(deep=True)
        config.augment.erase.cache_dir = str(out / "cache" / "erased")
    return config, val, test, digest, model_hash


def evaluate_cell(config: SpurgemapConfig, tiles: TileSet, out: Path, method: str, k: int, seed: int) -> bool:
    """One grid cell exactly as `run_evaluate` runs it (same folder, same cache); True if trained now.

    For running cells elsewhere (campaign.grid: Dask tasks); `run_evaluate` then finds them cached.
    """
    config, val, test, digest, model_hash = _grid_keys(config, tiles, out)
    cfg = _run_config(config, method, k, seed, val, test)
    run = _run_dir(out, cfg, method, k, seed, digest, model_hash)
    return _one_run(cfg, tiles, method, k, run, out / "cache" / "features")[1]


def _synthetic_is_tiny(syn: Path) -> bool:
    path = syn / "summary.json"
    return bool(path.exists() and json.loads(path.read_text())["model"].get("tiny_random"))
