"""Batches of generation jobs, and the guard that keeps broken images out of a synthetic set.

GIS-free on purpose: the GPU benchmark imports it on machines that have torch and diffusers only.
A diffusion model that overflows (fp16 on SD 2.x is the known case) decodes NaN, which would be
written as black tiles that enter training silently. Such an image, or any constant one, is never
kept: the job is run again with another seed, up to `retries` times, then skipped and counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spurgemap.augment.methods import Generator, Job

FP16_HINT = ("a diffusion model that decodes NaN or constant images usually overflowed in float16: "
             "try --set augment.dtype=bfloat16 (CUDA) or --set augment.dtype=float32")


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Jobs sharing (method, strength) steps, in runs of at most `size`, in plan order."""
    groups: dict[Any, list[Job]] = {}
    for jb in jobs:
        groups.setdefault(jb.key, []).append(jb)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of a job's `attempt`-th retry: drawn from its first seed, so a rerun repeats it."""
    return int.from_bytes(hashlib.sha256(f"{seed}|retry{attempt}".encode()).digest()[:4], "little")


@dataclass
class Made:
    job: Job  # with the seed that gave the image
    image: np.ndarray
    note: str
    retries: int


@dataclass
class Skipped:
    job: Job  # as planned
    reason: str  # the last attempt's
    seeds: list[int]  # every seed tried


def guarded_batch(gen: Generator, batch: list[Job], src: np.ndarray, masks: np.ndarray | None, tile_px: int,
                  retries: int, on_reject: Callable[[Job, str], None] | None = None) -> tuple[list[Made],
                                                                                             list[Skipped]]:
    """Run one batch; rejected images are run again (together) with retry seeds, then skipped."""
    notes = gen.notes(src, batch, masks)
    current = list(batch)
    pending = list(range(len(batch)))
    made: dict[int, Made] = {}
    reasons: dict[int, str] = {}
    for attempt in range(retries + 1):
        jobs = [current[i] for i in pending]
        tiles, why = gen.generate(src[pending], jobs, masks[pending] if masks is not None else None, tile_px)
        failed = []
        for i, img, reason in zip(pending, tiles, why, strict=True):
            if reason:
                failed.append(i)
                reasons[i] = reason
                if on_reject:
                    on_reject(current[i], reason)
            else:
                made[i] = Made(current[i], img, notes[i], attempt)
        pending = failed
        if not pending:
            break
        for i in pending:
            current[i] = replace(batch[i], seed=retry_seed(batch[i].seed, attempt + 1))
    skipped = [Skipped(batch[i], reasons[i], [batch[i].seed] + [retry_seed(batch[i].seed, a)
                                                                 for a in range(1, retries + 1)])
               for i in pending]
    return [made[i] for i in sorted(made)], skipped
