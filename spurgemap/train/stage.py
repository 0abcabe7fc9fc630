"""`spurgemap train`: a presence classifier validated on held-out sites, saved as one bundle.

Entry point: `run_train(config, inputs) -> TrainResult`. Phases: one per validation split (a fold,
or the explicit --val-sites), then, for cross-validation, a final fit on all non-test sites for the
epoch count the folds chose. Each epoch is checkpointed in RUN_DIR/.work, so a killed run resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from spurgemap import __version__
from spurgemap.augment.manifest import SyntheticSet, load_synthetic, restrict_synthetic, token_leaks
from spurgemap.config import SpurgemapConfig, dump_config
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import run_key
from spurgemap.core.progress import progress
from spurgemap.core.workdir import preflight, resumable_workdir
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import BundleMeta
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.model.engine import (
    Batchable,
    Trainer,
    cacheable,
    epoch_draws,
    extract_features,
    freeze_early_stages,
    freeze_for_probe,
    plot_bags,
    preserved_torch_state,
    views_cached,
)
from spurgemap.model.onnx import tile_onnx
from spurgemap.model.preprocess import Prep
from spurgemap.model.views import randaugment_views
from spurgemap.tile.tileset import TileSet, load_tile_set
from spurgemap.train.draw import TrainDraw, plan_training
from spurgemap.train.features import onnx_features
from spurgemap.train.operating import final_metrics
from spurgemap.train.report import write_pictures

log = logging.getLogger(__name__)
CHECKPOINT_SECONDS = 10.0


@dataclass
class TrainInputs:
    tiles: Path | TileSet  # a tile-set folder, or one already loaded (evaluate loads it once)
    out: Path
    synthetic: list[Path] = field(default_factory=list)
    overwrite: bool = False
    feature_cache: Path | None = None  # folder sharing frozen-backbone features of real tiles across runs
    tile_ids: list[str] | None = None  # fit on exactly these (evaluate's draw, `train.draw.draw_tile_ids`)


@dataclass
class TrainResult:
    out: Path
    bundle: Path
    metrics: dict[str, Any]
    seconds: float
    resumed: bool
    tile_ids: list[str] = field(default_factory=list)  # the tiles the bundled model was fitted on

    @property
    def balanced_accuracy(self) -> float:
        return float(self.metrics["balanced_accuracy"])


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def _run_key(config: SpurgemapConfig, tiles: TileSet, synthetic: list[Path], draw: TrainDraw) -> str:
    drawn = ",".join(str(i) for s in draw.splits for i in s.train)
    return run_key(dump_config(config) + tiles.digest + "".join(str(p.resolve()) for p in synthetic) + drawn)


def _prepare_out(inputs: TrainInputs, key: str) -> tuple[Path, bool]:
    if (inputs.out / "model.spurge").exists() and not inputs.overwrite:
        raise InputError(f"{inputs.out}: already holds a trained model; pass --overwrite to replace it")
    tiles = inputs.tiles.root if isinstance(inputs.tiles, TileSet) else inputs.tiles
    return resumable_workdir(inputs.out, inputs.overwrite, key, "train", [tiles, *inputs.synthetic])


def _save_ckpt(work: Path, state: dict[str, Any]) -> None:
    tmp = work / "checkpoint.tmp"
    torch.save(state, tmp)
    os.replace(tmp, work / "checkpoint.pt")


def _load_ckpt(work: Path) -> dict[str, Any] | None:
    path = work / "checkpoint.pt"
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def run_train(config: SpurgemapConfig, inputs: TrainInputs) -> TrainResult:
    """Train and bundle a model; torch's thread count and global seed are the caller's again afterwards."""
    with preserved_torch_state():
        return _train(config, inputs)


def _train(config: SpurgemapConfig, inputs: TrainInputs) -> TrainResult:
    start = time.perf_counter()
    cfg = config.train
    preflight(inputs.out, inputs.overwrite, [None if isinstance(inputs.tiles, TileSet) else inputs.tiles,
                                             *inputs.synthetic])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tiles = inputs.tiles if isinstance(inputs.tiles, TileSet) else load_tile_set(inputs.tiles, cfg.group_column)
    syn = load_synthetic(inputs.synthetic, tiles)
    bags = _check_mil(cfg, tiles, len(syn))
    draw = plan_training(tiles, cfg, config.seed, inputs.tile_ids)
    splits = draw.splits
    _refuse_token_leaks(syn, tiles, draw)
    key = _run_key(config, tiles, inputs.synthetic, draw)
    work, resumed = _prepare_out(inputs, key)
    device = _device(cfg.device)
    weights = Path(cfg.weights) if cfg.weights else None
    torch.manual_seed(config.seed)
    backbone, spec = create_backbone(cfg.backbone, weights)
    input_size = cfg.input_size or spec.input_size
    prep = Prep(input_size, spec.mean, spec.std, device, cfg.channels_last)
    base_state = {k: v.clone() for k, v in backbone.state_dict().items()}

    def new_model(phase: int) -> SpurgeClassifier:
        backbone.load_state_dict(base_state)
        torch.manual_seed(config.seed * 1000 + phase)
        m = SpurgeClassifier(backbone, spec.num_features).to(device)
        if cfg.channels_last:
            m = m.to(memory_format=torch.channels_last)
        if cfg.mode == "probe":
            freeze_for_probe(m)
        elif cfg.trainable_blocks is not None:
            freeze_early_stages(m, cfg.trainable_blocks)
        return m

    cross_val = not cfg.val_sites
    phases = len(splits) + (1 if cross_val else 0)
    use_cache = cacheable(cfg)
    syms = 8 if cfg.augment.d4 else 1
    data = Batchable(tiles.images, tiles.labels, syn.images, syn.labels, bags=bags)
    features = syn_features = None
    per_epoch = epoch_draws(cfg) or max(len(s.train) for s in splits)
    steps = phases * cfg.epochs * per_epoch
    viewed = _view_tiles(draw) if views_cached(cfg) else None
    n_views = 0 if viewed is None else len(viewed) * cfg.augment.randaugment_views
    with progress(steps + (len(tiles) + len(syn)) * syms * use_cache + n_views, "training", unit="img") as advance:
        if use_cache:
            model0 = new_model(0)

            def features_of(images: np.ndarray) -> torch.Tensor:
                if device.type == "cpu":  # onnxruntime: the same fast CPU path as predict
                    return onnx_features(model0, images, prep, syms, advance)
                return extract_features(model0, images, prep, syms, cfg.batch_size, advance)

            features = _cached_features(inputs.feature_cache, f"{spec.name}|{spec.weights}|{input_size}|{syms}|"
                                        f"{tiles.pixels_digest or tiles.digest}|{cfg.channels_last}|{device.type}|ort",
                                        lambda: features_of(tiles.images), lambda: advance(len(tiles)))
            if viewed is not None:  # RandAugment: V cached views per training tile, one per synthetic image
                v = cfg.augment.randaugment_views
                aug = randaugment_views(tiles.images[viewed], v, config.seed, viewed)
                data.views = features_of(aug).reshape(len(viewed), v, syms, -1)
                data.view_row = np.full(len(tiles), -1, np.int64)
                data.view_row[viewed] = np.arange(len(viewed))
                syn_features = features_of(randaugment_views(syn.images, 1, config.seed + 1, np.arange(len(syn))))
            else:
                syn_features = features_of(syn.images)
        ckpt = _load_ckpt(work) if resumed else None
        threads = torch.get_num_threads()
        if use_cache and not cfg.threads and device.type == "cpu":  # a linear head on cached rows: more threads
            torch.set_num_threads(1)  # only wait on each other (much slower epochs on a shared 2-core machine)
        history: list[list[dict[str, Any]]] = ckpt["history"] if ckpt else []
        oof: dict[str, list[float]] = ckpt["oof"] if ckpt else {}
        best_states: dict[int, dict[str, torch.Tensor]] = {}
        final_model: SpurgeClassifier | None = None
        saved_at = -float("inf")
        for phase in range(phases):
            is_final = phase == len(splits)
            split = splits[phase] if not is_final else None
            train_idx = split.train if split else draw.model_tiles
            val_idx = split.val if split else None
            data.syn_by_tile = _syn_map(syn, restrict_synthetic(syn, train_idx))
            _warn_coverage(syn, train_idx, data.syn_by_tile, cfg.shots, phase > 0)
            model = new_model(phase)
            trainer = Trainer(model, cfg, prep, data, features, syn_features, config.seed)
            epochs = cfg.epochs if not is_final else _best_epoch(history) + 1
            first = 0
            if ckpt and ckpt["phase"] == phase:
                trainer.load(ckpt["state"])
                first = ckpt["epoch"] + 1
                best_states = {phase: ckpt["best"]} if ckpt.get("best") else {}
            elif ckpt and ckpt["phase"] > phase:
                advance(cfg.epochs * (epoch_draws(cfg) or len(train_idx)))
                continue
            if len(history) <= phase and not is_final:
                history.append([])
            for epoch in range(first, epochs):
                t_epoch = time.perf_counter()
                res = trainer.epoch(phase, epoch, train_idx, val_idx, tiles.groups, advance)
                if epoch == first and phase == (ckpt["phase"] if ckpt else 0):  # measured, not guessed
                    log.info("training: the first epoch took %.1f s; about %.0f s of epochs left", time.perf_counter()
                             - t_epoch, (time.perf_counter() - t_epoch) * (phases * cfg.epochs - epoch - 1))
                if not is_final:
                    history[phase].append({"epoch": epoch, "train_loss": res.train_loss, **_brief(res.val)})
                    best = _best_epoch([history[phase]])
                    oof[f"{phase}:{epoch}"] = res.val_probs.tolist() if res.val_probs is not None else []
                    if best == epoch and not cross_val:
                        best_states[phase] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                # at most every CHECKPOINT_SECONDS (and at a phase's end): a checkpoint holds the whole
                # model, and leave-one-site-out over 100+ sites runs thousands of fast probe epochs
                if time.monotonic() - saved_at >= CHECKPOINT_SECONDS or epoch == epochs - 1:
                    _save_ckpt(work, {"phase": phase, "epoch": epoch, "state": trainer.state(),
                                      "history": history, "oof": oof, "best": best_states.get(phase)})
                    saved_at = time.monotonic()
            advance(max(0, cfg.epochs - epochs) * (epoch_draws(cfg) or len(train_idx)))  # final fit: fewer epochs
            if not cross_val:
                model.load_state_dict(best_states[phase])
                final_model = model
            elif is_final:
                final_model = model
        assert final_model is not None
        torch.set_num_threads(threads)
    metrics = final_metrics(cfg, tiles, splits, history, oof, final_model, trainer, cross_val, bags,
                            _best_epoch(history))
    result = _write_outputs(config, inputs, tiles, spec, input_size, final_model, metrics, start, resumed, work)
    result.tile_ids = [tiles.tile_ids[i] for i in draw.model_tiles]
    return result


def _view_tiles(draw: TrainDraw) -> np.ndarray:
    """Every tile some phase trains on: the tiles whose RandAugment views are computed."""
    parts = [s.train for s in draw.splits] + ([draw.final] if draw.final is not None else [])
    return np.unique(np.concatenate(parts))


def _refuse_token_leaks(syn: SyntheticSet, tiles: TileSet, draw: TrainDraw) -> None:
    """Tokens learned from a tile train must not use (held out, or a held-out site's neighbour) leak it."""
    unused = draw.unused(tiles)
    leaks = token_leaks(syn, unused)
    if leaks:
        folder, bad = next(iter(leaks.items()))
        train_sites = sorted(set(tiles.sites.tolist()) - set(tiles.sites[unused].tolist()))
        seen = ", ".join(sorted(set(tiles.sites[bad].tolist())))
        if not train_sites:  # cross-validation: every site validates some fold, so every token set leaks
            raise InputError(f"--synthetic {folder}: its class tokens were learned from tiles of sites {seen}, and "
                             "cross-validation validates on every site in turn, so some fold would be judged on tiles "
                             "its tokens saw; one set cannot serve all folds: train on one split (--val-sites V "
                             "--test-sites T) with a set from `spurgemap augment --sites <the other sites>`, or "
                             "cross-validate without --synthetic")
        near = set(tiles.groups[bad].tolist()) & set(draw.dropped)
        what = "validation/test tile(s)" + (" or tiles of their neighbours train leaves out" if near else "")
        raise InputError(f"--synthetic {folder}: its class tokens were learned from {len(bad)} {what} (sites "
                         f"{seen}); make a clean set with `spurgemap augment --sites {','.join(train_sites)}`")


def _warn_coverage(syn: SyntheticSet, train_idx: np.ndarray, syn_by_tile: dict[int, np.ndarray],
                   shots: int | None, quiet: bool) -> None:
    """A few-shot draw whose tiles have no variants trains without synthetic data: say so."""
    if not len(syn) or not shots or quiet:
        return
    covered = int(np.isin(train_idx, list(syn_by_tile)).sum())
    if covered < len(train_idx):
        log.warning("train --shots %d: only %d of the %d drawn training tiles (%.0f %%) have synthetic variants; "
                    "make the set with the same --shots and --seed (`spurgemap augment --shots %d`)", shots,
                    covered, len(train_idx), 100 * covered / len(train_idx), shots)


def _cached_features(folder: Path | None, key: str, compute: Any, on_hit: Any) -> torch.Tensor:
    """Frozen-backbone features of the real tiles depend only on backbone, tiles and size: many
    runs over one tile set (evaluate's grid) compute them once."""
    if folder is None:
        return compute()
    path = folder / f"features-{run_key(key)}.safetensors"
    if path.exists():
        on_hit()
        return load_file(str(path))["features"]
    feats = compute()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": feats.contiguous()}, str(tmp), metadata={"key": key})
    os.replace(tmp, path)
    return feats


def _syn_map(syn: Any, allowed: np.ndarray) -> dict[int, np.ndarray]:
    out: dict[int, list[int]] = {}
    for j in allowed:
        out.setdefault(int(syn.source[j]), []).append(int(j))
    return {k: np.asarray(v) for k, v in out.items()}


def _check_mil(cfg: Any, tiles: TileSet, n_synthetic: int) -> np.ndarray | None:
    """Bag numbers for train.labels=plot-mil (None for tile labels), after its preconditions."""
    if cfg.labels != "plot-mil":
        return None
    if not cacheable(cfg) or cfg.augment.randaugment:
        raise InputError("train.labels=plot-mil trains on cached features: set train.mode=probe and turn off "
                         "train.augment randaugment/color_jitter/cutmix/mixup")
    if n_synthetic:
        raise InputError("train.labels=plot-mil uses real tiles only: drop --synthetic or set train.labels=tile")
    if tiles.plots is None:
        raise InputError(f"{tiles.root}: tile index has no plot_id column; train.labels=plot-mil needs plots")
    return plot_bags(tiles.plots, tiles.verified)


def _brief(val: dict[str, Any] | None) -> dict[str, Any]:
    if not val:
        return {}
    return {"val_balanced_accuracy": val["balanced_accuracy"], "val_roc_auc": val["roc_auc"]}


def _best_epoch(history: list[list[dict[str, Any]]]) -> int:
    """Epoch with the best mean validation balanced accuracy over folds (earliest on ties)."""
    n = min(len(h) for h in history)
    scores = [np.mean([h[e]["val_balanced_accuracy"] for h in history]) for e in range(n)]
    return int(np.argmax(scores))


def _write_outputs(config: SpurgemapConfig, inputs: TrainInputs, tiles: TileSet, spec: Any, input_size: int,
                   model: SpurgeClassifier, metrics: dict[str, Any], start: float,
                   resumed: bool, work: Path) -> TrainResult:
    out = inputs.out
    cfg = config.train
    meta = BundleMeta(
        spurgemap_version=__version__, backbone=spec.name, backbone_weights=spec.weights,
        input_size=input_size, mean=spec.mean, std=spec.std,
        class_names=config.labels.names(), tile_size_px=tiles.tile_px, gsd_m=tiles.gsd_m,
        source_gsd_m=tiles.source_gsd_m, species=config.labels.species,
        threshold=metrics["threshold"], tile_threshold=metrics["tile_threshold"],
        calibration=metrics["calibration"], context=metrics["context"],
        operating_point=metrics["operating_point"], mode=cfg.mode, training_config=config.model_dump(mode="json"),
        tile_set=str(tiles.root), tile_set_hash=tiles.digest,
        metrics={k: metrics[k] for k in ("balanced_accuracy", "threshold", "best_epoch", "selection",
                                         "threshold_labels")} | {"ece": metrics["reliability"]["ece"]},
    )
    bundle = out / "model.spurge"
    graph = tile_onnx(model.cpu().eval(), tiles.tile_px, input_size, list(spec.mean), list(spec.std))
    meta_hash = save_bundle(bundle, model, meta, onnx=graph)
    metrics["bundle_sha256"] = meta_hash
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    write_pictures(out, tiles, metrics)
    public = {k: v for k, v in metrics.items() if not k.startswith("_")}
    (out / "metrics.json").write_text(json.dumps(public, indent=2))
    (out / "config.yaml").write_text(dump_config(config))
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(out, bundle, public, metrics["seconds"], resumed)
