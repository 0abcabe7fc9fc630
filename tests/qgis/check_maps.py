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
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from qgis_helpers import (  # beside this script: sys.path[0] when run as one; sets QT_QPA_PLATFORM
    Checker,
    Failed,
    Point,
    _close,
    _extent,
    _inside,
    _labels,
    _outline_rgba,
    _render_context,
    _rgba,
    _same_crs,
    load_styles,
    pixel_at,
    qgis_app,
    render,
)


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


# ---------------------------------------------------------------------------------------- self-test


def self_test(keep: Path | None) -> dict[str, Any]:
    """Good sample maps must pass; maps with a lost style or a wrong expectation must fail."""
    from sample_maps import build_sample  # beside this script: sys.path[0] when run as one

    styles = load_styles()
    with tempfile.TemporaryDirectory(prefix="spurgemap-qgis-") as tmp:
        root = keep if keep is not None else Path(tmp)
        name = "sample_ortho"
        good = root / "good"
        expect = build_sample(good, name, styles)
        (good / "expect.json").write_text(json.dumps(expect, indent=2))
        summary = check_maps(good, name, expect)

        # The harness must catch: a missing default style (QGIS would fall back to the file's colour
        # table, still "paletted" but with no labels) and a presence point drawn as absent.
        broken = root / "no_style"
        build_sample(broken, name, styles)
        (broken / f"{name}_class.qml").write_text("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'><qgis/>")
        (broken / f"{name}_presence.qml").unlink()
        (broken / f"{name}_presence.qml").write_text("<qgis/>")
        swapped = dict(expect, present_points=expect["absent_points"], absent_points=expect["present_points"])
        no_conf = root / "no_confidence_style"
        build_sample(no_conf, name, styles)
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
