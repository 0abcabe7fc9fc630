"""`spurgemap train` on a small generated, separable tile set with a tiny timm backbone."""

from __future__ import annotations

import itertools
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PX, make_tile_set
from PIL import Image
from typer.testing import CliRunner

from spurgemap.augment.manifest import MANIFEST, load_synthetic, restrict_synthetic
from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.model.classifier import SpurgeClassifier, load_bundle, model_from_bundle, save_bundle
from spurgemap.model.splits import few_shot, make_splits
from spurgemap.tile.tileset import load_tile_set
from spurgemap.train import TrainInputs, run_train


def _cfg(weights: Path, **over):
    base = {"train.backbone": "test_efficientnet", "train.weights": str(weights), "train.input_size": PX,
            "train.epochs": 6, "train.batch_size": 16, "train.lr": 0.01, "train.mode": "finetune"}
    base.update(over)
    return load_config(overrides=base)


@pytest.fixture(scope="module")
def tileset(tmp_path_factory) -> Path:
    return make_tile_set(tmp_path_factory.mktemp("ts") / "tiles")


def test_finetune_lowers_loss_and_beats_chance(tileset, tiny_weights, tmp_path):
    res = run_train(_cfg(tiny_weights), TrainInputs(tileset, tmp_path / "run"))
    hist = res.metrics["history"]
    assert len(hist) == 3  # leave-one-site-out over 3 sites
    for h in hist:
        assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert res.balanced_accuracy >= 0.8
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["balanced_accuracy"] == res.balanced_accuracy
    assert set(m["validation"]["per_site"]) == {"s0", "s1", "s2"}
    assert {"precision", "recall", "f1"} <= set(m["validation"]["per_class"]["present"])
    for png in ("training_curves.png", "confusion_matrix.png", "tiles_right_wrong.png"):
        assert Image.open(tmp_path / "run" / png).size[0] > 100
    assert not (tmp_path / "run" / ".work").exists()


def test_probe_with_cached_features_is_deterministic(tileset, tiny_weights, tmp_path):
    cfg = _cfg(tiny_weights, **{"train.mode": "probe", "train.val_sites": ["s1"], "train.test_sites": ["s2"],
                               "train.epochs": 4})
    a = run_train(cfg, TrainInputs(tileset, tmp_path / "a"))
    b = run_train(cfg, TrainInputs(tileset, tmp_path / "b"))
    assert a.metrics["history"] == b.metrics["history"]
    assert a.metrics["test"]["n"] == 10 and a.metrics["selection"] == "validation sites"
    _, meta = load_bundle(a.bundle)
    assert meta.threshold == a.metrics["threshold"] and meta.tile_size_px == PX
    assert meta.backbone == "test_efficientnet" and meta.mean and meta.gsd_m == pytest.approx(0.014)


def test_bundle_round_trip_gives_identical_predictions(tileset, tiny_weights, tmp_path):
    res = run_train(_cfg(tiny_weights, **{"train.epochs": 2, "train.val_sites": ["s0"]}),
                    TrainInputs(tileset, tmp_path / "run"))
    model, meta = model_from_bundle(res.bundle)
    x = torch.randn(3, 3, PX, PX)
    state, _ = load_bundle(res.bundle)
    from spurgemap.model.backbones import create_backbone

    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    twin = SpurgeClassifier(backbone, spec.num_features)
    twin.load_state_dict(state)
    with torch.inference_mode():
        assert torch.equal(model(x), twin.eval()(x))
    # and a re-saved bundle holds the same tensors
    save_bundle(tmp_path / "again.spurge", model, meta)
    s2, _ = load_bundle(tmp_path / "again.spurge")
    assert all(torch.equal(state[k], s2[k]) for k in state)


def test_killed_run_resumes_to_the_same_result(tileset, tiny_weights, tmp_path, monkeypatch):
    cfg = _cfg(tiny_weights, **{"train.epochs": 3})
    ref = run_train(cfg, TrainInputs(tileset, tmp_path / "ref"))
    from spurgemap.model import engine

    real = engine.Trainer.epoch
    calls = {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(engine.Trainer, "epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, TrainInputs(tileset, tmp_path / "run"))
    assert (tmp_path / "run" / ".work" / "checkpoint.pt").exists()
    monkeypatch.setattr(engine.Trainer, "epoch", real)
    res = run_train(cfg, TrainInputs(tileset, tmp_path / "run"))
    assert res.resumed
    assert res.metrics["history"] == ref.metrics["history"]
    assert res.metrics["balanced_accuracy"] == ref.metrics["balanced_accuracy"]


def _write_synthetic(root: Path, tiles_dir: Path, sources: list[str]) -> Path:
    ts = load_tile_set(tiles_dir)
    root.mkdir(parents=True)
    rows = []
    for j, tid in enumerate(sources):
        img = ts.images[ts.tile_ids.index(tid)][::-1].copy()
        Image.fromarray(img).save(root / f"syn{j}.png")
        lab = "present" if ts.labels[ts.tile_ids.index(tid)] else "absent"
        rows.append({"path": f"syn{j}.png", "source_tile_id": tid, "label": lab, "method": "test",
                     "strength": 0.5, "seed": j, "prompt": "a drone photo of a {}", "model_id": "none"})
    pd.DataFrame(rows).to_csv(root / MANIFEST, index=False)
    return root


def test_synthetic_variants_of_held_out_tiles_never_train(tileset, tiny_weights, tmp_path):
    ts = load_tile_set(tileset)
    syn_dir = _write_synthetic(tmp_path / "syn", tileset, ts.tile_ids)  # one variant of every tile
    syn = load_synthetic([syn_dir], ts)
    splits = make_splits(ts.groups, ts.labels, ["s1"], ["s2"])
    allowed = restrict_synthetic(syn, splits[0].train)
    assert len(allowed) == 10 and set(ts.groups[syn.source[allowed]]) == {"s0"}
    res = run_train(_cfg(tiny_weights, **{"train.epochs": 2, "train.val_sites": ["s1"],
                                          "train.test_sites": ["s2"], "train.synthetic_alpha": 1.0}),
                    TrainInputs(tileset, tmp_path / "run", [syn_dir]))
    assert res.metrics["validation"]["n"] == 10


def test_manifest_that_does_not_match_is_refused(tileset, tmp_path):
    ts = load_tile_set(tileset)
    syn_dir = _write_synthetic(tmp_path / "syn", tileset, ts.tile_ids[:2])
    df = pd.read_csv(syn_dir / MANIFEST)
    df.loc[0, "source_tile_id"] = "elsewhere_p0_r0c0"
    df.to_csv(syn_dir / MANIFEST, index=False)
    with pytest.raises(InputError, match="does not match the tile set"):
        load_synthetic([syn_dir], ts)


def test_site_splits_never_mix_and_few_shot_is_deterministic():
    rng = np.random.default_rng(0)
    groups = np.array([f"g{i}" for i in rng.integers(0, 5, 200)])
    labels = rng.integers(0, 2, 200)
    for s in make_splits(groups, labels, [], ["g4"]):
        assert not set(groups[s.train]) & set(groups[s.val])
        assert "g4" not in set(groups[s.train]) | set(groups[s.val])
        assert set(groups[s.test]) == {"g4"}
    train = make_splits(groups, labels, ["g0"], [])[0].train
    a, b = few_shot(train, labels, 4, seed=3), few_shot(train, labels, 4, seed=3)
    assert np.array_equal(a, b) and len(a) == 8 and np.bincount(labels[a]).tolist() == [4, 4]
    assert not np.array_equal(a, few_shot(train, labels, 4, seed=4))
    assert set(a) <= set(train)


def test_refusals(tmp_path, tiny_weights):
    one_class = make_tile_set(tmp_path / "one", labels_for={"s0": [1, 1], "s1": [1, 1]}, sites=2)
    with pytest.raises(InputError, match="only one class"):
        run_train(_cfg(tiny_weights), TrainInputs(one_class, tmp_path / "r1"))
    lopsided = make_tile_set(tmp_path / "lop", sites=2, labels_for={"s0": [0, 1], "s1": [0, 0]})
    with pytest.raises(InputError, match=r"cannot form 2 site folds.*train\.folds"):
        run_train(_cfg(tiny_weights), TrainInputs(lopsided, tmp_path / "r2"))
    with pytest.raises(InputError, match="no tile index"):
        run_train(_cfg(tiny_weights), TrainInputs(tmp_path / "nothing", tmp_path / "r3"))
    bad = tmp_path / "bad.spurge"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a valid spurgemap bundle"):
        load_bundle(bad)
    evil = tmp_path / "evil.spurge"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"format": "spurgemap-bundle"}))
        zf.writestr("weights.safetensors", pickle.dumps(Payload()))
    with pytest.raises(InputError):
        load_bundle(evil)
    pickled = tmp_path / "pickle.spurge"
    pickled.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputError):
        load_bundle(pickled)
    assert not marker.exists()


def test_cli_train_and_info(tileset, tiny_weights, tmp_path):
    runner = CliRunner()
    args = ["train", str(tileset), "--out", str(tmp_path / "run"), "--backbone", "test_efficientnet",
            "--weights", str(tiny_weights), "--epochs", "2", "--set", f"train.input_size={PX}",
            "--val-sites", "s0", "--test-sites", "s2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "balanced accuracy" in res.stdout and "test sites" in res.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    info = json.loads(runner.invoke(app, ["info", str(tmp_path / "run" / "model.spurge")]).stdout)
    assert info["kind"] == "model bundle" and info["tile_size_px"] == PX
    bad = runner.invoke(app, ["train", str(tileset), "--out", str(tmp_path / "r2"), "--val-sites", "nowhere"])
    assert bad.exit_code == 2 and "unknown sites ['nowhere']" in bad.stderr


def test_every_on_the_fly_augmentation_runs(tileset, tiny_weights, tmp_path):
    from spurgemap.model.engine import _mix
    from spurgemap.model.preprocess import d4

    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert len({tuple(d4(x, k).flatten().tolist()) for k in range(8)}) == 8  # 8 distinct symmetries
    assert torch.equal(d4(x, 0), x)
    cfg = _cfg(tiny_weights, **{"train.epochs": 1, "train.val_sites": ["s0"], "train.augment.randaugment": True,
                               "train.augment.color_jitter": 0.2, "train.augment.cutmix": 0.5,
                               "train.augment.mixup": 0.5})
    res = run_train(cfg, TrainInputs(tileset, tmp_path / "run"))
    # the reported balanced accuracy is that of the saved bundle on validation site s0
    from sklearn.metrics import balanced_accuracy_score

    from spurgemap.model.preprocess import Prep, to_tensor

    ts = load_tile_set(tileset)
    val = ts.groups == "s0"
    model, meta = model_from_bundle(res.bundle)
    prep = Prep(meta.input_size, meta.mean, meta.std, torch.device("cpu"), channels_last=False)
    with torch.inference_mode():
        probs = torch.sigmoid(model(prep(to_tensor(ts.images[val])))).numpy()
    # the threshold is in the map's probability: the bundle's context step and calibration first
    from spurgemap.train.operating import map_probabilities

    probs = map_probabilities(ts, np.flatnonzero(val), probs, {"context": meta.context,
                                                               "calibration": meta.calibration})
    expect = balanced_accuracy_score(ts.labels[val], (probs >= meta.threshold).astype(int))
    assert res.balanced_accuracy == pytest.approx(expect, abs=1e-9)
    assert res.metrics["validation"]["n"] == int(val.sum()) == 10
    xb, yb = torch.rand(4, 3, 8, 8), torch.tensor([0.0, 1.0, 0.0, 1.0])
    for kind in ("cutmix", "mixup"):
        c = _cfg(tiny_weights, **{f"train.augment.{kind}": 1.0}).train
        outs = [_mix(xb, yb, c, np.random.default_rng(s)) for s in range(10)]
        assert all(m.shape == xb.shape and ((ym >= 0) & (ym <= 1)).all() for m, ym in outs)
        assert sum(not torch.equal(m, xb) for m, _ in outs) >= 8


def test_grouped_k_fold_by_cluster_column(tileset):
    ts = load_tile_set(tileset, group_column="cluster")
    assert set(ts.groups) == {"c0", "c1"}
    splits = make_splits(ts.groups, ts.labels, [], [], folds=2)
    assert len(splits) == 2
    assert sorted(np.concatenate([s.val for s in splits]).tolist()) == list(range(len(ts)))
    with pytest.raises(InputError, match="no column 'basin'"):
        load_tile_set(tileset, group_column="basin")


def test_few_shot_draws_are_nested_across_k():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    train = np.arange(300)
    for seed in range(4):
        draws = [set(few_shot(train, labels, k, seed).tolist()) for k in (1, 2, 4, 8, 16)]
        assert all(small < big for small, big in itertools.pairwise(draws))  # few_shot(k) in few_shot(2k)


def test_synthetic_set_whose_tokens_saw_held_out_tiles_is_refused(tileset, tiny_weights, tmp_path):
    ts = load_tile_set(tileset)
    train_ids = [t for t, g in zip(ts.tile_ids, ts.groups, strict=True) if g == "s0"]
    val_tile = next(t for t, g in zip(ts.tile_ids, ts.groups, strict=True) if g == "s1")
    syn_dir = _write_synthetic(tmp_path / "syn", tileset, train_ids[:2])  # variants of training tiles only
    (syn_dir / "provenance.json").write_text(json.dumps({"token_tile_ids": [train_ids[0], val_tile]}))
    cfg = _cfg(tiny_weights, **{"train.epochs": 1, "train.val_sites": ["s1"], "train.test_sites": ["s2"]})
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(tileset), "--out", str(tmp_path / "run"), "--synthetic", str(syn_dir),
                              "--set", f"train.backbone={cfg.train.backbone}", "--set", f"train.weights={tiny_weights}",
                              "--set", f"train.input_size={PX}", "--set", "train.epochs=1",
                              "--val-sites", "s1", "--test-sites", "s2"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "learned from 1 validation/test tile(s) (sites s1)" in line
    assert "augment --sites s0" in line
    (syn_dir / "provenance.json").write_text(json.dumps({"token_tile_ids": train_ids[:2]}))  # clean tokens
    assert run_train(cfg, TrainInputs(tileset, tmp_path / "ok", [syn_dir])).out.exists()


def test_shots_warn_when_drawn_tiles_lack_synthetic_variants(tileset, tiny_weights, tmp_path, caplog):
    ts = load_tile_set(tileset)
    cfg = _cfg(tiny_weights, **{"train.epochs": 1, "train.val_sites": ["s1"], "train.test_sites": ["s2"],
                                "train.shots": 2, "train.mode": "probe", "train.steps_per_epoch": 2})
    drawn = few_shot(make_splits(ts.groups, ts.labels, ["s1"], ["s2"])[0].train, ts.labels, 2, cfg.seed)
    syn_dir = _write_synthetic(tmp_path / "syn", tileset, [ts.tile_ids[i] for i in drawn[:1]])
    caplog.set_level("WARNING")
    run_train(cfg, TrainInputs(tileset, tmp_path / "run", [syn_dir]))
    assert "only 1 of the 4 drawn training tiles (25 %) have synthetic variants" in caplog.text


def test_steps_per_epoch_draws_with_replacement_whatever_k(tileset, tiny_weights, tmp_path, monkeypatch):
    from spurgemap.model import engine

    seen: list[tuple[int, int]] = []
    real = engine.draw_epoch

    def spy(data, train_idx, *a, **k):
        out = real(data, train_idx, *a, **k)
        seen.append((len(train_idx), len(out[1])))
        return out

    monkeypatch.setattr(engine, "draw_epoch", spy)
    over = {"train.val_sites": ["s1"], "train.test_sites": ["s2"], "train.shots": 1, "train.mode": "probe",
            "train.epochs": 2, "train.batch_size": 4}
    run_train(_cfg(tiny_weights, **over, **{"train.steps_per_epoch": 3}), TrainInputs(tileset, tmp_path / "a"))
    assert seen == [(2, 12), (2, 12)]  # 3 batches of 4 from the 2 drawn tiles, each epoch
    seen.clear()
    run_train(_cfg(tiny_weights, **over), TrainInputs(tileset, tmp_path / "b"))
    assert seen == [(2, 800), (2, 800)]  # default with --shots: the reference's 200 batches per epoch
    seen.clear()
    run_train(_cfg(tiny_weights, **{**over, "train.shots": None}), TrainInputs(tileset, tmp_path / "c"))
    assert seen == [(10, 10), (10, 10)]  # full data: one pass over the training tiles
    syn, idx, _ = real(engine.Batchable(np.zeros((5, 2, 2, 3), np.uint8), np.zeros(5), np.zeros((0, 2, 2, 3),
                       np.uint8), np.zeros(0)), np.arange(5), 0.5, True, np.random.default_rng([0, 0, 0]), 50)
    assert len(idx) == 50 and len(set(idx.tolist())) == 5 and not syn.any()  # with replacement


def test_partial_finetune_trains_only_the_last_stages(tileset, tiny_weights, tmp_path):
    from safetensors.torch import load_file

    from spurgemap.model.backbones import create_backbone
    from spurgemap.model.engine import backbone_stages, freeze_early_stages

    backbone, spec = create_backbone("test_efficientnet", tiny_weights)
    n = len(backbone_stages(backbone))
    model = SpurgeClassifier(backbone, spec.num_features)
    assert freeze_early_stages(model, 1) == n
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(k.startswith((f"backbone.blocks.{n - 1}.", "backbone.conv_head", "backbone.bn2",
                                           "head.")) for k in trainable)
    assert any(k.startswith(f"backbone.blocks.{n - 1}.") for k in trainable)
    resnet, rspec = create_backbone("resnet18", pretrained=False)  # torchvision: stages are layer1-4
    r_model = SpurgeClassifier(resnet, rspec.num_features)
    assert freeze_early_stages(r_model, 1) == 4
    learn = {k for k, p in r_model.named_parameters() if p.requires_grad}
    assert {k.split(".")[1] if k.startswith("backbone.") else "head" for k in learn} == {"layer4", "head"}
    with pytest.raises(InputError, match=f"has {n} stages"):
        freeze_early_stages(SpurgeClassifier(*create_backbone("test_efficientnet", tiny_weights)[:1], 8), n + 1)

    cfg = _cfg(tiny_weights, **{"train.trainable_blocks": 1, "train.epochs": 2, "train.val_sites": ["s1"]})
    run_train(cfg, TrainInputs(tileset, tmp_path / "run"))
    state, _ = load_bundle(tmp_path / "run" / "model.spurge")
    start = load_file(tiny_weights)
    moved = {k for k, v in start.items() if not torch.equal(state[f"backbone.{k}"], v)}
    # early stages frozen: weights and BatchNorm statistics as loaded; the last stage learned
    assert moved and all(k.startswith((f"blocks.{n - 1}.", "conv_head", "bn2")) for k in moved)
    assert any(k.startswith(f"blocks.{n - 1}.") and "running_mean" in k for k in moved)
    bad = CliRunner().invoke(app, ["train", str(tileset), "--out", str(tmp_path / "r2"), "--trainable-blocks", "1"])
    assert bad.exit_code == 2 and "mode finetune" in bad.stderr and "Traceback" not in bad.stderr
