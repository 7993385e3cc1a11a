"""Classifier registry: the one place that knows the region classifiers by name.

Adding a classifier = one module with the class (protocol in _base.py) plus one line in CLASSIFIERS
and one in CLASSIFIER_OPTIONS (its options model in semiearth/options.py); both tables live in the
light semiearth/registry.py so the config checks `purify.method` and `purify.classifier_options`
without importing a classifier. From outside the package: `register_classifier(name, cls, options=)`.
The trainer's VLM-PP hook (semiearth/train/purify_hook.py) and the benches read this table.

The trainer builds a classifier with the class's `from_config(ctx: ClassifierContext)` classmethod;
a class registered without one can be used from code and the benches but not named as `purify.method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from semiearth.config import classifier_problem
from semiearth.registry import CLASSIFIER_OPTIONS, CLASSIFIERS, CONFIG_ARGS, lookup, register


@dataclass
class ClassifierContext:
    """What `from_config` gets: the purify and data config sections, the device, the labelled
    training set (for classifiers fitted on labelled data) and the log function."""

    purify: Any  # semiearth.config.PurifyConfig
    data: Any  # semiearth.config.DataConfig
    device: Any = "cpu"
    labelled: Any = None
    log: Callable[[str], None] = print


def register_classifier(name: str, target: str | type, options=None) -> None:
    """Register `name` -> a class or "module:Class" (for classifiers outside this package); `options`:
    the pydantic model of its `purify.classifier_options` (None: the class's pydantic `Options`
    attribute, else any options, passed to it as keyword arguments)."""
    if name == "none":
        raise ValueError("register_classifier: 'none' means VLM-PP off and cannot name a classifier")
    register(CLASSIFIERS, CLASSIFIER_OPTIONS, name, target, options)


def classifier_class(name: str) -> type:
    return lookup(CLASSIFIERS, name, "classifier")


def trainer_methods() -> list[str]:
    """Names the trainer can build (classes with `from_config`), sorted."""
    return sorted(n for n in CLASSIFIERS if callable(getattr(classifier_class(n), "from_config", None)))


def check_method(method: str) -> str | None:
    """None when `purify.method` names a classifier the trainer can build (or is 'none'), else why not
    (the config's check, semiearth/config.py, which imports no classifier)."""
    return None if method == "none" else classifier_problem(method)


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


__all__ = [
    "CLASSIFIERS", "CLASSIFIER_OPTIONS", "CONFIG_ARGS", "ClassifierContext", "build_classifier", "check_method",
    "classifier_class", "register_classifier", "trainer_methods",
]  # fmt: skip
