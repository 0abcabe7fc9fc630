"""Site-level splits and few-shot sampling: neighbouring tiles look alike, so tiles never split randomly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spurgemap.core.errors import InputError


@dataclass(frozen=True)
class Split:
    name: str
    train: np.ndarray  # tile indices
    val: np.ndarray
    test: np.ndarray


def _check_classes(labels: np.ndarray, idx: np.ndarray, what: str) -> None:
    present = set(labels[idx].tolist())
    if present != {0, 1}:
        have = "no tiles" if not len(idx) else f"only class {sorted(present)}"
        raise InputError(f"the {what} has {have}; each split needs absent and present tiles "
                         "(choose other --val-sites/--test-sites or survey more plots)")


def make_splits(groups: np.ndarray, labels: np.ndarray, val_groups: list[str], test_groups: list[str],
                folds: int = 0) -> list[Split]:
    """Explicit validation groups, else leave-one-group-out (folds=0) or grouped k-fold."""
    if set(labels.tolist()) != {0, 1}:
        raise InputError("the tile set holds only one class; training needs absent and present tiles")
    known = set(groups.tolist())
    unknown = sorted(set(val_groups + test_groups) - known)
    if unknown:
        raise InputError(f"unknown sites {unknown}; the tile set has {sorted(known)}")
    if set(val_groups) & set(test_groups):
        raise InputError(f"sites {sorted(set(val_groups) & set(test_groups))} are both validation and test")
    test = np.flatnonzero(np.isin(groups, test_groups))
    pool = sorted(known - set(test_groups))
    if val_groups:
        val = np.flatnonzero(np.isin(groups, val_groups))
        train = np.flatnonzero(~np.isin(groups, val_groups + test_groups))
        splits = [Split("+".join(val_groups), train, val, test)]
    else:
        if len(pool) < 2:
            raise InputError(f"only {len(pool)} site(s) left for training and validation; "
                             "cross-validation by site needs at least 2")
        k = len(pool) if folds <= 0 else min(folds, len(pool))
        chunks = [pool[i::k] for i in range(k)]
        splits = []
        for chunk in chunks:
            val = np.flatnonzero(np.isin(groups, chunk))
            train = np.flatnonzero(~np.isin(groups, chunk + list(test_groups)))
            splits.append(Split("+".join(chunk), train, val, test))
    for s in splits:
        _check_classes(labels, s.train, f"training part of split '{s.name}'")
        _check_classes(labels, s.val, f"validation site(s) '{s.name}'")
        assert not set(groups[s.train]) & set(groups[s.val]), "site in both train and val"
    if len(test):
        _check_classes(labels, test, "test site(s)")
    return splits


def few_shot(train: np.ndarray, labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """K tiles per class: the first K of one seeded permutation per class (as the reference), so the
    draws are nested across K - few_shot(1) is inside few_shot(2) for the same seed - and a curve over
    K adds tiles instead of redrawing them."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in (0, 1):
        cand = np.sort(train[labels[train] == cls])
        if len(cand) < shots:
            raise InputError(f"--shots {shots}: only {len(cand)} training tiles of class {cls} are available")
        chosen.append(rng.permutation(cand)[:shots])
    return np.sort(np.concatenate(chosen))
