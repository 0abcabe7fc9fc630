"""The label vocabulary, once: class ids, their label words, the species and its class names.

Why: a tile is class 0 or 1. The tile index, synthetic manifests and metrics call the classes
"absent"/"present"; bundles, tokens and tile-set summaries name them after the species
("no_spurge"/"leafy_spurge"). Both are spellings of one idea, so both are made and read here;
`label_id` reads either (tile sets and manifests of earlier versions used the class names).
"""

from __future__ import annotations

ABSENT, PRESENT = 0, 1
LABELS = ("absent", "present")  # the label word of class id i
DEFAULT_SPECIES = "leafy spurge"  # labels.species' default; what the demo data and the bundled examples show


def class_names(species: str = DEFAULT_SPECIES) -> list[str]:
    """Class names (absent, present) for a species: "leafy spurge" -> [no_spurge, leafy_spurge]."""
    words = species.strip().lower().split()
    return [f"no_{words[-1]}", "_".join(words)]


# label word or default-species class name -> class id: what readers of tile indexes and manifests accept
LABEL_IDS = {**{n: i for i, n in enumerate(class_names())}, **{n: i for i, n in enumerate(LABELS)}}


def label_id(value: object, names: list[str] | tuple[str, ...] | None = None) -> int | None:
    """Class id of a label word, or of a class name (`names`, default the default species'); None if neither."""
    text = str(value).strip().lower()
    for vocabulary in (LABELS, tuple(n.lower() for n in (names or class_names()))):
        if text in vocabulary:
            return vocabulary.index(text)
    return None
