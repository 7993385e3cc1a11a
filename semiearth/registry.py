"""The registries' tables, importable without their members: name -> "module:Class" and name ->
"module:OptionsModel" for the region classifiers and the S4 methods (the datasets' tables live in
semiearth/data/registry.py, which is as light). Nothing here imports torch, semiearth.purify,
semiearth.ops or semiearth.train, so `semiearth.config` checks `purify.method`, `train.method` and
their options when a config is loaded and imports no member (tests/test_config_errors.py counts the
modules).

A member is a class; its options a pydantic model (semiearth/options.py for the built-in ones). A
member registered from outside (`register_classifier`, `register_method`, `register_dataset`) names
its model with `options=`, or its class carries a pydantic `Options` attribute; a member with neither
accepts any options (they reach it as keyword arguments / a dict, and it checks them itself).
"""

from __future__ import annotations

import importlib

CLASSIFIERS: dict[str, str | type] = {
    "uniform": "semiearth.purify.classifiers._base:UniformClassifier",
    "oracle": "semiearth.purify.classifiers.oracle:OracleClassifier",
    "noisy_oracle": "semiearth.purify.classifiers.noisy_oracle:NoisyOracleClassifier",
    "prototype": "semiearth.purify.classifiers.prototype:PrototypeClassifier",
    "openclip": "semiearth.purify.classifiers.openclip:OpenClipClassifier",
    "vlm": "semiearth.purify.classifiers.hf_vlm:HFVLMClassifier",
}
CLASSIFIER_OPTIONS: dict[str, str | type] = {
    "uniform": "semiearth.options:UniformOptions",
    "oracle": "semiearth.options:OracleOptions",
    "noisy_oracle": "semiearth.options:NoisyOracleOptions",
    "prototype": "semiearth.options:PrototypeOptions",
    "openclip": "semiearth.options:OpenClipOptions",
    "vlm": "semiearth.options:VLMOptions",
}
# Classifier arguments that `from_config` fills in from the config itself: classifier_options cannot set them.
CONFIG_ARGS = {"class_names": "data.class_names", "num_classes": "data.num_classes", "encoder": "purify.encoder"}

METHODS: dict[str, str | type] = {
    "supervised": "semiearth.train.methods.supervised:Supervised",
    "fixmatch": "semiearth.train.methods.fixmatch:FixMatch",
    "mean_teacher": "semiearth.train.methods.mean_teacher:MeanTeacher",
    "unimatch_v2": "semiearth.train.methods.unimatch_v2:UniMatchV2",
    "cps": "semiearth.train.methods.cps:CPS",
}
METHOD_OPTIONS: dict[str, str | type] = {
    "supervised": "semiearth.options:NoOptions",
    "fixmatch": "semiearth.options:NoOptions",
    "mean_teacher": "semiearth.options:MeanTeacherOptions",
    "unimatch_v2": "semiearth.options:UniMatchV2Options",
    "cps": "semiearth.options:CPSOptions",
}
# Methods that read no unlabelled batch (the Method class's `semi = False`), for the config to know
# without importing the class; a method registered as a class is asked directly.
LABELLED_ONLY_METHODS = {"supervised"}


def resolve(target):
    """A "module:Attr" string -> the attribute (imported on first use); anything else unchanged."""
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return target


def lookup(table: dict, name: str, kind: str):
    """table[name] resolved (a class, a spec, ...), importing a "module:Attr" entry on first use.

    A KeyError names the known entries, e.g. "unknown dataset 'x'; known datasets: ...".
    """
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}")
    return resolve(table[name])


def register(table: dict, options_table: dict, name: str, target, options=None) -> None:
    """table[name] = target; options_table[name] = options (a model or "module:Model"), or dropped
    when None (then a class target's pydantic `Options` attribute, if any, is the model)."""
    table[name] = target
    if options is not None:
        options_table[name] = options
    else:
        options_table.pop(name, None)


def options_model(table: dict, options_table: dict, name: str):
    """The pydantic model of member `name`'s options, or None (any options). Imports no member that
    is registered as a "module:Class" string."""
    if name in options_table:
        return resolve(options_table[name])
    model = getattr(table.get(name), "Options", None)
    return model if isinstance(model, type) and hasattr(model, "model_validate") else None
