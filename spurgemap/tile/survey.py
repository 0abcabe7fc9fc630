"""Survey labels: tolerant of the spellings botanists use, strict about anything else.

A label table is a plain pandas frame, whatever it was read from (CSV, plot layer attributes,
verification file), so one set of rules and one set of error messages applies everywhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spurgemap.config import LabelRules
from spurgemap.core.errors import InputError
from spurgemap.geo.tables import ID_COLUMNS, find_column, read_csv

_BLANK = {"", "nan", "null", "none", "<na>", "nat"}
_WHOLE = re.compile(r"^[+-]?\d+\.0*$")


def label_text(value: Any) -> str:
    """A label cell as stripped lower-case text; '' for a blank (NULL, NaN, empty).

    Why: a crew's layer comes back from QField with NULL where nobody went, and GDAL reads a nullable
    integer field as float, so 1 arrives as 1.0.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    text = str(value).strip().lower()
    if text in _BLANK:
        return ""
    return text.split(".")[0].lstrip("+") if _WHOLE.match(text) else text


def is_blank(values: pd.Series) -> pd.Series:
    """True where a label cell is empty: an unvisited plot, skipped rather than refused."""
    return values.map(label_text) == ""


def parse_labels(values: pd.Series, rules: LabelRules, source: str, row_offset: int = 2) -> pd.Series:
    """Map label spellings to class ids (0 absent, 1 present); list every offending row."""
    norm = values.map(label_text)
    mapping = {v: 0 for v in rules.absent} | {v: 1 for v in rules.present}
    out = norm.map(mapping)
    bad = out.isna()
    if bad.any():
        # the frame's own index (0-based rows as read), so a subset still names the file's rows
        rows = [f"row {int(i) + row_offset} '{v}'" for i, v, b in zip(values.index, values, bad, strict=True) if b]
        shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise InputError(f"{source}: unrecognised presence labels: {shown}; use present/absent, "
                         "yes/no, 1/0 or true/false (leave it empty for a plot not visited)")
    return out.astype(int)


@dataclass
class Survey:
    """Plot labels keyed by (site_id, plot_id), with any extra survey columns kept."""

    labels: dict[tuple[str, str], int]
    extras: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    source: str = ""
    unvisited: list[tuple[str, str]] = field(default_factory=list)  # rows with an empty presence: skipped


def survey_from_frame(df: pd.DataFrame, rules: LabelRules, source: str,
                      require_label: bool = True, row_offset: int = 2) -> Survey | None:
    """Build a Survey from a frame with site_id, plot_id and a label column (CSV or plot layer).

    Rows with an empty presence (plots nobody visited) are left out and listed in ``unvisited``.
    ``row_offset``: 2 for a CSV (header + 1-based), 1 for a layer's features.
    """
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
    df = df.reset_index(drop=True)
    keys = list(zip(df[site_col].astype(str).str.strip(), df[plot_col].astype(str).str.strip(), strict=False))
    blank = is_blank(df[label_col]).to_numpy()
    labels = pd.Series(-1, index=df.index)
    labels[~blank] = parse_labels(df[label_col][~blank], rules, source, row_offset)
    seen: dict[tuple[str, str], int] = {}
    dups = []
    for i, key in enumerate(keys):
        if key in seen:
            dups.append(f"{key[0]}/{key[1]} (rows {seen[key] + 2} and {i + 2})")
        seen.setdefault(key, i)
    if dups:
        raise InputError(f"{source}: duplicate plot ids: {', '.join(dups[:10])}")
    extra_cols = [c for c in cols if c not in (site_col, plot_col, label_col)]
    extras = {key: {c: df[c].iloc[i] for c in extra_cols} for i, key in enumerate(keys) if not blank[i]}
    visited = {k: int(v) for k, v, b in zip(keys, labels, blank, strict=True) if not b}
    unvisited = [k for k, b in zip(keys, blank, strict=True) if b]
    if not visited:
        raise InputError(f"{source}: every row's presence is empty ({len(unvisited)} rows); fill in "
                         "present/absent for the plots visited")
    return Survey(visited, extras, source, unvisited)


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
