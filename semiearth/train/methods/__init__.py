"""The S4 methods, by name: the one place that knows them (`train.method`).

Adding a method = one module with a `semiearth.train.methods.base.Method` subclass plus one line in
METHODS and one in METHOD_OPTIONS (its options model in semiearth/options.py); both tables live in the
light semiearth/registry.py, so the config checks `train.method` and `train.method_options` without
importing a method (nor torch). From outside the package: `register_method(name, cls, options=)`
(docs/architecture.md, docs/configuration.md).
"""

from __future__ import annotations

from semiearth.registry import LABELLED_ONLY_METHODS, METHOD_OPTIONS, METHODS, lookup, register


def register_method(name: str, target: str | type, options=None) -> None:
    """Register `name` -> a Method subclass or "module:Class" (for methods outside this package).

    options: the pydantic model of its `train.method_options` (or "module:Model"); None: the class's
    `Options` when that is a pydantic model (else any options, which reach `Options(**options)`)."""
    register(METHODS, METHOD_OPTIONS, name, target, options)
    LABELLED_ONLY_METHODS.discard(name)  # a class is asked for `semi` directly


def method_class(name: str) -> type:
    """The Method subclass named `name` (KeyError listing the known methods otherwise)."""
    return lookup(METHODS, name, "method")


def build_method(cfg, device, rank: int = 0, world: int = 1):
    """The method `cfg.train.method` with its networks, optimiser and options, on `device`."""
    return method_class(cfg.train.method)(cfg, device, rank, world)


__all__ = ["METHODS", "METHOD_OPTIONS", "build_method", "method_class", "register_method"]
