"""VLMPurifier: the whole VLM-PP stage, images + teacher logits -> purified pseudo-labels + records.

stats   = purify_stats(logits)                 confidence, pseudo-label, LOW/BOUNDARY flags, cells
regions = select_regions(stats)                most uncertain (cell, class) segments, per-image budget
crops   = crop_batch(images, regions)          masked crops, normalised for the classifier
classes = candidate_classes(...)              classes carrying teacher probability per region
q       = classifier(crops, regions[, classes]) class probabilities per region
label, conf = purify_apply(logits, stats, ...) fuse q into the candidate pixels of each segment
"""

import math
from dataclasses import dataclass, field

import torch

from semiearth import bounds
from semiearth.ops import PurifyStats, backends, crop_batch, purify_apply, purify_apply_probs, purify_stats
from semiearth.ops._extension import BACKENDS
from semiearth.ops._validate import check_bound, check_int, check_unit_interval
from semiearth.ops.purify_apply import RULES, pixel_regions
from semiearth.purify.classifiers._base import accepts_classes, as_triple, check_probabilities
from semiearth.purify.regions import crop_scale_shift, select_regions
from semiearth.timing import StageTimer

STAGES = ("stats", "select", "crop", "classify", "apply")


# Columns of a record table (record_table: float64 [N, TABLE_COLUMNS + 2k], k = min(3, C)), after
# which come the VLM's top-k classes and their probabilities.
IMAGE, CLASS, PIXELS, SUM_CONF, SUM_NEW, RELABELLED, CONFIRMED = 0, 5, 8, 9, 10, 11, 12
BOX, CELL = slice(1, 5), slice(6, 8)
TABLE_COLUMNS = 13


@dataclass(eq=False)
class PurifyOutput:
    """Result of VLMPurifier.__call__.

    label [B,H,W] int64 and conf [B,H,W] float32: purified pseudo-labels and confidences.
    num_regions: N, the regions sent to the classifier. stats, regions [N,6], seg_table and q [N,C]
    are kept for rendering and for `VLMPurifier.purified_probs`.

    Read on the host only when asked for (each is one device-to-host copy, then cached):
    records (one dict per region, see `records_from_rows`), relabelled / confirmed (candidate
    pixels whose class changed / whose class was kept and whose confidence now reaches
    `admit_thresh`), counts, timings (seconds per stage). Without a host copy: `tallies` (int64
    [2] on the device: relabelled, confirmed) and `record_table()` (the records' values, float64
    [N, F] on the device), which the trainer accumulates and reads at its logging steps.
    """

    label: torch.Tensor
    conf: torch.Tensor
    num_regions: int = 0
    stats: PurifyStats | None = None
    regions: torch.Tensor | None = None
    q: torch.Tensor | None = None
    class_names: list | None = None
    seg_table: torch.Tensor | None = None
    tallies: torch.Tensor | None = None
    timer: StageTimer | None = field(default=None, repr=False)
    admit_thresh: float = 0.95
    classes: torch.Tensor | None = None  # [N,C] bool: the classes the classifier was asked to score
    _table: torch.Tensor | None = field(default=None, repr=False)
    _records: list | None = field(default=None, repr=False)
    _tallies: list | None = field(default=None, repr=False)

    @property
    def timings(self) -> dict:
        return dict(self.timer.total) if self.timer is not None else {}

    def _host_tallies(self) -> list:
        if self._tallies is None:
            self._tallies = [0, 0] if self.tallies is None else self.tallies.tolist()
        return self._tallies

    @property
    def relabelled(self) -> int:
        return int(self._host_tallies()[0])

    @property
    def confirmed(self) -> int:
        return int(self._host_tallies()[1])

    @property
    def counts(self) -> dict:
        return {"regions": self.num_regions, "relabelled": self.relabelled, "confirmed": self.confirmed}

    def record_table(self) -> torch.Tensor:
        """The records' values, float64 [N, TABLE_COLUMNS + 2k] on the device (no host copy)."""
        if self._table is None:
            self._table = record_table(self.stats, self.seg_table, self.regions, self.q, self.label, self.conf,
                                       self.admit_thresh)  # fmt: skip
        return self._table

    @property
    def records(self) -> list:
        if self._records is None:
            table = self.record_table() if self.num_regions else None
            rows = table.tolist() if table is not None else []
            self._records = records_from_rows(rows, self.class_names, self.q.shape[1] if self.q is not None else 0)
        return self._records


def record_table(stats, seg_table, regions, q, label, conf, admit_thresh: float) -> torch.Tensor:
    """Per region (float64 [N, TABLE_COLUMNS + 2k], on the device, without a host sync): the region's
    row of `regions`, its cell (row, column), its candidate pixels and their summed teacher and
    purified confidences, how many were relabelled / confirmed, the VLM's top-k classes and
    probabilities (k = min(3, C))."""
    n, c = q.shape
    dev = stats.label.device
    k = min(3, c)
    if n == 0:
        return torch.zeros((0, TABLE_COLUMNS + 2 * k), dtype=torch.float64, device=dev)
    # Every pixel, those outside a selected segment's candidates in the spare slot n.
    region, hit = pixel_regions(stats, seg_table)
    slot = torch.where(hit, region.long(), n).flatten()
    changed = label != stats.label
    confirmed = ~changed & (conf >= admit_thresh)
    sums = torch.zeros((5, n + 1), dtype=torch.float64, device=dev)
    for row, values in enumerate((hit, stats.conf, conf, changed, confirmed)):
        sums[row].index_add_(0, slot, values.flatten().double())
    # The cell of each region: its (cy, cx) in seg_table, where it is listed once.
    b, hc, wc, _ = seg_table.shape
    at = seg_table.reshape(-1).long()
    cell_code = torch.arange(hc * wc, device=dev)[None, :, None].expand(b, hc * wc, c).reshape(-1)
    code = torch.zeros(n + 1, dtype=torch.long, device=dev).scatter_reduce(
        0, torch.where(at >= 0, at, n), cell_code, "amax"
    )[:n]
    topp, topi = q.topk(k, dim=1)
    return torch.cat(
        [
            regions.double(),
            torch.stack([code // wc, code % wc], 1).double(),
            sums[:, :n].T,
            topi.double(),
            topp.double(),
        ],
        dim=1,
    )


def records_from_rows(rows: list, class_names, c: int) -> list:
    """The records (one dict per region) of a record table read on the host (`table.tolist()`): image,
    box, cell, teacher class + mean confidence over the segment's candidate pixels, VLM top-3 (class,
    name, probability), pixels, relabelled, confirmed, and the segment's mean purified confidence."""
    k = min(3, c)
    names = class_names
    out = []
    for row in rows:
        cls = int(row[CLASS])
        px = int(row[PIXELS])
        topi = [int(v) for v in row[TABLE_COLUMNS : TABLE_COLUMNS + k]]
        topp = row[TABLE_COLUMNS + k : TABLE_COLUMNS + 2 * k]
        out.append(
            {
                "image": int(row[IMAGE]),
                "box": [round(v, 2) for v in row[BOX]],
                "cell": [int(v) for v in row[CELL]],  # (row, column) of the cell
                "teacher_class": cls,
                "teacher_name": names[cls] if names else None,
                "teacher_conf": round(row[SUM_CONF] / px, 4) if px else None,
                "vlm_top3": [
                    {"class": topi[j], "name": names[topi[j]] if names else None, "prob": round(topp[j], 4)}
                    for j in range(k)
                ],
                "pixels": px,
                "relabelled": int(row[RELABELLED]),
                "confirmed": int(row[CONFIRMED]),
                "purified_conf": round(row[SUM_NEW] / px, 4) if px else None,
            }
        )
    return out


class VLMPurifier:
    """images [B,3,H,W] + teacher logits [B,C,H,W] -> PurifyOutput.

    images: float32 normalised from RGB in [0, 1] as (x - image_mean) / image_std (what the trainer
    feeds the teacher), or uint8 RGB. crop_batch undoes that and applies the classifier's mean/std in
    the same pass. Boxes are in the logits' pixel frame; images and logits must have the same size.
    `admit_thresh` (the loss threshold, 0.95) only decides what a record counts as "confirmed".
    topk / prob_floor ("score only what can change"): a classifier that takes `classes` (see
    classifiers/_base.py) is asked, per region, only for the segment's top-`topk` teacher classes (by
    mean softmax over its candidate pixels), every class whose mean is above `prob_floor`, and the
    segment's pseudo-label; topk 0 = all classes (no mask). None: the classifier's own `topk` /
    `prob_floor` attributes (set by from_config from purify.topk / purify.prob_floor), else 0 / 0.0.
    backend: "auto" or a backend name (semiearth.ops.OP_BACKENDS); each op runs it where the op has
    it and "auto" where it does not (crop_batch has no "triton", purify_stats no "cuda").
    """

    def __init__(
        self,
        classifier,
        num_classes: int,
        low_thresh: float = 0.7,
        cell: int = 32,
        rule: str = "bayes",
        trust: float = 1.0,
        max_regions: int = 16,
        context: float = 2.0,
        radius: int = 1,
        tau: float = 0.7,
        image_mean=(0.0, 0.0, 0.0),
        image_std=(1.0, 1.0, 1.0),
        backend: str = "auto",
        min_pixels: int | None = None,
        boundary_weight: float = 1.0,
        admit_thresh: float = 0.95,
        mask_crops: bool = True,
        topk: int | None = None,
        prob_floor: float | None = None,
    ):
        if not callable(classifier):
            raise TypeError(f"VLMPurifier: classifier must be callable (crops, regions) -> q, got {type(classifier)}")
        for attr in ("input_size", "mean", "std"):
            if not hasattr(classifier, attr):
                raise TypeError(f"VLMPurifier: classifier {type(classifier).__name__} lacks attribute {attr!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"VLMPurifier: num_classes must be an integer >= 1, got {num_classes!r}")
        cls_c = getattr(classifier, "num_classes", None)
        if cls_c is not None and cls_c != num_classes:
            raise ValueError(
                f"VLMPurifier: classifier {type(classifier).__name__} has {cls_c} classes but num_classes is "
                f"{num_classes}; give it the teacher's classes in the teacher's order"
            )
        if rule not in RULES:
            raise ValueError(f"VLMPurifier: rule must be one of {sorted(RULES)}, got {rule!r}")
        if not isinstance(trust, (int, float)) or not math.isfinite(trust) or trust < 0:
            raise ValueError(f"VLMPurifier: trust must be a finite number >= 0, got {trust!r}")
        for name, v in (("low_thresh", low_thresh), ("tau", tau), ("admit_thresh", admit_thresh)):
            check_unit_interval("VLMPurifier", name, v)
        for name, v, bound in (("cell", cell, bounds.CELL), ("radius", radius, bounds.RADIUS)):
            check_bound("VLMPurifier", name, v, bound, integer=True)
        check_int("VLMPurifier", "max_regions", max_regions, 0)  # 0: no regions (the config asks for >= 1)
        if backend not in BACKENDS:
            raise ValueError(f"VLMPurifier: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.classifier = classifier
        self.num_classes = num_classes
        self.low_thresh, self.cell, self.rule, self.trust = float(low_thresh), cell, rule, float(trust)
        self.max_regions, self.context, self.radius, self.tau = max_regions, float(context), radius, float(tau)
        self.image_mean = as_triple("image_mean", image_mean)
        self.image_std = as_triple("image_std", image_std)
        if min(self.image_std) <= 0:
            raise ValueError(f"VLMPurifier: image_std must be > 0, got {image_std!r}")
        self.backend = backend
        self.min_pixels = min_pixels
        self.boundary_weight = float(boundary_weight)
        self.admit_thresh = float(admit_thresh)
        self.mask_crops = bool(mask_crops)
        topk = getattr(classifier, "topk", 0) if topk is None else topk
        prob_floor = getattr(classifier, "prob_floor", 0.0) if prob_floor is None else prob_floor
        check_bound("VLMPurifier", "topk", topk, bounds.TOPK, integer=True)
        check_bound("VLMPurifier", "prob_floor", prob_floor, bounds.PROB_FLOOR)
        self.topk, self.prob_floor = int(topk), float(prob_floor)
        self.accepts_classes = accepts_classes(classifier)
        self._scale_shift = {}  # crop_batch scale/shift per (images dtype, classifier mean, std)

    @property
    def class_names(self):
        return getattr(self.classifier, "class_names", None)

    def backend_of(self, op: str) -> str:
        """`backend` where `op` has it, else "auto"."""
        return self.backend if self.backend in backends(op) else "auto"

    def _check(self, images, logits, ignore):
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"VLMPurifier: logits must be a tensor [B,C,H,W], got {shape}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"VLMPurifier: logits have {logits.shape[1]} classes but the purifier/classifier has {self.num_classes}"
            )
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"VLMPurifier: images must be a tensor [B,3,H,W], got {shape}")
        b, _, h, w = logits.shape
        if images.shape[0] != b or tuple(images.shape[2:]) != (h, w):
            raise ValueError(
                f"VLMPurifier: images {tuple(images.shape)} do not match logits {tuple(logits.shape)} "
                "(same batch and H, W needed; upsample the logits to the image size first)"
            )
        if images.dtype not in (torch.float32, torch.uint8):
            raise TypeError(f"VLMPurifier: images must be float32 (normalised) or uint8, got {images.dtype}")
        if images.device != logits.device:
            raise ValueError(f"VLMPurifier: images on {images.device} but logits on {logits.device}")

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        logits: torch.Tensor,
        ignore: torch.Tensor | None = None,
        gt: torch.Tensor | None = None,
    ) -> PurifyOutput:
        """Purify the pseudo-labels of `logits` [B,C,H,W] for `images` [B,3,H,W]; `ignore` [B,H,W] bool
        (padding, no-data). `gt` [B,H,W] int64: the batch's ground truth, an ordinary batch field that
        reaches only classifiers that read one (the oracle upper bound: its `set_gt`; an oracle built with
        its gt keeps that one when `gt` is None)."""
        self._check(images, logits, ignore)
        set_gt = getattr(self.classifier, "set_gt", None)
        if gt is not None and callable(set_gt):
            set_gt(gt)
        timer = StageTimer(logits.device, STAGES)
        with timer("stats"):
            stats = purify_stats(
                logits, self.low_thresh, self.radius, self.cell, ignore, backend=self.backend_of("purify_stats")
            )
        with timer("select"):
            regions, seg_table = select_regions(
                stats, self.max_regions, self.min_pixels, self.context, self.boundary_weight
            )
        n = regions.shape[0]
        if n == 0:
            q = torch.zeros((0, self.num_classes), dtype=torch.float32, device=logits.device)
            tallies = torch.zeros(2, dtype=torch.int64, device=logits.device)
            return PurifyOutput(stats.label, stats.conf, 0, stats, regions, q, self.class_names, seg_table, tallies,
                                timer, self.admit_thresh)  # fmt: skip

        with timer("crop"):
            scale, shift = self.scale_shift(images)
            crops = crop_batch(
                images,
                regions,
                int(self.classifier.input_size),
                stats.label if self.mask_crops else None,
                scale,
                shift,
                mask=self.mask_crops,
                backend=self.backend_of("crop_batch"),
            )
        with timer("classify"):
            observe = getattr(self.classifier, "observe", None)  # optional protocol hook (_base.py)
            if callable(observe):
                observe(stats, regions, seg_table)
            classes = None
            if self.accepts_classes and 0 < self.topk < self.num_classes:
                classes = candidate_classes(logits, stats, seg_table, regions, self.topk, self.prob_floor)
                q = self.classifier(crops, regions, classes=classes)
            else:
                q = self.classifier(crops, regions)
            name = f"classifier {type(self.classifier).__name__}"
            q = check_probabilities(name, q, n, self.num_classes)
            if q.device != logits.device:
                q = q.to(logits.device)
        with timer("apply"):
            label, conf = purify_apply(
                logits, stats, seg_table, q, self.rule, self.trust, self.tau, backend=self.backend_of("purify_apply")
            )
        return PurifyOutput(label, conf, n, stats, regions, q, self.class_names, seg_table,
                            self.tallies(stats, seg_table, label, conf), timer, self.admit_thresh,
                            classes)  # fmt: skip

    def scale_shift(self, images: torch.Tensor):
        """crop_batch's scale/shift for `images` (their dtype and the classifier's mean/std), computed
        on the host once per dtype and normalisation."""
        key = (images.dtype, _hashable(self.classifier.mean), _hashable(self.classifier.std))
        if None in key:
            return crop_scale_shift(images, self.image_mean, self.image_std, self.classifier.mean, self.classifier.std)
        if key not in self._scale_shift:
            self._scale_shift[key] = crop_scale_shift(
                images, self.image_mean, self.image_std, self.classifier.mean, self.classifier.std
            )
        return self._scale_shift[key]

    def tallies(self, stats, seg_table, label, conf) -> torch.Tensor:
        """int64 [2] on the device: the candidate pixels of the selected segments that were relabelled,
        and those kept whose confidence reaches admit_thresh (no host sync)."""
        _, hit = pixel_regions(stats, seg_table)
        same = label == stats.label
        return torch.stack([(hit & ~same).sum(), (hit & same & (conf >= self.admit_thresh)).sum()])

    def purified_probs(self, logits: torch.Tensor, out: PurifyOutput) -> torch.Tensor:
        """The purified class probabilities [B,C,H,W] of a call's output (whose argmax and max are
        out.label and out.conf), for methods with soft targets; computed only when asked for."""
        return purify_apply_probs(logits, out.stats, out.seg_table, out.q, self.rule, self.trust, self.tau)


def region_mean_probs(logits: torch.Tensor, stats, seg_table: torch.Tensor, n: int) -> torch.Tensor:
    """[N,C] float32: each region's mean teacher softmax over its segment's candidate pixels (the
    pixels purify_apply may change); a region without candidates gets its one-hot class."""
    c = logits.shape[1]
    region, hit = pixel_regions(stats, seg_table)
    slot = torch.where(hit, region.long(), n).flatten()
    probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    sums = torch.zeros((n + 1, c), dtype=torch.float32, device=logits.device).index_add_(0, slot, probs)
    count = torch.zeros(n + 1, dtype=torch.float32, device=logits.device).index_add_(0, slot, hit.flatten().float())
    return sums[:n] / count[:n, None].clamp_min(1)


def candidate_classes(logits, stats, seg_table, regions, topk: int, prob_floor: float) -> torch.Tensor:
    """[N,C] bool: the classes worth scoring per region: the top-`topk` of its mean teacher
    probability (region_mean_probs), those whose mean exceeds `prob_floor` (when > 0), and the
    region's own class (regions[:, 5]). topk 0 (or >= C): every class."""
    n, c = regions.shape[0], logits.shape[1]
    if topk <= 0 or topk >= c:
        return torch.ones((n, c), dtype=torch.bool, device=logits.device)
    mean = region_mean_probs(logits, stats, seg_table, n)
    mask = torch.zeros((n, c), dtype=torch.bool, device=logits.device)
    mask.scatter_(1, mean.topk(topk, dim=1).indices, True)
    if prob_floor > 0:
        mask |= mean > prob_floor
    mask[torch.arange(n, device=logits.device), regions[:, 5].long().to(logits.device)] = True
    return mask


def _hashable(values):
    """A tuple of floats for a mean/std given as a tuple or list of numbers, else None (not cached)."""
    if isinstance(values, (tuple, list)) and all(isinstance(v, (int, float)) for v in values):
        return tuple(float(v) for v in values)
    if isinstance(values, (int, float)):
        return float(values)
    return None
