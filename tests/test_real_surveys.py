"""What a real survey breaks: one-class sites, neighbouring flights, weak plot labels, ground
resolution, another species, repeated trainings. Each fix is checked on values."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import ORIGIN, PX, make_tile_set, square, texture, write_plots, write_raster
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.config import TrainConfig, load_config
from spurgemap.core.errors import InputError
from spurgemap.model.classifier import SpurgeClassifier
from spurgemap.model.engine import Batchable, Trainer, bag_max, plot_bags
from spurgemap.model.preprocess import Prep
from spurgemap.model.splits import make_splits, near_groups, spatial_groups
from spurgemap.predict.deepness import export_deepness
from spurgemap.tile.tileset import load_tile_set
from spurgemap.train import TrainInputs, run_train
from spurgemap.train import stage as train_stage

runner = CliRunner()


@pytest.fixture(scope="module")
def tileset(tmp_path_factory) -> Path:
    return make_tile_set(tmp_path_factory.mktemp("rs") / "tiles", sites=3)


def _cfg(weights: Path, **over):
    base = {"train.backbone": "test_efficientnet", "train.weights": str(weights), "train.input_size": PX,
            "train.epochs": 2, "train.batch_size": 16, "train.lr": 0.01, "train.mode": "probe"}
    base.update(over)
    return load_config(overrides=base)


def _survey(sites: int, plots: int, tiles: int, absent_sites: set[int]) -> tuple[np.ndarray, np.ndarray]:
    groups, labels = [], []
    for s in range(sites):
        for p in range(plots):
            groups += [f"h{s:04d}"] * tiles
            labels += [int(s not in absent_sites and p < 3)] * tiles
    return np.array(groups), np.array(labels)


def test_single_class_sites_get_folds_that_each_hold_both_classes():
    groups, labels = _survey(9, 8, 4, absent_sites={0, 3, 6})  # a third of the sites: absent plots only
    for folds in (0, 3, 4):
        splits = make_splits(groups, labels, [], ["h0008"], folds, seed=0)
        assert len(splits) == (5 if folds == 0 else folds)  # folds=0: one per non-test site with present plots
        vals = np.sort(np.concatenate([s.val for s in splits]))
        assert vals.tolist() == np.flatnonzero(groups != "h0008").tolist()  # every tile validated once
        for s in splits:
            assert set(labels[s.val].tolist()) == {0, 1} and set(labels[s.train].tolist()) == {0, 1}
            assert not set(groups[s.train]) & set(groups[s.val]) and "h0008" not in set(groups[s.train])
    # all sites with both classes: leave-one-site-out as before
    both, lab = _survey(3, 8, 2, absent_sites=set())
    assert [s.name for s in make_splits(both, lab, [], [])] == ["h0000", "h0001", "h0002"]
    # one site with present plots: no two folds can both hold present tiles; the message names the fix
    one, lab1 = _survey(4, 8, 2, absent_sites={1, 2, 3})
    with pytest.raises(InputError, match=r"train\.folds.*train\.group_column"):
        make_splits(one, lab1, [], [])
    with pytest.raises(InputError, match="leave --val-sites empty"):
        make_splits(groups, labels, ["h0000"], [])


def test_training_with_all_absent_sites_uses_pooled_out_of_fold_metrics(tmp_path, tiny_weights):
    tiles = make_tile_set(tmp_path / "t", sites=4, labels_for={"s0": [0, 0, 1, 1], "s1": [0, 0, 0],
                                                               "s2": [0, 1, 1], "s3": [0, 0]})
    res = run_train(_cfg(tiny_weights), TrainInputs(tiles, tmp_path / "run"))
    m = res.metrics
    assert m["selection"] == "cross-validation by site" and len(m["folds"]) == 2
    assert m["validation"]["n"] == 12  # pooled over folds: every tile once
    assert sorted("+".join(m["folds"]).split("+")) == ["s0", "s1", "s2", "s3"]


def test_spatial_groups_merge_neighbouring_footprints(tileset, tiny_weights, tmp_path, caplog):
    bounds = np.array([[0, 0, 10, 10], [30, 0, 40, 10], [45, 0, 50, 10], [1000, 0, 1010, 10.0]])
    groups = np.array(["a", "b", "b", "c"])
    assert spatial_groups(groups, bounds, 19.5).tolist() == ["a", "b", "b", "c"]  # a-b gap is exactly 20
    assert spatial_groups(groups, bounds, 20).tolist() == ["a+b", "a+b", "a+b", "c"]
    assert near_groups(groups, bounds, ["a"], ["b", "c"], 25) == [("a", "b", 20.0)]

    ts = load_tile_set(tileset)  # footprints in metres, from tiles.gpkg; sites ~981 m apart
    index = gpd.read_file(tileset / "tiles.gpkg").set_index("tile_id").loc[ts.tile_ids]
    assert np.allclose(ts.bounds, index.geometry.bounds.to_numpy())
    x_max = ts.bounds[ts.groups == "s0", 2].max()
    gap = ts.bounds[ts.groups == "s1", 0].min() - x_max
    assert gap == pytest.approx(1000 - 9 * 2 - PX * 0.014)
    assert set(spatial_groups(ts.groups, ts.bounds, gap - 1)) == {"s0", "s1", "s2"}
    assert set(spatial_groups(ts.groups, ts.bounds, gap + 1)) == {"s0+s1+s2"}

    caplog.set_level(logging.WARNING, logger="spurgemap")
    cfg = _cfg(tiny_weights, **{"train.val_sites": ["s1"], "train.epochs": 1, "train.spatial_distance_m": gap + 1})
    run_train(cfg, TrainInputs(tileset, tmp_path / "near"))
    assert any("s1 ~ s0" in r.message and "group_by=spatial" in r.message for r in caplog.records)
    caplog.clear()
    run_train(_cfg(tiny_weights, **{"train.val_sites": ["s1"], "train.epochs": 1,
                                    "train.spatial_distance_m": gap - 1}), TrainInputs(tileset, tmp_path / "far"))
    assert not [r for r in caplog.records if "held-out" in r.message]
    cfg.train.group_by = "spatial"  # neighbours of the validation site leave training: none remain here
    with pytest.raises(InputError, match="one class only"):
        run_train(cfg, TrainInputs(tileset, tmp_path / "spatial"))


def _weak_plots(seed: int, plots: int = 60, per: int = 8):
    """Features of plots: present plots hold 1..4 weed tiles of 8; a plot-level cue (site light,
    neighbouring vegetation) comes with present plots, and the weed itself shows in feature 0."""
    rng = np.random.default_rng(seed)
    present_plot = np.arange(plots) % 2 == 1
    plot = np.repeat(np.arange(plots), per)
    truth = np.zeros(len(plot), np.int64)
    for p in np.flatnonzero(present_plot):
        truth[p * per + rng.choice(per, rng.integers(1, per // 2 + 1), replace=False)] = 1
    f = rng.normal(0, 1, (len(plot), 8)).astype(np.float32)
    f[:, 0] += 2.0 * truth
    f[:, 1] += 1.5 * present_plot[plot] + rng.normal(0, 0.3, plots)[plot]
    return torch.from_numpy(f)[:, None, :].repeat(1, 8, 1), present_plot[plot].astype(np.int64), truth, plot


def _tile_auc(mil: bool, seed: int) -> float:
    feats, label, truth, plot = _weak_plots(seed)
    # each to convergence: a tile epoch takes 30 steps, a bag epoch 4
    cfg = TrainConfig(labels="plot-mil" if mil else "tile", epochs=40 if mil else 12, lr=0.05, batch_size=16)
    torch.manual_seed(0)
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    data = Batchable(np.zeros((len(label), 1, 1, 3), np.uint8), label, empty, np.zeros(0, np.int64),
                     bags=plot if mil else None)
    trainer = Trainer(SpurgeClassifier(torch.nn.Identity(), 8), cfg,
                      Prep(8, (0, 0, 0), (1, 1, 1), torch.device("cpu"), False), data, feats, feats[:0], 0)
    idx = np.arange(len(label))
    for epoch in range(cfg.epochs):
        trainer.epoch(0, epoch, idx, None, np.zeros(len(label)))
    return float(roc_auc_score(truth, trainer.predict(idx)))


def test_multiple_instance_labels_score_weed_tiles_above_empty_ones():
    # measured here (tile-level ROC-AUC, seeds 0-3): tile labels 0.855 / 0.819 / 0.834 / 0.806,
    # plot-mil 0.916 / 0.849 / 0.899 / 0.854
    for seed in (0, 1):
        tile, mil = _tile_auc(False, seed), _tile_auc(True, seed)
        assert mil > tile + 0.02, (seed, tile, mil)
    # bags: a plot's tiles, except tiles verified one by one (`tile --verify`), which stay alone
    plots = np.array(["s/a", "s/a", "s/a", "s/b", "t/a"])
    bags = plot_bags(plots, np.array([False, True, False, False, False]))
    assert len(set(bags.tolist())) == 4 and bags[0] == bags[2] != bags[1]
    assert len(set(plot_bags(plots, None).tolist())) == 3
    y, p, first = bag_max(bags, np.arange(5), np.array([1, 0, 1, 0, 1]), np.array([0.2, 0.9, 0.7, 0.1, 0.4]))
    order = np.argsort(first)
    assert first[order].tolist() == [0, 1, 3, 4] and y[order].tolist() == [1, 0, 0, 1]
    assert p[order].tolist() == [0.7, 0.9, 0.1, 0.4]


def test_feature_cache_from_the_command_line_and_plot_mil_report(tileset, tiny_weights, tmp_path, monkeypatch):
    calls = []
    real = train_stage.onnx_features  # the CPU feature path
    monkeypatch.setattr(train_stage, "onnx_features", lambda model, images, *a, **k: (
        calls.append(len(images)), real(model, images, *a, **k))[1])
    cache = tmp_path / "cache"
    base = ["train", str(tileset), "--backbone", "test_efficientnet", "--weights", str(tiny_weights),
            "--mode", "probe", "--epochs", "3", "--feature-cache", str(cache), "--labels", "plot-mil",
            "--set", f"train.input_size={PX}"]
    first = runner.invoke(app, [*base, "--out", str(tmp_path / "r1")])
    assert first.exit_code == 0, first.output
    assert "validation tiles of present plots scored absent" in first.stdout
    second = runner.invoke(app, [*base, "--out", str(tmp_path / "r2")])
    assert second.exit_code == 0, second.output
    assert calls == [len(load_tile_set(tileset)), 0, 0]  # real tiles once; (no synthetic tiles: 0)
    assert len(list(cache.glob("*.safetensors"))) == 1
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("r1", "r2"))
    for key in ("history", "threshold", "validation", "present_plot_tiles_scored_absent", "labels"):
        assert m1[key] == m2[key]
    sa = m1["present_plot_tiles_scored_absent"]
    ts = load_tile_set(tileset)
    assert sa["of"] == int(ts.labels.sum()) and 0 <= sa["tiles"] <= sa["of"]  # every tile validated once
    assert m1["labels"].startswith("plot-mil")
    other = runner.invoke(app, [*base[:-1], f"train.input_size={PX - 16}", "--out", str(tmp_path / "r3")])
    assert other.exit_code == 0, other.output
    assert len(list(cache.glob("*.safetensors"))) == 2 and calls[-2] == len(ts)  # another size: a miss
    relabelled = tmp_path / "relabelled"  # the same pixels with other labels: features are reused
    shutil.copytree(tileset, relabelled)
    index = gpd.read_file(relabelled / "tiles.gpkg")
    index.loc[0, "label"] = "present" if index.loc[0, "label"] == "absent" else "absent"
    index.to_file(relabelled / "tiles.gpkg")
    assert load_tile_set(relabelled).digest != ts.digest
    assert load_tile_set(relabelled).pixels_digest == ts.pixels_digest
    n = len(calls)
    again = runner.invoke(app, [*base, "--out", str(tmp_path / "r4")])
    relab = runner.invoke(app, ["train", str(relabelled), *base[2:], "--out", str(tmp_path / "r5")])
    assert again.exit_code == 0 and relab.exit_code == 0, relab.output
    assert calls[n:] == [0, 0] and len(list(cache.glob("*.safetensors"))) == 2


GSD7 = 0.007
# transverse Mercator with scale 1 at the survey (UTM's 0.9996 would make ground and map metres differ)
LOCAL_TM = ("+proj=tmerc +lat_0=46.95 +lon_0=-111 +k=1 +x_0=500000 +y_0=5200000 +datum=WGS84 +units=m "
            "+no_defs")


def _survey_raster(path: Path, gsd: float, size_m: float = 10.5, seed: int = 0) -> Path:
    px = round(size_m / gsd)
    return write_raster(path, texture(px, px, seed), transform=Affine(gsd, 0, ORIGIN[0], 0, -gsd, ORIGIN[1]),
                        crs=LOCAL_TM)


@pytest.fixture(scope="module")
def gsd_run(tmp_path_factory, tiny_weights) -> dict[str, Path]:
    """A 7 mm/px survey tiled with --gsd 0.014 (250-px tiles of 3.5 m) and a giant hogweed model."""
    root = tmp_path_factory.mktemp("gsd")
    ortho = _survey_raster(root / "ortho7mm.tif", GSD7)
    rows = [dict(site_id=f"s{s}", plot_id=f"p{p}", presence=["absent", "present"][p],
                 geometry=square(ORIGIN[0] + 0.3 + 3.5 * (1.5 * p + 0.5) + 0.1 * s, ORIGIN[1] - 0.3 - 3.6 * (s + 0.5),
                                 3.5))
            for s in range(2) for p in range(2)]
    plots = write_plots(root / "plots.gpkg", rows, crs=LOCAL_TM)
    res = runner.invoke(app, ["tile", str(ortho), "--plots", str(plots), "--out", str(root / "tiles"),
                              "--gsd", "0.014"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", str(root / "tiles"), "--out", str(root / "run"), "--backbone",
                              "test_efficientnet", "--weights", str(tiny_weights), "--mode", "probe",
                              "--epochs", "1", "--set", f"train.input_size={PX}", "--set",
                              "labels.species=giant hogweed"])
    assert res.exit_code == 0, res.output
    bundle = root / "hogweed.bundle"  # predict's summary names the model file: keep its name neutral
    shutil.copy(root / "run" / "model.spurge", bundle)
    return {"root": root, "ortho": ortho, "tiles": root / "tiles", "bundle": bundle}


def test_tiles_resampled_to_a_target_ground_resolution(gsd_run):
    ts = load_tile_set(gsd_run["tiles"])
    assert ts.tile_px == 250 and ts.gsd_m == pytest.approx(0.014) and ts.source_gsd_m == pytest.approx(GSD7, rel=1e-3)
    index = gpd.read_file(gsd_run["tiles"] / "tiles.gpkg")
    assert set(index.resampling) == {"average"} and len(index) == 4
    with rasterio.open(gsd_run["ortho"]) as src:
        full = src.read()
    for rel in index.path:
        with rasterio.open(gsd_run["tiles"] / rel) as t:
            assert t.res == pytest.approx((0.014, 0.014)) and t.width == 250
            col, row = ~src.transform @ (t.transform.c, t.transform.f)
            c0, r0 = round(col), round(row)
            assert (c0, r0) == pytest.approx((col, row), abs=1e-6)
            window = full[:, r0:r0 + 500, c0:c0 + 500].astype(float)
            expect = window.reshape(3, 250, 2, 250, 2).mean(axis=(2, 4))  # 2 x 2 source pixels per tile pixel
            assert np.abs(t.read().astype(float) - expect).max() <= 1.0


def _spurge(text: str) -> list[str]:
    return re.findall(r"[^\n]{0,40}spurge(?!map)[^\n]{0,40}", text, flags=re.IGNORECASE)


def test_prediction_follows_the_tile_gsd_and_names_the_species(gsd_run, tmp_path):
    maps = tmp_path / "maps"
    res = runner.invoke(app, ["predict", str(gsd_run["ortho"]), "--model", str(gsd_run["bundle"]), "--out", str(maps)])
    assert res.exit_code == 0, res.output
    assert "giant hogweed on" in res.stdout and not _spurge(res.output)
    with rasterio.open(maps / "ortho7mm_class.tif") as ds:
        assert ds.res == pytest.approx((3.5, 3.5)) and (ds.width, ds.height) == (3, 3)  # 10.5 m / 3.5 m
    summary = json.loads((maps / "ortho7mm_summary.json").read_text())
    assert summary["tile_size_px"] == 500 and summary["species"] == "giant hogweed"
    assert "present_area_ha" in summary and "spurge_area_ha" not in summary
    for f in maps.iterdir():  # config.yaml is the whole resolved config (survey columns, augment tokens)
        if f.name != "config.yaml":
            assert not _spurge(f.read_bytes().decode("latin-1")), f.name
    qml = (maps / "ortho7mm_class.qml").read_text()
    assert 'label="giant hogweed"' in qml and 'label="no giant hogweed"' in qml
    meta = export_deepness(gsd_run["bundle"], tmp_path / "hogweed.onnx")
    assert meta["class_names"] == {"0": "no giant hogweed", "1": "giant hogweed"}
    assert meta["bundle_class_names"] == ["no_hogweed", "giant_hogweed"]

    # 3.5 mm/px imagery is 4x finer than the model: shrunk like the --gsd tiles were, cells stay 3.5 m
    fine = _survey_raster(tmp_path / "ortho35.tif", 0.0035, size_m=7.0)
    res = runner.invoke(app, ["predict", str(fine), "--model", str(gsd_run["bundle"]), "--out", str(tmp_path / "m2")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "m2" / "ortho35_class.tif") as ds:
        assert ds.res == pytest.approx((3.5, 3.5)) and (ds.width, ds.height) == (2, 2)
    # imagery 2.5x coarser than the model lacks the detail it learned from: refused, one line
    coarse = _survey_raster(tmp_path / "ortho35mm.tif", 0.035, size_m=14.0)
    res = runner.invoke(app, ["predict", str(coarse), "--model", str(gsd_run["bundle"]), "--out", str(tmp_path / "m3")])
    assert res.exit_code == 2 and "coarser than the model" in res.stderr and not (tmp_path / "m3").exists()
