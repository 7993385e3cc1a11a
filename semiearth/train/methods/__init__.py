"""The S4 methods, by name: the one place that knows them (`train.method`).

Adding a method = one module with a `semiearth.train.methods.base.Method` subclass plus one line in
METHODS (or `register_method(name, cls)` from outside the package): docs/architecture.md.
"""

from __future__ import annotations

from semiearth.registry import lookup

METHODS: dict[str, str | type] = {
    "supervised": "semiearth.train.methods.supervised:Supervised",
    "fixmatch": "semiearth.train.methods.fixmatch:FixMatch",
    "mean_teacher": "semiearth.train.methods.mean_teacher:MeanTeacher",
    "unimatch_v2": "semiearth.train.methods.unimatch_v2:UniMatchV2",
    "cps": "semiearth.train.methods.cps:CPS",
}


def register_method(name: str, target: str | type) -> None:
    """Register `name` -> a Method subclass or "module:Class" (for methods outside this package)."""
    METHODS[name] = target


def method_class(name: str) -> type:
    """The Method subclass named `name` (KeyError listing the known methods otherwise)."""
    return lookup(METHODS, name, "method")


def build_method(cfg, device, rank: int = 0, world: int = 1):
    """The method `cfg.train.method` with its networks, optimiser and options, on `device`."""
    return method_class(cfg.train.method)(cfg, device, rank, world)


__all__ = ["METHODS", "build_method", "method_class", "register_method"]
