"""The generation loop of `run_augment`: guarded batches, checkpointed rows, skipped jobs on record.

Rows of written images go to WORK/rows*.csv as each batch ends (the resume checkpoint); jobs the
guard gave up on go to WORK/skipped*.csv, so a resumed run neither repeats them nor forgets them.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from spurgemap.augment.batching import Skipped, batches, guarded_batch
from spurgemap.augment.diffusion import DiffusionModel
from spurgemap.augment.methods import Generator, Job
from spurgemap.augment.select import Selection
from spurgemap.augment.store import append_rows, image_path, write_image
from spurgemap.core.progress import progress

log = logging.getLogger(__name__)
SKIPPED = "skipped.csv"
SKIPPED_COLUMNS = ["source_tile_id", "label", "j", "method", "reason", "seeds"]


def _row(jb: Job, out: Path, path: Path, model: DiffusionModel, note: str, retries: int) -> dict[str, Any]:
    return {"path": str(path.relative_to(out.resolve())), "source_tile_id": jb.tile_id, "label": jb.label,
            "method": jb.name, "strength": "+".join("" if s.strength is None else f"{s.strength:g}" for s in jb.steps),
            "seed": jb.seed, "prompt": " | ".join(s.prompt for s in jb.steps), "model_id": model.model_id,
            "model_hash": model.model_hash, "j": jb.j, "tiny_model": model.tiny, "note": note, "retries": retries}


def _skipped_row(s: Skipped) -> dict[str, Any]:
    return {"source_tile_id": s.job.tile_id, "label": s.job.label, "j": s.job.j, "method": s.job.name,
            "reason": s.reason, "seeds": " ".join(map(str, s.seeds))}


def write_skipped(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SKIPPED_COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def read_skipped(work: Path) -> list[dict[str, str]]:
    """Jobs skipped so far by every process (skipped.csv, skipped-<rank>.csv)."""
    out: list[dict[str, str]] = []
    for f in sorted(work.glob("skipped*.csv")):
        with f.open(newline="") as fh:
            out += [r for r in csv.DictReader(fh) if r.get("source_tile_id")]
    return out


def generate(gen: Generator, sel: Selection, todo: list[Job], masks: Any, out: Path, work: Path, rank: int,
             rows: list[dict[str, Any]], model: DiffusionModel) -> int:
    """Make the images of `todo` batch by batch; returns how many were written this run."""
    tile_px = sel.tiles.tile_px
    rows_path = work / ("rows.csv" if not rank else f"rows-{rank}.csv")
    skipped_path = work / (SKIPPED if not rank else f"skipped-{rank}.csv")
    made = 0
    retries = gen.cfg.retries

    def rejected(jb: Job, reason: str) -> None:
        log.debug("%s j=%d seed %d: %s", jb.tile_id, jb.j, jb.seed, reason)

    with progress(len(todo), "generating synthetic tiles", unit="img") as advance:
        for batch in batches(todo, gen.cfg.batch_size):
            src = sel.tiles.images[sel.index[[jb.tile for jb in batch]]]
            m = masks[[jb.tile for jb in batch]] if masks is not None else None
            good, skipped = guarded_batch(gen, batch, src, m, tile_px, retries, rejected)
            new = []
            for res in good:
                path = image_path(out, res.job.tile_id, res.job.j)
                write_image(path, res.image)
                new.append(_row(res.job, out, path, model, res.note, res.retries))
            if new:
                append_rows(rows_path, new)
            if skipped:
                write_skipped(skipped_path, [_skipped_row(s) for s in skipped])
                log.warning("%d of %d images (%s) were non-finite or constant after %d retries and are skipped",
                            len(skipped), len(batch), batch[0].name, retries)
            rows.extend(new)
            made += len(new)
            advance(len(batch))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return made


def guard_counts(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Per method: images kept after a retry ("retried") and jobs given up ("skipped")."""
    retried = Counter(r["method"] for r in rows if int(r.get("retries") or 0) > 0)
    gone = Counter(r["method"] for r in skipped)
    methods = sorted({str(r["method"]) for r in rows} | set(gone))
    return {m: {"retried": retried.get(m, 0), "skipped": gone.get(m, 0)} for m in methods}
