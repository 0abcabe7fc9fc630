"""The QField package of `survey-plan`: written without QGIS, opened and edited in real QGIS 3.22, tiled back."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from conftest import ORIGIN
from fieldwork_maps import plan_cfg
from shapely import Point, box
from test_qgis_styles import _qgis_env, qgis_python  # noqa: F401  (the fixture: skip or, under CI, fail)
from test_survey_roundtrip import MAP_CELL, make_site

from spurgemap.config import load_config
from spurgemap.fieldwork import SurveyPlanInputs, run_survey_plan
from spurgemap.fieldwork.qfield import EDIT_FIELDS
from spurgemap.tile.stage import TileInputs, run_tile

SCRIPT = Path(__file__).parent / "qgis" / "check_qfield.py"
UTM = "EPSG:32612"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, Path, object]:
    """A plan over one site with surveyed plots (a polygon and a point), a zones layer and presence polygons."""
    root = tmp_path_factory.mktemp("qf")
    ortho, maps = make_site(root, "s1", 0.0)
    x0, y0 = ORIGIN[0] + MAP_CELL, ORIGIN[1] - MAP_CELL
    plots = root / "plots.gpkg"
    gpd.GeoDataFrame({"site_id": ["s1", "s1"], "plot_id": ["P1", "P2"]},
                     geometry=[box(x0, y0 - MAP_CELL, x0 + MAP_CELL, y0), Point(x0 + 5.5 * MAP_CELL, y0 - 0.5)],
                     crs=UTM).to_file(plots)
    zones = root / "zones.gpkg"
    gpd.GeoDataFrame({"zone": [1]}, geometry=[box(x0 + 2, y0 - 8, x0 + 6, y0 - 4)], crs=UTM).to_file(
        zones, layer="zones")
    gpd.GeoDataFrame({"area_m2": [4.0]}, geometry=[box(x0 + 3, y0 - 7, x0 + 5, y0 - 5)], crs=UTM).to_file(
        maps / "s1_presence.gpkg", layer="presence")
    res = run_survey_plan(plan_cfg(n=8, min_spacing_m=0.0), SurveyPlanInputs(maps, root / "plan", exclude=[plots],
                                                                           zones=zones))
    return root, ortho, res


def test_package_files_relative_paths_crs_and_basemap(package):
    root, ortho, res = package
    folder, archive = res.files["qfield"], res.files["qfield_zip"]
    assert archive.name == "s1_qfield.zip" and folder.name == "qfield"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["basemap.tif", "context.gpkg", "observations.gpkg", "probability.tif", "s1.qgs"]
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == names
    qgs = ET.parse(folder / "s1.qgs").getroot()
    sources = [e.text or "" for e in qgs.iter("datasource")]
    assert len(sources) == 7 and all(s.startswith("./") for s in sources)
    assert str(root) not in (folder / "s1.qgs").read_text()  # nothing absolute: the folder can move
    assert qgs.find("properties/SpatialRefSys/ProjectionsEnabled").text == "1"
    assert qgs.find("projectCrs/spatialrefsys/authid").text == "EPSG:32612"
    with rasterio.open(folder / "basemap.tif") as b, rasterio.open(ortho) as o:
        assert b.compression.name == "jpeg" and b.count == 3 and b.overviews(1)
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert b.bounds == o.bounds and b.crs == o.crs
        assert abs(b.read(2).mean() - o.read(2).mean()) < 3  # the same picture, JPEG-close
    obs = gpd.read_file(folder / "observations.gpkg")
    visits = gpd.read_file(res.files["gpkg"])
    assert list(obs.plot_id) == list(visits.plot_id) and obs.geometry.geom_equals(visits.geometry).all()
    for name, _, _ in EDIT_FIELDS:
        assert obs[name].isna().all(), name
    layers = {n for n, _ in __import__("pyogrio").list_layers(folder / "context.gpkg")}
    assert layers == {"zones", "presence", "plots", "surveyed_points"}


def test_qgis_opens_the_package_and_an_edit_saved_there_tiles_back(package, qgis_python, tmp_path):  # noqa: F811
    _, ortho, res = package
    phone = tmp_path / "phone"  # what QField does with the zip: unpack it somewhere else
    with zipfile.ZipFile(res.files["qfield_zip"]) as zf:
        zf.extractall(phone)
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps({"layer": "observations", "fid": 2, "values": {"presence": 1, "examiner": "JS",
                                                                            "cover_pct": 30}}))
    proc = subprocess.run([qgis_python, str(SCRIPT), str(phone / "s1.qgs"), str(edit)], env=_qgis_env(),
                          capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["read"] and out["crs"] == "EPSG:32612"
    layers = out["layers"]
    assert set(layers) == {"observations", "spray zones", "leafy spurge presence (map)", "plots",
                           "surveyed points", "leafy spurge probability (%)", "orthomosaic"}
    bad = {n: i for n, i in layers.items() if not i["valid"] or i["crs"] != "EPSG:32612"
           or not i["source"].startswith(str(phone))}
    assert not bad, bad
    assert out["tree"] == dict.fromkeys(layers, True)  # every layer in the legend is drawn
    assert layers["observations"]["features"] == 8 and layers["plots"]["features"] == 1
    assert layers["orthomosaic"]["renderer"] == "multibandcolor"
    assert layers["leafy spurge probability (%)"]["renderer"] == "singlebandpseudocolor"
    assert layers["observations"]["renderer"] == "RuleRenderer"
    fields = out["fields"]
    want = {"presence": "ValueMap", "cover_class": "ValueMap", "cover_pct": "Range", "photo": "ExternalResource",
            "obs_date": "DateTime", "examiner": "TextEdit", "notes": "TextEdit"}
    assert {n: fields[n]["widget"] for n in want} == want
    assert fields["presence"]["config"]["map"] == [{"present": "1"}, {"absent": "0"}]
    assert fields["presence"]["not_null"] and fields["presence"]["not_null_hard"]
    assert fields["presence"]["type"].startswith("Integer")
    assert fields["cover_pct"]["config"]["Min"] == 0 and fields["cover_pct"]["config"]["Max"] == 100
    assert fields["photo"]["config"]["RelativeStorage"] == 1
    assert fields["obs_date"]["type"] == "Date" and "now()" in fields["obs_date"]["default"]
    model = [n for n in fields if n not in want]
    assert {"plot_id", "probability", "reason", "site_id"} <= set(model)
    assert all(fields[n]["read_only"] for n in model) and not any(fields[n]["read_only"] for n in want)
    assert out["committed"], out["commit_errors"]
    # the crew's file, as QGIS saved it, goes straight back into tile
    obs = gpd.read_file(phone / "observations.gpkg")
    assert obs.presence.dtype.kind == "f" and obs.presence.notna().sum() == 1  # a nullable integer read as float
    tiled = run_tile(load_config(), TileInputs([ortho], phone / "observations.gpkg", tmp_path / "tiles"))
    idx = gpd.read_file(tmp_path / "tiles" / "tiles.gpkg")
    visited = obs.loc[obs.presence.notna()]
    assert list(idx.plot_id) == list(visited.plot_id) and list(idx.class_id) == [1]
    assert len(tiled.unvisited_plots) == 7
    assert idx.examiner.tolist() == ["JS"]


def test_missing_ortho_is_one_line_and_leaves_nothing(package, tmp_path):
    from fieldwork_maps import cli

    root, _, _ = package
    r = cli("survey-plan", root / "maps_s1", "--n", 4, "--min-spacing", 0, "--ortho", tmp_path / "nope.tif",
            "--out", tmp_path / "p")
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1 and "--ortho" in lines[0] and "nope.tif" in lines[0]
    assert not (tmp_path / "p").exists()
