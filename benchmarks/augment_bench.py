"""DA-Fusion generation and textual-inversion speed against the reference approach, in one run.

    python benchmarks/augment_bench.py [--images 64] [--batch-size 8] [--token-steps 100] [--dpm-steps 20]
    python benchmarks/augment_bench.py --device cpu --images 8 --steps 20 --threads 1   # mechanics only

Why: the reference generated one image per pipeline call; `spurgemap augment` batches across tiles and
strengths. With no weights downloadable, the SD 1.5 architecture (its public configs, below) is built with
random weights - the same compute as the real model - saved to a temp folder and loaded through
`load_model`, the users' code path (fp16 and channels_last on CUDA). In the same process it measures:
  * reference: StableDiffusionImg2ImgPipeline, ONE image per call, PNDM with --steps (50) scaled by the
    strength, guidance 7.5, fp16 weights under torch.autocast, input resized to the model's size (bilinear,
    PIL) and back (the da-fusion code; run here with today's diffusers, i.e. with SDPA attention);
  * ours: Generator.run on plan_jobs' dafusion jobs, batched as run_augment batches them (same tiles,
    same strengths, same steps); an extra line with DPM-Solver++ at --dpm-steps (fewer steps: not the
    headline ratio);
  * textual inversion (learn_tokens, 2 classes, 2 random 250-px tiles each): steps/s and the projected
    time of 1000 steps. Targets (issue 5, H100): >= 3x the reference and >= 4 images/s; 1000 token steps
    in <= 3 minutes. Without CUDA the script runs a tiny random model on CPU (mechanics only) unless --full.
--smoke (CPU, not in the test suite): the SD 1.5 architecture with random weights at 512 px, saved as a
diffusers folder, through the user-facing run_learn_tokens and run_augment for every method, 2 token steps
and 2 denoising steps each, in float32 and then bfloat16; prints time and peak RSS per dtype.
The tokenizer is the tiny one padded to CLIP's 49408 entries: ids do not change compute, table size does.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from spurgemap.augment.batching import batches
from spurgemap.augment.diffusion import DiffusionModel, load_model
from spurgemap.augment.methods import Generator, Job, plan_jobs
from spurgemap.augment.tiny import write_tiny_model, write_tiny_tokenizer
from spurgemap.augment.tokens import learn_tokens
from spurgemap.config import AugmentConfig, TokenConfig, load_config

TILE_PX = 250
CLIP_VOCAB = 49408
UNET: dict[str, Any] = {  # runwayml/stable-diffusion-v1-5 unet/config.json
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False, "cross_attention_dim": 768, "downsample_padding": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32, "sample_size": 64}
VAE: dict[str, Any] = {  # vae/config.json
    "act_fn": "silu", "block_out_channels": (128, 256, 512, 512), "in_channels": 3, "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
    "scaling_factor": 0.18215}
TEXT: dict[str, Any] = {  # text_encoder/config.json (CLIP ViT-L/14 text tower)
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": 77, "vocab_size": CLIP_VOCAB, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "projection_dim": 768}
SCHEDULER: dict[str, Any] = {  # scheduler/scheduler_config.json (PNDM)
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False}


def write_sd15_random(folder: Path, dtype: torch.dtype) -> Path:
    """A diffusers folder with the SD 1.5 architecture and random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = folder.parent / "tokenizer_src"
    write_tiny_tokenizer(tok_dir)
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    special = ["<|startoftext|>", "<|endoftext|>"]
    words = [w for w in vocab if w not in special]
    words += [f"filler{i}</w>" for i in range(CLIP_VOCAB - len(special) - len(words))]
    (tok_dir / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words + special)}))
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(**TEXT, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
    pipe: Any = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE), text_encoder=text, tokenizer=tok, unet=UNet2DConditionModel(**UNET),
        scheduler=PNDMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def sync(model: DiffusionModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def timed(model: DiffusionModel, fn: Callable[[], object]) -> float:
    sync(model)
    t0 = time.perf_counter()
    fn()
    sync(model)
    return time.perf_counter() - t0


def reference(model: DiffusionModel, tiles: np.ndarray, jobs: list[Job], steps: int) -> float:
    """The da-fusion way: one image per call, fp16 weights under autocast, resize with PIL both ways."""
    from diffusers import PNDMScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image

    with warnings.catch_warnings():  # newer diffusers call it `dtype` and warn; older ones know only this name
        warnings.simplefilter("ignore", FutureWarning)
        pipe = StableDiffusionImg2ImgPipeline.from_pipe(  # torch_dtype: else the shared modules are recast to fp32
            model.pipe, scheduler=PNDMScheduler.from_config(model.pipe.scheduler.config), torch_dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    res = model.resolution
    cast = torch.autocast("cuda") if model.device.type == "cuda" else contextlib.nullcontext()

    def one(jb: Job) -> Any:
        src = Image.fromarray(tiles[jb.tile]).resize((res, res), Image.Resampling.BILINEAR)
        with cast:
            out = pipe(image=src, prompt=[jb.steps[0].prompt], strength=jb.steps[0].strength,
                       guidance_scale=7.5, num_inference_steps=steps).images[0]
        return out.resize((TILE_PX, TILE_PX), Image.Resampling.BILINEAR)

    unet = model.pipe.unet  # the reference did not use channels_last; ours does (load_model)
    if model.device.type == "cuda":
        unet.to(memory_format=torch.contiguous_format)
    try:
        torch.manual_seed(0)  # the reference drew its noise from the global RNG
        timed(model, lambda: one(min(jobs, key=lambda jb: jb.steps[0].strength or 0.0)))  # warm-up
        return timed(model, lambda: [one(jb) for jb in jobs])
    finally:
        if model.device.type == "cuda":
            unet.to(memory_format=torch.channels_last)


def ours(model: DiffusionModel, tiles: np.ndarray, jobs: list[Job], cfg: AugmentConfig) -> float:
    gen = Generator(model, cfg)
    groups = batches(jobs, cfg.batch_size)
    low = min(groups, key=lambda b: (b[0].steps[0].strength or 0.0, -len(b)))
    timed(model, lambda: gen.run(tiles[[jb.tile for jb in low]], low, None, TILE_PX))  # warm-up
    return timed(model, lambda: [gen.run(tiles[[jb.tile for jb in b]], b, None, TILE_PX) for b in groups])


def token_speed(model: DiffusionModel, steps: int, tcfg: TokenConfig) -> tuple[float, float, float]:
    """(seconds, steps/s over the optimiser steps, seconds outside them) for `steps` per class, 2 classes."""
    rng = np.random.default_rng(1)
    images = {tok: rng.integers(0, 256, (2, TILE_PX, TILE_PX, 3), dtype=np.uint8) for tok in tcfg.tokens}
    first = dict(list(images.items())[:1])
    learn_tokens(model.pipe, first, tcfg.model_copy(update={"steps": 1}), model.resolution, seed=0)  # warm-up
    stamps: list[float] = []
    cfg = tcfg.model_copy(update={"steps": steps})
    total = timed(model, lambda: learn_tokens(model.pipe, images, cfg, model.resolution, seed=0,
                                              advance=lambda _n: stamps.append(time.perf_counter())))
    gaps = [b - a for k, (a, b) in enumerate(itertools.pairwise(stamps)) if (k + 1) % steps]
    step_s = float(np.mean(gaps)) if gaps else total / (2 * steps)
    return total, 1.0 / step_s, total - 2 * steps * step_s


def smoke(dtypes: list[str]) -> None:
    """Every method end to end on the full-size architecture: what a user with real weights runs."""
    import resource
    import shutil

    from spurgemap.augment.methods import METHODS, TOKEN_METHODS
    from spurgemap.augment.stage import AugmentInputs, TokenInputs, run_augment, run_learn_tokens
    from spurgemap.tile.tileset import TileSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, TILE_PX, TILE_PX, 3), dtype=np.uint8)
    images[:, :, :, 1] = np.maximum(images[:, :, :, 1], 160)  # green enough for the vegetation mask
    tiles = TileSet([f"s0_{i}" for i in range(4)], np.array(["s0"] * 4), np.array(["s0"] * 4),
                    np.array([0, 1, 0, 1]), images, TILE_PX, 0.02, "smoke")
    with tempfile.TemporaryDirectory(prefix="augment-smoke-") as tmp:
        t0 = time.perf_counter()
        folder = write_sd15_random(Path(tmp) / "sd15-random", torch.float32)
        print(f"SD 1.5 architecture, random weights, saved in {time.perf_counter() - t0:.0f} s", flush=True)
        for dtype in dtypes:
            over = {"augment.model": str(folder), "augment.device": "cpu", "augment.dtype": dtype,
                    "augment.shots": 1, "augment.num_synthetic": 1, "augment.batch_size": 2, "augment.steps": 2,
                    "augment.strengths": [1.0], "augment.real_guidance_strength": 1.0,
                    "augment.boomerang_strength": 1.0, "augment.tokens.steps": 2,
                    "augment.tokens.batch_size": 1}
            cfg = load_config(overrides=over)
            t0 = time.perf_counter()
            tok = Path(tmp) / f"tokens-{dtype}"
            run_learn_tokens(cfg, TokenInputs(tiles, tok))
            times = {"tokens (2 steps x 2 classes)": time.perf_counter() - t0}
            print(f"  {dtype}: tokens {times['tokens (2 steps x 2 classes)']:.0f} s", flush=True)
            for method in METHODS:
                t1 = time.perf_counter()
                res = run_augment(load_config(overrides={**over, "augment.method": method}),
                                  AugmentInputs(tiles, Path(tmp) / f"syn-{dtype}-{method}",
                                                tokens=tok if method in TOKEN_METHODS else None))
                assert res.images == 2, res
                times[method] = time.perf_counter() - t1
                print(f"  {dtype}: {method} {times[method]:.0f} s ({res.images} images)", flush=True)
                shutil.rmtree(Path(tmp) / f"syn-{dtype}-{method}")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux
            print(f"smoke {dtype}: OK, {time.perf_counter() - t0:.0f} s in all; peak RSS so far {rss:.1f} GiB; "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the SD 1.5 architecture even on CPU (slow)")
    size.add_argument("--tiny", action="store_true", help="the tiny random model even on CUDA")
    ap.add_argument("--images", type=int, help="synthetic images per approach (64 full, 8 tiny)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50, help="scheduler steps at strength 1, both approaches")
    ap.add_argument("--scheduler", choices=["pndm", "ddim", "dpm"], default="pndm", help="ours (headline)")
    ap.add_argument("--dpm-steps", type=int, default=20, help="extra line: ours with DPM-Solver++ (0: skip)")
    ap.add_argument("--token-steps", type=int, help="textual-inversion steps per class (100 full, 5 tiny)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (CPU figures collapse when cores are shared)")
    ap.add_argument("--smoke", action="store_true", help="full-size SD 1.5 run of every method on CPU, then exit")
    ap.add_argument("--smoke-dtypes", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        return smoke(args.smoke_dtypes)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    full = args.full or (cuda and not args.tiny)
    n = args.images or (64 if full else 8)
    token_steps = args.token_steps or (100 if full else 5)
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):  # cast notices and save progress bars; load_model quiets them the same way
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="augment-bench-") as tmp:
        t0 = time.perf_counter()
        if full:
            folder = write_sd15_random(Path(tmp) / "sd15-random", torch.float16 if cuda else torch.float32)
        else:
            folder = write_tiny_model(Path(tmp) / "tiny")
        model = load_model(str(folder), device="cuda" if cuda else "cpu")
        print(f"model: {'SD 1.5 architecture' if full else 'TINY'} random weights, {model.resolution} px, "
              f"{str(model.dtype).removeprefix('torch.')} on {torch.cuda.get_device_name() if cuda else 'cpu'}"
              f" (built and loaded in {time.perf_counter() - t0:.0f} s)", flush=True)
        tiles_n = min(8, max(2, n))
        tiles = np.random.default_rng(0).integers(0, 256, (tiles_n, TILE_PX, TILE_PX, 3), dtype=np.uint8)
        labels = ["absent", "present"] * (tiles_n // 2) + ["absent"] * (tiles_n % 2)
        base = load_config().augment
        cfg = base.model_copy(update={"method": "dafusion", "num_synthetic": math.ceil(n / tiles_n),
                                      "steps": args.steps, "scheduler": args.scheduler,
                                      "batch_size": args.batch_size})
        tokens = dict(zip(["absent", "present"], base.tokens.tokens, strict=True))
        jobs = plan_jobs([f"t{i}" for i in range(tiles_n)], labels, cfg, tokens, seed=0)[:n]
        mix = Counter(jb.steps[0].strength for jb in jobs)
        print(f"{n} images from {tiles_n} tiles; strengths {dict(sorted(mix.items()))}; "
              f"{sum(int(args.steps * s) for s in mix.elements())} denoising steps per approach", flush=True)
        cast = ", fp16 autocast" if cuda else ""
        rows = [(f"reference (1 image/call, PNDM {args.steps}{cast})", reference(model, tiles, jobs, args.steps))]
        print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
        sched = model.pipe.scheduler
        rows.append((f"ours (batch {args.batch_size}, {args.scheduler.upper()} {args.steps})",
                     ours(model, tiles, jobs, cfg)))
        print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
        dpm = min(args.dpm_steps, args.steps)
        if dpm and not (args.scheduler == "dpm" and dpm == args.steps):
            why = "fewer steps" if dpm < args.steps else "other scheduler"
            extra = cfg.model_copy(update={"scheduler": "dpm", "steps": dpm})
            rows.append((f"ours (batch {args.batch_size}, DPM-Solver++ {dpm}) [extra: {why}]",
                         ours(model, tiles, jobs, extra)))
            print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s", flush=True)
        model.pipe.scheduler = sched
        tcfg = base.tokens
        tok_total, tok_rate, tok_overhead = token_speed(model, token_steps, tcfg)
    ref_rate = n / rows[0][1]
    print(f"\n{'approach':<58}{'images':>7}{'seconds':>9}{'images/s':>10}{'x reference':>13}")
    for name, sec in rows:
        print(f"{name:<58}{n:>7}{sec:>9.1f}{n / sec:>10.2f}{n / sec / ref_rate:>13.2f}")
    per_class = 1000 / tok_rate + tok_overhead / 2
    print(f"\ntextual inversion (batch {tcfg.batch_size}, {token_steps} steps x 2 classes in {tok_total:.1f} s): "
          f"{tok_rate:.2f} steps/s; {tok_overhead:.1f} s outside the steps (VAE latents, loss checks)")
    print(f"projected 1000 steps: {per_class:.0f} s for one class, {2 * per_class:.0f} s for both classes"
          + ("" if token_steps > 1 else " (1 step per class cannot separate the overhead: use --token-steps >= 2)"))
    if args.scheduler != "pndm":
        print(f"note: ours used {args.scheduler.upper()} and the reference PNDM: the ratio is not like for like")
    ours_rate = n / rows[1][1]
    if not (cuda and full):
        why = "--tiny" if cuda else "--device cpu" if args.device == "cpu" else "no CUDA device here"
        run = "the CPU run with the full architecture" if full else "the run with a tiny random model"
        print(f"\nGPU figures: NOT MEASURED ({why}); {run} checks the mechanics only; targets not judged.")
        print("On one CUDA GPU (SD 1.5 architecture, fp16) this script measures and judges:\n"
              "  * images/s of `augment` (batched Generator.run) against the reference loop (one image per\n"
              "    img2img call, PNDM 50 x strength, fp16 autocast): target ours/reference >= 3 and >= 4 images/s\n"
              "    on one H100;\n"
              "  * textual inversion: projected seconds for 1000 steps of one class: target <= 180 s (3 min).")
        return
    name = torch.cuda.get_device_name()
    where = "" if "H100" in name else f" (measured on {name}, not an H100)"
    print(f"\ntargets (issue 5, H100){where}:")
    for text, ok in [(f"ours / reference = {ours_rate / ref_rate:.2f} >= 3", ours_rate / ref_rate >= 3),
                     (f"ours = {ours_rate:.2f} images/s >= 4", ours_rate >= 4),
                     (f"1000 token steps = {per_class:.0f} s <= 180 (one class; both: {2 * per_class:.0f} s)",
                      per_class <= 180)]:
        print(f"  {'MET    ' if ok else 'NOT MET'} {text}")


if __name__ == "__main__":
    main()
