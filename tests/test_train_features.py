"""The probe's CPU feature pass on onnxruntime gives torch's features, view by view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier
from spurgemap.model.engine import extract_features, freeze_for_probe
from spurgemap.model.preprocess import Prep
from spurgemap.train.features import onnx_features


def test_onnx_features_equal_torch_features_for_every_d4_view() -> None:
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features)
    freeze_for_probe(model)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (11, 100, 100, 3), dtype=np.uint8)  # 11: a last chunk of 3
    images[:, 40:60] = (200, 210, 80)  # a stripe, so flips and turns give different features
    prep = Prep(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), torch.device("cpu"), channels_last=False)
    seen: list[int] = []
    got = onnx_features(model, images, prep, 8, seen.append)
    want = extract_features(model, images, prep, 8, batch_size=4)
    assert got.shape == want.shape == (11, 8, spec.num_features) and sum(seen) == 11
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-4 * max(scale, 1.0)
    assert (want[:, 0] - want[:, 1]).abs().max().item() > 1e-3 * scale  # views do differ: order is tested
    assert onnx_features(model, images[:0], prep, 8).shape == (0, 8, 1)


def test_channels_first_graph_gives_the_same_probabilities_on_planar_tiles() -> None:
    """predict feeds (N, 3, H, W) tiles to bundle graphs exported for (N, H, W, 3); every D4 view agrees."""
    from spurgemap.core.cpu_graphs import channels_first, cpu_runner
    from spurgemap.model.onnx import tile_onnx
    from spurgemap.model.preprocess import d4_numpy

    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    graph = tile_onnx(model, 40, 32, [0.5] * 3, [0.25] * 3)
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    hwc[:, 5:15, :, 0] = 250  # a red band near the top: turns and flips move it
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    for backend in ("onnx", "openvino"):
        nhwc, nchw = cpu_runner(backend, graph, "tiles", "prob"), cpu_runner(backend, channels_first(graph),
                                                                            "tiles", "prob")
        for k in range(8):
            want = nhwc(d4_numpy(hwc, k))
            got = nchw(d4_numpy(chw, k, axes=(2, 3)))
            assert got.shape == want.shape == (5,) and np.abs(got - want).max() < 1e-5
        views = [nchw(d4_numpy(chw, k, axes=(2, 3))) for k in range(8)]
        assert max(np.abs(v - views[0]).max() for v in views) > 1e-4  # the views differ: order is tested
    assert channels_first(channels_first(graph)) == channels_first(graph)  # a channels-first graph stays as it is
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match="dimensions"):  # an NHWC batch no longer fits the new graph
        cpu_runner("onnx", channels_first(graph), "tiles", "prob")(hwc)
