"""Assemble one site's scene from its seed: collar, plots with labels, and every object."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from spurgemap.demo.layout import Plot, layout_plots
from spurgemap.demo.objects import (
    Patch,
    background_patches,
    make_flowers,
    make_shrubs,
    plants_in_patch,
    plot_patches,
    umbels,
)
from spurgemap.demo.synth import Scene, make_collar, site_salt

# Anything drawn for a plant stays within this many px of its stem: used to keep absent plots clean.
PLANT_REACH_PX = 12.0
PRESENT_KINDS = ["sparse", "medium", "dense", "cryptic"]


def _rng(seed: int, site: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**63, site, stream])


def _assign_kinds(rng: np.random.Generator, plots: list[Plot]) -> list[Plot]:
    """At least 3 present and 3 absent when there are 6+ plots; one present plot is cryptic."""
    n = len(plots)
    if n >= 6:
        n_present = int(rng.integers(3, n - 2))
    elif n >= 2:
        n_present = int(rng.integers(1, n))
    else:
        n_present = 1
    present = rng.permutation(n)[:n_present]
    kinds = ["absent"] * n
    for j, i in enumerate(present):
        kinds[int(i)] = (
            "cryptic" if j == 0 else str(rng.choice(PRESENT_KINDS, p=[0.3, 0.3, 0.3, 0.1]))
        )
    return [replace(p, kind=k) for p, k in zip(plots, kinds, strict=True)]


def _spread(rng: np.random.Generator, patches: list[Patch], gsd_m: float) -> list[Patch]:
    """One season of spread: each visible patch grows outward and may seed a satellite nearby.

    Leafy spurge spreads by creeping roots, so new stems appear around existing patches rather
    than at random; the new patches are appended, so last year's stems stay where they were.
    """
    grown: list[Patch] = []
    for p in patches:
        if p.kind == "cryptic" or rng.random() < 0.2:
            continue
        grown.append(replace(p, radius=p.radius * float(rng.uniform(1.4, 1.8)), density=p.density * 0.5))
        if rng.random() < 0.5:
            ang, dist = rng.uniform(0, 2 * np.pi), p.radius * float(rng.uniform(1.8, 2.6))
            grown.append(replace(p, cx=p.cx + dist * float(np.cos(ang)), cy=p.cy + dist * float(np.sin(ang)),
                                 radius=max(p.radius * 0.5, 0.3 / gsd_m)))
    return grown


def build_scene(
    seed: int, site: int, size: int, gsd_m: float, n_plots: int, plot_size_m: float, year: int = 1
) -> Scene:
    """Year 1 is the surveyed season; each later year adds one season of spread to the same plants."""
    collar = make_collar(_rng(seed, site, 1), size)
    plot_px = plot_size_m / gsd_m
    clearance = max(24.0, 0.01 * size)
    lo = collar.depth + clearance
    plots = layout_plots(_rng(seed, site, 2), n_plots, plot_px, lo, size - lo, gap=clearance)
    plots = _assign_kinds(_rng(seed, site, 3), plots)
    shrubs = make_shrubs(_rng(seed, site, 4), size, gsd_m)

    rng = _rng(seed, site, 5)
    patches: list[Patch] = []
    for p in plots:
        if not p.present:
            continue
        g = max(2, round(p.size / 180.0))
        cell = p.size / g
        t = (np.arange(g) + 0.5) * cell - p.size / 2.0
        u, v = (a.ravel() for a in np.meshgrid(t, t))
        cx, cy = p.to_pixel(u, v)
        patches += plot_patches(rng, cx, cy, cell, p.kind)
    patches += background_patches(rng, size, gsd_m)
    for season in range(2, year + 1):
        patches += _spread(_rng(seed, site, 10 + season), patches, gsd_m)

    xs, ys, pale = [], [], []
    for patch in patches:
        x, y = plants_in_patch(rng, patch, gsd_m)
        xs.append(x)
        ys.append(y)
        pale.append(np.full(x.size, patch.kind == "cryptic"))
    x, y, is_pale = np.concatenate(xs), np.concatenate(ys), np.concatenate(pale)

    keep = (x > -PLANT_REACH_PX) & (x < size + PLANT_REACH_PX)
    keep &= (y > -PLANT_REACH_PX) & (y < size + PLANT_REACH_PX)
    for p in plots:
        if not p.present:
            keep &= ~p.contains(x, y, pad=PLANT_REACH_PX)
    if shrubs.x.size and x.size:
        # Shrubs and their shadows would hide spurge; drop stems under them so truth = visible.
        tree = cKDTree(np.stack([x, y], 1))
        for cx, cy, r in (
            (shrubs.x, shrubs.y, shrubs.r * 1.2),
            (shrubs.x + shrubs.dx, shrubs.y + shrubs.dy, shrubs.r * 1.1),
        ):
            for hits in tree.query_ball_point(np.stack([cx, cy], 1), r):
                if hits:
                    keep[np.asarray(hits)] = False
    bracts, leaves = umbels(rng, x[keep], y[keep], is_pale[keep])
    return Scene(
        size=size,
        gsd_m=gsd_m,
        salt=site_salt(seed, site),
        collar=collar,
        plots=plots,
        shrubs=shrubs,
        leaves=leaves,
        flowers=make_flowers(_rng(seed, site, 6), size, gsd_m),
        bracts=bracts,
    )
