"""Configuration: YAML -> typed pydantic v2 models, checked when loaded (docs/configuration.md).

`load_config(path, overrides)` reads a YAML file with `yaml.safe_load` (a path or a packaged config
name, semiearth/configs), applies `--set a.b=value` overrides (values parsed as YAML, so
`--set train.lr=0.01`, `--set data.mean=[0.5,0.5,0.5]`, `--set purify=none`) and validates a `Config`.

Every problem is one `ConfigError` line naming the key, the value, what is allowed and where it came
from (the file, or the `--set key=value` that set it): unknown keys, wrong types (strict: no "yes"
for a bool, no "3" for an int; a float also takes `5e-6`, which YAML 1.1 leaves a string), ranges
(declared once with `Field(ge=/gt=/le=)`; those the ops check too come from semiearth/bounds.py),
cross-field checks (model validators) and the options of the chosen registry members:
`data.options` against the dataset's model, `train.method_options` against the S4 method's,
`purify.classifier_options` against the classifier's (semiearth/options.py). The members are
looked up in tables of "module:Class" strings (semiearth/registry.py, semiearth/data/registry.py), so
loading a config imports no member, no torch and nothing of semiearth.purify / ops / train.

The dataset's spec (semiearth/data/classes.py, `DatasetSpec`) is the one class table: `data.num_classes`,
`data.class_names` and `data.palette` default to the registered dataset's spec and a config that
states other values is an error naming both. The spec is resolved here, at load, because a built-in
dataset's spec is a constant in a module without torch (DATASET_SPECS in semiearth/data/registry.py);
a dataset registered as a class carries it as `spec`; only a dataset registered as a "module:Class"
string without a DATASET_SPECS entry is imported to read it.

Sections: `data` (DataConfig, the dataset contract in docs/data_contract.md), `model`, `train`,
`purify` (VLM-PP; `purify: none` is shorthand for `purify: {method: none}`), `eval`, and top-level
`out_dir`, `compare_baseline` (also train a supervised-only baseline and print both results).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from semiearth import bounds
from semiearth.configs import config_path, packaged_configs
from semiearth.options import Float
from semiearth.registry import (
    CLASSIFIER_OPTIONS,
    CLASSIFIERS,
    CONFIG_ARGS,
    LABELLED_ONLY_METHODS,
    METHOD_OPTIONS,
    METHODS,
    options_model,
)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SPLIT_KEYS = ("labeled", "unlabeled", "val", "test")


class ConfigError(ValueError):
    """A configuration key is unknown or its value is wrong (one line: key, value, allowed, origin)."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, types strict, no NaN/inf; `key: null` = defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data


class DataConfig(Section):
    """Dataset description (see docs/data_contract.md). num_classes, class_names and palette come from
    the dataset's spec unless given (the config then checks that they agree, see Config)."""

    name: str = "synthetic"
    root: str = ""
    num_classes: int = Field(None, **bounds.AT_LEAST_ONE.field())  # None until the spec fills it
    class_names: list[str] = Field(default_factory=list)  # empty: classes are unnamed (ids)
    ignore_index: int = 255
    # ignore_index inside [0, num_classes) silently removes that class from training and scoring, so it
    # is a config error unless this is set (the class is then meant to be ignored)
    allow_ignore_in_classes: bool = False
    mean: list[Float] = Field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[Float] = Field(default_factory=lambda: list(IMAGENET_STD))
    crop_size: int = Field(64, ge=1)  # training crop (px); the demo's CPU scale, real datasets' configs use 512
    splits: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(SPLIT_KEYS, ""))
    bands: list[int] | None = None
    palette: list[list[int]] | None = None  # RGB per class; None: the dataset's, else default_palette
    value_scale: Float = Field(255.0, gt=0)  # raw value of full brightness in non-uint8 images (uint16: e.g. 65535)
    options: dict[str, Any] = Field(default_factory=dict)  # checked against the dataset's options model
    _given: frozenset = PrivateAttr(frozenset())  # class-table keys the config stated (not from the spec)

    @field_validator("splits")
    @classmethod
    def _split_keys(cls, splits: dict) -> dict:
        bad = [k for k in splits if k not in SPLIT_KEYS]
        if bad:
            raise ConfigError(f"unknown key 'data.splits.{bad[0]}'; allowed: {', '.join(SPLIT_KEYS)}")
        return splits

    @model_validator(mode="after")
    def _fill_and_check(self) -> DataConfig:
        self._given = frozenset({"num_classes", "class_names", "palette"} & self.model_fields_set)
        spec = _dataset_spec(self.name)
        if spec is not None:
            if self.num_classes is None:
                self.num_classes = spec.num_classes
            if self.num_classes == spec.num_classes:  # else Config reports the disagreement, naming both
                if "class_names" not in self._given:
                    self.class_names = list(spec.class_names)
                if self.palette is None:
                    self.palette = [list(c) for c in spec.palette]
        if self.num_classes is None:
            return self  # a dataset without a class table: Config requires data.num_classes
        _check_data(self)
        return self


def _check_data(d: DataConfig) -> None:
    """The data section's cross-field checks (types and ranges are the fields')."""
    if len(d.mean) != 3 or len(d.std) != 3:
        raise ConfigError(f"data.mean/std: expected 3 values each, got mean {d.mean} and std {d.std}")
    if d.class_names and len(d.class_names) != d.num_classes:
        raise ConfigError(
            f"data.class_names: {len(d.class_names)} names {d.class_names} for num_classes={d.num_classes}"
        )
    if d.palette is not None and len(d.palette) < d.num_classes:
        raise ConfigError(f"data.palette: {len(d.palette)} colours for num_classes={d.num_classes}")
    if d.palette is not None and any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in d.palette):
        raise ConfigError(f"data.palette: expected [R, G, B] colours of 0..255 each, got {d.palette}")
    if not all(v > 0 for v in d.std):
        raise ConfigError(
            f"data.std: images are normalised as (x - mean) / std, so every std must be a finite number > 0, "
            f"got {d.std}; use the dataset's statistics (summary.json of semiearth-prepare) or the ImageNet ones"
        )
    if 0 <= d.ignore_index < d.num_classes and not d.allow_ignore_in_classes:
        raise ConfigError(
            f"data.ignore_index: {d.ignore_index} is a class id (num_classes={d.num_classes}: ids "
            f"0..{d.num_classes - 1}), so class {d.ignore_index} would never be trained or scored; prepared "
            "masks mark ignore with 255 (the default); set data.allow_ignore_in_classes: true if that class "
            "is meant to be ignored"
        )


class ModelConfig(Section):
    """Segmentation model: a `semiearth.models` registry name and its options."""

    name: Literal["effnet_lite0_fpn", "dinov2_dpt", "tiny", "smp"] = "effnet_lite0_fpn"
    pretrained: bool = True
    weights: str = ""  # local file with backbone weights (dinov2_dpt, smp); empty = hub when online
    arch: str = ""  # smp: the segmentation_models_pytorch architecture (Unet, DeepLabV3Plus, UPerNet, Segformer, ...)
    encoder: str = ""  # smp: the encoder (resnet34, mit_b0, tu-<timm name>, ...)
    variant: Literal["small", "base", "large"] = "small"  # DINOv2 size
    decoder_channels: int = Field(64, ge=1)


class TrainConfig(Section):
    """Optimisation and the teacher-student iteration (UniMatch-V2 / FixMatch-EMA defaults; iters and
    learning rates sized for a short CPU run of effnet_lite0_fpn: DINOv2 wants lr 5e-6, head_lr_mult 40)."""

    method: str = "fixmatch"  # the S4 method (semiearth/train/methods): supervised, fixmatch, mean_teacher, ...
    method_options: dict[str, Any] = Field(default_factory=dict)  # the method's options model, filled at load
    iters: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)  # labelled images per step (per process)
    unlabeled_batch_size: int = Field(8, ge=0)  # unlabelled images per step (per process); supervised: 0
    lr: Float = Field(5e-4, gt=0)  # backbone learning rate
    head_lr_mult: Float = Field(5.0, gt=0)  # decoder lr = lr * head_lr_mult
    weight_decay: Float = Field(0.01, ge=0)
    poly_power: Float = 0.9
    warmup_iters: int = Field(0, ge=0)
    threshold: Float = Field(0.95, **bounds.PROBABILITY.field())  # confidence threshold of the unsupervised loss
    ema_momentum: Float = Field(0.996, **bounds.PROBABILITY.field())  # teacher EMA: min(1 - 1/(t+1), ema_momentum)
    cutmix_prob: Float = Field(0.5, **bounds.PROBABILITY.field())
    color_jitter: Float = Field(0.5, ge=0)  # strength (brightness/contrast/saturation), applied with p=0.8
    hue_jitter: Float = Field(0.25, ge=0, le=0.5)  # max hue shift (UniMatch: 0.25; colour-coded classes may want less)
    grayscale_prob: Float = Field(0.2, **bounds.PROBABILITY.field())
    blur_prob: Float = Field(0.5, **bounds.PROBABILITY.field())
    scale_range: list[Float] = Field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    rotate90: bool = True  # aerial images have no up direction
    amp: Literal["none", "bf16", "fp16"] = "none"  # bf16: CUDA or CPU; fp16: CUDA (grad scaler)
    grad_clip: Float = Field(0.0, ge=0)  # 0 = off
    seed: int = 0
    deterministic: bool = False
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(20, ge=1)
    panel_every: int = Field(200, ge=0)
    ckpt_every: int = Field(200, ge=0)
    eval_every: int = Field(0, ge=0)  # 0 = only at the end
    eval_max_images: int = Field(0, ge=0)  # 0 = whole val split
    threads: int = Field(0, ge=0)  # torch.set_num_threads; 0 = leave the default

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"train.scale_range: expected [min, max] with 0 < min <= max, got {self.scale_range}")
        if self.method not in METHODS:
            raise ConfigError(f"train.method: unknown method {self.method!r}; known methods: {', '.join(METHODS)}")
        model = options_model(METHODS, METHOD_OPTIONS, self.method)
        where = f"(options of train.method {self.method})"
        self.method_options = _member_options(model, self.method_options, "train.method_options", where)
        return self


class AbstainConfig(Section):
    """purify.abstain: wrap the classifier in AbstainingClassifier (semiearth/purify/classifiers/abstain.py),
    calibrated on the labelled set before training and every purify.calibrate_every iterations."""

    # The break-even region accuracy of rule bayes on the worst tile (docs/results.md, "How good must the region
    # classifier be? A noisy oracle": 0.654); a region keeps q where its calibrated accuracy reaches it.
    min_accuracy: Float = Field(0.65, **bounds.UNIT.field())
    images: int = Field(0, ge=0)  # labelled images to calibrate on; 0 = those purify.fit_images names (all when 0)
    # "majority": right = top-1 is the segment's majority class (the break-even curve's unit);
    # "pixels": the share of the segment's pixels of the top-1 class (stricter on mixed segments).
    accuracy: Literal["majority", "pixels"] = "majority"


class PurifyConfig(Section):
    """VLM-PP hook. method none disables it; any other value names a classifier of the registry
    (semiearth/registry.py, CLASSIFIERS) that the trainer can build: prototype, openclip, vlm, ..."""

    method: str = "prototype"
    every: int = Field(2, ge=1)  # purify every k iterations (dataset configs use 1)
    low_thresh: Float = Field(0.7, **bounds.LOW_THRESH.field())
    cell: int = Field(32, **bounds.CELL.field())
    rule: Literal["bayes", "paper"] = "bayes"
    trust: Float = Field(1.0, ge=0)
    max_regions: int = Field(6, ge=1)  # regions per image (a CPU-sized budget; dataset configs use 16)
    context: Float = Field(2.0, gt=0)
    radius: int = Field(1, **bounds.RADIUS.field())
    tau: Float = Field(0.7, **bounds.TAU.field())
    # Score only what can change (classifiers that take `classes`: vlm): per region the teacher's top-k
    # classes of the segment plus those with mean probability > prob_floor; 0 = every class.
    topk: int = Field(3, **bounds.TOPK.field())
    prob_floor: Float = Field(0.05, **bounds.PROB_FLOOR.field())
    backend: str = "auto"
    encoder: str = "efficientnet_lite0"  # prototype classifier encoder
    classifier_options: dict[str, Any] = Field(default_factory=dict)  # checked against the classifier's model
    fit_images: int = Field(0, ge=0)  # labelled images used to fit prototypes; 0 = all
    records_every: int = Field(1, ge=1)  # write purify.jsonl every k purifications
    abstain: AbstainConfig | None = None  # null = off; {} = on with the defaults
    calibrate_every: int = Field(500, ge=0)  # recalibrate abstention every k iterations (0 = only before training)
    monitor_every: int = Field(0, ge=0)  # break-even monitor on a labelled batch every k iterations (0 = off)
    monitor_images: int = Field(4, ge=1)  # labelled images per monitor round

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"method": data} if isinstance(data, str) else data  # `purify: none`

    @model_validator(mode="after")
    def _check(self) -> PurifyConfig:
        if self.method == "none":
            return self
        problem = classifier_problem(self.method)
        if problem:
            raise ConfigError(f"purify.method: {problem}")
        for key in self.classifier_options:
            if key in CONFIG_ARGS:
                raise ConfigError(
                    f"purify.classifier_options.{key}: comes from {CONFIG_ARGS[key]}, not from classifier_options"
                )
        model = options_model(CLASSIFIERS, CLASSIFIER_OPTIONS, self.method)
        where = f"(options of purify.method {self.method})"
        options = _member_options(model, self.classifier_options, "purify.classifier_options", where, defaults=False)
        self.classifier_options = options
        return self


class EvalConfig(Section):
    """Inference for validation/test."""

    mode: Literal["whole", "slide"] = "whole"
    window: int = Field(512, ge=1)
    stride: int = Field(341, ge=1)
    batch_size: int = Field(1, ge=1)
    # Evaluation conventions (named in every results table): class names left out of a second mean,
    # reported beside the full mean (ISPRS: [clutter]); ground-truth pixels within this many px of a
    # class boundary ignored (the ISPRS "eroded" convention; 0 = off). Which mean picks best.pth:
    # "full" (the default) or "excluded" (the mean without exclude_classes).
    exclude_classes: list[str] = Field(default_factory=list)
    boundary_erosion: int = Field(0, ge=0)
    select_best: Literal["full", "excluded"] = "full"

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.mode == "slide" and self.stride > self.window:
            raise ConfigError(
                f"eval.stride: {self.stride} > eval.window {self.window} with eval.mode slide leaves pixels that "
                f"no window covers; use a stride <= the window (e.g. {max(1, self.window * 2 // 3)}, two thirds of it)"
            )
        if self.select_best == "excluded" and not self.exclude_classes:
            raise ConfigError("eval.select_best: excluded needs eval.exclude_classes (e.g. [clutter])")
        return self


class Config(Section):
    """The whole run: the sections plus where it writes and whether a supervised baseline runs first."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    purify: PurifyConfig = Field(default_factory=PurifyConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    out_dir: str = "runs/default"
    compare_baseline: bool = False  # also train supervised-only first and print both results

    @model_validator(mode="after")
    def _check(self) -> Config:
        _check_dataset(self.data)
        _resolve_method(self)
        _check_eval_classes(self)
        return self


# ----------------------------------------------------------------------------- members and cross-field checks


def _dataset_spec(name: str):
    """The registered dataset's DatasetSpec (None: none, or an unknown dataset; Config reports that)."""
    from semiearth.data.registry import DATASETS, dataset_spec  # light: tables only, no torch

    return dataset_spec(name) if name in DATASETS else None


def _check_dataset(data: DataConfig) -> None:
    """data.name is registered, the class table agrees with the dataset's spec (or is stated when the
    dataset has none), data.options fit the dataset's options model."""
    from semiearth.data.registry import DATASET_OPTIONS, DATASETS

    if data.name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {data.name!r}; known datasets: {', '.join(DATASETS)}")
    spec = _dataset_spec(data.name)
    if spec is None and data.num_classes is None:
        raise ConfigError(
            f"data.num_classes: dataset {data.name} has no class table of its own: set data.num_classes "
            "(and data.class_names, data.palette), e.g. --set data.num_classes=6"
        )
    if spec is not None:
        theirs = {"num_classes": spec.num_classes, "class_names": list(spec.class_names),
                  "palette": [list(c) for c in spec.palette]}  # fmt: skip
        for key in ("num_classes", "class_names", "palette"):
            if key in data._given and getattr(data, key) != theirs[key]:
                raise ConfigError(
                    f"data.{key}: the config says {getattr(data, key)} but dataset {data.name} has {theirs[key]} "
                    f"(its spec, semiearth/data/classes.py); leave data.{key} out to use the dataset's"
                )
    model = options_model(DATASETS, DATASET_OPTIONS, data.name)
    data.options = _member_options(model, data.options, "data.options", f"(options of dataset {data.name})")


def _member_options(model, options: dict, prefix: str, where: str, defaults: bool = True) -> dict:
    """`options` validated by the member's pydantic `model` (None: any options, unchanged). With
    `defaults` the model's defaults are filled in (config.yaml then records every value used), else
    only the given keys are kept (a classifier's constructor owns its defaults)."""
    if model is None:
        return dict(options)
    try:
        return model.model_validate(options).model_dump(exclude_unset=not defaults)
    except ValidationError as err:
        raise ConfigError(f"{describe(err, model, prefix)} {where}") from None


def classifier_problem(method: str) -> str | None:
    """None when `purify.method` names a classifier the trainer can build, else why not. A classifier
    registered as a class needs `from_config`; the built-in ("module:Class") ones all have it."""
    if method in CLASSIFIERS:
        target = CLASSIFIERS[method]
        if isinstance(target, str) or callable(getattr(target, "from_config", None)):
            return None
        return (
            f"{method!r} ({target.__name__}) cannot be built by the trainer: it has no from_config "
            f"(see semiearth/purify/classifiers/registry.py); one of {', '.join(['none', *_buildable()])}"
        )
    return f"{method!r} is not one of [{', '.join(['none', *_buildable()])}]"


def _buildable() -> list[str]:
    return sorted(n for n, t in CLASSIFIERS.items() if isinstance(t, str) or hasattr(t, "from_config"))


def _resolve_method(cfg: Config) -> None:
    """A method without unlabelled data (supervised) runs with no unlabelled batch and no VLM-PP,
    and the config says so; a semi-supervised method needs unlabelled images."""
    target = METHODS[cfg.train.method]
    semi = (
        getattr(target, "semi", True) if not isinstance(target, str) else cfg.train.method not in LABELLED_ONLY_METHODS
    )
    if not semi:
        cfg.train.unlabeled_batch_size = 0
        cfg.purify.method = "none"
    elif cfg.train.unlabeled_batch_size == 0:
        raise ConfigError(
            f"train.method {cfg.train.method} trains on unlabelled images: set train.unlabeled_batch_size >= 1, "
            "or train.method: supervised for a labelled-only run"
        )


def _check_eval_classes(cfg: Config) -> None:
    """eval.exclude_classes names classes of data.class_names (or their ids as strings when unnamed)."""
    names = cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)]
    for name in cfg.eval.exclude_classes:
        if name not in names:
            raise ConfigError(f"eval.exclude_classes: unknown class {name!r}; valid: {', '.join(names)}")
    if cfg.eval.exclude_classes and set(names) <= set(cfg.eval.exclude_classes):
        raise ConfigError("eval.exclude_classes: excludes every class; leave at least one in the mean")


# ----------------------------------------------------------------------------- one-line errors

_TYPES = {
    "int_type": "expected int", "int_parsing": "expected int", "int_from_float": "expected int",
    "float_type": "expected float", "float_parsing": "expected float", "finite_number": "expected a finite float",
    "bool_type": "expected bool (true/false)", "bool_parsing": "expected bool (true/false)",
    "string_type": "expected str", "list_type": "expected a list", "dict_type": "expected a mapping",
    "model_type": "expected a mapping", "model_attributes_type": "expected a mapping",
}  # fmt: skip
_TAG = re.compile(r"[\[\](),]|^(int|float|str|bool|list|dict|none)$")  # pydantic's union-member tags in a loc


def _field_model(annotation) -> type | None:
    """The pydantic model inside an annotation (X, X | None), else None."""
    for tp in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _walk(model: type, loc: tuple) -> tuple[list[str], type | None, Any]:
    """(key parts, the model holding the last key, that key's FieldInfo) for an error location."""
    parts, parent, info = [], model, None
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            continue
        if _TAG.search(str(part)):
            continue
        holder = model
        info = model.model_fields.get(part) if model is not None else None
        parent, model = holder, _field_model(info.annotation) if info is not None else None
        parts.append(str(part))
    return parts, parent, info


def _choices(annotation) -> tuple:
    """The values of a Literal annotation (also inside X | None)."""
    for tp in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(tp) is Literal:
            return typing.get_args(tp)
    return ()


def _allowed_range(info) -> str:
    ends = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [f"{ends[k]} {getattr(m, k):g}" for m in (info.metadata if info else []) for k in ends if hasattr(m, k)]
    return " and ".join(found)


def describe(err: ValidationError, model: type, prefix: str = "") -> str:
    """pydantic's multi-line ValidationError -> one line for its first error: the dotted key, the value,
    what is allowed (a key's allowed names, a type, a range, a choice)."""
    e = err.errors(include_url=False)[0]
    parts, parent, info = _walk(model, e["loc"])
    key = ".".join([p for p in (prefix, *parts) if p])
    kind, value, ctx = e["type"], e.get("input"), e.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigError):
        return str(ctx["error"])
    if kind == "extra_forbidden":
        names = list(parent.model_fields) if parent is not None else []
        near = difflib.get_close_matches(parts[-1], names, n=1) if names else []
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        section = key.rsplit(".", 1)[0] if "." in key else "the config"
        return f"unknown key '{key}'{hint}; allowed keys in {section}: {', '.join(names) or '(none)'}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key}: must be {_allowed_range(info) or e['msg'].lower()}, got {value!r}"
    if kind == "literal_error":
        choices = _choices(info.annotation) if info else ()
        allowed = ", ".join(map(str, choices)) if choices else ctx.get("expected", "")
        return f"{key}: {value!r} is not one of [{allowed}]"
    if kind == "missing":
        return f"{key}: required, and missing"
    if kind in _TYPES:
        return f"{key}: {_TYPES[kind]}, got {value!r}"
    if kind == "value_error":
        return f"{key}: {ctx.get('error', e['msg'])}"
    return f"{key}: {e['msg']}, got {value!r}"


def _origin(message: str, source: str | None, overrides: list[str]) -> str:
    """Where the offending value came from: the --set that set the key the message names, else a --set
    in its section (a cross-field check), else the file."""
    match = re.match(r"(?:unknown key ')?([\w.\[\]]+)", message)
    key = match.group(1) if match else ""
    keys = [(item.split("=", 1)[0].strip(), item) for item in reversed(overrides)]
    for okey, item in keys:
        if key == okey or key.startswith(okey + ".") or okey.startswith(key + "."):
            return f" (from --set {item})"
    section = [item for okey, item in keys if okey.split(".")[0] == key.split(".")[0]]
    if section:
        return f" (in {source} with --set {section[0]})" if source else f" (from --set {section[0]})"
    return f" (in {source})" if source else ""


def config_from_dict(data: dict, source: str | None = None, overrides: list[str] | None = None) -> Config:
    """A validated Config from a raw mapping; a ConfigError line naming the key, value, allowed values
    and where it came from (`source`: the file; `overrides`: the --set items applied)."""
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        message = describe(err, Config)
        raise ConfigError(message + _origin(message, source, overrides or [])) from None


def config_to_dict(cfg: Config) -> dict:
    return cfg.model_dump()


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: 'line L, column C: what is wrong' (yaml's own text spans lines)."""
    if isinstance(err, yaml.reader.ReaderError):
        return f"position {err.position}: {err.reason} (character {err.character!r})"
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if not problem:
        return " ".join(str(err).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else str(problem)
    if context:
        text += f" ({context}" + (
            f" that starts at line {start.line + 1}, column {start.column + 1})" if start else ")"
        )
    return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides to a raw config mapping (value parsed as YAML)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=0.01")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: expected key=value with a dotted key, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item}: the value is not valid YAML ({yaml_problem(err)}); quote strings with special "
                "characters and close brackets, e.g. --set 'data.mean=[0.5, 0.5, 0.5]'"
            ) from None
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and parts[: depth + 1] == ["purify"]:
                child = {"method": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: '{'.'.join(parts[: depth + 1])}' is not a section")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML `path` (a file or a packaged config name; defaults when None), apply overrides, and
    return a validated Config."""
    data: dict = {}
    if path:
        path = config_path(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, train:, ...)")
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data, source=path, overrides=overrides)


def read_yaml(path: str) -> Any:
    """yaml.safe_load of the file `path` ({} when empty); every problem is one ConfigError line naming it."""
    if os.path.isdir(path):
        raise ConfigError(
            f"{path} is a folder, not a config file: give a YAML file or a packaged config name, e.g. demo"
        )
    if not os.path.exists(path):
        raise ConfigError(
            f"config file not found: {path}; give a YAML file or a packaged config: {', '.join(packaged_configs())} "
            "(semiearth-train --list-configs)"
        )
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}): is it a YAML config? "
            "Save it as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML at {yaml_problem(err)}") from None


def save_config(cfg: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


__all__ = [
    "AbstainConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "PurifyConfig",
    "TrainConfig", "apply_overrides", "config_from_dict", "config_to_dict", "load_config", "read_yaml",
    "save_config",
]  # fmt: skip
