"""A documented noisy-teacher model: ground truth -> realistic teacher logits, for quality benchmarks.

No trained teacher is available offline, so the quality bench and the tests turn ground truth into
the logits of a plausible teacher, seeded and with every ingredient a named parameter:

1. boundary error: the label map is warped by a smooth random displacement field (amplitude
   `warp_px`, correlation length `warp_scale`), so predicted boundaries wander off the true ones;
2. boundary blur: the one-hot scores of the warped map are box-blurred (`blur_px`), so confidence
   drops towards every class boundary;
3. wrong-class blobs: `blobs_per_mpix` blobs per megapixel (radius `blob_radius`) add a smooth score
   for a wrong class; their strength is drawn in `blob_strength`, so most flip the label at moderate
   confidence and a fraction `confident_blob_frac` is confidently wrong (a teacher's confirmation bias);
4. confidence spread: logits = scale * scores + noise, with a smooth log-normal scale field
   (median `scale`, spread `scale_sigma`) and smoothed pixel noise (`noise`), so some areas are
   confident and others hesitant, like a trained teacher's.

Ignored ground-truth pixels (`ignore_index`) take the class of the nearest labelled area after
blurring (they are excluded from every metric anyway).
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoisyTeacher:
    warp_px: float = 6.0
    warp_scale: int = 48
    blur_px: int = 9
    blobs_per_mpix: float = 40.0
    blob_radius: tuple = (10.0, 40.0)
    blob_strength: tuple = (0.5, 1.6)
    confident_blob_frac: float = 0.2
    scale: float = 7.0
    scale_sigma: float = 0.45
    scale_corr: int = 64
    noise: float = 0.8
    ignore_index: int = 255

    def as_dict(self) -> dict:
        return asdict(self)

    def __call__(self, gt: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
        """gt [H,W] or [B,H,W] int64 -> logits [C,H,W] or [B,C,H,W] float32 (CPU, deterministic)."""
        if gt.dim() == 3:
            return torch.stack([self(g, num_classes, seed + 1000 * i) for i, g in enumerate(gt)])
        return noisy_teacher_logits(gt, num_classes, seed, self)


def smooth_field(shape, corr: int, g: torch.Generator, channels: int = 1) -> torch.Tensor:
    """[channels,H,W] smooth noise with unit-ish std and correlation length ~corr pixels."""
    h, w = shape
    gh, gw = max(2, -(-h // corr) + 1), max(2, -(-w // corr) + 1)
    coarse = torch.randn(1, channels, gh, gw, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """[C,H,W] box blur of odd width k (replicate padding)."""
    if k <= 1:
        return x
    pad = k // 2
    x = F.pad(x[None], (pad, pad, pad, pad), mode="replicate")
    return F.avg_pool2d(x, k, stride=1)[0]


def noisy_teacher_logits(gt: torch.Tensor, num_classes: int, seed: int = 0, model: NoisyTeacher | None = None):
    m = model or NoisyTeacher()
    g = torch.Generator().manual_seed(seed)
    h, w = gt.shape
    c = num_classes
    gt = gt.cpu().long()
    valid = (gt != m.ignore_index) & (gt >= 0) & (gt < c)
    onehot = F.one_hot(gt.clamp(0, c - 1), c).permute(2, 0, 1).float() * valid
    # Ignored pixels: fill with the blurred label distribution of their neighbourhood.
    if not bool(valid.all()):
        fill = box_blur(onehot, 31)
        fill = F.one_hot(fill.argmax(0), c).permute(2, 0, 1).float()
        onehot = torch.where(valid[None], onehot, fill)
    # 1. warp
    disp = smooth_field((h, w), m.warp_scale, g, 2) * m.warp_px
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    gx = (xs + disp[0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + disp[1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None]
    warped = F.grid_sample(onehot[None], grid, mode="nearest", padding_mode="border", align_corners=True)[0]
    # 2. blur
    scores = box_blur(warped, m.blur_px)
    # 3. wrong-class blobs
    nblobs = int(round(m.blobs_per_mpix * h * w / 1e6))
    if nblobs and c > 1:
        cy = torch.rand(nblobs, generator=g) * h
        cx = torch.rand(nblobs, generator=g) * w
        rad = m.blob_radius[0] + torch.rand(nblobs, generator=g) * (m.blob_radius[1] - m.blob_radius[0])
        strength = m.blob_strength[0] + torch.rand(nblobs, generator=g) * (m.blob_strength[1] - m.blob_strength[0])
        confident = torch.rand(nblobs, generator=g) < m.confident_blob_frac
        strength = torch.where(confident, strength + 1.5, strength)
        shift = torch.randint(1, c, (nblobs,), generator=g)
        for i in range(nblobs):
            y, x = int(cy[i].clamp(0, h - 1)), int(cx[i].clamp(0, w - 1))
            wrong = (int(warped[:, y, x].argmax()) + int(shift[i])) % c
            r = float(rad[i])
            y0, y1 = max(0, int(cy[i] - 2 * r)), min(h, int(cy[i] + 2 * r) + 1)
            x0, x1 = max(0, int(cx[i] - 2 * r)), min(w, int(cx[i] + 2 * r) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            d2 = (ys[y0:y1, x0:x1] - cy[i]) ** 2 + (xs[y0:y1, x0:x1] - cx[i]) ** 2
            bump = torch.exp(-d2 / (2 * (r / 1.5) ** 2))
            scores[wrong, y0:y1, x0:x1] += float(strength[i]) * bump
    # 4. confidence spread
    scale = m.scale * torch.exp(m.scale_sigma * smooth_field((h, w), m.scale_corr, g))
    noise = box_blur(torch.randn(c, h, w, generator=g), 3) * m.noise * 3.0
    return (scale * scores + noise).float()
