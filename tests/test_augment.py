"""`spurgemap augment` with a tiny random Stable Diffusion saved to disk and loaded like a user's model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PX
from PIL import Image
from safetensors.torch import load_file, save_file
from shapely import box
from typer.testing import CliRunner

from spurgemap.augment.diffusion import load_model
from spurgemap.augment.manifest import load_synthetic
from spurgemap.augment.methods import Generator, Job, Step
from spurgemap.augment.stage import AugmentInputs, TokenInputs, run_augment, run_learn_tokens
from spurgemap.augment.tiny import write_tiny_model
from spurgemap.augment.tokens import learn_tokens
from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.tile.tileset import load_tile_set


def _cfg(model: Path, **over):
    base = {"augment.model": str(model), "augment.num_synthetic": 2, "augment.steps": 10,
            "augment.tokens.steps": 4, "augment.batch_size": 4, "augment.shots": 1}
    base.update(over)
    return load_config(overrides=base)


@pytest.fixture(scope="module")
def tokens(tiny, tiles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokens"
    run_learn_tokens(_cfg(tiny, **{"augment.sites": ["s0", "s1"], "augment.shots": None}),
                     TokenInputs(tiles, out))
    return out


@pytest.fixture(scope="module")
def tokens_k1(tiny, tiles, tmp_path_factory) -> Path:
    """Tokens from the one-shot selection of sites s0 and s1 (what the method tests augment)."""
    out = tmp_path_factory.mktemp("tok1") / "tokens"
    run_learn_tokens(_cfg(tiny, **{"augment.sites": ["s0", "s1"]}), TokenInputs(tiles, out))
    return out


def _images(folder: Path) -> dict[str, np.ndarray]:
    m = pd.read_csv(folder / "manifest.csv", dtype=str)
    return {p: np.asarray(Image.open(folder / p)) for p in m.path}


def test_token_learning_changes_only_new_rows_and_lowers_loss(tiny, tiles):
    model = load_model(str(tiny))
    table0 = model.pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    ts = load_tile_set(tiles)
    images = {"<no_spurge>": ts.images[ts.labels == 0][:2], "<leafy_spurge>": ts.images[ts.labels == 1][:2]}
    cfg = _cfg(tiny).augment.tokens.model_copy(update={"steps": 60, "lr": 5e-3})
    res = learn_tokens(model.pipe, images, cfg, model.resolution, seed=0, keep_table=True)
    assert res.table is not None and res.table.shape[0] == table0.shape[0] + 2
    assert torch.equal(res.table[: table0.shape[0]], table0)  # every old row bit-identical
    init = table0[model.pipe.tokenizer.encode("the", add_special_tokens=False)[0]]
    for token in images:
        (row,) = res.rows[token]
        assert not torch.equal(res.table[row], init)  # the new row did move
        assert torch.equal(res.embeddings[token][0], res.table[row])
        assert res.loss_after[token] < res.loss_before[token]
    # the pipeline used for generation is untouched
    assert len(model.pipe.tokenizer) == table0.shape[0]
    assert torch.equal(model.pipe.text_encoder.get_input_embeddings().weight, table0)


def test_tokens_file_layout_loads_with_diffusers_and_remembers_training_tiles(tiny, tokens):
    meta = json.loads((tokens / "tokens.json").read_text())
    assert meta["labels"] == {"absent": "<no_spurge>", "present": "<leafy_spurge>"}
    assert meta["tile_ids"] and all(t.startswith(("s0_", "s1_")) for t in meta["tile_ids"])
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False)
    pipe.load_textual_inversion(str(tokens / "leafy_spurge.safetensors"))  # diffusers' own loader, by path
    tid = pipe.tokenizer.convert_tokens_to_ids("<leafy_spurge>")
    saved = load_file(str(tokens / "leafy_spurge.safetensors"))["<leafy_spurge>"]
    assert saved.shape == (1, 32)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[tid].detach(), saved[0])


def test_multi_vector_tokens_and_v_prediction_model(tmp_path, tiles):
    model = write_tiny_model(tmp_path / "sd2-like", prediction_type="v_prediction")
    cfg = _cfg(model, **{"augment.tokens.num_vectors": 3})
    res = run_augment(cfg, AugmentInputs(tiles, tmp_path / "syn"))
    saved = load_file(str(tmp_path / "syn" / "tokens" / "no_spurge.safetensors"))["<no_spurge>"]
    assert saved.shape == (3, 32)
    assert res.images == 2 * 2 and res.tiny_model


def test_generation_count_size_and_determinism(tiny, tiles, tokens, tmp_path):
    cfg = _cfg(tiny, **{"augment.sites": ["s0", "s1"], "augment.shots": None, "augment.num_synthetic": 3})
    a = run_augment(cfg, AugmentInputs(tiles, tmp_path / "a", tokens=tokens))
    assert a.images == 12 * 3 and a.generated == 36 and a.per_label == {"absent": 18, "present": 18}
    imgs = _images(tmp_path / "a")
    assert {im.shape for im in imgs.values()} == {(PX, PX, 3)}
    m = pd.read_csv(tmp_path / "a" / "manifest.csv", dtype=str)
    assert set(m.strength) <= {"0.25", "0.5", "0.75", "1"} and m.strength.nunique() > 1
    assert set(m.prompt) == {"a drone photo of a <no_spurge>", "a drone photo of a <leafy_spurge>"}
    assert not m.source_tile_id.str.startswith("s2_").any()  # only the chosen training sites
    assert (m.groupby("source_tile_id").size() == 3).all()
    b = run_augment(cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"batch_size": 5})}),
                    AugmentInputs(tiles, tmp_path / "b", tokens=tokens))
    assert b.images == 36
    same = _images(tmp_path / "b")
    diffs = [np.abs(imgs[p].astype(int) - same[p].astype(int)).max() for p in imgs]
    assert max(diffs) <= 1  # same seeds, other batching: the same images (up to float rounding)
    other = load_config(overrides={**cfg.model_dump(), "seed": 7})
    run_augment(other, AugmentInputs(tiles, tmp_path / "c", tokens=tokens))
    changed = _images(tmp_path / "c")
    assert np.mean([np.abs(imgs[p].astype(int) - changed[p].astype(int)).mean() for p in imgs]) > 5


def _round_trip(model, src: np.ndarray) -> np.ndarray:
    """What the (random) VAE makes of the tiles: the best any edit can reproduce of them."""
    with torch.no_grad():
        x = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 127.5 - 1
        rt = model.pipe.vae.decode(model.pipe.vae.encode(x).latent_dist.mean).sample
    return ((rt.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()


def test_strength_near_zero_returns_the_source_after_the_vae_round_trip(tiny, tiles):
    model = load_model(str(tiny))
    cfg = _cfg(tiny, **{"augment.steps": 50, "augment.strengths": [0.02]}).augment
    gen = Generator(model, cfg)
    ts = load_tile_set(tiles)
    src = ts.images[:4]
    jobs = [Job(i, ts.tile_ids[i], "absent", 0, 100 + i, (Step("dafusion", 0.02, "a photo"),)) for i in range(4)]
    out = gen.run(src, jobs, None, PX).astype(float)
    rt = _round_trip(model, src)
    near = np.abs(out - rt).mean()
    far = np.abs(out - rt[::-1]).mean()
    full = Generator(model, cfg.model_copy(update={"strengths": [1.0]}))
    noisy = full.run(src, [Job(i, ts.tile_ids[i], "absent", 0, 100 + i, (Step("dafusion", 1.0, "a photo"),))
                           for i in range(4)], None, PX).astype(float)
    assert near < 10.0, near  # grey levels (of 255): essentially the round trip
    assert np.abs(noisy - rt).mean() > 5 * near
    assert far > near


def test_resume_after_a_kill_makes_no_duplicates(tiny, tiles, tokens, tmp_path, monkeypatch):
    cfg = _cfg(tiny, **{"augment.sites": ["s0", "s1"], "augment.shots": None, "augment.batch_size": 4})
    clean = run_augment(cfg, AugmentInputs(tiles, tmp_path / "clean", tokens=tokens))
    calls = {"n": 0}
    real_generate = Generator.generate  # what the batch loop calls (images and a guard reason per image)

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_generate(self, *a, **k)

    monkeypatch.setattr(Generator, "generate", dying)
    with pytest.raises(KeyboardInterrupt):
        run_augment(cfg, AugmentInputs(tiles, tmp_path / "killed", tokens=tokens))
    assert not (tmp_path / "killed" / "manifest.csv").exists()
    monkeypatch.setattr(Generator, "generate", real_generate)
    res = run_augment(cfg, AugmentInputs(tiles, tmp_path / "killed", tokens=tokens))
    assert res.resumed and res.generated == clean.images - 8 and res.images == clean.images
    m = pd.read_csv(tmp_path / "killed" / "manifest.csv", dtype=str)
    assert not m.duplicated(["source_tile_id", "j"]).any() and len(m) == clean.images
    a, b = _images(tmp_path / "clean"), _images(tmp_path / "killed")
    assert max(np.abs(a[p].astype(int) - b[p].astype(int)).max() for p in a) <= 1
    with pytest.raises(InputError, match="already holds a finished synthetic set"):
        run_augment(cfg, AugmentInputs(tiles, tmp_path / "killed", tokens=tokens))


@pytest.mark.parametrize("method", ["dafusion", "real-guidance", "text2img", "boomerang", "latent-perturb",
                                    "inpaint", "compose"])
def test_every_method_runs_and_the_manifest_links_to_real_tiles(method, tiny, tiles, tokens_k1, tmp_path):
    over = {"augment.method": method, "augment.sites": ["s0", "s1"], "augment.shots": 1}
    if method == "compose":
        over.update({"augment.compose.mode": "sequential",
                     "augment.compose.methods": ["boomerang", "dafusion"]})
    res = run_augment(_cfg(tiny, **over), AugmentInputs(tiles, tmp_path / "syn", tokens=tokens_k1))
    m = pd.read_csv(tmp_path / "syn" / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(m) == res.images == 4
    expect = "boomerang+dafusion" if method == "compose" else method
    assert set(m.method) == {expect}
    if method == "real-guidance":
        assert set(m.strength) == {"0.5"} and set(m.prompt) == {"a drone photo of grassland"}
    if method == "boomerang":
        assert set(m.strength) == {"0.2"}
    ts = load_tile_set(tiles)
    syn = load_synthetic([tmp_path / "syn"], ts)  # what train reads: labels and links must agree
    assert len(syn) == 4 and (syn.labels == ts.labels[syn.source]).all()
    assert Image.open(tmp_path / "syn" / "preview.png").size[0] > PX
    summary = json.loads((tmp_path / "syn" / "summary.json").read_text())
    assert summary["model"]["tiny_random"] is True and "TINY RANDOM" in summary["warning"]


def test_parallel_compose_draws_methods_by_probability(tiny, tiles, tmp_path):
    cfg = _cfg(tiny, **{"augment.method": "compose", "augment.num_synthetic": 6, "augment.sites": ["s0", "s1"],
                        "augment.compose.methods": ["boomerang", "real-guidance"], "augment.compose.probs": [1, 0]})
    run_augment(cfg, AugmentInputs(tiles, tmp_path / "p"))
    assert set(pd.read_csv(tmp_path / "p" / "manifest.csv").method) == {"boomerang"}


def test_inpaint_edits_inside_the_mask_layer_only(tiny, tiles, tmp_path):
    import geopandas as gpd

    ts = load_tile_set(tiles)
    gpkg = gpd.read_file(tiles / "tiles.gpkg").set_index("tile_id")
    tid = ts.tile_ids[0]
    b = gpkg.loc[tid].geometry.bounds  # the tile's left half is the mask
    layer = tmp_path / "mask.geojson"
    left = box(b[0] - 1, b[1] - 1, (b[0] + b[2]) / 2, b[3] + 1)
    gpd.GeoDataFrame({"id": [1]}, geometry=[left], crs=gpkg.crs).to_crs(4326).to_file(layer)
    cfg = _cfg(tiny, **{"augment.method": "inpaint", "augment.inpaint.mask": "layer", "augment.inpaint.grow_px": 0,
                        "augment.strengths": [1.0], "augment.num_synthetic": 1})
    run_augment(cfg, AugmentInputs(tiles, tmp_path / "inp", mask_layer=layer, tile_ids=[tid]))
    out = next(iter(_images(tmp_path / "inp").values())).astype(float)
    rt = _round_trip(load_model(str(tiny)), ts.images[:1])[0]
    diff = np.abs(out - rt).mean(axis=-1)
    inside, outside = diff[:, 4: PX // 2 - 4].mean(), diff[:, PX // 2 + 4: -4].mean()
    # the random decoder's GroupNorm and attention spread some change everywhere; a trained one barely does
    assert inside > 1.8 * outside, (inside, outside)


def test_tokens_learned_outside_the_selection_are_refused(tiny, tiles, tokens, tmp_path):
    cfg = _cfg(tiny, **{"augment.sites": ["s0"], "augment.shots": None})
    with pytest.raises(InputError, match="outside the tiles being augmented"):
        run_augment(cfg, AugmentInputs(tiles, tmp_path / "leak", tokens=tokens))


def test_missing_model_gives_one_clear_line(tiny, tiles, tmp_path):
    runner = CliRunner()
    for model, needle in [(str(tmp_path / "nope"), "model not found; put a diffusers"),
                          ("someorg/not-cached", "not in the local Hugging Face cache"),
                          (None, "no diffusion model given")]:
        args = ["augment", str(tiles), "--out", str(tmp_path / "o")] + (["--model", model] if model else [])
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.output
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not really")
    res = runner.invoke(app, ["augment", str(tiles), "--out", str(tmp_path / "o"), "--model", str(pickled)])
    assert res.exit_code == 2 and "only .safetensors" in res.output
    bogus = tmp_path / "model.safetensors"
    save_file({"not_a_unet": torch.zeros(2)}, str(bogus))
    for extra in ([], ["--set", f"augment.model_config_dir={tiny}"]):
        res = runner.invoke(app, ["augment", str(tiles), "--out", str(tmp_path / "o"), "--model", str(bogus), *extra])
        assert res.exit_code == 2 and "could not load this checkpoint" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_hub_id_loads_offline_from_the_local_cache(tiny, tiles, tmp_path):
    cache = tmp_path / "hub"
    snap = cache / "models--spurge--tiny-sd" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny, snap)
    (cache / "models--spurge--tiny-sd" / "refs").mkdir()
    (cache / "models--spurge--tiny-sd" / "refs" / "main").write_text(snap.name)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "spurgemap.cli", "augment", "learn-tokens", str(tiles), "--out",
           str(tmp_path / "tok"), "--model", "spurge/tiny-sd", "--steps", "2", "--shots", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "tok" / "tokens.json").read_text())
    assert meta["model_id"] == "spurge/tiny-sd" and meta["model_hash"] != "unknown" and meta["tiny_model"]


def test_concept_erasure_changes_only_the_unet_and_is_reused(tiny, tiles, tmp_path):
    from spurgemap.augment.erase import erase_concepts

    model = load_model(str(tiny))
    unet0 = {k: v.clone() for k, v in model.pipe.unet.state_dict().items()}
    text0 = {k: v.clone() for k, v in model.pipe.text_encoder.state_dict().items()}
    vae0 = {k: v.clone() for k, v in model.pipe.vae.state_dict().items()}
    cfg = _cfg(tiny).augment.erase.model_copy(update={"concepts": ["leafy spurge"], "iterations": 30,
                                                      "lr": 1e-4, "ddim_steps": 4})
    res = erase_concepts(model.pipe, cfg, model.resolution, seed=0)
    assert res.loss_after < res.loss_before  # the concept's prediction moved towards the ESD target
    assert any(not torch.equal(v, unet0[k]) for k, v in model.pipe.unet.state_dict().items())
    assert all(torch.equal(v, text0[k]) for k, v in model.pipe.text_encoder.state_dict().items())
    assert all(torch.equal(v, vae0[k]) for k, v in model.pipe.vae.state_dict().items())
    assert model.pipe.unet.dtype == torch.float32 and not model.pipe.unet.training
    # through augment: erased before tokens are learned, saved once, recorded in the outputs
    over = {"augment.erase.concepts": ["leafy spurge"], "augment.erase.iterations": 3, "augment.erase.ddim_steps": 3,
            "augment.num_synthetic": 1}
    res = run_augment(_cfg(tiny, **over), AugmentInputs(tiles, tmp_path / "syn"))
    assert (tmp_path / "syn" / "erased_unet.safetensors").exists()
    m = pd.read_csv(tmp_path / "syn" / "manifest.csv", dtype=str)
    assert m.model_id.str.contains("erased: leafy spurge").all() and m.model_hash.str.contains("-erased-").all()
    assert json.loads((tmp_path / "syn" / "tokens" / "tokens.json").read_text())["model_hash"] == m.model_hash[0]
    assert res.images == 2
