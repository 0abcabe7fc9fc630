#!/usr/bin/python3
"""Open a QField project spurgemap wrote in real QGIS (headless), report what QGIS made of it, and save
one edit through QGIS' own editing API, as a crew's phone would.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/check_qfield.py PROJECT.qgs EDIT.json

EDIT.json: ``{"layer": "observations", "fid": 1, "values": {"presence": 1, ...}}``. Prints one JSON line:
the project CRS, every layer (valid, provider, CRS, source, features), and for the edited layer each
field's widget type and config, not-null constraint, default expression, read-only flag; then
whether the edit committed. The pytest side asserts on it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _plain(value: Any) -> Any:
    """QVariant maps/lists as JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def inspect(project_path: str, edit: dict[str, Any]) -> dict[str, Any]:
    from qgis.core import QgsApplication, QgsFieldConstraints, QgsProject

    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    ok = project.read(project_path)
    out: dict[str, Any] = {"read": ok, "crs": project.crs().authid(), "layers": {}}
    for layer in project.mapLayers().values():
        info: dict[str, Any] = {"valid": layer.isValid(), "crs": layer.crs().authid(), "source": layer.source(),
                                "provider": layer.providerType()}
        if hasattr(layer, "featureCount"):
            info["features"] = layer.featureCount()
            info["renderer"] = layer.renderer().type() if layer.renderer() else None
        else:
            info["renderer"] = layer.renderer().type() if layer.renderer() else None
        out["layers"][layer.name()] = info
    # every layer-tree entry must resolve to a loaded layer, else QGIS/QField loads it but never draws it
    out["tree"] = {node.name(): node.layer() is not None for node in project.layerTreeRoot().findLayers()}
    target = project.mapLayersByName(edit["layer"])
    if not target:
        out["edit_error"] = f"no layer {edit['layer']}"
        return out
    layer = target[0]
    fields: dict[str, Any] = {}
    form = layer.editFormConfig()
    for idx, f in enumerate(layer.fields()):
        setup = layer.editorWidgetSetup(idx)
        cons = f.constraints()
        fields[f.name()] = {
            "type": f.typeName(), "widget": setup.type(), "config": _plain(setup.config()),
            "not_null": bool(cons.constraints() & QgsFieldConstraints.ConstraintNotNull),
            "not_null_hard": cons.constraintStrength(QgsFieldConstraints.ConstraintNotNull)
            == QgsFieldConstraints.ConstraintStrengthHard,
            "default": layer.defaultValueDefinition(idx).expression(),
            "default_on_update": layer.defaultValueDefinition(idx).applyOnUpdate(),
            "read_only": form.readOnly(idx), "alias": f.alias(),
        }
    out["fields"] = fields
    layer.startEditing()
    for name, value in edit["values"].items():
        layer.changeAttributeValue(edit["fid"], layer.fields().indexOf(name), value)
    out["committed"] = layer.commitChanges()
    out["commit_errors"] = list(layer.commitErrors())
    return out


def main(argv: list[str]) -> int:
    result = inspect(argv[1], json.loads(Path(argv[2]).read_text()))
    print(json.dumps(result), flush=True)
    return 0 if result.get("read") else 1


if __name__ == "__main__":
    # no exitQgis(): tearing providers down can crash a headless run after the checks (as in check_maps)
    sys.stdout.flush()
    os._exit(main(sys.argv))
