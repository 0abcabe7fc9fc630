"""What commands print about their results, kept apart so command modules stay thin."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from spurgemap.cli.options import out


def print_tile_summary(res: Any) -> None:
    """Tiles per site and class, what was skipped, and the throughput."""
    table = Table(title=f"tiles in {res.out}")
    table.add_column("site")
    classes = sorted({c for v in res.per_site.values() for c in v})
    for c in classes:
        table.add_column(c, justify="right")
    for site, counts in sorted(res.per_site.items()):
        table.add_row(site, *(str(counts.get(c, 0)) for c in classes))
    out.print(table)
    skipped = ", ".join(f"{k}: {v}" for k, v in res.skipped.items()) or "none"
    if getattr(res, "unvisited_plots", None):
        out.print(f"{len(res.unvisited_plots)} plots not visited (empty presence) skipped")
    out.print(f"{res.n_tiles} tiles, skipped {skipped}; {res.seconds:.1f} s, "
              f"{res.tiles_per_second:.1f} tiles/s, {res.megapixels / max(res.seconds, 1e-9):.1f} Mpx/s")
