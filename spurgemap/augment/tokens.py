"""Textual inversion: teach the text encoder one new token (or N vectors) per class.

Only the new rows of the token-embedding table are trained; after every optimiser step all other
rows are put back bit for bit (AdamW's weight decay would otherwise touch them). The text encoder
and tokenizer are copies, so the pipeline used for generation stays pristine and loads the saved
tokens the way any diffusers user would.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spurgemap.augment.imaging import to_model_tensor
from spurgemap.config import TokenConfig
from spurgemap.core.errors import InputError
from spurgemap.model.preprocess import d4_variants


@dataclass
class LearnedTokens:
    embeddings: dict[str, torch.Tensor]  # class token -> (num_vectors, dim), float32 on CPU
    loss_before: dict[str, float]  # fixed-noise evaluation loss with the initial embedding
    loss_after: dict[str, float]
    curves: dict[str, list[float]] = field(default_factory=dict)  # training loss per step
    steps: int = 0
    rows: dict[str, list[int]] = field(default_factory=dict)  # token -> its rows in the table
    table: torch.Tensor | None = None  # the whole trained embedding table, when asked for


def vector_names(token: str, n: int) -> list[str]:
    """diffusers' multi-vector convention: <tok>, <tok>_1, ... <tok>_{n-1}."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def _init_id(tokenizer: Any, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise InputError(f"token initializer {word!r} is {len(ids)} tokens for this tokenizer; "
                         "choose a single-token word (the reference used 'the')")
    return int(ids[0])


class _Encoder:
    """Private tokenizer + fp32 text encoder with the new tokens added."""

    def __init__(self, pipe: Any, tokens: list[str], cfg: TokenConfig, device: torch.device) -> None:
        self.tokenizer = copy.deepcopy(pipe.tokenizer)
        self.text = copy.deepcopy(pipe.text_encoder).to(device=device, dtype=torch.float32)
        self.text.requires_grad_(False)
        init = _init_id(self.tokenizer, cfg.initializer)
        self.rows: dict[str, list[int]] = {}
        for token in tokens:
            names = vector_names(token, cfg.num_vectors)
            clash = [n for n in names if n in self.tokenizer.get_vocab()]
            if clash:
                raise InputError(f"token {clash[0]!r} already exists in the model's vocabulary; "
                                 "choose other augment.tokens.tokens")
            self.tokenizer.add_tokens(names)
            self.rows[token] = [self.tokenizer.convert_tokens_to_ids(n) for n in names]
        self.text.resize_token_embeddings(len(self.tokenizer))
        self.table = self.text.get_input_embeddings().weight
        with torch.no_grad():
            for ids in self.rows.values():
                self.table[ids] = self.table[init].clone()
        self.table.requires_grad_(True)

    def prompt(self, token: str) -> str:
        return " ".join(self.tokenizer.convert_ids_to_tokens(self.rows[token]))

    def encode(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(captions, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        return self.text(ids.to(self.table.device))[0]


def _latent_bank(pipe: Any, images: np.ndarray, resolution: int, d4: bool,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior (mean, std) of every tile and symmetry, computed once instead of every step."""
    variants = d4_variants(images) if d4 else np.concatenate([images, images[:, :, ::-1]])
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(variants), 8):
            x = to_model_tensor(variants[i:i + 8], resolution).to(pipe.vae.device, dtype)
            dist = pipe.vae.encode(x).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def learn_tokens(pipe: Any, images_by_token: dict[str, np.ndarray], cfg: TokenConfig, resolution: int,
                 seed: int, advance: Callable[[int], None] | None = None,
                 keep_table: bool = False) -> LearnedTokens:
    """Learn each class token from that class's tiles only (as the reference: one job per class)."""
    from diffusers import DDPMScheduler

    if int(pipe.unet.config.in_channels) != 4:
        raise InputError(f"the model's UNet takes {pipe.unet.config.in_channels} input channels (an inpainting "
                         "model): class tokens cannot be learned with it; learn them with a regular Stable "
                         "Diffusion model (`augment learn-tokens --model REGULAR`) and pass --tokens")
    device = pipe.unet.device
    unet_dtype = pipe.unet.dtype
    pipe.unet.requires_grad_(False)  # only the new embedding rows learn: no UNet/VAE gradients
    pipe.vae.requires_grad_(False)
    enc = _Encoder(pipe, list(images_by_token), cfg, device)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    scaling = float(pipe.vae.config.scaling_factor)
    vpred = noise_sched.config.prediction_type == "v_prediction"
    lr = cfg.lr * (cfg.batch_size if cfg.scale_lr else 1)
    use_scaler = device.type == "cuda" and unet_dtype == torch.float16
    result = LearnedTokens({}, {}, {}, steps=cfg.steps, rows=enc.rows)
    for ci, (token, images) in enumerate(images_by_token.items()):
        if not len(images):
            raise InputError(f"no training tiles for class token {token}; tokens need tiles of every class")
        mean, std = _latent_bank(pipe, images, resolution, cfg.d4, pipe.vae.dtype)
        gen = torch.Generator(device="cpu").manual_seed(seed * 1000 + ci)
        pick = random.Random(seed * 1000 + ci)
        rows = enc.rows[token]
        keep = torch.ones(enc.table.shape[0], dtype=torch.bool, device=device)
        keep[rows] = False
        frozen = enc.table.detach().clone()
        optim = torch.optim.AdamW([enc.table], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        prompt = enc.prompt(token)

        def loss_of(idx: torch.Tensor, t: torch.Tensor, eps_latent: torch.Tensor, noise: torch.Tensor,
                    captions: list[str], prompt: str = prompt, mean: torch.Tensor = mean,
                    std: torch.Tensor = std) -> torch.Tensor:
            latents = (mean[idx] + std[idx] * eps_latent) * scaling
            noisy = noise_sched.add_noise(latents, noise, t)
            target = noise_sched.get_velocity(latents, noise, t) if vpred else noise
            hidden = enc.encode([c.format(prompt) for c in captions]).to(unet_dtype)
            with torch.autocast(device.type, dtype=unet_dtype, enabled=device.type == "cuda"):
                pred = pipe.unet(noisy.to(unet_dtype), t, hidden).sample
            return F.mse_loss(pred.float(), target.float())

        def draw(n: int, g: torch.Generator,
                 mean: torch.Tensor = mean) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, len(mean), (n,), generator=g)
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=g)
            shape = (n, *mean.shape[1:])
            return (idx.to(device), t.to(device), torch.randn(shape, generator=g).to(device),
                    torch.randn(shape, generator=g).to(device))

        def evaluate() -> float:
            g = torch.Generator(device="cpu").manual_seed(12345)
            with torch.no_grad():
                losses = [loss_of(*draw(cfg.batch_size, g), [cfg.templates[0]] * cfg.batch_size).item()
                          for _ in range(4)]
            return float(np.mean(losses))

        result.loss_before[token] = evaluate()
        curve = []
        for _ in range(cfg.steps):
            captions = [pick.choice(cfg.templates) for _ in range(cfg.batch_size)]
            loss = loss_of(*draw(cfg.batch_size, gen), captions)
            optim.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optim)
                scaler.update()
            else:
                loss.backward()
                optim.step()
            with torch.no_grad():
                enc.table[keep] = frozen[keep]
            curve.append(float(loss.detach()))
            if advance:
                advance(1)
        result.loss_after[token] = evaluate()
        result.curves[token] = curve
        result.embeddings[token] = enc.table.detach()[rows].float().cpu().clone()
    if keep_table:
        result.table = enc.table.detach().cpu().clone()
    return result

