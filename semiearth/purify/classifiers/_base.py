"""The classifier protocol and the checks shared by the classifiers and the purifier.

A classifier is a callable `classifier(crops [N,3,S,S] float32, regions [N,6]) -> q [N,C]` whose rows
are class probabilities (non-negative, summing to 1), with attributes:

- `input_size` (S, the crop side it wants), `mean` and `std` (3 values each: the normalisation it
  expects of RGB in [0, 1]; crop_batch applies it), `num_classes` (C) and optionally `class_names`.
- optional hook `observe(stats, regions, seg_table)`: VLMPurifier calls it before every
  classification with the batch's PurifyStats and region table (the oracle reads the segments
  from it; a VLM has no use for it).
- optional hook `set_gt(gt)`: VLMPurifier hands it the batch's ground truth [B,H,W] when its
  caller passes `gt=` (the oracle upper bound reads it; every other classifier ignores it).
- optional `mask_crops` (default True): False asks crop_batch for plain crops, without masking the
  pixels of other classes.
- optional keyword `classes` ([N,C] bool, "score only what can change"): a classifier whose
  `__call__` takes it (`accepts_classes`) is handed, per region, the classes that carry teacher
  probability there (VLMPurifier: the teacher's top-`topk` classes of the segment, by mean
  probability over its candidate pixels, plus every class whose mean is above `prob_floor`, plus the
  segment's pseudo-label). It may score only those and must give every other class the neutral q of
  `fill_unscored` (that of the least favoured scored class: see there for why, with measurements). Classifiers without the
  keyword are called as before and score all classes. Optional attributes `topk` (0 = all) and
  `prob_floor` give the purifier its defaults (from_config sets them from purify.topk / prob_floor).
- optional classmethod `from_config(ctx)` (ctx: registry.ClassifierContext): how the trainer builds
  it from the config; the classifier is named by `purify.method` through registry.CLASSIFIERS.
"""

import inspect
import json
import os
import re
import struct

import torch

from semiearth.config import ConfigError
from semiearth.ops._checks import require_zero


class ClassifierError(ConfigError):
    """A classifier's weight file or option is wrong: the message names the file (or option) and what
    was expected (a ConfigError: the CLIs print it as one line)."""


TORCH_EXTS = (".pt", ".pth", ".bin", ".ckpt")


def weights_file_problem(path: str) -> str | None:
    """Why `path` cannot be a weight file (PyTorch zip or pickle, or safetensors), from its first bytes;
    None when it looks like one. Reads a few bytes only, before anything is built or loaded."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
            if path.endswith(".safetensors") or head[8:9] == b"{":
                if len(head) < 9:
                    return f"it is {size} bytes long, too short for a safetensors file"
                (n,) = struct.unpack("<Q", head[:8])
                if head[8:9] != b"{" or n + 8 > size:
                    return "it is not a safetensors file (its header is not valid)"
                f.seek(8)
                try:
                    json.loads(f.read(min(n, 100_000_000)))
                except ValueError:
                    return "it is not a safetensors file (its header is not valid JSON)"
                return None
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if size == 0:
        return "it is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip archive, or a legacy pickle
        return None
    sample = head[:40].decode("utf-8", "replace")
    kind = "a text file" if b"\x00" not in head else "another format"
    return f"it is not a PyTorch or safetensors weight file but {kind} (it starts with {sample!r})"


def load_error(path: str, who: str, expected: str, err: BaseException, arch_hint: str = "") -> ClassifierError:
    """One line for a weight file that its loader refused: the file, why, and what was expected."""
    text = str(err)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        why = (
            f"it holds Python objects{what} besides tensors, which the safe loader (weights_only=True) refuses "
            "to run; use a checkpoint that holds only tensors"
        )
    elif "Error(s) in loading state_dict" in text:
        missing = re.search(r"Missing key\(s\) in state_dict: ((?:\"[^\"]*\",? ?)+)", text)
        unexpected = re.search(r"Unexpected key\(s\) in state_dict: ((?:\"[^\"]*\",? ?)+)", text)
        shape = r"(?:torch\.Size\()?\[[^\]]*\]\)?"
        size = re.search(rf"size mismatch for ([^:]+): copying a param with shape ({shape}) from checkpoint, "
                         rf"the shape in current model is ({shape})", text)  # fmt: skip
        parts = []
        if size:
            parts.append(f"{size.group(1)} is {size.group(2)} in the file but {size.group(3)} in the model")
        for name, m in (("missing", missing), ("unexpected", unexpected)):
            if m:
                keys = re.findall(r'"([^"]*)"', m.group(1))
                parts.append(f"{len(keys)} {name} key(s), e.g. {keys[0]}")
        why = f"its weights are of another architecture ({'; '.join(parts) or text.splitlines()[0][:200]})"
        expected += arch_hint
    else:
        first = text.strip().splitlines()[0][:200] if text.strip() else ""
        why = f"it cannot be loaded ({type(err).__name__}{': ' + first if first else ''})"
    return ClassifierError(f"{who}: weight file {path}: {why}; expected {expected}")


def check_crops(name: str, crops, regions, size: int | None = None) -> None:
    if not isinstance(crops, torch.Tensor) or crops.dim() != 4 or crops.shape[1] != 3:
        shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        raise ValueError(f"{name}: crops must be a tensor [N,3,S,S], got {shape}")
    if not isinstance(regions, torch.Tensor) or regions.dim() != 2 or regions.shape[1] != 6:
        shape = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__
        raise ValueError(f"{name}: regions must be a tensor [N,6] (batch, x1, y1, x2, y2, class), got {shape}")
    if crops.shape[0] != regions.shape[0]:
        raise ValueError(f"{name}: {crops.shape[0]} crops but {regions.shape[0]} regions")
    if size is not None and tuple(crops.shape[2:]) != (size, size):
        raise ValueError(f"{name}: crops must be {size} x {size} (input_size), got {tuple(crops.shape[2:])}")


def check_probabilities(name: str, q, n: int, c: int, atol: float = 1e-3) -> torch.Tensor:
    """q as float32 [n,c] with finite, non-negative rows summing to 1, or a ValueError saying what is wrong.

    The shape and dtype are checked at once; the values with `semiearth.ops._checks.require_zero`:
    at once (one host-device sync), or, inside `deferred_checks()` (the trainer), when the caller
    reads its deferred checks."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor [N,C] of class probabilities, got {type(q).__name__}")
    if tuple(q.shape) != (n, c):
        raise ValueError(
            f"{name} returned q of shape {tuple(q.shape)} but {n} regions and {c} classes need ({n}, {c}); "
            "the classifier's classes must match the teacher's"
        )
    if not q.is_floating_point():
        raise TypeError(f"{name} must return floating-point probabilities, got {q.dtype}")
    q = q.float()
    if n == 0:
        return q
    finite = torch.isfinite(q).all(dim=1)
    negative = (q < 0).any(dim=1)
    sums = q.sum(dim=1)
    bad = ~finite | negative | ((sums - 1).abs() > atol)

    def error(count: int) -> ValueError:  # called only when a row failed (reading the values is then fine)
        if count < 0:  # under torch.compile: a message without the values
            return ValueError(f"{name} returned probabilities that are not finite, non-negative rows summing to 1")
        if not bool(finite.all()):
            return ValueError(f"{name} returned NaN or inf probabilities")
        if bool(negative.any()):
            return ValueError(f"{name} returned negative probabilities")
        rows = bad.nonzero().flatten()[:3]
        return ValueError(
            f"{name} returned rows that do not sum to 1 (rows {rows.tolist()}: sums {sums[rows].tolist()}); "
            "return softmax probabilities, not logits"
        )

    # At once, or deferred to the trainer's logging step inside semiearth.ops._checks.deferred_checks().
    require_zero(bad.sum(), error)
    return q


def as_triple(name: str, value) -> tuple[float, float, float]:
    t = torch.as_tensor(value, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a number or 3 per-channel values, got {value!r}")
    return tuple(float(x) for x in t)


def accepts_classes(classifier) -> bool:
    """Whether `classifier(crops, regions, classes=...)` is supported (its __call__ names `classes`)."""
    try:
        params = inspect.signature(classifier).parameters
    except (TypeError, ValueError):
        return False
    return "classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_classes(name: str, classes, n: int, c: int) -> torch.Tensor | None:
    """`classes` as bool [n,c] (None: all classes), or a ValueError."""
    if classes is None:
        return None
    if not isinstance(classes, torch.Tensor) or classes.dtype != torch.bool or tuple(classes.shape) != (n, c):
        shape = tuple(classes.shape) if isinstance(classes, torch.Tensor) else type(classes).__name__
        raise ValueError(f"{name}: classes must be a bool tensor [N,C] = ({n}, {c}), got {shape}")
    return classes


NEUTRAL = ("min", "mean", "max")


def fill_unscored(
    scores: torch.Tensor, classes: torch.Tensor | None, temperature: float = 1.0, neutral: str = "min"
) -> torch.Tensor:
    """q [N,C] from class scores [N,C] (log-likelihoods or logits) of which only `classes` [N,C] bool
    were computed (the others are ignored): softmax(score / temperature) over the scored classes, and
    every unscored class the neutral q: by default ("min") that of the region's *least* favoured
    scored class; "mean" / "max": the mean / max of the scored q. Rows renormalised.

    Rule bayes is p' proportional to p * q^trust, so only ratios of q matter: the scored classes'
    ratios are exactly those of full scoring (a class's score does not depend on which others are
    scored), and what restriction can change is only where the unscored classes land. "min" keeps an
    unscored class's teacher probability relative to the VLM's least favoured candidate: the VLM is
    taken to rank the classes the teacher all but rules out no higher than its worst candidate. A
    uniform q over the scored classes stays uniform over all (a bit-exact no-op, as before). Measured
    against full scoring on the real tiles with the noisy oracle (bench/purify_quality.py
    --topk-agreement --no-vlm --neutral min|mean|max, topk 3, prob_floor 0.05; max over tiles,
    accuracies 0.5/0.7/0.9, trust 1/0.5; re-run 2026-12-06, 13 s each on the CPU):
    label differs on <= 0.64 % of the purified pixels with "min", 0.81 % "mean", 2.1 % "max";
    mean |confidence difference| 0.010 / 0.026 / 0.067; admission at 0.95 differs on 2.1 % / 14 % /
    24 %. "max" (unscored = the VLM's favourite) looked neutral but keeps the unscored classes'
    full teacher mass in the normaliser, so confirmed pixels lose confidence that full scoring, where
    a confident VLM gives those classes ~0, would have given them. Rows with every class scored are
    plain softmax; a row with none scored is uniform."""
    z = scores.float() / float(temperature)
    if classes is None:
        return torch.softmax(z, dim=1)
    classes = classes.to(z.device)
    any_scored = classes.any(dim=1, keepdim=True)
    if neutral not in NEUTRAL:
        raise ValueError(f"fill_unscored: neutral must be one of {NEUTRAL}, got {neutral!r}")
    q = torch.softmax(torch.where(classes, z, float("-inf")), dim=1)
    if neutral == "max":
        fill = q.amax(dim=1, keepdim=True)
    elif neutral == "min":
        fill = torch.where(classes, q, float("inf")).amin(dim=1, keepdim=True)
    else:
        fill = q.sum(dim=1, keepdim=True) / classes.sum(dim=1, keepdim=True).clamp_min(1)
    q = torch.where(classes, q, fill)
    q = torch.where(any_scored, q, 1.0)  # nothing scored: uniform
    return q / q.sum(dim=1, keepdim=True)


def restrict_q(q: torch.Tensor, classes: torch.Tensor | None, neutral: str = "min") -> torch.Tensor:
    """What a classifier scoring only `classes` [N,C] would return, from its full-scoring q [N,C]
    (exact when each class's score does not depend on the others', as for the VLM and CLIP): q on the
    scored classes renormalised, the unscored ones at the neutral score of `fill_unscored`. Benches
    and tests use it to compare restricted and full scoring with any classifier (e.g. the noisy oracle)."""
    if classes is None:
        return q
    return fill_unscored(q.float().clamp_min(1e-30).log(), classes, neutral=neutral)


class UniformClassifier:
    """q = 1/C for every region: the no-information VLM (under rule "bayes" it changes nothing)."""

    def __init__(self, num_classes: int, input_size: int = 32, class_names=None):
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        self.class_names = list(class_names) if class_names is not None else None

    @classmethod
    def from_config(cls, ctx) -> "UniformClassifier":
        return cls(ctx.data.num_classes, class_names=ctx.data.class_names, **ctx.purify.classifier_options)

    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("UniformClassifier", crops, regions)
        return torch.full((crops.shape[0], self.num_classes), 1.0 / self.num_classes, device=crops.device)
