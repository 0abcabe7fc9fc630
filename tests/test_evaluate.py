"""`spurgemap evaluate` on a generated tile set, a tiny timm backbone and a tiny random diffusion model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tile_set, write_test_backbone
from PIL import Image

from spurgemap.augment.tiny import write_tiny_model
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.evaluate import EvaluateInputs, run_evaluate
from spurgemap.evaluate.report import area_vs_baseline, ci68, curve_table


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ev")
    weights = write_test_backbone(root)
    return {"tiles": make_tile_set(root / "tiles", sites=3, per_class=4), "weights": weights,
            "sd": write_tiny_model(root / "tiny-sd")}


def _cfg(s: dict[str, Path], methods: list[str], seeds: list[int] = [0, 1, 2], shots: list[int] = [1]):  # noqa: B006
    return load_config(overrides={
        "train.backbone": "test_efficientnet", "train.weights": str(s["weights"]), "train.input_size": 64,
        "train.epochs": 2, "train.steps_per_epoch": 4, "train.batch_size": 8, "evaluate.methods": methods,
        "evaluate.shots": shots,
        "evaluate.seeds": seeds, "evaluate.diffusion_model": str(s["sd"]), "augment.num_synthetic": 2,
        "augment.steps": 8, "augment.tokens.steps": 3, "augment.batch_size": 8})


def test_grid_writes_all_outputs_caches_and_repeats(setup, tmp_path):
    out = tmp_path / "eval"
    first = run_evaluate(_cfg(setup, ["baseline", "dafusion"]), EvaluateInputs(setup["tiles"], out))
    assert first.runs == 6 and first.trained == 6 and first.tiny_model
    assert (first.val_sites, first.test_sites) == (["s1"], ["s2"])
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns) == ["method", "k", "seed", "split", "metric", "value", "randaugment"]
    per_run = res.groupby(["method", "k", "seed"]).size()
    assert len(per_run) == 6 and (per_run == 6).all()  # one row set per (method, k, seed)
    assert set(res.split) == {"validation", "test"}
    # every row is the number its run's own metrics.json holds
    runs = list((out / "runs").glob("*/k*/seed*/train/metrics.json"))
    assert len(runs) == 6
    for path in runs:
        method, k, seed = path.parts[-5], int(path.parts[-4][1:]), int(path.parts[-3][4:].split("-")[0])
        m = json.loads(path.read_text())
        for split, block in (("validation", m["validation"]), ("test", m["test"])):
            row = res[(res.method == method) & (res.k == k) & (res.seed == seed) & (res.split == split)
                      & (res.metric == "balanced_accuracy")]
            assert row.value.tolist() == [pytest.approx(block["balanced_accuracy"])], (path, split)
    summary = (out / "summary.md").read_text()
    assert "TINY RANDOM" in summary and "| baseline |" in summary and "| dafusion |" in summary
    with Image.open(out / "accuracy_vs_k.png") as im:
        assert im.size[0] > 400
    # tokens and synthetic tiles came from the k training tiles only: never validation or test sites
    for man in (out / "runs" / "dafusion").rglob("manifest.csv"):
        m = pd.read_csv(man)
        k = int(man.parts[-4][1:])
        assert m.source_tile_id.str.startswith("s0_").all() and m.source_tile_id.nunique() == 2 * k
    # a second run trains nothing and reports the same numbers
    again = run_evaluate(_cfg(setup, ["baseline", "dafusion"]), EvaluateInputs(setup["tiles"], out))
    assert again.trained == 0
    pd.testing.assert_frame_equal(again.results, first.results)
    # adding a method trains only the new cells
    more = run_evaluate(_cfg(setup, ["baseline", "randaugment", "dafusion"]), EvaluateInputs(setup["tiles"], out))
    assert more.trained == 3 and more.runs == 9
    # the same seeds from scratch give identical numbers
    fresh = run_evaluate(_cfg(setup, ["baseline"]), EvaluateInputs(setup["tiles"], tmp_path / "fresh"))
    a = first.results[first.results.method == "baseline"].reset_index(drop=True)
    pd.testing.assert_frame_equal(fresh.results, a)


def test_generative_methods_need_a_model_and_sites_must_make_sense(setup, tmp_path):
    cfg = _cfg(setup, ["dafusion"])
    cfg.evaluate.diffusion_model = None
    with pytest.raises(InputError, match="need a diffusion model"):
        run_evaluate(cfg, EvaluateInputs(setup["tiles"], tmp_path / "e"))
    bad = _cfg(setup, ["baseline"])
    bad.evaluate.val_sites = ["s0", "s1", "s2"]
    bad.evaluate.test_sites = ["s2"]
    with pytest.raises(InputError, match="both validation and test"):
        run_evaluate(bad, EvaluateInputs(setup["tiles"], tmp_path / "e"))
    with pytest.raises(InputError, match="unknown"):
        run_evaluate(_cfg(setup, ["baseline", "magic"]), EvaluateInputs(setup["tiles"], tmp_path / "e"))


def test_confidence_interval_and_area_against_hand_computed_values():
    m, lo, hi = ci68(pd.Series([0.6, 0.7, 0.8, 0.9]))
    se = np.std([0.6, 0.7, 0.8, 0.9], ddof=1) / 2
    assert m == pytest.approx(0.75) and hi - m == pytest.approx(1.1890 * se, rel=1e-3)  # t quantile 0.84, 3 dof
    assert m - lo == pytest.approx(hi - m)
    assert np.isnan(ci68(pd.Series([0.5]))[1])
    rows = [{"method": meth, "k": k, "seed": 0, "split": "test", "metric": "balanced_accuracy", "value": v}
            for meth, vals in {"baseline": [0.5, 0.6, 0.7], "dafusion": [0.6, 0.7, 0.8]}.items()
            for k, v in zip([1, 2, 4], vals, strict=True)]
    table = curve_table(pd.DataFrame(rows))
    areas = area_vs_baseline(table)
    assert areas["baseline"] == 0 and areas["dafusion"] == pytest.approx(0.2)  # 0.1 higher over log2 span 2


def test_paired_differences_against_hand_computed_values_and_in_the_summary(tmp_path):
    from spurgemap.evaluate.report import paired_vs_baseline, write_reports

    base, daf = [0.5, 0.6, 0.7], [0.55, 0.70, 0.72]
    rows = [{"method": m, "k": 1, "seed": s, "split": "test", "metric": "balanced_accuracy", "value": v}
            for m, vals in {"baseline": base, "dafusion": daf}.items() for s, v in enumerate(vals)]
    rows.append({"method": "dafusion", "k": 1, "seed": 9, "split": "test", "metric": "balanced_accuracy",
                 "value": 0.99})  # no baseline for seed 9: not a pair
    paired = paired_vs_baseline(pd.DataFrame(rows))
    d = np.array(daf) - np.array(base)
    half = 1.3119 * d.std(ddof=1) / np.sqrt(3)  # t quantile 0.84, 2 dof (tables)
    r = paired.iloc[0]
    assert r.pairs == 3 and r["mean"] == pytest.approx(d.mean()) and r.hi - r["mean"] == pytest.approx(half, rel=1e-3)
    write_reports(tmp_path, pd.DataFrame(rows), load_config(), ["s1"], ["s2"], True, None)
    text = (tmp_path / "summary.md").read_text()
    assert "paired difference to baseline" in text and f"| dafusion | {d.mean():+.3f} [" in text
    assert "TINY RANDOM" in text


def test_cell_keys_follow_model_content_sites_and_version(setup, tmp_path):
    from spurgemap.augment.diffusion import content_hash
    from spurgemap.evaluate import stage

    cfg = stage._run_config(_cfg(setup, ["dafusion"]), "dafusion", 1, 0, ["s1"], ["s2"])
    copy = tmp_path / "elsewhere"
    shutil.copytree(setup["sd"], copy)
    a = stage._run_dir(tmp_path, cfg, "dafusion", 1, 0, "d", content_hash(str(setup["sd"])))
    moved = cfg.model_copy(deep=True)
    moved.augment.model = str(copy)
    assert stage._run_dir(tmp_path, moved, "dafusion", 1, 0, "d", content_hash(str(copy))) == a  # path ignored
    weights = next((copy / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    assert stage._run_dir(tmp_path, moved, "dafusion", 1, 0, "d", content_hash(str(copy))) != a  # new weights
    assert stage._run_dir(tmp_path, cfg, "dafusion", 1, 0, "other-sites", content_hash(str(setup["sd"]))) != a
    stage.__version__ = "0.0.0-other"
    try:
        assert stage._run_dir(tmp_path, cfg, "dafusion", 1, 0, "d", content_hash(str(setup["sd"]))) != a
    finally:
        from spurgemap import __version__
        stage.__version__ = __version__
