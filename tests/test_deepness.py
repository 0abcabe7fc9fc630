"""The exported model in the clients that read Deepness-style metadata, on a demo site.

* Deepness itself (the QGIS plugin, headless, driven like a GUI user: metadata defaults) through
  tests/qgis/run_deepness.py under the system python. Without QGIS, the plugin source
  (``../shared/clients/deepness``) or its two pip packages these tests skip visibly on a
  workstation, and fail under CI (CI=true), whose .ci/run installs them.
* GeoDeep's rule (zero every channel below ``seg_thresh``, then argmax over channels) in plain
  onnxruntime, on tiles read the way GeoDeep reads them.

Both must give the map of ``spurgemap predict`` (``_class.tif``). The model is a random tiny network
whose probabilities vary from tile to tile (12-68 % here), so a map shifted or flipped by a tile
disagrees.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch
from conftest import cli_ok
from rasterio.windows import Window

from spurgemap.config import load_config
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, model_from_bundle, save_bundle
from spurgemap.model.onnx import tile_onnx
from spurgemap.predict import PredictInputs, run_predict
from spurgemap.predict.deepness import export_deepness

QGIS_PYTHON = "/usr/bin/python3"
RUN_DEEPNESS = Path(__file__).parent / "qgis" / "run_deepness.py"
TILE, THRESHOLD = 250, 0.3456  # not a 2-decimal number: Deepness' spin box would show 0.35
MISSING = ("Deepness prerequisites missing: QGIS (apt-get install qgis python3-qgis), the plugin source in "
           "../shared/clients/deepness, and its packages: /usr/bin/python3 -m pip install --target "
           "~/.cache/spurgemap/deepness-py311 --no-deps onnxruntime==1.17.0 opencv-python-headless==4.9.0.80")


def _env() -> dict[str, str]:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def _run(*args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run([QGIS_PYTHON, str(RUN_DEEPNESS), *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    try:
        info = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        info = {}
    return proc, info


@pytest.fixture(scope="module")
def deepness_python() -> str:
    """The system python that can run the plugin; skip (workstation) or fail (CI) when it cannot."""
    reason = f"{QGIS_PYTHON} not found"
    if Path(QGIS_PYTHON).exists():
        proc, info = _run("--check", timeout=120)
        if proc.returncode == 0 and info.get("ok"):
            return QGIS_PYTHON
        reason = info.get("error") or proc.stderr[-500:]
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but Deepness cannot run ({reason}); {MISSING}")
    pytest.skip(f"{MISSING} ({reason})")


def tiny_segmentor() -> bytes:
    """The tiny model embedded in run_deepness.py's --self-test (base64 of these bytes)."""
    from onnx import TensorProto, helper

    t = 8
    nodes = [
        helper.make_node("Constant", [], ["starts"], value=helper.make_tensor("s", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["ends"], value=helper.make_tensor("e", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["half"], value=helper.make_tensor("h", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["red"]),
        helper.make_node("ReduceMean", ["red"], ["mean"], axes=[2, 3], keepdims=1),
        helper.make_node("Mul", ["red", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "half"], ["c0"]),
        helper.make_node("Add", ["zeros", "mean"], ["c1"]),
        helper.make_node("Concat", ["c0", "c1"], ["output"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny_segmentor",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, t, t])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2, t, t])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="spurgemap-tests")
    model.ir_version = 8
    meta = {"model_type": "Segmentor", "class_names": {"0": "off", "1": "on"}, "resolution": 50, "tile_size": t,
            "tiles_overlap": 0, "seg_thresh": 0.5, "seg_small_segment": 0,
            "standardization_mean": [0.0, 0.0, 0.0], "standardization_std": [1.0, 1.0, 1.0]}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo site (11 x 11 tiles of 250 px), a random tiny bundle, its predict maps and Deepness model."""
    root = tmp_path_factory.mktemp("deepness")
    cli_ok("demo-data", root / "data", "--sites", 1, "--size", 11 * TILE, "--seed", 3)
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    with torch.no_grad():  # a head large enough that probabilities spread from tile to tile
        model.head.weight.normal_(0, 50.0)
    bundle = root / "tiny.spurge"
    save_bundle(bundle, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "class_names": ["no_spurge", "leafy_spurge"],
        "tile_size_px": TILE, "gsd_m": 0.014, "threshold": THRESHOLD})
    ortho = root / "data" / "sites" / "site01" / "ortho.tif"
    res = run_predict(load_config(), PredictInputs(ortho, bundle, root / "maps"))
    export_deepness(bundle, root / "spurge.onnx")
    with rasterio.open(res.files["class"]) as ds:
        cls, cell_transform = ds.read(1), ds.transform
    with rasterio.open(res.files["prob"]) as ds:
        pct = ds.read(1)
    with rasterio.open(ortho) as ds:
        alpha = ds.read(4)
    h, w = (d // TILE for d in alpha.shape)
    whole = (alpha[:h * TILE, :w * TILE].reshape(h, TILE, w, TILE) == 255).all(axis=(1, 3))
    # Compared on fully valid cells: on collar cells spurgemap fills the invalid pixels (mirrored from
    # the valid ones) while the clients see them as they are in the raster.
    valid = (cls != 255) & whole
    assert valid.sum() >= 50 and 0.2 < (cls[valid] == 1).mean() < 0.8, "both classes, many cells"
    assert np.ptp(pct[valid]) >= 20, "probabilities must vary across the site"
    return {"root": root, "ortho": ortho, "bundle": bundle, "onnx": root / "spurge.onnx", "cls": cls,
            "valid": valid, "cell_transform": cell_transform}


def test_run_deepness_self_test_passes(deepness_python: str) -> None:
    proc, info = _run("--self-test")
    assert proc.returncode == 0 and info.get("ok"), f"stdout: {proc.stdout}\nstderr: {proc.stderr[-3000:]}"
    assert info["params"]["probability_threshold"] == 0.5 and info["params"]["overlap_px"] == 0
    assert info["counts"] == {"1": 384, "2": 384}


def test_self_test_model_is_tiny_segmentor() -> None:
    """The bytes embedded in run_deepness.py come from tiny_segmentor() (rebuild them with it if onnx changes)."""
    import base64
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_deepness", RUN_DEEPNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    embedded = onnx.load_from_string(base64.b64decode(module._SELF_TEST_B64))
    built = onnx.load_from_string(tiny_segmentor())
    assert onnx.printer.to_text(embedded.graph) == onnx.printer.to_text(built.graph)
    assert list(embedded.metadata_props) == list(built.metadata_props)


def test_deepness_maps_what_predict_maps(deepness_python: str, site: dict[str, Any]) -> None:
    out = site["root"] / "deepness.tif"
    proc, info = _run(str(site["onnx"]), str(site["ortho"]), str(out))
    assert proc.returncode == 0 and info.get("ok"), f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
    # Deepness took every default from the metadata, as "Load default parameters" does
    p = info["params"]
    assert (p["resolution_cm_per_px"], p["tile_size_px"], p["overlap_px"]) == (1.4, TILE, 0)
    assert p["probability_threshold"] == 0.5 and p["dilate_erode_size"] == 0 and p["bands"] == [1, 2, 3]
    assert info["model_class"] == "Segmentor" and info["output_shapes"] == [["batch", 2, TILE, TILE]]
    assert info["channel_names"] == [["no leafy spurge", "leafy spurge"]]

    cls, valid, t = site["cls"], site["valid"], site["cell_transform"]
    with rasterio.open(out) as ds, rasterio.open(site["ortho"]) as src:
        assert ds.transform.almost_equals(src.transform) and ds.shape == src.shape and ds.crs == src.crs
        dn = ds.read(1)
    h, w = cls.shape
    cells = dn[: h * TILE, : w * TILE].reshape(h, TILE, w, TILE).transpose(0, 2, 1, 3).reshape(h, w, -1)
    assert t.a == TILE * 0.014  # one _class.tif cell per tile
    # per cell: Deepness' majority class (1 absent, 2 present), and how pure the cell is
    present_share = (cells == 2).mean(axis=2)
    deepness_cls = (present_share > 0.5).astype(np.uint8)
    purity = np.maximum(present_share, (cells == 1).mean(axis=2))
    agree = (deepness_cls == cls)[valid].mean()
    print(f"Deepness vs _class.tif: {agree:.4f} of {valid.sum()} cells agree; cell purity min "
          f"{purity[valid].min():.4f}; present {(cls[valid] == 1).mean():.3f}")
    assert (dn[: h * TILE, : w * TILE] != 0).all(), "Deepness processed the whole layer"
    assert agree >= 0.99
    assert purity[valid].min() >= 0.99, "Deepness' tiles are spurgemap's cells (no shifted grid)"


def _geodeep_tiles(ortho: Path, tile: int) -> tuple[np.ndarray, int, int]:
    """Tiles as GeoDeep reads them: windows from the top-left, boundless (0), RGB without alpha, 0..1."""
    with rasterio.open(ortho) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # rasterio's own boundless windows
        rows, cols = -(-src.height // tile), -(-src.width // tile)
        indexes = [i for i, ci in zip(src.indexes, src.colorinterp, strict=True) if ci.name != "alpha"]
        tiles = [src.read(indexes=indexes, window=Window(c * tile, r * tile, tile, tile), boundless=True,
                          fill_value=0) for r in range(rows) for c in range(cols)]
    return np.stack(tiles).astype(np.float32) / 255.0, rows, cols


def test_geodeep_rule_decides_exactly_like_predict(site: dict[str, Any]) -> None:
    """GeoDeep: out[out < seg_thresh] = 0; argmax over channels. No QGIS needed."""
    sess = ort.InferenceSession(str(site["onnx"]), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    seg_thresh, tile = float(meta["seg_thresh"]), sess.get_inputs()[0].shape[-1]  # as GeoDeep reads them
    x, rows, cols = _geodeep_tiles(site["ortho"], tile)
    out = np.concatenate([sess.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)])
    decided = out.copy()
    decided[decided < seg_thresh] = 0
    mask = np.argmax(decided, axis=1)
    assert np.all(mask == mask[:, :1, :1]), "one class per tile"
    geodeep_cls = mask[:, 0, 0].reshape(rows, cols)
    cls, valid = site["cls"], site["valid"]
    agree = (geodeep_cls == cls)[valid].mean()

    # exactly p >= threshold, with p the bundle graph's probability of the same tiles (what predict runs)
    model, bmeta = model_from_bundle(site["bundle"])
    graph = tile_onnx(model, TILE, bmeta.input_size, list(bmeta.mean), list(bmeta.std))
    prob_sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    u8 = np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    p = np.concatenate([prob_sess.run(["prob"], {"tiles": u8[i:i + 8]})[0] for i in range(0, len(u8), 8)])
    clear = np.abs(p - THRESHOLD) > 1e-5  # two graphs, two float roundings: only a hair from t may differ
    exact = (mask[:, 0, 0] == 1) == (p >= THRESHOLD)
    print(f"GeoDeep rule vs _class.tif: {agree:.4f} of {valid.sum()} cells agree; vs p >= t: "
          f"{exact.mean():.4f} of {len(p)} tiles ({(~clear).sum()} within 1e-5 of t)")
    assert agree >= 0.99
    assert exact[clear].all() and clear.mean() >= 0.99
