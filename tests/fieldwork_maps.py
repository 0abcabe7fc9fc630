"""Predict-output maps written as `spurgemap predict` writes them, for the field-work tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from affine import Affine
from typer.testing import CliRunner

from spurgemap.cli.fieldwork import register
from spurgemap.config import ChangeConfig, SpurgemapConfig, SurveyPlanConfig, ZonesConfig
from spurgemap.geo.maps import write_cog
from spurgemap.predict.mapset import PALETTE

UTM = "EPSG:32612"


def plan_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(survey_plan=SurveyPlanConfig(**kw))


def zones_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(zones=ZonesConfig(**kw))


def change_cfg(**kw: Any) -> SpurgemapConfig:
    return SpurgemapConfig(change=ChangeConfig(**kw))


CELL = 3.5
X0, Y0 = 500_000.0, 5_200_000.0
THRESHOLD = 0.42
H, W = 30, 40


def make_pct(seed: int = 0) -> np.ndarray:
    """Smooth probabilities (blobs of spurge) with noise, an irregular nodata edge and one lone present cell."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:H, 0:W]
    field = 50 + 48 * np.sin(c / 5.0) * np.cos(r / 4.0) + rng.normal(0, 6, (H, W))
    pct = np.clip(np.rint(field), 0, 100).astype(np.uint8)
    edge = (3 + 2 * np.sin(r[:, 0] / 3.0)).astype(int)
    for row, e in enumerate(edge):
        pct[row, :e] = 255
    pct[:4, -6:] = 255  # a missing corner
    pct[20:27, 30:37] = 5  # clear ground ...
    pct[23, 33] = 90  # ... around one lone present cell
    return pct


def write_maps(folder: Path, pct: np.ndarray, name: str = "site", transform: Affine | None = None,
               threshold: float = THRESHOLD, crs: str = UTM, extra_tags: dict[str, str] | None = None) -> Path:
    """`<name>_prob.tif` and `<name>_class.tif` with predict's tags (see predict/outputs.py)."""
    from pyproj import CRS

    folder.mkdir(parents=True, exist_ok=True)
    t = transform or Affine(CELL, 0, X0, 0, -CELL, Y0)
    wkt = CRS.from_user_input(crs).to_wkt()
    tags = {"spurgemap_version": "0.1.0", "bundle_sha256": "0" * 64, "threshold": f"{threshold:.6f}",
            "tile_size_px": "250", "stride_px": "250", "source": f"{name}.tif", "source_sha256": "0" * 64,
            "created": "2024-06-01T00:00:00Z", "model_backbone": "test", "units": "percent probability of leafy spurge",
            **(extra_tags or {})}
    cls = np.where(pct == 255, 255, pct >= threshold * 100).astype(np.uint8)
    write_cog(folder / f"{name}_prob.tif", pct, t, wkt, 255, tags, description="leafy spurge probability (%)")
    write_cog(folder / f"{name}_class.tif", cls, t, wkt, 255, {**tags, "classes": "0=absent,1=present"},
              colormap=PALETTE, overview_resampling="nearest", description="leafy spurge presence")
    return folder


def centre(r: np.ndarray | int, c: np.ndarray | int, t: Affine | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = t or Affine(CELL, 0, X0, 0, -CELL, Y0)
    return t.c + (np.asarray(c) + 0.5) * t.a, t.f + (np.asarray(r) + 0.5) * t.e


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    return write_maps(tmp_path_factory.mktemp("maps"), make_pct())


def cli(*args: object) -> object:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------- survey-plan

