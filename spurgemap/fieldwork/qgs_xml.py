"""A QGIS 3.22 project (``.qgs``) written as plain XML, so no QGIS is needed to make a QField package.

Only what QGIS and QField read back: layers with relative data sources, their styles (the ``.qml``
bodies spurgemap writes anyway), the form widgets, constraints and defaults of editable fields, and
the project CRS (``projectCrs`` counts only with ``ProjectionsEnabled`` = 1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

QGIS_VERSION = "3.22.16-Białowieża"
_SKIP_FROM_QML = {"flags", "aliases"}  # the project writes its own


@dataclass
class Widget:
    """An editable field's form: QGIS editor widget type and its options (Option map)."""

    type: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class FormField:
    name: str
    alias: str
    widget: Widget
    not_null: bool = False
    default: str | None = None  # a QGIS expression
    default_on_update: bool = False  # re-evaluated whenever the feature is edited


@dataclass
class Layer:
    """One project layer: ``source`` relative to the project file (``./x.gpkg|layername=y``).

    ``id`` must be over 10 characters: QGIS 3.22 ignores shorter ids and makes up its own, and the layer
    tree then points at nothing (the layer loads but is never drawn).
    """

    id: str
    name: str
    kind: str  # "vector" | "raster"
    source: str
    crs: dict[str, str]
    style_qml: str | None = None
    geometry: str = ""  # vector: Point, Polygon, MultiPolygon ...
    fields: list[str] = field(default_factory=list)  # every attribute, in order
    form: list[FormField] = field(default_factory=list)  # the editable ones
    read_only: list[str] = field(default_factory=list)
    visible: bool = True


def _option(parent: ET.Element, name: str | None, value: Any) -> None:
    """QGIS' variant XML: Map / List / bool / int / double / QString."""
    attrs = {} if name is None else {"name": name}
    if isinstance(value, dict):
        node = ET.SubElement(parent, "Option", {**attrs, "type": "Map"})
        for k, v in value.items():
            _option(node, k, v)
    elif isinstance(value, list):
        node = ET.SubElement(parent, "Option", {**attrs, "type": "List"})
        for v in value:
            _option(node, None, v)
    elif isinstance(value, bool):
        ET.SubElement(parent, "Option", {**attrs, "type": "bool", "value": "true" if value else "false"})
    elif isinstance(value, int):
        ET.SubElement(parent, "Option", {**attrs, "type": "int", "value": str(value)})
    elif isinstance(value, float):
        ET.SubElement(parent, "Option", {**attrs, "type": "double", "value": repr(value)})
    else:
        ET.SubElement(parent, "Option", {**attrs, "type": "QString", "value": str(value)})


def value_map(pairs: list[tuple[str, str]]) -> Widget:
    """A drop-down: (label shown, value stored) in order."""
    return Widget("ValueMap", {"map": [{label: value} for label, value in pairs]})


def _srs(parent: ET.Element, crs: dict[str, str]) -> None:
    node = ET.SubElement(parent, "spatialrefsys", {"nativeFormat": "Wkt"})
    for tag in ("wkt", "proj4", "srid", "authid", "description", "geographicflag"):
        ET.SubElement(node, tag).text = crs.get(tag, "")


def _style(layer_el: ET.Element, qml: str) -> None:
    root = ET.fromstring(qml)
    for key, value in root.attrib.items():
        if key != "version":
            layer_el.set(key, value)
    for child in root:
        if child.tag not in _SKIP_FROM_QML:
            layer_el.append(child)


def _form(el: ET.Element, layer: Layer) -> None:
    by_name = {f.name: f for f in layer.form}
    conf = ET.SubElement(el, "fieldConfiguration")
    for name in layer.fields:
        f = by_name.get(name)
        node = ET.SubElement(conf, "field", {"name": name, "configurationFlags": "None"})
        widget = ET.SubElement(node, "editWidget", {"type": f.widget.type if f else "TextEdit"})
        _option(ET.SubElement(widget, "config"), None, f.widget.config if f else {})
    aliases = ET.SubElement(el, "aliases")
    for i, name in enumerate(layer.fields):
        ET.SubElement(aliases, "alias", {"field": name, "index": str(i),
                                         "name": by_name[name].alias if name in by_name else ""})
    defaults = ET.SubElement(el, "defaults")
    constraints = ET.SubElement(el, "constraints")
    expressions = ET.SubElement(el, "constraintExpressions")
    for name in layer.fields:
        f = by_name.get(name)
        ET.SubElement(defaults, "default", {"field": name, "expression": (f.default or "") if f else "",
                                            "applyOnUpdate": "1" if f and f.default_on_update else "0"})
        nn = bool(f and f.not_null)
        ET.SubElement(constraints, "constraint", {"field": name, "constraints": "1" if nn else "0",
                                                  "notnull_strength": "1" if nn else "0",
                                                  "unique_strength": "0", "exp_strength": "0"})
        ET.SubElement(expressions, "constraint", {"field": name, "exp": "", "desc": ""})
    editable = ET.SubElement(el, "editable")
    for name in layer.fields:
        ET.SubElement(editable, "field", {"name": name, "editable": "0" if name in layer.read_only else "1"})
    ET.SubElement(el, "editform", {"tolerant": "1"})
    ET.SubElement(el, "editforminit")
    ET.SubElement(el, "editorlayout").text = "generatedlayout"


def _maplayer(parent: ET.Element, layer: Layer) -> None:
    attrs = {"type": layer.kind, "autoRefreshEnabled": "0", "autoRefreshTime": "0", "refreshOnNotifyEnabled": "0",
             "hasScaleBasedVisibilityFlag": "0", "minScale": "1e+08", "maxScale": "0", "styleCategories":
             "AllStyleCategories"}
    if layer.kind == "vector":
        attrs.update({"geometry": "Point" if "Point" in layer.geometry else "Polygon", "wkbType": layer.geometry,
                      "readOnly": "0", "labelsEnabled": "0", "simplifyDrawingHints": "0"})
    el = ET.SubElement(parent, "maplayer", attrs)
    ET.SubElement(el, "id").text = layer.id
    ET.SubElement(el, "datasource").text = layer.source
    ET.SubElement(el, "layername").text = layer.name
    _srs(ET.SubElement(el, "srs"), layer.crs)
    ET.SubElement(el, "provider", {"encoding": "UTF-8"} if layer.kind == "vector" else {}).text = (
        "ogr" if layer.kind == "vector" else "gdal")
    flags = ET.SubElement(el, "flags")
    for name, value in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        ET.SubElement(flags, name).text = value
    if layer.style_qml:
        _style(el, layer.style_qml)
    if layer.kind == "vector":
        _form(el, layer)


def rgb_qml() -> str:
    """Plain RGB for the orthophoto basemap: bands 1-3 as they are, no stretch (8-bit imagery)."""
    root = ET.Element("qgis", {"version": QGIS_VERSION})
    pipe = ET.SubElement(root, "pipe")
    ren = ET.SubElement(pipe, "rasterrenderer", {"type": "multibandcolor", "redBand": "1", "greenBand": "2",
                                                 "blueBand": "3", "alphaBand": "-1", "opacity": "1",
                                                 "nodataColor": ""})
    ET.SubElement(ren, "rasterTransparency")
    for colour in ("red", "green", "blue"):
        ce = ET.SubElement(ren, f"{colour}ContrastEnhancement")
        ET.SubElement(ce, "minValue").text = "0"
        ET.SubElement(ce, "maxValue").text = "255"
        ET.SubElement(ce, "algorithm").text = "NoEnhancement"
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2", "zoomedOutResampler": "bilinear"})
    return ET.tostring(root, encoding="unicode")


def project_xml(title: str, crs: dict[str, str], layers: list[Layer],
                extent: tuple[float, float, float, float]) -> str:
    """The whole ``.qgs``: ``layers`` top to bottom as drawn (first = on top), paths relative."""
    short = [lyr.id for lyr in layers if len(lyr.id) <= 10]
    if short:
        raise ValueError(f"QGIS ignores layer ids of 10 characters or fewer: {short}")
    root = ET.Element("qgis", {"projectname": title, "version": QGIS_VERSION})
    ET.SubElement(root, "homePath", {"path": ""})
    ET.SubElement(root, "title").text = title
    _srs(ET.SubElement(root, "projectCrs"), crs)
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    for lyr in layers:
        ET.SubElement(tree, "layer-tree-layer", {
            "id": lyr.id, "name": lyr.name, "source": lyr.source, "providerKey": "ogr" if lyr.kind == "vector"
            else "gdal", "checked": "Qt::Checked" if lyr.visible else "Qt::Unchecked", "expanded": "1"})
    canvas = ET.SubElement(root, "mapcanvas", {"name": "theMapCanvas", "annotationsVisible": "1"})
    ET.SubElement(canvas, "units").text = "degrees" if crs.get("geographicflag") == "true" else "meters"
    ext = ET.SubElement(canvas, "extent")
    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), extent, strict=True):
        ET.SubElement(ext, tag).text = repr(float(v))
    ET.SubElement(canvas, "rotation").text = "0"
    _srs(ET.SubElement(canvas, "destinationsrs"), crs)
    projectlayers = ET.SubElement(root, "projectlayers")
    for lyr in layers:
        _maplayer(projectlayers, lyr)
    order = ET.SubElement(root, "layerorder")
    for lyr in layers:
        ET.SubElement(order, "layer", {"id": lyr.id})
    props = ET.SubElement(root, "properties")
    paths = ET.SubElement(props, "Paths")
    ET.SubElement(paths, "Absolute", {"type": "bool"}).text = "false"
    srs = ET.SubElement(props, "SpatialRefSys")
    ET.SubElement(srs, "ProjectionsEnabled", {"type": "int"}).text = "1"
    ET.SubElement(srs, "ProjectCrs", {"type": "QString"}).text = crs.get("authid", "")
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return f"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n{body}\n"
