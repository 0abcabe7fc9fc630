"""The demo job: every stage in order on the embedded demo data (demo-data, tile, train, predict)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.config import TERMINALS, SpurgemapConfig, dump_config
from spurgemap.core.errors import InputError
from spurgemap.core.progress import progress
from spurgemap.core.workdir import check_target, claim_dir, staged_dir
from spurgemap.demo.sites import DemoResult, demo_rows, make_demo_data, relocate
from spurgemap.fieldwork import ChangeInputs, SurveyPlanInputs, ZonesInputs, run_change, run_survey_plan, run_zones
from spurgemap.predict.stage import PredictInputs, run_predict
from spurgemap.tile.stage import TileInputs, TileResult, run_tile
from spurgemap.tile.tileset import load_tile_set
from spurgemap.train.stage import TrainInputs, run_train

log = logging.getLogger(__name__)


@dataclass
class DemoRun:
    out: Path
    stages: dict[str, str] = field(default_factory=dict)


def write_demo_data(config: SpurgemapConfig, out: Path, overwrite: bool = False) -> DemoResult:
    """Demo data into `out`, atomically (the generator itself writes into a staged folder)."""
    total = demo_rows(config.demo)
    with staged_dir(out, overwrite, "demo-data") as tmp, progress(total, "demo data", unit="rows") as advance:
        seen = 0

        def step(done: int, _total: int) -> None:
            nonlocal seen
            advance(done - seen)
            seen = done

        result = make_demo_data(config.demo, tmp, progress=step)
        (tmp / "config.yaml").write_text(dump_config(config))
    return relocate(result, tmp, out)


def run_demo(config: SpurgemapConfig, out: Path, overwrite: bool = False) -> DemoRun:
    """Every stage on demo data with two seasons, so the field-work commands have a change to show."""
    if config.demo.years < 2:
        config = config.model_copy(update={"demo": config.demo.model_copy(update={"years": 2})})
    run = DemoRun(out)
    check_target(out, overwrite)
    claim_dir(out, "demo")
    data = write_demo_data(config, out / "data", overwrite=True)
    run.stages["demo-data"] = (f"{len(data.site_ids)} sites, {data.n_plots} plots, "
                               f"{data.megapixels:.0f} Mpx in {data.seconds:.1f} s -> {data.out}")
    orthos = [out / "data" / "sites" / s / "ortho.tif" for s in data.site_ids]
    tiles: TileResult = run_tile(config, TileInputs(
        orthos, out / "data" / "plots.geojson", out / "tiles", survey=out / "data" / "survey.csv",
        overwrite=True))
    run.stages["tile"] = (f"{tiles.n_tiles} tiles in {tiles.seconds:.1f} s "
                          f"({tiles.tiles_per_second:.1f} tiles/s) -> {tiles.out}")
    synthetic = _demo_augment(config, out, run)
    trained = run_train(config, TrainInputs(out / "tiles", out / "train", synthetic, overwrite=True))
    m = trained.metrics
    run.stages["train"] = (f"balanced accuracy {m['balanced_accuracy']:.3f} ({m['selection']}) "
                           f"in {trained.seconds:.0f} s -> {trained.bundle}")
    maps = []
    for site, ortho in zip(data.site_ids, orthos, strict=True):
        res = run_predict(config, PredictInputs(ortho, trained.bundle, out / "maps" / site,
                                                plots=out / "data" / "plots.geojson", overwrite=True))
        maps.append(f"{site} {res.summary.present_area_ha:.3f} ha spurge ({res.tiles_per_second:.0f} tiles/s)")
    run.stages["predict"] = "; ".join(maps) + f" -> {out / 'maps'}"
    _demo_fieldwork(config, out, run, data, trained.bundle)
    (out / "config.yaml").write_text(dump_config(config))
    return run


def _demo_augment(config: SpurgemapConfig, out: Path, run: DemoRun) -> list[Path]:
    """DA-Fusion only with a real diffusion model and fixed validation sites (tokens must not see them)."""
    if not config.augment.model:
        run.stages["augment"] = ("skipped: no diffusion model configured (--set augment.model=DIR with a "
                                 "Stable Diffusion folder, and train.val_sites)")
        return []
    if not config.train.val_sites:
        run.stages["augment"] = ("skipped: needs train.val_sites, so class tokens are learned from training "
                                 "sites only (cross-validation folds would share them)")
        return []
    held_out = set(config.train.val_sites) | set(config.train.test_sites)
    sites = sorted(set(load_tile_set(out / "tiles").sites.tolist()) - held_out)
    cfg = config.model_copy(update={"augment": config.augment.model_copy(update={"sites": sites})})
    res = run_augment(cfg, AugmentInputs(out / "tiles", out / "synthetic", overwrite=True))
    run.stages["augment"] = (f"{res.images} synthetic tiles ({res.images_per_second:.2f} img/s) from sites "
                             f"{', '.join(sites)}{' - TINY RANDOM MODEL' if res.tiny_model else ''} -> {res.out}")
    return [res.out]


def _demo_fieldwork(config: SpurgemapConfig, out: Path, run: DemoRun, data: DemoResult, bundle: Path) -> None:
    """Next season's flight mapped with the same model, then change, spray zones and a survey plan."""
    year = max(data.later_orthos)
    # demo sites are ~40 m across, so fewer, closer visits than the defaults meant for real sites
    plan = config.survey_plan.model_copy(update={"n": min(config.survey_plan.n, 10),
                                                 "min_spacing_m": min(config.survey_plan.min_spacing_m, 4.0)})
    # the field outputs for every terminal and the example product, unless the config chose its own
    terminals = list(dict.fromkeys([*config.zones.terminals, *TERMINALS]))
    zones_cfg = config.zones.model_copy(update={"terminals": terminals})
    t = config.treatment
    treatment = t.model_copy(update={"product": t.product or (t.products[0].name if t.products else None),
                                     "carrier_l_per_ha": t.carrier_l_per_ha or config.zones.rate_l_per_ha or 150.0,
                                     "tank_l": t.tank_l or 400.0})
    config = config.model_copy(update={"survey_plan": plan, "zones": zones_cfg, "treatment": treatment})
    plots = out / "data" / "plots.geojson"
    changes, zones, plans = [], [], []
    for site, ortho in zip(data.site_ids, data.later_orthos[year], strict=True):
        later = out / f"maps_year{year}" / site
        run_predict(config, PredictInputs(ortho, bundle, later, plots=plots, overwrite=True))
        ch = run_change(config, ChangeInputs(out / "maps" / site, later, out / "change" / site, plots, overwrite=True))
        c = ch.summary["classes"]
        changes.append(f"{site} new {c['new']['area_m2']:.0f} m², gone {c['gone']['area_m2']:.0f} m²")
        zo = run_zones(config, ZonesInputs(later, out / "zones" / site, overwrite=True, site=site,
                                           examiner="spurgemap demo"))
        zones.append(f"{site} {zo.zones} zones {zo.treated_area_m2:.0f} m²")
        try:
            sp = run_survey_plan(config, SurveyPlanInputs(later, out / "survey_plan" / site, exclude=[plots],
                                                          overwrite=True, zones=zo.files.get("gpkg")))
            plans.append(f"{site} {sp.n_visits} visits {sp.route_length_m:.0f} m")
        except InputError as exc:  # a small demo site can be all plots: say so, the other sites go on
            plans.append(f"{site} none ({str(exc).split(': ', 1)[-1]})")
    run.stages["change"] = "; ".join(changes) + f" -> {out / 'change'}"
    run.stages["zones"] = "; ".join(zones) + f" -> {out / 'zones'}"
    run.stages["survey-plan"] = "; ".join(plans) + f" -> {out / 'survey_plan'}"
