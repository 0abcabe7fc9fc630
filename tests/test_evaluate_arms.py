"""evaluate's arms and protocols: RandAugment on generative arms, one model load per grid, --protocol reference."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_tile_set, write_test_backbone

from spurgemap.augment import diffusion
from spurgemap.augment.tiny import write_tiny_model
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.evaluate import EvaluateInputs, run_evaluate, stage
from spurgemap.evaluate.protocol import REFERENCE_TEMPLATES, apply_protocol, parse_arm


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arms")
    weights = write_test_backbone(root)
    return {"tiles": make_tile_set(root / "tiles", sites=3, per_class=3), "weights": weights,
            "sd": write_tiny_model(root / "tiny-sd")}


def _cfg(s: dict[str, Path], methods: list[str], seeds: list[int], **over):
    return load_config(overrides={
        "train.backbone": "test_efficientnet", "train.weights": str(s["weights"]), "train.input_size": 64,
        "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 8, "evaluate.methods": methods,
        "evaluate.shots": [1], "evaluate.seeds": seeds, "evaluate.diffusion_model": str(s["sd"]),
        "augment.num_synthetic": 1, "augment.steps": 5, "augment.tokens.steps": 2, "augment.batch_size": 8,
        **over})


def test_randaugment_composes_with_a_generative_arm_and_the_model_loads_once(setup, tmp_path, monkeypatch):
    loads, hashes = [], []
    real_load, real_hash = stage.load_model, diffusion._weights_hash
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(diffusion, "_weights_hash", lambda p: hashes.append(p) or real_hash(p))
    out = tmp_path / "eval"
    res = run_evaluate(_cfg(setup, ["dafusion", "dafusion+randaugment"], [0, 1]), EvaluateInputs(setup["tiles"], out))
    assert res.trained == 4
    assert len(loads) == 1 and len(hashes) == 1  # one load and one hash of the model for 4 generative cells
    table = pd.read_csv(out / "results.csv")
    flags = table.groupby("method").randaugment.agg(set).to_dict()
    assert flags == {"dafusion": {False}, "dafusion+randaugment": {True}}
    for arm, on in (("dafusion", False), ("dafusion_randaugment", True)):
        runs = sorted((out / "runs").glob(f"{arm}/k1/seed*/train/config.yaml"))
        assert len(runs) == 2, arm
        for cfg_file in runs:
            cfg = yaml.safe_load(cfg_file.read_text())
            assert cfg["train"]["augment"]["randaugment"] is on and cfg["augment"]["method"] == "dafusion"
            manifest = pd.read_csv(cfg_file.parents[1] / "synthetic" / "manifest.csv")
            assert len(manifest) == 2 and set(manifest.method) == {"dafusion"}  # synthetic tiles in both arms
    summary = json.loads(next((out / "runs" / "dafusion").rglob("summary.json")).read_text())
    assert summary["model"]["model_hash"] == diffusion.content_hash(str(setup["sd"]))


def test_arm_names_and_a_config_randaugment_are_checked(setup, tmp_path):
    assert parse_arm("real-guidance+randaugment").randaugment and parse_arm("randaugment").randaugment
    assert not parse_arm("dafusion").randaugment and not parse_arm("baseline").generative
    for bad in ("baseline+randaugment", "magic+randaugment", "dafusion+cutmix"):
        with pytest.raises(InputError, match="unknown arm"):
            parse_arm(bad)
    cfg = _cfg(setup, ["baseline", "dafusion"], [0], **{"train.augment.randaugment": True})
    with pytest.raises(InputError, match=r"train.augment.randaugment: .*dafusion\+randaugment"):
        run_evaluate(cfg, EvaluateInputs(setup["tiles"], tmp_path / "e"))
    assert not (tmp_path / "e" / "runs").exists()


def test_reference_protocol_applies_the_papers_settings(setup, tmp_path):
    ref = apply_protocol(_cfg(setup, ["dafusion"], [0], **{"evaluate.protocol": "reference"}))
    a, t = ref.augment, ref.train
    assert (a.num_synthetic, t.epochs, t.lr, t.weight_decay, t.steps_per_epoch) == (50, 50, 1e-4, 0.0, 200)
    assert a.prompt == "a photo of a {token}" and a.real_guidance_prompt == "a woodland seen from a drone"
    assert a.tokens.templates == REFERENCE_TEMPLATES and len(REFERENCE_TEMPLATES) == 27
    assert (a.tokens.steps, a.tokens.lr, a.tokens.batch_size, a.strengths) == (1000, 5e-4, 4, [0.25, 0.5, 0.75, 1.0])
    assert t.backbone == "test_efficientnet"  # the backbone is the user's choice (README lists the deviation)
    default = apply_protocol(_cfg(setup, ["dafusion"], [0]))
    assert (default.augment.num_synthetic, default.train.epochs) == (1, 1)
    keys = [stage._run_dir(tmp_path, stage._run_config(c, "dafusion", 1, 0, ["s1"], ["s2"]), "dafusion", 1, 0,
                           "d", "h") for c in (ref, default)]
    assert keys[0] != keys[1]  # reference cells never reuse default cells
