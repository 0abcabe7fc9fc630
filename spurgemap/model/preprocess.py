"""The one copy of tile preprocessing: D4 symmetries, uint8 -> tensor, resize and normalise.

Training, feature extraction, prediction and token learning all call these, so a tile is seen
the same way everywhere. torch is imported inside the tensor functions on purpose: predict's
onnxruntime path uses the numpy D4 from here without loading torch (~0.5 GB of RSS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# d4_variants' order: each quarter turn, then its mirror (token learning draws from this order).
VARIANT_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k in 0..7) on the last two dims."""
    x = x.rot90(k % 4, dims=(-2, -1))
    return x.flip(dims=(-1,)) if k >= 4 else x


def d4_numpy(x: np.ndarray, k: int, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """The k-th D4 symmetry of (B, H, W, C) tiles (`axes=(2, 3)`: (B, C, H, W)), matching `d4`."""
    x = np.rot90(x, k % 4, axes=axes)
    return np.ascontiguousarray(np.flip(x, axis=axes[1]) if k >= 4 else x)


def d4_variants(images: np.ndarray) -> np.ndarray:
    """All 8 flips/quarter turns of each (N, H, W, 3) tile: aerial tiles have no "up"."""
    return np.ascontiguousarray(np.concatenate([d4_numpy(images, k) for k in VARIANT_ORDER]))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) uint8 tensor (a view, no copy when contiguous)."""
    import torch  # deferred: see the module docstring

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


@dataclass
class Prep:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    channels_last: bool

    def __call__(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> normalised float at the backbone's input size."""
        # deferred: see the module docstring
        import torch
        import torch.nn.functional as F

        x = batch_u8.to(self.device, non_blocking=True).float().div_(255)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

