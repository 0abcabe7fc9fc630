"""The label vocabulary: one place for the label words, the species and its class names."""

from __future__ import annotations

import pandas as pd

from spurgemap.config import LabelRules
from spurgemap.core.labels import DEFAULT_SPECIES, LABEL_IDS, LABELS, class_names, label_id
from spurgemap.model.bundle import BundleMeta
from spurgemap.predict import styles


def test_class_names_follow_the_species() -> None:
    assert class_names() == ["no_spurge", "leafy_spurge"]
    assert class_names(" Giant  Hogweed ") == ["no_hogweed", "giant_hogweed"]
    assert LabelRules().names() == ["no_spurge", "leafy_spurge"]
    assert LabelRules(species="giant hogweed").names() == ["no_hogweed", "giant_hogweed"]
    assert LabelRules(class_names=["clear", "weed"]).names() == ["clear", "weed"]


def test_one_default_species_everywhere() -> None:
    """styles.py keeps a copy (the QGIS checks load it standalone); it must be the same."""
    assert LabelRules().species == BundleMeta.model_fields["species"].default == styles.DEFAULT_SPECIES
    assert DEFAULT_SPECIES == "leafy spurge"


def test_both_spellings_read_as_one_class() -> None:
    assert LABELS == ("absent", "present")
    assert [label_id(v) for v in ("absent", " Present ", "no_spurge", "LEAFY_SPURGE", "maybe")] == [0, 1, 0, 1, None]
    assert label_id("no_hogweed", class_names("giant hogweed")) == 0 and label_id("no_hogweed") is None
    # what the tile-set and manifest readers map a label column with
    got = pd.Series(["absent", "leafy_spurge", "no_spurge", "present", "x"]).map(LABEL_IDS)
    assert got.iloc[:4].tolist() == [0, 1, 0, 1] and got.isna().tolist() == [False] * 4 + [True]
