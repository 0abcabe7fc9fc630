"""Pictures a person checks before trusting a model: curves, confusion matrix, right/wrong tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from spurgemap.core.labels import LABELS
from spurgemap.tile.tileset import TileSet


def write_pictures(out: Path, tiles: TileSet, metrics: dict[str, Any]) -> None:
    _curves(out / "training_curves.png", metrics["history"], metrics["best_epoch"], metrics["folds"])
    _confusion(out / "confusion_matrix.png", metrics["validation"]["confusion_matrix"])
    _tile_grid(out / "tiles_right_wrong.png", tiles, metrics["_val_idx"], metrics["_val_probs"],
               metrics["threshold"])
    _reliability(out / "reliability.png", metrics["reliability"], metrics["calibration"]["method"])


def _reliability(path: Path, rel: dict[str, Any], method: str) -> None:
    """Reliability diagram of the map's probabilities on the trusted labels, cross-fitted by fold."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    bins = rel["bins"]
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="perfectly calibrated")
    ax.plot([b["mean_probability"] for b in bins], [b["rate"] for b in bins], "o-", label=f"{method} (out of fold)")
    for b in bins:
        ax.annotate(str(b["n"]), (b["mean_probability"], b["rate"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="share present (trusted labels)",
           title=f"reliability: ECE {rel['ece']:.3f} over {rel['n']} items")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _curves(path: Path, history: list[list[dict[str, Any]]], best: int, names: list[str]) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, h in enumerate(history):
        ep = [r["epoch"] for r in h]
        a.plot(ep, [r["train_loss"] for r in h], label=f"validating on {names[i]}")
        b.plot(ep, [r.get("val_balanced_accuracy", np.nan) for r in h], label=f"validating on {names[i]}")
    a.set(title="training loss", xlabel="epoch")
    b.set(title="validation balanced accuracy", xlabel="epoch", ylim=(0, 1.02))
    b.axvline(best, color="k", ls=":", label="selected epoch")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _confusion(path: Path, cm: list[list[int]]) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    arr = np.asarray(cm)
    ax.imshow(arr, cmap="Blues")
    for (r, c), v in np.ndenumerate(arr):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], list(LABELS))
    ax.set_yticks([0, 1], list(LABELS))
    ax.set(xlabel="predicted", ylabel="surveyed", title="validation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _tile_grid(path: Path, tiles: TileSet, idx: np.ndarray, probs: np.ndarray, threshold: float,
               per_group: int = 6) -> None:
    y = tiles.labels[idx]
    pred = probs >= threshold
    groups = [("right: present", (y == 1) & pred), ("right: absent", (y == 0) & ~pred),
              ("wrong: missed spurge", (y == 1) & ~pred), ("wrong: false alarm", (y == 0) & pred)]
    fig, axes = plt.subplots(4, per_group, figsize=(per_group * 1.6, 4 * 1.8))
    for r, (title, m) in enumerate(groups):
        chosen = np.flatnonzero(m)[:per_group]
        for c in range(per_group):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(chosen):
                j = chosen[c]
                ax.imshow(tiles.images[idx[j]])
                ax.set_title(f"p={probs[j]:.2f}", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
