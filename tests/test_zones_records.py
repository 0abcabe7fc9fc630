"""zones -> dose (product and carrier), infestation records for weed databases, styled KMZ, CLI errors."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from fieldwork_maps import CELL, cli, make_pct, write_maps  # tests/ is on sys.path
from pyproj import Transformer

from spurgemap.config import Product, SpurgemapConfig, TreatmentConfig, ZonesConfig
from spurgemap.core.errors import InputError
from spurgemap.fieldwork import ZonesInputs, run_zones
from spurgemap.geo.kmz import has_libkml


def cfg(zones: dict | None = None, **treatment) -> SpurgemapConfig:
    return SpurgemapConfig(zones=ZonesConfig(**(zones or {})), treatment=TreatmentConfig(**treatment))


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    """A map whose source orthomosaic carries a TIFF DateTime, as drone software writes it."""
    root = tmp_path_factory.mktemp("maps")
    ortho = root / "site07_ortho.tif"
    with rasterio.open(ortho, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8", crs="EPSG:32612",
                       transform=rasterio.Affine(1, 0, 500_000, 0, -1, 5_200_000)) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
        dst.update_tags(TIFFTAG_DATETIME="2025:06:15 11:20:00")
    return write_maps(root / "maps", make_pct(), name="site07", extra_tags={"source": str(ortho)})


def test_dose_product_water_tanks_and_saving(maps, tmp_path):
    res = run_zones(cfg(product="picloram", carrier_l_per_ha=150.0, tank_l=400.0), ZonesInputs(maps, tmp_path / "z"))
    s = res.summary
    ha = res.treated_area_m2 / 1e4
    site_ha = s["mapped_area_m2"] / 1e4
    assert s["spray_volume_l"] == pytest.approx(ha * 150, abs=1e-3) and "herbicide_l" not in s
    assert s["product"]["name"] == "picloram" and s["product"]["rate_per_ha"] == 2.34
    assert s["product"]["total_l"] == pytest.approx(ha * 2.34, abs=1e-4)
    assert s["product"]["saved_l"] == pytest.approx((site_ha - ha) * 2.34, abs=1e-4)
    assert "EXAMPLE" in s["product"]["source"] and "not advice" in s["product"]["note"]
    assert s["water_l"] == pytest.approx(ha * (150 - 2.34), abs=1e-3)
    assert s["tank_loads"] == math.ceil(ha * 150 / 400) and s["tank_loads_broadcast"] == math.ceil(site_ha * 150 / 400)
    assert s["saving_vs_broadcast"] == pytest.approx(1 - ha / site_ha, abs=1e-4)
    gdf = gpd.read_file(res.files["gpkg"])
    assert np.allclose(gdf.product_l, gdf.area_ha * 2.34, atol=1e-4)
    assert np.allclose(gdf.water_l + gdf.product_l, gdf.spray_volume_l, atol=1e-3)
    assert (gdf.rate == 150.0).all()
    rows = pd.read_csv(res.files["summary_csv"])
    site = rows[rows.scope == "site"].iloc[0]
    assert site.product_l == pytest.approx(s["product"]["total_l"]) and site.spray_volume_l == s["spray_volume_l"]


def test_dry_product_and_rate_as_the_older_name(maps, tmp_path):
    dry = Product(name="granules", rate_per_ha=12.5, unit="kg/ha", source="test")
    res = run_zones(SpurgemapConfig(zones=ZonesConfig(rate_l_per_ha=100.0),
                                    treatment=TreatmentConfig(products=[dry], product="granules")),
                    ZonesInputs(maps, tmp_path / "z"))
    ha = res.treated_area_m2 / 1e4
    assert res.summary["product"]["total_kg"] == pytest.approx(ha * 12.5, abs=1e-4)
    assert res.summary["water_l"] == pytest.approx(ha * 100, abs=1e-3)  # a dry product adds no liquid
    assert res.summary["tank_loads"] is None  # no tank given


@pytest.mark.parametrize("treatment,zones,fragment", [
    ({"carrier_l_per_ha": 120.0}, {"rate_l_per_ha": 100.0}, "--rate 100 and --carrier 120"),
    ({"carrier_l_per_ha": 2.0, "product": "picloram"}, {}, "--carrier 2: the spray volume must exceed"),
])
def test_dose_contradictions_are_refused(maps, tmp_path, treatment, zones, fragment):
    with pytest.raises(InputError, match=fragment):
        run_zones(cfg(zones, **treatment), ZonesInputs(maps, tmp_path / "z"))
    assert not (tmp_path / "z").exists()


def test_infestation_records_generic(maps, tmp_path):
    res = run_zones(cfg(), ZonesInputs(maps, tmp_path / "z", examiner="J. Doe"))
    rec = pd.read_csv(res.files["records_csv"])
    gpkg = gpd.read_file(res.files["records_gpkg"], layer="infestations")
    zones = gpd.read_file(res.files["gpkg"])
    assert len(rec) == len(gpkg) == res.zones > 3
    assert list(rec.record_id) == [f"site07-Z{i:03d}" for i in range(1, res.zones + 1)]
    assert (rec.species == "leafy spurge").all() and (rec.species_code == "EUES").all()
    assert (rec.scientific_name == "Euphorbia esula").all()
    assert (rec.obs_date == "2025-06-15").all() and (rec.examiner == "J. Doe").all()  # the ortho's DateTime
    assert res.summary["records"]["date_from"].endswith("TIFF DateTime")
    assert (rec.status == "present").all() and rec.data_source.str.startswith("spurgemap 0.1.0 model 000000").all()
    assert np.allclose(rec.gross_area_m2, zones.area_m2, atol=0.01)
    scale = zones.area_m2 / zones.area  # ground m² per map unit² (UTM's scale factor)
    assert np.allclose(rec.infested_area_m2, zones.present_cells * CELL**2 * scale, atol=0.01)
    assert (rec.infested_area_m2 <= rec.gross_area_m2 + 1e-6).all()
    assert np.allclose(rec.gross_area_acres, rec.gross_area_m2 / 4046.8564224, atol=1e-5)
    assert np.allclose(rec.percent_cover, 100 * rec.infested_area_m2 / rec.gross_area_m2, atol=0.06)
    lon, lat = Transformer.from_crs(32612, 4326, always_xy=True).transform(zones.centroid.x, zones.centroid.y)
    assert np.allclose(rec.longitude, lon, atol=1e-6) and np.allclose(rec.latitude, lat, atol=1e-6)
    assert np.allclose(rec.coord_uncertainty_m, math.ceil(CELL * math.sqrt(2) / 2 * 10) / 10)  # half a diagonal
    assert gpkg.crs.to_epsg() == 32612 and np.allclose(gpkg.area, zones.area)


def test_infestation_records_eddmaps_spelling_and_date_option(maps, tmp_path):
    res = run_zones(cfg({"records": "eddmaps"}), ZonesInputs(maps, tmp_path / "z", date="2025-07-01"))
    rec = pd.read_csv(res.files["records_csv"])
    for col in ("ObsDate", "Status", "Latitude", "Longitude", "InfestAcre", "GrossAcre", "Percentcov"):
        assert col in rec.columns, col
    assert not {"obs_date", "latitude", "percent_cover"} & set(rec.columns)
    assert (rec.ObsDate == "2025-07-01").all() and (rec.Status == "Positive").all()
    assert res.summary["records"]["date_from"] == "--date"


def test_records_without_any_date_warn(tmp_path, caplog):
    maps = write_maps(tmp_path / "m", make_pct(), name="nodate")
    res = run_zones(cfg(), ZonesInputs(maps, tmp_path / "z"))
    assert pd.read_csv(res.files["records_csv"]).obs_date.isna().all()
    assert any("no observation date" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not has_libkml(), reason="this GDAL has no LIBKML driver")
def test_styled_kmz_reads_back(maps, tmp_path):
    res = run_zones(cfg(carrier_l_per_ha=150.0), ZonesInputs(maps, tmp_path / "z"))
    path = res.files["kmz"]
    assert path.name == "site07_zones.kmz" and path.read_bytes()[:2] == b"PK"
    df = pyogrio.read_dataframe(path, layer="zones")
    assert df.crs.to_epsg() == 4326
    polys, points = df[df.geom_type == "Polygon"], df[df.geom_type == "Point"]
    assert len(polys) == len(points) == res.zones
    assert list(polys.Name) == [f"zone {i}" for i in range(1, res.zones + 1)]
    assert polys.OGR_STYLE.str.match(r"BRUSH\(fc:#FF[0-9A-F]{4}99\);PEN").all()
    assert points.OGR_STYLE.str.contains('LABEL').all() and polys.description.str.contains("150 L/ha").all()
    zones = gpd.read_file(res.files["gpkg"]).to_crs(4326)
    assert all(z.contains(p) for z, p in zip(zones.geometry, points.geometry, strict=True))
    redder = zones.mean_prob.to_numpy().argmax()  # likelier zones are redder (less green)
    green = polys.OGR_STYLE.str.slice(11, 13).apply(lambda h: int(h, 16)).to_numpy()
    assert green[redder] == green.min()


@pytest.mark.parametrize("args,fragment", [
    (["--product", "nope"], "--product nope: unknown product 'nope'"),
    (["--terminal", "deere,nope"], "--terminal deere,nope:"),
    (["--date", "2024-02-30"], "--date '2024-02-30': give the observation date as YYYY-MM-DD"),
    (["--max-zones", "0"], "--max-zones 0:"),
    (["--carrier", "-5"], "--carrier -5.0: Input should be greater than 0"),
])
def test_cli_refuses_bad_options_in_one_line(maps, tmp_path, args, fragment):
    res = cli("zones", maps, "--out", tmp_path / "z", *args)
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "Traceback" not in res.output
    assert not (tmp_path / "z").exists()


def test_cli_prints_the_dose(maps, tmp_path):
    res = cli("zones", maps, "--out", tmp_path / "z", "--carrier", "150", "--product", "imazapic", "--tank-l",
              "400", "--terminal", "generic,deere", "--records", "eddmaps", "--examiner", "A B")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "L spray" in text and "L imazapic" in text and "tank load" in text
    assert (tmp_path / "z" / "deere" / "Rx" / "SITE07.shp").exists()
    assert (tmp_path / "z" / "TASKDATA" / "TASKDATA.XML").exists()
