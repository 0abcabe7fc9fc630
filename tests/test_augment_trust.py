"""DA-Fusion you can trust: dtypes kept (CPU bfloat16 stands in for CUDA half precision), no token
reuse across selections, provenance for train's leak check, and one clear line for broken inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PX
from safetensors.torch import save_file
from typer.testing import CliRunner

from spurgemap.augment.diffusion import load_model
from spurgemap.augment.erase import erase_concepts
from spurgemap.augment.manifest import load_synthetic
from spurgemap.augment.methods import METHODS, Generator, Job, Step
from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.augment.store import load_tokens_into
from spurgemap.augment.tokens import learn_tokens
from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.tile.tileset import load_tile_set


def _cfg(model: Path, **over):
    base = {"augment.model": str(model), "augment.num_synthetic": 1, "augment.steps": 5,
            "augment.tokens.steps": 2, "augment.batch_size": 4, "augment.shots": 1}
    base.update(over)
    return load_config(overrides=base)


def _dtypes(pipe) -> set[torch.dtype]:
    return {p.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()}


def test_bf16_every_pipeline_and_method_keeps_the_model_dtype(tiny, tiles):
    model = load_model(str(tiny), device="cpu", dtype="bfloat16")
    assert _dtypes(model.pipe) == {torch.bfloat16}
    cfg = _cfg(tiny, **{"augment.strengths": [0.5], "augment.perturb_guidance": 2.0}).augment
    gen = Generator(model, cfg)
    for kind in ("img2img", "inpaint", "ddim", "text2img"):
        assert _dtypes(gen.pipe(kind)) == {torch.bfloat16}, kind  # from_pipe used to recast to fp32
    assert _dtypes(model.pipe) == {torch.bfloat16}
    ts = load_tile_set(tiles)
    src = ts.images[:2]
    outs = {}
    for method in METHODS:
        strength = None if method in ("text2img", "latent-perturb") else 0.5
        jobs = [Job(i, ts.tile_ids[i], "absent", 0, 5 + i, (Step(method, strength, "a drone photo"),))
                for i in range(2)]
        outs[method] = gen.run(src, jobs, None, PX)
        assert outs[method].shape == (2, PX, PX, 3) and outs[method].std() > 1, method
    assert _dtypes(model.pipe) == {torch.bfloat16}
    assert not np.array_equal(outs["dafusion"], outs["text2img"])


def test_bf16_token_learning_freezes_unet_and_vae_and_trains_fp32_rows(tiny, tiles):
    model = load_model(str(tiny), device="cpu", dtype="bfloat16")
    assert all(p.requires_grad for p in model.pipe.unet.parameters())  # as diffusers loads it
    ts = load_tile_set(tiles)
    images = {"<no_spurge>": ts.images[ts.labels == 0][:1], "<leafy_spurge>": ts.images[ts.labels == 1][:1]}
    cfg = _cfg(tiny).augment.tokens.model_copy(update={"steps": 3})
    res = learn_tokens(model.pipe, images, cfg, model.resolution, seed=0)
    for net in (model.pipe.unet, model.pipe.vae):
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    for token, emb in res.embeddings.items():
        assert emb.dtype == torch.float32 and torch.isfinite(emb).all()
        assert np.isfinite(res.loss_after[token])
    assert model.pipe.unet.dtype == torch.bfloat16


def test_bf16_end_to_end_augment_with_erasure_shared_across_seeds(tiny, tiles, tmp_path, monkeypatch):
    from spurgemap.augment import stage

    calls = {"n": 0}
    real = stage.erase_concepts

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(stage, "erase_concepts", counting)
    over = {"augment.dtype": "bfloat16", "augment.device": "cpu", "augment.erase.concepts": ["leafy spurge"],
            "augment.erase.iterations": 2, "augment.erase.ddim_steps": 2,
            "augment.erase.cache_dir": str(tmp_path / "erased")}
    a = run_augment(_cfg(tiny, **over), AugmentInputs(tiles, tmp_path / "a"))
    b = run_augment(_cfg(tiny, **over, seed=3), AugmentInputs(tiles, tmp_path / "b"))
    assert calls["n"] == 1 and len(list((tmp_path / "erased").glob("erased-unet-*.safetensors"))) == 1
    assert a.images == b.images == 2
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["model"]["dtype"] == "bfloat16"
    m = pd.read_csv(tmp_path / "b" / "manifest.csv", dtype=str)
    assert m.model_hash.str.contains("-erased-").all()


def test_bf16_erasure_trains_in_fp32_and_returns_bf16(tiny):
    model = load_model(str(tiny), device="cpu", dtype="bfloat16")
    text0 = {k: v.clone() for k, v in model.pipe.text_encoder.state_dict().items()}
    cfg = _cfg(tiny).augment.erase.model_copy(update={"concepts": ["leafy spurge"], "iterations": 3,
                                                      "lr": 1e-4, "ddim_steps": 3})
    res = erase_concepts(model.pipe, cfg, model.resolution, seed=0)
    assert np.isfinite(res.loss_before) and np.isfinite(res.loss_after)
    assert model.pipe.unet.dtype == torch.bfloat16 and _dtypes(model.pipe) == {torch.bfloat16}
    assert all(torch.equal(v, text0[k]) for k, v in model.pipe.text_encoder.state_dict().items())


def test_overwrite_relearns_tokens_and_provenance_names_their_tiles(tiny, tiles, tmp_path):
    out = tmp_path / "syn"
    run_augment(_cfg(tiny, **{"augment.sites": ["s0"]}), AugmentInputs(tiles, out))
    first = json.loads((out / "tokens" / "tokens.json").read_text())["tile_ids"]
    assert first and all(t.startswith("s0_") for t in first)
    run_augment(_cfg(tiny, **{"augment.sites": ["s1"]}), AugmentInputs(tiles, out, overwrite=True))
    second = json.loads((out / "tokens" / "tokens.json").read_text())["tile_ids"]
    assert second and all(t.startswith("s1_") for t in second)  # not the s0 tokens of the first run
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["token_tile_ids"] == second
    assert not any(p.name.startswith("s0_") for p in (out / "images").iterdir())  # stale images gone
    syn = load_synthetic([out], load_tile_set(tiles))
    ts = load_tile_set(tiles)
    assert [ts.tile_ids[i] for i in syn.token_tiles[str(out)]] == second


def test_scheduler_ddim_matches_the_inversion_settings_and_latent_perturb_uses_the_negative_prompt(
        tiny, tiles, monkeypatch):
    model = load_model(str(tiny))
    cfg = _cfg(tiny, **{"augment.scheduler": "ddim", "augment.negative_prompt": "blurry",
                        "augment.perturb_guidance": 2.0}).augment
    gen = Generator(model, cfg)
    assert model.pipe.scheduler.config.clip_sample is False
    pipe = gen.pipe("ddim")
    seen = {}
    real_call = type(pipe).__call__

    def spy(self, *a, **k):
        seen.update(k)
        return real_call(self, *a, **k)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    ts = load_tile_set(tiles)
    gen.run(ts.images[:1], [Job(0, ts.tile_ids[0], "absent", 0, 1, (Step("latent-perturb", None, "a photo"),))],
            None, PX)
    assert seen["negative_prompt"] == ["blurry"]


def test_empty_inpaint_mask_warns_and_edits_the_whole_tile(tiny, tiles, caplog):
    model = load_model(str(tiny))
    cfg = _cfg(tiny, **{"augment.strengths": [1.0]}).augment
    gen = Generator(model, cfg)
    ts = load_tile_set(tiles)
    src = ts.images[:1]
    caplog.set_level("WARNING")
    empty = np.zeros((1, PX, PX), dtype=bool)  # a mask layer that misses the tile
    out = gen.run(src, [Job(0, ts.tile_ids[0], "absent", 0, 1, (Step("inpaint", 1.0, "a photo"),))], empty, PX)
    assert "1 of 1 tiles have an empty --mask-layer mask" in caplog.text
    assert np.abs(out.astype(float) - src.astype(float)).mean() > 10  # not the source handed back


def test_empty_inpaint_mask_is_recorded_in_the_manifest(tiny, tiles, tmp_path):
    import geopandas as gpd

    ts = load_tile_set(tiles)
    gpkg = gpd.read_file(tiles / "tiles.gpkg").set_index("tile_id")
    covered, bare = ts.tile_ids[0], next(t for t in ts.tile_ids[1:]
                                         if not gpkg.loc[t].geometry.intersects(gpkg.loc[ts.tile_ids[0]].geometry))
    layer = tmp_path / "mask.geojson"
    gpd.GeoDataFrame({"id": [1]}, geometry=[gpkg.loc[covered].geometry], crs=gpkg.crs).to_file(layer)
    cfg = _cfg(tiny, **{"augment.method": "inpaint", "augment.inpaint.mask": "layer", "augment.shots": None,
                        "augment.strengths": [1.0]})
    run_augment(cfg, AugmentInputs(tiles, tmp_path / "inp", mask_layer=layer, tile_ids=[covered, bare],
                                   tokens=None))
    m = pd.read_csv(tmp_path / "inp" / "manifest.csv", keep_default_na=False).set_index("source_tile_id")
    assert m.loc[bare, "note"] == "inpaint mask empty: whole tile edited"
    assert m.loc[covered, "note"] == ""
    summary = json.loads((tmp_path / "inp" / "summary.json").read_text())
    assert summary["notes"] == {"inpaint mask empty: whole tile edited": 1}


def test_inpainting_unet_is_refused_for_token_learning(tiny):
    model = load_model(str(tiny))
    model.pipe.unet.register_to_config(in_channels=9)
    with pytest.raises(InputError, match=r"9 input channels .*class tokens cannot be learned"):
        learn_tokens(model.pipe, {"<a>": np.zeros((1, PX, PX, 3), np.uint8)}, _cfg(tiny).augment.tokens, 64, 0)


def _broken(tiny: Path, where: Path, how: str) -> Path:
    d = where / how
    shutil.copytree(tiny, d)
    if how == "empty-index":
        (d / "model_index.json").write_text("{}")
    elif how == "no-unet":
        shutil.rmtree(d / "unet")
    elif how == "corrupt-weights":
        (d / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors" * 8)
    elif how == "no-tokenizer":
        shutil.rmtree(d / "tokenizer")
    return d


@pytest.mark.parametrize(("how", "needle"), [
    ("empty-index", "model_index.json: not a Stable Diffusion model index; it must hold \"_class_name\""),
    ("no-unet", "component 'unet' is missing"),
    ("corrupt-weights", "diffusion_pytorch_model.safetensors"),
    ("no-tokenizer", "component 'tokenizer' is missing")])
def test_malformed_model_folders_give_one_line_naming_the_file(tiny, tiles, tmp_path, how, needle):
    model = _broken(tiny, tmp_path, how)
    res = CliRunner().invoke(app, ["augment", str(tiles), "--out", str(tmp_path / "o"), "--model", str(model)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "unexpected error" not in lines[0], res.output


def test_broken_token_files_and_synthetic_sets_give_one_line(tiny, tiles, tmp_path):
    model = load_model(str(tiny))
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokens.json").write_text(json.dumps({"labels": {"absent": "<a>"}, "files": {"<a>": "a.safetensors"}}))
    save_file({"<a>": torch.zeros(1, 7)}, str(tok / "a.safetensors"))  # wrong width
    with pytest.raises(InputError, match=r"a.safetensors: holds no 32-wide embedding for <a>"):
        load_tokens_into(model.pipe, tok, model.model_hash)
    (tok / "a.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"a.safetensors: not a readable safetensors file"):
        load_tokens_into(model.pipe, tok, model.model_hash)
    ts = load_tile_set(tiles)
    syn = tmp_path / "syn"
    syn.mkdir()
    pd.DataFrame({"path": ["x.png"], "source_tile_id": [ts.tile_ids[0]]}).to_csv(syn / "manifest.csv", index=False)
    with pytest.raises(InputError, match=r"missing columns .* has path, source_tile_id, label"):
        load_synthetic([syn], ts)
    row = {"path": "images/x.png", "source_tile_id": ts.tile_ids[0], "label": ["absent", "present"][ts.labels[0]],
           "method": "dafusion", "strength": "0.5", "seed": "1", "prompt": "p", "model_id": "m"}
    pd.DataFrame([row]).to_csv(syn / "manifest.csv", index=False)
    with pytest.raises(InputError, match=r"lists x.png but .* is missing; the set is incomplete"):
        load_synthetic([syn], ts)
