"""The QField package of a survey plan: a folder and a ZIP a crew opens on a phone, fills in, brings back.

``PLAN/qfield/<site>.qgs`` + ``observations.gpkg`` (the visits with empty fields to fill: presence,
cover, photo, date, examiner, notes) + context layers + an offline JPEG basemap of the orthomosaic and
the probability map, all with relative paths. The filled ``observations.gpkg`` goes straight back into
``spurgemap tile --plots`` (empty presence = not visited, skipped).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from shapely.geometry.base import BaseGeometry

from spurgemap.core.errors import InputError
from spurgemap.fieldwork.qgs_xml import FormField, Layer, Widget, project_xml, rgb_qml, value_map
from spurgemap.fieldwork.styles import visits_vector_qml, zones_vector_qml
from spurgemap.geo import qfield_io as qio
from spurgemap.predict.mapset import SUFFIXES, map_files
from spurgemap.predict.styles import presence_vector_qml, prob_raster_qml

log = logging.getLogger(__name__)
BASEMAP_MAX_PX = 16384  # longest side of the offline basemap; larger orthomosaics are averaged down
OBS_LAYER = "observations"
# Daubenmire cover classes: what a crew can judge by eye in a plot
COVER_CLASSES = [("0: none", "0"), ("1: 0-5 %", "1"), ("2: 5-25 %", "2"), ("3: 25-50 %", "3"),
                 ("4: 50-75 %", "4"), ("5: 75-95 %", "5"), ("6: 95-100 %", "6")]
# (name, GeoPackage type, form): presence is what `tile` reads back; 1/0 so a nullable integer survives
EDIT_FIELDS: list[tuple[str, str, FormField]] = [
    ("presence", "INTEGER", FormField("presence", "leafy spurge found", value_map([("present", "1"),
                                                                                    ("absent", "0")]),
                                      not_null=True)),
    ("cover_class", "TEXT", FormField("cover_class", "cover class (Daubenmire)", value_map(COVER_CLASSES))),
    ("cover_pct", "INTEGER", FormField("cover_pct", "cover (%)", Widget("Range", {
        "Min": 0, "Max": 100, "Step": 1, "Style": "SpinBox", "AllowNull": True, "Precision": 0,
        "Suffix": " %"}))),
    ("photo", "TEXT", FormField("photo", "photo", Widget("ExternalResource", {
        "DocumentViewer": 1, "DocumentViewerHeight": 0, "DocumentViewerWidth": 0, "FileWidget": True,
        "FileWidgetButton": True, "RelativeStorage": 1, "StorageMode": 0, "FileWidgetFilter": "",
        "PropertyCollection": {"name": "", "type": "collection"}}))),
    ("obs_date", "DATE", FormField("obs_date", "observation date", Widget("DateTime", {
        "allow_null": True, "calendar_popup": True, "display_format": "yyyy-MM-dd", "field_format": "yyyy-MM-dd",
        "field_iso_format": False}), default="to_date(now())", default_on_update=True)),
    ("examiner", "TEXT", FormField("examiner", "examiner", Widget("TextEdit", {"IsMultiline": False,
                                                                               "UseHtml": False}))),
    ("notes", "TEXT", FormField("notes", "notes", Widget("TextEdit", {"IsMultiline": True, "UseHtml": False}))),
]


@dataclass
class QFieldInputs:
    site: str
    table: pd.DataFrame  # the visits, one row each (any columns; they become read-only fields)
    geoms: list[BaseGeometry]  # visit points in the map CRS
    crs_wkt: str
    prob_path: Path
    threshold: float
    species: str = "leafy spurge"
    ortho: Path | None = None  # the basemap's source; None: no basemap
    surveyed: list[Path] = field(default_factory=list)  # --plots / --survey layers
    zones: Path | None = None  # a zones.gpkg (or any polygon layer) to show


def check_package_inputs(ortho: Path | None, zones: Path | None) -> None:
    """Refuse a named --ortho / --zones that is not there before anything is written."""
    for option, path in (("--ortho", ortho), ("--zones", zones)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{option} {path}: file not found")


def _vector(lid: str, name: str, gpkg: str, layer: str, crs: dict[str, str], geometry: str, qml: str | None,
            fields: list[str] | None = None) -> Layer:
    return Layer(lid, name, "vector", f"./{gpkg}|layername={layer}", crs, qml, geometry,
                 fields=fields or [], read_only=list(fields or []))


def write_qfield_package(plan_dir: Path, q: QFieldInputs) -> dict[str, Path]:
    """Write ``plan_dir/qfield/`` and ``plan_dir/<site>_qfield.zip``; returns both paths."""
    folder = plan_dir / "qfield"
    folder.mkdir()
    crs = qio.crs_xml_fields(q.crs_wkt)
    names = [name for name, _, _ in EDIT_FIELDS]
    table = q.table.drop(columns=[c for c in q.table.columns if c in names or c.lower() == "fid"])
    qio.write_observations(folder / "observations.gpkg", table, q.geoms, q.crs_wkt, OBS_LAYER,
                           [(name, sql) for name, sql, _ in EDIT_FIELDS])
    model_fields = ["fid", *map(str, table.columns)]
    obs = Layer("spurgemap_observations", "observations", "vector", f"./observations.gpkg|layername={OBS_LAYER}", crs,
                visits_vector_qml(), "Point", fields=[*model_fields, *names],
                form=[f for _, _, f in EDIT_FIELDS], read_only=model_fields)
    layers = [obs]
    context = folder / "context.gpkg"
    if q.zones is not None and q.zones.exists() and qio.copy_vector_layer(q.zones, context, "zones", q.crs_wkt):
        layers.append(_vector("spurgemap_zones", "spray zones", "context.gpkg", "zones", crs, "MultiPolygon",
                              zones_vector_qml()))
    presence = map_files(q.prob_path.parent, q.prob_path.name.removesuffix(SUFFIXES["prob"]))["presence"]
    if presence.exists() and qio.copy_vector_layer(presence, context, "presence", q.crs_wkt):
        layers.append(_vector("spurgemap_presence", f"{q.species} presence (map)", "context.gpkg", "presence", crs,
                              "MultiPolygon", presence_vector_qml(q.species)))
        layers[-1].visible = False  # the probability raster shows the same cells; one tap turns it on
    for i, (name, gtype) in enumerate(qio.write_context_layers(context, q.surveyed, q.crs_wkt).items()):
        layers.append(_vector(f"spurgemap_{name}_{i:02d}", name.replace("_", " "), "context.gpkg", name, crs,
                              gtype, None))
    qio.copy_raster(q.prob_path, folder / "probability.tif")
    layers.append(Layer("spurgemap_probability", f"{q.species} probability (%)", "raster", "./probability.tif", crs,
                        prob_raster_qml(round(q.threshold * 100), q.species)))
    extent = qio.raster_extent(folder / "probability.tif")
    if q.ortho is None or not q.ortho.exists():
        log.warning("%s: orthomosaic %s not found, the QField project has no basemap; pass --ortho",
                    q.prob_path, q.ortho)
    elif qio.write_basemap(q.ortho, folder / "basemap.tif", BASEMAP_MAX_PX):
        layers.append(Layer("spurgemap_basemap", "orthomosaic", "raster", "./basemap.tif", qio.crs_xml_fields(
            qio.raster_crs_wkt(folder / "basemap.tif")), rgb_qml()))
    project = folder / f"{q.site}.qgs"
    project.write_text(project_xml(f"{q.site} survey", crs, layers, extent), encoding="utf-8")
    archive = plan_dir / f"{q.site}_qfield.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return {"qfield": folder, "qfield_zip": archive}
