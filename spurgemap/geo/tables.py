"""Plain tables from users (survey and point CSVs): read tolerantly, refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spurgemap.core.errors import InputError

ID_COLUMNS = {"site_id": ["site_id", "site", "siteid"], "plot_id": ["plot_id", "plot", "plotid"]}


def find_column(columns: list[str], candidates: list[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def read_csv(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise InputError(f"{path}: has a header but no rows")
    return df
