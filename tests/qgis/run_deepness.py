#!/usr/bin/python3
"""Run the real Deepness QGIS plugin (headless) on an orthomosaic with an exported spurgemap model.

Why: `spurgemap export` writes a model for Deepness. Reading its metadata back in the venv cannot tell
whether the plugin itself loads it, fills its widgets with the intended defaults and maps spurge where
`spurgemap predict` does. This script asks the plugin, the way a GUI user drives it: load the model
(what "Browse..." does), press "Load default parameters", process the entire layer.

Runs under the *system* python (PyQGIS is a Debian package), not the project venv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/run_deepness.py MODEL.onnx ORTHO.tif OUT.tif
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/run_deepness.py --self-test
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/run_deepness.py --check   # prerequisites only

OUT.tif gets Deepness' result raster, georeferenced (uint8, 0 = outside the processed area,
1 + winning channel index elsewhere: 1 = "no leafy spurge", 2 = "leafy spurge"). Prints one JSON line
(the parameters Deepness used, the class counts, its message; ``"ok": true/false``); exit 0 on success.

``--self-test`` runs the plugin on a small synthetic raster with a tiny embedded ONNX model (built with
`onnx.helper`, see _SELF_TEST_B64) whose channel 1 is each tile's mean red, and checks every pixel.

Where things come from:

* the plugin: DEEPNESS_PLUGIN_DIR, else ``<repo>/../shared/clients/deepness`` (source, Apache-2.0,
  never copied into this repository);
* its two pip packages (Debian ships neither): DEEPNESS_DEPS, else
  ``${XDG_CACHE_HOME:-~/.cache}/spurgemap/deepness-py311``, filled by .ci/run with
  ``/usr/bin/python3 -m pip install --target DIR --no-deps onnxruntime==1.17.0
  opencv-python-headless==4.9.0.80`` (the versions the plugin pins; Debian's numpy 1.24 stays).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["IS_DEBUG"] = "1"  # Deepness then raises instead of opening message boxes nobody can close

REPO = Path(__file__).resolve().parents[2]


def plugin_dir() -> Path:
    return Path(os.environ.get("DEEPNESS_PLUGIN_DIR") or REPO.parent / "shared" / "clients" / "deepness")


def deps_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("DEEPNESS_DEPS") or cache / "spurgemap" / "deepness-py311")


def make_importable() -> None:
    """`import deepness` from the plugin folder (any name, via a symlink), and its pip packages."""
    src = plugin_dir()
    if not (src / "processing" / "map_processor" / "map_processor_segmentation.py").is_file():
        raise SystemExit(f"Deepness plugin source not found at {src} (set DEEPNESS_PLUGIN_DIR)")
    if deps_dir().is_dir():
        sys.path.insert(0, str(deps_dir()))
    if src.name == "deepness":
        sys.path.insert(0, str(src.parent))
    else:
        link_root = Path(tempfile.mkdtemp(prefix="deepness-link-"))
        (link_root / "deepness").symlink_to(src, target_is_directory=True)
        sys.path.insert(0, str(link_root))


def check() -> dict[str, Any]:
    """Whether everything the plugin needs imports: PyQGIS, its two pip packages, its processing code."""
    import cv2
    import deepness.processing.map_processor.map_processor_segmentation  # noqa: F401
    import onnxruntime
    from qgis.core import Qgis

    return {"ok": True, "plugin": str(plugin_dir()), "deps": str(deps_dir()), "qgis": Qgis.QGIS_VERSION,
            "onnxruntime": onnxruntime.__version__, "cv2": cv2.__version__}


def run(model: Path, ortho: Path, out: Path) -> dict[str, Any]:
    from unittest import mock

    from osgeo import gdal
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], True)  # GUI on: the dock widget is a QWidget (offscreen platform)
    app.initQgis()
    try:
        import cv2
        import onnxruntime
        from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
        from deepness.deepness_dockwidget import DeepnessDockWidget
        from deepness.processing.map_processor.map_processing_result import MapProcessingResultSuccess
        from deepness.processing.map_processor.map_processor_segmentation import MapProcessorSegmentation

        layer = QgsRasterLayer(str(ortho), ortho.stem)
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot open {ortho}")
        QgsProject.instance().addMapLayer(layer)

        dock = DeepnessDockWidget(iface=mock.MagicMock())
        dock.mMapLayerComboBox_inputLayer.setLayer(layer)
        dock.comboBox_processedAreaSelection.setCurrentText(ProcessedAreaType.ENTIRE_LAYER.value)
        dock.lineEdit_modelPath.setText(str(model))
        dock._load_model_and_display_info()  # what "Browse..." does after picking the file
        dock.pushButton_loadDefaultModelParameters.click()
        params = dock.get_inference_parameters()

        processor = MapProcessorSegmentation(rlayer=layer, vlayer_mask=None, map_canvas=mock.MagicMock(),
                                             params=params)
        processor.run()  # QgsTask.run in this thread: no task manager, no event loop
        result = processor._processing_result
        if not isinstance(result, MapProcessingResultSuccess):
            raise RuntimeError(f"Deepness failed: {result.message}: {getattr(result, 'exception', None)}")
        img = processor.get_result_img()
        ext, upp = processor.base_extent, processor.rlayer_units_per_pixel

        driver = gdal.GetDriverByName("GTiff")
        ds = driver.Create(str(out), img.shape[2], img.shape[1], 1, gdal.GDT_Byte, ["COMPRESS=DEFLATE"])
        ds.SetGeoTransform((ext.xMinimum(), upp, 0.0, ext.yMaximum(), 0.0, -upp))
        ds.SetProjection(layer.crs().toWkt())
        ds.GetRasterBand(1).WriteArray(img[0])
        ds.GetRasterBand(1).SetDescription("Deepness: 0 outside, 1 + winning channel")
        ds = None

        values, counts = (a.tolist() for a in __import__("numpy").unique(img, return_counts=True))
        model_obj, mapping = params.model, params.input_channels_mapping
        return {
            "ok": True,
            "versions": {"qgis": __import__("qgis.core").core.Qgis.QGIS_VERSION,
                         "onnxruntime": onnxruntime.__version__, "cv2": cv2.__version__},
            "model_class": type(model_obj).__name__,
            "output_shapes": [list(s) for s in model_obj.get_output_shapes()],
            "channel_names": model_obj.outputs_names,
            "params": {
                "resolution_cm_per_px": params.resolution_cm_per_px,
                "tile_size_px": params.tile_size_px,
                "batch_size": params.batch_size,
                "overlap_px": params.processing_overlap_px,
                "probability_threshold": params.pixel_classification__probability_threshold,
                "dilate_erode_size": params.postprocessing_dilate_erode_size,
                "processed_area": params.processed_area_type.value,
                "bands": [mapping.get_image_channel_for_model_input(i).get_band_number()
                          for i in range(mapping.get_number_of_model_inputs())],
            },
            "shape": list(img.shape),
            "geotransform": [ext.xMinimum(), upp, 0.0, ext.yMaximum(), 0.0, -upp],
            "counts": dict(zip([str(v) for v in values], counts, strict=True)),
            "message": processor._processing_result.message,
        }
    finally:
        QgsProject.instance().removeAllMapLayers()
        app.exitQgis()


# A tiny Segmentor built in the project venv by tests/test_deepness.py::tiny_segmentor (onnx.helper,
# opset 17), 8 px tiles at 50 cm/px:
# input (batch, 3, 8, 8) -> output (batch, 2, 8, 8): channel 0 = 0.5, channel 1 = the tile's mean red.
# Metadata: model_type Segmentor, class_names {"0": "off", "1": "on"}, resolution 50, tile_size 8,
# tiles_overlap 0, seg_thresh 0.5, seg_small_segment 0, standardization 0/1.
def _self_test_model() -> bytes:
    """The tiny model's protobuf bytes, embedded (the system python has no `onnx` package)."""
    return base64.b64decode(_SELF_TEST_B64)


_SELF_TEST_B64 = (
    "CAgSD3NwdXJnZW1hcC10ZXN0czqFBAoqEgZzdGFydHMiCENvbnN0YW50KhYKBXZhbHVlKgoIARAHOgEAQgFzoAEECigSBGVuZHMi"
    "CENvbnN0YW50KhYKBXZhbHVlKgoIARAHOgEBQgFloAEECigSBGF4ZXMiCENvbnN0YW50KhYKBXZhbHVlKgoIARAHOgEBQgFhoAEE"
    "CikSBHplcm8iCENvbnN0YW50KhcKBXZhbHVlKgsQASIEAAAAAEIBeqABBAopEgRoYWxmIghDb25zdGFudCoXCgV2YWx1ZSoLEAEi"
    "BAAAAD9CAWigAQQKJwoFaW5wdXQKBnN0YXJ0cwoEZW5kcwoEYXhlcxIDcmVkIgVTbGljZQo3CgNyZWQSBG1lYW4iClJlZHVjZU1l"
    "YW4qDQoEYXhlc0ACQAOgAQcqDwoIa2VlcGRpbXMYAaABAgoXCgNyZWQKBHplcm8SBXplcm9zIgNNdWwKFgoFemVyb3MKBGhhbGYS"
    "AmMwIgNBZGQKFgoFemVyb3MKBG1lYW4SAmMxIgNBZGQKJQoCYzAKAmMxEgZvdXRwdXQiBkNvbmNhdCoLCgRheGlzGAGgAQISDnRp"
    "bnlfc2VnbWVudG9yWiQKBWlucHV0EhsKGQgBEhUKBxIFYmF0Y2gKAggDCgIICAoCCAhiJQoGb3V0cHV0EhsKGQgBEhUKBxIFYmF0"
    "Y2gKAggCCgIICAoCCAhCBAoAEBFyGQoKbW9kZWxfdHlwZRILIlNlZ21lbnRvciJyJgoLY2xhc3NfbmFtZXMSF3siMCI6ICJvZmYi"
    "LCAiMSI6ICJvbiJ9chAKCnJlc29sdXRpb24SAjUwcg4KCXRpbGVfc2l6ZRIBOHISCg10aWxlc19vdmVybGFwEgEwchEKCnNlZ190"
    "aHJlc2gSAzAuNXIWChFzZWdfc21hbGxfc2VnbWVudBIBMHInChRzdGFuZGFyZGl6YXRpb25fbWVhbhIPWzAuMCwgMC4wLCAwLjBd"
    "ciYKE3N0YW5kYXJkaXphdGlvbl9zdGQSD1sxLjAsIDEuMCwgMS4wXQ=="
)


def self_test(keep: Path | None) -> dict[str, Any]:
    import numpy as np
    from osgeo import gdal, osr

    if keep is None:
        with tempfile.TemporaryDirectory(prefix="deepness-selftest-") as tmp:
            return self_test(Path(tmp))
    tmp = keep
    tmp.mkdir(parents=True, exist_ok=True)
    model = tmp / "tiny.onnx"
    model.write_bytes(_self_test_model())
    rows, cols, tile = 3, 4, 8
    red = (np.arange(rows * cols).reshape(rows, cols) * 23 % 256).astype(np.uint8)  # 0..253, both sides of 128
    rgb = np.zeros((3, rows * tile, cols * tile), np.uint8)
    rgb[0] = np.kron(red, np.ones((tile, tile), np.uint8))
    rgb[1] = 90
    ortho = tmp / "synthetic.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(ortho), cols * tile, rows * tile, 3, gdal.GDT_Byte)
    x0, y0 = 500_000.0, 5_200_000.0
    ds.SetGeoTransform((x0, 0.5, 0.0, y0, 0.0, -0.5))  # not 1 m: Deepness special-cases a ~1.0 grid
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32612)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rgb[b])
    ds = None
    out = tmp / "deepness.tif"
    info = run(model, ortho, out)
    gdal.AllRegister()  # QgsApplication.exitQgis deregistered the drivers
    got = gdal.Open(str(out)).ReadAsArray()
    expected = np.kron(np.where(red / 255.0 > 0.5, 2, 1), np.ones((tile, tile), int))
    problems = []
    if got.shape != expected.shape or not np.array_equal(got, expected):
        problems.append(f"map differs from the expected tiles: got\n{got[::tile, ::tile]}\nexpected\n"
                        f"{expected[::tile, ::tile]}")
    if [round(v, 6) for v in info["geotransform"]] != [x0, 0.5, 0.0, y0, 0.0, -0.5]:
        problems.append(f"georeference {info['geotransform']} is not the raster's")
    p = info["params"]
    if (p["resolution_cm_per_px"], p["tile_size_px"], p["overlap_px"], p["probability_threshold"]) != (50, 8, 0, 0.5):
        problems.append(f"Deepness did not take the metadata defaults: {p}")
    info.update({"ok": not problems, "self_test": {"problems": problems, "folder": str(tmp)}})
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", type=Path)
    ap.add_argument("ortho", nargs="?", type=Path)
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--check", action="store_true", help="only check that the plugin and its packages import")
    ap.add_argument("--keep", type=Path, help="self-test: write its files here")
    args = ap.parse_args()
    try:
        make_importable()
        if args.check:
            info = check()
        elif args.self_test:
            info = self_test(args.keep)
        else:
            if not (args.model and args.ortho and args.out):
                ap.error("MODEL ORTHO OUT are required (or --self-test)")
            info = run(args.model, args.ortho, args.out)
    except Exception as exc:  # one JSON line either way: the test shows it
        info = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    print(json.dumps(info, default=str))
    return 0 if info.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
