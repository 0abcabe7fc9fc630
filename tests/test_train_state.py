"""A training run is a library call: it leaves torch's thread count and global random state alone."""

from __future__ import annotations

import torch
from conftest import PX, make_tile_set

from spurgemap.config import load_config
from spurgemap.train import TrainInputs, run_train


def test_run_train_restores_threads_and_seed(tmp_path, tiny_weights):
    tiles = make_tile_set(tmp_path / "tiles", sites=3, per_class=2)
    cfg = load_config(overrides={"train.backbone": "test_efficientnet", "train.weights": str(tiny_weights),
                                 "train.input_size": PX, "train.epochs": 1, "train.mode": "probe",
                                 "train.augment.d4": False, "train.val_sites": ["s1"], "train.threads": 1,
                                 "seed": 7})
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else before  # a count train.threads=1 would change
    torch.set_num_threads(wanted)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    try:
        run_train(cfg, TrainInputs(tiles, tmp_path / "run"))
        assert torch.get_num_threads() == wanted
        assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on where it was
    finally:
        torch.set_num_threads(before)
