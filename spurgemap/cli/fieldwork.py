"""The field-work commands: `survey-plan`, `zones` and `change` (added to the app by `register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spurgemap.cli.options import OverwriteOpt, out, parse_numbers, run_guarded

MapsArg = Annotated[Path, typer.Argument(help="Output folder of `spurgemap predict`.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Which map, when the folder holds several.")]


def survey_plan(
    maps: MapsArg,
    n: Annotated[int, typer.Option("--n", help="Number of visits.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the plan.")],
    min_spacing: Annotated[float, typer.Option("--min-spacing", help="Minimum distance between visits (m).")] = 20.0,
    start: Annotated[str | None, typer.Option("--start", help="Start of the walk: LON,LAT (WGS 84); "
                                              "default the map's south-west corner.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random sample.")] = 0,
    plots: Annotated[list[Path] | None, typer.Option("--plots", help="Surveyed plots to leave out.")] = None,
    survey: Annotated[list[Path] | None, typer.Option("--survey", help="Surveyed points to leave out "
                                                      "(point layer or point CSV).")] = None,
    name: NameOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Plan the next field visits: uncertain cells plus a stratified random sample, as a walking route."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import SurveyPlanInputs, SurveyPlanParams, run_survey_plan

    def go() -> None:
        lonlat = parse_numbers(start, 2, "--start")
        params = SurveyPlanParams(n, min_spacing, (lonlat[0], lonlat[1]) if lonlat else None, seed)
        res = run_survey_plan(params, SurveyPlanInputs(maps, out_dir, name, [*(plots or []), *(survey or [])],
                                                       overwrite))
        s = res.summary
        out.print(f"{res.n_visits} visits ({s['uncertain_visits']} uncertain, {s['random_visits']} random), "
                  f"route {res.route_length_m:.0f} m -> {res.out}")

    run_guarded(go)


def zones(
    maps: MapsArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the zones.")],
    buffer: Annotated[float, typer.Option("--buffer", help="Buffer around present cells (m).")] = 1.0,
    min_area: Annotated[float, typer.Option("--min-area", help="Drop zones and holes under this (m²).")] = 1.0,
    simplify: Annotated[float, typer.Option("--simplify", help="Outline simplification tolerance (m).")] = 0.25,
    rate: Annotated[float | None, typer.Option("--rate", help="Herbicide rate (L/ha) for RATE and volume.")] = None,
    name: NameOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Spot-spray treatment zones (GPKG, Shapefile with RATE, KML) from a presence map."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ZonesInputs, ZonesParams, run_zones

    def go() -> None:
        res = run_zones(ZonesParams(buffer, min_area, simplify, rate), ZonesInputs(maps, out_dir, name, overwrite))
        s = res.summary
        vol = f", {s['herbicide_l']:.2f} L herbicide" if s["herbicide_l"] is not None else ""
        out.print(f"{res.zones} zones, {s['treated_area_m2']:.1f} m² ({100 * s['share_of_site']:.1f} % of the "
                  f"site){vol} -> {res.out}")

    run_guarded(go)


def change(
    before: Annotated[Path, typer.Argument(help="Predict output folder of the earlier map.")],
    after: Annotated[Path, typer.Argument(help="Predict output folder of the later map.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the change map.")],
    plots: Annotated[Path | None, typer.Option("--plots", help="Plots for per-plot change areas.")] = None,
    before_name: Annotated[str | None, typer.Option("--before-name", help="Map in BEFORE, if several.")] = None,
    after_name: Annotated[str | None, typer.Option("--after-name", help="Map in AFTER, if several.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Where leafy spurge is new, gone or persisting between two maps of a site."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ChangeInputs, ChangeParams, run_change

    def go() -> None:
        res = run_change(ChangeParams(), ChangeInputs(before, after, out_dir, plots, before_name, after_name,
                                                      overwrite))
        s, c = res.summary, res.summary["classes"]
        out.print(f"new {c['new']['area_m2']:.1f} m², gone {c['gone']['area_m2']:.1f} m², persisting "
                  f"{c['persisting']['area_m2']:.1f} m²; net spread {s['net_spread_m2']:.1f} m² -> {res.out}")

    run_guarded(go)


def register(app: typer.Typer) -> None:
    """Add the field-work commands to the main app."""
    app.command("survey-plan")(survey_plan)
    app.command("zones")(zones)
    app.command("change")(change)
