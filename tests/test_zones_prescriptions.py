"""zones -> sprayer terminals: ISOXML TASKDATA checked against the V4-3 XSD, terminal Shapefiles read
back with GDAL (pyogrio), the zone cap.

The XSDs sit in ../shared/reference/isoxml beside the repository (as ../shared/realdata for
test_realdata.py); without them the schema test reports itself skipped, and under CI it fails.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from fieldwork_maps import THRESHOLD, make_pct, write_maps, zones_cfg  # tests/ is on sys.path
from shapely import box, contains_xy

from spurgemap.config import SpurgemapConfig, TreatmentConfig, ZonesConfig
from spurgemap.fieldwork import ZonesInputs, run_zones
from spurgemap.geo import terminals

ISOXML_XSD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "isoxml" / "ISO11783_TaskFile_V4-3.xsd"
if not ISOXML_XSD.is_file() and os.environ.get("CI"):
    raise RuntimeError(f"CI is set but the ISOXML schemas are missing at {ISOXML_XSD.parent}")
needs_xsd = pytest.mark.skipif(not ISOXML_XSD.is_file(), reason=f"ISOXML schemas not found at {ISOXML_XSD.parent}")


def cfg(zones: dict | None = None, **treatment) -> SpurgemapConfig:
    return SpurgemapConfig(zones=ZonesConfig(**(zones or {})), treatment=TreatmentConfig(**treatment))


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct(), name="site01")


def spots_pct(n_side: int = 12) -> np.ndarray:
    """Lone present cells 3 cells apart: n_side² separate zones with no buffer."""
    pct = np.full((3 * n_side, 3 * n_side), 5, np.uint8)
    pct[1::3, 1::3] = 90
    return pct


def schema():
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(ISOXML_XSD)))


@needs_xsd
def test_isoxml_zone_polygons_validate_and_carry_the_rate(maps, tmp_path):
    from lxml import etree

    res = run_zones(cfg(carrier_l_per_ha=150.0, product="picloram"), ZonesInputs(maps, tmp_path / "z"))
    path = res.files["taskdata"]
    assert path == tmp_path / "z" / "TASKDATA" / "TASKDATA.XML"
    doc = etree.parse(str(path))
    xsd = schema()
    assert xsd.validate(doc), xsd.error_log
    root = doc.getroot()
    assert (root.get("VersionMajor"), root.get("VersionMinor")) == ("4", "3")
    (tsk,) = root.findall("TSK")
    assert (tsk.get("H"), tsk.get("I"), tsk.get("J")) == ("0", "0", "0")  # default, position lost, out of field
    tzns = tsk.findall("TZN")
    assert [t.get("A") for t in tzns] == [str(i) for i in range(res.zones + 1)]
    assert tzns[0].find("PDV").get("B") == "0" and tzns[0].find("PLN") is None  # the no-spray zone
    for t in tzns[1:]:
        pdv = t.find("PDV")
        assert (pdv.get("A"), pdv.get("B"), pdv.get("C")) == ("0001", "15000", "PDT1")  # 150 L/ha = 15000 mm³/m²
    assert root.find("PDT").get("B") == "picloram"
    numbers = [v for el in root.iter("PNT") for v in (el.get("C"), el.get("D"))]
    assert numbers and not any(re.search("[eE]", v) for v in numbers)  # plain decimals
    # the polygons are the zones, in WGS 84
    zones = gpd.read_file(res.files["gpkg"]).to_crs(4326)
    for t, zone in zip(tzns[1:], zones.geometry, strict=True):
        lsg = t.find("PLN").find("LSG")
        assert lsg.get("A") == "1"
        lat = np.array([float(p.get("C")) for p in lsg.findall("PNT")])
        lon = np.array([float(p.get("D")) for p in lsg.findall("PNT")])
        assert np.allclose([lon.min(), lat.min(), lon.max(), lat.max()], zone.bounds, atol=1e-8)
    assert res.summary["isoxml"]["rate_mm3_per_m2"] == 15000


@needs_xsd
def test_isoxml_grid_codes_cover_the_zones(maps, tmp_path):
    from lxml import etree

    res = run_zones(cfg({"isoxml_grid": True}, carrier_l_per_ha=100.0), ZonesInputs(maps, tmp_path / "z"))
    doc = etree.parse(str(res.files["taskdata"]))
    assert schema().validate(doc), schema().error_log
    grd = doc.getroot().find("TSK").find("GRD")
    assert grd.get("I") == "2" and grd.get("G") == "GRD00000" and doc.getroot().find("TSK").find("TZN/PLN") is None
    cols, rows = int(grd.get("E")), int(grd.get("F"))
    data = res.files["taskdata_grid"].read_bytes()
    assert len(data) == rows * cols == int(grd.get("H"))
    codes = np.frombuffer(data, np.uint8).reshape(rows, cols)
    assert set(np.unique(codes)) == set(range(res.zones + 1))
    lat0, lon0, dlat, dlon = (float(grd.get(k)) for k in "ABCD")
    zones = gpd.read_file(res.files["gpkg"]).to_crs(4326)
    for code, zone in enumerate(zones.geometry, 1):
        p = zone.representative_point()
        r, c = int((p.y - lat0) // dlat), int((p.x - lon0) // dlon)  # row 0 is the southern row
        near = codes[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        assert code in near
    # the grid's zone cells add up to the zones' area within a cell's rim
    cell_m2 = (dlat * 111_320) * (dlon * 111_320 * np.cos(np.radians(lat0)))
    assert (codes > 0).sum() * cell_m2 == pytest.approx(res.treated_area_m2, rel=0.25)


def test_no_isoxml_without_a_spray_volume(maps, tmp_path):
    res = run_zones(cfg(), ZonesInputs(maps, tmp_path / "z"))
    assert "taskdata" not in res.files and not (tmp_path / "z" / "TASKDATA").exists()
    assert res.summary["isoxml"] is None


def test_terminal_profiles_read_back(maps, tmp_path):
    res = run_zones(cfg({"terminals": list(terminals.PROFILES)}, carrier_l_per_ha=120.5),
                    ZonesInputs(maps, tmp_path / "z"))
    out = tmp_path / "z"
    expect = {  # file, EPSG, rate field, its type, its position
        "generic": (out / "site01_zones.shp", 32612, "RATE", "float64", 4),
        "raven": (out / "raven" / "site01_zones.shp", 4326, "RATE", "float64", 4),
        "deere": (out / "deere" / "Rx" / "SITE01.shp", 4326, "RATE", "int32", 4),
        "trimble": (out / "trimble" / "site01_zones.shp", 4326, "TGT_RATE", "float64", 4),
        "agfusion": (out / "agfusion" / "site01_zones.shp", 4326, "RATE", "float64", 0),
    }
    for terminal, (path, epsg, field, dtype, position) in expect.items():
        assert res.files[f"shp_{terminal}"] == path and path.with_suffix(".prj").exists()
        info = pyogrio.read_info(path)
        assert info["features"] == res.zones
        assert list(info["fields"]).index(field) == position and info["dtypes"][position] == dtype, terminal
        gdf = gpd.read_file(path)
        assert gdf.crs.to_epsg() == epsg
        rate = gdf[field].to_numpy()
        assert np.all(rate == (120 if terminal == "deere" else 120.5)), terminal
    assert res.files["shp"] == expect["generic"][0] and res.files["shp_qml"].exists()
    assert len(pyogrio.read_info(expect["agfusion"][0])["fields"]) == 6
    assert terminals.shapefile_bytes(expect["agfusion"][0]) <= 250_000
    zipped = expect["agfusion"][0].with_suffix(".zip")  # the upload: GDAL reads the Shapefile inside the zip
    assert zipped.stat().st_size <= 250_000 and pyogrio.read_info(f"/vsizip/{zipped}")["features"] == res.zones
    assert gpd.read_file(f"/vsizip/{zipped}").crs.to_epsg() == 4326


def test_deere_names_are_8_3_and_unique_per_site():
    names = {terminals.name_83(s) for s in ("site01", "north_pasture_2024", "north_pasture_2025", "é")}
    assert len(names) == 4 and all(re.fullmatch(r"[A-Z0-9]{1,8}", n) for n in names)


def test_zone_cap_merges_nearest_zones_with_a_warning(tmp_path, caplog):
    maps = write_maps(tmp_path / "m", spots_pct(), name="spots")
    free = run_zones(zones_cfg(buffer_m=0.0, simplify_m=0.0), ZonesInputs(maps, tmp_path / "free"))
    assert free.zones == 144 and free.summary["zones_merged_for_cap"] == 0
    with caplog.at_level(logging.WARNING):
        res = run_zones(cfg({"buffer_m": 0.0, "simplify_m": 0.0, "terminals": ["agfusion"], "merge_step_m": 2.0}),
                        ZonesInputs(maps, tmp_path / "capped"))
    assert res.summary["zone_cap"] == 100 and res.zones <= 100
    assert res.summary["zones_merged_for_cap"] == 144 - res.zones
    assert any(f"{144 - res.zones} zones merged" in r.getMessage() and "agfusion" in r.getMessage()
               for r in caplog.records)
    # every present cell is still inside a zone, and each zone holds some
    gdf = gpd.read_file(res.files["gpkg"])
    union = gdf.union_all()
    rr, cc = np.nonzero(spots_pct() >= THRESHOLD * 100)
    cells = [box(500_000 + c * 3.5, 5_200_000 - (r + 1) * 3.5, 500_000 + (c + 1) * 3.5, 5_200_000 - r * 3.5)
             for r, c in zip(rr, cc, strict=True)]
    assert all(union.covers(c) for c in cells)
    assert gdf.present_cells.sum() == len(cells) and (gdf.present_cells > 0).all()
    assert not any(a.overlaps(b) for i, a in enumerate(gdf.geometry) for b in gdf.geometry[i + 1:])
    capped = run_zones(cfg({"buffer_m": 0.0, "simplify_m": 0.0, "max_zones": 10}), ZonesInputs(maps, tmp_path / "c10"))
    assert capped.zones <= 10 and capped.summary["zone_cap"] == 10


def test_agfusion_size_limit_simplifies_with_a_warning(maps, tmp_path, monkeypatch, caplog):
    small = replace(terminals.PROFILES["agfusion"], max_bytes=3000)
    monkeypatch.setitem(terminals.PROFILES, "agfusion", small)
    with caplog.at_level(logging.WARNING):
        res = run_zones(cfg({"terminals": ["agfusion"], "simplify_m": 0.0}), ZonesInputs(maps, tmp_path / "z"))
    path = res.files["shp_agfusion"]
    assert terminals.shapefile_bytes(path) <= 3000 and res.summary["terminals"]["agfusion"]["simplified_deg"] > 0
    assert any("simplified" in r.getMessage() for r in caplog.records)
    assert pyogrio.read_info(path)["features"] == res.zones


def test_grid_centres_take_their_zone():
    from spurgemap.geo.isoxml import grid_codes

    zone = box(-111.0, 46.0, -110.9999, 46.0001)
    codes, lat0, lon0, dlat, dlon = grid_codes([zone], 1.0)
    lat = lat0 + (np.arange(codes.shape[0]) + 0.5) * dlat
    lon = lon0 + (np.arange(codes.shape[1]) + 0.5) * dlon
    glon, glat = np.meshgrid(lon, lat)
    assert np.array_equal(codes == 1, contains_xy(zone, glon, glat)) and codes.any()


def test_a_clean_site_gives_empty_layers_and_no_taskdata(tmp_path):
    maps = write_maps(tmp_path / "m", np.full((20, 20), 5, np.uint8), name="clean")
    res = run_zones(cfg({"terminals": ["deere", "agfusion"]}, carrier_l_per_ha=150.0),
                    ZonesInputs(maps, tmp_path / "z"))
    assert res.zones == 0 and "taskdata" not in res.files and res.summary["saving_vs_broadcast"] == 1.0
    assert pyogrio.read_info(res.files["shp_deere"])["features"] == 0
    assert pyogrio.read_info(res.files["records_gpkg"])["features"] == 0


@needs_xsd
def test_isoxml_partfield_holds_every_zone(maps, tmp_path):
    from lxml import etree

    from spurgemap.geo.isoxml import plain

    res = run_zones(cfg(carrier_l_per_ha=80.0), ZonesInputs(maps, tmp_path / "z"))
    root = etree.parse(str(res.files["taskdata"])).getroot()
    (pfd,) = root.findall("PFD")
    assert root.find("TSK").get("E") == pfd.get("A") == "PFD1" and pfd.get("C") == "site01"
    pts = [(float(p.get("D")), float(p.get("C"))) for p in pfd.find("PLN").find("LSG").findall("PNT")]
    assert pfd.find("PLN").get("A") == "1"
    from shapely import Polygon

    field = Polygon(pts)
    zones = gpd.read_file(res.files["gpkg"]).to_crs(4326)
    assert all(field.buffer(1e-9).contains(z) for z in zones.geometry)
    assert int(pfd.get("D")) >= res.summary["mapped_area_m2"] * 0.99
    assert plain(0.0000314) == "0.0000314" and plain(-0.0) == "0" and plain(12.5) == "12.5"
