"""The demo job: every stage in order on the embedded demo data (demo-data, tile, train, predict)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from spurgemap.augment.stage import AugmentInputs, run_augment
from spurgemap.config import SpurgemapConfig, dump_config
from spurgemap.core.progress import progress
from spurgemap.core.workdir import check_target, staged_dir
from spurgemap.demo.sites import DemoResult, make_demo_data
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
    total = config.demo.sites * config.demo.size_px
    with staged_dir(out, overwrite) as tmp, progress(total, "demo data", unit="rows") as advance:
        seen = 0

        def step(done: int, _total: int) -> None:
            nonlocal seen
            advance(done - seen)
            seen = done

        result = make_demo_data(config.demo, tmp, progress=step)
        (tmp / "config.yaml").write_text(dump_config(config))
    result.out = out
    return result


def run_demo(config: SpurgemapConfig, out: Path, overwrite: bool = False) -> DemoRun:
    run = DemoRun(out)
    check_target(out, overwrite)
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
        maps.append(f"{site} {res.summary['present_area_ha']:.3f} ha spurge ({res.tiles_per_second:.0f} tiles/s)")
    run.stages["predict"] = "; ".join(maps) + f" -> {out / 'maps'}"
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
