"""The training engine: tensors in, trained weights and per-epoch history out. No paths, no CRS.

Every random draw of an epoch comes from a generator seeded by (seed, phase, epoch), so a run that
is killed and resumed from its last checkpoint repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from spurgemap.config import TrainConfig
from spurgemap.core.errors import InputError
from spurgemap.model.classifier import SpurgeClassifier
from spurgemap.model.metrics import classification_metrics
from spurgemap.model.preprocess import Prep, d4, to_tensor


@dataclass
class Batchable:
    """Images the engine may draw: real tiles, their synthetic variants, and the draw rule."""

    images: np.ndarray  # (N, H, W, 3) uint8 real tiles
    labels: np.ndarray
    syn_images: np.ndarray  # (M, H, W, 3) uint8
    syn_labels: np.ndarray
    syn_by_tile: dict[int, np.ndarray] = field(default_factory=dict)  # real index -> allowed syn indices
    bags: np.ndarray | None = None  # bag (plot) number per real tile: multiple-instance labels
    views: Any = None  # (U, V, S, F) features of V RandAugment views of U training tiles (views_cached)
    view_row: np.ndarray | None = None  # real index -> row in views (-1: none)


def plot_bags(plots: np.ndarray, verified: np.ndarray | None) -> np.ndarray:
    """Bag number per tile: a plot's tiles form one bag; a tile with a verified label is its own."""
    keys = [f"{p}\0{i}" if verified is not None and verified[i] else str(p) for i, p in enumerate(plots)]
    return np.unique(np.asarray(keys), return_inverse=True)[1].astype(np.int64)


def bag_max(bags: np.ndarray, idx: np.ndarray, labels: np.ndarray,
            probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bag of the tiles `idx`: (label = any present, prob = max over its tiles, first tile)."""
    b = bags[idx]
    uniq, first, inv = np.unique(b, return_index=True, return_inverse=True)
    y = np.zeros(len(uniq), np.int64)
    p = np.full(len(uniq), -np.inf)
    np.maximum.at(y, inv, labels[idx])
    np.maximum.at(p, inv, probs)
    return y, p, idx[first]


def cacheable(cfg: TrainConfig) -> bool:
    """A frozen backbone with only D4 augmentation sees each (tile, symmetry) once: cache features."""
    a = cfg.augment
    live_randaugment = a.randaugment and not a.randaugment_views  # else: cached views (views_cached)
    return cfg.mode == "probe" and not (live_randaugment or a.color_jitter or a.cutmix or a.mixup)


def views_cached(cfg: TrainConfig) -> bool:
    """RandAugment on a frozen backbone: a fixed set of views per tile, whose features are cached."""
    return cacheable(cfg) and cfg.augment.randaugment


def freeze_for_probe(model: SpurgeClassifier) -> None:
    """Linear probe: backbone frozen and kept in eval mode, so BatchNorm keeps its ImageNet
    statistics (a few hundred tiles would only add noise to them); only the head learns."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.eval()


def backbone_stages(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    """The stages of the feature trunk, first to last: timm's `blocks` (EfficientNet, MobileNet, ...)
    or torchvision ResNet's layer1-4."""
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, torch.nn.Sequential):
        return list(blocks)
    layers = [getattr(backbone, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(layer, torch.nn.Module) for layer in layers):
        return [layer for layer in layers if layer is not None]
    raise InputError(f"train.trainable_blocks: backbone {type(backbone).__name__} has no stages spurgemap knows "
                     "(timm `blocks` or ResNet layer1-4); leave trainable_blocks unset to fine-tune every layer")


def freeze_early_stages(model: SpurgeClassifier, trainable: int) -> int:
    """Partial fine-tuning: every backbone weight registered before the last `trainable` stages is
    frozen (stem and early stages); the later stages, the layers after them and the head learn.
    Returns the number of stages. Frozen BatchNorms stay in eval mode (see `train_mode`)."""
    stages = backbone_stages(model.backbone)
    if trainable > len(stages):
        raise InputError(f"train.trainable_blocks {trainable}: the backbone has {len(stages)} stages; "
                         f"use 0-{len(stages)}, or leave it unset to fine-tune every layer")
    params = list(model.backbone.parameters())  # registration order: stem, stages, the layers after them
    index = {id(p): i for i, p in enumerate(params)}
    if trainable:
        cut = min(index[id(p)] for p in stages[-trainable].parameters())
    else:  # 0: every stage frozen; the layers after the last one (e.g. EfficientNet's conv_head) learn
        cut = max(index[id(p)] for p in stages[-1].parameters()) + 1
    for p in params[:cut]:
        p.requires_grad_(False)
    return len(stages)


def train_mode(model: SpurgeClassifier) -> None:
    """Training mode, except BatchNorms whose weights are frozen: they keep their pretrained statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


@torch.inference_mode()
def extract_features(model: SpurgeClassifier, images: np.ndarray, prep: Prep, symmetries: int,
                     batch_size: int, advance: Callable[[int], None] | None = None) -> torch.Tensor:
    """(N, S, F) features for each image under each of S D4 symmetries."""
    model.backbone.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = to_tensor(images[start:start + batch_size])
        per_sym = [model.backbone(prep(d4(chunk, k))).float().cpu() for k in range(symmetries)]
        out.append(torch.stack(per_sym, dim=1))
        if advance:
            advance(len(chunk))
    return torch.cat(out) if out else torch.zeros((0, symmetries, 1))


@torch.inference_mode()
def predict_probs(model: SpurgeClassifier, images: np.ndarray, prep: Prep, batch_size: int,
                  bf16: bool = False) -> np.ndarray:
    model.eval()
    probs = []
    for start in range(0, len(images), batch_size):
        x = prep(to_tensor(images[start:start + batch_size]))
        with autocast(prep.device, bf16):
            probs.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(probs).numpy() if probs else np.zeros(0)


def use_bf16(setting: bool | None, device: torch.device) -> bool:
    """bfloat16 autocast: on CUDA by default; a setting of true runs the very same path on CPU (tests)."""
    return device.type == "cuda" if setting is None else setting


def autocast(device: torch.device, bf16: bool) -> Any:
    """One autocast for CUDA and CPU, so the half-precision path is the code CPU tests run."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def epoch_draws(cfg: TrainConfig) -> int | None:
    """Samples per epoch drawn with replacement, or None for one shuffled pass over the tiles.

    The reference drew 200 batches of 32 per epoch whatever k, so at k = 1 the head still takes
    10 000 steps and synthetic variants get drawn often; one pass over 2k tiles would be 1 step."""
    steps = cfg.steps_per_epoch
    if steps is None:
        steps = 200 if cfg.shots else 0
    return steps * cfg.batch_size if steps else None


def draw_epoch(data: Batchable, train_idx: np.ndarray, alpha: float, d4_on: bool,
               rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's draws: (is_synthetic, image index, symmetry) per sample, shuffled; `n` draws
    with replacement when given."""
    order = rng.choice(train_idx, size=n, replace=True) if n else rng.permutation(train_idx)
    syn = np.zeros(len(order), dtype=bool)
    idx = order.copy()
    for j, i in enumerate(order):
        variants = data.syn_by_tile.get(int(i))
        if variants is not None and len(variants) and rng.random() < alpha:
            syn[j], idx[j] = True, variants[rng.integers(len(variants))]
    sym = rng.integers(0, 8, size=len(order)) if d4_on else np.zeros(len(order), dtype=np.int64)
    return syn, idx, sym


def _live_augment(cfg: TrainConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Per-image RandAugment / colour jitter; their draws come from torch's RNG, seeded per epoch."""
    ops: list[Any] = []
    if cfg.augment.randaugment:
        ops.append(v2.RandAugment())
    if cfg.augment.color_jitter:
        j = cfg.augment.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    if not ops:
        return None
    tf = v2.Compose(ops)

    def apply(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([tf(img) for img in batch])

    return apply


def _mix(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
         rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or mixup on a batch, with soft targets (binary: the mixed share of presence)."""
    a = cfg.augment
    if len(x) < 2 or (a.cutmix == 0 and a.mixup == 0):
        return x, y
    perm = torch.from_numpy(rng.permutation(len(x)))
    lam = float(rng.beta(1.0, 1.0))
    if a.cutmix and rng.random() < a.cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return x, lam * y + (1 - lam) * y[perm]
    if a.mixup and rng.random() < a.mixup:
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
    return x, y


@dataclass
class EpochResult:
    train_loss: float
    val: dict[str, Any] | None
    val_probs: np.ndarray | None


class Trainer:
    """Trains one phase (a fold, or the final fit) epoch by epoch; the caller checkpoints."""

    def __init__(self, model: SpurgeClassifier, cfg: TrainConfig, prep: Prep, data: Batchable,
                 features: torch.Tensor | None, syn_features: torch.Tensor | None, seed: int) -> None:
        self.model, self.cfg, self.prep, self.data = model, cfg, prep, data
        self.features, self.syn_features = features, syn_features
        self.seed = seed
        self.bf16 = use_bf16(cfg.bf16, prep.device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def _inputs(self, syn: np.ndarray, idx: np.ndarray, sym: np.ndarray,
                view: np.ndarray | None = None) -> torch.Tensor:
        if self.features is not None:
            assert self.syn_features is not None
            mask = torch.from_numpy(syn)
            i, s = torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(sym.astype(np.int64))
            if view is not None:  # a real tile is one of its cached RandAugment views
                assert self.data.view_row is not None
                r = torch.from_numpy(self.data.view_row[np.where(syn, 0, idx)])
                rows = self.data.views[r.clamp(min=0), torch.from_numpy(view), s]
            else:
                rows = self.features[torch.where(mask, 0, i), s]
            if mask.any():
                rows[mask] = self.syn_features[i[mask], s[mask]]
            return rows.to(self.prep.device)
        imgs = np.stack([self.data.syn_images[i] if is_syn else self.data.images[i]
                         for is_syn, i in zip(syn, idx, strict=True)])
        t = to_tensor(imgs)
        t = torch.stack([d4(img, int(k)) for img, k in zip(t, sym, strict=True)])
        return t

    def _mil_epoch(self, train_idx: np.ndarray, rng: np.random.Generator,
                   on_batch: Callable[[int], None] | None) -> float:
        """Multiple-instance epoch on cached features: a bag's logit is the max of its tiles'
        logits, so a present plot needs only one present tile and empty tiles in it are not pushed up."""
        assert self.features is not None and self.data.bags is not None
        bags = self.data.bags[train_idx]
        sym = rng.integers(0, 8, len(train_idx)) if self.cfg.augment.d4 else np.zeros(len(train_idx), np.int64)
        order = rng.permutation(np.unique(bags))
        y_all = np.zeros(int(bags.max()) + 1, np.float32)
        np.maximum.at(y_all, bags, self.data.labels[train_idx].astype(np.float32))
        y_bags = y_all[order]
        pos = max(float(y_bags.sum()), 1.0)
        pos_weight = torch.tensor((len(y_bags) - y_bags.sum()) / pos, device=self.prep.device)
        self.model.head.train()
        losses = []
        for start in range(0, len(order), self.cfg.batch_size):
            chunk = order[start:start + self.cfg.batch_size]
            at = {int(b): k for k, b in enumerate(chunk)}
            mask = np.isin(bags, chunk)
            rows = self.features[train_idx[mask], sym[mask]].to(self.prep.device)
            slot = torch.as_tensor([at[int(b)] for b in bags[mask]], device=self.prep.device)
            logits = self.model.head(rows).squeeze(1).float()
            bag_logits = torch.full((len(chunk),), -torch.inf, device=self.prep.device)
            bag_logits = bag_logits.scatter_reduce(0, slot, logits, reduce="amax", include_self=False)
            y = torch.from_numpy(y_all[chunk]).to(self.prep.device)
            loss = F.binary_cross_entropy_with_logits(bag_logits, y, pos_weight=pos_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()) * len(chunk))
            if on_batch:
                on_batch(int(mask.sum()))
        return sum(losses) / max(len(order), 1)

    def _validate(self, val_idx: np.ndarray | None, groups: np.ndarray) -> tuple[dict[str, Any] | None,
                                                                                   np.ndarray | None]:
        if val_idx is None or not len(val_idx):
            return None, None
        probs = self.predict(val_idx)
        if self.data.bags is not None:  # plot-level: a plot is present when its likeliest tile is
            y, p, first = bag_max(self.data.bags, val_idx, self.data.labels, probs)
            return classification_metrics(y, p, 0.5, groups[first]), probs
        return classification_metrics(self.data.labels[val_idx], probs, 0.5, groups[val_idx]), probs

    def epoch(self, phase: int, epoch: int, train_idx: np.ndarray, val_idx: np.ndarray | None,
              groups: np.ndarray, on_batch: Callable[[int], None] | None = None) -> EpochResult:
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, phase, epoch])
        torch.manual_seed(int(rng.integers(2**31)))
        if self.data.bags is not None:
            mil_loss = self._mil_epoch(train_idx, rng, on_batch)
            return EpochResult(mil_loss, *self._validate(val_idx, groups))
        syn, idx, sym = draw_epoch(self.data, train_idx, cfg.synthetic_alpha, cfg.augment.d4, rng,
                                   epoch_draws(cfg))
        view = None if self.data.views is None else rng.integers(0, self.data.views.shape[1], size=len(idx))
        labels = np.where(syn, self.data.syn_labels[np.where(syn, idx, 0)] if len(self.data.syn_labels) else 0,
                          self.data.labels[np.where(syn, 0, idx)]).astype(np.float32)
        pos = max(labels.sum(), 1.0)
        pos_weight = torch.tensor((len(labels) - labels.sum()) / pos, device=self.prep.device)
        live = _live_augment(cfg)
        self.model.head.train()
        if cfg.mode == "finetune":
            train_mode(self.model)
        losses = []
        for start in range(0, len(idx), cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            x = self._inputs(syn[sl], idx[sl], sym[sl], None if view is None else view[sl])
            y = torch.from_numpy(labels[sl]).to(self.prep.device)
            with autocast(self.prep.device, self.bf16):
                if self.features is not None:
                    logits = self.model.head(x).squeeze(1)
                else:
                    if live is not None:
                        x = live(x)
                    xf = self.prep(x)
                    xf, y = _mix(xf, y, cfg, rng)
                    logits = self.model(xf)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()) * len(y))
            if on_batch:
                on_batch(len(y))
        if cfg.mode == "probe":
            self.model.backbone.eval()
        return EpochResult(sum(losses) / max(len(idx), 1), *self._validate(val_idx, groups))

    def predict(self, idx: np.ndarray) -> np.ndarray:
        if self.features is not None:
            with torch.inference_mode():
                logits = self.model.head(self.features[idx, 0].to(self.prep.device)).squeeze(1)
            return torch.sigmoid(logits.float()).cpu().numpy()
        return predict_probs(self.model, self.data.images[idx], self.prep, self.cfg.batch_size, self.bf16)


@contextmanager
def preserved_torch_state() -> Iterator[None]:
    """Torch's thread count and global random state as the caller had them, whatever happens inside.

    Why: a stage is a library call; `run_train` seeds torch and may set `train.threads`, which must not
    change the process of a notebook or a Dask worker that called it.
    """
    threads = torch.get_num_threads()
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
