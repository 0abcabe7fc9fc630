"""Synthetic field data (orthomosaics, truth, plots, survey): every stage runs without real data.

Deterministic from the seed, so tests and benchmarks see identical pixels on every run.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from spurgemap.config import DemoConfig
from spurgemap.core.errors import InputError
from spurgemap.demo.layout import Plot
from spurgemap.demo.scene import build_scene
from spurgemap.demo.synth import Scene, plot_counts, render_strip
from spurgemap.geo.demo_io import (
    BLOCK,
    SiteRasterWriter,
    check_projected_epsg,
    lonlat_to_crs,
    write_plots_geojson,
)

# Sites sit east of Helena, Montana (leafy-spurge country), in a grid of 5 per row.
ANCHOR_LONLAT = (-111.95, 46.55)
SURVEYORS = ["A. Rivera", "J. Okafor", "M. Lindqvist", "K. Two Feathers", "S. Patel", "D. Moreau"]
MIN_PLOT_PX = 32
# A later season's flight starts this many px east/south of the first (~0.1 cell of a 250-px tile,
# under the quarter cell at which `spurgemap change` warns) and covers this many px less.
SHIFT_PX, SHRINK_PX = (27, 15), 60


@dataclass
class DemoResult:
    out: Path
    site_ids: list[str]
    ortho_paths: list[Path]
    truth_paths: list[Path]
    plots_path: Path
    survey_path: Path
    n_plots: int
    n_present: int
    seconds: float
    megapixels: float
    cover_pct: dict[tuple[str, str], float] = field(default_factory=dict)
    later_orthos: dict[int, list[Path]] = field(default_factory=dict)  # year -> orthos (years >= 2)
    later_truths: dict[int, list[Path]] = field(default_factory=dict)


def site_ids(n: int) -> list[str]:
    return [f"site{i + 1:02d}" for i in range(n)]


def _site_origin(cfg: DemoConfig, i: int) -> tuple[float, float]:
    """North-west corner in the target CRS; sites are >= 500 m apart whatever their size."""
    extent = cfg.size_px * cfg.gsd_m
    spacing = max(1500.0, extent + 500.0)
    rng = np.random.default_rng([cfg.seed % 2**63, i, 99])
    jx, jy = rng.uniform(-100.0, 100.0, 2)
    lon0, lat0 = ANCHOR_LONLAT
    x0, y0 = lonlat_to_crs(cfg.epsg, lon0, lat0)
    cx = x0 + (i % 5) * spacing + jx
    cy = y0 - (i // 5) * spacing + jy
    return round(cx - extent / 2.0, 2), round(cy + extent / 2.0, 2)


def _validate(cfg: DemoConfig, out: Path) -> None:
    check_projected_epsg(cfg.epsg)
    plot_px = cfg.plot_size_m / cfg.gsd_m
    if plot_px < MIN_PLOT_PX:
        raise InputError(
            f"demo.plot_size_m={cfg.plot_size_m} is only {plot_px:.0f} px at "
            f"demo.gsd_m={cfg.gsd_m}; use plots of at least {MIN_PLOT_PX} px"
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory; choose another --out")


def _write_site(
    scene: Scene,
    writer: SiteRasterWriter,
    on_strip: Callable[[int], None],
) -> dict[str, tuple[int, int, int]]:
    """Render and write one site; returns per-plot (pixels, spurge pixels, invalid pixels)."""
    counts = {p.plot_id: (0, 0, 0) for p in scene.plots}
    for row0 in range(0, scene.size, BLOCK):
        row1 = min(scene.size, row0 + BLOCK)
        rgba, truth = render_strip(scene, row0, row1)
        writer.write_strip(row0, rgba, truth)
        for p in scene.plots:
            a, b, c = counts[p.plot_id]
            da, db, dc = plot_counts(p, truth, row0)
            counts[p.plot_id] = (a + da, b + db, c + dc)
        on_strip(row1 - row0)
    return counts


def demo_rows(cfg: DemoConfig) -> int:
    """Raster rows `make_demo_data` writes: the unit of its progress."""
    return cfg.sites * sum(cfg.size_px - SHRINK_PX * (y - 1) for y in range(1, cfg.years + 1))


def relocate(result: DemoResult, old: Path, new: Path) -> DemoResult:
    """The same result with every path under `old` moved under `new` (after a staged folder's rename)."""
    def move(p: Path) -> Path:
        return new / p.relative_to(old)

    return replace(
        result, out=new, ortho_paths=[move(p) for p in result.ortho_paths],
        truth_paths=[move(p) for p in result.truth_paths], plots_path=move(result.plots_path),
        survey_path=move(result.survey_path),
        later_orthos={y: [move(p) for p in ps] for y, ps in result.later_orthos.items()},
        later_truths={y: [move(p) for p in ps] for y, ps in result.later_truths.items()})


def flight_date(year: int) -> str:
    """The demo flight of season ``year`` (1 = 2024), mid-June as leafy spurge flowers."""
    return f"{2023 + year}-06-15"


def _write_later_year(cfg: DemoConfig, i: int, year: int, folder: Path,
                      on_strip: Callable[[int], None]) -> None:
    """The same site one or more seasons later: spread spurge, a shifted and smaller flight."""
    scene = build_scene(cfg.seed, i, cfg.size_px, cfg.gsd_m, cfg.plots_per_site, cfg.plot_size_m, year=year)
    dx, dy = (v * (year - 1) for v in SHIFT_PX)
    size = cfg.size_px - SHRINK_PX * (year - 1)
    west, north = _site_origin(cfg, i)
    with SiteRasterWriter(folder / "ortho.tif", folder / "truth.tif", epsg=cfg.epsg, west=west + dx * cfg.gsd_m,
                          north=north - dy * cfg.gsd_m, gsd_m=cfg.gsd_m, size=size,
                          flight_date=flight_date(year)) as writer:
        for row0 in range(0, size, BLOCK):
            row1 = min(size, row0 + BLOCK)
            rgba, truth = render_strip(scene, dy + row0, dy + row1, dx, size)
            writer.write_strip(row0, rgba, truth)
            on_strip(row1 - row0)


def _ring(p: Plot, west: float, north: float, gsd: float) -> list[tuple[float, float]]:
    k = p.corners()
    pts = [(west + float(x) * gsd, north - float(y) * gsd) for x, y in k]
    return [*pts, pts[0]]


def make_demo_data(
    cfg: DemoConfig, out: Path, progress: Callable[[int, int], None] | None = None
) -> DemoResult:
    """Write OUT/sites/<id>/{ortho,truth}.tif, OUT/plots.geojson, OUT/survey.csv, OUT/README.txt."""
    out = Path(out)
    _validate(cfg, out)
    t0 = time.perf_counter()
    ids = site_ids(cfg.sites)
    total_rows = demo_rows(cfg)
    done = 0

    def on_strip(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(done, total_rows)

    records: list[dict[str, str]] = []
    rings: list[list[tuple[float, float]]] = []
    survey: list[dict[str, str]] = []
    cover: dict[tuple[str, str], float] = {}
    orthos: list[Path] = []
    truths: list[Path] = []
    for i, sid in enumerate(ids):
        scene = build_scene(
            cfg.seed, i, cfg.size_px, cfg.gsd_m, cfg.plots_per_site, cfg.plot_size_m
        )
        west, north = _site_origin(cfg, i)
        site_dir = out / "sites" / sid
        orthos.append(site_dir / "ortho.tif")
        truths.append(site_dir / "truth.tif")
        with SiteRasterWriter(
            orthos[-1],
            truths[-1],
            epsg=cfg.epsg,
            west=west,
            north=north,
            gsd_m=cfg.gsd_m,
            size=cfg.size_px,
            flight_date=flight_date(1),
        ) as writer:
            counts = _write_site(scene, writer, on_strip)
        rng = np.random.default_rng([cfg.seed % 2**63, i, 98])
        day = f"2024-06-{int(rng.integers(8, 24)):02d}"
        crew = [str(s) for s in rng.choice(SURVEYORS, 2, replace=False)]
        for p in scene.plots:
            inside, spurge, invalid = counts[p.plot_id]
            if invalid or not inside:
                raise RuntimeError(f"demo generator bug: plot {sid}/{p.plot_id} touches the collar")
            pct = 100.0 * spurge / inside
            # Labels come from the truth itself, so they can never disagree with it.
            present = spurge > 0
            cover[(sid, p.plot_id)] = pct
            records.append({"site_id": sid, "plot_id": p.plot_id})
            rings.append(_ring(p, west, north, cfg.gsd_m))
            survey.append(
                {
                    "site_id": sid,
                    "plot_id": p.plot_id,
                    "presence": "present" if present else "absent",
                    "cover_pct": f"{round(pct, 1):.1f}",
                    "date": day,
                    "surveyor": crew[int(rng.integers(2))],
                }
            )

    later: dict[int, list[Path]] = {}
    for year in range(2, cfg.years + 1):
        for i, sid in enumerate(ids):
            folder = out / f"year{year}" / "sites" / sid
            _write_later_year(cfg, i, year, folder, on_strip)
            later.setdefault(year, []).append(folder / "ortho.tif")

    out.mkdir(parents=True, exist_ok=True)
    plots_path = out / "plots.geojson"
    write_plots_geojson(plots_path, records, rings, cfg.epsg)
    survey_path = out / "survey.csv"
    with survey_path.open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=["site_id", "plot_id", "presence", "cover_pct", "date", "surveyor"]
        )
        w.writeheader()
        w.writerows(survey)
    n_present = sum(r["presence"] == "present" for r in survey)
    readme = [
        "spurgemap demo field data: synthetic drone orthomosaics of Montana grassland",
        "with leafy spurge. Not real data: draw no conclusions about any real place.",
        f"Generated with seed={cfg.seed}; the same seed gives identical files.",
        f"{cfg.sites} sites of {cfg.size_px} px square at {cfg.gsd_m} m/px, EPSG:{cfg.epsg}.",
        "sites/<site>/ortho.tif  RGBA orthomosaic (alpha 0 = no data)",
        "sites/<site>/truth.tif  1 = leafy spurge, 0 = none, 255 = no data (for scoring maps)",
        f"plots.geojson          {len(survey)} plots, {cfg.plot_size_m:g} m squares, EPSG:4326",
        f"survey.csv             presence per plot ({n_present} present); cover_pct from truth",
    ]
    for year in later:
        readme.append(f"year{year}/sites/<site>/  the same sites {year - 1} season(s) later: spurge spread "
                      "around its patches; the flight shifted and smaller")
    (out / "README.txt").write_text("\n".join(readme) + "\n")
    seconds = time.perf_counter() - t0
    return DemoResult(
        out=out,
        site_ids=ids,
        ortho_paths=orthos,
        truth_paths=truths,
        plots_path=plots_path,
        survey_path=survey_path,
        n_plots=len(survey),
        n_present=n_present,
        seconds=seconds,
        megapixels=cfg.sites * cfg.size_px**2 / 1e6,
        cover_pct=cover,
        later_orthos=later,
        later_truths={y: [p.with_name("truth.tif") for p in paths] for y, paths in later.items()},
    )
