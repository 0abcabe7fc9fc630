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
from spurgemap.augment.diffusion import content_hash
from spurgemap.augment.manifest import MANIFEST
from spurgemap.augment.methods import METHODS
from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import run_key
from spurgemap.core.ids import safe_id
from spurgemap.evaluate.report import write_reports
from spurgemap.tile.tileset import TileSet, load_tile_set
from spurgemap.train.draw import draw_tile_ids
from spurgemap.train.stage import TrainInputs, run_train

log = logging.getLogger(__name__)
CLASSIC = {"baseline", "randaugment"}
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
    cfg.train.augment.randaugment = method == "randaugment"
    if method not in CLASSIC:
        cfg.augment.method = method  # type: ignore[assignment]  # validated by the schema below
        cfg.augment.model = config.evaluate.diffusion_model or config.augment.model
        cfg.augment.sites = []
        cfg.augment.shots = None
    return type(cfg).model_validate(cfg.model_dump())


def _run_dir(root: Path, cfg: SpurgemapConfig, method: str, k: int, seed: int, digest: str,
             model_hash: str) -> Path:
    """A cell's folder, keyed by everything its result depends on: the code version, the settings,
    the tiles with their sites, and the diffusion model's content (not its path)."""
    parts = [__version__, cfg.train.model_dump_json(), cfg.labels.model_dump_json(), str(cfg.seed), digest]
    if method not in CLASSIC:  # generation settings matter only to generative runs
        parts += [cfg.augment.model_dump_json(exclude={"model": True, "erase": {"cache_dir"}}), model_hash]
    key = run_key(*parts, length=12)
    return root / "runs" / safe_id(method) / f"k{k}" / f"seed{seed}-{key}"


def _one_run(cfg: SpurgemapConfig, tiles: TileSet, method: str, k: int,
             run: Path, cache: Path) -> tuple[dict[str, Any], bool]:
    """Train (and generate) one grid cell unless its finished metrics are already on disk."""
    metrics_path = run / "train" / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text()), False
    synthetic: list[Path] = []
    chosen = draw_tile_ids(tiles, cfg.train, cfg.seed)  # drawn once: augment and train get these very tiles
    if method not in CLASSIC:
        syn = run / "synthetic"
        if not (syn / MANIFEST).exists():
            run_augment(cfg, AugmentInputs(tiles, syn, tile_ids=chosen))
        synthetic = [syn]
    res = run_train(cfg, TrainInputs(tiles, run / "train", synthetic, feature_cache=cache, tile_ids=chosen))
    return res.metrics, True


def _rows(method: str, k: int, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for split, block in (("validation", metrics.get("validation")), ("test", metrics.get("test"))):
        for name in METRICS:
            value = (block or {}).get(name)
            rows.append({"method": method, "k": k, "seed": seed, "split": split, "metric": name,
                         "value": float("nan") if value is None else float(value)})
    return rows


def run_evaluate(config: SpurgemapConfig, inputs: EvaluateInputs) -> EvaluateResult:
    start = time.perf_counter()
    e = config.evaluate
    unknown = [m for m in e.methods if m not in CLASSIC | set(METHODS) | {"compose"}]
    if unknown or not e.methods:
        raise InputError(f"--methods: unknown {unknown}; choose from baseline, randaugment, "
                         f"{', '.join(METHODS)}, compose")
    generative = [m for m in e.methods if m not in CLASSIC]
    if generative and not (e.diffusion_model or config.augment.model):
        raise InputError(f"methods {generative} need a diffusion model: pass --diffusion-model "
                         "(a diffusers folder; `spurgemap augment tiny-model DIR` makes a tiny random one)")
    tiles = inputs.tiles
    if not isinstance(tiles, TileSet):
        tiles = load_tile_set(tiles, config.train.group_column)
    out = inputs.out
    out.mkdir(parents=True, exist_ok=True)
    config, val, test, digest, model_hash = _grid_keys(config, tiles, out)
    grid = [(m, k, s) for m in e.methods for k in e.shots for s in e.seeds]
    rows: list[dict[str, Any]] = []
    trained, times = 0, []
    tiny = False
    for n, (method, k, seed) in enumerate(grid, start=1):
        cfg = _run_config(config, method, k, seed, val, test)
        run = _run_dir(out, cfg, method, k, seed, digest, model_hash)
        t0 = time.perf_counter()
        metrics, fresh = _one_run(cfg, tiles, method, k, run, out / "cache" / "features")
        if method not in CLASSIC:
            tiny = tiny or _synthetic_is_tiny(run / "synthetic")
        rows += _rows(method, k, seed, metrics)
        if fresh:
            trained += 1
            times.append(time.perf_counter() - t0)
        left = len(grid) - n
        eta = f", ETA {np.mean(times) * left / 60:.1f} min" if times and left else ""
        test_ba = (metrics.get("test") or {}).get("balanced_accuracy", float("nan"))
        log.info("[%d/%d] %s k=%d seed=%d: test balanced accuracy %.3f (%s)%s", n, len(grid), method, k, seed,
                 test_ba, "trained" if fresh else "cached", eta)
    results = pd.DataFrame(rows, columns=["method", "k", "seed", "split", "metric", "value"])
    write_reports(out, results, config, val, test, tiny, tiles.root)
    return EvaluateResult(out, results, len(grid), trained, time.perf_counter() - start, val, test, tiny)


def _grid_keys(config: SpurgemapConfig, tiles: TileSet,
               out: Path) -> tuple[SpurgemapConfig, list[str], list[str], str, str]:
    """What names a grid cell's folder: sites, tile set (with its site mapping) and model content."""
    e = config.evaluate
    val, test = _sites(tiles, config)
    generative = [m for m in e.methods if m not in CLASSIC]
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
