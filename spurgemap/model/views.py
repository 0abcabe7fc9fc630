"""Fixed RandAugment views of tiles, for frozen-backbone training on cached features.

Live RandAugment runs the backbone on every draw: 200 steps x 32 x 30 epochs of forwards, over half an
hour of CPU per few-shot cell. A fixed number of views per tile, computed once, costs what a DA-Fusion
arm's M synthetic images cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from spurgemap.model.preprocess import to_tensor


def randaugment_views(images: np.ndarray, views: int, seed: int, ids: np.ndarray) -> np.ndarray:
    """`views` RandAugment draws (torchvision defaults: 2 ops, magnitude 9) of each uint8 (N, H, W, 3)
    image, (N * views, H, W, 3) in image-major order. A frozen backbone then sees a fixed set of
    augmented views whose features are cached, as it sees a DA-Fusion arm's M synthetic images;
    view v of image `ids[i]` is seeded by (seed, ids[i], v) alone, so every run draws the same views."""
    tf = v2.RandAugment()
    out = np.empty((len(images) * views, *images.shape[1:]), dtype=np.uint8)
    x = to_tensor(images)
    with torch.random.fork_rng(devices=[]):  # the global RNG v2 draws from; the caller's is untouched
        for i, img in enumerate(x):
            for v in range(views):
                torch.manual_seed(int(np.random.SeedSequence([seed, int(ids[i]), v]).generate_state(1)[0]))
                out[i * views + v] = tf(img).permute(1, 2, 0).numpy()
    return out
