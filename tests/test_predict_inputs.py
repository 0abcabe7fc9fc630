"""predict checks every input before it reads a pixel: a bad --plots or --out fails at once."""

from __future__ import annotations

import pytest
from conftest import make_rgba
from test_campaign import write_bundle

from spurgemap.config import load_config
from spurgemap.core.errors import InputError
from spurgemap.predict import PredictInputs, run_predict
from spurgemap.predict import stage as predict_stage


@pytest.mark.parametrize("case", ["broken plots", "missing plots", "out is a file"])
def test_bad_inputs_fail_before_any_pixel_is_read(case, tmp_path, monkeypatch):
    ortho = make_rgba(tmp_path / "ortho.tif", 300, 300)
    bundle = write_bundle(tmp_path / "m.spurge", 0.5)
    plots, out = tmp_path / "plots.geojson", tmp_path / "maps"
    if case == "broken plots":
        plots.write_text("{not json")
    elif case == "out is a file":
        plots = None
        out.write_text("")

    def no_reading(*args, **kwargs):
        raise AssertionError("pixels were read before the inputs were checked")

    monkeypatch.setattr(predict_stage, "TileStream", no_reading)
    with pytest.raises(InputError) as err:
        run_predict(load_config(), PredictInputs(ortho, bundle, out, plots=plots))
    msg = str(err.value)
    assert "\n" not in msg
    assert (str(out) in msg and "--out" in msg) if case == "out is a file" else str(plots) in msg
    assert not (out.is_dir() and any(out.iterdir()))  # nothing partial left
