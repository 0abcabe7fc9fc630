"""QGIS styles of the predict maps: the .qml text itself, and the maps opened in real (headless) QGIS.

The QGIS half runs tests/qgis/check_maps.py under the system python, where Debian's python3-qgis
lives. Without QGIS those tests skip visibly on a workstation, and fail under CI (CI=true), whose
.ci/run installs QGIS.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from spurgemap.predict.styles import (
    CLASS_LABELS,
    NODATA,
    PRESENCE_LEGEND,
    PRESENCE_RGBA,
    PROB_LEGEND,
    TILES_LEGEND,
    class_raster_qml,
    presence_vector_qml,
    prob_raster_qml,
    tiles_vector_qml,
    write_styles,
)

QGIS_PYTHON = "/usr/bin/python3"
CHECK_MAPS = Path(__file__).parent / "qgis" / "check_maps.py"
MISSING = "QGIS (python3-qgis) not installed: apt-get install -y qgis python3-qgis"


def _hex(rgba: tuple[int, int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


# ------------------------------------------------------------------------------------ pure QML text


def test_every_style_is_wellformed_qgis_xml() -> None:
    for text in (prob_raster_qml(50), class_raster_qml(), tiles_vector_qml(0.5), presence_vector_qml()):
        assert text.startswith("<!DOCTYPE qgis")
        root = ET.fromstring(text)
        assert root.tag == "qgis"
        assert root.get("version", "").startswith("3.")


def test_prob_style_is_a_transparent_to_magenta_ramp_with_nodata_hidden() -> None:
    root = ET.fromstring(prob_raster_qml(37))
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandpseudocolor"
    assert renderer.get("band") == "1"
    assert renderer.get("nodataColor") == ""  # empty = nodata not drawn
    nodata = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert nodata is not None
    assert (nodata.get("min"), nodata.get("max"), nodata.get("percentTransparent")) == ("255", "255", "100")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None
    assert shader.get("colorRampType") == "INTERPOLATED"
    assert shader.get("clip") == "1"  # 101..254 are not drawn as 100 %
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0", "100")
    items = shader.findall("item")
    assert [int(i.get("value", "-1")) for i in items] == [0, 37, 100]
    assert items[0].get("alpha") == "0"
    assert (items[-1].get("color"), items[-1].get("alpha")) == (_hex(PRESENCE_RGBA), "255")
    legend = shader.find("rampLegendSettings")
    assert legend is not None and legend.get("useContinuousLegend") == "1"
    texts = [i.get("label", "") for i in items] + [legend.get("minimumLabel", ""), legend.get("maximumLabel", "")]
    assert any(TILES_LEGEND in t for t in texts)
    assert PROB_LEGEND.startswith(TILES_LEGEND)


def test_class_style_labels_the_two_classes_and_hides_nodata() -> None:
    renderer = ET.fromstring(class_raster_qml()).find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    entries = {int(e.get("value", "-1")): e for e in renderer.findall("colorPalette/paletteEntry")}
    assert sorted(entries) == [0, 1]  # 255 has no entry: not drawn, not in the legend
    assert entries[0].get("label") == CLASS_LABELS[0] == "no leafy spurge"
    assert entries[1].get("label") == CLASS_LABELS[1] == "leafy spurge"
    assert (entries[1].get("color"), entries[1].get("alpha")) == (_hex(PRESENCE_RGBA), "255")
    assert int(entries[0].get("alpha", "255")) < 128  # absent is see-through
    nodata = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert nodata is not None and nodata.get("min") == str(NODATA) and nodata.get("percentTransparent") == "100"


def _qgis_range(ranges: list[tuple[float, float, str]], value: float) -> str | None:
    """QgsGraduatedSymbolRenderer::rangeForValue: the first range with lower <= value <= upper."""
    return next((label for lower, upper, label in ranges if lower <= value <= upper), None)


@pytest.mark.parametrize("threshold", [0.5, 0.37, 0.9])
def test_tiles_style_grades_probability_and_splits_at_the_threshold(threshold: float) -> None:
    root = ET.fromstring(tiles_vector_qml(threshold))
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert (renderer.get("type"), renderer.get("attr")) == ("graduatedSymbol", "probability")
    ranges = [
        (float(r.get("lower", "nan")), float(r.get("upper", "nan")), r.get("label", "")) for r in renderer.iter("range")
    ]
    assert ranges[0][0] == 0.0 and ranges[-1][1] == 1.0
    assert all(TILES_LEGEND in label for _, _, label in ranges)
    symbols = {s.get("name") for s in renderer.iter("symbol")}
    assert symbols == {r.get("symbol") for r in renderer.iter("range")}
    for value in (0.0, 0.01, threshold / 2, math.nextafter(threshold, 0.0), threshold, 0.999, 1.0):
        label = _qgis_range(ranges, value)
        assert label is not None, f"{value} falls between classes"
        assert label.startswith("present" if value >= threshold else "absent"), (value, label)


def test_presence_style_is_one_labelled_magenta_rule() -> None:
    renderer = ET.fromstring(presence_vector_qml()).find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "RuleRenderer"
    rules = list(renderer.iter("rule"))
    assert len(rules) == 1 and rules[0].get("label") == PRESENCE_LEGEND and rules[0].get("filter") is None
    props = {p.get("k", ""): p.get("v", "") for p in renderer.iter("prop")}
    assert props["color"].split(",")[:3] == [str(v) for v in PRESENCE_RGBA[:3]]
    assert props["style"] == "solid" and props["outline_style"] == "solid"
    options = {o.get("name", ""): o.get("value", "") for o in renderer.iter("Option") if o.get("name")}
    assert {k: options[k] for k in props} == props  # both property forms say the same


@pytest.mark.parametrize("bad", [0, 100, -5])
def test_prob_style_rejects_thresholds_outside_1_99(bad: int) -> None:
    with pytest.raises(ValueError):
        prob_raster_qml(bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5])
def test_tiles_style_rejects_thresholds_outside_0_1(bad: float) -> None:
    with pytest.raises(ValueError):
        tiles_vector_qml(bad)


def test_write_styles_puts_one_qml_beside_each_output(tmp_path: Path) -> None:
    paths = write_styles(tmp_path / "maps", "ortho_a", 0.42)
    assert [p.name for p in paths] == [f"ortho_a_{s}.qml" for s in ("prob", "class", "tiles", "presence",
                                                                                 "confidence")]
    assert all(p.parent == tmp_path / "maps" and p.stat().st_size > 0 for p in paths)
    ramp = ET.fromstring(paths[0].read_text()).findall("pipe/rasterrenderer/rastershader/colorrampshader/item")
    assert [i.get("value") for i in ramp] == ["0", "42", "100"]


# ------------------------------------------------------------------------------------- real QGIS


def _qgis_env() -> dict[str, str]:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


@pytest.fixture(scope="module")
def qgis_python() -> str:
    """The system python with PyQGIS; skip (workstation) or fail (CI) when it is missing."""
    ok = False
    if Path(QGIS_PYTHON).exists():
        probe = subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"], env=_qgis_env(), capture_output=True, timeout=120
        )
        ok = probe.returncode == 0
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but QGIS is missing ({QGIS_PYTHON} cannot import qgis.core); {MISSING}")
        pytest.skip(MISSING)
    return QGIS_PYTHON


def _run_check(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(CHECK_MAPS), *args], env=_qgis_env(), capture_output=True, text=True, timeout=600
    )


def test_check_maps_self_test_passes_in_qgis(qgis_python: str) -> None:
    proc = _run_check(qgis_python, "--self-test")
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["renderers"] == {
        "prob": "singlebandpseudocolor",
        "class": "paletted",
        "tiles": "graduatedSymbol",
        "presence": "RuleRenderer",
    }
    assert len(result["self_test"]["caught"]) == 3  # broken maps are rejected too
    assert any("confidence: renderer" in c for c in result["self_test"]["caught"])


def _venv_sample(maps_dir: Path, name: str, threshold: float) -> dict[str, object]:
    """Sample maps written the way predict writes them (rasterio + geopandas), with their EXPECT."""
    import geopandas as gpd
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    maps_dir.mkdir(parents=True)
    x0, y0, cell, crs = 600_000.0, 5_200_000.0, 8.0, "EPSG:32612"
    rng = np.random.default_rng(7)
    prob = rng.integers(0, 101, size=(12, 16)).astype(np.uint8)
    prob[:2, -3:] = NODATA
    pct = round(threshold * 100)
    cls = np.where(prob == NODATA, NODATA, prob >= pct).astype(np.uint8)
    profile = {
        "driver": "GTiff",
        "height": prob.shape[0],
        "width": prob.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": Affine(cell, 0.0, x0, 0.0, -cell, y0),
        "nodata": NODATA,
    }
    with rasterio.open(maps_dir / f"{name}_prob.tif", "w", **profile) as dst:
        dst.write(prob, 1)
        dst.set_band_description(1, PROB_LEGEND)
    with rasterio.open(maps_dir / f"{name}_class.tif", "w", **profile) as dst:
        dst.write(cls, 1)
        dst.write_colormap(1, {0: (200, 230, 200, 255), 1: (255, 0, 255, 255), NODATA: (0, 0, 0, 0)})
    records = []
    for (r, c), p in np.ndenumerate(prob):
        if p == NODATA:
            continue
        xa, ya = x0 + c * cell, y0 - r * cell
        records.append(
            {
                "probability": p / 100,
                "class": "present" if p >= pct else "absent",
                "row": r,
                "col": c,
                "geometry": box(xa, ya - cell, xa + cell, ya),
            }
        )
    tiles = gpd.GeoDataFrame(records, crs=crs)
    tiles.to_crs(4326).to_file(maps_dir / f"{name}_tiles.geojson", driver="GeoJSON")
    presence = tiles[tiles["class"] == "present"].dissolve()[["geometry"]]
    presence["area_m2"] = presence.area
    presence["area_ha"] = presence["area_m2"] / 10_000
    presence.to_file(maps_dir / f"{name}_presence.gpkg", layer="presence", driver="GPKG")
    write_styles(maps_dir, name, threshold)

    def centre(r: int, c: int) -> list[float]:
        return [x0 + (c + 0.5) * cell, y0 - (r + 0.5) * cell]

    extent = [x0, y0 - prob.shape[0] * cell, x0 + prob.shape[1] * cell, y0]
    return {
        "epsg": 32612,
        "extent": extent,
        "extent_4326": list(transform_bounds(crs, "EPSG:4326", *extent, densify_pts=21)),
        "present_points": [centre(r, c) for (r, c), v in np.ndenumerate(cls) if v == 1],
        "absent_points": [centre(r, c) for (r, c), v in np.ndenumerate(cls) if v == 0],
        "nodata_points": [centre(r, c) for (r, c), v in np.ndenumerate(cls) if v == NODATA],
    }


def test_check_maps_accepts_maps_written_with_rasterio_and_geopandas(qgis_python: str, tmp_path: Path) -> None:
    maps, name = tmp_path / "maps", "plot_7"
    expect = _venv_sample(maps, name, threshold=0.55)
    (tmp_path / "expect.json").write_text(json.dumps(expect))
    proc = _run_check(qgis_python, str(maps), name, str(tmp_path / "expect.json"))
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is True

    # A map whose .qml went missing opens unstyled in QGIS: reported, exit 1.
    (maps / f"{name}_class.qml").unlink()
    proc = _run_check(qgis_python, str(maps), name, str(tmp_path / "expect.json"))
    assert proc.returncode == 1
    assert "missing style" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]
