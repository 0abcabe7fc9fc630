"""Cross-validation over spatial blocks of sites (train.group_by: blocks, the default; issue 22)."""

from __future__ import annotations

import numpy as np
from conftest import make_tile_set

from spurgemap.config import load_config
from spurgemap.model.splits import MAX_AUTO_FOLDS, spatial_blocks
from spurgemap.train import TrainInputs, run_train


def _sites_on_a_grid(rows: int, cols: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    groups, bounds = [], []
    for r in range(rows):
        for c in range(cols):
            for _ in range(2):  # two tiles a site
                groups.append(f"r{r}c{c}")
                x, y = c * spacing, -r * spacing
                bounds.append([x, y - 3.5, x + 3.5, y])
    return np.array(groups), np.array(bounds)


def test_blocks_are_compact_neighbourhoods_of_about_ten_sites() -> None:
    groups, bounds = _sites_on_a_grid(12, 10, 100.0)
    blocks = spatial_blocks(groups, bounds)
    names = sorted(set(blocks.tolist()))
    assert len(names) == 12  # 120 sites / 10
    site_block = dict(zip(groups.tolist(), blocks.tolist(), strict=True))
    assert all(site_block[g] == b for g, b in zip(groups, blocks, strict=True))  # a site is never split
    for b in names:
        members = [g for g, bb in site_block.items() if bb == b]
        rc = np.array([[int(m[1:m.index("c")]), int(m[m.index("c") + 1:])] for m in members])
        assert 5 <= len(members) <= 16
        # compact: no block spans more than half the field in either direction
        assert np.ptp(rc[:, 0]) <= 5 and np.ptp(rc[:, 1]) <= 5, (b, members)
    few, fb = _sites_on_a_grid(2, 5, 100.0)
    assert len(set(few.tolist())) <= MAX_AUTO_FOLDS
    np.testing.assert_array_equal(spatial_blocks(few, fb), few)  # 10 sites or fewer: folds stay sites


def test_training_over_many_sites_validates_on_blocks_and_records_every_tile_once(tmp_path, tiny_weights) -> None:
    tiles = make_tile_set(tmp_path / "tiles", sites=24, per_class=1)
    base = {"train.backbone": "test_efficientnet", "train.weights": str(tiny_weights), "train.input_size": 32,
            "train.epochs": 2, "train.mode": "probe", "train.augment.d4": False}
    res = run_train(load_config(overrides=base), TrainInputs(tiles, tmp_path / "run"))
    folds = res.metrics["folds"]
    assert len(folds) == MAX_AUTO_FOLDS and all(f.startswith("block") for f in folds)
    assert res.metrics["validation"]["n"] == 48  # every tile validated exactly once, out of fold
    res_site = run_train(load_config(overrides={**base, "train.group_by": "site"}), TrainInputs(tiles, tmp_path / "s"))
    assert not any(f.startswith("block") for f in res_site.metrics["folds"])
