"""Every float option and config value is finite and within bounds a field crew would recognise: one line each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from fieldwork_maps import make_pct, write_maps, zones_cfg
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.fieldwork import ZonesInputs, run_zones

runner = CliRunner()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A UTM 12N map (Montana) of 40 x 30 cells of 3.5 m, as predict writes it."""
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct())


def _one_line(args: list[str], *needles: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected error" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(("args", "message"), [
    (["zones", "{M}", "--buffer", "nan"], "--buffer nan: Input should be a finite number"),
    (["zones", "{M}", "--buffer", "inf"], "--buffer inf: Input should be a finite number"),
    (["zones", "{M}", "--buffer", "1e6"], "--buffer 1000000.0: Input should be less than or equal to 1000 (metres)"),
    (["zones", "{M}", "--buffer", "-1"], "--buffer -1.0: Input should be greater than or equal to 0"),
    (["zones", "{M}", "--rate", "nan"], "--rate nan: Input should be a finite number"),
    (["zones", "{M}", "--rate", "inf"], "--rate inf: Input should be a finite number"),
    (["zones", "{M}", "--rate", "0"], "--rate 0.0: Input should be greater than 0"),
    (["zones", "{M}", "--simplify", "nan"], "--simplify nan: Input should be a finite number"),
    (["zones", "{M}", "--min-area", "-inf"], "--min-area -inf: Input should be a finite number"),
    (["zones", "{M}", "--set", "zones.buffer_m=.nan"], "--set zones.buffer_m=.nan: Input should be a finite"),
    (["survey-plan", "{M}", "--min-spacing", "nan"], "--min-spacing nan: Input should be a finite number"),
    (["survey-plan", "{M}", "--min-spacing", "inf"], "--min-spacing inf: Input should be a finite number"),
    (["survey-plan", "{M}", "--n", "0"], "--n 0: ask for at least 1 visit"),
    (["survey-plan", "{M}", "--start", "nan,45"], "--start nan,45.0: Input should be a finite number"),
    (["survey-plan", "{M}", "--start", "45,-111"], "--start 45.0,-111.0: expected LON,LAT in degrees"),
    (["survey-plan", "{M}", "--start", "10,50"], "km from the mapped site (at most 50 km)"),
    (["change", "{M}", "{M}", "--set", "change.max_offset_cells=nan"],
     "--set change.max_offset_cells=nan: Input should be a finite number"),
    (["predict", "{M}/site_prob.tif", "--model", "m.spurge", "--set", "predict.gsd_tolerance=inf"],
     "--set predict.gsd_tolerance=inf: Input should be a finite number"),
    (["tile", "o.tif", "--plots", "p.gpkg", "--gsd", "nan"], "--gsd nan: Input should be a finite number"),
    (["train", "t", "--spatial-distance", "inf"], "--spatial-distance inf: Input should be a finite number"),
])
def test_a_nonsense_number_is_one_line_naming_the_option(site: Path, tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    out = tmp_path / "out"
    _one_line([a.replace("{M}", str(site)) for a in args] + ["--out", str(out)], message)
    assert not out.exists()


def test_a_start_near_the_site_is_accepted_and_the_far_one_names_its_distance(site: Path, tmp_path: Path) -> None:
    err = _one_line(["survey-plan", str(site), "--out", str(tmp_path / "p"), "--start", "10,50"], "--start 10,50")
    km = float(err.split(": ")[3].split(" km")[0].replace(",", ""))
    assert 7000 < km < 10000  # Germany to Montana
    res = runner.invoke(app, ["survey-plan", str(site), "--out", str(tmp_path / "ok"), "--start", "-111,46.94",
                              "--min-spacing", "5"])
    assert res.exit_code == 0, res.output


def test_simplify_larger_than_buffer_is_clamped_with_a_warning(site: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        res = run_zones(zones_cfg(buffer_m=1.0, simplify_m=3.0), ZonesInputs(site, tmp_path / "z"))
    assert "--simplify 3 m is larger than --buffer 1 m" in caplog.text
    assert res.summary["parameters"]["simplify_m"] == 1.0
    clamped = json.loads((tmp_path / "z" / "zones_summary.json").read_text())
    same = run_zones(zones_cfg(buffer_m=1.0, simplify_m=1.0), ZonesInputs(site, tmp_path / "z1"))
    assert clamped["treated_area_m2"] == same.summary["treated_area_m2"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_zones(zones_cfg(buffer_m=0.0, simplify_m=0.25), ZonesInputs(site, tmp_path / "z0"))
    assert "--simplify" not in caplog.text  # no buffer to eat: the default simplification stays


def test_a_buffer_of_many_cells_warns(site: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        run_zones(zones_cfg(buffer_m=50.0), ZonesInputs(site, tmp_path / "z"))
    assert "--buffer 50 m is 14 map cells of 3.50 m" in caplog.text


@pytest.mark.parametrize("command", ["zones", "survey-plan"])
def test_a_map_in_degrees_is_refused(tmp_path: Path, command: str) -> None:
    deg = write_maps(tmp_path / "deg", make_pct(), transform=Affine(3e-5, 0, -111.0, 0, -3e-5, 46.9),
                     crs="EPSG:4326")
    _one_line([command, str(deg), "--out", str(tmp_path / "o")], "WGS 84 (degrees)",
              f"`{command}` needs a map in a projected CRS in metres")
    assert not (tmp_path / "o").exists() and np.isfinite(make_pct()).all()
