"""Campaign predict on a Dask LocalCluster of 2 processes: maps equal single-orthomosaic runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from conftest import cli_ok, make_rgba

from spurgemap.campaign import CampaignInputs, expand_orthos, run_campaign
from spurgemap.campaign.stage import site_names
from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.model.backbones import create_backbone
from spurgemap.model.classifier import SpurgeClassifier, save_bundle
from spurgemap.predict import PredictInputs, run_predict

SITES = ("north", "south", "east")


def write_bundle(path: Path, threshold: float, head_std: float = 0.0) -> Path:
    """A random tiny bundle; `head_std` > 0 spreads its probabilities from tile to tile."""
    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    model = SpurgeClassifier(backbone, spec.num_features).eval()
    if head_std:
        with torch.no_grad():
            model.head.weight.normal_(0, head_std)
    save_bundle(path, model, {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 250, "gsd_m": 0.014,
        "threshold": threshold})
    return path


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> dict[str, object]:
    """Three small orthomosaics named sites/<site>/ortho.tif and a bundle whose threshold splits them."""
    root = tmp_path_factory.mktemp("campaign")
    orthos = []
    for i, site in enumerate(SITES):
        (root / "sites" / site).mkdir(parents=True)
        orthos.append(make_rgba(root / "sites" / site / "ortho.tif", 750, 1000, seed=i))
    probe = write_bundle(root / "probe.spurge", 0.5)
    cfg = load_config()
    run_predict(cfg, PredictInputs(orthos[0], probe, root / "probe"))
    with rasterio.open(root / "probe" / "ortho_prob.tif") as ds:
        pct = ds.read(1)
    threshold = float(np.median(pct[pct != 255])) / 100  # about half the cells present: a varying map
    return {"root": root, "orthos": orthos, "bundle": write_bundle(root / "model.spurge", threshold)}


def _same_maps(a: Path, b: Path) -> None:
    for name in ("ortho_prob.tif", "ortho_class.tif"):
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            assert np.array_equal(x.read(), y.read()) and x.transform == y.transform and x.crs == y.crs
    fa = json.loads((a / "ortho_tiles.geojson").read_text())["features"]
    fb = json.loads((b / "ortho_tiles.geojson").read_text())["features"]
    assert fa == fb and fa


def test_campaign_on_two_processes_equals_single_runs_and_survives_a_bad_file(field, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    orthos, bundle = list(field["orthos"]), field["bundle"]
    bad = tmp_path / "broken" / "ortho.tif"
    bad.parent.mkdir()
    bad.write_text("not a GeoTIFF")
    cfg = load_config()
    maps = tmp_path / "maps"
    res = run_campaign(cfg, CampaignInputs([*orthos, bad], bundle, maps, workers=2, crs="EPSG:4326"))
    assert res.workers == 2 and res.redone == 4
    rows = {r["site"]: r for r in csv.DictReader((maps / "campaign_summary.csv").open())}
    assert set(rows) == {*SITES, "broken"}
    assert rows["broken"]["status"] == "failed" and "broken" in rows["broken"]["error"]
    assert "\n" not in rows["broken"]["error"]
    expected = []
    for site, ortho in zip(SITES, orthos, strict=True):
        ref = tmp_path / "alone" / site
        alone = run_predict(cfg, PredictInputs(ortho, bundle, ref))
        _same_maps(ref, maps / site)
        assert rows[site]["status"] == "ok"
        assert float(rows[site]["present_area_ha"]) == alone.summary.present_area_ha
        assert rows[site]["spurge_area_ha"] == rows[site]["present_area_ha"]  # leafy spurge keeps its old column
        assert float(rows[site]["mapped_area_ha"]) == alone.summary.mapped_area_ha
        layer = gpd.read_file(ref / "ortho_presence.gpkg", layer="presence").to_crs(4326)
        layer.insert(0, "site", site)
        expected.append(layer)
    want = pd.concat(expected, ignore_index=True)
    assert len(want) > 0
    got = gpd.read_file(maps / "campaign_presence.gpkg", layer="presence")
    assert got.crs.to_epsg() == 4326 and list(got.site) == list(want.site)
    assert np.allclose(got.area_m2, want.area_m2)
    assert all(g.buffer(1e-9).contains(w) for g, w in zip(got.geometry, want.geometry, strict=True))

    # a re-run redoes only what is missing: the fixed orthomosaic, not the finished ones
    stamp = (maps / "north" / "ortho_prob.tif").stat().st_mtime_ns
    make_rgba(bad, 500, 500, seed=9)
    again = run_campaign(cfg, CampaignInputs([*orthos, bad], bundle, maps, workers=2))
    assert again.redone == 1 and not again.failed
    assert (maps / "north" / "ortho_prob.tif").stat().st_mtime_ns == stamp
    assert again.crs == "EPSG:32612"  # default: the first map's CRS


def test_names_globs_and_lists(field, tmp_path):
    orthos = list(field["orthos"])
    assert site_names(orthos) == list(SITES)  # stems collide: parent folder names
    lst = tmp_path / "list.txt"
    lst.write_text(f"# campaign\n{orthos[2]}\n\n")
    got = expand_orthos([Path(str(field["root"] / "sites" / "*" / "ortho.tif"))], lst)
    assert got == sorted(orthos, key=str)  # the listed one is already there once
    with pytest.raises(InputError, match="no file matches"):
        expand_orthos([tmp_path / "nothing*.tif"], None)
    with pytest.raises(InputError, match="--campaign-crs"):
        run_campaign(load_config(), CampaignInputs(orthos, field["bundle"], tmp_path / "m", crs="EPSG:nope"))


def test_local_workers_keep_the_allocator_adaptive_and_get_their_share_of_threads():
    import os

    from spurgemap.campaign.engine import dask_engine

    def env() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}

    def profiling() -> bool:
        import dask

        return bool(dask.config.get("distributed.worker.profile.enabled"))

    with dask_engine(workers=1) as engine:
        seen = list(engine.client.run(env).values())
        assert list(engine.client.run(profiling).values()) == [False]
    cores = os.environ.get("OMP_NUM_THREADS", str(max(1, os.cpu_count() or 1)))  # the user's own setting wins
    assert seen == [{"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "OMP_NUM_THREADS": cores}]


def test_campaign_of_another_species_lists_its_area_per_site(tmp_path):
    """Predict writes species-neutral keys for any species; the campaign once read leafy spurge's only."""
    cli_ok("demo-data", tmp_path / "data", "--sites", 2, "--size", 2600, "--seed", 1)
    bundle = write_bundle(tmp_path / "model.spurge", 0.5, head_std=50.0)
    maps = tmp_path / "maps"
    res = cli_ok("predict", tmp_path / "data" / "sites" / "*" / "ortho.tif", "--model", bundle, "--out", maps,
                 "--workers", 1, "--set", "labels.species=giant hogweed")
    assert "giant hogweed ha" in res.output
    rows = list(csv.DictReader((maps / "campaign_summary.csv").open()))
    assert [r["site"] for r in rows] == ["site01", "site02"]
    assert not {"spurge_area_ha", "spurge_share"} & set(rows[0])
    for r in rows:
        alone = json.loads((maps / r["site"] / "ortho_summary.json").read_text())
        assert r["status"] == "ok" and r["species"] == "giant hogweed" == alone["species"]
        assert float(r["present_area_ha"]) == alone["present_area_ha"] > 0
        assert float(r["present_share"]) == alone["present_share"] < 1
        assert float(r["mapped_area_ha"]) == alone["mapped_area_ha"]
