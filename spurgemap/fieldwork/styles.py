"""QGIS 3.x styles (``.qml``) for the field-work outputs: visits, treatment zones and change maps.

Why: like the predict maps, each layer opens in QGIS already styled (a ``.qml`` with the data file's
basename is its default style): visits numbered in walking order, zones as spray polygons, change
classes in colours a crew reads at a glance. Stdlib only, built on the predict style helpers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from spurgemap.predict.styles import (
    RGBA,
    csv_color,
    fill_symbol,
    hex_color,
    option_map,
    qml_root,
    qml_string,
    raster_pipe,
)

CHANGE_CLASSES: dict[int, tuple[str, RGBA]] = {
    0: ("absent in both", (200, 200, 200, 60)),
    1: ("new spurge", (230, 0, 126, 255)),
    2: ("spurge gone", (0, 160, 220, 255)),
    3: ("spurge persisting", (120, 0, 90, 255)),
}
VISIT_REASONS: dict[str, tuple[str, RGBA]] = {
    "uncertain": ("uncertain (near the threshold): improves the model", (255, 160, 0, 255)),
    "random": ("random (stratified): estimates map accuracy", (0, 110, 220, 255)),
}
ZONE_FILL: RGBA = (255, 120, 0, 120)
ZONE_OUTLINE: RGBA = (200, 70, 0, 255)


def _tail(root: ET.Element, aliases: dict[str, str], geometry_type: int) -> None:
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    alias_el = ET.SubElement(root, "aliases")
    for index, (fld, alias) in enumerate(aliases.items()):
        ET.SubElement(alias_el, "alias", {"field": fld, "name": alias, "index": str(index)})
    ET.SubElement(root, "layerGeometryType").text = str(geometry_type)  # 0 points, 2 polygons


def _marker(parent: ET.Element, name: str, fill: RGBA) -> None:
    symbol = ET.SubElement(parent, "symbol", {"name": name, "type": "marker", "alpha": "1",
                                              "clip_to_extent": "1", "force_rhr": "0"})
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleMarker", "enabled": "1", "pass": "0", "locked": "0"})
    option_map(layer, {"name": "circle", "color": csv_color(fill), "outline_color": "255,255,255,255",
                        "outline_style": "solid", "outline_width": "0.4", "outline_width_unit": "MM",
                        "size": "3.2", "size_unit": "MM", "angle": "0", "offset": "0,0", "offset_unit": "MM"})


def _categorized(root: ET.Element, attr: str, cats: list[tuple[str, str]], kind: str,
                 colours: list[RGBA]) -> None:
    renderer = ET.SubElement(root, "renderer-v2", {"type": "categorizedSymbol", "attr": attr, "symbollevels": "0",
                                                   "forceraster": "0", "enableorderby": "0",
                                                   "referencescale": "-1"})
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, ((value, label), rgba) in enumerate(zip(cats, colours, strict=True)):
        ET.SubElement(categories, "category", {"symbol": str(i), "value": value, "label": label, "render": "true"})
        if kind == "marker":
            _marker(symbols, str(i), rgba)
        else:
            fill_symbol(symbols, str(i), rgba, (rgba[0], rgba[1], rgba[2], 255), 0.3)


def _labels(root: ET.Element, field_name: str) -> None:
    """Visit numbers beside the points, with a white halo so they read on imagery."""
    root.set("labelsEnabled", "1")
    labeling = ET.SubElement(root, "labeling", {"type": "simple"})
    settings = ET.SubElement(labeling, "settings", {"calloutType": "simple"})
    style = ET.SubElement(settings, "text-style", {"fieldName": field_name, "isExpression": "0", "fontSize": "10",
                                                   "fontWeight": "75", "textColor": "0,0,0,255",
                                                   "fontSizeUnit": "Point", "textOpacity": "1"})
    ET.SubElement(style, "text-buffer", {"bufferDraw": "1", "bufferSize": "1", "bufferSizeUnits": "MM",
                                         "bufferColor": "255,255,255,255", "bufferOpacity": "1"})
    ET.SubElement(settings, "placement", {"placement": "6", "dist": "1.5", "distUnits": "MM"})


def visits_vector_qml() -> str:
    """Points coloured by why they are visited, labelled with the visit number.

    Rule-based with an ELSE rule and labels on ``name``: the same ``visits.qml`` is the default style of
    ``visits.gpkg`` and of ``visits.gpx`` (whose waypoints have a name but no reason), and both draw.
    """
    root = qml_root("vector")
    renderer = ET.SubElement(root, "renderer-v2", {"type": "RuleRenderer", "symbollevels": "0", "forceraster": "0",
                                                   "enableorderby": "0", "referencescale": "-1"})
    rules = ET.SubElement(renderer, "rules", {"key": "{7b1f0c2e-0000-4000-8000-000000000000}"})
    symbols = ET.SubElement(renderer, "symbols")
    entries = [(f"\"reason\" = '{k}'", label, rgba) for k, (label, rgba) in VISIT_REASONS.items()]
    entries.append(("ELSE", "visit", (255, 160, 0, 255)))
    for i, (expr, label, rgba) in enumerate(entries):
        ET.SubElement(rules, "rule", {"key": f"{{7b1f0c2e-0000-4000-8000-00000000000{i + 1}}}", "symbol": str(i),
                                      "label": label, "filter": expr})
        _marker(symbols, str(i), rgba)
    _labels(root, "name")
    _tail(root, {"visit": "visit (walking order)", "probability": "leafy spurge probability"}, 0)
    return qml_string(root)


def zones_vector_qml() -> str:
    root = qml_root("vector")
    renderer = ET.SubElement(root, "renderer-v2", {"type": "RuleRenderer", "symbollevels": "0", "forceraster": "0",
                                                   "enableorderby": "0", "referencescale": "-1"})
    rules = ET.SubElement(renderer, "rules", {"key": "{5a0e7c1e-0000-4000-8000-000000000000}"})
    ET.SubElement(rules, "rule", {"key": "{5a0e7c1e-0000-4000-8000-000000000001}", "symbol": "0",
                                  "label": "treatment zone (spot spray)"})
    symbols = ET.SubElement(renderer, "symbols")
    fill_symbol(symbols, "0", ZONE_FILL, ZONE_OUTLINE, 0.5)
    _tail(root, {"area_m2": "area (m²)", "perimeter_m": "perimeter (m)", "mean_prob": "mean probability",
                 "rate": "rate", "volume_l": "herbicide (L)"}, 2)
    return qml_string(root)


def change_raster_qml() -> str:
    root = qml_root("raster")
    renderer = raster_pipe(root, "paletted", {})
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (label, rgba) in CHANGE_CLASSES.items():
        ET.SubElement(palette, "paletteEntry", {"value": str(value), "label": label, "color": hex_color(rgba),
                                                "alpha": str(rgba[3])})
    return qml_string(root)


def change_vector_qml() -> str:
    root = qml_root("vector")
    shown = {k: v for k, v in CHANGE_CLASSES.items() if k}
    _categorized(root, "change_class", [(str(k), v[0]) for k, v in shown.items()], "fill",
                 [(r, g, b, 150) for _, (r, g, b, _a) in shown.values()])
    _tail(root, {"change_class": "change class", "change": "change", "area_m2": "area (m²)"}, 2)
    return qml_string(root)
