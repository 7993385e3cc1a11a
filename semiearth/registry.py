"""Lazy name -> class tables, shared by the dataset and classifier registries."""

import importlib


def lookup(table: dict, name: str, kind: str) -> type:
    """table[name] as a class, importing a "module:Class" entry on first use.

    A KeyError names the known entries, e.g. "unknown dataset 'x'; known datasets: ...".
    """
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}")
    target = table[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
    return target
