"""ONNX graphs of the classifier: a bare one for fast CPU prediction, the bundle's tile graph, and
the graph wrapped for the QGIS Deepness plugin (its metadata and file: `predict.deepness`).

Deepness (a QGIS plugin) has no tile-classifier model type, so the Deepness export wraps the
classifier into a *segmentation* model ("Segmentor") whose output is constant over each tile.
Segmentor gives QGIS users what they want: presence polygons and an area summary per class.

Two output channels, decided by argmax (see `DeepnessWrapper` for the exact rule):

* channel 0 "no leafy spurge": the constant 0.5;
* channel 1 "leafy spurge": the presence probability p rescaled piecewise linearly so that the
  bundle's threshold t maps to 0.5 (0 -> 0, t -> 0.5, 1 -> 1), with p >= t always strictly above 0.5
  and p < t never above it.

Why: both clients that read Deepness-style metadata decide a pixel the same way: zero every channel
whose value is below `seg_thresh`, then take the argmax over channels (ties to channel 0). GeoDeep
(WebODM's AI detection) does only that, so a one-channel probability output was always class 0
there: nothing was ever found. With the two channels above and `seg_thresh` = 0.5, both Deepness
and GeoDeep mark a tile present exactly when p >= t, which is `spurgemap predict`'s rule. 0.5 is
exact in the two decimals Deepness' threshold spin box shows, so the tuned threshold (say 0.3712)
is never rounded to 0.37; any `seg_thresh` <= 0.5 gives the same map, and a user who raises it
above 0.5 gets a stricter map.

The model's own preprocessing (resize to input_size, mean/std) lives inside the graph, so Deepness
just feeds RGB scaled to 0..1 (standardization 0/1). The legacy ONNX exporter cannot export torch's
antialiased bilinear resize, so the graph does it as two matrix products with the exact resampling
matrices torch uses (antialiased bilinear is separable): identical to training preprocessing.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from spurgemap.model.classifier import SpurgeClassifier

DEFAULT_OPSET = 17


def resize_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) matrix R with R @ column == antialiased bilinear resize of that column.

    Why: resizing the identity image along one axis yields the exact weights torch applies, so
    `R_h @ x @ R_w.T` reproduces `F.interpolate(..., antialias=True)` with plain MatMuls.
    """
    eye = torch.eye(src, dtype=torch.float64)[None, None]
    out = F.interpolate(eye, size=(dst, src), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].float().contiguous()


class ProbabilityHead(nn.Module):
    """Classifier + sigmoid: (N,3,S,S) normalised -> (N,) presence probability."""

    def __init__(self, model: SpurgeClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


class DeepnessWrapper(nn.Module):
    """(N,3,T,T) RGB in 0..1 -> (N,2,T,T): channel 0 = 0.5, channel 1 = p rescaled (t -> 0.5).

    Mirrors `train.engine.Prep` (resize, then (x - mean) / std) so Deepness needs no settings.
    Channel 1 is q = 0.5 p / t below the threshold t and max(0.5 + 0.5 (p - t) / (1 - t), next float
    after 0.5) from t up, chosen per element with a Where on p >= t. So, in float32 arithmetic and not
    just on paper, q > 0.5 exactly when p >= t, and q <= 0.5 otherwise: an argmax against the
    constant 0.5 of channel 0 (ties go to channel 0), after zeroing values below any seg_thresh
    <= 0.5, is the decision p >= t.
    """

    rows: torch.Tensor
    cols_t: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    thr: torch.Tensor

    def __init__(self, model: SpurgeClassifier, tile: int, input_size: int,
                 mean: list[float], std: list[float], threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        self.model, self.tile, self.resize = model, tile, tile != input_size
        self.register_buffer("rows", resize_matrix(tile, input_size))      # (S, T)
        self.register_buffer("cols_t", resize_matrix(tile, input_size).T.contiguous())  # (T, S)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("thr", torch.tensor(threshold, dtype=torch.float32))

    def rescale(self, p: torch.Tensor) -> torch.Tensor:
        """Probability -> channel 1: piecewise linear, t -> 0.5, and > 0.5 exactly where p >= t."""
        t, half = self.thr, torch.tensor(0.5)
        above = torch.maximum(half + half * (p - t) / (1.0 - t), torch.tensor(0.5 + 2.0 ** -24))
        return torch.where(p >= t, above, half * p / t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize:
            x = torch.matmul(torch.matmul(self.rows, x), self.cols_t)
        p = torch.sigmoid(self.model((x - self.mean) / self.std))
        q = self.rescale(p).view(-1, 1, 1, 1)
        both = torch.cat([torch.full_like(q, 0.5), q], dim=1)  # (N, 2, 1, 1)
        return both.expand(-1, 2, self.tile, self.tile)


class TileProbability(DeepnessWrapper):
    """(N,T,T,3) uint8 tiles, as read from the raster -> (N,) presence probability.

    The whole preprocessing is in the graph, so CPU prediction runs on onnxruntime alone (no torch).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if self.resize:
            x = torch.matmul(torch.matmul(self.rows, x), self.cols_t)
        return torch.sigmoid(self.model((x - self.mean) / self.std))


def tile_onnx(model: SpurgeClassifier, tile: int, input_size: int, mean: list[float], std: list[float],
              opset: int = DEFAULT_OPSET) -> bytes:
    """ONNX bytes: "tiles" uint8 (N,T,T,3) -> "prob" float32 (N,); stored in bundles for `predict`."""
    wrapper = TileProbability(model, tile, input_size, mean, std)
    return onnx_bytes(wrapper, torch.zeros(2, tile, tile, 3, dtype=torch.uint8), "prob", opset, "tiles")


class TileFeatures(TileProbability):
    """(N,T,T,3) uint8 tiles -> (N,F) frozen-backbone features, preprocessing in the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if self.resize:
            x = torch.matmul(torch.matmul(self.rows, x), self.cols_t)
        return self.model.backbone((x - self.mean) / self.std)


def features_onnx(model: SpurgeClassifier, tile: int, input_size: int, mean: list[float], std: list[float],
                  opset: int = DEFAULT_OPSET) -> bytes:
    """ONNX bytes: "tiles" uint8 (N,T,T,3) -> "features" float32 (N,F); the probe's CPU feature pass."""
    wrapper = TileFeatures(model, tile, input_size, mean, std)
    return onnx_bytes(wrapper, torch.zeros(2, tile, tile, 3, dtype=torch.uint8), "features", opset, "tiles")


def onnx_bytes(module: nn.Module, example: torch.Tensor, output: str, opset: int, name: str = "input") -> bytes:
    """Legacy (TorchScript) exporter: the dynamo one needs onnxscript, which spurgemap does not ship."""
    modes = {m: m.training for m in module.modules()}  # restored after: exporting must not change the model
    module.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # timm's Conv2dSame computes 'same' padding from Python ints: fine, H and W are fixed.
            warnings.simplefilter("ignore")
            # cast: the exporter writes to a BytesIO fine, though its stub says path.
            torch.onnx.export(module, (example,), cast(Any, buf), dynamo=False, opset_version=opset,
                              input_names=[name], output_names=[output],
                              dynamic_axes={name: {0: "batch"}, output: {0: "batch"}},
                              do_constant_folding=True)
    finally:
        for m, training in modes.items():
            m.train(training)
    return buf.getvalue()


def classifier_onnx(model: SpurgeClassifier, input_size: int, opset: int = DEFAULT_OPSET) -> bytes:
    """ONNX bytes: "input" float32 (N,3,S,S) already normalised -> "prob" float32 (N,) = sigmoid(logit).

    Batch is dynamic; S is fixed (it sets the padding of TF-style 'same' convolutions).
    """
    example = torch.zeros(2, 3, input_size, input_size)  # batch 2: nothing specialises to batch 1
    return onnx_bytes(ProbabilityHead(model), example, "prob", opset)
