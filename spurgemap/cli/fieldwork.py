"""The field-work commands: `survey-plan`, `zones` and `change` (added to the app by `register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spurgemap.cli.options import (
    ConfigOpt,
    Key,
    OverwriteOpt,
    SetOpt,
    load_cli_config,
    out,
    parse_numbers,
    run_guarded,
)

MapsArg = Annotated[Path, typer.Argument(help="Output folder of `spurgemap predict`.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Which map, when the folder holds several.")]


def survey_plan(
    maps: MapsArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the plan.")],
    n: Annotated[int | None, typer.Option("--n", help="Number of visits (default 20)."), Key("survey_plan.n")] = None,
    min_spacing: Annotated[float | None, typer.Option("--min-spacing",
                                                      help="Minimum distance between visits (m; default 20)."),
                           Key("survey_plan.min_spacing_m")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Start of the walk: LON,LAT (WGS 84); "
                                              "default the map's south-west corner."),
                     Key("survey_plan.start_lonlat")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the random sample."),
                    Key("survey_plan.seed")] = None,
    plots: Annotated[list[Path] | None, typer.Option("--plots", help="Surveyed plots to leave out.")] = None,
    survey: Annotated[list[Path] | None, typer.Option("--survey", help="Surveyed points to leave out "
                                                      "(point layer or point CSV).")] = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Plan the next field visits: uncertain cells plus a stratified random sample, as a walking route."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import SurveyPlanInputs, run_survey_plan

    def go() -> None:
        lonlat = parse_numbers(start, 2, "--start")
        cfg = load_cli_config(config, set_, **{
            "survey_plan.n": n, "survey_plan.min_spacing_m": min_spacing, "survey_plan.seed": seed,
            "survey_plan.start_lonlat": list(lonlat) if lonlat else None})
        res = run_survey_plan(cfg, SurveyPlanInputs(maps, out_dir, name, [*(plots or []), *(survey or [])],
                                                       overwrite))
        s = res.summary
        out.print(f"{res.n_visits} visits ({s['uncertain_visits']} uncertain, {s['random_visits']} random), "
                  f"route {res.route_length_m:.0f} m -> {res.out}")

    run_guarded(go)


def zones(
    maps: MapsArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the zones.")],
    buffer: Annotated[float | None, typer.Option("--buffer", help="Buffer around present cells (m; 1)."),
                      Key("zones.buffer_m")] = None,
    min_area: Annotated[float | None, typer.Option("--min-area",
                                                   help="Drop zones and holes under this (m²; 1)."),
                        Key("zones.min_area_m2")] = None,
    simplify: Annotated[float | None, typer.Option("--simplify", help="Outline simplification (m; 0.25)."),
                        Key("zones.simplify_m")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Herbicide rate (L/ha) for RATE and volume."),
                    Key("zones.rate_l_per_ha")] = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Spot-spray treatment zones (GPKG, Shapefile with RATE, KML) from a presence map."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ZonesInputs, run_zones

    def go() -> None:
        cfg = load_cli_config(config, set_, **{"zones.buffer_m": buffer, "zones.min_area_m2": min_area,
                                               "zones.simplify_m": simplify, "zones.rate_l_per_ha": rate})
        res = run_zones(cfg, ZonesInputs(maps, out_dir, name, overwrite))
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
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Where leafy spurge is new, gone or persisting between two maps of a site."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ChangeInputs, run_change

    def go() -> None:
        inputs = ChangeInputs(before, after, out_dir, plots, before_name, after_name, overwrite)
        res = run_change(load_cli_config(config, set_), inputs)
        s, c = res.summary, res.summary["classes"]
        out.print(f"new {c['new']['area_m2']:.1f} m², gone {c['gone']['area_m2']:.1f} m², persisting "
                  f"{c['persisting']['area_m2']:.1f} m²; net spread {s['net_spread_m2']:.1f} m² -> {res.out}")

    run_guarded(go)


def register(app: typer.Typer) -> None:
    """Add the field-work commands to the main app."""
    app.command("survey-plan")(survey_plan)
    app.command("zones")(zones)
    app.command("change")(change)
