"""survey-plan's uncertain visits, as the anchors (sits' uncertainty sampling) take them: a minimum
uncertainty, both sides of the threshold, and a fair share of the room when the spacing binds."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pytest
from fieldwork_maps import plan_cfg, write_maps

from spurgemap.fieldwork import SurveyPlanInputs, run_survey_plan
from spurgemap.fieldwork.sampling import uncertainty

N = 30
# the only cells with uncertainty >= 0.4 at t = 0.5, 35 m apart: probability -> uncertainty
BELOW = {(3, 3): 45, (3, 13): 40, (3, 23): 30, (13, 3): 25}  # 0.9, 0.8, 0.6, 0.5
ABOVE = {(13, 23): 55, (23, 3): 65, (23, 13): 70, (23, 23): 75}  # 0.9, 0.7, 0.6, 0.5


def known_map() -> np.ndarray:
    """Confident cells (p = 0.07, 0.91, and 0.15 / 0.85 just under the minimum) and 8 uncertain ones."""
    r, c = np.mgrid[0:N, 0:N]
    pct = np.choose((r // 5 + c // 5) % 4, [7, 91, 15, 85]).astype(np.uint8)
    for cells in (BELOW, ABOVE):
        for (row, col), p in cells.items():
            pct[row, col] = p
    return pct


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    return write_maps(tmp_path_factory.mktemp("unc"), known_map(), threshold=0.5)


def test_uncertainty_is_one_minus_confidence():
    u = uncertainty(np.array([91, 7, 50, 20, 80, 100]), 0.5)
    assert u == pytest.approx([0.18, 0.14, 1.0, 0.4, 0.4, 0.0])
    assert uncertainty(np.array([21, 60]), 0.3) == pytest.approx([0.7, 1 - 0.3 / 0.7])


def two_bands(**kw: object):
    """Two random strata (below / above 50 %), so the 8 known cells are not strata of their own."""
    return plan_cfg(band_edges_pct=(50.0,), **kw)


def test_uncertain_visits_are_the_known_cells_on_both_sides(maps, tmp_path):
    res = run_survey_plan(two_bands(n=12, min_spacing_m=5.0), SurveyPlanInputs(maps, tmp_path / "p"))
    gdf = gpd.read_file(res.files["gpkg"])
    unc = gdf[gdf.reason == "uncertain"]
    # only the known cells (p = 0.91 / 0.07 / 0.15 / 0.85 never), on both sides, most uncertain first
    picked = set(zip(unc.row, unc.col, strict=True))
    assert len(picked) == 6 and (gdf.reason == "random").sum() == 6
    for side in (BELOW, ABOVE):
        mine = [cell for cell in side if cell in picked]
        assert len(mine) >= 2
        worst = min(side[cell] for cell in mine) if side is BELOW else max(side[cell] for cell in mine)
        for cell, p in side.items():  # a more uncertain cell of that side was taken or blocked by the spacing
            if (p > worst if side is BELOW else p < worst) and cell not in picked:
                d = np.hypot(gdf.row - cell[0], gdf.col - cell[1]) * 3.5
                assert d.min() < 5.0, cell
    summary = json.loads(res.files["summary"].read_text())
    assert summary["uncertain"]["below_threshold"] + summary["uncertain"]["above_threshold"] == 6
    assert summary["uncertain"]["eligible_cells"] == 8
    assert summary["uncertain"]["probability_from"] == pytest.approx(0.2)
    assert summary["uncertain"]["probability_to"] == pytest.approx(0.8)


def test_too_few_uncertain_cells_give_fewer_visits_and_say_so(maps, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        res = run_survey_plan(two_bands(n=20, min_spacing_m=5.0), SurveyPlanInputs(maps, tmp_path / "p"))
    gdf = gpd.read_file(res.files["gpkg"])
    unc = gdf[gdf.reason == "uncertain"]
    assert set(zip(unc.row, unc.col, strict=True)) <= set(BELOW) | set(ABOVE)
    assert 4 <= len(unc) <= 8 and (gdf.reason == "random").sum() == 10 and res.n_visits < 20
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert f"only {len(unc)} of 10 uncertain visits" in msg and "survey_plan.min_uncertainty=0.4" in msg
    # a lower minimum lets the confident-but-not-very cells in (p = 0.15 / 0.85: uncertainty 0.3)
    res = run_survey_plan(two_bands(n=20, min_spacing_m=5.0, min_uncertainty=0.25),
                          SurveyPlanInputs(maps, tmp_path / "q"))
    assert res.summary["uncertain_visits"] == 10


def test_both_halves_get_their_share_when_spacing_binds(maps, tmp_path):
    res = run_survey_plan(two_bands(n=20, min_spacing_m=30.0, seed=1), SurveyPlanInputs(maps, tmp_path / "p"))
    s = res.summary
    assert s["visits"] < 20  # the spacing binds
    # taken in turn: random first would have filled the room (10 asked) before any uncertain visit
    assert s["uncertain_visits"] >= 3 and s["random_visits"] >= 3
    gdf = gpd.read_file(res.files["gpkg"])
    unc = gdf[gdf.reason == "uncertain"]
    assert set(zip(unc.row, unc.col, strict=True)) <= set(BELOW) | set(ABOVE)


def test_site_id_and_ortho_options(maps, tmp_path, caplog):
    from fieldwork_maps import cli

    with caplog.at_level(logging.WARNING):
        res = run_survey_plan(plan_cfg(n=4), SurveyPlanInputs(maps, tmp_path / "p", site_id="North 7"))
    assert set(gpd.read_file(res.files["gpkg"]).site_id) == {"North_7"}
    assert res.summary["tile_check"]["checked"] is False  # the map's source 'site.tif' is not here: said so
    assert any("tile.min_valid_fraction" in r.getMessage() and "--ortho" in r.getMessage() for r in caplog.records)
    for args, what in ((("--ortho", tmp_path / "gone.tif"), "gone.tif: file not found"),
                       (("--site-id", "///"), "--site-id '///'")):
        r = cli("survey-plan", maps, "--n", 4, "--out", tmp_path / "q", *args)
        assert r.exit_code == 2 and what in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "q").exists()
