"""--resume against a changed config: what may change (applied and recorded), what may not (refused,
naming the key).

A resumed run trains with the config it is given. Most keys apply from the resumed iteration on:
the lr schedule (`train.lr`, `head_lr_mult`, `weight_decay`, `poly_power`, `warmup_iters`,
`iters`: the optimiser's base learning rates are set anew, see `Method.apply_schedule`), the
threshold, the method's options, VLM-PP, the cadences, evaluation, batch sizes, `data.root` (a moved
dataset). They are printed, written to metrics.jsonl (a `resume` row) and config.yaml records them.
What a checkpoint's weights or the run's identity depend on is refused (`FIXED`): the method, the
model's shape, the classes and the data.
"""

from __future__ import annotations

import json

from semiearth.config import Config, config_to_dict
from semiearth.train.checkpoint import CheckpointError

SHAPE = "the weights do not fit a model of another shape"
DATA = "a resumed run trains on the data it started with"
FIXED = {  # key (or key prefix, ending in "."): why it cannot change; checked in this order
    "train.method": "its networks and optimiser state are another method's",
    "model.name": SHAPE,
    "model.variant": SHAPE,
    "model.decoder_channels": SHAPE,
    "model.arch": SHAPE,
    "model.encoder": SHAPE,
    "data.num_classes": "the weights do not fit another number of classes",
    "data.": DATA,
    "compare_baseline": "the run folder's layout follows it",
}
MAY_CHANGE = {"data.root", "data.palette"}  # a dataset moved elsewhere; colours of panels
IGNORED = {"out_dir"}  # a run folder may be moved or named by another path
SCHEDULE = {"train.lr", "train.head_lr_mult", "train.weight_decay", "train.poly_power", "train.warmup_iters",
            "train.iters"}  # fmt: skip


class ResumeRefused(CheckpointError):
    """--resume with a config that the checkpoint's run cannot continue under (names the key)."""


def flatten(config: dict) -> dict:
    """{'train.lr': 0.01, 'data.options': {...}, 'out_dir': ...}: the keys of a config mapping, one
    per field of its sections (free-form mappings such as data.options stay one value)."""
    out = {}
    for section, fields in config.items():
        if isinstance(fields, dict):
            out.update({f"{section}.{k}": v for k, v in fields.items()})
        else:
            out[section] = fields
    return out


def show(value) -> str:
    """A config value as the user would write it after --set key=..."""
    return value if isinstance(value, str) and value else json.dumps(value)


def config_changes(old: dict, cfg: Config) -> dict[str, tuple]:
    """{key: (checkpoint's value, this run's value)} for every key that differs (`out_dir`, and keys
    that only one side has, as after an upgrade that added a key, are left out)."""
    a, b = flatten(old), flatten(config_to_dict(cfg))
    return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if k not in IGNORED and a[k] != b[k]}


def _fixed_rule(key: str) -> tuple[int, str] | None:
    """(position in FIXED, why) of the first FIXED rule that `key` may not change under, or None."""
    if key in MAY_CHANGE:
        return None
    for i, (k, why) in enumerate(FIXED.items()):
        if key == k or (k.endswith(".") and key.startswith(k)):
            return i, why
    return None


def check_resume_config(ckpt: dict, cfg: Config, path: str) -> dict[str, tuple]:
    """The changes of `cfg` from the checkpoint's config, which a resumed run applies; or
    ResumeRefused naming the first key that cannot change and how to resume."""
    old = ckpt.get("config")
    if not isinstance(old, dict):
        return {}  # a checkpoint without its config (hand-made): check_compatible still checks it
    changed = config_changes(old, cfg)
    rules = sorted((rule, k) for k in changed if (rule := _fixed_rule(k)))  # in FIXED's order, then by key
    refused = [(k, why) for (_, why), k in rules]
    if refused:
        key, why = refused[0]
        theirs, ours = changed[key]
        also = (
            f" (and {len(refused) - 1} more key(s): {', '.join(k for k, _ in refused[1:4])})"
            if len(refused) > 1
            else ""
        )
        raise ResumeRefused(
            f"checkpoint {path} was trained with {key} {show(theirs)}, this run is {show(ours)}{also}: {why}; "
            f"resume it with --set {key}={show(theirs)}, or start a new run in another --out"
        )
    iteration = int(ckpt.get("iteration", 0))
    if cfg.train.iters < iteration:
        raise ResumeRefused(
            f"train.iters {cfg.train.iters} is below the iteration of checkpoint {path} ({iteration}): "
            f"give train.iters >= {iteration} to continue it"
        )
    return changed


def describe_changes(changed: dict[str, tuple]) -> str:
    """'train.lr 0.01 -> 0.02, train.iters 4 -> 6'."""

    def short(v) -> str:
        return f"{v:g}" if isinstance(v, float) else show(v)

    return ", ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in changed.items())
