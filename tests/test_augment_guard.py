"""The NaN / constant-image guard: what an fp16 overflow decodes never becomes a black training tile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from spurgemap.augment.batching import retry_seed
from spurgemap.augment.methods import job_seed
from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError


def _cfg(model: Path, **over):
    base = {"augment.model": str(model), "augment.num_synthetic": 2, "augment.steps": 5,
            "augment.tokens.steps": 2, "augment.batch_size": 4, "augment.shots": 1,
            "augment.sites": ["s0", "s1"], "augment.method": "real-guidance"}
    base.update(over)
    return load_config(overrides=base)


@pytest.fixture(scope="module")
def nan_sd(tiny, tmp_path_factory) -> Path:
    """The tiny random model with every VAE decoder weight set to NaN (decodes NaN, as fp16 overflow does)."""
    folder = tmp_path_factory.mktemp("nan") / "nan-sd"
    shutil.copytree(tiny, folder)
    for f in (folder / "vae").glob("*.safetensors"):
        state = load_file(str(f))
        save_file({k: torch.full_like(v, float("nan")) if k.startswith("decoder.") else v
                   for k, v in state.items()}, str(f))
    return folder


def _written(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((folder / "images").rglob("*.png"))]


def test_a_nan_decoder_writes_nothing_and_says_why(nan_sd, tiles, tmp_path):
    out = tmp_path / "syn"
    with pytest.raises(InputError) as err:  # dafusion: tokens are learned (encoder only), then every image is NaN
        run_augment(_cfg(nan_sd, **{"augment.method": "dafusion", "augment.num_synthetic": 1, "augment.retries": 1}),
                    AugmentInputs(tiles, out))
    msg = str(err.value)
    assert "all 2 synthetic images were rejected (2 non-finite image)" in msg and "1 retries" in msg
    assert "float16" in msg and "augment.dtype=bfloat16" in msg and "augment.dtype=float32" in msg
    assert not out.exists()  # nothing half-written: no images, no tokens, no work folder


def test_a_nan_decoder_fails_the_command_with_one_line(nan_sd, tiles, tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["augment", str(tiles), "--out", str(out), "--model", str(nan_sd),
                                   "--method", "real-guidance", "--sites", "s0,s1", "--shots", "1", "--steps", "5",
                                   "--num-synthetic", "1", "--set", "augment.retries=0"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("spurgemap: error:") and "rejected" in errors[0]
    assert "Traceback" not in res.output and "Warning" not in res.output
    assert not out.exists()


def test_bad_images_are_retried_with_new_seeds_then_skipped_and_counted(tiny, tiles, tmp_path, monkeypatch):
    """Decoder output 0 of every call is NaN, output 1 of the first call constant: in a batch of 4, the
    constant one is kept after one retry, the NaN one is skipped after 2 retries; 3 images written."""
    from diffusers import AutoencoderKL

    orig = AutoencoderKL.decode
    calls: list[int] = []

    def decode(self, z, *args, **kwargs):
        out = orig(self, z, *args, **kwargs)
        sample = out[0] if isinstance(out, tuple) else out.sample
        calls.append(len(z))
        sample[0] = float("nan")
        if len(calls) == 1:
            sample[1] = 0.25
        return out

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    out = tmp_path / "syn"
    res = run_augment(_cfg(tiny), AugmentInputs(tiles, out))
    assert calls == [4, 2, 1]  # the rejected ones are rerun together, not the whole batch
    assert res.images == 3 and res.guard == {"real-guidance": {"retried": 1, "skipped": 1}}
    imgs = _written(out)
    assert len(imgs) == 3 and all(int(im.max()) > int(im.min()) for im in imgs)  # no constant image
    man = pd.read_csv(out / "manifest.csv")
    assert sorted(man.retries.tolist()) == [0, 0, 1]
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert len(skipped) == 1 and skipped.reason.tolist() == ["non-finite image"]
    first = int(skipped.seeds[0].split()[0])
    assert skipped.seeds[0].split() == [str(first), str(retry_seed(first, 1)), str(retry_seed(first, 2))]
    assert (skipped.source_tile_id[0], int(skipped.j[0])) not in set(zip(man.source_tile_id, man.j, strict=True))
    retried = man[man.retries == 1].iloc[0]  # it carries the seed that made it
    assert int(retried.seed) == retry_seed(job_seed(0, retried.source_tile_id, int(retried.j)), 1)
    assert first == job_seed(0, skipped.source_tile_id[0], int(skipped.j[0]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["guard"] == {"real-guidance": {"retried": 1, "skipped": 1}} and summary["images"] == 3


def test_a_non_finite_latent_is_caught_before_decoding(tiny, tiles, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    orig = UNet2DConditionModel.forward

    def forward(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        sample = out[0] if isinstance(out, tuple) else out.sample
        sample[:] = float("inf")
        return out

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    with pytest.raises(InputError, match=r"rejected \(4 non-finite latent\)"):
        run_augment(_cfg(tiny, **{"augment.retries": 0}), AugmentInputs(tiles, tmp_path / "syn"))
    assert not (tmp_path / "syn").exists()


def test_the_guard_in_bfloat16_on_cpu(tiny, tiles, monkeypatch):
    """The half-precision path (what fp16/bf16 on CUDA runs), on CPU in bfloat16: same code, same checks."""
    from diffusers import AutoencoderKL

    from spurgemap.augment.diffusion import load_model
    from spurgemap.augment.methods import Generator, plan_jobs
    from spurgemap.tile.tileset import load_tile_set

    orig = AutoencoderKL.decode

    def decode(self, z, *args, **kwargs):
        out = orig(self, z, *args, **kwargs)
        assert z.dtype == torch.bfloat16
        (out[0] if isinstance(out, tuple) else out.sample)[0] = float("nan")
        return out

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    model = load_model(str(tiny), device="cpu", dtype="bfloat16")
    cfg = _cfg(tiny, **{"augment.strengths": [0.25], "augment.real_guidance_strength": 0.25}).augment
    ts = load_tile_set(tiles)
    jobs = plan_jobs(ts.tile_ids[:2], ["absent", "absent"], cfg, {}, 0)[:2]
    out, why = Generator(model, cfg).generate(ts.images[:2], jobs, None, ts.tile_px)
    assert why == ["non-finite image", ""] and out.dtype == np.uint8 and int(out[1].max()) > int(out[1].min())
