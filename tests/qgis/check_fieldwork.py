#!/usr/bin/python3
"""Open the field-work layers (survey plan, zones, change) in real QGIS (headless) and check them.

Why: these files go to crews and sprayer terminals through QGIS and GPS apps. A file test cannot
tell whether QGIS reads the layer, its CRS and its default style (the ``.qml`` beside it, or the
style stored in the GeoPackage). Runs under the system python (PyQGIS):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/check_fieldwork.py EXPECT.json

EXPECT.json is a list of layers: ``{"path": ..., "kind": "vector"|"raster", "layer": optional
sublayer name, "epsg": 32612, "features": minimum count (vector), "renderer": the renderer type
the style must give, or null when QGIS' own default is expected}``. Prints one JSON line
(``"ok": true/false``); exit 0 when every check passes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def check(items: list[dict[str, Any]]) -> dict[str, Any]:
    from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    problems: list[str] = []
    seen: list[dict[str, Any]] = []
    for item in items:
        path = item["path"]
        uri = f"{path}|layername={item['layer']}" if item.get("layer") else path
        layer = (QgsVectorLayer(uri, Path(path).stem, "ogr") if item["kind"] == "vector"
                 else QgsRasterLayer(path, Path(path).stem))
        if not layer.isValid():
            problems.append(f"{uri}: not a valid layer")
            continue
        info: dict[str, Any] = {"path": uri, "crs": layer.crs().authid(), "renderer": layer.renderer().type()}
        if item.get("epsg") and layer.crs().authid() != f"EPSG:{item['epsg']}":
            problems.append(f"{uri}: CRS {layer.crs().authid()}, expected EPSG:{item['epsg']}")
        if item["kind"] == "vector":
            info["features"] = layer.featureCount()
            if layer.featureCount() < item.get("features", 1):
                problems.append(f"{uri}: {layer.featureCount()} features, expected >= {item.get('features', 1)}")
        want = item.get("renderer")
        if want and layer.renderer().type() != want:
            problems.append(f"{uri}: renderer {layer.renderer().type()}, the style says {want} (style not applied)")
        seen.append(info)
    return {"ok": not problems, "problems": problems, "layers": seen}


def main(argv: list[str]) -> int:
    result = check(json.loads(Path(argv[1]).read_text()))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    # no exitQgis(): tearing providers down can crash a headless run after the checks (as in check_maps)
    sys.stdout.flush()
    os._exit(main(sys.argv))
