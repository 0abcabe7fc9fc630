"""Bad command-line values are reported under the option the user typed; library warnings stay one clean line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from spurgemap.cli.app import app
from spurgemap.config import load_config
from spurgemap.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "o.tif", "--model", "m", "--out", "o", "--stride", "7"],
     "--stride 7: Input should be greater than or equal to 8; the stride must also divide the tile size"),
    (["predict", "o.tif", "--model", "m", "--out", "o", "--set", "predict.stride_px=7"],
     "--set predict.stride_px=7: Input should be greater than or equal to 8; the stride must also divide"),
    (["predict", "o.tif", "--model", "m", "--out", "o", "--batch-size", "0"],
     "--batch-size 0: Input should be greater than or equal to 1"),
    (["tile", "o.tif", "--plots", "p", "--out", "o", "--min-valid", "1.5"],
     "--min-valid 1.5: Input should be less than or equal to 1"),
    (["demo-data", "o", "--sites", "0"], "--sites 0: Input should be greater than or equal to 1"),
    (["train", "t", "--out", "o", "--mode", "nonsense"], "--mode nonsense: Input should be 'probe' or 'finetune'"),
    (["evaluate", "t", "--out", "o", "--shots", "0,2"], "--shots 0,2: shots must be a non-empty list of positive"),
])
def test_a_bad_value_names_the_option_the_user_gave(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert f"spurgemap: error: {message}" in res.stderr
    assert "configs/default.yaml" not in res.stderr and "Traceback" not in res.stderr


def test_a_bad_value_in_a_config_file_still_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("predict:\n  stride_px: 7\n")
    with pytest.raises(InputError, match=r"bad.yaml: config value predict.stride_px: .* divide the tile size"):
        load_config(bad)
    # the command line wins over the file, and is named when it is the culprit
    with pytest.raises(InputError, match=r"^--set predict.batch_size=-1: "):
        load_config(bad, {"predict.stride_px": 50}, ["predict.batch_size=-1"])


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "spurgemap.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # writing the test raster
def test_library_warnings_reach_the_terminal_as_one_line_without_paths(tmp_path: Path) -> None:
    raw = tmp_path / "raw.tif"  # no transform, no CRS: rasterio warns NotGeoreferencedWarning on open
    with rasterio.open(raw, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8") as dst:
        dst.write(np.full((3, 300, 300), 90, np.uint8))
    plots = tmp_path / "plots.geojson"
    plots.write_text('{"type": "FeatureCollection", "features": []}')
    bundle = tmp_path / "m.spurge"
    import torch

    from spurgemap.model.backbones import create_backbone
    from spurgemap.model.classifier import SpurgeClassifier, save_bundle

    torch.manual_seed(0)
    backbone, spec = create_backbone("test_efficientnet", pretrained=False)
    save_bundle(bundle, SpurgeClassifier(backbone, spec.num_features).eval(), {
        "spurgemap_version": "test", "backbone": "test_efficientnet", "input_size": 64, "mean": [0.5] * 3,
        "std": [0.5] * 3, "class_names": ["no_spurge", "leafy_spurge"], "tile_size_px": 100, "gsd_m": 0.014,
        "threshold": 0.5})
    for proc in (_cli("predict", raw, "--model", bundle, "--out", tmp_path / "m"),
                 _cli("tile", raw, "--plots", plots, "--out", tmp_path / "t")):
        assert proc.returncode == 2, proc.stderr
        assert "has no CRS" in proc.stderr
        assert "site-packages" not in proc.stderr and ".py:" not in proc.stderr and "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if "NotGeoreferencedWarning" in ln]
        assert len(lines) == 1 and "identity matrix" in lines[0]  # reported once, as one line
