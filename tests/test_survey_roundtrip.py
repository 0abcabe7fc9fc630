"""What a crew brings back tiles: survey-plan -> half the visits filled -> tile keeps exactly those -> train."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from conftest import GSD, ORIGIN, make_rgba
from fieldwork_maps import plan_cfg, write_maps

from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.fieldwork import SurveyPlanInputs, run_survey_plan
from spurgemap.tile.stage import TileInputs, run_tile
from spurgemap.tile.survey import survey_from_frame

MAP_CELL = 2.1  # 150 orthomosaic pixels
SITES = {"s1": 0.0, "s2": 100.0}  # site -> easting offset of its orthomosaic


def make_site(root: Path, site: str, dx: float, seed: int = 0) -> tuple[Path, Path]:
    """A 1200-px orthomosaic and a 6 x 6 cell map inside it (cell centres >= 225 px from its edge),
    whose ``source`` tag names the orthomosaic, as predict writes it."""
    ortho = make_rgba(root / f"{site}_ortho.tif", seed=seed,
                      transform=Affine(GSD, 0, ORIGIN[0] + dx, 0, -GSD, ORIGIN[1]))
    rng = np.random.default_rng(seed)
    pct = rng.integers(5, 95, (6, 6)).astype(np.uint8)
    t = Affine(MAP_CELL, 0, ORIGIN[0] + dx + MAP_CELL, 0, -MAP_CELL, ORIGIN[1] - MAP_CELL)
    maps = write_maps(root / f"maps_{site}", pct, name=site, transform=t)
    with rasterio.open(maps / f"{site}_prob.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.update_tags(source=str(ortho))
    return ortho, maps


def plan_site(root: Path, site: str, dx: float, seed: int = 0, **kw) -> tuple[Path, object]:
    ortho, maps = make_site(root, site, dx, seed)
    res = run_survey_plan(plan_cfg(n=8, min_spacing_m=0.0, seed=seed),
                          SurveyPlanInputs(maps, root / f"plan_{site}", **kw))
    return ortho, res


def fill_half(visits_csv: Path) -> pd.DataFrame:
    """A crew's CSV: the first half visited in the spellings people use, the rest left empty."""
    table = pd.read_csv(visits_csv, dtype=str, keep_default_na=False)
    assert len(table) == 8
    table["presence"] = ["yes", "0", "Present", "1.0", "", "", " ", ""]
    return table


def test_half_filled_visits_tile_exactly_the_visited_and_train(tmp_path, tiny_weights):
    from spurgemap.train import TrainInputs, run_train

    orthos, tables = [], []
    for i, (site, dx) in enumerate(SITES.items()):
        ortho, res = plan_site(tmp_path, site, dx, seed=i)
        orthos.append(ortho)
        tables.append(fill_half(res.files["csv"]))
    filled = tmp_path / "filled.csv"
    pd.concat(tables).to_csv(filled, index=False)
    cfg = load_config()
    res = run_tile(cfg, TileInputs(orthos, filled, tmp_path / "tiles"))
    idx = gpd.read_file(tmp_path / "tiles" / "tiles.gpkg")
    visited = pd.concat(t.iloc[:4] for t in tables)
    assert sorted(zip(idx.site_id, idx.plot_id, strict=True)) == sorted(
        zip(visited.site_id, visited.plot_id, strict=True))
    want = dict(zip(visited.plot_id + visited.site_id, [1, 0, 1, 1] * 2, strict=True))
    assert [want[p + s] for p, s in zip(idx.plot_id, idx.site_id, strict=True)] == list(idx.class_id)
    summary = json.loads((tmp_path / "tiles" / "summary.json").read_text())
    assert len(summary["unvisited_plots"]) == 8 == len(res.unvisited_plots)
    assert summary["tiles"] == 8
    over = {"train.backbone": "test_efficientnet", "train.weights": str(tiny_weights), "train.input_size": 64,
            "train.epochs": 2, "train.batch_size": 8, "train.mode": "probe", "train.context": False}
    run = run_train(load_config(overrides=over), TrainInputs(tmp_path / "tiles", tmp_path / "run"))
    assert (run.out / "model.spurge").exists()


def test_float_integers_nulls_and_bad_values_in_a_layer(cfg):
    df = pd.DataFrame({"site_id": ["a"] * 5, "plot_id": list("pqrst"),
                       "presence": [1.0, np.nan, 0.0, None, 1.0], "notes": ["x", None, "", "y", "z"]})
    survey = survey_from_frame(df, cfg.labels, "obs.gpkg", row_offset=1)
    assert survey is not None
    assert survey.labels == {("a", "p"): 1, ("a", "r"): 0, ("a", "t"): 1}
    assert survey.unvisited == [("a", "q"), ("a", "s")]
    assert set(survey.extras) == set(survey.labels)
    bad = df.assign(presence=["yes", "", "maybe", "NO", "2"])
    with pytest.raises(InputError) as exc:
        survey_from_frame(bad, cfg.labels, "obs.gpkg", row_offset=1)
    msg = str(exc.value)
    assert "obs.gpkg" in msg and "row 3 'maybe'" in msg and "row 5 '2'" in msg and "NO" not in msg
    assert "\n" not in msg
    with pytest.raises(InputError, match="every row's presence is empty"):
        survey_from_frame(df.assign(presence=[None] * 5), cfg.labels, "obs.gpkg")


def test_bad_presence_in_a_filled_csv_names_the_row_through_the_cli(tmp_path):
    from conftest import cli_ok  # noqa: F401  (same runner the CLI tests use)
    from typer.testing import CliRunner

    from spurgemap.cli.app import app

    ortho, res = plan_site(tmp_path, "s1", 0.0)
    table = fill_half(res.files["csv"])
    table.loc[2, "presence"] = "maybe"
    filled = tmp_path / "filled.csv"
    table.to_csv(filled, index=False)
    r = CliRunner().invoke(app, ["tile", str(ortho), "--plots", str(filled), "--out", str(tmp_path / "t")])
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "filled.csv" in lines[0] and "row 4 'maybe'" in lines[0]
    assert not (tmp_path / "t").exists()


def test_tile_cli_says_how_many_plots_were_not_visited(tmp_path):
    from conftest import cli_ok

    ortho, res = plan_site(tmp_path, "s1", 0.0)
    filled = tmp_path / "filled.csv"
    fill_half(res.files["csv"]).to_csv(filled, index=False)
    r = cli_ok("tile", ortho, "--plots", filled, "--out", tmp_path / "t")
    flat = " ".join(r.output.split())
    assert "4 plots not visited (empty presence) skipped" in flat and "4 tiles" in flat
