"""Operating point, calibration and spatial context (issue 22), on values whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import convolve

from spurgemap.model import calibration as cal


def _box_mean(z: np.ndarray) -> np.ndarray:
    """Independent 8-neighbour mean with scipy: sums and counts by convolution, NaN = unmapped."""
    ok = np.isfinite(z)
    k = np.ones((3, 3))
    k[1, 1] = 0
    total = convolve(np.where(ok, z, 0.0), k, mode="constant")
    count = convolve(ok.astype(float), k, mode="constant")
    return np.where(count > 0, total / np.maximum(count, 1), z)


def test_grid_neighbour_mean_matches_a_convolution_with_holes() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(13, 9))
    z[rng.random(z.shape) < 0.2] = np.nan
    m = cal.grid_neighbour_mean(z)
    ref = _box_mean(z)
    ok = np.isfinite(ref)
    np.testing.assert_allclose(m[ok], ref[ok], rtol=0, atol=1e-12)
    # a hand-checked corner: (0, 0) averages its 3 neighbours
    z2 = np.arange(9, dtype=float).reshape(3, 3)
    assert cal.grid_neighbour_mean(z2)[0, 0] == pytest.approx((1 + 3 + 4) / 3)
    assert cal.grid_neighbour_mean(z2)[1, 1] == pytest.approx((36 - 4) / 8)


@pytest.mark.parametrize("block_rows", [1, 2, 3, 7, 50])
def test_context_in_row_blocks_with_a_halo_equals_the_whole_grid(block_rows: int) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(23, 17))
    z[rng.random(z.shape) < 0.1] = np.nan
    whole = 0.4 * z + 0.6 * _box_mean(z)
    blocks = cal.apply_context_blocks(z, 0.6, block_rows)
    ok = np.isfinite(whole)
    np.testing.assert_array_equal(np.isfinite(blocks), ok)
    np.testing.assert_allclose(blocks[ok], whole[ok], atol=1e-12)


def test_map_probability_is_identity_for_bundles_without_context_or_calibration() -> None:
    raw = np.array([[0.1, 0.9], [0.5, 0.3]])
    mapped = np.array([[True, True], [False, True]])
    out = cal.map_probability(raw, mapped, {}, {})
    assert np.isnan(out[1, 0])
    np.testing.assert_array_equal(out[mapped], raw[mapped])


def test_map_probability_applies_context_then_platt() -> None:
    raw = np.full((3, 3), 0.2)
    raw[1, 1] = 0.9
    mapped = np.ones((3, 3), bool)
    out = cal.map_probability(raw, mapped, {"method": "platt", "a": 2.0, "b": -1.0}, {"lambda": 0.5}, block_rows=1)
    z = cal.logit(raw)
    centre = 0.5 * z[1, 1] + 0.5 * z[0, 0]  # all 8 neighbours are 0.2
    assert out[1, 1] == pytest.approx(1 / (1 + np.exp(-(2 * centre - 1))))
    corner = 0.5 * z[0, 0] + 0.5 * (2 * z[0, 0] + z[1, 1]) / 3
    assert out[0, 0] == pytest.approx(1 / (1 + np.exp(-(2 * corner - 1))))


def test_trusted_labels_keep_absent_tiles_and_score_present_plots_by_their_top_tile() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 1])
    plots = np.array(["a", "a", "b", "b", "b", "c", "c"])
    verified = np.array([False, False, False, False, False, True, False])
    t = cal.trusted_labels(labels, plots, verified)
    np.testing.assert_array_equal(t.negatives, [0, 1])
    assert sorted(tuple(b) for b in t.positives) == [(2, 3, 4), (5,), (6,)]
    y, s = t.scored(np.array([0.1, 0.2, 0.3, 0.95, 0.1, 0.8, 0.4]))
    assert y.tolist() == [0, 0, 1, 1, 1]
    assert sorted(s[2:].tolist()) == [0.4, 0.8, 0.95]
    tile = cal.trusted_labels(labels, plots, verified, mode="tile")
    assert len(tile.positives) == 5


def test_trusted_threshold_is_higher_than_the_tile_label_threshold_when_present_plots_are_mostly_clear() -> None:
    """Plots of 4 tiles; a present plot has one weed tile (p 0.8) and 3 clear tiles that score a little
    above absent plots' tiles (0.45 against 0.3: the same field, seedlings, shadows)."""
    rng = np.random.default_rng(2)
    n = 200
    labels, plots, probs = [], [], []
    for k in range(n):
        present = k % 2 == 0
        for j in range(4):
            weed = present and j == 0
            labels.append(int(present))
            plots.append(f"p{k}")
            mean = 0.8 if weed else 0.45 if present else 0.3
            probs.append(float(np.clip(rng.normal(mean, 0.1), 0.01, 0.99)))
    labels_a, plots_a, probs_a = np.array(labels), np.array(plots), np.array(probs)
    trusted = cal.trusted_labels(labels_a, plots_a, None)
    t_trusted, _ = cal.choose_operating_point(*trusted.scored(probs_a), "balanced")
    t_tile, _ = cal.choose_operating_point(*cal.trusted_labels(labels_a, plots_a, None, "tile").scored(probs_a),
                                           "balanced")
    assert t_tile < 0.45 < 0.5 < t_trusted < 0.8  # the tile rule chases the clear tiles of present plots
    weed = np.array([lab == 1 and i % 4 == 0 for i, lab in enumerate(labels)])
    ba = [((probs_a[weed] >= t).mean() + (probs_a[~weed] < t).mean()) / 2 for t in (t_tile, t_trusted)]
    assert ba[1] > ba[0] + 0.1  # judged on the true weed tiles


def test_operating_points_meet_their_targets_on_the_trusted_items() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(300), np.ones(100)]
    p = np.clip(np.r_[rng.normal(0.3, 0.15, 300), rng.normal(0.7, 0.15, 100)], 0, 1)
    t_r, _ = cal.choose_operating_point(y, p, "recall=0.97")
    assert (p[y == 1] >= t_r).mean() >= 0.97
    assert (p[y == 1] >= t_r + 0.01).mean() < 0.97  # the highest such threshold (no slack)
    t_p, _ = cal.choose_operating_point(y, p, "precision=0.9")
    pred = p >= t_p
    assert y[pred].mean() >= 0.9
    t_b, _ = cal.choose_operating_point(y, p, "balanced")
    assert t_r < t_b < t_p


def test_platt_calibration_recovers_a_known_logistic_link_and_lowers_ece() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < cal.sigmoid(0.5 * z - 1.0)).astype(float)  # the raw score is overconfident
    c = cal.fit_calibration("platt", y, z)
    assert c.a == pytest.approx(0.5, abs=0.06) and c.b == pytest.approx(-1.0, abs=0.1)
    before, after = cal.reliability(y, cal.sigmoid(z))["ece"], cal.reliability(y, c(z))["ece"]
    assert after < 0.03 < before
    iso = cal.fit_calibration("isotonic", y, z)
    assert cal.reliability(y, iso(z))["ece"] < 0.03
    assert np.all(np.diff(iso(np.linspace(-6, 6, 50))) >= 0)


def test_context_weight_is_fitted_from_neighbours_that_carry_the_signal() -> None:
    """Tiles whose own score is noisy but whose neighbours share their label: lam well above 0;
    neighbours of random labels: lam near 0."""
    rng = np.random.default_rng(5)
    n = 2000
    y = np.repeat(rng.integers(0, 2, n // 4), 4)  # patches of 4
    z = (y - 0.5) * 2.0 + rng.normal(0, 1.5, n)
    nbrs = [np.array([j for j in range(4 * (i // 4), 4 * (i // 4) + 4) if j != i]) for i in range(n)]
    m = cal.neighbour_mean(z, nbrs)
    trusted = cal.trusted_labels(y, np.arange(n).astype(str), None)
    lam, why = cal.fit_context(z, m, np.ones(n, bool), trusted)
    assert lam > 0.5, why
    shuffled = [rng.choice(np.delete(np.arange(n), i), 3, replace=False) for i in range(n)]
    lam0, _ = cal.fit_context(z, cal.neighbour_mean(z, shuffled), np.ones(n, bool), trusted)
    assert lam0 < 0.2
    off, why_off = cal.fit_context(z, m, np.zeros(n, bool), trusted)
    assert off == 0.0 and why_off.startswith("off")


def _plot_grid_tiles(n_sites: int, seed: int):
    """Sites of 4 x 4 tiles in four 2 x 2 plots; each plot's label copied to its tiles, as tile does.
    A tile's score carries its plot's label plus noise, and nothing of its neighbours' plots."""
    from spurgemap.tile.tileset import TileSet

    rng = np.random.default_rng(seed)
    ids, sites, plots, labels, bounds = [], [], [], [], []
    for s in range(n_sites):
        plot_label = rng.integers(0, 2, 4)
        for r in range(4):
            for c in range(4):
                k = (r // 2) * 2 + c // 2
                ids.append(f"s{s}_{r}_{c}")
                sites.append(f"s{s}")
                plots.append(f"s{s}/p{k}")
                labels.append(int(plot_label[k]))
                x0, y0 = s * 100.0 + c, -float(r)
                bounds.append((x0, y0 - 1.0, x0 + 1.0, y0))
    y = np.array(labels)
    z = (y - 0.5) * 2.0 + rng.normal(0, 1.5, len(y))
    tiles = TileSet(ids, np.array(sites), np.array(sites), y, np.zeros((len(y), 1, 1, 3), np.uint8), 1, 1.0,
                    "x", bounds=np.array(bounds), plots=np.array(plots))
    return tiles, z


def test_context_weight_is_not_fitted_on_neighbours_that_share_a_copied_plot_label() -> None:
    """Within a plot the neighbours' mean looks telling only because the label was copied to them;
    fitted on other plots' neighbours, the weight stays near 0 (the old all-neighbour fit did not)."""
    from types import SimpleNamespace

    from spurgemap.train.operating import fit_map_head, tile_neighbours

    tiles, z = _plot_grid_tiles(60, seed=7)
    idx = np.arange(len(tiles))
    cfg = SimpleNamespace(threshold_labels="tile", context=True, calibration="none", operating_point="balanced")
    record, _ = fit_map_head(cfg, tiles, idx, cal.sigmoid(z), np.arange(len(idx)) % 5)
    assert record["context"]["lambda"] < 0.2, record["context"]
    nbrs = tile_neighbours(tiles, idx)
    assert all(len(n) in (3, 5, 8) for n in nbrs)  # corners, edges, inner tiles of a 4 x 4 site
    trusted = cal.trusted_labels(tiles.labels, tiles.plots, None, "tile")
    lam_all, _ = cal.fit_context(z, cal.neighbour_mean(z, nbrs), np.ones(len(idx), bool), trusted)
    assert lam_all > 0.3  # what the same data gave when plot-mates counted as neighbours
