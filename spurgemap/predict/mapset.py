"""The map folder `spurgemap predict` writes: file names, NODATA, palette, the summary and the one reader.

Why one module: predict writes these files; campaign, the CLI printers and the field-work commands
read them. As for the tile set (`tile/tileset.py`), the synthetic set (`augment/manifest.py`) and the
bundle (`model/bundle.py`), a file name or summary key spelled once cannot drift between writer and
readers (`tests/test_architecture.py` checks that no other module spells them). Raster IO itself
stays in `geo/` (`geo.fieldwork_io.read_band`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from spurgemap.core.errors import InputError
from spurgemap.core.labels import DEFAULT_SPECIES
from spurgemap.geo.fieldwork_io import read_band, units_per_m
from spurgemap.predict.styles import ABSENT_RGBA, PRESENCE_RGBA

SCHEMA_VERSION = 1  # of <name>_summary.json; files without `schema_version` are version 0 (read alike)
NODATA = 255  # uint8 cells outside the map, in every map raster (and the field rasters made from them)
PRESENCE_RGB = PRESENCE_RGBA[:3]  # the one magenta: class palette, preview tint, QGIS styles
PALETTE = {0: (*ABSENT_RGBA[:3], 0), 1: PRESENCE_RGBA, NODATA: (0, 0, 0, 0)}  # _class.tif's colour table
CLASS_CODES = "0=absent,1=present"  # the class raster's `classes` tag
PRESENCE_LAYER = "presence"  # the GeoPackage layer
SUFFIXES = {"prob": "_prob.tif", "class": "_class.tif", "tiles": "_tiles.geojson", "presence": "_presence.gpkg",
            "summary_json": "_summary.json", "summary_csv": "_summary.csv", "preview": "_preview.png",
            "confidence": "_confidence.tif"}
# Leafy spurge's keys of earlier versions, kept for scripts that read them (species-neutral key -> old)
LEGACY_KEYS = {"present_area_ha": "spurge_area_ha", "present_share": "spurge_share"}
LEGACY_PLOT_KEYS = {"present_area_m2": "spurge_area_m2", "present_share": "spurge_share"}


def map_files(folder: Path, name: str) -> dict[str, Path]:
    """The files of map `name` in `folder`, by role (the keys of SUFFIXES)."""
    return {role: Path(folder) / f"{name}{suffix}" for role, suffix in SUFFIXES.items()}


@dataclass
class PlotArea:
    """One plot of `--plots` and the mapped presence inside it."""

    site_id: str
    plot_id: str
    plot_area_m2: float
    present_area_m2: float
    present_share: float


@dataclass
class MapSummary:
    """`<name>_summary.json`: what one orthomosaic's map found and how it was made."""

    spurgemap_version: str
    orthomosaic: str
    model: str
    threshold: float
    operating_point: str
    context_lambda: float
    calibration: str
    backend: str
    tile_size_px: int
    stride_px: int
    cells: int
    present_cells: int
    tiles_predicted: int
    species: str
    mapped_area_ha: float
    present_area_ha: float
    present_share: float
    low_confidence_below: int
    low_confidence_share: float
    seconds: float
    tiles_per_second: float | None
    hectares_per_hour: float | None
    created: str
    plots: list[PlotArea] | None = None  # the --plots that touch a mapped cell
    plots_not_on_map: int | None = None  # the other plots of --plots (other sites'), left out of `plots`
    schema_version: int = SCHEMA_VERSION

    @property
    def legacy(self) -> bool:
        """Leafy spurge maps also carry the keys of earlier versions."""
        return self.species == DEFAULT_SPECIES

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out: dict[str, Any] = {"schema_version": d.pop("schema_version")}
        plots = d.pop("plots")
        if d["plots_not_on_map"] is None:
            d.pop("plots_not_on_map")
        out.update(d)
        if self.legacy:
            out.update({old: d[new] for new, old in LEGACY_KEYS.items()})
        if plots is not None:
            if self.legacy:
                plots = [{**p, **{old: p[new] for new, old in LEGACY_PLOT_KEYS.items()}} for p in plots]
            out["plots"] = plots
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "summary") -> MapSummary:
        """Also reads files of earlier versions (no schema version, leafy spurge's `spurge_*` keys only)."""
        d = dict(d)
        for new, old in LEGACY_KEYS.items():
            d.setdefault(new, d.get(old))
        d.setdefault("species", DEFAULT_SPECIES)
        d.setdefault("schema_version", 0)
        if int(d["schema_version"]) > SCHEMA_VERSION:
            raise InputError(f"{source}: schema version {d['schema_version']} is newer than this spurgemap "
                             f"reads ({SCHEMA_VERSION}); upgrade spurgemap")
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - {"plots", "plots_not_on_map", "schema_version"} if d.get(n, ...) is ... or (
            n in LEGACY_KEYS and d[n] is None))
        if missing:
            raise InputError(f"{source}: not a map summary (missing {', '.join(missing)}); "
                             "use the files `spurgemap predict` wrote")
        plots = d.get("plots")
        if plots is not None:
            plot_names = {f.name for f in fields(PlotArea)}
            plots = [PlotArea(**{k: (p[k] if k in p else p[LEGACY_PLOT_KEYS[k]]) for k in plot_names}) for p in plots]
        return cls(**{**{k: d[k] for k in names if k in d}, "plots": plots})

    @classmethod
    def from_json(cls, path: Path) -> MapSummary:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable map summary ({str(exc).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise InputError(f"{path}: not a map summary (a JSON object); use the files `spurgemap predict` wrote")
        return cls.from_dict(d, str(path))

    def headline(self) -> dict[str, Any]:
        """One row of a campaign table: the species' area and the mapping speed (legacy columns for leafy spurge)."""
        row = {"species": self.species, "mapped_area_ha": self.mapped_area_ha,
               "present_area_ha": self.present_area_ha, "present_share": self.present_share,
               "tiles_predicted": self.tiles_predicted, "tiles_per_second": self.tiles_per_second,
               "seconds": self.seconds}
        if self.legacy:
            row.update({old: row[new] for new, old in LEGACY_KEYS.items()})
        return row

    def csv_rows(self) -> list[list[Any]]:
        """`<name>_summary.csv`: header, the orthomosaic, then one row per plot."""
        old = list(LEGACY_KEYS.values()) if self.legacy else []
        rows: list[list[Any]] = [["scope", "site_id", "plot_id", "area_ha", "present_area_ha", "present_share", *old]]
        pair = [self.present_area_ha, self.present_share]
        rows.append(["orthomosaic", "", "", self.mapped_area_ha, *pair, *(pair if old else [])])
        for p in self.plots or []:
            pair = [round(p.present_area_m2 / 1e4, 6), p.present_share]
            rows.append(["plot", p.site_id, p.plot_id, round(p.plot_area_m2 / 1e4, 6), *pair, *(pair if old else [])])
        return rows


HEADLINE_COLUMNS = ["species", "mapped_area_ha", "present_area_ha", "present_share", "tiles_predicted",
                    "tiles_per_second", "seconds"]


def finished_summary(folder: Path, name: str) -> Path | None:
    """The summary of a map that predict finished (its staging `.work` gone), else None."""
    path = map_files(folder, name)["summary_json"]
    done = path.exists() and (Path(folder) / "config.yaml").exists() and not (Path(folder) / ".work").exists()
    return path if done else None


@dataclass
class MapLayers:
    """One predict output (``<name>_prob.tif`` and friends) as arrays on its cell grid."""

    name: str
    folder: Path
    prob_path: Path
    pct: np.ndarray  # uint8 presence probability in %, NODATA outside the map
    cls: np.ndarray  # uint8 0 absent / 1 present / NODATA
    conf: np.ndarray | None  # uint8 0..100 from <name>_confidence.tif, None when predict did not write it
    transform: Affine
    crs_wkt: str
    threshold: float
    units_per_m: float  # map units per ground metre (1 for UTM up to the scale factor)
    files: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # predict's provenance: source, bundle_sha256, species...

    @property
    def valid(self) -> np.ndarray:
        return self.pct != NODATA

    @property
    def cell_m(self) -> float:
        return abs(self.transform.a) / self.units_per_m


def find_map(folder: Path, name: str | None = None) -> Path:
    """The ``*_prob.tif`` of a predict output folder (the one named ``name`` when there are several)."""
    folder, prob = Path(folder), SUFFIXES["prob"]
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the --out folder of `spurgemap predict`")
    if name is not None:
        path = map_files(folder, name)["prob"]
        if not path.exists():
            raise InputError(f"{folder}: has no map named {name!r} ({path.name} not found)")
        return path
    found = sorted(folder.glob(f"*{prob}"))
    if not found:
        raise InputError(f"{folder}: no predict outputs (*{prob}); run `spurgemap predict ... --out {folder}`")
    if len(found) > 1:
        names = ", ".join(p.name.removesuffix(prob) for p in found)
        raise InputError(f"{folder}: holds several maps ({names}); choose one with --name")
    return found[0]


def read_map(folder: Path, name: str | None = None) -> MapLayers:
    """Read the probability, class and (if present) confidence rasters of one map."""
    prob_path = find_map(folder, name)
    stem = prob_path.name.removesuffix(SUFFIXES["prob"])
    files = map_files(prob_path.parent, stem)
    pct, transform, crs_wkt, tags = read_band(prob_path)
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise InputError(f"{prob_path}: not a north-up grid; use the files `spurgemap predict` wrote")
    try:
        threshold = float(tags["threshold"])
    except (KeyError, ValueError):
        raise InputError(f"{prob_path}: no 'threshold' tag; use the files `spurgemap predict` wrote") from None
    if pct.dtype != np.uint8:
        raise InputError(f"{prob_path}: expected uint8 percent probabilities, found {pct.dtype}")
    if files["class"].exists():
        cls = read_band(files["class"])[0]
        if cls.shape != pct.shape:
            raise InputError(f"{files['class']}: {cls.shape} cells, but {prob_path.name} has {pct.shape}")
    else:
        cls = np.where(pct == NODATA, NODATA, pct >= threshold * 100).astype(np.uint8)
    conf = read_band(files["confidence"])[0] if files["confidence"].exists() else None
    if conf is not None and conf.shape != pct.shape:
        raise InputError(f"{files['confidence']}: {conf.shape} cells, but {prob_path.name} has {pct.shape}")
    rows, cols = pct.shape
    cx, cy = transform @ (cols / 2, rows / 2)
    return MapLayers(stem, prob_path.parent, prob_path, pct, cls, conf, transform, crs_wkt, threshold,
                     units_per_m(crs_wkt, cx, cy), files, dict(tags))
