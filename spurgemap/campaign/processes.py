"""Several processes under `accelerate launch` (GPUs, or `--cpu` processes): rank, world size, barrier."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import PartialState


@dataclass
class Ranks:
    rank: int
    world: int
    barrier: Callable[[], None] | None

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_ranks() -> Ranks:
    """This process's place when started by `accelerate launch` (or torchrun); one process otherwise.

    Each process takes its own GPU (its local rank), so generation spreads over the machine's GPUs.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks(0, 1, None)
    state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes talk over gloo
    if state.device.type == "cuda":
        torch.cuda.set_device(state.device)
    return Ranks(state.process_index, state.num_processes, state.wait_for_everyone)
