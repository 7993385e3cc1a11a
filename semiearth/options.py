"""Option models of the built-in registry members: what `purify.classifier_options`, `data.options`
and `train.method_options` may hold for each classifier, dataset and S4 method.

This module imports only pydantic and semiearth.bounds, so the config checks a member's options when
it is loaded without importing the member (torch, open_clip, transformers): the registries map a
name to "module:Class" and to "semiearth.options:Model" (semiearth/registry.py, DATASET_OPTIONS in
semiearth/data/registry.py). A member registered from outside declares its own model with
`register_*(name, target, options=MyOptions)` or a pydantic `Options` attribute on its class.

Who owns the defaults:
- datasets and methods: the model (the member reads `Model(**options)`; config.yaml records every
  value the run used);
- classifiers: the class's constructor (its signature is the API people call from code). The model
  states names, types and ranges only; its fields default to "unset", and the config passes on
  the keys the user gave (tests/test_config_options.py checks that the names match the signatures).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from semiearth.bounds import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, PROB_FLOOR, PROBABILITY, TOPK


def _float_text(value):
    """YAML 1.1 reads `5e-6` (no dot) as a string: let float() read it; anything else is left to fail."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# A float that also takes `5e-6` written in YAML; ints are fine, bools are not (strict mode).
Float = Annotated[float, BeforeValidator(_float_text)]


class Options(BaseModel):
    """Base of every option model: unknown keys are errors, types are strict (no "yes" for a bool, no
    "3" for an int), no NaN or inf."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


UNSET = None  # a classifier option left out: the classifier's own default applies


# ----------------------------------------------------------------------------- classifiers
class UniformOptions(Options):
    """purify.method uniform (semiearth/purify/classifiers/_base.py): q = 1/C everywhere."""

    input_size: int = Field(UNSET, **AT_LEAST_ONE.field())


class OracleOptions(Options):
    """purify.method oracle: the unlabelled images' ground truth (an upper bound for ablations)."""

    ignore_index: int = UNSET
    scope: Literal["segment", "box"] = UNSET
    smoothing: Float = Field(UNSET, **PROBABILITY.field())
    input_size: int = Field(UNSET, **AT_LEAST_ONE.field())


class NoisyOracleOptions(Options):
    """purify.method noisy_oracle: the oracle right with probability `accuracy` (required)."""

    accuracy: Float = Field(..., **PROBABILITY.field())
    dataset: str | None = UNSET
    seed: int = UNSET
    noise: Float = Field(UNSET, **NON_NEGATIVE.field())
    runner_up: Float = UNSET
    margin_right: Float = UNSET
    margin_wrong: Float = UNSET
    margin_sigma: Float = Field(UNSET, **NON_NEGATIVE.field())
    calibration: Literal["segments", "labels"] = UNSET
    ignore_index: int = UNSET


class PrototypeOptions(Options):
    """purify.method prototype: nearest class prototypes of a frozen encoder (purify.encoder)."""

    temperature: Float | Literal["auto"] = UNSET
    input_size: int | None = Field(UNSET, **AT_LEAST_ONE.field())
    mean: list[Float] | None = UNSET
    std: list[Float] | None = UNSET
    batch_size: int = Field(UNSET, **AT_LEAST_ONE.field())
    device: str = UNSET
    prototypes_per_class: int = Field(UNSET, **AT_LEAST_ONE.field())
    scales: list[Float] = UNSET


class OpenClipOptions(Options):
    """purify.method openclip: zero-shot CLIP; class prompts = templates x synonyms (the dataset spec's)."""

    model: str = UNSET
    pretrained: str | None = UNSET
    templates: list[str] = UNSET
    synonyms: dict[str, list[str]] | None = UNSET
    batch_size: int = Field(UNSET, **AT_LEAST_ONE.field())
    autocast: bool | None = UNSET
    temperature: Float | None = Field(UNSET, **POSITIVE.field())
    device: str = UNSET
    cache_dir: str | None = UNSET
    text_batch_size: int = Field(UNSET, **AT_LEAST_ONE.field())


class VLMOptions(Options):
    """purify.method vlm: a Hugging Face chat VLM asked which class a region shows."""

    model: str = UNSET
    synonyms: dict[str, list[str]] | None = UNSET
    capitalize: bool = UNSET
    prompt: str = UNSET
    view: Literal["masked", "box"] = UNSET
    input_size: int = Field(UNSET, **AT_LEAST_ONE.field())
    temperature: Float = Field(UNSET, **POSITIVE.field())
    batch_size: int = Field(UNSET, **AT_LEAST_ONE.field())
    max_regions: int | None = Field(UNSET, **AT_LEAST_ONE.field())
    device: str = UNSET
    dtype: Literal["float32", "float16", "bfloat16"] | None = UNSET
    autocast: bool | None = UNSET
    load_in_4bit: bool = UNSET
    cache_dir: str | None = UNSET
    attn_implementation: str | None = UNSET
    topk: int = Field(UNSET, **TOPK.field())
    prob_floor: Float = Field(UNSET, **PROB_FLOOR.field())


# ----------------------------------------------------------------------------- datasets
class SyntheticOptions(Options):
    """data.options of the synthetic dataset: scene size (px), images per split, seed, in-memory cache."""

    size: int = Field(128, ge=8)
    labeled: int = Field(8, ge=0)
    unlabeled: int = Field(400, ge=0)
    val: int = Field(48, ge=0)
    test: int = Field(48, ge=0)
    seed: int = 0
    cache: bool = True  # keep generated scenes in memory as uint8 (image + mask: 4 bytes/px, 64 KiB at 128 px)


class SegmentationOptions(Options):
    """data.options of the file datasets (loveda, potsdam, vaihingen, openearthmap)."""

    unlabeled_masks: bool = False  # load the unlabelled split's masks (for purify.method oracle)


class FolderOptions(SegmentationOptions):
    """data.options of the generic folder dataset."""

    auto_split: bool = False  # without split lists: every image serves every split (quick experiments)


# The torchgeo classes `data.name: torchgeo` reads (semiearth/data/torchgeo.py maps each onto our contract).
TorchgeoName = Literal["LoveDA", "Potsdam2D", "Vaihingen2D", "DeepGlobeLandCover"]
TorchgeoRole = Literal["train", "val", "test", "unlabeled"]


class TorchgeoOptions(Options):
    """data.options of `data.name: torchgeo` (semiearth/data/torchgeo.py's docstring says what each does)."""

    dataset: TorchgeoName  # the torchgeo class (semiearth.data.torchgeo.SOURCES says how each is read)
    ratio: str | Float = "1/8"  # labelled share of the train pool: 1/8, 0.125 or 12.5%
    seed: int = Field(0, ge=0)
    val_frac: Float = Field(0.1, ge=0, lt=1)  # held out of the train pool when there is no val split
    test_frac: Float = Field(0.1, ge=0, lt=1)  # held out of the train pool when there is no test split
    splits: dict[str, TorchgeoRole] | None = None  # torchgeo split -> role; None: the dataset's default
    kwargs: dict[str, Any] = {}  # more keyword arguments of the torchgeo class
    unlabeled_masks: bool = False  # unlabelled items keep their masks (oracle classifier, diagnostics)


# ----------------------------------------------------------------------------- S4 methods
class NoOptions(Options):
    """A method without `train.method_options` (supervised, fixmatch)."""


class MeanTeacherOptions(Options):
    """train.method_options of mean_teacher."""

    consistency: Float = Field(10.0, **NON_NEGATIVE.field())  # consistency-loss weight after the ramp-up
    rampup_iters: int = Field(200, **NON_NEGATIVE.field())  # sigmoid ramp-up length; 0 = full weight at once
    loss: Literal["mse", "kl"] = "mse"


class UniMatchV2Options(Options):
    """train.method_options of unimatch_v2."""

    # share of images whose two strong views get complementary channel halves
    drop_images: Float = Field(0.5, **PROBABILITY.field())


class CPSOptions(Options):
    """train.method_options of cps."""

    cps_weight: Float = Field(1.5, **NON_NEGATIVE.field())  # cross pseudo supervision weight (the paper's 1.5)
    threshold: Float = Field(0.0, **PROBABILITY.field())  # confidence a pseudo-label needs; 0 = every pixel
    eval_weights: Literal["student_a", "student_b", "mean"] = "student_a"
