#!/usr/bin/python3
"""Open the maps of ``spurgemap predict`` in real QGIS (headless) and check they load and look right.

Why: the maps are for people who open them in QGIS. Unit tests on the files cannot tell whether QGIS
picks up the ``.qml`` default styles, reads the CRS and extent we meant, or draws spurge in magenta
and nodata transparent. This script asks QGIS itself.

Runs under the *system* python (PyQGIS is a Debian package, not a pip one), not the project venv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/check_maps.py MAPS_DIR NAME EXPECT.json
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/check_maps.py --self-test [--keep DIR]

EXPECT.json (coordinates of ``present_points`` etc. in the rasters' native CRS, cell centres are best):

    {"epsg": 32612,
     "extent": [xmin, ymin, xmax, ymax],            # native CRS, of _prob.tif and _class.tif
     "extent_4326": [lon_min, lat_min, lon_max, lat_max],   # the tiles GeoJSON must lie inside
     "present_points": [[x, y], ...],               # must be drawn in the presence colour
     "absent_points": [[x, y], ...],                # must not be
     "nodata_points": [[x, y], ...]}                # optional: must be fully transparent

Prints one JSON line (``"ok": true/false``); exit 0 when every check passes, 1 otherwise.
``--self-test`` builds small sample maps with GDAL/OGR (the system python's ``osgeo``) plus the real
``spurgemap/predict/styles.py``, checks them, and also checks that broken maps are caught.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
STYLES_PY = REPO / "spurgemap" / "predict" / "styles.py"

Point = tuple[float, float]
RGBA = tuple[int, int, int, int]

# How close a rendered pixel must be to a style colour (0..255 channels). Rendering is exact for
# opaque colours; semi-transparent ones lose a little precision through premultiplied alpha.
RGB_TOL = 12
ALPHA_TOL = 8


def load_styles() -> ModuleType:
    """Import styles.py by path: the spurgemap package's __init__ needs the venv, this python lacks it."""
    spec = importlib.util.spec_from_file_location("spurgemap_styles", STYLES_PY)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {STYLES_PY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Failed(Exception):
    """A check failed; the message says which and why."""


class Checker:
    """Collects failures so one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, message: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(message)
        return ok


# --------------------------------------------------------------------------------------------- QGIS


_APP: Any = None


def qgis_app() -> Any:
    """Start QGIS once, headless (QT_QPA_PLATFORM=offscreen, no GUI)."""
    global _APP
    if _APP is None:
        from qgis.core import QgsApplication

        _APP = QgsApplication([], False)
        _APP.initQgis()
    return _APP


def _rgba(color: Any) -> RGBA:
    return (color.red(), color.green(), color.blue(), color.alpha())


def _close(got: RGBA, want: RGBA) -> bool:
    if abs(got[3] - want[3]) > ALPHA_TOL:
        return False
    if want[3] == 0:
        return True
    return all(abs(g - w) <= RGB_TOL for g, w in zip(got[:3], want[:3], strict=True))


def render(layer: Any, extent: list[float], cell: float, max_side: int = 4096) -> tuple[Any, Any]:
    """Draw one layer over a transparent background; returns (QImage, QgsMapToPixel).

    The image is sized so one map cell (``cell`` map units, one tile) spans about 16 pixels, capped
    at ``max_side``, so a cell centre does not land on a polygon outline.
    """
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRectangle
    from qgis.PyQt.QtCore import QSize, Qt
    from qgis.PyQt.QtGui import QColor

    xmin, ymin, xmax, ymax = extent
    width, height = xmax - xmin, ymax - ymin
    scale = min(16.0 / cell, max_side / max(width, height))
    size = QSize(max(1, round(width * scale)), max(1, round(height * scale)))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(size)
    settings.setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    settings.setBackgroundColor(QColor(Qt.transparent))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    errors = [f"{e.layerID}: {e.message}" for e in job.errors()]
    if errors:
        raise Failed(f"rendering {layer.name()} failed: {errors}")
    return job.renderedImage(), settings.mapToPixel()


def pixel_at(image: Any, m2p: Any, point: Point) -> RGBA:
    from qgis.core import QgsPointXY

    p = m2p.transform(QgsPointXY(point[0], point[1]))
    x, y = math.floor(p.x()), math.floor(p.y())
    if not (0 <= x < image.width() and 0 <= y < image.height()):
        raise Failed(f"point {point} falls outside the rendered extent (pixel {x},{y})")
    return _rgba(image.pixelColor(x, y))


def _extent(rect: Any) -> list[float]:
    return [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]


def _inside(inner: list[float], outer: list[float], tol: float) -> bool:
    return (
        inner[0] >= outer[0] - tol
        and inner[1] >= outer[1] - tol
        and inner[2] <= outer[2] + tol
        and inner[3] <= outer[3] + tol
    )


def _same_crs(crs: Any, authid: str) -> bool:
    """Same CRS, also when a file's WKT carries no EPSG code (QGIS then gives no authid)."""
    from qgis.core import QgsCoordinateReferenceSystem

    if crs.authid() == authid:
        return True
    return bool(crs.isValid() and crs.toProj() == QgsCoordinateReferenceSystem(authid).toProj())


def _labels(layer: Any) -> list[str]:
    """Legend texts of a layer's renderer (raster: class/ramp labels; vector: legend item labels)."""
    renderer = layer.renderer()
    if renderer is None:
        return []
    if hasattr(renderer, "legendSymbolItems"):  # vector
        return [item.label() for item in renderer.legendSymbolItems()]
    labels = [label for label, _color in renderer.legendSymbologyItems()]
    shader = getattr(renderer, "shader", lambda: None)()
    if shader is not None:
        ramp = shader.rasterShaderFunction()
        settings = ramp.legendSettings() if hasattr(ramp, "legendSettings") else None
        if settings is not None:
            labels += [settings.minimumLabel(), settings.maximumLabel()]
    return labels


def check_maps(maps_dir: Path, name: str, expect: dict[str, Any]) -> dict[str, Any]:
    """Run every check; raises Failed listing all failures, else returns a summary dict."""
    qgis_app()
    from qgis.core import QgsRasterLayer, QgsVectorLayer, QgsWkbTypes

    c = Checker()
    files = {
        "prob": maps_dir / f"{name}_prob.tif",
        "class": maps_dir / f"{name}_class.tif",
        "tiles": maps_dir / f"{name}_tiles.geojson",
        "presence": maps_dir / f"{name}_presence.gpkg",
    }
    for key, path in files.items():
        c.check(path.is_file(), f"{key}: missing {path}")
        qml = path.with_suffix(".qml")
        c.check(qml.is_file(), f"{key}: missing style {qml}")
    if c.failures:
        raise Failed("; ".join(c.failures))

    # Plain constructors: QGIS loads "<same basename>.qml" as the default style by itself
    # (LayerOptions.loadDefaultStyle is True by default); the renderer checks below prove it did.
    layers = {
        "prob": QgsRasterLayer(str(files["prob"]), f"{name}_prob", "gdal"),
        "class": QgsRasterLayer(str(files["class"]), f"{name}_class", "gdal"),
        "tiles": QgsVectorLayer(str(files["tiles"]), f"{name}_tiles", "ogr"),
        "presence": QgsVectorLayer(f"{files['presence']}|layername=presence", f"{name}_presence", "ogr"),
    }
    for key, layer in layers.items():
        c.check(layer.isValid(), f"{key}: QGIS cannot open {files[key]}")
    if c.failures:
        raise Failed("; ".join(c.failures))
    prob, cls, tiles, presence = (layers[k] for k in ("prob", "class", "tiles", "presence"))

    # CRS and extents.
    native = f"EPSG:{int(expect['epsg'])}"
    for key in ("prob", "class", "presence"):
        crs = layers[key].crs()
        c.check(_same_crs(crs, native), f"{key}: CRS {crs.authid() or crs.description()!r}, expected {native}")
    got = tiles.crs().authid()
    c.check(got in ("EPSG:4326", "OGC:CRS84"), f"tiles: CRS {got!r}, expected EPSG:4326")
    want = [float(v) for v in expect["extent"]]
    for key in ("prob", "class"):
        got_ext = _extent(layers[key].extent())
        ok = all(math.isclose(g, w, rel_tol=1e-6) for g, w in zip(got_ext, want, strict=True))
        c.check(ok, f"{key}: extent {got_ext}, expected {want}")
    tiles_ext = _extent(tiles.extent())
    c.check(
        _inside(tiles_ext, [float(v) for v in expect["extent_4326"]], 1e-7),
        f"tiles: extent {tiles_ext} not within extent_4326 {expect['extent_4326']}",
    )
    c.check(tiles.featureCount() > 0, "tiles: no features")
    if presence.featureCount() > 0:
        pres_ext = _extent(presence.extent())
        span = max(want[2] - want[0], want[3] - want[1])
        c.check(_inside(pres_ext, want, 1e-6 * span), f"presence: extent {pres_ext} not within {want}")

    # Data contract.
    for key in ("prob", "class"):
        dp = layers[key].dataProvider()
        c.check(layers[key].bandCount() == 1, f"{key}: {layers[key].bandCount()} bands, expected 1")
        c.check(
            dp.sourceHasNoDataValue(1) and dp.sourceNoDataValue(1) == 255,
            f"{key}: nodata is not 255 (has={dp.sourceHasNoDataValue(1)}, value={dp.sourceNoDataValue(1)})",
        )
    for key, fields in (("tiles", {"probability", "class", "row", "col"}), ("presence", {"area_m2", "area_ha"})):
        names = set(layers[key].fields().names())
        c.check(fields <= names, f"{key}: fields {sorted(names)} lack {sorted(fields - names)}")

    # The .qml default styles were applied.
    for key in ("tiles", "presence"):
        # An empty layer written without a geometry type opens as a plain table: no renderer, no style.
        c.check(
            layers[key].geometryType() == QgsWkbTypes.PolygonGeometry,
            f"{key}: not a polygon layer (geometry {QgsWkbTypes.displayString(layers[key].wkbType())}); "
            "write it with an explicit geometry type, e.g. to_file(..., geometry_type='MultiPolygon')",
        )
    types = {key: layer.renderer().type() if layer.renderer() else "none" for key, layer in layers.items()}
    for key, want_type in (
        ("prob", "singlebandpseudocolor"),
        ("class", "paletted"),
        ("tiles", "graduatedSymbol"),
        ("presence", "RuleRenderer"),
    ):
        c.check(types[key] == want_type, f"{key}: renderer {types[key]!r}, expected {want_type!r} (.qml not applied?)")
    labels = {key: _labels(layer) for key, layer in layers.items()}
    for key, phrase in (
        ("prob", "leafy spurge probability"),
        ("class", "no leafy spurge"),
        ("tiles", "leafy spurge probability"),
        ("presence", "leafy spurge presence"),
    ):
        c.check(any(phrase in s for s in labels[key]), f"{key}: no legend text {phrase!r} in {labels[key]}")
    if types["tiles"] == "graduatedSymbol":
        attr = tiles.renderer().classAttribute()
        c.check(attr == "probability", f"tiles: graduated on {attr!r}, expected 'probability'")
        # Each tile must be drawn in a class of its own kind: the style's threshold and predict's agree.
        mismatched = []
        for feature in tiles.getFeatures():
            value, kind = feature["probability"], feature["class"]
            rng = tiles.renderer().rangeForValue(float(value)) if value is not None else None
            drawn = rng.label().split(":")[0] if rng is not None else "not drawn"
            if drawn != kind:
                mismatched.append(f"row {feature['row']} col {feature['col']} p={value} {kind!r} drawn {drawn!r}")
        c.check(not mismatched, f"tiles: {len(mismatched)} tiles drawn as the wrong class: {mismatched[:5]}")
    if types["prob"] == "singlebandpseudocolor":
        transparency = prob.renderer().rasterTransparency()
        nodata_hidden = transparency is not None and any(
            e.min <= 255 <= e.max and e.percentTransparent == 100
            for e in transparency.transparentSingleValuePixelList()
        )
        c.check(nodata_hidden or prob.dataProvider().sourceHasNoDataValue(1), "prob: 255 is not transparent")

    conf_path = maps_dir / f"{name}_confidence.tif"
    if conf_path.exists() or expect.get("confidence"):
        check_confidence(c, conf_path, name, [tuple(p) for p in expect.get("nodata_points", [])], want,
                         cls.rasterUnitsPerPixelX())

    # What QGIS draws.
    pixels: dict[str, Any] = {}
    cell = cls.rasterUnitsPerPixelX()
    present = [tuple(p) for p in expect.get("present_points", [])]
    absent = [tuple(p) for p in expect.get("absent_points", [])]
    nodata = [tuple(p) for p in expect.get("nodata_points", [])]
    if types["class"] == "paletted":
        palette = {cl.value: _rgba(cl.color) for cl in cls.renderer().classes()}
        c.check(1 in palette, f"class: no palette entry for value 1 in {sorted(palette)}")
        colour = palette.get(1, (0, 0, 0, 0))
        image, m2p = render(cls, want, cell)
        got = [pixel_at(image, m2p, p) for p in present]
        pixels["class_present"] = got
        for p, g in zip(present, got, strict=True):
            c.check(_close(g, colour), f"class: pixel at present point {p} is {g}, expected ~{colour}")
        got = [pixel_at(image, m2p, p) for p in absent]
        pixels["class_absent"] = got
        for p, g in zip(absent, got, strict=True):
            c.check(not _close(g, colour), f"class: pixel at absent point {p} is presence-coloured {g}")
        got = [pixel_at(image, m2p, p) for p in nodata]
        pixels["class_nodata"] = got
        for p, g in zip(nodata, got, strict=True):
            c.check(g[3] == 0, f"class: pixel at nodata point {p} is {g}, expected transparent")
    if nodata or present:
        image, m2p = render(prob, want, cell)
        for p in nodata:
            g = pixel_at(image, m2p, p)
            c.check(g[3] == 0, f"prob: pixel at nodata point {p} is {g}, expected transparent")
        for p in present:
            g = pixel_at(image, m2p, p)
            c.check(g[3] > 0, f"prob: pixel at present point {p} is transparent")
    if types["presence"] in ("RuleRenderer", "singleSymbol"):
        symbols = presence.renderer().symbols(_render_context())
        c.check(len(symbols) == 1, f"presence: {len(symbols)} symbols, expected 1")
        fill = _rgba(symbols[0].color()) if symbols else (0, 0, 0, 0)
        # Outline colour too: a point near a polygon edge may land on it.
        outline = _outline_rgba(symbols[0]) if symbols else fill
        image, m2p = render(presence, want, cell)
        got = [pixel_at(image, m2p, p) for p in present]
        pixels["presence_present"] = got
        for p, g in zip(present, got, strict=True):
            c.check(
                _close(g, fill) or _close(g, outline),
                f"presence: pixel at present point {p} is {g}, expected ~{fill}",
            )
        got = [pixel_at(image, m2p, p) for p in absent + nodata]
        pixels["presence_absent"] = got
        for p, g in zip(absent + nodata, got, strict=True):
            c.check(g[3] == 0, f"presence: something drawn at absent point {p}: {g}")

    if c.failures:
        raise Failed("; ".join(c.failures))
    return {
        "ok": True,
        "name": name,
        "checks": c.passed,
        "renderers": types,
        "crs": {key: layer.crs().authid() for key, layer in layers.items()},
        "points": {"present": len(present), "absent": len(absent), "nodata": len(nodata)},
        "pixels": {k: [list(v) for v in vals[:3]] for k, vals in pixels.items()},
    }


def check_confidence(c: Checker, path: Path, name: str, nodata: list[Point], extent: list[float],
                     cell: float) -> None:
    """The confidence layer: opens valid, 255 is nodata, its .qml ramp is applied and hides nodata."""
    from qgis.core import QgsRasterLayer

    c.check(path.is_file(), f"confidence: missing {path}")
    c.check(path.with_suffix(".qml").is_file(), f"confidence: missing style {path.with_suffix('.qml')}")
    if c.failures:
        return
    layer = QgsRasterLayer(str(path), f"{name}_confidence", "gdal")
    if not c.check(layer.isValid(), f"confidence: QGIS cannot open {path}"):
        return
    dp = layer.dataProvider()
    c.check(dp.sourceHasNoDataValue(1) and dp.sourceNoDataValue(1) == 255, "confidence: nodata is not 255")
    kind = layer.renderer().type() if layer.renderer() else "none"
    c.check(kind == "singlebandpseudocolor", f"confidence: renderer {kind!r}, expected singlebandpseudocolor")
    labels = _labels(layer)
    c.check(any("confidence" in s or "certain" in s for s in labels), f"confidence: legend {labels}")
    if nodata:
        image, m2p = render(layer, extent, cell)
        for p in nodata:
            g = pixel_at(image, m2p, p)
            c.check(g[3] == 0, f"confidence: pixel at nodata point {p} is {g}, expected transparent")


def _render_context() -> Any:
    from qgis.core import QgsRenderContext

    return QgsRenderContext()


def _outline_rgba(symbol: Any) -> RGBA:
    layer = symbol.symbolLayer(0)
    if hasattr(layer, "strokeColor"):
        return _rgba(layer.strokeColor())
    return _rgba(symbol.color())


# ---------------------------------------------------------------------------------------- self-test


def build_sample(maps_dir: Path, name: str, threshold: float = 0.5) -> dict[str, Any]:
    """Write sample maps shaped like predict's (6 x 5 tiles of 10 m in EPSG:32612); returns EXPECT."""
    import numpy as np
    from osgeo import gdal, ogr, osr

    gdal.UseExceptions()
    ogr.UseExceptions()
    styles = load_styles()
    maps_dir.mkdir(parents=True, exist_ok=True)
    epsg, x0, y0, cell = 32612, 500_000.0, 5_000_000.0, 10.0
    prob = np.array(
        [
            [0, 5, 10, 20, 30, 255],
            [5, 60, 80, 40, 20, 255],
            [10, 90, 100, 55, 10, 255],
            [20, 45, 70, 50, 0, 0],
            [255, 255, 0, 10, 95, 0],
        ],
        dtype=np.uint8,
    )
    rows, cols = prob.shape
    threshold_pct = round(threshold * 100)
    cls = np.where(prob == 255, 255, (prob >= threshold_pct).astype(np.uint8)).astype(np.uint8)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    geotransform = (x0, cell, 0.0, y0, 0.0, -cell)

    def raster(path: Path, data: Any, colours: bool) -> None:
        mem = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(geotransform)
        mem.SetProjection(srs.ExportToWkt())
        band = mem.GetRasterBand(1)
        band.WriteArray(data)
        band.SetNoDataValue(255)
        if colours:
            table = gdal.ColorTable()
            table.SetColorEntry(0, (200, 230, 200, 255))
            table.SetColorEntry(1, (255, 0, 255, 255))
            table.SetColorEntry(255, (0, 0, 0, 0))
            band.SetRasterColorTable(table)
            band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
            gdal.GetDriverByName("GTiff").CreateCopy(str(path), mem)
        else:
            band.SetDescription("leafy spurge probability (%)")
            gdal.GetDriverByName("COG").CreateCopy(str(path), mem, options=["OVERVIEWS=NONE"])

    raster(maps_dir / f"{name}_prob.tif", prob, colours=False)
    raster(maps_dir / f"{name}_class.tif", cls, colours=True)
    t, p = threshold, prob / 100  # confidence as predict writes it: 0 at the threshold, 100 at p = 0 or 1
    conf = np.rint(np.where(p < t, (t - p) / t, (p - t) / (1 - t)) * 100).clip(0, 100)
    raster(maps_dir / f"{name}_confidence.tif", np.where(prob == 255, 255, conf).astype(np.uint8), colours=False)

    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_4326 = osr.CoordinateTransformation(srs, wgs84)

    def box(r: int, col: int) -> Any:
        xa, ya = x0 + col * cell, y0 - r * cell
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((xa, ya), (xa + cell, ya), (xa + cell, ya - cell), (xa, ya - cell), (xa, ya)):
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        return poly

    def centre(r: int, col: int) -> list[float]:
        return [x0 + (col + 0.5) * cell, y0 - (r + 0.5) * cell]

    tiles_ds = ogr.GetDriverByName("GeoJSON").CreateDataSource(str(maps_dir / f"{name}_tiles.geojson"))
    tiles = tiles_ds.CreateLayer("tiles", wgs84, ogr.wkbPolygon, options=["RFC7946=YES"])
    for field, kind in (("probability", ogr.OFTReal), ("class", ogr.OFTString), ("row", ogr.OFTInteger)):
        tiles.CreateField(ogr.FieldDefn(field, kind))
    tiles.CreateField(ogr.FieldDefn("col", ogr.OFTInteger))
    present_union = ogr.Geometry(ogr.wkbMultiPolygon)
    expect: dict[str, Any] = {"epsg": epsg, "present_points": [], "absent_points": [], "nodata_points": []}
    for r in range(rows):
        for col in range(cols):
            value = int(prob[r, col])
            if value == 255:
                expect["nodata_points"].append(centre(r, col))
                continue
            is_present = value >= threshold_pct
            expect["present_points" if is_present else "absent_points"].append(centre(r, col))
            if is_present:
                present_union.AddGeometry(box(r, col))
            feature = ogr.Feature(tiles.GetLayerDefn())
            feature.SetField("probability", value / 100)
            feature.SetField("class", "present" if is_present else "absent")
            feature.SetField("row", r)
            feature.SetField("col", col)
            geometry = box(r, col)
            geometry.Transform(to_4326)
            feature.SetGeometry(geometry)
            tiles.CreateFeature(feature)
    tiles_ds = None  # flush

    gpkg = ogr.GetDriverByName("GPKG").CreateDataSource(str(maps_dir / f"{name}_presence.gpkg"))
    layer = gpkg.CreateLayer("presence", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("area_m2", ogr.OFTReal))
    layer.CreateField(ogr.FieldDefn("area_ha", ogr.OFTReal))
    dissolved = ogr.ForceToMultiPolygon(present_union.UnionCascaded())
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("area_m2", dissolved.GetArea())
    feature.SetField("area_ha", dissolved.GetArea() / 10_000)
    feature.SetGeometry(dissolved)
    layer.CreateFeature(feature)
    gpkg = None  # flush

    styles.write_styles(maps_dir, name, threshold)
    extent = [x0, y0 - rows * cell, x0 + cols * cell, y0]
    expect["extent"] = extent
    expect["extent_4326"] = list(to_4326.TransformBounds(*extent, 21))
    return expect


def self_test(keep: Path | None) -> dict[str, Any]:
    """Good sample maps must pass; maps with a lost style or a wrong expectation must fail."""
    with tempfile.TemporaryDirectory(prefix="spurgemap-qgis-") as tmp:
        root = keep if keep is not None else Path(tmp)
        name = "sample_ortho"
        good = root / "good"
        expect = build_sample(good, name)
        (good / "expect.json").write_text(json.dumps(expect, indent=2))
        summary = check_maps(good, name, expect)

        # The harness must catch: a missing default style (QGIS would fall back to the file's colour
        # table, still "paletted" but with no labels) and a presence point drawn as absent.
        broken = root / "no_style"
        build_sample(broken, name)
        (broken / f"{name}_class.qml").write_text("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'><qgis/>")
        (broken / f"{name}_presence.qml").unlink()
        (broken / f"{name}_presence.qml").write_text("<qgis/>")
        swapped = dict(expect, present_points=expect["absent_points"], absent_points=expect["present_points"])
        no_conf = root / "no_confidence_style"
        build_sample(no_conf, name)
        (no_conf / f"{name}_confidence.qml").write_text("<qgis/>")  # QGIS falls back to a grey ramp
        caught: list[str] = []
        for label, maps_dir, exp in (("lost styles", broken, expect), ("swapped points", good, swapped),
                                     ("lost confidence style", no_conf, expect)):
            try:
                check_maps(maps_dir, name, exp)
            except Failed as err:
                caught.append(f"{label}: {str(err)[:120]}")
            else:
                raise Failed(f"self-test: check_maps accepted maps with {label}")
        summary["self_test"] = {"caught": caught}
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("maps_dir", nargs="?", type=Path)
    parser.add_argument("name", nargs="?")
    parser.add_argument("expect", nargs="?", type=Path)
    parser.add_argument("--self-test", action="store_true", help="build sample maps and check them")
    parser.add_argument("--keep", type=Path, help="with --self-test: write the samples here, keep them")
    args = parser.parse_args(argv)
    try:
        import qgis.core  # noqa: F401
    except ImportError as err:
        hint = "apt-get install -y qgis python3-qgis"
        print(json.dumps({"ok": False, "error": f"PyQGIS not importable ({err}); {hint}"}))
        return 1
    try:
        if args.self_test:
            result = self_test(args.keep)
        else:
            if args.maps_dir is None or args.name is None or args.expect is None:
                parser.error("give MAPS_DIR NAME EXPECT.json, or --self-test")
            result = check_maps(args.maps_dir, args.name, json.loads(args.expect.read_text()))
    except Failed as err:
        print(json.dumps({"ok": False, "error": str(err)}))
        print(f"check_maps: FAILED: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a crash is a failure too, with the same one-line JSON
        import traceback

        traceback.print_exc()
        print(json.dumps({"ok": False, "error": f"check_maps crashed: {type(err).__name__}: {err}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    code = main()
    # exitQgis() tears down providers; skipping it avoids rare shutdown crashes in headless runs,
    # which would turn a pass into a non-zero exit code.
    sys.stdout.flush()
    os._exit(code)
