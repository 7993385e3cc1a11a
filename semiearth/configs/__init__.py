"""The configs that ship with the package, found by name.

`semiearth-train --config potsdam` reads `semiearth/configs/potsdam.yaml` (installed with the
package, so it works outside a checkout); `--config repro/potsdam_10` a config in a subfolder;
`--config my.yaml` (any path to an existing file) a config of your own.
"""

from __future__ import annotations

import os
import re

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def packaged_configs() -> list[str]:
    """Names of the packaged configs ("demo", "repro/potsdam_1", ...), sorted with numbers in order
    (repro/potsdam_1, _5, _10)."""
    names = []
    for folder, _, files in os.walk(CONFIG_DIR):
        rel = os.path.relpath(folder, CONFIG_DIR)
        for file in files:
            if file.endswith(".yaml"):
                name = file[: -len(".yaml")]
                names.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def config_path(name_or_path: str) -> str:
    """A path for `--config`: an existing file as given, else the packaged config of that name.

    A value that is neither is returned unchanged (the loader then says "not found" and lists the
    packaged names).
    """
    if os.path.exists(name_or_path):
        return name_or_path
    name = name_or_path[: -len(".yaml")] if name_or_path.endswith(".yaml") else name_or_path
    if name in packaged_configs():
        return os.path.join(CONFIG_DIR, *name.split("/")) + ".yaml"
    return name_or_path
