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
    site_id: Annotated[str | None, typer.Option("--site-id", help="Site id of the visits (default: the "
                                                "plots' site, else the orthomosaic's site folder).")] = None,
    ortho: Annotated[Path | None, typer.Option("--ortho", help="The orthomosaic the map was made from "
                                               "(default: the map's source): checks tile.min_valid_fraction; "
                                               "QField basemap and field sheet.")] = None,
    zones: Annotated[Path | None, typer.Option("--zones", help="Zones layer to show in the QField project.")] = None,
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
                                                       overwrite, site_id, ortho, zones))
        s = res.summary
        out.print(f"{res.n_visits} visits ({s['uncertain_visits']} uncertain, {s['random_visits']} random), "
                  f"route {res.route_length_m:.0f} m -> {res.out}")

    run_guarded(go)


def parse_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text is not None else None


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
    rate: Annotated[float | None, typer.Option("--rate", help="Spray volume (L/ha); older name of --carrier."),
                    Key("zones.rate_l_per_ha")] = None,
    # -- issue 24: prescriptions, dose and records
    carrier: Annotated[float | None, typer.Option("--carrier", help="Spray volume, water + product (L/ha): "
                                                  "the prescription rate."), Key("treatment.carrier_l_per_ha")] = None,
    product: Annotated[str | None, typer.Option("--product", help="Product from the config's treatment table "
                                                "(an example of label rates, not advice)."),
                       Key("treatment.product")] = None,
    tank: Annotated[float | None, typer.Option("--tank-l", help="Sprayer tank (L), for tank loads."),
                    Key("treatment.tank_l")] = None,
    terminal: Annotated[str | None, typer.Option("--terminal", help="Shapefile profiles, comma-separated: "
                                                 "generic, deere, trimble, raven, agfusion."),
                        Key("zones.terminals")] = None,
    max_zones: Annotated[int | None, typer.Option("--max-zones", help="Zone cap (default the terminal's); "
                                                  "nearest zones are merged to fit."), Key("zones.max_zones")] = None,
    isoxml_grid: Annotated[bool | None, typer.Option("--isoxml-grid/--isoxml-zones",
                                                     help="TASKDATA as a grid of zone codes."),
                           Key("zones.isoxml_grid")] = None,
    records: Annotated[str | None, typer.Option("--records", help="Infestation record columns: generic or "
                                                "eddmaps."), Key("zones.records")] = None,
    date: Annotated[str | None, typer.Option("--date", help="Observation date YYYY-MM-DD (default the "
                                             "flight date in the orthomosaic's tags).")] = None,
    examiner: Annotated[str | None, typer.Option("--examiner", help="Who examined (infestation records).")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site name in file names and records.")] = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Spot-spray zones: GPKG, terminal Shapefile, ISOXML TASKDATA, dose, infestation records, KMZ."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ZonesInputs, run_zones
    from spurgemap.fieldwork.prescriptions import tank_text

    def go() -> None:
        cfg = load_cli_config(config, set_, **{
            "zones.buffer_m": buffer, "zones.min_area_m2": min_area, "zones.simplify_m": simplify,
            "zones.rate_l_per_ha": rate, "treatment.carrier_l_per_ha": carrier, "treatment.product": product,
            "treatment.tank_l": tank, "zones.terminals": parse_list(terminal), "zones.max_zones": max_zones,
            "zones.isoxml_grid": isoxml_grid, "zones.records": records})
        res = run_zones(cfg, ZonesInputs(maps, out_dir, name, overwrite, site=site, date=date, examiner=examiner))
        s = res.summary
        dose = tank_text(s)
        out.print(f"{res.zones} zones, {s['treated_area_m2']:.1f} m² ({100 * s['share_of_site']:.1f} % of the "
                  f"site){', ' + dose if dose else ''} -> {res.out}")

    run_guarded(go)


def change(
    before: Annotated[Path, typer.Argument(help="Predict output folder of the earlier map.")],
    after: Annotated[Path, typer.Argument(help="Predict output folder of the later map.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the change map.")],
    plots: Annotated[Path | None, typer.Option("--plots", help="Plots for per-plot change areas.")] = None,
    before_name: Annotated[str | None, typer.Option("--before-name", help="Map in BEFORE, if several.")] = None,
    after_name: Annotated[str | None, typer.Option("--after-name", help="Map in AFTER, if several.")] = None,
    allow_model_change: Annotated[bool, typer.Option(
        "--allow-model-change", help="Compare maps of another model, threshold or species anyway (every "
        "output then says so).")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Where leafy spurge is new, gone or persisting between two maps of a site."""
    # Deferred: a command loads only its own stage (fast --help).
    from spurgemap.fieldwork import ChangeInputs, run_change

    def go() -> None:
        inputs = ChangeInputs(before, after, out_dir, plots, before_name, after_name, overwrite, allow_model_change)
        res = run_change(load_cli_config(config, set_), inputs)
        s, c = res.summary, res.summary["classes"]
        if s["model_change"]:
            out.print(s["model_change"])
        out.print(f"new {c['new']['area_m2']:.1f} m², gone {c['gone']['area_m2']:.1f} m², persisting "
                  f"{c['persisting']['area_m2']:.1f} m²; net spread {s['net_spread_m2']:.1f} m² -> {res.out}")

    run_guarded(go)


def register(app: typer.Typer) -> None:
    """Add the field-work commands to the main app."""
    app.command("survey-plan")(survey_plan)
    app.command("zones")(zones)
    app.command("change")(change)
