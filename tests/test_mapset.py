"""The map folder's format: the summary's JSON and CSV, old files, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spurgemap.core.errors import InputError
from spurgemap.predict.mapset import SCHEMA_VERSION, MapSummary, PlotArea, finished_summary, map_files


def _summary(species: str = "leafy spurge", plots: list[PlotArea] | None = None) -> MapSummary:
    return MapSummary(
        spurgemap_version="t", orthomosaic="o.tif", model="m.spurge", threshold=0.4, operating_point="balanced",
        context_lambda=0.25, calibration="platt", backend="onnxruntime", tile_size_px=250, stride_px=250, cells=40,
        present_cells=10, tiles_predicted=40, species=species, mapped_area_ha=0.049, present_area_ha=0.0123,
        present_share=0.251, low_confidence_below=20, low_confidence_share=0.1, seconds=2.0, tiles_per_second=20.0,
        hectares_per_hour=88.2, created="2026-01-01T00:00:00Z", plots=plots)


def test_round_trip_and_leafy_spurge_aliases(tmp_path: Path) -> None:
    plots = [PlotArea("s1", "p1", 12.25, 3.0625, 0.25)]
    s = _summary(plots=plots)
    path = tmp_path / "x_summary.json"
    path.write_text(s.to_json())
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and next(iter(raw)) == "schema_version"
    assert raw["spurge_area_ha"] == 0.0123 and raw["spurge_share"] == 0.251
    assert raw["plots"] == [{"site_id": "s1", "plot_id": "p1", "plot_area_m2": 12.25, "present_area_m2": 3.0625,
                             "present_share": 0.25, "spurge_area_m2": 3.0625, "spurge_share": 0.25}]
    assert MapSummary.from_json(path) == s
    assert s.csv_rows() == [
        ["scope", "site_id", "plot_id", "area_ha", "present_area_ha", "present_share", "spurge_area_ha",
         "spurge_share"],
        ["orthomosaic", "", "", 0.049, 0.0123, 0.251, 0.0123, 0.251],
        ["plot", "s1", "p1", 0.001225, 0.000306, 0.25, 0.000306, 0.25]]


def test_another_species_has_no_spurge_keys() -> None:
    s = _summary("giant hogweed")
    assert not any(k.startswith("spurge_") for k in s.to_dict())
    assert s.headline() == {"species": "giant hogweed", "mapped_area_ha": 0.049, "present_area_ha": 0.0123,
                            "present_share": 0.251, "tiles_predicted": 40, "tiles_per_second": 20.0, "seconds": 2.0}
    assert s.csv_rows()[1] == ["orthomosaic", "", "", 0.049, 0.0123, 0.251]


def test_reads_a_file_of_an_earlier_version(tmp_path: Path) -> None:
    """Before the schema version: no `schema_version`, no `species`, leafy spurge's `spurge_*` keys only."""
    old = _summary().to_dict()
    for k in ("schema_version", "species", "present_area_ha", "present_share"):
        old.pop(k)
    for p in old.get("plots") or []:
        p.pop("present_area_m2")
    path = tmp_path / "old_summary.json"
    path.write_text(json.dumps(old))
    got = MapSummary.from_json(path)
    assert got.schema_version == 0 and got.species == "leafy spurge"
    assert (got.present_area_ha, got.present_share) == (0.0123, 0.251)


@pytest.mark.parametrize(("text", "match"), [
    ("{nope", "not a readable map summary"),
    ("[1, 2]", "not a map summary"),
    (json.dumps({"species": "x"}), r"missing .*mapped_area_ha"),
    (json.dumps({**_summary().to_dict(), "schema_version": SCHEMA_VERSION + 1}), "upgrade spurgemap"),
])
def test_bad_summaries_are_one_line_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad_summary.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        MapSummary.from_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_map_is_finished_only_without_its_staging_folder(tmp_path: Path) -> None:
    files = map_files(tmp_path, "ortho")
    assert files["prob"] == tmp_path / "ortho_prob.tif" and files["summary_json"] == tmp_path / "ortho_summary.json"
    files["summary_json"].write_text(_summary().to_json())
    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / ".work").mkdir()
    assert finished_summary(tmp_path, "ortho") is None
    (tmp_path / ".work").rmdir()
    assert finished_summary(tmp_path, "ortho") == files["summary_json"]
