"""Find and load a Stable Diffusion model from local files only, unless a download is allowed.

Accepted: a diffusers folder (model_index.json), a single-file .safetensors checkpoint (with a
diffusers folder or cached hub id for its architecture), or a hub id already in the local Hugging
Face cache. Pickled weights are never loaded and remote code never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spurgemap.augment.tiny import TINY_MARKER
from spurgemap.core.errors import InputError
from spurgemap.core.hashing import file_sha256

log = logging.getLogger(__name__)

MODEL_HELP = ("put a diffusers Stable Diffusion 1.x/2.x folder there (model_index.json, unet/, vae/, "
              "text_encoder/, tokenizer/, scheduler/ with .safetensors weights), or pass a .safetensors "
              "checkpoint, or a hub id already in the Hugging Face cache")


@dataclass
class DiffusionModel:
    """A loaded model: one set of components shared by every pipeline built from it."""

    pipe: Any  # StableDiffusionPipeline (or the inpainting variant for 9-channel UNets)
    model_id: str
    model_hash: str
    resolution: int  # native image edge in pixels
    tiny: bool  # a random test model: outputs measure mechanics only
    device: torch.device
    dtype: torch.dtype

    @property
    def inpainting_unet(self) -> bool:
        return int(self.pipe.unet.config.in_channels) == 9


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("--dtype float16 is not supported on CPU; use float32 or bfloat16")
    return dtype


def _weights_hash(folder: Path) -> str:
    """Content hash of the weight files: the same name can hold different weights."""
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json", ".txt"):
            digest.update(f"{f.relative_to(folder)}:{file_sha256(f)}".encode())
    return digest.hexdigest()[:16]


REQUIRED = {"unet": ("config.json", "*.safetensors"), "vae": ("config.json", "*.safetensors"),
            "text_encoder": ("config.json", "*.safetensors"), "tokenizer": ("vocab.json|tokenizer.json",),
            "scheduler": ("scheduler_config.json",)}


def check_model_folder(path: Path) -> None:
    """Name the first missing or malformed part of a diffusers folder before diffusers trips on it
    (an empty model_index.json otherwise ends in a bare KeyError)."""
    index = path / "model_index.json"
    try:
        meta = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{index}: not readable JSON ({type(exc).__name__}); {MODEL_HELP}") from None
    if not isinstance(meta, dict) or not str(meta.get("_class_name", "")).startswith("StableDiffusion"):
        raise InputError(f"{index}: not a Stable Diffusion model index; it must hold \"_class_name\": "
                         "\"StableDiffusionPipeline\" and one [library, class] entry per component "
                         f"({', '.join(REQUIRED)}), as save_pretrained writes it")
    for part, needs in REQUIRED.items():
        if not isinstance(meta.get(part), list) or not (path / part).is_dir():
            raise InputError(f"{path}: component {part!r} is missing (model_index.json entry and the {part}/ "
                             f"folder with {', '.join(needs).replace('|', ' or ')}); "
                             "copy the complete diffusers folder")
        for pattern in needs:
            if not any(f for alt in pattern.split("|") for f in (path / part).glob(alt)):
                what = "weights in .safetensors format" if pattern.startswith("*") else pattern.replace("|", " or ")
                raise InputError(f"{path / part}: no {what}; copy the complete diffusers folder "
                                 "(pickled .bin weights are not loaded: convert them to .safetensors)")


def content_hash(spec: str) -> str:
    """What a model's files hold, for cache keys: a moved or renamed copy keys the same, replaced
    weights under the same path do not."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return _weights_hash(path)
    if path.is_file():
        return file_sha256(path)[:16]
    return spec  # a hub id: its cached snapshot is immutable per revision


def _is_hub_id(spec: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", spec)) and not spec.startswith(".") and \
        not spec.endswith((".safetensors", ".ckpt", ".bin", ".pt"))


def _quiet() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


def load_model(spec: str | None, *, allow_download: bool = False, config_source: str | None = None,
               device: str = "auto", dtype: str = "auto", known_hash: str | None = None) -> DiffusionModel:
    """Resolve `spec` to a pipeline; every failure is one line saying what to put where. `known_hash`:
    the folder's `content_hash`, when the caller has just computed it (evaluate hashes a model once)."""
    from diffusers import StableDiffusionPipeline

    if not spec:
        raise InputError(f"no diffusion model given: pass --model PATH ({MODEL_HELP}); "
                         "`spurgemap augment tiny-model DIR` writes a tiny random one for trying the mechanics")
    _quiet()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    common: dict[str, Any] = {"dtype": dt, "safety_checker": None, "requires_safety_checker": False,
                              "use_safetensors": True}
    path = Path(spec).expanduser()
    tiny = False
    try:
        if path.is_dir():
            if not (path / "model_index.json").exists():
                raise InputError(f"{path}: not a diffusers model folder (no model_index.json); {MODEL_HELP}")
            check_model_folder(path)
            pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, **common)
            model_id, tiny = path.name, (path / TINY_MARKER).exists()
            model_hash = known_hash or _weights_hash(path)
        elif path.is_file():
            if path.suffix != ".safetensors":
                raise InputError(f"{path}: only .safetensors checkpoints are loaded (pickled .ckpt/.bin files "
                                 "can run code); convert it to .safetensors first")
            extra = {"config": config_source} if config_source else {}
            try:
                pipe = StableDiffusionPipeline.from_single_file(
                    str(path), local_files_only=not allow_download, dtype=dt, safety_checker=None,
                    requires_safety_checker=False, **extra)
            except Exception as exc:  # diffusers raises several unrelated types for unreadable checkpoints
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise InputError(f"{path}: could not load this checkpoint ({first}); for an SD 1.x/2.x checkpoint "
                                 "set augment.model_config_dir to a diffusers folder of the same architecture "
                                 "(offline it cannot be looked up), or convert it to a diffusers folder") from None
            model_id, model_hash = path.name, file_sha256(path)[:16]
        elif not _is_hub_id(spec):
            raise InputError(f"{spec}: model not found; {MODEL_HELP}")
        else:
            pipe = StableDiffusionPipeline.from_pretrained(spec, local_files_only=not allow_download, **common)
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(spec, local_files_only=True))
            model_id = spec
            model_hash = _weights_hash(snapshot) if snapshot else "unknown"
            tiny = bool(snapshot and (snapshot / TINY_MARKER).exists())
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if path.exists():
            raise InputError(f"{spec}: could not load the model ({first[:200]}); {MODEL_HELP}") from None
        where = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface/hub"
        hint = "" if allow_download else "; or pass --allow-download on a machine with internet"
        raise InputError(f"{spec}: not in the local Hugging Face cache ({where}); copy the model's snapshot "
                         f"there (e.g. `hf download {spec}` elsewhere) or pass a local folder{hint}") from None
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    ignored = sorted(name for name, comp in pipe.components.items()
                     if isinstance(comp, torch.nn.Module) and comp.dtype != dt)
    if ignored:  # library notices are silenced above, so a dtype that did not take is said here
        log.warning("--dtype %s was not applied to %s (%s); check the model files and diffusers version",
                    str(dt).removeprefix("torch."), ", ".join(ignored),
                    ", ".join(str(pipe.components[n].dtype) for n in ignored))
    if dev.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    resolution = int(pipe.unet.config.sample_size) * vae_scale
    log.info("diffusion model %s (%s, %d px, %s on %s)%s", model_id, model_hash, resolution,
             str(dt).removeprefix("torch."), dev.type, " - TINY RANDOM MODEL" if tiny else "")
    return DiffusionModel(pipe, model_id, model_hash, resolution, tiny, dev, dt)


@contextmanager
def lent(model: DiffusionModel) -> Iterator[DiffusionModel]:
    """Use a loaded model for one run and hand it back as it was: class tokens loaded into its
    tokenizer and text encoder are removed and its scheduler put back, so the next run (the next grid
    cell, with tokens of other tiles) starts from the pristine model without loading it again."""
    pipe = model.pipe
    scheduler, vocab = pipe.scheduler, len(pipe.tokenizer)
    rows = int(pipe.text_encoder.get_input_embeddings().weight.shape[0])
    try:
        yield model
    finally:
        if len(pipe.tokenizer) != vocab:
            pipe.unload_textual_inversion()
        pipe.scheduler = scheduler
        if len(pipe.tokenizer) != vocab or pipe.text_encoder.get_input_embeddings().weight.shape[0] != rows:
            raise RuntimeError("the diffusion model could not be put back after a run (tokenizer or text encoder "
                               "still holds added tokens)")


def describe(model: DiffusionModel) -> dict[str, Any]:
    cfg = model.pipe.unet.config
    return {"model_id": model.model_id, "model_hash": model.model_hash, "resolution": model.resolution,
            "tiny_random": model.tiny, "prediction_type": model.pipe.scheduler.config.prediction_type,
            "cross_attention_dim": int(cfg.cross_attention_dim), "unet_in_channels": int(cfg.in_channels),
            "device": model.device.type, "dtype": str(model.dtype).removeprefix("torch.")}
