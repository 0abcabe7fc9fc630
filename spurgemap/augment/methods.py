"""The generative augmentations, planned as jobs and run in batches on one loaded model.

A job is one synthetic image: (source tile, j) with its own seed, so the same settings give the
same image whatever the batch it lands in and whether or not the run was resumed. Jobs whose steps
share (method, strength) go through the diffusion pipeline together.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spurgemap.augment.diffusion import DiffusionModel
from spurgemap.augment.imaging import grow, rejects, resize_masks, to_tiles, vegetation_mask
from spurgemap.config import AugmentConfig
from spurgemap.core.errors import InputError

METHODS = ("dafusion", "real-guidance", "text2img", "boomerang", "latent-perturb", "inpaint")
log = logging.getLogger(__name__)
TOKEN_METHODS = {"dafusion", "text2img", "latent-perturb", "inpaint"}  # conditioned on learned class tokens
EMPTY_MASK_NOTE = "inpaint mask empty: whole tile edited"
CLASS_WORDS = {"absent": "grassland without leafy spurge", "present": "leafy spurge in grassland"}


@dataclass(frozen=True)
class Step:
    method: str
    strength: float | None  # SDEdit strength; None for text2img and latent-perturb
    prompt: str


@dataclass(frozen=True)
class Job:
    tile: int  # index into the selected tiles
    tile_id: str
    label: str  # absent / present
    j: int
    seed: int
    steps: tuple[Step, ...]

    @property
    def key(self) -> tuple[tuple[str, float | None], ...]:
        return tuple((s.method, s.strength) for s in self.steps)

    @property
    def name(self) -> str:
        return "+".join(s.method for s in self.steps)


def job_seed(seed: int, tile_id: str, j: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{tile_id}|{j}".encode()).digest()[:4], "little")


def methods_used(cfg: AugmentConfig) -> list[str]:
    if cfg.method != "compose":
        return [cfg.method]
    bad = [m for m in cfg.compose.methods if m not in METHODS]
    if bad or not cfg.compose.methods:
        raise InputError(f"augment.compose.methods {cfg.compose.methods}: choose from {', '.join(METHODS)}")
    if cfg.compose.probs and len(cfg.compose.probs) != len(cfg.compose.methods):
        raise InputError("augment.compose.probs needs one probability per method in augment.compose.methods")
    return list(cfg.compose.methods)


def needs_tokens(cfg: AugmentConfig) -> bool:
    return bool(TOKEN_METHODS & set(methods_used(cfg)))


def _with_context(prompt: str, cfg: AugmentConfig) -> str:
    return f"{prompt}, {cfg.context}" if cfg.context.strip() else prompt


def _step(method: str, label: str, cfg: AugmentConfig, tokens: dict[str, str], rng: np.random.Generator) -> Step:
    token = tokens.get(label, "")
    class_prompt = _with_context(cfg.prompt.format(token=token, name=CLASS_WORDS[label]), cfg)
    fixed = _with_context(cfg.real_guidance_prompt.format(name=CLASS_WORDS[label]), cfg)
    if method == "dafusion":
        return Step(method, float(rng.choice(cfg.strengths)), class_prompt)
    if method == "real-guidance":
        return Step(method, cfg.real_guidance_strength, fixed)
    if method == "boomerang":
        return Step(method, cfg.boomerang_strength, fixed)
    if method == "inpaint":
        return Step(method, float(rng.choice(cfg.strengths)), class_prompt)
    return Step(method, None, class_prompt)  # text2img, latent-perturb


def plan_jobs(tile_ids: list[str], labels: list[str], cfg: AugmentConfig, tokens: dict[str, str],
              seed: int) -> list[Job]:
    """Every (tile, j) with its method(s), strength(s), prompt and seed, drawn from the seed alone."""
    methods = methods_used(cfg)
    probs = np.asarray(cfg.compose.probs or [1.0] * len(methods), dtype=float)
    probs = probs / probs.sum()
    jobs = []
    for i, (tid, label) in enumerate(zip(tile_ids, labels, strict=True)):
        for j in range(cfg.num_synthetic):
            s = job_seed(seed, tid, j)
            rng = np.random.default_rng(s)
            if cfg.method == "compose" and cfg.compose.mode == "parallel":
                chosen = [methods[int(rng.choice(len(methods), p=probs))]]
            else:
                chosen = methods
            jobs.append(Job(i, tid, label, j, s, tuple(_step(m, label, cfg, tokens, rng) for m in chosen)))
    return jobs


class Generator:
    """Pipelines built once from the model's shared components, created on first use."""

    def __init__(self, model: DiffusionModel, cfg: AugmentConfig) -> None:
        self.model = model
        self.cfg = cfg
        self._pipes: dict[str, Any] = {}
        base = model.pipe
        if cfg.scheduler != "model":
            from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

            cls = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "dpm": DPMSolverMultistepScheduler}[cfg.scheduler]
            extra = {"clip_sample": False} if cfg.scheduler == "ddim" else {}  # as the inversion's DDIM
            base.scheduler = cls.from_config(base.scheduler.config, **extra)
        if model.inpainting_unet and set(methods_used(cfg)) - {"inpaint"}:
            raise InputError(f"{model.model_id} is an inpainting model (9-channel UNet): it can only run "
                             "--method inpaint; use a regular Stable Diffusion model for the others")
        low = min([*cfg.strengths, cfg.real_guidance_strength, cfg.boomerang_strength])
        if int(cfg.steps * low) < 1:
            raise InputError(f"--steps {cfg.steps} x strength {low} gives no denoising step; raise --steps")

    def pipe(self, kind: str) -> Any:
        if kind not in self._pipes:
            from diffusers import (
                DDIMScheduler,
                StableDiffusionImg2ImgPipeline,
                StableDiffusionInpaintPipeline,
                StableDiffusionPipeline,
            )

            base = self.model.pipe
            keep = {"dtype": self.model.dtype}  # from_pipe would otherwise recast the shared modules to fp32
            if kind == "img2img":
                p = StableDiffusionImg2ImgPipeline.from_pipe(base, **keep)
            elif kind == "inpaint":
                p = StableDiffusionInpaintPipeline.from_pipe(base, **keep)
            elif kind == "ddim":
                p = StableDiffusionPipeline.from_pipe(
                    base, scheduler=DDIMScheduler.from_config(base.scheduler.config, clip_sample=False), **keep)
            else:
                p = base
            p.set_progress_bar_config(disable=True)
            self._pipes[kind] = p
        return self._pipes[kind]

    def _gens(self, jobs: list[Job], k: int) -> list[torch.Generator]:
        return [torch.Generator(device=self.model.device).manual_seed(j.seed + 7919 * k) for j in jobs]

    def _common(self, prompts: list[str], jobs: list[Job], k: int) -> dict[str, Any]:
        neg = [self.cfg.negative_prompt] * len(prompts) if self.cfg.negative_prompt else None
        return {"prompt": prompts, "negative_prompt": neg, "guidance_scale": self.cfg.guidance,
                "num_inference_steps": self.cfg.steps, "generator": self._gens(jobs, k), "output_type": "np"}

    def run(self, tiles: np.ndarray, jobs: list[Job], masks: np.ndarray | None, tile_px: int) -> np.ndarray:
        """Source tiles (n, T, T, 3) uint8 of jobs sharing one key -> synthetic tiles of the same size."""
        return self.generate(tiles, jobs, masks, tile_px)[0]

    def generate(self, tiles: np.ndarray, jobs: list[Job], masks: np.ndarray | None,
                 tile_px: int) -> tuple[np.ndarray, list[str]]:
        """As `run`, plus per image why it must not be kept ("" if fine): a non-finite latent at any
        denoising step, a non-finite decoded image, or a constant one (what an fp16 overflow gives)."""
        res = self.model.resolution
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(res, res), mode="bicubic", antialias=True).clamp(0, 1)
        finite = torch.ones(len(jobs), dtype=torch.bool, device=self.model.device)

        def watch(pipe: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal finite
            finite = finite & torch.isfinite(kwargs["latents"]).flatten(1).all(dim=1)  # no host sync per step
            return kwargs

        for k, (method, strength) in enumerate(jobs[0].key):
            prompts = [j.steps[k].prompt for j in jobs]
            common = self._common(prompts, jobs, k)
            common.update(callback_on_step_end=watch, callback_on_step_end_tensor_inputs=["latents"])
            with torch.inference_mode():
                if method in ("dafusion", "real-guidance", "boomerang"):
                    out = self.pipe("img2img")(image=x, strength=strength, **common).images
                elif method == "text2img":
                    out = self.pipe("text2img")(height=res, width=res, **common).images
                elif method == "inpaint":
                    out = self.pipe("inpaint")(image=x, mask_image=self._masks(tiles, masks), strength=strength,
                                               height=res, width=res, **common).images
                else:
                    out = self._latent_perturb(x, prompts, jobs, k, watch)
            x = torch.from_numpy(np.asarray(out, dtype=np.float32)).permute(0, 3, 1, 2)
        final = x.permute(0, 2, 3, 1).numpy()
        out_tiles = to_tiles(np.nan_to_num(final, nan=0.0), tile_px)
        why = rejects(final, out_tiles)
        bad_latent = (~finite).cpu().numpy()
        return out_tiles, [("non-finite latent" if b else w) for b, w in zip(bad_latent, why, strict=True)]

    def notes(self, tiles: np.ndarray, jobs: list[Job], masks: np.ndarray | None) -> list[str]:
        """Per job, what the manifest must say about it: an inpaint job whose mask is empty edits the whole tile."""
        if not any(s.method == "inpaint" for s in jobs[0].steps):
            return [""] * len(jobs)
        return [EMPTY_MASK_NOTE if e else "" for e in _empty(self._mask_array(tiles, masks))]

    def _mask_array(self, tiles: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        return masks if masks is not None else vegetation_mask(tiles, self.cfg.inpaint.exg_threshold)

    def _masks(self, tiles: np.ndarray, masks: np.ndarray | None) -> torch.Tensor:
        c = self.cfg.inpaint
        m = self._mask_array(tiles, masks)
        empty = _empty(m)
        if empty.any():  # an empty mask would return the source unchanged: edit the whole tile instead
            log.warning("inpaint: %d of %d tiles have an empty %s mask; those tiles are edited whole "
                        "(noted in manifest.csv)",
                        int(empty.sum()), len(m), "--mask-layer" if masks is not None else "vegetation")
            m = m.copy()
            m[empty] = True
        m = grow(resize_masks(m, self.model.resolution), c.grow_px)
        if c.invert:
            m = ~m
        return torch.from_numpy(m.astype(np.float32))[:, None]

    def _latent_perturb(self, x01: torch.Tensor, prompts: list[str], jobs: list[Job], k: int,
                        watch: Callable[..., dict[str, Any]]) -> np.ndarray:
        """DDIM-invert each tile to its noise latent, add delta * N(0, I), regenerate (Semantic DA)."""
        from diffusers import DDIMInverseScheduler

        pipe = self.pipe("ddim")
        dev, dtype = self.model.device, pipe.unet.dtype
        g = self.cfg.perturb_guidance
        cfg_on = g > 1.0
        neg = [self.cfg.negative_prompt] * len(prompts)
        cond, uncond = pipe.encode_prompt(prompts, dev, 1, cfg_on, neg)
        emb = torch.cat([uncond, cond]) if cfg_on else cond
        vae = pipe.vae
        latents = vae.encode((x01 * 2 - 1).to(dev, vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        inverse.set_timesteps(self.cfg.steps, device=dev)
        latents = latents.to(dtype)
        for t in inverse.timesteps:
            inp = torch.cat([latents] * 2) if cfg_on else latents
            eps = pipe.unet(inp, t, encoder_hidden_states=emb).sample
            if cfg_on:
                eu, ec = eps.chunk(2)
                eps = eu + g * (ec - eu)
            latents = inverse.step(eps, t, latents).prev_sample
        noise = torch.stack([torch.randn(latents.shape[1:], generator=gen, device=dev)
                             for gen in self._gens(jobs, k)])
        latents = latents + self.cfg.perturb_delta * noise.to(dtype)
        return pipe(prompt=prompts, negative_prompt=neg, latents=latents, guidance_scale=g,
                    num_inference_steps=self.cfg.steps, output_type="np", callback_on_step_end=watch,
                    callback_on_step_end_tensor_inputs=["latents"]).images


def _empty(masks: np.ndarray) -> np.ndarray:
    """Per tile: its edit mask selects no pixel."""
    return np.asarray(~masks.reshape(len(masks), -1).any(axis=1))
