"""A tiny randomly initialised Stable Diffusion, built from the real component classes.

No weights can be downloaded here, so tests, CPU demos and the CPU benchmark fall back to this: it
exercises every code path (tokenizer, text encoder, UNet, VAE, scheduler, pipelines) in seconds.
It measures mechanics, never image quality: anything generated with it is noise-like.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_MARKER = "spurgemap_tiny_random.json"  # a file in the model folder, so outputs can say so


def _byte_vocab() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 / CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_tokenizer(folder: Path, words: tuple[str, ...] = ("the", "a", "of", "photo", "drone")) -> None:
    """A CLIP tokenizer with byte-level pieces plus a few whole words (so "the" is one token)."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces = _byte_vocab()
    vocab_list = pieces + [p + "</w>" for p in pieces]
    merges: list[str] = []
    for word in words:  # merge each word left to right into one token
        current = word[0]
        for i, ch in enumerate(word[1:], start=1):
            tail = ch + "</w>" if i == len(word) - 1 else ch
            merges.append(f"{current} {tail}")
            current = current + tail
            if current not in vocab_list:
                vocab_list.append(current)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))


def _calibrate_vae(vae: Any) -> None:
    """Give the random VAE two properties of a trained one: a near-deterministic posterior (small
    variance) and a scaling factor that brings latents to unit variance (how SD chose 0.18215)."""
    conv = vae.quant_conv  # its output channels [half:] are the log-variance
    half = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[half:] = 0.0
        conv.bias[half:] = -12.0
        x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        std = float(vae.encode(x).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))


def write_tiny_model(folder: Path, seed: int = 0, prediction_type: str = "epsilon",
                     sample_size: int = 32, text_dim: int = 32) -> Path:
    """Save a tiny SD 1.x-shaped diffusers folder (v-prediction makes it SD 2.x-shaped); 64-px images."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as dlog
    from huggingface_hub.utils import disable_progress_bars
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()  # "Writing model shards" bars are noise for a 1-MB model
    tlog.disable_progress_bar()
    disable_progress_bars()
    folder = Path(folder)
    write_tiny_tokenizer(folder / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok")
    if len(tokenizer) < 512:
        raise RuntimeError(f"tiny tokenizer came out with {len(tokenizer)} tokens")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=text_dim,
        attention_head_dim=(2, 4), norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32,
        sample_size=sample_size * 2)
    _calibrate_vae(vae)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=text_dim, intermediate_size=37,
        layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        max_position_embeddings=77))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                              prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)  # type: ignore[attr-defined]
    for f in (folder / "_tok").iterdir():
        f.unlink()
    (folder / "_tok").rmdir()
    (folder / TINY_MARKER).write_text(json.dumps({"seed": seed, "prediction_type": prediction_type,
                                                  "note": "random weights: mechanics only"}))
    return folder
