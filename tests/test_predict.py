"""`spurgemap predict` on demo data: map files, accuracy against truth.tif, QGIS, resume, bad input."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import cli_ok
from PIL import Image
from rio_cogeo.cogeo import cog_validate
from test_qgis_styles import _run_check, qgis_python  # noqa: F401  (fixture)
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.model.backbones import create_backbone
from spurgemap.model.bundle import read_bundle
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.predict import PredictInputs, run_predict

runner = CliRunner()


_ok = cli_ok


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Demo sites; a lite0 probe trained on site01 (site02 selects), site03 held out for mapping."""
    root = tmp_path_factory.mktemp("pred")
    _ok("demo-data", root / "data", "--sites", 3, "--size", 2600, "--seed", 3)
    orthos = sorted((root / "data" / "sites").glob("*/ortho.tif"))
    _ok("tile", *orthos, "--plots", root / "data" / "plots.geojson", "--survey", root / "data" / "survey.csv",
        "--out", root / "tiles")
    _ok("train", root / "tiles", "--out", root / "run", "--val-sites", "site02", "--test-sites", "site03",
        "--epochs", 20)
    return {"root": root, "ortho": root / "data" / "sites" / "site03" / "ortho.tif",
            "truth": root / "data" / "sites" / "site03" / "truth.tif", "bundle": root / "run" / "model.spurge",
            "plots": root / "data" / "plots.geojson"}


@pytest.fixture(scope="module")
def mapped(trained) -> Path:
    out = trained["root"] / "maps"
    res = _ok("predict", trained["ortho"], "--model", trained["bundle"], "--out", out, "--plots", trained["plots"])
    assert "tiles/s" in res.stdout and "ha/h" in res.stdout and "leafy spurge on" in res.stdout
    return out


def _truth_share(truth: Path, cell: int) -> np.ndarray:
    with rasterio.open(truth) as ds:
        t = ds.read(1)
    h, w = t.shape
    ph, pw = -h % cell, -w % cell
    pad = np.pad((t == 1).astype(float), ((0, ph), (0, pw)))
    return pad.reshape((h + ph) // cell, cell, (w + pw) // cell, cell).mean(axis=(1, 3))


def test_map_is_accurate_on_a_held_out_site(trained, mapped):
    with rasterio.open(mapped / "ortho_class.tif") as ds:
        cls = ds.read(1)
    share = _truth_share(trained["truth"], 250)
    valid = cls != 255
    present, absent = valid & (share >= 0.01), valid & (share == 0)
    recall = (cls[present] == 1).mean()
    specificity = (cls[absent] == 0).mean()
    balanced = (recall + specificity) / 2
    print(f"held-out site map vs truth.tif: balanced accuracy {balanced:.3f} "
          f"(recall {recall:.3f} on {present.sum()} cells, specificity {specificity:.3f} on {absent.sum()})")
    assert present.sum() >= 5 and absent.sum() >= 5
    assert balanced >= 0.7  # chance is 0.5


def test_output_files_are_qgis_ready(trained, mapped):
    with rasterio.open(trained["ortho"]) as src:
        crs, transform, (w, h) = src.crs, src.transform, (src.width, src.height)
    for name in ("prob", "class"):
        path = mapped / f"ortho_{name}.tif"
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
        with rasterio.open(path) as ds:
            assert ds.crs == crs and ds.nodata == 255 and ds.dtypes[0] == "uint8"
            assert ds.transform == transform @ Affine.scale(250)
            assert (ds.width, ds.height) == (-(-w // 250), -(-h // 250))  # whole extent covered
            assert ds.overviews(1) or max(ds.width, ds.height) <= 256
            tags = ds.tags()
            assert tags["tile_size_px"] == "250" and len(tags["bundle_sha256"]) == 64
            assert len(tags["source_sha256"]) == 64 and tags["created"].endswith("Z")
            data = ds.read(1)
            assert set(np.unique(data)) <= (set(range(101)) | {255} if name == "prob" else {0, 1, 255})
    with rasterio.open(mapped / "ortho_class.tif") as ds:
        cmap = ds.colormap(1)
        assert cmap[1][:3] == (230, 0, 126) and cmap[255][3] == 0
    tiles = gpd.read_file(mapped / "ortho_tiles.geojson")
    assert tiles.crs.to_epsg() == 4326
    b = tiles.total_bounds
    assert -180 <= b[0] <= b[2] <= 180 and -90 <= b[1] <= b[3] <= 90 and 44 < b[1] < 49  # Montana
    assert all(g.exterior.is_ccw for g in tiles.geometry)  # RFC 7946 right-hand rule
    # each feature is the raster cell it names: probability (rounded to %) and class
    with rasterio.open(mapped / "ortho_prob.tif") as ds:
        pct = ds.read(1)
    with rasterio.open(mapped / "ortho_class.tif") as ds:
        cls = ds.read(1)
    rc = (tiles["row"].to_numpy(), tiles["col"].to_numpy())
    assert len(tiles) == int((pct != 255).sum()) and (pct[rc] != 255).all()
    assert (np.rint(tiles.probability.to_numpy() * 100) == pct[rc]).all()
    assert (tiles["class"].to_numpy() == np.where(cls[rc] == 1, "present", "absent")).all()
    text = (mapped / "ortho_tiles.geojson").read_text()
    assert '"crs"' not in text  # RFC 7946 has no crs member
    presence = gpd.read_file(mapped / "ortho_presence.gpkg", layer="presence")
    summary = json.loads((mapped / "ortho_summary.json").read_text())
    assert presence.crs == crs
    assert presence.area_ha.sum() == pytest.approx(summary["spurge_area_ha"], rel=0.15, abs=0.002)
    sec = summary["seconds"]
    assert summary["tiles_per_second"] == pytest.approx(summary["tiles_predicted"] / sec, rel=0.02)
    assert summary["hectares_per_hour"] == pytest.approx(summary["mapped_area_ha"] / (sec / 3600), rel=0.02)
    assert summary["present_cells"] == int((cls == 1).sum()) and summary["cells"] == len(tiles)
    # only site03's plots: the other sites' plots are not on this map (0 m² there would read as "absent")
    assert len(summary["plots"]) == 9 and {p["site_id"] for p in summary["plots"]} == {"site03"}
    assert summary["plots_not_on_map"] == 18 and {"spurge_area_m2", "spurge_share"} <= set(summary["plots"][0])
    assert "plot" in (mapped / "ortho_summary.csv").read_text()
    for name in ("prob", "class", "tiles", "presence"):
        assert (mapped / f"ortho_{name}.qml").read_text().lstrip().startswith("<!DOCTYPE qgis")
    img = Image.open(mapped / "ortho_preview.png")
    assert min(img.size) > 300


def test_maps_load_and_render_in_qgis(trained, mapped, qgis_python, tmp_path):  # noqa: F811
    with rasterio.open(mapped / "ortho_class.tif") as ds:
        cls, t, bounds = ds.read(1), ds.transform, ds.bounds
    share = _truth_share(trained["truth"], 250)
    tiles = gpd.read_file(mapped / "ortho_tiles.geojson")

    def centre(r: int, c: int) -> list[float]:
        x, y = t @ (c + 0.5, r + 0.5)
        return [x, y]

    # rendering is checked where the truth has dense spurge and the map says present (model errors
    # are the accuracy test's business), and where the truth has none and the map says absent
    present = [centre(r, c) for r, c in zip(*np.nonzero((share >= 0.05) & (cls == 1)), strict=True)][:10]
    absent = [centre(r, c) for r, c in zip(*np.nonzero((share == 0) & (cls == 0)), strict=True)][:10]
    nodata = [centre(r, c) for r, c in zip(*np.nonzero(cls == 255), strict=True)][:5]
    assert present and absent
    expect = {"epsg": 32612, "extent": list(bounds), "extent_4326": [float(v) for v in tiles.total_bounds],
              "present_points": present, "absent_points": absent, "nodata_points": nodata}
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    proc = _run_check(qgis_python, str(mapped), "ortho", str(tmp_path / "expect.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is True


@pytest.fixture(scope="module")
def tiny_bundle(trained) -> Path:
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    path = trained["root"] / "tiny.spurge"
    save_bundle(path, SpurgeClassifier(backbone, spec.num_features).eval(), {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 250, "gsd_m": 0.014,
        "threshold": 0.5})
    return path


def test_killed_run_resumes_byte_identical(trained, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    cfg = load_config(overrides={"predict.batch_size": 8, "predict.checkpoint_every": 1})
    ref = run_predict(cfg, PredictInputs(trained["ortho"], tiny_bundle, tmp_path / "ref"))
    from spurgemap.predict import stream

    real = stream.TileStream.batches
    seen = {"n": 0}

    def dying(self, size):
        for b in real(self, size):
            seen["n"] += 1
            if seen["n"] == 4:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(stream.TileStream, "batches", dying)
    with pytest.raises(KeyboardInterrupt):
        run_predict(cfg, PredictInputs(trained["ortho"], tiny_bundle, tmp_path / "run"))
    assert (tmp_path / "run" / ".work" / "state.npz").exists()
    assert not (tmp_path / "run" / "ortho_prob.tif").exists()
    monkeypatch.setattr(stream.TileStream, "batches", real)
    res = run_predict(cfg, PredictInputs(trained["ortho"], tiny_bundle, tmp_path / "run"))
    assert res.predicted == ref.predicted
    for name, path in ref.files.items():
        other = tmp_path / "run" / path.name
        if name.startswith("summary"):
            continue  # holds the run time
        assert other.read_bytes() == path.read_bytes(), name
    assert not (tmp_path / "run" / ".work").exists()


def test_stride_tta_and_aoi(trained, tiny_bundle, tmp_path):
    cfg = load_config(overrides={"predict.stride_px": 125, "predict.tta": True, "predict.backend": "torch"})
    with rasterio.open(trained["ortho"]) as src:
        crs, b = src.crs, src.bounds
    from shapely import box

    aoi = box(b.left + 10, b.bottom + 10, b.left + 25, b.bottom + 25)
    gpd.GeoDataFrame(geometry=[aoi], crs=crs).to_crs(4326).to_file(tmp_path / "aoi.geojson")  # another CRS
    res = run_predict(cfg, PredictInputs(trained["ortho"], tiny_bundle, tmp_path / "m", aoi=tmp_path / "aoi.geojson"))
    with rasterio.open(res.files["prob"]) as ds:
        data = ds.read(1)
        assert ds.res[0] == pytest.approx(125 * 0.014)
        valid = data != 255
        rows, cols = np.nonzero(valid)
        xs, ys = ds.transform @ (cols + 0.5, rows + 0.5)
    assert valid.sum() > 10 and "TTA" in res.backend
    assert (xs > b.left + 9).all() and (xs < b.left + 26).all() and (ys < b.bottom + 26).all()
    assert res.predicted < res.tiles / 3  # only tiles touching the AOI are read


def test_bad_inputs_are_refused(trained, tiny_bundle, tmp_path):
    base = ["predict", str(trained["ortho"]), "--out", str(tmp_path / "m")]
    junk = tmp_path / "junk.spurge"
    junk.write_bytes(b"\x00" * 100)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.spurge"
    evil.write_bytes(pickle.dumps(Payload()))
    for bundle in (junk, evil):
        res = runner.invoke(app, [*base, "--model", str(bundle)])
        assert res.exit_code == 2 and "not a valid spurgemap bundle" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()
    two = tmp_path / "two.tif"
    with rasterio.open(trained["ortho"]) as src:
        prof = src.profile | {"count": 2}
        data = src.read([1, 4])
    with rasterio.open(two, "w", **prof) as dst:
        dst.write(data)
    res = runner.invoke(app, ["predict", str(two), "--model", str(tiny_bundle), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "fewer than 3" in res.stderr
    from shapely import box

    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=4326).to_file(tmp_path / "far.geojson")
    res = runner.invoke(app, [*base, "--model", str(tiny_bundle), "--aoi", str(tmp_path / "far.geojson")])
    assert res.exit_code == 2 and "AOI lies outside" in res.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").glob("*.tif"))
    ok = runner.invoke(app, [*base, "--model", str(tiny_bundle)])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(app, [*base, "--model", str(tiny_bundle)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(trained["ortho"]) as src:
        prof = src.profile | {"transform": src.transform @ Affine.scale(4)}
        with rasterio.open(coarse, "w", **prof) as dst:
            dst.write(src.read())
    with pytest.raises(InputError, match="too far from the model"):
        run_predict(load_config(), PredictInputs(coarse, tiny_bundle, tmp_path / "c"))


def test_export_for_deepness(trained, tiny_bundle, tmp_path):
    import onnx

    res = _ok("export", tiny_bundle, "--onnx", tmp_path / "m.onnx")
    assert "Segmentor" in res.stdout
    meta = {p.key: json.loads(p.value) for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert meta["tile_size"] == meta["tiles_size"] == 250 and meta["resolution"] == pytest.approx(1.4)


def test_bundle_graph_matches_torch_and_cpu_path_needs_no_torch(trained, tmp_path):
    import subprocess
    import sys

    from spurgemap.predict.infer import make_predictor

    bundle = read_bundle(trained["bundle"])
    cfg = load_config().predict
    graph, label = make_predictor(bundle, cfg, 250)
    assert "bundle graph" in label
    cfg.backend = "torch"
    torch_path, _ = make_predictor(bundle, cfg, 250)
    x = np.random.default_rng(0).integers(0, 255, (6, 3, 250, 250), dtype=np.uint8)
    np.testing.assert_allclose(graph(x), torch_path(x), atol=1e-4)
    code = ("import sys; from pathlib import Path; from spurgemap.config import load_config; "
            "from spurgemap.predict import PredictInputs, run_predict; "
            f"run_predict(load_config(), PredictInputs(Path({str(trained['ortho'])!r}), "
            f"Path({str(trained['bundle'])!r}), Path({str(tmp_path / 'm')!r}))); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_openvino_is_the_cpu_default_and_agrees_with_onnxruntime_on_every_cell(trained, mapped, tmp_path,
                                                                            monkeypatch):
    from spurgemap.predict import infer

    ort = run_predict(load_config(overrides={"predict.backend": "onnx"}),
                      PredictInputs(trained["ortho"], trained["bundle"], tmp_path / "ort"))
    assert ort.backend.startswith("onnxruntime fp32")
    assert json.loads((mapped / "ortho_summary.json").read_text())["backend"].startswith(
        "OpenVINO fp32 (CPU, bundle graph)")
    for name in ("prob", "class"):
        with rasterio.open(mapped / f"ortho_{name}.tif") as a, rasterio.open(ort.files[name]) as b:
            ov_cells, ort_cells = a.read(1).astype(int), b.read(1).astype(int)
        assert (ov_cells == 255).sum() == (ort_cells == 255).sum() and (ov_cells != 255).sum() > 50
        if name == "prob":  # percent, rounded: fp32 on both engines differs by rounding at most
            assert np.abs(ov_cells - ort_cells).max() <= 1 and np.ptp(ov_cells[ov_cells != 255]) >= 20
        else:
            assert (ov_cells == ort_cells).mean() >= 0.99
    from spurgemap.core import cpu_graphs

    for module in (infer, cpu_graphs):  # a machine without OpenVINO falls back to onnxruntime
        monkeypatch.setattr(module, "has_openvino", lambda: False)
    bundle = read_bundle(trained["bundle"])
    assert infer.make_predictor(bundle, load_config().predict, 250)[1].startswith("onnxruntime")
    with pytest.raises(InputError, match="openvino package is not installed"):
        infer.make_predictor(bundle, load_config(overrides={"predict.backend": "openvino"}).predict, 250)


def test_other_resolution_is_resampled_to_the_training_ground_size(trained, tiny_bundle, tmp_path):
    coarser = tmp_path / "coarser.tif"
    with rasterio.open(trained["ortho"]) as src:
        prof = src.profile | {"transform": src.transform @ Affine.scale(1.4)}  # 1.96 cm/px
        with rasterio.open(coarser, "w", **prof) as dst:
            dst.write(src.read())
    res = run_predict(load_config(), PredictInputs(coarser, tiny_bundle, tmp_path / "m"))
    with rasterio.open(res.files["prob"]) as ds:
        assert ds.tags()["tile_size_px"] == str(round(250 / 1.4))  # same ground as a training tile
        assert ds.res[0] == pytest.approx(round(250 / 1.4) * 0.014 * 1.4)
    assert "exported at start-up" in res.backend


def test_gdal_cache_holds_the_block_rows_one_strip_touches(trained, tmp_path, monkeypatch, caplog):
    """A raster wider than tile.gdal_cache_mb can hold would decode every block again for each strip."""
    import logging
    import math

    from spurgemap.geo.raster import open_ortho, strip_cache_mb
    from spurgemap.predict import stage

    wide = replace(open_ortho(trained["ortho"], 250), width=32000, count=4, dtype="uint8", block_shape=(512, 512))
    assert strip_cache_mb(wide, 250) == math.ceil(2 * 512 * 32256 * 4 / 2**20) + 16  # 142 MB
    assert strip_cache_mb(replace(wide, block_shape=(256, 256)), 250) == math.ceil(2 * 256 * 32000 * 4 / 2**20) + 16
    seen: list[int] = []
    real = stage.TileStream

    def spy(*args, **kwargs):
        seen.append(args[6])
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "TileStream", spy)
    with rasterio.open(trained["ortho"]) as ds:
        bh, bw = ds.block_shapes[0]
        want = math.ceil((math.ceil(250 / bh) + 1) * bh * math.ceil(ds.width / bw) * bw * ds.count / 2**20) + 16
    assert want > 16
    with caplog.at_level(logging.INFO, logger="spurgemap.predict.stage"):
        run_predict(load_config(overrides={"tile.gdal_cache_mb": 16}),
                    PredictInputs(trained["ortho"], trained["bundle"], tmp_path / "small"))
    assert seen == [want] and f"GDAL block cache {want} MB" in caplog.text
    run_predict(load_config(), PredictInputs(trained["ortho"], trained["bundle"], tmp_path / "default"))
    assert seen == [want, 256]  # a cache that already holds them is left as configured
