"""`change` compares like with like (one species, model and threshold, or says so everywhere), and the
per-plot tables of `change` and `predict` list only the plots on the mapped site."""

from __future__ import annotations

import json
import logging
import sqlite3

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from conftest import ORIGIN, cli_ok, square, write_plots
from fieldwork_maps import CELL, UTM, X0, Y0, change_cfg, cli, make_pct, write_maps
from shapely import box

from spurgemap.core.errors import InputError
from spurgemap.fieldwork import ChangeInputs, run_change

A, B = "a" * 64, "b" * 64


def season(folder, bundle=A, threshold=0.42, species="leafy spurge", transform=None):
    """A predict folder holding `ortho_prob.tif` (every season's map has that name)."""
    return write_maps(folder, make_pct(), "ortho", threshold=threshold, transform=transform,
                      extra_tags={"bundle_sha256": bundle, "species": species})


@pytest.mark.parametrize(("kw", "what"), [({"bundle": B}, "model bundle aaaaaaaaaaaa vs bbbbbbbbbbbb"),
                                          ({"threshold": 0.5}, "threshold 0.42 vs 0.5"),
                                          ({"species": "giant hogweed"}, "species 'leafy spurge' vs 'giant hogweed'")])
def test_change_refuses_maps_of_another_model(tmp_path, kw, what):
    before, after = season(tmp_path / "y2024"), season(tmp_path / "y2025", **kw)
    with pytest.raises(InputError, match="--allow-model-change") as exc:
        run_change(change_cfg(), ChangeInputs(before, after, tmp_path / "c"))
    msg = str(exc.value)
    assert what in msg and str(before) in msg and str(after) in msg
    r = cli("change", before, after, "--out", tmp_path / "c")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and what in " ".join(r.output.split())
    assert not (tmp_path / "c").exists()


def test_allowed_model_change_is_said_in_every_output(tmp_path):
    before, after = season(tmp_path / "y2024"), season(tmp_path / "y2025", bundle=B, threshold=0.5)
    r = cli("change", before, after, "--out", tmp_path / "c", "--allow-model-change")
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "NOT LIKE WITH LIKE" in flat and "threshold 0.42 vs 0.5" in flat
    s = json.loads((tmp_path / "c" / "change_summary.json").read_text())
    assert s["same_model"] is False and "model bundle aaaaaaaaaaaa vs bbbbbbbbbbbb" in s["model_change"]
    assert s["before_model"]["bundle_sha256"] == A and s["after_model"]["threshold"] == 0.5
    with rasterio.open(tmp_path / "c" / "change.tif") as ds:
        assert ds.tags()["same_model"] == "False" and ds.tags()["model_change"] == s["model_change"]
        assert "NOT LIKE WITH LIKE" in ds.descriptions[0]
    polys = gpd.read_file(tmp_path / "c" / "change.gpkg", layer="change")
    assert len(polys) > 0 and (polys.model_change == s["model_change"]).all()
    with sqlite3.connect(tmp_path / "c" / "change.gpkg") as con:
        (desc,) = con.execute("SELECT description FROM gpkg_contents WHERE table_name='change'").fetchone()
    assert desc == s["model_change"]
    rows = pd.read_csv(tmp_path / "c" / "change_summary.csv")
    assert rows.scope[0] == "warning" and rows.change[0] == s["model_change"]


def test_same_model_says_nothing_and_plots_of_other_sites_are_left_out(tmp_path, caplog):
    before, after = season(tmp_path / "y2024"), season(tmp_path / "y2025")
    plots = tmp_path / "plots.geojson"
    gpd.GeoDataFrame({"site_id": ["s1", "s2"], "plot_id": ["p1", "p1"]},
                     geometry=[box(X0 + 5 * CELL, Y0 - 20 * CELL, X0 + 25 * CELL, Y0 - 5 * CELL),
                               box(X0 + 5000, Y0 - 100, X0 + 5010, Y0 - 90)], crs=UTM).to_file(plots)
    with caplog.at_level(logging.WARNING):
        res = run_change(change_cfg(), ChangeInputs(before, after, tmp_path / "c", plots))
    assert not caplog.records
    s = res.summary
    assert s["same_model"] is True and s["model_change"] is None
    assert [(p["site_id"], p["plot_id"]) for p in s["plots"]] == [("s1", "p1")] and s["plots_not_on_map"] == 1
    rows = pd.read_csv(res.files["summary_csv"], dtype=str, keep_default_na=False)
    assert set(rows[rows.scope == "plot"].site_id) == {"s1"} and "warning" not in set(rows.scope)


def test_grid_warning_names_both_folders(tmp_path, caplog):
    before = season(tmp_path / "y2024")
    after = season(tmp_path / "y2025", transform=Affine(CELL, 0, X0 + 0.4 * CELL, 0, -CELL, Y0))
    with caplog.at_level(logging.WARNING):
        run_change(change_cfg(), ChangeInputs(before, after, tmp_path / "c"))
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(before) in warning and str(after) in warning and "offset 0.40" in warning


def test_predict_per_plot_table_lists_only_plots_on_the_map(tmp_path):
    from test_survey_loop import drone_ortho, tiny_bundle

    ortho = drone_ortho(tmp_path / "sites" / "S01" / "ortho.tif", 1)
    x0 = ORIGIN[0] + 100
    plots = write_plots(tmp_path / "plots.geojson", [
        {"site_id": "S01", "plot_id": "P1", "geometry": square(x0 + 14, ORIGIN[1] - 14, 5)},
        {"site_id": "S02", "plot_id": "P1", "geometry": square(x0 + 900, ORIGIN[1] - 14, 5)}])
    cli_ok("predict", ortho, "--model", tiny_bundle(tmp_path / "m.spurge"), "--out", tmp_path / "maps",
           "--plots", plots)
    s = json.loads((tmp_path / "maps" / "ortho_summary.json").read_text())
    assert [(p["site_id"], p["plot_id"]) for p in s["plots"]] == [("S01", "P1")] and s["plots_not_on_map"] == 1
    assert s["plots"][0]["plot_area_m2"] == pytest.approx(25, rel=1e-3)
    rows = pd.read_csv(tmp_path / "maps" / "ortho_summary.csv", dtype=str, keep_default_na=False)
    assert list(rows[rows.scope == "plot"].site_id) == ["S01"]
    assert np.isfinite(float(rows.present_share[0]))
