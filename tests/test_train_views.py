"""RandAugment on a frozen backbone as cached views: fixed, seeded, for training tiles only, and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PX, make_tile_set

from spurgemap.config import load_config
from spurgemap.model import engine
from spurgemap.model.views import randaugment_views
from spurgemap.train import stage
from spurgemap.train.stage import TrainInputs, run_train


@pytest.fixture(scope="module")
def tileset(tmp_path_factory) -> Path:
    return make_tile_set(tmp_path_factory.mktemp("views") / "tiles", sites=3, per_class=3)


def _cfg(weights: Path, **over):
    return load_config(overrides={
        "train.backbone": "test_efficientnet", "train.weights": str(weights), "train.input_size": PX,
        "train.epochs": 2, "train.steps_per_epoch": 3, "train.batch_size": 8, "train.shots": 1,
        "train.val_sites": ["s1"], "train.test_sites": ["s2"], "train.augment.randaugment_views": 3, **over})


def test_views_are_seeded_per_tile_and_differ_from_the_tile():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(5)
    before = torch.rand(1)
    a = randaugment_views(imgs, 4, seed=1, ids=np.array([7, 9]))
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, randaugment_views(imgs, 4, seed=1, ids=np.array([7, 9])))
    assert np.array_equal(a[4:], randaugment_views(imgs[1:], 4, seed=1, ids=np.array([9])))  # per tile, not batch
    assert not np.array_equal(a, randaugment_views(imgs, 4, seed=2, ids=np.array([7, 9])))
    assert sum(np.array_equal(v, imgs[0]) for v in a[:4]) < 4
    assert len({v.tobytes() for v in a[:4]}) > 1


def test_randaugment_probe_trains_on_cached_views_of_the_training_tiles_only(tiny_weights, tileset, tmp_path,
                                                                             monkeypatch):
    seen: list[np.ndarray] = []
    real = stage.randaugment_views
    monkeypatch.setattr(stage, "randaugment_views", lambda imgs, v, seed, ids: seen.append(ids) or real(
        imgs, v, seed, ids))
    shapes: list[int] = []
    inputs = engine.Trainer._inputs

    def spy(self, *args):
        x = inputs(self, *args)
        shapes.append(x.ndim)
        return x

    monkeypatch.setattr(engine.Trainer, "_inputs", spy)
    cfg = _cfg(tiny_weights, **{"train.augment.randaugment": True})
    assert engine.views_cached(cfg.train)
    res = run_train(cfg, TrainInputs(tileset, tmp_path / "ra"))
    assert shapes and set(shapes) == {2}  # cached feature rows, never images through the backbone
    from spurgemap.tile.tileset import load_tile_set

    ts = load_tile_set(tileset)
    ids = seen[0]
    assert len(ids) == 2 and set(ts.sites[ids]) == {"s0"} and set(ts.labels[ids]) == {0, 1}  # the 1-shot draw
    base = run_train(_cfg(tiny_weights), TrainInputs(tileset, tmp_path / "base"))
    assert len(seen) == 2 and len(seen[1]) == 0  # no synthetic images: one (empty) call for them
    assert res.metrics["history"] != base.metrics["history"]  # the views changed what the head saw


def test_cross_validation_with_a_token_set_says_how_instead_of_an_empty_sites_advice(tiny_weights, tileset, tmp_path):
    import json

    import pandas as pd

    from spurgemap.core.errors import InputError
    from spurgemap.tile.tileset import load_tile_set

    ts = load_tile_set(tileset)
    ids = [t for t, g in zip(ts.tile_ids, ts.groups, strict=True) if g == "s0"][:2]
    syn = tmp_path / "syn"
    (syn / "images").mkdir(parents=True)
    rows = []
    for k, tid in enumerate(ids):
        from PIL import Image

        i = ts.tile_ids.index(tid)
        Image.fromarray(ts.images[i]).save(syn / "images" / f"{k}.png")
        rows.append({"path": f"images/{k}.png", "source_tile_id": tid, "label": ["absent", "present"][ts.labels[i]],
                     "method": "dafusion", "strength": "0.5", "seed": k, "prompt": "p", "model_id": "m"})
    pd.DataFrame(rows).to_csv(syn / "manifest.csv", index=False)
    (syn / "provenance.json").write_text(json.dumps({"token_tile_ids": ids}))
    cfg = load_config(overrides={"train.backbone": "test_efficientnet", "train.weights": str(tiny_weights),
                                 "train.input_size": PX, "train.epochs": 1})  # no --val-sites: cross-validation
    with pytest.raises(InputError) as err:
        run_train(cfg, TrainInputs(tileset, tmp_path / "run", [syn]))
    msg = str(err.value)
    assert "cross-validation validates on every site" in msg and "sites s0" in msg and "--val-sites V" in msg
    assert "--sites ," not in msg and "--sites `" not in msg and not (tmp_path / "run").exists()
