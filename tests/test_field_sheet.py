"""The printable field sheet of `survey-plan` and the scale bar / north arrow of the previews."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fieldwork_maps import plan_cfg
from test_survey_roundtrip import make_site

from spurgemap.fieldwork import SurveyPlanInputs, run_survey_plan
from spurgemap.fieldwork.map_furniture import nice_length, scale_bar


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


@pytest.fixture(scope="module")
def sheets(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("sheet")
    _, maps = make_site(root, "s1", 0.0)
    out = {}
    for n in (8, 30):
        res = run_survey_plan(plan_cfg(n=n, min_spacing_m=0.0), SurveyPlanInputs(maps, root / f"plan{n}"))
        out[n] = (res.files["sheet"], res.files["csv"])
    return out


def test_sheet_is_a_pdf_with_one_page_per_site_and_more_for_long_tables(sheets):
    for n, pages in ((8, 1), (30, 2)):
        pdf = sheets[n][0].read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
        assert _pages(pdf) == pages, n
    assert sheets[8][0].name == "field_sheet.pdf"


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler's pdftoppm is not installed")
def test_sheet_renders_the_orthophoto_visits_and_table(sheets, tmp_path):
    from PIL import Image

    pdf, csv = sheets[8]
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-singlefile", str(pdf), str(tmp_path / "p")], check=True,
                   timeout=60)
    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    h, w, _ = img.shape
    assert (h, w) == (pytest.approx(468, abs=2), pytest.approx(331, abs=2))  # A4 portrait at 40 dpi
    mapped = img[int(0.12 * h):int(0.55 * h), int(0.1 * w):int(0.9 * w)]
    assert mapped.std() > 25  # imagery under the map, not a blank frame
    orange = (np.abs(img - [255, 160, 0]).sum(axis=2) < 60).sum()
    blue = (np.abs(img - [0, 110, 220]).sum(axis=2) < 60).sum()
    visits = pd.read_csv(csv)
    assert (visits.reason == "uncertain").any() and orange > 20 and blue > 20  # both kinds of visit markers
    table = img[int(0.6 * h):, :]
    assert (table.sum(axis=2) < 200).mean() > 0.01  # the table's grid and text


def test_sheet_text_holds_the_site_fields_and_every_visit(sheets, tmp_path):
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler's pdftotext is not installed")
    pdf, csv = sheets[8]
    subprocess.run(["pdftotext", "-layout", str(pdf), str(tmp_path / "t.txt")], check=True, timeout=60)
    text = tmp_path.joinpath("t.txt").read_text()
    for word in ("site s1", "Date:", "Crew:", "spurge? Y/N", "cover %", "UTM 12N E"):
        assert word in text, word
    visits = pd.read_csv(csv)
    for _, v in visits.iterrows():
        assert f"{v.lon:.6f}" in text and f"{v.lat:.6f}" in text and v.plot_id in text
        assert f"{v.easting:.1f}" in text and f"{v.northing:.1f}" in text  # the same grid as visits.csv


def test_scale_bar_length_is_round_and_in_ground_metres():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert [nice_length(v) for v in (140, 16.8, 3.0, 1000, 51)] == [20, 2, 0.5, 200, 10]
    fig, ax = plt.subplots()
    ax.set_xlim(0, 200)
    ax.set_ylim(0, 100)
    # 2 map units per metre (a stretched CRS): 200 units are 100 m, the bar is 20 m = 40 units
    assert scale_bar(ax, units_per_m=2.0) == 20
    segs = [p for p in ax.patches if p.get_height() < 5]
    assert len(segs) == 4 and sum(p.get_width() for p in segs) == pytest.approx(40)
    plt.close(fig)


def test_previews_carry_scale_bar_north_arrow_and_site(monkeypatch, tmp_path):
    from affine import Affine

    from spurgemap.fieldwork import preview

    figs = []
    monkeypatch.setattr(preview, "_save", lambda fig, path: figs.append(fig))
    pct = np.full((20, 30), 40, np.uint8)
    t = Affine(3.5, 0, 500_000, 0, -3.5, 5_200_000)  # 105 m wide -> a 20 m bar
    preview.visits_preview(tmp_path / "p.png", pct, t, np.array([500_010.0]), np.array([5_199_990.0]),
                           np.array([500_000.0, 5_199_930.0]), "site S01", ["random"])
    preview.zones_preview(tmp_path / "z.png", pct, t, [], "site S01")
    for fig in figs:
        ax = fig.axes[0]
        segs = [p for p in ax.patches if p.get_height() < 1.0]
        assert len(segs) == 4 and sum(p.get_width() for p in segs) == pytest.approx(20.0)
        assert min(p.get_x() for p in segs) > 500_000 + 105 / 2  # lower right, clear of the start corner
        texts = [t.get_text() for t in ax.texts]
        assert "N" in texts and "20 m" in texts and "site S01" in ax.get_title()


def test_sheet_map_outlines_zones_and_numbers_visits_in_order():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from affine import Affine
    from shapely import box

    from spurgemap.fieldwork.field_sheet import SheetInputs, _map

    t = Affine(3.5, 0, 500_000, 0, -3.5, 5_200_000)
    table = pd.DataFrame({"visit": [1, 2], "reason": ["random", "uncertain"], "lon": [-111.0, -111.0],
                          "lat": [46.9, 46.9]})
    zone = box(500_010, 5_199_960, 500_030, 5_199_980).difference(box(500_015, 5_199_965, 500_020, 5_199_970))
    s = SheetInputs("S01", table, np.array([500_005.0, 500_050.0]), np.array([5_199_990.0, 5_199_950.0]),
                    np.array([500_000.0, 5_199_930.0]), np.full((20, 30), 30, np.uint8), t, "", 0.4, 1.0, 70.0,
                    zones=[zone])
    fig, ax = plt.subplots()
    _map(ax, s)
    orange = [ln for ln in ax.lines if ln.get_color() == "#ff7800" and len(ln.get_xdata())]
    assert len(orange) == 2  # the zone's outline and its hole
    labels = [(tx.get_text(), tx.get_position()) for tx in ax.texts if tx.get_text() in ("1", "2")]
    assert labels == [("1", (500_005.0, 5_199_990.0)), ("2", (500_050.0, 5_199_950.0))]
    assert ax.get_legend() is not None and "spray zone" in [x.get_text() for x in ax.get_legend().get_texts()]
    plt.close(fig)
