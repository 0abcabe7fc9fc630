"""Operating point, calibration and spatial context, fitted on labels that can be trusted.

A survey says a plot is present when *some* of it is weed, so a present plot's tiles are not all
weed; an absent plot's tiles are all clear. The trusted labels are therefore: every tile of an
absent plot is a negative, and a present plot is one positive scored by its likeliest tile (a
per-tile verified label counts as itself). Everything here is fitted on out-of-fold scores on
those labels, so none of it has seen the tiles it is judged on.

The map's probability of a cell is `calibrate(context(logit))`: the context step mixes a cell's
logit with the mean logit of its (up to 8) mapped neighbours, `z' = (1 - lam) z + lam m`, because
weed patches are spatially coherent; calibration maps z' to a probability that means what it
says (Platt: sigmoid(a z' + b); isotonic: a monotone step function); the threshold is in that
probability's units. numpy and scikit-learn only: predict uses it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # = 1 / (1 + e^-z), never overflows


@dataclass
class Trusted:
    """Indices into a score vector: negatives (tiles) and positive bags (one per present plot)."""

    negatives: np.ndarray
    positives: list[np.ndarray]

    def scored(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores): each negative tile, and each positive bag by its highest score."""
        pos = np.array([s[b].max() for b in self.positives]) if self.positives else np.zeros(0)
        return (np.concatenate([np.zeros(len(self.negatives)), np.ones(len(pos))]),
                np.concatenate([s[self.negatives], pos]))

    def top(self, s: np.ndarray) -> np.ndarray:
        """Index of each positive bag's likeliest tile."""
        return np.array([b[np.argmax(s[b])] for b in self.positives], dtype=int)


def trusted_labels(labels: np.ndarray, plots: np.ndarray | None, verified: np.ndarray | None,
                   mode: str = "trusted") -> Trusted:
    """mode "tile": every tile keeps its plot's label (the pre-issue-22 rule)."""
    labels = np.asarray(labels)
    n = len(labels)
    if mode == "tile" or plots is None:
        return Trusted(np.flatnonzero(labels == 0), [np.array([i]) for i in np.flatnonzero(labels == 1)])
    ver = np.zeros(n, bool) if verified is None else np.asarray(verified, bool)
    neg = np.flatnonzero(labels == 0)
    bags: dict[str, list[int]] = {}
    singles = []
    for i in np.flatnonzero(labels == 1):
        if ver[i]:
            singles.append(np.array([i]))
        else:
            bags.setdefault(str(plots[i]), []).append(int(i))
    return Trusted(neg, singles + [np.array(v) for v in bags.values()])


def neighbour_mean(z: np.ndarray, nbrs: list[np.ndarray]) -> np.ndarray:
    """Mean of each item's neighbours' values; its own value where it has none."""
    return np.array([z[nb].mean() if len(nb) else z[i] for i, nb in enumerate(nbrs)])


def grid_neighbour_mean(z: np.ndarray) -> np.ndarray:
    """The same on a 2-D grid (NaN = not mapped): mean of the mapped 8-neighbours of each cell."""
    ok = np.isfinite(z)
    v = np.where(ok, z, 0.0)
    pad_v, pad_ok = np.pad(v, 1), np.pad(ok.astype(np.float64), 1)
    h, w = z.shape
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                total += pad_v[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                count += pad_ok[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return np.where(count > 0, total / np.maximum(count, 1), z)


def apply_context_blocks(z: np.ndarray, lam: float, block_rows: int) -> np.ndarray:
    """Context step over row blocks, each read with a one-row halo: the result does not depend on
    block_rows (a map is streamed in blocks; the halo test holds it to the whole-grid answer)."""
    out = np.empty_like(z, dtype=np.float64)
    for r0 in range(0, z.shape[0], block_rows):
        r1 = min(r0 + block_rows, z.shape[0])
        lo, hi = max(r0 - 1, 0), min(r1 + 1, z.shape[0])
        m = grid_neighbour_mean(z[lo:hi])[r0 - lo:r0 - lo + (r1 - r0)]
        out[r0:r1] = (1 - lam) * z[r0:r1] + lam * m
    return out


def fit_context(z: np.ndarray, m: np.ndarray, has_nbr: np.ndarray, trusted: Trusted,
                min_items: int = 20) -> tuple[float, str]:
    """lam from a logistic fit of the trusted labels on (z, m): lam = w_m / (w_z + w_m), in [0, 1].
    Too few trusted items with neighbours -> 0 (no context), with the reason."""
    from sklearn.linear_model import LogisticRegression

    items = np.concatenate([trusted.negatives, trusted.top(z)]) if trusted.positives else trusted.negatives
    y = np.concatenate([np.zeros(len(trusted.negatives)), np.ones(len(items) - len(trusted.negatives))])
    keep = has_nbr[items]
    if keep.sum() < min_items or len(set(y[keep].tolist())) < 2:
        return 0.0, f"off: {int(keep.sum())} trusted tiles have mapped neighbours (needs {min_items} of both classes)"
    x = np.stack([z[items[keep]], m[items[keep]]], axis=1)
    w = LogisticRegression(C=1.0).fit(x, y[keep]).coef_[0]
    if w.sum() <= 0:
        return 0.0, "off: the fit gave no positive weight"
    lam = float(np.clip(w[1] / w.sum(), 0.0, 1.0)) if w[1] > 0 else 0.0
    return round(lam, 4), f"fitted on {int(keep.sum())} trusted out-of-fold tiles with neighbours"


@dataclass
class Calibration:
    method: str = "none"  # none | platt | isotonic
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()  # isotonic knots (context logit -> probability)
    y: tuple[float, ...] = ()

    def __call__(self, z: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return sigmoid(self.a * z + self.b)
        if self.method == "isotonic":
            return np.interp(z, self.x, self.y)
        return sigmoid(z)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration:
        if not d:
            return cls()
        return cls(d.get("method", "none"), float(d.get("a", 1.0)), float(d.get("b", 0.0)),
                   tuple(d.get("x", ())), tuple(d.get("y", ())))


def fit_calibration(method: str, y: np.ndarray, z: np.ndarray) -> Calibration:
    if method == "none" or len(set(y.tolist())) < 2:
        return Calibration()
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(z[:, None], y)
        return Calibration("platt", round(float(lr.coef_[0][0]), 6), round(float(lr.intercept_[0]), 6))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(z, y)
    return Calibration("isotonic", x=tuple(np.round(iso.X_thresholds_, 6).tolist()),
                       y=tuple(np.round(iso.y_thresholds_, 6).tolist()))


def choose_operating_point(y: np.ndarray, p: np.ndarray, spec: str) -> tuple[float, str]:
    """Threshold on calibrated probabilities of the trusted items (y, p), and what it achieved."""
    if len(set(y.tolist())) < 2:
        return 0.5, "one class only: 0.5"
    cands = np.unique(np.concatenate([[0.5], (np.sort(p)[1:] + np.sort(p)[:-1]) / 2]))
    pos, neg = p[y == 1], p[y == 0]
    tpr = np.array([(pos >= t).mean() for t in cands])
    tnr = np.array([(neg < t).mean() for t in cands])
    tp, fp = tpr * len(pos), (1 - tnr) * len(neg)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
    if spec == "balanced":
        score = (tpr + tnr) / 2
        i = max(range(len(cands)), key=lambda k: (round(score[k], 12), -abs(cands[k] - 0.5)))
    elif spec.startswith("recall="):
        ok = np.flatnonzero(tpr >= float(spec.split("=")[1]) - 1e-12)
        i = int(ok[np.argmax(cands[ok])])
    else:
        ok = np.flatnonzero(prec >= float(spec.split("=")[1]) - 1e-12)
        i = int(ok[np.argmin(cands[ok])]) if len(ok) else int(np.argmax(prec))
    return float(cands[i]), (f"recall {tpr[i]:.3f}, specificity {tnr[i]:.3f}, precision {prec[i]:.3f} "
                             "on the trusted out-of-fold labels")


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram bins and the expected calibration error (weighted |mean p - rate|)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            gap = abs(float(p[m].mean()) - float(y[m].mean()))
            ece += gap * float(m.mean())
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                         "mean_probability": round(float(p[m].mean()), 4), "rate": round(float(y[m].mean()), 4)})
    return {"ece": round(ece, 4), "bins": rows, "n": len(y)}


def map_probability(raw: np.ndarray, mapped: np.ndarray, calibration: dict[str, Any], context: dict[str, Any],
                    block_rows: int = 256) -> np.ndarray:
    """A map's cell probabilities (raw: the model's, per cell) after the bundle's context step and
    calibration; cells not `mapped` are NaN and are nobody's neighbour. A bundle without either
    (older versions) gets its raw probabilities back unchanged."""
    lam = float((context or {}).get("lambda", 0.0))
    calib = Calibration.from_dict(calibration)
    if lam == 0 and calib.method == "none":
        return np.where(mapped, raw, np.nan)
    z = np.where(mapped, logit(raw), np.nan)
    zc = apply_context_blocks(z, lam, block_rows) if lam else z
    return np.where(mapped, calib(np.nan_to_num(zc)), np.nan)
