"""Site-level splits and few-shot sampling: neighbouring tiles look alike, so tiles never split randomly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from spurgemap.core.errors import InputError


@dataclass(frozen=True)
class Split:
    name: str
    train: np.ndarray  # tile indices
    val: np.ndarray
    test: np.ndarray


FIX = "set train.folds (fewer folds), train.group_column or train.group_by, or survey more plots"


def _check_classes(labels: np.ndarray, idx: np.ndarray, what: str) -> None:
    present = set(labels[idx].tolist())
    if present != {0, 1}:
        have = "no tiles" if not len(idx) else f"only class {sorted(present)}"
        raise InputError(f"the {what} has {have}; each split needs absent and present tiles "
                         "(choose other --val-sites/--test-sites, or leave --val-sites empty to "
                         "cross-validate on folds that each hold both classes)")


def _both_classes(labels: np.ndarray, groups: np.ndarray, chunks: list[list[str]]) -> bool:
    return all(set(labels[np.isin(groups, c)].tolist()) == {0, 1} for c in chunks)


def stratified_group_folds(groups: np.ndarray, labels: np.ndarray, pool: list[str], k: int,
                           seed: int) -> list[list[str]]:
    """Groups of `pool` dealt into at most k folds whose validation each holds both classes.

    sklearn's StratifiedGroupKFold balances the tile classes per fold; seeds are retried, then
    fewer folds (merged groups), so single-class sites (a third of real sites) still validate.
    """
    idx = np.flatnonzero(np.isin(groups, pool))
    g, y = groups[idx], labels[idx]
    with_present = len(set(g[y == 1].tolist()))
    with_absent = len(set(g[y == 0].tolist()))
    for kk in range(min(k, with_present, with_absent, len(pool)), 1, -1):
        for attempt in range(20):
            sgkf = StratifiedGroupKFold(n_splits=kk, shuffle=True, random_state=seed + attempt)
            try:
                chunks = [sorted(set(g[v].tolist())) for _, v in sgkf.split(idx, y, g)]
            except ValueError:  # fewer members of a class than folds: try fewer folds
                break
            if len(chunks) == kk and _both_classes(labels, groups, chunks):
                return sorted(chunks)
    raise InputError(f"cannot form 2 site folds that each hold absent and present tiles: {with_present} "
                     f"group(s) have present tiles, {with_absent} absent ones; {FIX}")


# folds=0 with more sites than this: that many stratified grouped folds, not one per site (leave-one-
# site-out over 120 sites trains 121 models for a figure that 10 folds estimate as well)
MAX_AUTO_FOLDS = 10


def make_splits(groups: np.ndarray, labels: np.ndarray, val_groups: list[str], test_groups: list[str],
                folds: int = 0, seed: int = 0) -> list[Split]:
    """Explicit validation groups, else leave-one-group-out (folds=0, up to MAX_AUTO_FOLDS groups) or
    stratified grouped k-fold.

    Leave-one-group-out needs both classes in every group; when some group holds one class only,
    folds=0 falls back to as many stratified grouped folds as the classes allow.
    """
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
        chunks = [[p] for p in pool]
        if folds > 0 or len(pool) > MAX_AUTO_FOLDS or not _both_classes(labels, groups, chunks):
            chunks = stratified_group_folds(groups, labels, pool, folds or min(len(pool), MAX_AUTO_FOLDS), seed)
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


def _box_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dx = np.maximum(0, np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2]))
    dy = np.maximum(0, np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3]))
    return np.hypot(dx, dy)


def group_distances(groups: np.ndarray, bounds: np.ndarray, limit: float) -> tuple[list[str], np.ndarray]:
    """Smallest gap in metres between any two tile footprints (minx, miny, maxx, maxy) of two groups.

    Pairs whose overall extents are farther apart than `limit` get that (lower-bound) extent gap:
    enough to compare with `limit`, without comparing their tiles one by one.
    """
    names = sorted(set(groups.tolist()))
    boxes = [bounds[groups == n] for n in names]
    extents = np.array([[b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()] for b in boxes])
    dist = _box_gap(extents[:, None, :], extents[None, :, :])
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if dist[i, j] > limit:
                continue
            gap = min(float(_box_gap(boxes[i][k:k + 512, None, :], boxes[j][None, :, :]).min())
                      for k in range(0, len(boxes[i]), 512))  # chunks bound the memory
            dist[i, j] = dist[j, i] = gap
    return names, dist


def spatial_groups(groups: np.ndarray, bounds: np.ndarray, distance_m: float) -> np.ndarray:
    """Groups whose footprints lie within `distance_m` of each other (transitively) become one, so
    overlapping or adjacent flights never put the same plants in training and validation."""
    names, dist = group_distances(groups, bounds, distance_m)
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(dist <= distance_m), strict=True):
        parent[root(int(i))] = root(int(j))
    members: dict[int, list[str]] = {}
    for i, n in enumerate(names):
        members.setdefault(root(i), []).append(n)
    label = {n: "+".join(m) for m in members.values() for n in m}
    return np.array([label[g] for g in groups.tolist()])


def spatial_blocks(groups: np.ndarray, bounds: np.ndarray, sites_per_block: int = 10, seed: int = 0) -> np.ndarray:
    """Groups dealt into compact spatial blocks of about `sites_per_block` (k-means on footprint
    centres), so cross-validation holds out whole neighbourhoods: a held-out block is as new to the
    model as the next field, and the threshold and calibration chosen on it hold there too."""
    from sklearn.cluster import KMeans

    names = sorted(set(groups.tolist()))
    k = max(MAX_AUTO_FOLDS, len(names) // sites_per_block)
    if len(names) <= k:
        return groups
    centres = np.array([[(bounds[groups == n][:, 0].min() + bounds[groups == n][:, 2].max()) / 2,
                         (bounds[groups == n][:, 1].min() + bounds[groups == n][:, 3].max()) / 2] for n in names])
    ids = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(centres)
    label = {n: f"block{int(i):02d}" for n, i in zip(names, ids, strict=True)}
    return np.array([label[g] for g in groups.tolist()])


def near_groups(groups: np.ndarray, bounds: np.ndarray, held_out: list[str], others: list[str],
                distance_m: float) -> list[tuple[str, str, float]]:
    """(held-out group, other group, gap in m) for pairs closer than `distance_m`."""
    names, dist = group_distances(groups, bounds, distance_m)
    pos = {n: i for i, n in enumerate(names)}
    return [(a, b, float(dist[pos[a], pos[b]])) for a in held_out for b in others
            if a in pos and b in pos and a != b and dist[pos[a], pos[b]] <= distance_m]


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
