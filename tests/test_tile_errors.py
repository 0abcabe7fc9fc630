"""Bad input: one line naming the file and the fix, exit != 0, nothing left in TILES_DIR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import GSD, make_rgba, px_to_map, square, texture, write_csv, write_plots, write_raster
from rasterio.enums import ColorInterp
from typer.testing import CliRunner

from spurgemap.cli.app import app

runner = CliRunner()


def _plots(tmp: Path, **kw) -> Path:
    row = dict(site_id="s1", plot_id="A", presence="present", geometry=square(*px_to_map(300, 300), 3.5))
    row.update(kw)
    return write_plots(tmp / "plots.gpkg", [row])


def _cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _assert_refused(res, *fragments: str, out: Path | None = None) -> None:
    assert res.exit_code not in (0, None), res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("spurgemap: error")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output + res.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.partial-*"))


def _tile_cli(tmp: Path, ortho: Path, plots: Path, *extra: str):
    out = tmp / "tiles"
    return _cli("tile", ortho, "--plots", plots, "--out", out, *extra), out


def test_cli_success_prints_summary(tmp_path):
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    res, out = _tile_cli(tmp_path, ortho, _plots(tmp_path))
    assert res.exit_code == 0, res.output
    assert "1 tiles" in res.stdout and "tiles/s" in res.stdout
    assert (out / "config.yaml").read_text().count("tile_size_px: 250") == 1
    # existing output refused without --overwrite, replaced with it
    again, _ = _tile_cli(tmp_path, ortho, _plots(tmp_path))
    _assert_refused(again, str(out), "--overwrite")
    assert (out / "tiles.gpkg").exists()
    ok, _ = _tile_cli(tmp_path, ortho, _plots(tmp_path), "--overwrite", "--set", "tile.tile_size_px=128")
    assert ok.exit_code == 0, ok.output
    assert "tile_size_px: 128" in (out / "config.yaml").read_text()


def _ortho_variants(tmp: Path) -> dict[str, tuple[Path, str]]:
    rgb = texture(300, 300)
    v: dict[str, tuple[Path, str]] = {}
    v["no_crs"] = (write_raster(tmp / "nocrs.tif", rgb, crs=None), "has no CRS")
    v["geographic"] = (write_raster(tmp / "geo.tif", rgb, crs="EPSG:4326",
                                    transform=Affine(1e-6, 0, -110, 0, -1e-6, 45)), "geographic CRS")
    v["rotated"] = (write_raster(tmp / "rot.tif", rgb, transform=Affine(0.01, 0.005, 5e5, 0.005, -0.01, 5.2e6)),
                    "rotated or sheared")
    v["south_up"] = (write_raster(tmp / "south.tif", rgb, transform=Affine(GSD, 0, 5e5, 0, GSD, 5.2e6)),
                     "not north-up")
    v["two_bands"] = (write_raster(tmp / "ga.tif", rgb[:2],
                                   colorinterp=[ColorInterp.gray, ColorInterp.alpha]), "fewer than 3")
    v["five_bands"] = (write_raster(tmp / "five.tif", np.concatenate([rgb, rgb[:2]])), "--bands")
    v["uint16"] = (write_raster(tmp / "u16.tif", rgb.astype(np.uint16)), "--value-range")
    v["small"] = (write_raster(tmp / "small.tif", rgb[:, :200, :200]), "smaller than one 250-px tile")
    empty = tmp / "empty.tif"
    empty.write_bytes(b"")
    v["empty"] = (empty, "empty")
    v["missing"] = (tmp / "missing.tif", "not found")
    junk = tmp / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x07" * 200)
    v["junk"] = (junk, "not a readable raster")
    return v


@pytest.mark.parametrize("case", ["no_crs", "geographic", "rotated", "south_up", "two_bands",
                                  "five_bands", "uint16", "small", "empty", "missing", "junk"])
def test_bad_orthomosaics_are_refused(tmp_path, case):
    path, message = _ortho_variants(tmp_path)[case]
    res, out = _tile_cli(tmp_path, path, _plots(tmp_path))
    _assert_refused(res, str(path), message, out=out)


def test_hostile_header_refused_before_allocating(tmp_path):
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=60_000, height=60_000, count=3, dtype="uint8",
                       crs="EPSG:32612", transform=Affine(GSD, 0, 5e5, 0, -GSD, 5.2e6), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True):
        pass
    assert huge.stat().st_size < 2_000_000
    res, out = _tile_cli(tmp_path, huge, _plots(tmp_path))
    _assert_refused(res, str(huge), "corrupt or hostile", out=out)
    res, out = _tile_cli(tmp_path, huge, _plots(tmp_path), "--set", "tile.max_pixels=1000000")
    _assert_refused(res, str(huge), "above the limit", out=out)


def test_truncated_raster_leaves_nothing_behind(tmp_path):
    ortho = make_rgba(tmp_path / "o.tif", h=1500, w=1500)
    data = ortho.read_bytes()
    ortho.write_bytes(data[: len(data) // 3])
    plots = write_plots(tmp_path / "p.gpkg", [
        dict(site_id="s", plot_id=str(i), presence="yes", geometry=square(*px_to_map(300 + 400 * (i % 3),
             300 + 400 * (i // 3)), 5.0)) for i in range(9)])
    res, out = _tile_cli(tmp_path, ortho, plots)
    _assert_refused(res, str(ortho), out=out)


@pytest.mark.parametrize("case,fragment", [
    ("outside", "no plot lies on the orthomosaic"),
    ("bad_label", "row 2 'maybe'"),
    ("unknown_plot", "plot ids not in"),
    ("duplicate", "duplicate plot ids"),
    ("no_ids", "needs columns plot_id and site_id"),
    ("line", "is a LineString"),
    ("plots_missing", "nowhere.gpkg: file not found"),
    ("plots_empty", "is empty (0 bytes)"),
    ("survey_empty", "s.csv: is empty"),
    ("survey_no_label", "no presence column"),
    ("verify_unknown", "tile ids not produced by this tiling: s1_A_r9c9"),
])
def test_bad_plots_and_surveys_are_refused(tmp_path, case, fragment):
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    plots = _plots(tmp_path)
    extra: list[str] = []
    if case == "outside":
        plots = _plots(tmp_path, geometry=square(*px_to_map(5000, 5000), 3.5))
    elif case == "bad_label":
        extra = ["--survey", str(write_csv(tmp_path / "s.csv", "site_id,plot_id,presence", "s1,A,maybe"))]
    elif case == "unknown_plot":
        extra = ["--survey", str(write_csv(tmp_path / "s.csv", "site_id,plot_id,presence",
                                           "s1,A,yes", "s1,ZZ,no"))]
    elif case == "duplicate":
        a = dict(site_id="s1", plot_id="A", presence="yes", geometry=square(*px_to_map(300, 300), 3.5))
        plots = write_plots(tmp_path / "dup.gpkg", [a, dict(a, geometry=square(*px_to_map(200, 200), 3))])
    elif case == "no_ids":
        plots = write_plots(tmp_path / "noid.gpkg", [dict(name="x", presence="yes",
                                                          geometry=square(*px_to_map(300, 300), 3.5))])
    elif case == "line":
        from shapely import LineString

        plots = _plots(tmp_path, geometry=LineString([px_to_map(100, 100), px_to_map(200, 200)]))
    elif case == "plots_missing":
        plots = tmp_path / "nowhere.gpkg"
    elif case == "plots_empty":
        plots = tmp_path / "empty.geojson"
        plots.write_text("")
    elif case == "survey_empty":
        (tmp_path / "s.csv").write_text("")
        extra = ["--survey", str(tmp_path / "s.csv")]
    elif case == "survey_no_label":
        extra = ["--survey", str(write_csv(tmp_path / "s.csv", "site_id,plot_id,notes", "s1,A,hello"))]
    elif case == "verify_unknown":
        extra = ["--verify", str(write_csv(tmp_path / "v.csv", "tile_id,presence", "s1_A_r9c9,yes"))]
    res, out = _tile_cli(tmp_path, ortho, plots, *extra)
    _assert_refused(res, fragment, out=out)


def test_unrecognised_labels_list_every_offending_row(tmp_path):
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    survey = write_csv(tmp_path / "s.csv", "site_id,plot_id,presence", "s1,A,yes", "s1,B,2", "s1,C,??")
    res, _ = _tile_cli(tmp_path, ortho, _plots(tmp_path), "--survey", survey)
    _assert_refused(res, str(survey), "row 3 '2'", "row 4 '??'")


def test_hostile_ids_stay_inside_the_output(tmp_path):
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    plots = _plots(tmp_path, site_id="../../etc", plot_id="/tmp/evil\\x")
    res, out = _tile_cli(tmp_path, ortho, plots)
    assert res.exit_code == 0, res.output
    files = [p for p in tmp_path.rglob("*.tif") if p.name not in ("o.tif",)]
    assert files and all(out.resolve() in p.resolve().parents for p in files)
    assert not (tmp_path.parent / "etc").exists()


def test_invalid_geometry_is_repaired_with_a_warning(tmp_path, caplog):
    from shapely import Polygon

    x0, y0 = px_to_map(150, 450)
    bowtie = Polygon([(x0, y0), (x0 + 4, y0 + 4), (x0 + 4, y0), (x0, y0 + 4)])
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    res, _out = _tile_cli(tmp_path, ortho, _plots(tmp_path, geometry=bowtie))
    assert res.exit_code == 0, res.output
    assert "repaired invalid geometries of plots s1/A" in res.stderr.replace("\n", " ")


def test_partial_coverage_warns_and_uncovered_plots_are_listed(tmp_path):
    ortho = make_rgba(tmp_path / "o.tif", h=600, w=600)
    plots = write_plots(tmp_path / "p.gpkg", [
        dict(site_id="s", plot_id="in", presence="yes", geometry=square(*px_to_map(300, 300), 3.5)),
        dict(site_id="s", plot_id="away", presence="no", geometry=square(*px_to_map(9000, 300), 3.5)),
    ])
    res, out = _tile_cli(tmp_path, ortho, plots)
    assert res.exit_code == 0
    assert "s/away" in res.stderr
    import json

    assert json.loads((out / "summary.json").read_text())["uncovered_plots"] == ["s/away"]


def test_debug_shows_traceback(tmp_path):
    res = _cli("--debug", "tile", tmp_path / "missing.tif", "--plots", tmp_path / "x.gpkg",
               "--out", tmp_path / "t")
    assert res.exit_code != 0
    assert res.exception is not None and "not found" in str(res.exception)
