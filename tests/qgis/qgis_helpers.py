"""Shared pieces of the headless-QGIS checks: the style module loader, a collecting checker, and
rendering a layer to read back pixel colours. Runs under the system python with PyQGIS.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
STYLES_PY = REPO / "spurgemap" / "predict" / "styles.py"

Point = tuple[float, float]
RGBA = tuple[int, int, int, int]

# How close a rendered pixel must be to a style colour (0..255 channels). Rendering is exact for
# opaque colours; semi-transparent ones lose a little precision through premultiplied alpha.
RGB_TOL = 12
ALPHA_TOL = 8


def load_styles() -> ModuleType:
    """Import styles.py by path: the spurgemap package's __init__ needs the venv, this python lacks it."""
    spec = importlib.util.spec_from_file_location("spurgemap_styles", STYLES_PY)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {STYLES_PY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Failed(Exception):
    """A check failed; the message says which and why."""


class Checker:
    """Collects failures so one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, ok: bool, message: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(message)
        return ok


# --------------------------------------------------------------------------------------------- QGIS


_APP: Any = None


def qgis_app() -> Any:
    """Start QGIS once, headless (QT_QPA_PLATFORM=offscreen, no GUI)."""
    global _APP
    if _APP is None:
        from qgis.core import QgsApplication

        _APP = QgsApplication([], False)
        _APP.initQgis()
    return _APP


def _rgba(color: Any) -> RGBA:
    return (color.red(), color.green(), color.blue(), color.alpha())


def _close(got: RGBA, want: RGBA) -> bool:
    if abs(got[3] - want[3]) > ALPHA_TOL:
        return False
    if want[3] == 0:
        return True
    return all(abs(g - w) <= RGB_TOL for g, w in zip(got[:3], want[:3], strict=True))


def render(layer: Any, extent: list[float], cell: float, max_side: int = 4096) -> tuple[Any, Any]:
    """Draw one layer over a transparent background; returns (QImage, QgsMapToPixel).

    The image is sized so one map cell (``cell`` map units, one tile) spans about 16 pixels, capped
    at ``max_side``, so a cell centre does not land on a polygon outline.
    """
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsRectangle
    from qgis.PyQt.QtCore import QSize, Qt
    from qgis.PyQt.QtGui import QColor

    xmin, ymin, xmax, ymax = extent
    width, height = xmax - xmin, ymax - ymin
    scale = min(16.0 / cell, max_side / max(width, height))
    size = QSize(max(1, round(width * scale)), max(1, round(height * scale)))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(size)
    settings.setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    settings.setBackgroundColor(QColor(Qt.transparent))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    errors = [f"{e.layerID}: {e.message}" for e in job.errors()]
    if errors:
        raise Failed(f"rendering {layer.name()} failed: {errors}")
    return job.renderedImage(), settings.mapToPixel()


def pixel_at(image: Any, m2p: Any, point: Point) -> RGBA:
    from qgis.core import QgsPointXY

    p = m2p.transform(QgsPointXY(point[0], point[1]))
    x, y = math.floor(p.x()), math.floor(p.y())
    if not (0 <= x < image.width() and 0 <= y < image.height()):
        raise Failed(f"point {point} falls outside the rendered extent (pixel {x},{y})")
    return _rgba(image.pixelColor(x, y))


def _extent(rect: Any) -> list[float]:
    return [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]


def _inside(inner: list[float], outer: list[float], tol: float) -> bool:
    return (
        inner[0] >= outer[0] - tol
        and inner[1] >= outer[1] - tol
        and inner[2] <= outer[2] + tol
        and inner[3] <= outer[3] + tol
    )


def _same_crs(crs: Any, authid: str) -> bool:
    """Same CRS, also when a file's WKT carries no EPSG code (QGIS then gives no authid)."""
    from qgis.core import QgsCoordinateReferenceSystem

    if crs.authid() == authid:
        return True
    return bool(crs.isValid() and crs.toProj() == QgsCoordinateReferenceSystem(authid).toProj())


def _labels(layer: Any) -> list[str]:
    """Legend texts of a layer's renderer (raster: class/ramp labels; vector: legend item labels)."""
    renderer = layer.renderer()
    if renderer is None:
        return []
    if hasattr(renderer, "legendSymbolItems"):  # vector
        return [item.label() for item in renderer.legendSymbolItems()]
    labels = [label for label, _color in renderer.legendSymbologyItems()]
    shader = getattr(renderer, "shader", lambda: None)()
    if shader is not None:
        ramp = shader.rasterShaderFunction()
        settings = ramp.legendSettings() if hasattr(ramp, "legendSettings") else None
        if settings is not None:
            labels += [settings.minimumLabel(), settings.maximumLabel()]
    return labels


def _render_context() -> Any:
    from qgis.core import QgsRenderContext

    return QgsRenderContext()


def _outline_rgba(symbol: Any) -> RGBA:
    layer = symbol.symbolLayer(0)
    if hasattr(layer, "strokeColor"):
        return _rgba(layer.strokeColor())
    return _rgba(symbol.color())
