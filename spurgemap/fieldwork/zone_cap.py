"""Fit zones under a terminal's zone cap by merging the nearest ones.

Why: terminals and ISOXML take a limited number of zones (AgFusion 100, ISOXML zone codes 1-253).
Zones closer than a growing distance (steps of ``merge_step_m``) are merged into one polygon, so
the zones that merge first are the nearest; a merged zone covers all its members (nothing present
is left out), zones that did not merge stay as they are.
"""

from __future__ import annotations

from shapely import Polygon, STRtree, get_parts, union_all


def _groups(zones: list[Polygon], distance: float) -> list[list[int]]:
    """Indices of zones within ``distance`` of each other, chained (connected components)."""
    tree = STRtree(zones)
    parent = list(range(len(zones)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    left, right = tree.query(zones, predicate="dwithin", distance=distance)
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(zones)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _merged(members: list[Polygon], distance: float) -> Polygon:
    """One polygon over members: a closing (grow, shrink) when it stays in one piece, else the grown shape."""
    grown = union_all(members).buffer(distance / 2, quad_segs=2, join_style="mitre", mitre_limit=2.0)
    closed = union_all([grown.buffer(-distance / 2, quad_segs=2, join_style="mitre", mitre_limit=2.0), *members])
    parts = [p for p in get_parts(closed) if isinstance(p, Polygon)]
    if len(parts) == 1:
        return Polygon(parts[0].exterior, parts[0].interiors)
    return max((p for p in get_parts(grown) if isinstance(p, Polygon)), key=lambda p: p.area)


def cap_zones(zones: list[Polygon], cap: int, step: float) -> tuple[list[Polygon], int, float]:
    """At most ``cap`` zones: (zones west to east, zones merged away, merge distance in map units)."""
    if len(zones) <= cap:
        return zones, 0, 0.0
    distance = 0.0
    current: list[Polygon] = list(zones)
    while len(current) > cap:
        distance += step
        merged: list[Polygon] = []
        for group in _groups(zones, distance):
            members = [zones[i] for i in group]
            merged.append(members[0] if len(members) == 1 else _merged(members, distance))
        current = merged
    out = sorted(current, key=lambda p: (p.bounds[0], -p.bounds[3]))
    return out, len(zones) - len(out), distance

