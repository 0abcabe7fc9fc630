"""The few-shot draw is made once (train.draw) and the same tile ids reach evaluate, augment and train.

With `train.group_by: spatial`, train leaves out the neighbours of the validation site; evaluate used
to re-derive the draw without them and generated variants (and learned tokens) from tiles train
never saw.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PX, make_tile_set
from test_train import _write_synthetic

from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.model.splits import few_shot
from spurgemap.tile.tileset import load_tile_set
from spurgemap.train import TrainInputs, run_train
from spurgemap.train.draw import draw_tile_ids, plan_training

# make_tile_set puts site s<i> 1000 m east of s<i-1>: s0 and s2 lie ~989 m from s1, s3 ~1989 m
NEAR = {"train.val_sites": ["s1"], "train.group_by": "spatial", "train.spatial_distance_m": 995.0,
        "train.shots": 2}


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_tile_set(tmp_path_factory.mktemp("draw") / "tiles", sites=4, per_class=3)


def _cfg(weights, **over):
    return load_config(overrides={"train.backbone": "test_efficientnet", "train.weights": str(weights),
                                  "train.input_size": PX, "train.epochs": 1, "train.mode": "probe",
                                  "train.steps_per_epoch": 2, "train.augment.d4": False, **NEAR, **over})


def test_the_draw_leaves_out_the_neighbours_of_the_validation_site(four_sites, tiny_weights):
    ts = load_tile_set(four_sites)
    cfg = _cfg(tiny_weights)
    ids = draw_tile_ids(ts, cfg.train, cfg.seed)
    assert len(ids) == 4 and {i.split("_")[0] for i in ids} == {"s3"}  # s0 and s2 are s1's neighbours
    draw = plan_training(ts, cfg.train, cfg.seed)
    assert draw.dropped == ["s0", "s2"]
    assert set(ts.sites[draw.unused(ts)].tolist()) == {"s0", "s1", "s2"}
    # what evaluate computed before: the pool without val/test only, so neighbours' tiles were drawn
    old_pool = np.flatnonzero(~np.isin(ts.groups, ["s1"]))
    old = [ts.tile_ids[i] for i in few_shot(old_pool, ts.labels, 2, cfg.seed)]
    assert {i.split("_")[0] for i in old} != {"s3"}


def test_train_fits_on_the_given_ids_and_its_own_draw_is_the_same(four_sites, tiny_weights, tmp_path):
    ts = load_tile_set(four_sites)
    cfg = _cfg(tiny_weights)
    ids = draw_tile_ids(ts, cfg.train, cfg.seed)
    given = run_train(cfg, TrainInputs(ts, tmp_path / "given", tile_ids=ids))
    own = run_train(cfg, TrainInputs(ts, tmp_path / "own"))
    assert given.tile_ids == own.tile_ids == sorted(ids, key=ts.tile_ids.index)
    neighbour = next(t for t in ts.tile_ids if t.startswith("s0_"))
    with pytest.raises(InputError, match=r"held out or next to a held-out site"):
        run_train(cfg, TrainInputs(ts, tmp_path / "bad", tile_ids=[*ids, neighbour]))


def test_tokens_learned_from_a_dropped_neighbour_are_refused(four_sites, tiny_weights, tmp_path):
    ts = load_tile_set(four_sites)
    cfg = _cfg(tiny_weights)
    ids = draw_tile_ids(ts, cfg.train, cfg.seed)
    neighbour = next(t for t in ts.tile_ids if t.startswith("s2_"))
    syn = _write_synthetic(tmp_path / "syn", four_sites, ids[:1])  # variants of a drawn tile only
    (syn / "provenance.json").write_text(json.dumps({"token_tile_ids": [ids[0], neighbour]}))
    with pytest.raises(InputError, match=r"1 validation/test tile\(s\) or tiles of their neighbours train "
                                         r"leaves out \(sites s2\)"):
        run_train(cfg, TrainInputs(ts, tmp_path / "run", [syn], tile_ids=ids))
    (syn / "provenance.json").write_text(json.dumps({"token_tile_ids": ids}))  # tokens of the drawn tiles
    assert run_train(cfg, TrainInputs(ts, tmp_path / "ok", [syn], tile_ids=ids)).tile_ids == sorted(
        ids, key=ts.tile_ids.index)
