"""Grid arms and protocols of `spurgemap evaluate`.

An arm is a method name, optionally with `+randaugment`: the reference ran "DA-Fusion + RandAugment"
and "Real Guidance + RandAugment" rows, so RandAugment composes with every generative method.
`--protocol reference` applies the DA-Fusion paper's spurge settings (/work/shared/reference,
dafusion-spec.md sections 4-6) on top of the configuration, so its rows compare with the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spurgemap.augment.methods import METHODS
from spurgemap.config import SpurgemapConfig
from spurgemap.core.errors import InputError

CLASSIC = {"baseline", "randaugment"}
RANDAUGMENT = "+randaugment"

# diffusers' textual-inversion example `imagenet_templates_small`, which the reference's fine_tune.py used
REFERENCE_TEMPLATES = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
]
# The paper's spurge settings that differ from spurgemap's defaults (README "Evaluating" lists the rest).
REFERENCE: dict[str, Any] = {
    "augment.num_synthetic": 50,  # M per real image (default 10)
    "augment.strengths": [0.25, 0.5, 0.75, 1.0], "augment.guidance": 7.5, "augment.steps": 50,
    "augment.scheduler": "model",  # SD's own PNDM
    "augment.prompt": "a photo of a {token}",  # default "a drone photo of a {token}"
    "augment.context": "", "augment.negative_prompt": "",
    "augment.real_guidance_prompt": "a woodland seen from a drone",  # default "a drone photo of grassland"
    "augment.real_guidance_strength": 0.5,
    "augment.tokens.templates": REFERENCE_TEMPLATES,  # default: 6 drone templates
    "augment.tokens.num_vectors": 1, "augment.tokens.initializer": "the", "augment.tokens.steps": 1000,
    "augment.tokens.batch_size": 4, "augment.tokens.lr": 5e-4, "augment.tokens.scale_lr": True,
    "augment.tokens.d4": False,  # horizontal flips only in the reference
    "train.epochs": 50,  # default 30
    "train.lr": 1e-4, "train.weight_decay": 0.0,  # Adam 1e-4 (AdamW without decay); default 1e-3, 1e-4 decay
    "train.steps_per_epoch": 200, "train.batch_size": 32, "train.synthetic_alpha": 0.5,
}


@dataclass(frozen=True)
class Arm:
    name: str  # as in results.csv: e.g. "dafusion+randaugment"
    method: str  # baseline, randaugment or a generative method
    randaugment: bool

    @property
    def generative(self) -> bool:
        return self.method not in CLASSIC


def parse_arm(name: str) -> Arm:
    method = name.removesuffix(RANDAUGMENT)
    plus = method != name
    if method not in CLASSIC | set(METHODS) | {"compose"} or (plus and method in CLASSIC):
        raise InputError(f"--methods: unknown arm {name!r}; choose from baseline, randaugment, "
                         f"{', '.join(METHODS)}, compose, each generative one optionally with +randaugment "
                         "(e.g. dafusion+randaugment)")
    return Arm(name, method, plus or method == "randaugment")


def apply_protocol(config: SpurgemapConfig) -> SpurgemapConfig:
    """The configuration a grid runs with: the reference's settings under --protocol reference; and a
    `train.augment.randaugment: true`, which the arms decide, is refused rather than dropped."""
    if config.train.augment.randaugment:
        raise InputError("train.augment.randaugment: evaluate sets RandAugment per arm; name the arms instead, "
                         "e.g. --methods baseline,randaugment,dafusion,dafusion+randaugment")
    if config.evaluate.protocol != "reference":
        return config
    data = config.model_dump()
    for dotted, value in REFERENCE.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return type(config).model_validate(data)
