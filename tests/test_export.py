"""ONNX export: onnxruntime must reproduce torch (1e-4), Deepness must find its metadata, and the
argmax-after-threshold rule of Deepness and GeoDeep must decide exactly p >= threshold."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from spurgemap.core.errors import InputError
from spurgemap.core.hashing import file_sha256
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, model_from_bundle, save_bundle
from spurgemap.model.onnx import DeepnessWrapper, classifier_onnx, onnx_bytes, resize_matrix
from spurgemap.model.preprocess import Prep
from spurgemap.predict.deepness import export_deepness

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TILE, SIZE, GSD, THRESHOLD = 64, 48, 0.014, 0.3712  # 0.3712: Deepness would show 0.37
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def session(data: bytes | Path) -> ort.InferenceSession:
    src = str(data) if isinstance(data, Path) else data
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def tiny_model(seed: int = 0) -> SpurgeClassifier:
    torch.manual_seed(seed)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    with torch.no_grad():  # a head large enough that probabilities spread over (0, 1)
        model.head.weight.normal_(0, 50.0)
    return model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "model.spurge"
    meta: dict[str, Any] = {"spurgemap_version": "0.1.0", "backbone": "test_efficientnet", "input_size": SIZE,
                            "mean": MEAN, "std": STD, "class_names": ["no_spurge", "leafy_spurge"],
                            "tile_size_px": TILE, "gsd_m": GSD, "threshold": THRESHOLD}
    save_bundle(path, tiny_model(), meta)
    return path


@pytest.fixture(scope="module")
def exported(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("onnx") / "spurge.onnx"
    return out, export_deepness(bundle, out)


def tiles(n: int, seed: int = 1) -> np.ndarray:
    """uint8 (N,3,T,T) tiles, smooth enough that resizing matters, with detail on top."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 8, 8)))
    smooth = F.interpolate(coarse, size=(TILE, TILE), mode="bilinear", align_corners=False).numpy()
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("src", "dst"), [(250, 224), (TILE, SIZE), (32, 48), (40, 40)])
def test_resize_matrix_is_torch_antialiased_bilinear(src: int, dst: int) -> None:
    x = torch.rand(2, 3, src, src, generator=torch.Generator().manual_seed(src))
    ref = F.interpolate(x, size=(dst, dst), mode="bilinear", antialias=True, align_corners=False)
    r = resize_matrix(src, dst)
    assert torch.allclose(r @ x @ r.T, ref, atol=5e-5)  # float32 summation order: ~1.5e-5 worst seen


def client_rule(out: np.ndarray, seg_thresh: float) -> np.ndarray:
    """What Deepness and GeoDeep do with a Segmentor output: zero below seg_thresh, argmax over channels."""
    out = out.copy()
    out[out < seg_thresh] = 0
    return np.argmax(out, axis=1)


def test_deepness_output_matches_torch_and_spurgemap_prediction(bundle: Path, exported: tuple[Path, dict]) -> None:
    out, _ = exported
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == ["output"]
    assert sess.get_inputs()[0].shape[1:] == [3, TILE, TILE]
    u8 = tiles(40)
    x = u8.astype(np.float32) / 255  # what Deepness feeds: RGB / 255, standardization 0/1
    got = sess.run(["output"], {"input": x})[0]
    assert got.shape == (40, 2, TILE, TILE) and got.dtype == np.float32
    assert np.all(got[:, 0] == 0.5), "channel 0 is the constant 0.5"
    flat = got[:, 1].reshape(40, -1)
    assert np.all(flat == flat[:, :1]), "the map must be constant within each tile"
    model, _ = model_from_bundle(bundle)
    with torch.no_grad():
        wrapper = DeepnessWrapper(model, TILE, SIZE, MEAN, STD, THRESHOLD).eval()
        np.testing.assert_allclose(got, wrapper(torch.from_numpy(x)).numpy(), atol=1e-4)
        prep = Prep(SIZE, tuple(MEAN), tuple(STD), torch.device("cpu"), False)  # type: ignore[arg-type]
        probs = torch.sigmoid(model(prep(torch.from_numpy(u8)))).numpy()
        expected_q = wrapper.rescale(torch.from_numpy(probs)).numpy()
    np.testing.assert_allclose(flat[:, 0], expected_q, atol=1e-4)
    assert np.ptp(probs) > 0.05, "test tiles should give distinct probabilities"
    present = probs >= THRESHOLD
    assert 0 < present.sum() < len(present), "tiles on both sides of the threshold"
    assert np.abs(probs - THRESHOLD).min() > 1e-4, "no tile so close to the threshold that float noise decides"
    for seg_thresh in (0.5, 0.0, 0.37, 0.25):  # Deepness' default, threshold off, the rounded t, any <= 0.5
        decided = client_rule(got, seg_thresh)
        assert np.all(decided == decided[:, :1, :1])
        np.testing.assert_array_equal(decided[:, 0, 0] == 1, present)
    assert sess.run(["output"], {"input": x[:1]})[0].shape == (1, 2, TILE, TILE)


class _Rescale(torch.nn.Module):
    def __init__(self, wrapper: DeepnessWrapper) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.wrapper.rescale(p)


@pytest.mark.parametrize("threshold", [THRESHOLD, 0.5, 0.005, 0.995, 0.1 + 0.2])
def test_channel_one_is_above_half_exactly_where_p_reaches_the_threshold(threshold: float) -> None:
    """In the ONNX graph, in float32: the rule holds at the float neighbours of t too, not just on paper."""
    wrapper = DeepnessWrapper(tiny_model(), TILE, SIZE, MEAN, STD, threshold)
    graph = onnx_bytes(_Rescale(wrapper), torch.rand(4), "q", 17, "p")
    t = np.float32(threshold)
    near = [t]
    for direction in (0.0, 1.0):
        v = t
        for _ in range(6):
            v = np.nextafter(v, np.float32(direction))
            near.append(v)
    rng = np.random.default_rng(0)
    p = np.concatenate([np.array(near, np.float32), np.array([0.0, 1.0, 1e-30, 1 - 2 ** -24], np.float32),
                        rng.uniform(0, 1, 5000).astype(np.float32)])
    q = session(graph).run(["q"], {"p": p})[0]
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q > 0.5, p >= t)
    assert np.all((q >= 0) & (q <= 1))
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= 0), "monotone in p"
    two = np.stack([np.full_like(q, 0.5), q], axis=1)[:, :, None, None]
    for seg_thresh in (0.5, 0.0, round(threshold, 2) if round(threshold, 2) <= 0.5 else 0.5):
        np.testing.assert_array_equal(client_rule(two, seg_thresh)[:, 0, 0] == 1, p >= t)


def test_deepness_wrapper_refuses_thresholds_outside_0_1() -> None:
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            DeepnessWrapper(tiny_model(), TILE, SIZE, MEAN, STD, bad)


def test_deepness_metadata(bundle: Path, exported: tuple[Path, dict]) -> None:
    out, returned = exported
    proto = onnx.load(str(out))
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props == returned
    assert props["model_type"] == "Segmentor"
    assert props["class_names"] == {"0": "no leafy spurge", "1": "leafy spurge"}
    assert props["bundle_class_names"] == ["no_spurge", "leafy_spurge"]
    assert props["resolution"] == round(GSD * 100, 2) and props["gsd_m"] == GSD  # cm/px as Deepness shows it
    assert props["tile_size"] == props["tiles_size"] == TILE and props["tiles_overlap"] == 0
    assert props["standardization_mean"] == [0, 0, 0] and props["standardization_std"] == [1, 1, 1]
    assert props["seg_thresh"] == 0.5 and props["threshold"] == pytest.approx(THRESHOLD)
    assert props["seg_small_segment"] == 0
    assert props["backbone"] == "test_efficientnet" and props["bundle_sha256"] == file_sha256(bundle)
    meta = session(out).get_modelmeta().custom_metadata_map  # how Deepness reads it
    assert json.loads(meta["tile_size"]) == TILE and json.loads(meta["model_type"]).capitalize() == "Segmentor"
    assert float(meta["seg_thresh"]) == 0.5 and float(meta["resolution"]) == 1.4  # how GeoDeep reads them
    # Deepness takes the channel count from the declared output shape: numbers, batch alone symbolic
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, TILE, TILE]
    assert session(out).get_outputs()[0].shape == ["batch", 2, TILE, TILE]
    assert not list(out.parent.glob(".*tmp")), "no temp file left behind"


def test_classifier_onnx_matches_torch_at_two_batch_sizes() -> None:
    model = tiny_model(3)
    sess = session(classifier_onnx(model, SIZE))
    assert not model.training, "export must not switch the model to training mode"
    for n in (1, 7):
        x = torch.randn(n, 3, SIZE, SIZE)
        with torch.no_grad():
            ref = torch.sigmoid(model(x)).numpy()
        got = sess.run(["prob"], {"input": x.numpy()})[0]
        assert got.shape == (n,)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_classifier_onnx_real_lite0() -> None:
    """TF-'same' padding (timm Conv2dSame) must survive export with a dynamic batch axis."""
    backbone, spec = create_backbone()  # bundled ImageNet weights, offline
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    sess = session(classifier_onnx(model, spec.input_size))
    for n in (1, 3):
        x = torch.randn(n, 3, spec.input_size, spec.input_size)
        with torch.no_grad():
            ref = torch.sigmoid(model(x)).numpy()
        np.testing.assert_allclose(sess.run(["prob"], {"input": x.numpy()})[0], ref, atol=1e-4)


def test_bad_inputs_are_one_line_input_errors(tmp_path: Path, bundle: Path) -> None:
    junk = tmp_path / "junk.spurge"
    junk.write_bytes(b"not a zip")
    for path in (junk, tmp_path / "missing.spurge"):
        with pytest.raises(InputError) as err:
            export_deepness(path, tmp_path / "out.onnx")
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        export_deepness(bundle, tmp_path / "no" / "such" / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
