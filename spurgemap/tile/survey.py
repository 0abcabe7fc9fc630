"""Survey labels: tolerant of the spellings botanists use, strict about anything else.

A label table is a plain pandas frame, whatever it was read from (CSV, plot layer attributes,
verification file), so one set of rules and one set of error messages applies everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spurgemap.config import LabelRules
from spurgemap.core.errors import InputError
from spurgemap.geo.tables import ID_COLUMNS, find_column, read_csv


def parse_labels(values: pd.Series, rules: LabelRules, source: str, row_offset: int = 2) -> pd.Series:
    """Map label spellings to class ids (0 absent, 1 present); list every offending row."""
    norm = values.astype(str).str.strip().str.lower()
    mapping = {v: 0 for v in rules.absent} | {v: 1 for v in rules.present}
    out = norm.map(mapping)
    bad = out.isna()
    if bad.any():
        rows = [f"row {i + row_offset} '{values.iloc[i]}'" for i in range(len(values)) if bad.iloc[i]]
        shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise InputError(f"{source}: unrecognised presence labels: {shown}; use present/absent, "
                         "yes/no, 1/0 or true/false")
    return out.astype(int)


@dataclass
class Survey:
    """Plot labels keyed by (site_id, plot_id), with any extra survey columns kept."""

    labels: dict[tuple[str, str], int]
    extras: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    source: str = ""


def survey_from_frame(df: pd.DataFrame, rules: LabelRules, source: str,
                      require_label: bool = True) -> Survey | None:
    """Build a Survey from a frame with site_id, plot_id and a label column (CSV or plot layer)."""
    cols = list(df.columns)
    site_col = find_column(cols, ID_COLUMNS["site_id"])
    plot_col = find_column(cols, ID_COLUMNS["plot_id"])
    label_col = find_column(cols, rules.columns)
    if label_col is None:
        if require_label:
            raise InputError(f"{source}: no presence column; expected one of {rules.columns}")
        return None
    missing = [n for n, c in (("site_id", site_col), ("plot_id", plot_col)) if c is None]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
    assert site_col is not None and plot_col is not None
    labels = parse_labels(df[label_col], rules, source)
    keys = list(zip(df[site_col].astype(str).str.strip(), df[plot_col].astype(str).str.strip(), strict=False))
    seen: dict[tuple[str, str], int] = {}
    dups = []
    for i, key in enumerate(keys):
        if key in seen:
            dups.append(f"{key[0]}/{key[1]} (rows {seen[key] + 2} and {i + 2})")
        seen.setdefault(key, i)
    if dups:
        raise InputError(f"{source}: duplicate plot ids: {', '.join(dups[:10])}")
    extra_cols = [c for c in cols if c not in (site_col, plot_col, label_col)]
    extras = {key: {c: df[c].iloc[i] for c in extra_cols} for i, key in enumerate(keys)}
    return Survey({k: int(v) for k, v in zip(keys, labels, strict=False)}, extras, source)


def read_survey(path: Path, rules: LabelRules) -> Survey:
    survey = survey_from_frame(read_csv(path), rules, str(path))
    assert survey is not None
    return survey


def read_verification(path: Path, rules: LabelRules) -> dict[str, int]:
    """Per-tile labels from the botanists' verify step; they override plot labels."""
    df = read_csv(path)
    tile_col = find_column(list(df.columns), ["tile_id", "tile"])
    label_col = find_column(list(df.columns), rules.columns)
    if tile_col is None or label_col is None:
        raise InputError(f"{path}: needs columns tile_id and a presence column ({rules.columns})")
    labels = parse_labels(df[label_col], rules, str(path))
    ids = df[tile_col].astype(str).str.strip()
    dup = ids[ids.duplicated()].tolist()
    if dup:
        raise InputError(f"{path}: duplicate tile ids: {', '.join(dup[:10])}")
    return dict(zip(ids, labels.astype(int), strict=False))
