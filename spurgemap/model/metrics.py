"""Metrics that survive class imbalance (the threshold is chosen in model/calibration.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from spurgemap.core.labels import LABELS

CLASS_NAMES = list(LABELS)


def classification_metrics(y: np.ndarray, prob: np.ndarray, threshold: float,
                           groups: np.ndarray | None = None) -> dict[str, Any]:
    pred = (prob >= threshold).astype(int)
    p, r, f, n = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out: dict[str, Any] = {
        "n": len(y),
        "threshold": float(threshold),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y.tolist())) > 1
        else float((pred == y).mean()),
        "accuracy": float((pred == y).mean()),
        "roc_auc": float(roc_auc_score(y, prob)) if len(set(y.tolist())) > 1 else None,
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(n[i])} for i, c in enumerate(CLASS_NAMES)},
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
    }
    if groups is not None:
        out["per_site"] = {}
        for g in sorted(set(groups.tolist())):
            m = groups == g
            out["per_site"][g] = {"n": int(m.sum()), "accuracy": float((pred[m] == y[m]).mean()),
                                  "present": int(y[m].sum()), "predicted_present": int(pred[m].sum())}
    return out
