"""Numeric ranges shared by the config and the ops, defined once (this module imports nothing).

The config declares a key with `Field(default, **LOW_THRESH.field())` and the op checks its argument
with `semiearth.ops._validate.check_bound(op, "low_thresh", value, LOW_THRESH)`, so a value the config
accepts is one the op accepts (`--set purify.low_thresh=0` is refused when the config is read, not by
a traceback from inside the op at the first purification).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """An interval: `ge`/`gt` the lower end, `le`/`lt` the upper one (inclusive / exclusive); None = open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def field(self) -> dict:
        """Keyword arguments for pydantic's `Field` (ge=, gt=, le=, lt=)."""
        return {k: v for k, v in self._ends() if v is not None}

    def _ends(self):
        return (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("lt", self.lt))

    def text(self) -> str:
        """'> 0 and <= 1', '>= 1', ..."""
        ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        parts = [f"{ops[k]} {v:g}" for k, v in self._ends() if v is not None]
        return " and ".join(parts)

    def holds(self, value) -> bool:
        """Whether the finite number `value` lies in the interval (NaN, inf and bools never do)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


UNIT = Bound(gt=0, le=1)  # a share or probability that must be positive: (0, 1]
PROBABILITY = Bound(ge=0, le=1)  # [0, 1]
POSITIVE = Bound(gt=0)
NON_NEGATIVE = Bound(ge=0)
AT_LEAST_ONE = Bound(ge=1)

# VLM-PP (purify.* in the config; the arguments of ops.purify_stats / ops.purify_apply / VLMPurifier)
LOW_THRESH = UNIT  # pixels whose teacher confidence is below it are candidates; 0 would select none
TAU = UNIT  # q's top-1 probability a region needs to be relabelled
CELL = AT_LEAST_ONE  # px per statistics cell
RADIUS = NON_NEGATIVE  # cells of context around a candidate cell
TOPK = NON_NEGATIVE  # classes scored per region (0 = all)
PROB_FLOOR = Bound(ge=0, lt=1)  # mean class probability that adds a class to a region's scored ones
