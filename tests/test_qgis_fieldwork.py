"""The field-work layers open in real QGIS 3.22 (headless), in the right CRS, with their styles applied."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from fieldwork_maps import make_pct, write_maps  # tests/ is on sys.path (pytest rootdir conftest)
from test_qgis_styles import _qgis_env, qgis_python  # noqa: F401  (the fixture: skip or, under CI, fail)

from spurgemap.config import SpurgemapConfig, SurveyPlanConfig
from spurgemap.fieldwork import (
    ChangeInputs,
    SurveyPlanInputs,
    ZonesInputs,
    run_change,
    run_survey_plan,
    run_zones,
)

SCRIPT = Path(__file__).parent / "qgis" / "check_fieldwork.py"


def _style_type(qml: Path) -> str:
    """The renderer a .qml asks for, read independently of QGIS."""
    root = ET.parse(qml).getroot()
    node = root.find(".//renderer-v2")
    if node is None:
        node = root.find(".//rasterrenderer")
    assert node is not None, qml
    return node.attrib["type"]


def test_field_work_layers_open_styled_in_qgis(qgis_python: str, tmp_path: Path) -> None:  # noqa: F811
    maps = write_maps(tmp_path / "maps", make_pct())
    later = write_maps(tmp_path / "later", make_pct(seed=3))
    cfg = SpurgemapConfig(survey_plan=SurveyPlanConfig(n=8, min_spacing_m=5.0))
    plan = run_survey_plan(cfg, SurveyPlanInputs(maps, tmp_path / "plan"))
    zones = run_zones(cfg, ZonesInputs(maps, tmp_path / "zones"))
    change = run_change(cfg, ChangeInputs(maps, later, tmp_path / "change"))
    p, z, c = plan.out, zones.out, change.out
    items = [
        {"path": str(p / "visits.gpkg"), "kind": "vector", "epsg": 32612, "features": plan.n_visits,
         "renderer": _style_type(p / "visits.qml")},
        {"path": str(p / "visits.gpx"), "kind": "vector", "layer": "waypoints", "epsg": 4326,
         "features": plan.n_visits},
        {"path": str(p / "visits.gpx"), "kind": "vector", "layer": "routes", "epsg": 4326, "features": 1},
        {"path": str(z / "zones.gpkg"), "kind": "vector", "epsg": 32612, "features": zones.zones,
         "renderer": _style_type(z / "zones.qml")},
        {"path": str(zones.files["shp"]), "kind": "vector", "epsg": 32612, "features": zones.zones,
         "renderer": _style_type(zones.files["shp_qml"])},
        {"path": str(z / "zones.kml"), "kind": "vector", "epsg": 4326, "features": zones.zones},
        {"path": str(c / "change.tif"), "kind": "raster", "epsg": 32612, "renderer": _style_type(c / "change.qml")},
        {"path": str(c / "change.gpkg"), "kind": "vector", "epsg": 32612,
         "renderer": _style_type(c / "change_polygons.qml")},
    ]
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps(items))
    proc = subprocess.run([qgis_python, str(SCRIPT), str(expect)], env=_qgis_env(), capture_output=True, text=True,
                          timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"], result["problems"]
    assert proc.returncode == 0 and len(result["layers"]) == len(items)
    # the styles are not QGIS' defaults: a layer without its style would show another renderer
    assert {i["renderer"] for i in items if i.get("renderer")} >= {"RuleRenderer", "paletted"}
