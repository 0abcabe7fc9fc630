"""`spurgemap predict` with several orthomosaics: the campaign on Dask, and its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from spurgemap.cli.options import out
from spurgemap.core.errors import InputError


def predict_campaign(cfg: Any, paths: list[Path], model: Path, out_dir: Path, aoi: Path | None,
                      plots: Path | None, overwrite: bool, workers: int | None, scheduler: str | None,
                      crs: str | None) -> None:
    # Deferred: Dask loads only for campaigns.
    from spurgemap.campaign import CampaignInputs, run_campaign

    def started(dashboard: str | None, n: int) -> None:
        where = f"scheduler {scheduler}" if scheduler else "a local cluster"
        out.print(f"{len(paths)} orthomosaics on {where} with {n} worker(s)"
                  + (f"; Dask dashboard: {dashboard}" if dashboard else ""))
    res = run_campaign(cfg, CampaignInputs(paths, model, out_dir, aoi, plots, overwrite, workers, scheduler, crs),
                       on_start=started)
    sp = next((s.species for s in res.summaries.values()), cfg.labels.species)  # predict's: config or bundle
    table = Table(title=f"campaign in {res.out}")
    for col in ("site", "status", "mapped ha", f"{sp} ha", f"{sp} %", "tiles/s"):
        table.add_column(col, justify="left" if col in ("site", "status") else "right")
    for r in res.rows:
        s = res.summaries.get(r["site"])
        cells = [s.mapped_area_ha, s.present_area_ha, f"{100 * s.present_share:.1f}", s.tiles_per_second] if s else []
        table.add_row(r["site"], "ok" if s else f"failed: {r['error']}", *map(str, cells))
    out.print(table)
    out.print(f"{len(res.rows) - len(res.failed)} of {len(res.rows)} mapped ({res.redone} this run) in "
              f"{res.seconds:.1f} s; campaign layer in {res.crs} -> {res.files['presence']}")
    if res.failed:
        raise InputError(f"{len(res.failed)} orthomosaic(s) failed (see {res.files['summary']}); "
                         "fix them and run the same command again: finished maps are kept")
