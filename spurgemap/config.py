"""One typed configuration for every stage, loaded from YAML with CLI overrides.

Each stage reads its own section; every run writes the resolved config beside its outputs so a
result can always be traced back to the exact settings that produced it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from spurgemap.config_field import (
    TERMINALS,
    ChangeConfig,
    Product,
    SurveyPlanConfig,
    Terminal,
    TreatmentConfig,
    ZonesConfig,
)
from spurgemap.core.errors import InputError
from spurgemap.core.labels import DEFAULT_SPECIES, class_names

# re-exported: one schema (config_field.py holds the field commands' sections)
__all__ = ["TERMINALS", "ChangeConfig", "Product", "SurveyPlanConfig", "Terminal", "TreatmentConfig", "ZonesConfig"]

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class _Section(BaseModel):
    # allow_inf_nan=False: every float option and config value is finite (nan/inf is one line naming it)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LabelRules(_Section):
    """How survey label spellings map to classes (compared case-insensitively, stripped)."""

    present: list[str] = ["present", "presence", "yes", "y", "1", "true", "t", "p"]
    absent: list[str] = ["absent", "absence", "no", "n", "0", "false", "f", "a"]
    columns: list[str] = ["presence", "label", "spurge", "present", "status"]
    species: str = Field(DEFAULT_SPECIES, min_length=1)  # in messages, map tags, styles, Deepness names
    class_names: list[str] | None = None  # null: from species, e.g. [no_spurge, leafy_spurge]
    species_code: str = Field("EUES", min_length=1)  # USDA PLANTS symbol, for infestation records
    scientific_name: str = "Euphorbia esula"  # for infestation records (NAISMA asks for it)

    @field_validator("present", "absent")
    @classmethod
    def _normalise(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    def names(self) -> list[str]:
        """Class names (absent, present): the configured ones, else derived from the species."""
        return list(self.class_names) if self.class_names else class_names(self.species)


class TileConfig(_Section):
    tile_size_px: int = Field(250, ge=16, le=4096)
    gsd_m: float | None = Field(None, gt=0.0)  # resample tiles to this ground resolution (m/px)
    min_valid_fraction: float = Field(0.9, ge=0.0, le=1.0)
    resampling: Literal["nearest", "bilinear", "cubic", "lanczos"] = "bilinear"
    rotation_tolerance_deg: float = Field(0.5, ge=0.0, le=45.0)
    point_plot_size_m: float = Field(0.5, gt=0.0)
    value_range: tuple[float, float] | None = None
    bands: tuple[int, int, int] | None = None
    max_pixels: int = Field(50_000_000_000, gt=0)
    max_compression_ratio: float = Field(5000.0, gt=1.0)
    compress: Literal["deflate", "lzw", "none"] = "none"  # measured: DEFLATE triples tile write time
    compress_level: int = Field(1, ge=1, le=9)
    threads: int = Field(2, ge=1, le=64)  # reader/writer threads in one process ("workers" are Dask's)
    gdal_cache_mb: int = Field(256, ge=16)

    @model_validator(mode="before")
    @classmethod
    def _old_workers_key(cls, data: Any) -> Any:
        """`tile.workers` (threads) before it was renamed: read, with a warning."""
        if isinstance(data, dict) and "workers" in data:
            data = dict(data)
            old = data.pop("workers")
            log.warning("tile.workers is deprecated: it is now tile.threads (reader/writer threads); "
                        "--workers means Dask workers")
            data["threads"] = old  # given on purpose (default.yaml has only `threads`), so it wins
        return data


class AugmentOnTheFly(_Section):
    """Classic augmentations applied while training (aerial tiles have no "up": D4 is on)."""

    d4: bool = True
    randaugment: bool = False
    # probe: RandAugment as this many cached views per tile (1 per synthetic image); 0: live, every draw
    randaugment_views: int = Field(10, ge=0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    cutmix: float = Field(0.0, ge=0.0, le=1.0)  # probability per batch
    mixup: float = Field(0.0, ge=0.0, le=1.0)


class TrainConfig(_Section):
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None
    input_size: int | None = Field(None, ge=16)  # None: the backbone's own (224 for lite0)
    mode: Literal["probe", "finetune"] = "probe"
    # finetune only: train the last N backbone stages and what follows them (null: every layer); with few
    # labelled plots, fewer trainable weights overfit less
    trainable_blocks: int | None = Field(None, ge=0)
    epochs: int = Field(30, ge=1, le=1000)
    # batches per epoch drawn with replacement; null: 200 with --shots (the reference), else one pass; 0: one pass
    steps_per_epoch: int | None = Field(None, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_sites: list[str] = []
    test_sites: list[str] = []
    group_column: str = "site_id"  # or a cluster column of the tile index
    folds: int = Field(0, ge=0)  # 0: leave-one-group-out when no val_sites are given
    # spatial: groups closer than spatial_distance_m merge; blocks: above 10 groups, cross-validation folds
    # are compact spatial blocks of ~10 groups (k-means of their centres), else as site
    group_by: Literal["site", "spatial", "blocks"] = "blocks"
    spatial_distance_m: float = Field(50.0, ge=0.0)
    labels: Literal["tile", "plot-mil"] = "tile"  # plot-mil: a present plot has >= 1 present tile
    shots: int | None = Field(None, ge=1)
    synthetic_alpha: float = Field(0.5, ge=0.0, le=1.0)
    augment: AugmentOnTheFly = AugmentOnTheFly()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool | None = None  # bfloat16 autocast; null = on CUDA only (true on CPU runs the same path)
    channels_last: bool = True
    threads: int | None = Field(None, ge=1)
    # issue 22: what the map's probability and threshold are fitted on (model/calibration.py)
    threshold_labels: Literal["trusted", "tile"] = "tile"  # trusted: absent tiles + present plots' top tile
    operating_point: str = "balanced"  # balanced | recall=R | precision=P (on the trusted labels)
    calibration: Literal["platt", "isotonic", "none"] = "none"
    context: bool = True  # mix each cell's logit with its neighbours' (weight fitted out of fold)

    @field_validator("operating_point")
    @classmethod
    def _operating_point(cls, value: str) -> str:
        if not re.match(r"^(balanced|(recall|precision)=(0?\.\d+|1(\.0*)?))$", value.strip()):
            raise ValueError("must be balanced, recall=R or precision=P with R, P in (0, 1], e.g. recall=0.9")
        return value.strip()

    @field_validator("trainable_blocks")
    @classmethod
    def _blocks_need_finetune(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("mode") != "finetune":
            raise ValueError("applies to train.mode finetune only (the probe trains no backbone layer)")
        return value


class TokenConfig(_Section):
    """Textual inversion: one learned token (or N vectors) per class, from training tiles only."""

    tokens: list[str] = ["<no_spurge>", "<leafy_spurge>"]  # one per class, in label order
    num_vectors: int = Field(1, ge=1, le=16)
    initializer: str = "the"  # the reference's choice; must be a single token of the tokenizer
    templates: list[str] = [
        "a drone photo of a {}", "an aerial image of a {}", "a top-down photo of a {}",
        "a drone image of {} in grassland", "an orthophoto of a {}", "a close-up aerial photo of a {}",
    ]
    steps: int = Field(1000, ge=1)  # per class
    batch_size: int = Field(4, ge=1)
    lr: float = Field(5e-4, gt=0)
    scale_lr: bool = True  # lr x batch size, as the reference did (=> 2e-3)
    weight_decay: float = Field(1e-2, ge=0)
    d4: bool = True  # flips and 90-degree turns of the tiles (the reference: horizontal flips)


class InpaintConfig(_Section):
    mask: Literal["vegetation", "layer"] = "vegetation"  # automatic green-vegetation mask or --mask-layer
    invert: bool = False  # edit the background instead of the masked area
    exg_threshold: float = Field(0.05, ge=-1.0, le=1.0)  # excess-green index above which a pixel is vegetation
    grow_px: int = Field(16, ge=0)  # dilation at model resolution (the reference: 16)


class EraseConfig(_Section):
    """Concept erasure (ESD) before tokens are learned; settings of the reference (train-esd.py)."""

    concepts: list[str] = []  # e.g. ["leafy spurge"]; empty: no erasure
    iterations: int = Field(1000, ge=1)
    lr: float = Field(1e-5, gt=0)
    start_guidance: float = Field(3.0, ge=0.0)  # guidance of the sampled trajectory
    negative_guidance: float = Field(1.0, ge=0.0)  # eta: how far the target is pushed from the concept
    ddim_steps: int = Field(50, ge=1)
    cache_dir: str | None = None  # erased UNets kept by (model hash, settings), shared by runs and seeds


class ComposeConfig(_Section):
    mode: Literal["parallel", "sequential"] = "parallel"
    methods: list[str] = ["dafusion", "real-guidance"]
    probs: list[float] = []  # parallel: chance of each method (empty: uniform)


class AugmentConfig(_Section):
    method: Literal["dafusion", "real-guidance", "text2img", "boomerang", "latent-perturb", "inpaint",
                    "compose"] = "dafusion"
    model: str | None = None  # diffusers folder, .safetensors checkpoint or a hub id in the local cache
    model_config_dir: str | None = None  # diffusers folder/hub id giving the architecture of a single file
    allow_download: bool = False
    num_synthetic: int = Field(10, ge=1)  # M per real tile (the reference used 50 for spurge)
    strengths: list[float] = [0.25, 0.5, 0.75, 1.0]
    guidance: float = Field(7.5, ge=0.0)
    steps: int = Field(50, ge=1)  # scheduler steps for strength 1; SDEdit runs int(steps x strength)
    scheduler: Literal["model", "ddim", "pndm", "dpm"] = "model"
    prompt: str = "a drone photo of a {token}"
    context: str = ""  # words appended to every prompt, e.g. "in dry grassland, summer"
    negative_prompt: str = ""
    real_guidance_prompt: str = "a drone photo of grassland"  # He et al.; the reference: "a woodland seen from a drone"
    real_guidance_strength: float = Field(0.5, gt=0.0, le=1.0)
    boomerang_strength: float = Field(0.2, gt=0.0, le=1.0)
    perturb_delta: float = Field(0.1, ge=0.0)  # latent-perturb: noise scale added to the inverted latent
    perturb_guidance: float = Field(1.0, ge=0.0)  # guidance for inversion and regeneration (1: none)
    sites: list[str] = []  # training sites whose tiles are used (empty: all)
    shots: int | None = Field(None, ge=1)  # K tiles per class from those sites
    batch_size: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    retries: int = Field(2, ge=0, le=10)  # a non-finite or constant image is made again with new seeds, then skipped
    tokens: TokenConfig = TokenConfig()
    inpaint: InpaintConfig = InpaintConfig()
    compose: ComposeConfig = ComposeConfig()
    erase: EraseConfig = EraseConfig()

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, values: list[float]) -> list[float]:
        if not values or any(not 0.0 < v <= 1.0 for v in values):
            raise ValueError("strengths must be a non-empty list of numbers in (0, 1]")
        return values


class EvaluateConfig(_Section):
    """The few-shot experiment grid: every (method, k, seed) is one cached run."""

    methods: list[str] = ["baseline", "randaugment", "real-guidance", "dafusion"]
    shots: list[int] = [1, 2, 4, 8, 16]
    seeds: list[int] = [0, 1, 2, 3, 4, 5, 6, 7]
    diffusion_model: str | None = None  # for generative methods; overrides augment.model
    # reference: the DA-Fusion paper's spurge settings on top of this config (evaluate/protocol.py)
    protocol: Literal["default", "reference"] = "default"
    val_sites: list[str] = []  # empty (with test_sites empty): the last site tests, the one before validates
    test_sites: list[str] = []

    @field_validator("shots")
    @classmethod
    def _shots(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("shots must be a non-empty list of positive integers")
        return sorted(set(values))


class PredictConfig(_Section):
    stride_px: int | None = Field(None, ge=8)  # None: the tile size (one cell per tile)
    min_valid_fraction: float = Field(0.5, gt=0.0, le=1.0)  # cells with this share of valid pixels are mapped
    low_confidence: int = Field(20, ge=0, le=100)  # summary: share of the mapped area below this confidence
    tta: bool = False  # average the 8 D4 symmetries
    batch_size: int = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: OpenVINO (else onnxruntime) on CPU, torch on CUDA
    backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    bf16: bool | None = None  # torch backend: bfloat16 autocast; null = on CUDA only
    gsd_tolerance: float = Field(0.15, ge=0.0)  # relative GSD difference accepted without notice
    max_gsd_ratio: float = Field(2.0, ge=1.0)  # beyond this resampling loses too much: refuse
    queue_batches: int = Field(4, ge=1)  # read-ahead, bounds memory
    checkpoint_every: int = Field(50, ge=1)  # batches between resume checkpoints


class DemoConfig(_Section):
    sites: int = Field(3, ge=1, le=50)
    size_px: int = Field(3000, ge=2600)
    seed: int = 0
    gsd_m: float = Field(0.014, gt=0.0)
    epsg: int = 32612
    plots_per_site: int = Field(9, ge=1, le=9)
    plot_size_m: float = Field(10.0, gt=0.0)
    years: int = Field(1, ge=1, le=5)  # seasons per site; later ones show spread (for `spurgemap change`)


class SpurgemapConfig(_Section):
    schema_version: int = SCHEMA_VERSION
    seed: int = 0
    labels: LabelRules = LabelRules()
    tile: TileConfig = TileConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    survey_plan: SurveyPlanConfig = SurveyPlanConfig()
    zones: ZonesConfig = ZonesConfig()
    treatment: TreatmentConfig = TreatmentConfig()
    change: ChangeConfig = ChangeConfig()
    demo: DemoConfig = DemoConfig()


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text)


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


# extra advice for values whose rule the schema cannot state alone
_HINTS = {"predict.stride_px": "; the stride must also divide the tile size (e.g. 125 or 50 for 250-px tiles)",
          "zones.buffer_m": " (metres)", "zones.simplify_m": " (metres)", "zones.min_area_m2": " (square metres)",
          "zones.rate_l_per_ha": " (litres per hectare)", "survey_plan.min_spacing_m": " (metres)"}


def _origin(loc: tuple[Any, ...], given: dict[str, str]) -> str | None:
    """The longest dotted prefix of an error location that a command-line value set."""
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in given:
            return key
    return None


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    names: dict[str, str] | None = None,
) -> SpurgemapConfig:
    """Read YAML (default: configs/default.yaml), then apply `--set a.b=v` strings and CLI values.

    CLI values whose value is None are ignored, so an unset option keeps the file's value. A bad
    value is reported under the option that gave it: `names` maps config keys to option names.
    """
    source = path or DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if path is not None or source.exists():
        try:
            loaded = yaml.safe_load(Path(source).read_text())
        except FileNotFoundError:
            raise InputError(f"{source}: config file not found") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{source}: a config file must be a YAML mapping of sections")
        data = loaded or {}
    given: dict[str, str] = {}  # config key -> how the user wrote it on the command line
    for item in sets or []:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. tile.min_valid_fraction=0.8")
        key, _, raw = item.partition("=")
        _apply_override(data, key.strip(), _parse_scalar(raw))
        given[key.strip()] = f"--set {key.strip()}={raw.strip()}"
    for key, value in (overrides or {}).items():
        if value is not None:
            _apply_override(data, key, value)
            shown = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
            option = (names or {}).get(key) or "--" + key.rsplit(".", 1)[-1].replace("_", "-")
            given[key] = f"{option} {shown}"
    try:
        return SpurgemapConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        culprit = _origin(err["loc"], given)
        msg = err["msg"].removeprefix("Value error, ")
        if culprit is not None:
            raise InputError(f"{given[culprit]}: {msg}{_HINTS.get(culprit, '')}") from None
        raise InputError(f"{source}: config value {where}: {msg}{_HINTS.get(where, '')}") from None


def dump_config(config: SpurgemapConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
