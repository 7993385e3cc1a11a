"""Configuration: YAML -> typed dataclasses.

`load_config(path, overrides)` reads a YAML file with `yaml.safe_load`, applies `--set a.b=value`
overrides (values parsed as YAML, so `--set train.lr=0.01`, `--set data.mean=[0.5,0.5,0.5]`,
`--set purify=none`) and builds a `Config`. Unknown keys and values of the wrong type are a
`ConfigError` that names the key and the allowed keys (or the expected type); broken YAML (in the
file or in a `--set` value), a config path that is a folder or not UTF-8 text are one-line
`ConfigError`s with the file, line and column. A float key also takes a string that `float()` reads
(`5e-6`, which YAML 1.1 leaves a string).

Sections: `data` (DataConfig, the dataset contract in docs/data_contract.md), `model`, `train`,
`purify` (VLM-PP; `purify: none` is shorthand for `purify: {method: none}`), `eval`, and top-level
`out_dir`, `compare_baseline` (also train a supervised-only baseline and print both results).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from semiearth.configs import config_path, packaged_configs

POTSDAM_CLASSES = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
POTSDAM_PALETTE = [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


@dataclass
class DataConfig:
    """Dataset description (see docs/data_contract.md)."""

    name: str = "synthetic"
    root: str = ""
    num_classes: int = 6
    class_names: list[str] = field(default_factory=lambda: list(POTSDAM_CLASSES))
    ignore_index: int = 255
    # ignore_index inside [0, num_classes) silently removes that class from training and scoring, so it
    # is a config error unless this is set (the class is then meant to be ignored)
    allow_ignore_in_classes: bool = False
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    crop_size: int = 64  # training crop (px); the demo's CPU scale, real datasets' configs use 512
    splits: dict[str, str] = field(default_factory=lambda: {"labeled": "", "unlabeled": "", "val": "", "test": ""})
    bands: list[int] | None = None
    palette: list[list[int]] | None = None
    value_scale: float = 255.0  # raw value that means full brightness in non-uint8 images (uint16: e.g. 65535)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Segmentation model: a `semiearth.models` registry name and its options."""

    name: Literal["effnet_lite0_fpn", "dinov2_dpt", "tiny", "smp"] = "effnet_lite0_fpn"
    pretrained: bool = True
    weights: str = ""  # local file with backbone weights (dinov2_dpt, smp); empty = hub when online
    arch: str = ""  # smp: the segmentation_models_pytorch architecture (Unet, DeepLabV3Plus, UPerNet, Segformer, ...)
    encoder: str = ""  # smp: the encoder (resnet34, mit_b0, tu-<timm name>, ...)
    variant: Literal["small", "base", "large"] = "small"  # DINOv2 size
    decoder_channels: int = 64


@dataclass
class TrainConfig:
    """Optimisation and the teacher-student iteration (UniMatch-V2 / FixMatch-EMA defaults; iters and
    learning rates sized for a short CPU run of effnet_lite0_fpn: DINOv2 wants lr 5e-6, head_lr_mult 40)."""

    method: str = "fixmatch"  # the S4 method (semiearth/train/methods): supervised, fixmatch, mean_teacher, ...
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's Options, checked at load
    iters: int = 200
    batch_size: int = 8  # labelled images per step (per process)
    unlabeled_batch_size: int = 8  # unlabelled images per step (per process); supervised: 0
    lr: float = 5e-4  # backbone learning rate
    head_lr_mult: float = 5.0  # decoder lr = lr * head_lr_mult
    weight_decay: float = 0.01
    poly_power: float = 0.9
    warmup_iters: int = 0
    threshold: float = 0.95  # confidence threshold of the unsupervised loss
    ema_momentum: float = 0.996  # teacher EMA: min(1 - 1/(t+1), ema_momentum)
    cutmix_prob: float = 0.5
    color_jitter: float = 0.5  # strength (brightness/contrast/saturation), applied with p=0.8
    hue_jitter: float = 0.25  # max hue shift (UniMatch: 0.25; colour-coded classes may want less)
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    rotate90: bool = True  # aerial images have no up direction
    amp: Literal["none", "bf16", "fp16"] = "none"  # bf16: CUDA or CPU; fp16: CUDA (grad scaler)
    grad_clip: float = 0.0  # 0 = off
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    log_every: int = 20
    panel_every: int = 200
    ckpt_every: int = 200
    eval_every: int = 0  # 0 = only at the end
    eval_max_images: int = 0  # 0 = whole val split
    threads: int = 0  # torch.set_num_threads; 0 = leave the default


@dataclass
class AbstainConfig:
    """purify.abstain: wrap the classifier in AbstainingClassifier (semiearth/purify/classifiers/abstain.py),
    calibrated on the labelled set before training and every purify.calibrate_every iterations."""

    # The break-even region accuracy of rule bayes on the worst tile (README, "How good must the region
    # classifier be? A noisy oracle": 0.654); a region keeps q where its calibrated accuracy reaches it.
    min_accuracy: float = 0.65
    images: int = 0  # labelled images to calibrate on; 0 = those purify.fit_images names (all when 0)
    # "majority": right = top-1 is the segment's majority class (the break-even curve's unit);
    # "pixels": the share of the segment's pixels of the top-1 class (stricter on mixed segments).
    accuracy: Literal["majority", "pixels"] = "majority"


@dataclass
class PurifyConfig:
    """VLM-PP hook. method none disables it; any other value names a classifier of the registry
    (semiearth/purify/classifiers/registry.py) that the trainer can build: prototype, openclip, vlm, ..."""

    method: str = "prototype"
    every: int = 2  # purify every k iterations (dataset configs use 1)
    low_thresh: float = 0.7
    cell: int = 32
    rule: Literal["bayes", "paper"] = "bayes"
    trust: float = 1.0
    max_regions: int = 6  # regions per image (a CPU-sized budget; dataset configs use 16)
    context: float = 2.0
    radius: int = 1
    tau: float = 0.7
    # Score only what can change (classifiers that take `classes`: vlm): per region the teacher's top-k
    # classes of the segment plus those with mean probability > prob_floor; 0 = every class.
    topk: int = 3
    prob_floor: float = 0.05
    backend: str = "auto"
    encoder: str = "efficientnet_lite0"  # prototype classifier encoder
    classifier_options: dict[str, Any] = field(default_factory=dict)  # extra classifier kwargs
    fit_images: int = 0  # labelled images used to fit prototypes; 0 = all
    records_every: int = 1  # write purify.jsonl every k purifications
    abstain: AbstainConfig | None = None  # null = off; {} = on with the defaults
    calibrate_every: int = 500  # recalibrate abstention every k iterations (0 = only before training)
    monitor_every: int = 0  # break-even monitor on a labelled batch every k iterations (0 = off)
    monitor_images: int = 4  # labelled images per monitor round


@dataclass
class EvalConfig:
    """Inference for validation/test."""

    mode: Literal["whole", "slide"] = "whole"
    window: int = 512
    stride: int = 341
    batch_size: int = 1
    # Evaluation conventions (named in every results table): class names left out of a second mean,
    # reported beside the full mean (ISPRS: [clutter]); ground-truth pixels within this many px of a
    # class boundary ignored (the ISPRS "eroded" convention; 0 = off). Which mean picks best.pth:
    # "full" (the default) or "excluded" (the mean without exclude_classes).
    exclude_classes: list[str] = field(default_factory=list)
    boundary_erosion: int = 0
    select_best: Literal["full", "excluded"] = "full"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    purify: PurifyConfig = field(default_factory=PurifyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs/default"
    compare_baseline: bool = False  # also train supervised-only first and print both results


# ----------------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (ints are accepted for floats); return it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list ({_type_name(tp)}), got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping ({_type_name(tp)}), got {value!r}")
        if not args:
            return dict(value)
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-6 (no dot) as a string; float() reads it
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected float, got {value!r}") from None
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite float, got {value!r}")
            return number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # pragma: no cover


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys."""
    if cls is PurifyConfig and isinstance(data, str):
        data = {"method": data}  # `purify: none` shorthand
    if data is None:
        data = {}
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown key '{_join(prefix, unknown[0])}'; allowed keys in {where}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _validate(obj: Any, prefix: str) -> None:
    """Cross-field checks that types cannot express."""
    if isinstance(obj, DataConfig):
        if len(obj.mean) != 3 or len(obj.std) != 3:
            raise ConfigError(f"{_join(prefix, 'mean')}/std: expected 3 values each")
        if obj.class_names and len(obj.class_names) != obj.num_classes:
            raise ConfigError(
                f"{_join(prefix, 'class_names')}: {len(obj.class_names)} names for num_classes={obj.num_classes}"
            )
        bad_std = [v for v in obj.std if not (math.isfinite(v) and v > 0)]
        if bad_std or not all(math.isfinite(v) for v in obj.mean):
            key, values = ("std", obj.std) if bad_std else ("mean", obj.mean)
            raise ConfigError(
                f"{_join(prefix, key)}: images are normalised as (x - mean) / std, so every std must be a finite "
                f"number > 0 and every mean finite, got {values}; use the dataset's statistics (summary.json of "
                "semiearth-prepare) or the ImageNet ones"
            )
        if 0 <= obj.ignore_index < obj.num_classes and not obj.allow_ignore_in_classes:
            raise ConfigError(
                f"{_join(prefix, 'ignore_index')}: {obj.ignore_index} is a class id (num_classes={obj.num_classes}: "
                f"ids 0..{obj.num_classes - 1}), so class {obj.ignore_index} would never be trained or scored; "
                f"prepared masks mark ignore with 255 (the default); set {_join(prefix, 'allow_ignore_in_classes')}: "
                "true if that class is meant to be ignored"
            )
        bad = [k for k in obj.splits if k not in ("labeled", "unlabeled", "val", "test")]
        if bad:
            raise ConfigError(
                f"unknown key '{_join(prefix, 'splits.' + bad[0])}'; allowed: labeled, unlabeled, val, test"
            )
    if isinstance(obj, TrainConfig):
        if obj.iters < 1:
            raise ConfigError(f"{_join(prefix, 'iters')}: must be >= 1")
        if len(obj.scale_range) != 2:
            raise ConfigError(f"{_join(prefix, 'scale_range')}: expected [min, max]")
    if isinstance(obj, EvalConfig) and obj.mode == "slide" and obj.stride > obj.window:
        raise ConfigError(
            f"{_join(prefix, 'stride')}: {obj.stride} > {_join(prefix, 'window')} {obj.window} with "
            f"{_join(prefix, 'mode')} slide leaves pixels that no window covers; use a stride <= the window "
            f"(e.g. {max(1, obj.window * 2 // 3)}, two thirds of it)"
        )
    if isinstance(obj, TrainConfig):
        obj.method_options = _method_options(obj, prefix)
    if isinstance(obj, Config):
        _resolve_method(obj)
        _check_eval_classes(obj)
    if isinstance(obj, PurifyConfig):
        from semiearth.purify.classifiers.registry import check_method, check_options  # the registry knows them

        problem = check_method(obj.method)
        if problem:
            raise ConfigError(f"{_join(prefix, 'method')}: {problem}")
        problem = check_options(obj.method, obj.classifier_options)
        if problem:
            raise ConfigError(f"{_join(prefix, 'classifier_options')}: {problem}")
    _check_ranges(obj, prefix)


def _method_options(train: TrainConfig, prefix: str) -> dict:
    """train.method_options checked against the method's Options dataclass, with its defaults filled
    in (so config.yaml records every option the method ran with)."""
    from semiearth.train.methods import method_class  # the registry knows the methods

    try:
        cls = method_class(train.method)
    except KeyError as err:
        raise ConfigError(f"{_join(prefix, 'method')}: {err.args[0]}") from None
    where = _join(prefix, "method_options")
    try:
        return dataclasses.asdict(_build(cls.Options, train.method_options, where))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise ConfigError(f"{err} (options of train.method {train.method})") from None
        raise ConfigError(f"{where}.{err}") from None


def _check_eval_classes(cfg: Config) -> None:
    """eval.exclude_classes names classes of data.class_names (or their ids as strings when unnamed)."""
    names = cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)]
    for name in cfg.eval.exclude_classes:
        if name not in names:
            raise ConfigError(f"eval.exclude_classes: unknown class {name!r}; valid: {', '.join(names)}")
    if cfg.eval.exclude_classes and set(names) <= set(cfg.eval.exclude_classes):
        raise ConfigError("eval.exclude_classes: excludes every class; leave at least one in the mean")
    if cfg.eval.select_best == "excluded" and not cfg.eval.exclude_classes:
        raise ConfigError("eval.select_best: excluded needs eval.exclude_classes (e.g. [clutter])")


def _resolve_method(cfg: Config) -> None:
    """A method without unlabelled data (supervised) runs with no unlabelled batch and no VLM-PP,
    and the config says so; a semi-supervised method needs unlabelled images."""
    from semiearth.train.methods import method_class

    semi = method_class(cfg.train.method).semi
    if not semi:
        cfg.train.unlabeled_batch_size = 0
        cfg.purify.method = "none"
    elif cfg.train.unlabeled_batch_size == 0:
        raise ConfigError(
            f"train.method {cfg.train.method} trains on unlabelled images: set train.unlabeled_batch_size >= 1, "
            "or train.method: supervised for a labelled-only run"
        )


# Ranges of numeric keys, checked when a section is built: (low, high) inclusive, high None = unbounded;
# a third item True makes low exclusive. Out-of-range values would otherwise fail deep inside torch (a conv on a -5 px crop).
_RANGES: dict[str, dict[str, tuple]] = {
    "DataConfig": {"num_classes": (1, None), "crop_size": (1, None), "value_scale": (0, None, True)},
    "TrainConfig": {
        "batch_size": (1, None), "unlabeled_batch_size": (0, None), "lr": (0, None, True),
        "head_lr_mult": (0, None, True), "weight_decay": (0, None), "warmup_iters": (0, None),
        "threshold": (0, 1), "ema_momentum": (0, 1), "cutmix_prob": (0, 1), "grayscale_prob": (0, 1),
        "blur_prob": (0, 1), "color_jitter": (0, None), "hue_jitter": (0, 0.5), "grad_clip": (0, None),
        "num_workers": (0, None), "log_every": (1, None), "panel_every": (0, None), "ckpt_every": (0, None),
        "eval_every": (0, None), "eval_max_images": (0, None), "threads": (0, None),
    },
    "PurifyConfig": {
        "every": (1, None), "low_thresh": (0, 1), "cell": (1, None), "trust": (0, None), "max_regions": (1, None),
        "context": (0, None, True), "radius": (0, None), "tau": (0, 1, True), "fit_images": (0, None),
        "records_every": (1, None), "calibrate_every": (0, None), "monitor_every": (0, None),
        "monitor_images": (1, None),
    },
    "AbstainConfig": {"min_accuracy": (0, 1, True), "images": (0, None)},
    "EvalConfig": {"window": (1, None), "stride": (1, None), "batch_size": (1, None), "boundary_erosion": (0, None)},
}  # fmt: skip


def _check_ranges(obj: Any, prefix: str) -> None:
    for name, (low, high, *open_low) in _RANGES.get(type(obj).__name__, {}).items():
        value = getattr(obj, name)
        too_low = not (value > low if open_low and open_low[0] else value >= low)  # NaN is never in range
        if too_low or (high is not None and value > high) or value in (math.inf, -math.inf):
            bound = f"> {low}" if open_low and open_low[0] else f">= {low}"
            allowed = f"{bound} and <= {high}" if high is not None else bound
            raise ConfigError(f"{_join(prefix, name)}: must be {allowed}, got {value!r}")
    if isinstance(obj, TrainConfig) and not 0 < obj.scale_range[0] <= obj.scale_range[1]:
        raise ConfigError(f"{_join(prefix, 'scale_range')}: expected 0 < min <= max, got {obj.scale_range}")


def config_from_dict(data: dict) -> Config:
    return _build(Config, data or {})


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


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
                raise ConfigError(f"override {key}: '{'.'.join(parts[: depth + 1])}' is not a section")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Read YAML `path` (or defaults when None), apply overrides, and return a typed Config."""
    data: dict = {}
    if path:
        path = config_path(path)
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)


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
