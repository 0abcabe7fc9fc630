"""results.csv, summary.md and the paper's accuracy-vs-k figure, from the long results table."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from spurgemap.config import SpurgemapConfig, dump_config

CI = 0.68  # the paper's error bars: 68 % (about one standard error)


def ci68(values: pd.Series) -> tuple[float, float, float]:
    """Mean and a 68 % t-interval over seeds (nan when a single seed gives no spread)."""
    v = values.dropna().to_numpy(float)
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + CI / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def curve_table(results: pd.DataFrame, split: str = "test", metric: str = "balanced_accuracy") -> pd.DataFrame:
    sel = results[(results.split == split) & (results.metric == metric)]
    rows = []
    for (method, k), g in sel.groupby(["method", "k"], sort=False):
        m, lo, hi = ci68(g.value)
        rows.append({"method": method, "k": int(k), "mean": m, "lo": lo, "hi": hi, "seeds": int(g.value.notna().sum())})
    return pd.DataFrame(rows, columns=["method", "k", "mean", "lo", "hi", "seeds"])


def area_vs_baseline(table: pd.DataFrame) -> dict[str, float]:
    """Trapezoid area under mean accuracy over log2(k), minus the baseline's (the stacking ablation's figure)."""
    areas = {}
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("k")
        x = np.log2(g.k.to_numpy(float))
        y = g["mean"].to_numpy(float)
        areas[method] = float(np.trapezoid(y, x)) if len(g) > 1 else float(y[0]) if len(y) else float("nan")
    base = areas.get("baseline")
    return {m: (a - base if base is not None else float("nan")) for m, a in areas.items()}


def paired_vs_baseline(results: pd.DataFrame, split: str = "test",
                       metric: str = "balanced_accuracy") -> pd.DataFrame:
    """Method minus baseline on the same (k, seed) - the same k-shot tiles - with a 68 % interval:
    seeds share their draw, so paired differences cancel most of the draw-to-draw spread."""
    sel = results[(results.split == split) & (results.metric == metric)]
    base = sel[sel.method == "baseline"].set_index(["k", "seed"]).value
    rows = []
    for (method, k), g in sel[sel.method != "baseline"].groupby(["method", "k"], sort=False):
        d = g.set_index(["k", "seed"]).value - base
        m, lo, hi = ci68(d.dropna())
        rows.append({"method": method, "k": int(k), "mean": m, "lo": lo, "hi": hi, "pairs": int(d.notna().sum())})
    return pd.DataFrame(rows, columns=["method", "k", "mean", "lo", "hi", "pairs"])


def _plot(path: Path, table: pd.DataFrame, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("k")
        ax.plot(g.k, g["mean"], marker="o", label=method)
        ax.fill_between(g.k, g.lo.fillna(g["mean"]), g.hi.fillna(g["mean"]), alpha=0.2)
    ax.set_xscale("log", base=2)
    ks = sorted(table.k.unique())
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="training tiles per class (k)", ylabel="balanced accuracy (test sites)", title=title)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _fmt(m: float, lo: float, hi: float, spec: str = ".3f") -> str:
    if np.isnan(m):
        return "n/a"
    return f"{m:{spec}}" if np.isnan(lo) else f"{m:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def write_reports(out: Path, results: pd.DataFrame, config: SpurgemapConfig, val: list[str], test: list[str],
                  tiny: bool, tiles: Path | None) -> None:
    tmp = out / "results.csv.tmp"
    results.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out / "results.csv")
    table = curve_table(results)
    val_table = curve_table(results, "validation")
    areas = area_vs_baseline(table)
    e = config.evaluate
    lines = ["# spurgemap evaluate: few-shot balanced accuracy", ""]
    if tiny:
        lines += ["> **WARNING: the diffusion model is a TINY RANDOM test model.** Its synthetic tiles are noise:",
                  "> these numbers measure the mechanics of the pipeline, not whether DA-Fusion helps.", ""]
    lines += [
        f"Tile set `{tiles}`; training sites = all but validation {val} and test {test}.",
        f"Methods {e.methods}, k = {e.shots}, seeds = {e.seeds}; backbone `{config.train.backbone}` "
        f"({config.train.mode}, {config.train.epochs} epochs).",
        "Protocol: k tiles per class are drawn from the training sites per seed; tokens and synthetic tiles come "
        "from those tiles only; the epoch and threshold are chosen on the validation sites; the test sites are "
        "never used for any choice (the paper chose the best epoch on the set it reported).", "",
        "## Test sites: mean balanced accuracy [68 % CI over seeds]", "",
        "| method | " + " | ".join(f"k={k}" for k in sorted(table.k.unique())) + " | area vs baseline |",
        "|---|" + "---|" * (table.k.nunique() + 1),
    ]
    for method, g in table.groupby("method", sort=False):
        cells = {int(r.k): _fmt(r["mean"], r.lo, r.hi) for _, r in g.iterrows()}
        area = areas.get(str(method), float("nan"))
        lines.append(f"| {method} | " + " | ".join(cells.get(int(k), "") for k in sorted(table.k.unique()))
                     + f" | {'n/a' if np.isnan(area) else f'{area:+.3f}'} |")
    paired = paired_vs_baseline(results)
    if len(paired):
        ks = sorted(paired.k.unique())
        lines += ["", "## Test sites: paired difference to baseline (same k, same seed = same tiles) "
                  "[68 % CI over seeds]", "", "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for method, g in paired.groupby("method", sort=False):
            cells = {int(r.k): _fmt(r["mean"], r.lo, r.hi, "+.3f") for _, r in g.iterrows()}
            lines.append(f"| {method} | " + " | ".join(cells.get(int(k), "") for k in ks) + " |")
    lines += ["", "## Validation sites (used for selection): mean balanced accuracy", "",
              "| method | " + " | ".join(f"k={k}" for k in sorted(val_table.k.unique())) + " |",
              "|---|" + "---|" * val_table.k.nunique()]
    for method, g in val_table.groupby("method", sort=False):
        vcells = [_fmt(r["mean"], r.lo, r.hi) for _, r in g.sort_values("k").iterrows()]
        lines.append(f"| {method} | " + " | ".join(vcells) + " |")
    lines += ["", "Area vs baseline: trapezoid of the mean test balanced accuracy over log2(k), minus the "
              "baseline's (positive = better than flips alone).", "", "## Resolved configuration", "", "```yaml",
              dump_config(config).rstrip(), "```", ""]
    (out / "summary.md.tmp").write_text("\n".join(lines))
    os.replace(out / "summary.md.tmp", out / "summary.md")
    title = "few-shot spurge classification" + (" (TINY RANDOM diffusion model)" if tiny else "")
    _plot(out / "accuracy_vs_k.png", table, title)
