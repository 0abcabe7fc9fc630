"""Pixel plumbing between 250-px uint8 tiles and the diffusion model's tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_model_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [-1, 1], bicubic (antialiased) resize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(-1.0, 1.0)


def to_tiles(images: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """Pipeline output, float (N, h, w, 3) in [0, 1] -> uint8 (N, size, size, 3)."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def vegetation_mask(images: np.ndarray, threshold: float) -> np.ndarray:
    """Excess-green index (2g - r - b on chromatic coordinates) above a threshold: green plants."""
    rgb = images.astype(np.float32)
    total = rgb.sum(axis=-1) + 1e-6
    r, g, b = (rgb[..., i] / total for i in range(3))
    return (2 * g - r - b) > threshold


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate (N, H, W) boolean masks by a square of `radius` pixels (the reference's max filter)."""
    if radius <= 0:
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[:, None]
    t = F.max_pool2d(t, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return t[:, 0].numpy() > 0.5


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="nearest")[:, 0].numpy() > 0.5


def rejects(images: np.ndarray, tiles: np.ndarray) -> list[str]:
    """Per image, why it must not be written ("" when fine): non-finite pixels in the float output
    (N, h, w, 3), or a constant tile once converted to uint8 (N, T, T, 3)."""
    n = len(tiles)
    finite = np.asarray(np.isfinite(np.asarray(images, dtype=np.float32).reshape(n, -1)).all(axis=1)).tolist()
    flat = tiles.reshape(n, -1)
    constant = [bool(v) for v in flat.min(axis=1) == flat.max(axis=1)]
    return ["non-finite image" if not f else "constant image" if c else "" for f, c in zip(finite, constant,
                                                                                             strict=True)]
