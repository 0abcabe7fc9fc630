"""QGIS 3.x layer styles (``.qml``) for the maps that ``spurgemap predict`` writes.

Why: a field crew opens the maps in QGIS; a ``.qml`` with the same basename as the data file is loaded
as the layer's default style, so the maps open already coloured (magenta = leafy spurge, nodata
transparent) instead of as grey rasters and random-coloured polygons.

This module is deliberately stdlib-only and free of relative imports: ``tests/qgis/check_maps.py`` loads
it by file path under the system ``/usr/bin/python3`` (where PyQGIS lives but spurgemap's dependencies
do not). Keep it that way.

The XML follows what QGIS 3.22 itself writes with ``saveNamedStyle`` (checked against QGIS 3.22.16).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

# Colours are (r, g, b, alpha) with 0..255 channels.
RGBA = tuple[int, int, int, int]

PRESENCE_RGBA: RGBA = (230, 0, 126, 255)  # strong magenta: unmistakable on green/brown imagery
ABSENT_RGBA: RGBA = (150, 210, 150, 90)  # pale green, mostly transparent: shows "mapped, nothing found"
PRESENCE_FILL_RGBA: RGBA = (230, 0, 126, 140)  # polygons keep the imagery visible underneath
PRESENCE_OUTLINE_RGBA: RGBA = (180, 0, 100, 255)
NODATA = 255

DEFAULT_SPECIES = "leafy spurge"


def legends(species: str = DEFAULT_SPECIES) -> dict[str, str]:
    """Legend and label texts for the mapped species (``labels.species``)."""
    return {"prob": f"{species} probability (%)", "tiles": f"{species} probability",
            "presence": f"{species} presence", "class": f"{species} class",
            "absent": f"no {species}", "present": species}


def class_labels(species: str = DEFAULT_SPECIES) -> dict[int, str]:
    """Class value -> legend label, as in ``_class.tif`` and Deepness' channel names."""
    t = legends(species)
    return {0: t["absent"], 1: t["present"]}


PROB_LEGEND = legends()["prob"]  # the default species' texts, kept for existing imports
TILES_LEGEND = legends()["tiles"]
PRESENCE_LEGEND = legends()["presence"]
CLASS_LABELS = class_labels()
CONFIDENCE_LEGEND = "confidence (0 = at the threshold, 100 = certain)"
LOW_CONFIDENCE_RGBA: RGBA = (255, 120, 0, 230)  # orange: where a second look is worth it

# Suffixes of the predict outputs; the .qml shares the data file's basename so QGIS picks it up.
STYLE_SUFFIXES = ("_prob", "_class", "_tiles", "_presence", "_confidence")

_QGIS_VERSION = "3.22.0"  # oldest QGIS this XML is written for; newer versions upgrade it on read


def hex_color(c: RGBA) -> str:
    return f"#{c[0]:02x}{c[1]:02x}{c[2]:02x}"


def csv_color(c: RGBA) -> str:
    return ",".join(str(v) for v in c)


def qml_root(layer_kind: str) -> ET.Element:
    """The ``<qgis>`` element with the flags QGIS writes; ``layer_kind`` is "raster" or "vector"."""
    attrs = {
        "version": _QGIS_VERSION,
        "styleCategories": "AllStyleCategories",
        "hasScaleBasedVisibilityFlag": "0",
        "minScale": "1e+08",
        "maxScale": "0",
    }
    if layer_kind == "vector":
        attrs.update({"labelsEnabled": "0", "readOnly": "0", "symbologyReferenceScale": "-1"})
    root = ET.Element("qgis", attrs)
    flags = ET.SubElement(root, "flags")
    for name, value in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        ET.SubElement(flags, name).text = value
    return root


def qml_string(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"


def raster_pipe(root: ET.Element, renderer_type: str, extra: dict[str, str]) -> ET.Element:
    """Raster pipe with nearest-neighbour resampling (one cell per tile must stay a crisp square)."""
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        {
            "enabled": "false",
            "zoomedInResamplingMethod": "nearestNeighbour",
            "zoomedOutResamplingMethod": "nearestNeighbour",
            "maxOversampling": "2",
        },
    )
    attrs = {"type": renderer_type, "band": "1", "alphaBand": "-1", "opacity": "1", "nodataColor": ""}
    attrs.update(extra)
    renderer = ET.SubElement(pipe, "rasterrenderer", attrs)
    # Belt and braces: even if a file lost its nodata tag, 255 is drawn fully transparent.
    transparency = ET.SubElement(renderer, "rasterTransparency")
    single = ET.SubElement(transparency, "singleValuePixelList")
    ET.SubElement(single, "pixelListEntry", {"min": str(NODATA), "max": str(NODATA), "percentTransparent": "100"})
    mmo = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(mmo, tag).text = text
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    return renderer


def prob_raster_qml(threshold_pct: int, species: str = DEFAULT_SPECIES) -> str:
    """Singleband pseudocolor style for ``<name>_prob.tif`` (uint8 percent 0..100, nodata 255).

    Why: the ramp runs from fully transparent at 0 % through a pale pink at the presence threshold to
    strong magenta at 100 %, so low-probability ground shows the imagery and likely spurge pops out.
    ``clip`` hides values above 100 and 255 is transparent, whatever the file's nodata tag says.
    """
    if not 0 < threshold_pct < 100:
        raise ValueError(f"threshold_pct must be within 1..99, got {threshold_pct}")
    root = qml_root("raster")
    renderer = raster_pipe(root, "singlebandpseudocolor", {"classificationMin": "0", "classificationMax": "100"})
    shader = ET.SubElement(renderer, "rastershader")
    ramp = ET.SubElement(
        shader,
        "colorrampshader",
        {
            "colorRampType": "INTERPOLATED",
            "classificationMode": "1",
            "clip": "1",
            "minimumValue": "0",
            "maximumValue": "100",
            "labelPrecision": "0",
        },
    )
    stops: list[tuple[int, RGBA, str]] = [
        (0, (255, 255, 255, 0), f"0 % {legends(species)['tiles']}"),
        (threshold_pct, (244, 166, 215, 150), f"{threshold_pct} % (presence threshold)"),
        (100, PRESENCE_RGBA, f"100 % {legends(species)['tiles']}"),
    ]
    for value, rgba, label in stops:
        ET.SubElement(ramp, "item",
                      {"value": str(value), "label": label, "color": hex_color(rgba), "alpha": str(rgba[3])})
    # Continuous legend: a gradient bar from "0 %" to "100 % <species> probability".
    ET.SubElement(
        ramp,
        "rampLegendSettings",
        {
            "useContinuousLegend": "1",
            "minimumLabel": "0 %",
            "maximumLabel": f"100 % {legends(species)['tiles']}",
            "prefix": "",
            "suffix": "",
            "direction": "0",
            "orientation": "2",
        },
    )
    return qml_string(root)


def confidence_raster_qml(low: int = 20) -> str:
    """Singleband pseudocolor style for band 1 of ``<name>_confidence.tif`` (uint8 0..100, nodata 255).

    Why: a crew looks for where the map is unsure, so low confidence is opaque orange, fading to
    transparent at 100 (certain either way); ``low`` marks the summary's low-confidence limit.
    """
    if not 0 < low < 100:
        raise ValueError(f"low must be within 1..99, got {low}")
    root = qml_root("raster")
    renderer = raster_pipe(root, "singlebandpseudocolor", {"classificationMin": "0", "classificationMax": "100"})
    shader = ET.SubElement(renderer, "rastershader")
    ramp = ET.SubElement(shader, "colorrampshader", {
        "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "1", "minimumValue": "0",
        "maximumValue": "100", "labelPrecision": "0"})
    stops: list[tuple[int, RGBA, str]] = [
        (0, LOW_CONFIDENCE_RGBA, "0 (at the presence threshold)"),
        (low, (255, 200, 0, 150), f"{low} (low-confidence limit)"),
        (100, (255, 255, 255, 0), "100 (certain)"),
    ]
    for value, rgba, label in stops:
        ET.SubElement(ramp, "item",
                      {"value": str(value), "label": label, "color": hex_color(rgba), "alpha": str(rgba[3])})
    ET.SubElement(ramp, "rampLegendSettings", {
        "useContinuousLegend": "1", "minimumLabel": "0", "maximumLabel": f"100 {CONFIDENCE_LEGEND}",
        "prefix": "", "suffix": "", "direction": "0", "orientation": "2"})
    return qml_string(root)


def class_raster_qml(species: str = DEFAULT_SPECIES) -> str:
    """Paletted style for ``<name>_class.tif`` (0 absent, 1 present, 255 nodata).

    Why: overrides the file's embedded colour table with labelled classes, so the legend reads
    "leafy spurge" / "no leafy spurge" instead of bare pixel values.
    """
    root = qml_root("raster")
    renderer = raster_pipe(root, "paletted", {})
    palette = ET.SubElement(renderer, "colorPalette")
    for value, rgba in ((0, ABSENT_RGBA), (1, PRESENCE_RGBA)):
        ET.SubElement(
            palette,
            "paletteEntry",
            {"value": str(value), "label": class_labels(species)[value], "color": hex_color(rgba),
             "alpha": str(rgba[3])},
        )
    return qml_string(root)


def option_map(parent: ET.Element, props: dict[str, str]) -> None:
    """Symbol-layer properties in both the 3.x ``<Option>`` form and the legacy ``<prop>`` form."""
    opt = ET.SubElement(parent, "Option", {"type": "Map"})
    for key, value in props.items():
        ET.SubElement(opt, "Option", {"name": key, "value": value, "type": "QString"})
    for key, value in props.items():
        ET.SubElement(parent, "prop", {"k": key, "v": value})


def fill_symbol(parent: ET.Element, name: str, fill: RGBA, outline: RGBA, outline_mm: float) -> None:
    symbol = ET.SubElement(
        parent, "symbol", {"name": name, "type": "fill", "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"}
    )
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
    option_map(
        layer,
        {
            "color": csv_color(fill),
            "style": "solid" if fill[3] > 0 else "no",
            "outline_color": csv_color(outline),
            "outline_style": "solid" if outline[3] > 0 else "no",
            "outline_width": f"{outline_mm:g}",
            "outline_width_unit": "MM",
            "joinstyle": "miter",
            "offset": "0,0",
            "offset_unit": "MM",
        },
    )


def _vector_tail(root: ET.Element, aliases: dict[str, str]) -> None:
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    ET.SubElement(root, "legend", {"type": "default-vector", "showLabelLegend": "0"})
    # Friendlier column names in the attribute table and the identify tool.
    alias_el = ET.SubElement(root, "aliases")
    for index, (field, alias) in enumerate(aliases.items()):
        ET.SubElement(alias_el, "alias", {"field": field, "name": alias, "index": str(index)})
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons


def tiles_vector_qml(threshold: float, species: str = DEFAULT_SPECIES) -> str:
    """Graduated fill on ``probability`` (0..1) for ``<name>_tiles.geojson``.

    Why: four classes, two either side of the threshold, so the grid shows how sure the model is, not
    just the yes/no. QGIS puts a value equal to a class boundary in the *lower* class; the absent
    classes therefore stop at the double just below the threshold, so ``probability == threshold``
    is drawn present, matching ``class == "present"`` for ``probability >= threshold``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be within (0, 1), got {threshold}")
    below = math.nextafter(threshold, -math.inf)
    low_mid, high_mid = threshold / 2, (1.0 + threshold) / 2
    none: RGBA = (0, 0, 0, 0)
    classes: list[tuple[float, float, RGBA, RGBA, str]] = [
        (0.0, low_mid, none, (255, 255, 255, 70), "absent"),
        (low_mid, below, (244, 166, 215, 90), (255, 255, 255, 70), "absent"),
        (threshold, high_mid, (230, 0, 126, 150), PRESENCE_OUTLINE_RGBA, "present"),
        (high_mid, 1.0, (200, 0, 90, 220), PRESENCE_OUTLINE_RGBA, "present"),
    ]
    root = qml_root("vector")
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        {
            "type": "graduatedSymbol",
            "attr": "probability",
            "graduatedMethod": "GraduatedColor",
            "symbollevels": "0",
            "forceraster": "0",
            "enableorderby": "0",
            "referencescale": "-1",
        },
    )
    ranges = ET.SubElement(renderer, "ranges")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (lower, upper, fill, outline, kind) in enumerate(classes):
        shown_upper = threshold if upper == below else upper  # ``below`` prints as the threshold
        label = f"{kind}: {legends(species)['tiles']} {lower:.2f}-{shown_upper:.2f}"
        ET.SubElement(
            ranges,
            "range",
            {"symbol": str(i), "label": label, "render": "true", "lower": repr(lower), "upper": repr(upper)},
        )
        fill_symbol(symbols, str(i), fill, outline, 0.1)
    method = ET.SubElement(renderer, "classificationMethod", {"id": "Custom"})
    ET.SubElement(method, "labelFormat", {"format": "%1 - %2", "labelprecision": "2", "trimtrailingzeroes": "0"})
    _vector_tail(root, {"probability": legends(species)["tiles"], "class": legends(species)["class"]})
    return qml_string(root)


def presence_vector_qml(species: str = DEFAULT_SPECIES) -> str:
    """Magenta fill with a darker outline for ``<name>_presence.gpkg`` (layer ``presence``).

    Why a one-rule rule-based renderer and not "single symbol": QGIS gives a single-symbol legend no
    text of its own (only the layer name), whereas a rule carries the label "leafy spurge presence".
    It draws exactly like a single symbol (no filter: every feature).
    """
    root = qml_root("vector")
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        {"type": "RuleRenderer", "symbollevels": "0", "forceraster": "0", "enableorderby": "0", "referencescale": "-1"},
    )
    rules = ET.SubElement(renderer, "rules", {"key": "{0d9f4c1e-0000-4000-8000-000000000000}"})
    ET.SubElement(
        rules, "rule",
        {"key": "{0d9f4c1e-0000-4000-8000-000000000001}", "symbol": "0", "label": legends(species)["presence"]},
    )
    symbols = ET.SubElement(renderer, "symbols")
    fill_symbol(symbols, "0", PRESENCE_FILL_RGBA, PRESENCE_OUTLINE_RGBA, 0.6)
    _vector_tail(root, {"area_m2": "area (m²)", "area_ha": "area (ha)"})
    return qml_string(root)


def write_styles(maps_dir: Path, name: str, threshold: float, species: str = DEFAULT_SPECIES,
                 low_confidence: int = 20) -> list[Path]:
    """Write ``<name>_{prob,class,tiles,presence,confidence}.qml`` into ``maps_dir``; returns the paths.

    ``threshold`` is the presence threshold as a probability in (0, 1); the percent raster's ramp uses
    it rounded to a whole percent (the raster itself holds whole percents).
    """
    maps_dir = Path(maps_dir)
    maps_dir.mkdir(parents=True, exist_ok=True)
    threshold_pct = min(99, max(1, round(threshold * 100)))
    texts = {
        "_prob": prob_raster_qml(threshold_pct, species),
        "_class": class_raster_qml(species),
        "_tiles": tiles_vector_qml(threshold, species),
        "_presence": presence_vector_qml(species),
        "_confidence": confidence_raster_qml(min(99, max(1, low_confidence))),
    }
    paths: list[Path] = []
    for suffix in STYLE_SUFFIXES:
        path = maps_dir / f"{name}{suffix}.qml"
        path.write_text(texts[suffix], encoding="utf-8")
        paths.append(path)
    return paths
