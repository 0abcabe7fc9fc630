"""Concept erasure (ESD, Gandikota et al. 2023), DA-Fusion's leakage check.

The UNet is fine-tuned so that its noise prediction for "leafy spurge" becomes the frozen model's
unconditional prediction pushed away from the concept: eps_u - eta * (eps_c - eps_u). Any benefit
left after erasure cannot come from the model having seen leafy spurge on the internet. As in the
reference ("full" method) every UNet weight trains, on states drawn from the trajectory of the model
being trained.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spurgemap.config import EraseConfig


@dataclass
class ErasureResult:
    loss_before: float  # ESD objective on fixed probes, before and after
    loss_after: float
    iterations: int


def _embed(pipe: Any, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", truncation=True, max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    with torch.no_grad():
        return pipe.text_encoder(ids)[0].float()


def erase_concepts(pipe: Any, cfg: EraseConfig, resolution: int, seed: int,
                   advance: Callable[[int], None] | None = None) -> ErasureResult:
    """Fine-tune `pipe.unet` in place; a frozen copy provides the targets."""
    from diffusers import DDIMScheduler

    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    frozen = copy.deepcopy(unet).requires_grad_(False).eval()  # in the pipeline's dtype
    unet.to(torch.float32)  # fp16 weights cannot take Adam updates of 1e-5; trained in fp32, cast back
    sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    sched.set_timesteps(cfg.ddim_steps, device=device)
    latent_px = resolution // (2 ** (len(pipe.vae.config.block_out_channels) - 1))
    shape = (1, int(unet.config.in_channels), latent_px, latent_px)
    uncond = _embed(pipe, [""])
    concepts = {c: _embed(pipe, [c]) for c in cfg.concepts}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = unet.training
    unet.train().requires_grad_(True)
    optim = torch.optim.Adam(unet.parameters(), lr=cfg.lr)

    def state_at(net: Any, cond: torch.Tensor, steps: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t after `steps` DDIM steps of `net`, guided towards the concept."""
        x = torch.randn(shape, generator=g).to(device)
        nd = next(net.parameters()).dtype
        with torch.no_grad():
            for t in sched.timesteps[:steps]:
                e = net(torch.cat([x, x]).to(nd), t, torch.cat([uncond, cond]).to(nd)).sample.float()
                eu, ec = e.chunk(2)
                x = sched.step(eu + cfg.start_guidance * (ec - eu), t, x).prev_sample
        return x, sched.timesteps[min(steps, len(sched.timesteps) - 1)]

    def objective(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            xf = x.to(dtype)
            e0 = frozen(xf, t, uncond.to(dtype)).sample.float()
            ep = frozen(xf, t, cond.to(dtype)).sample.float()
        target = e0 - cfg.negative_guidance * (ep - e0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = unet(x, t, cond).sample  # bf16 compute on CUDA, fp32 master weights for Adam
        return F.mse_loss(pred.float(), target)

    def probe() -> float:
        """The objective on fixed states of the frozen model, comparable before and after."""
        g = torch.Generator(device="cpu").manual_seed(4242)
        with torch.no_grad():
            vals = [objective(*state_at(frozen, cond, k, g), cond).item()
                    for cond in concepts.values() for k in (0, cfg.ddim_steps // 2)]
        return sum(vals) / len(vals)

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls left outside autocast use TF32 cores
    try:
        return _train(unet, frozen, cfg, concepts, gen, state_at, objective, probe, optim, was_training,
                      dtype, advance)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _train(unet: Any, frozen: Any, cfg: EraseConfig, concepts: dict[str, torch.Tensor], gen: torch.Generator,
           state_at: Any, objective: Any, probe: Any, optim: Any, was_training: bool, dtype: torch.dtype,
           advance: Callable[[int], None] | None) -> ErasureResult:
    before = probe()
    names = list(concepts)
    for i in range(cfg.iterations):
        cond = concepts[names[i % len(names)]]
        steps = int(torch.randint(0, cfg.ddim_steps, (1,), generator=gen))
        x, t = state_at(unet, cond, steps, gen)  # the reference samples from the model being trained
        loss = objective(x, t, cond)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if advance:
            advance(1)
    unet.requires_grad_(False).train(was_training)
    after = probe()
    unet.to(dtype)
    return ErasureResult(before, after, cfg.iterations)
