"""Classifier registry: the one place that knows the region classifiers by name.

Adding a classifier = one module with the class (protocol in _base.py) plus one line in CLASSIFIERS
(or `register_classifier(name, cls)` from outside the package). The config's `purify.method`
choices, the trainer's VLM-PP hook (semiearth/train/purify_hook.py) and the benches read this table.

The trainer builds a classifier with the class's `from_config(ctx: ClassifierContext)` classmethod;
a class without one (the oracle: it needs the unlabelled batch's ground truth) can be used from code
and the benches but not named as `purify.method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from semiearth.registry import lookup

CLASSIFIERS: dict[str, str | type] = {
    "uniform": "semiearth.purify.classifiers._base:UniformClassifier",
    "oracle": "semiearth.purify.classifiers.oracle:OracleClassifier",
    "noisy_oracle": "semiearth.purify.classifiers.noisy_oracle:NoisyOracleClassifier",
    "prototype": "semiearth.purify.classifiers.prototype:PrototypeClassifier",
    "openclip": "semiearth.purify.classifiers.openclip:OpenClipClassifier",
    "vlm": "semiearth.purify.classifiers.hf_vlm:HFVLMClassifier",
}


@dataclass
class ClassifierContext:
    """What `from_config` gets: the purify and data config sections, the device, the labelled
    training set (for classifiers fitted on labelled data) and the log function."""

    purify: Any  # semiearth.config.PurifyConfig
    data: Any  # semiearth.config.DataConfig
    device: Any = "cpu"
    labelled: Any = None
    log: Callable[[str], None] = print


def register_classifier(name: str, target: str | type) -> None:
    """Register `name` -> a class or "module:Class" (for classifiers outside this package)."""
    if name == "none":
        raise ValueError("register_classifier: 'none' means VLM-PP off and cannot name a classifier")
    CLASSIFIERS[name] = target


def classifier_class(name: str) -> type:
    return lookup(CLASSIFIERS, name, "classifier")


def trainer_methods() -> list[str]:
    """Names the trainer can build (classes with `from_config`), sorted."""
    return sorted(n for n in CLASSIFIERS if callable(getattr(classifier_class(n), "from_config", None)))


def check_method(method: str) -> str | None:
    """None when `purify.method` names a classifier the trainer can build (or is 'none'), else why not."""
    if method == "none" or method in trainer_methods():
        return None
    allowed = ", ".join(["none", *trainer_methods()])
    if method in CLASSIFIERS:
        cls = classifier_class(method)
        return (
            f"{method!r} ({cls.__name__}) cannot be built by the trainer: it has no from_config "
            f"(see semiearth/purify/classifiers/registry.py); one of {allowed}"
        )
    return f"{method!r} is not one of [{allowed}]"


def build_classifier(name: str, ctx: ClassifierContext):
    """The classifier `name` built from the config by its class's `from_config(ctx)`; wrapped in
    `AbstainingClassifier` when `purify.abstain` is set (uncalibrated: it abstains everywhere until
    the trainer calibrates it, semiearth/train/monitor.py)."""
    problem = check_method(name)
    if problem or name == "none":
        raise ValueError(f"purify.method: {problem or 'none builds no classifier'}")
    classifier = classifier_class(name).from_config(ctx)
    abstain = getattr(ctx.purify, "abstain", None)
    if abstain is not None:
        from semiearth.purify.classifiers.abstain import AbstainingClassifier

        classifier = AbstainingClassifier(classifier, min_accuracy=abstain.min_accuracy, accuracy=abstain.accuracy)
    return classifier


# Arguments that a class's from_config fills in from the config itself (data.class_names, data.num_classes,
# purify.encoder): classifier_options cannot set them.
CONFIG_ARGS = ("class_names", "num_classes", "encoder")


def option_names(name: str) -> list[str] | None:
    """The keyword arguments `purify.classifier_options` may give classifier `name` (None: any)."""
    import inspect

    params = inspect.signature(classifier_class(name).__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self" and p.name not in CONFIG_ARGS]


def check_options(name: str, options: dict) -> str | None:
    """None when every key of `options` is an argument of classifier `name` (or the name is unknown /
    'none': check_method reports that), else which key is wrong and the allowed ones."""
    if name == "none" or name not in CLASSIFIERS or not options:
        return None
    allowed = option_names(name)
    if allowed is None:
        return None
    for key in options:
        if key in CONFIG_ARGS:
            where = "purify.encoder" if key == "encoder" else f"data.{key}"
            return f"{key!r} comes from {where}, not from classifier_options"
        if key not in allowed:
            import difflib

            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            return f"unknown option {key!r} of purify.method {name}; {hint}allowed: {', '.join(allowed)}"
    return None
