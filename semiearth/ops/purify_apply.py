"""purify_apply: fuse the VLM's class probabilities into the teacher's pseudo-labels, in one pass.

A candidate pixel (LOW, not IGNORED) whose (cell, pseudo-label) segment was sent to the VLM as
region r (seg_table[b, y // cell, x // cell, label] = r >= 0) is updated from q[r]:

- rule "bayes": p'_i proportional to p_i * q_r,i ** trust (p = teacher softmax). A uniform q changes
  nothing, agreement raises the confidence (VLM-confirmed pixels can pass the loss threshold),
  confident disagreement relabels.
- rule "paper": the SemiEarth authors' formula, for reproduction: the VLM's class k = argmax q_r is
  scored as a softmax over per-class maps (0.95 for k, 0 elsewhere), the pixel takes class k and
  confidence c' = a * c + (1 - a) * q_k with a = c / tau. As in the reference code c' < tau, so at
  a 0.95 loss threshold these pixels never reach the loss.

Every other pixel keeps its label and confidence. Inputs are never modified.
"""

import math

import torch

from semiearth.ops._checks import require
from semiearth.ops._extension import call, resolve
from semiearth.ops._validate import check_int, check_logits, check_same_device, check_tensor, check_unit_interval
from semiearth.ops.purify_stats import IGNORED, LOW, PurifyStats

OP = "purify_apply"
RULES = {"bayes": 0, "paper": 1}
PAPER_DETECTION_SCORE = 0.95


def purify_apply(
    logits: torch.Tensor,
    stats: PurifyStats,
    seg_table: torch.Tensor,
    q: torch.Tensor,
    rule: str = "bayes",
    trust: float = 1.0,
    tau: float = 0.7,
    backend: str = "auto",
):
    """Purified (label [B,H,W] int64, conf [B,H,W] float32) from logits [B,C,H,W], stats, q [N,C].

    backend: "auto" (Triton on CUDA, C++ on CPU), "torch", "cpp" or "triton".
    """
    check_inputs(logits, stats, seg_table, q, rule, trust, tau)
    weights = rule_weights(q, rule, trust)
    if rule == "bayes":
        seg_table = drop_neutral_regions(seg_table, weights)
    backend = resolve(OP, backend, logits.device)
    if backend == "torch":
        return purify_apply_reference(logits, stats, seg_table, weights, RULES[rule], tau)
    if backend == "cpp":
        logits = logits.contiguous()
    conf, label, flags = (t.contiguous() for t in stats[:3])
    return call(OP, backend, logits, label, conf, flags, seg_table.contiguous(), weights, stats.cell, RULES[rule],
                float(tau))  # fmt: skip


def rule_weights(q: torch.Tensor, rule: str, trust: float) -> torch.Tensor:
    """Per-region weights [N,C] float32 that the kernels consume.

    bayes: log-weights trust * (log q - max log q), exactly 0 for a uniform q so that the fused
    logits equal the teacher's bit for bit. paper: the softmax over 0.95/0 detection maps.
    """
    q = q.float()
    if rule == "bayes":
        logq = q.clamp_min(1e-30).log()
        return (trust * (logq - logq.amax(dim=1, keepdim=True))).contiguous()
    c = q.shape[1]
    top = q.argmax(dim=1)
    maps = torch.zeros_like(q)
    maps[torch.arange(q.shape[0], device=q.device), top] = PAPER_DETECTION_SCORE
    return torch.softmax(maps, dim=1).contiguous() if c > 0 else maps


def drop_neutral_regions(seg_table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """seg_table [B,Hc,Wc,C] with -1 for the regions whose bayes weights are all 0 (a uniform q).

    Their pixels then keep purify_stats' label and confidence bit for bit on every backend, instead
    of a recomputed softmax whose summation order differs between devices.
    """
    if weights.shape[0] == 0:
        return seg_table
    active = (weights != 0).any(dim=1)
    region = seg_table.clamp(0, weights.shape[0] - 1).long()  # in range even before a deferred check
    return torch.where((seg_table >= 0) & active[region], seg_table, -1)


def check_inputs(logits, stats, seg_table, q, rule, trust, tau) -> None:
    check_logits(OP, logits)
    check_stats(logits, stats)
    b, c, h, w = logits.shape
    hc, wc = -(-h // stats.cell), -(-w // stats.cell)
    check_tensor(OP, "seg_table", seg_table, 4, (torch.int32,), "[B,Hc,Wc,C] int32")
    if tuple(seg_table.shape) != (b, hc, wc, c):
        raise ValueError(
            f"{OP}: seg_table must have shape {(b, hc, wc, c)} (cell {stats.cell}), got {tuple(seg_table.shape)}"
        )
    check_tensor(OP, "q", q, 2, (torch.float32, torch.float16, torch.bfloat16, torch.float64), "[N,C] float")
    if q.shape[1] != c:
        raise ValueError(
            f"{OP}: q has {q.shape[1]} classes but logits have {c}; the classifier's classes must match the model's"
        )
    n = q.shape[0]
    require(torch.isfinite(q) & (q >= 0), lambda k: ValueError(
        f"{OP}: q must hold finite, non-negative class probabilities ({k} entries are not)"))  # fmt: skip
    require(seg_table < n, lambda k: ValueError(
        f"{OP}: seg_table refers to regions >= {n} at {k} entries but q has only {n} rows"))  # fmt: skip
    if rule not in RULES:
        raise ValueError(f"{OP}: rule must be one of {sorted(RULES)}, got {rule!r}")
    if not isinstance(trust, (int, float)) or not math.isfinite(trust) or trust < 0:
        raise ValueError(f"{OP}: trust must be a finite number >= 0, got {trust!r}")
    check_unit_interval(OP, "tau", tau)
    check_same_device(OP, "logits", logits, seg_table=seg_table, q=q, label=stats.label)


def check_stats(logits: torch.Tensor, stats) -> None:
    """stats: a PurifyStats whose label/conf/flags match logits [B,C,H,W], with labels in [0, C)."""
    b, c, h, w = logits.shape
    if not isinstance(stats, PurifyStats):
        raise TypeError(f"{OP}: stats must be the PurifyStats that purify_stats returned, got {type(stats).__name__}")
    for name, dtype in (("label", torch.int64), ("conf", torch.float32), ("flags", torch.uint8)):
        t = getattr(stats, name)
        check_tensor(OP, f"stats.{name}", t, 3, (dtype,), f"[B,H,W] {str(dtype).replace('torch.', '')}")
        if tuple(t.shape) != (b, h, w):
            raise ValueError(f"{OP}: stats are for shape {tuple(t.shape)} but logits are {(b, h, w)}")
    check_int(OP, "stats.cell", stats.cell, 1)
    require((stats.label >= 0) & (stats.label < c), lambda n: ValueError(
        f"{OP}: stats.label holds {n} label(s) outside [0, {c}) but logits have {c} classes; pass the "
        "PurifyStats that purify_stats returned for these logits"))  # fmt: skip


def purify_apply_reference(logits, stats: PurifyStats, seg_table, weights, rule: int, tau: float = 0.7):
    """Plain-torch specification of purify_apply; `weights` come from rule_weights()."""
    check_stats(logits, stats)
    if weights.shape[0] == 0:
        return stats.label.clone(), stats.conf.clone()
    region, hit = pixel_regions(stats, seg_table)
    wpix = weights[region.clamp(min=0).long()].permute(0, 3, 1, 2)  # [B,C,H,W]
    if rule == RULES["bayes"]:
        z = logits.float() + wpix
        new_label = z.argmax(dim=1)
        new_conf = torch.softmax(z, dim=1).amax(dim=1)
    else:
        qk, k = wpix.max(dim=1)
        a = (stats.conf / tau).clamp(0.0, 1.0)
        new_label = k
        new_conf = a * stats.conf + (1 - a) * qk
    label = torch.where(hit, new_label, stats.label)
    conf = torch.where(hit, new_conf, stats.conf)
    return label, conf


def pixel_regions(stats: PurifyStats, seg_table: torch.Tensor):
    """(region [B,H,W] int32: each pixel's (cell, pseudo-label) segment in seg_table, -1 for none;
    hit [B,H,W] bool: the candidate pixels (LOW, not IGNORED) of a selected segment)."""
    b, h, w = stats.label.shape
    dev = stats.label.device
    yy = torch.arange(h, device=dev) // stats.cell
    xx = torch.arange(w, device=dev) // stats.cell
    bb = torch.arange(b, device=dev)
    region = seg_table[bb[:, None, None], yy[None, :, None], xx[None, None, :], stats.label]
    cand = (stats.flags & (LOW | IGNORED)) == LOW
    return region, cand & (region >= 0)


def purify_apply_probs(logits, stats: PurifyStats, seg_table, q, rule: str = "bayes", trust: float = 1.0,
                       tau: float = 0.7) -> torch.Tensor:  # fmt: skip
    """Purified class probabilities [B,C,H,W] float32, for methods with soft targets (plain torch).

    The distribution whose argmax and max are what purify_apply returns: rule "bayes":
    softmax(logits + trust * log q_r) at the pixels purify_apply updates; rule "paper": the VLM's
    class k gets the purified confidence c' and the other classes share 1 - c' equally (c' >= 1/C,
    being a mix of the teacher's max and the detection softmax, so k stays the top class). Every
    other pixel keeps the teacher's softmax.
    """
    check_inputs(logits, stats, seg_table, q, rule, trust, tau)
    p = logits.float().softmax(1)
    if q.shape[0] == 0:
        return p
    weights = rule_weights(q, rule, trust)
    if rule == "bayes":
        seg_table = drop_neutral_regions(seg_table, weights)
    region, hit = pixel_regions(stats, seg_table)
    wpix = weights[region.clamp(min=0).long()].permute(0, 3, 1, 2)
    if rule == "bayes":
        new = torch.softmax(logits.float() + wpix, dim=1)
    else:
        qk, k = wpix.max(dim=1, keepdim=True)
        a = (stats.conf / tau).clamp(0.0, 1.0)[:, None]
        conf = a * stats.conf[:, None] + (1 - a) * qk
        top = torch.zeros_like(p).scatter_(1, k, 1.0).bool()
        new = torch.where(top, conf, (1 - conf) / max(p.shape[1] - 1, 1))
    return torch.where(hit[:, None], new, p)
