"""Augmentations: weak (scale, crop, flips), strong (colour jitter, grayscale, blur), CutMix.

Every random choice comes from an explicit `torch.Generator` seeded per sample (see sampler.py),
so a batch is a pure function of (seed, iteration, rank): resuming needs no loader state and the
number of loader workers does not change the results.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def weak_geometric(image, mask, crop: int, scale_range, ignore_index: int, g, hflip=True, rotate90=True):
    """Random rescale, pad to `crop` (image 0, mask ignore_index), random crop, flips, 90 deg turns.

    Returns image [3,crop,crop], mask [crop,crop] and pad [crop,crop] bool (True = padding).
    """
    h, w = image.shape[-2:]
    scale = _u(g, *scale_range)
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    pad = torch.zeros(nh, nw, dtype=torch.bool)
    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))
        mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
        pad = F.pad(pad, (0, pw, 0, ph), value=True)
    H, W = image.shape[-2:]
    y = int(torch.randint(0, H - crop + 1, (), generator=g))
    x = int(torch.randint(0, W - crop + 1, (), generator=g))
    image, mask, pad = (
        image[:, y : y + crop, x : x + crop],
        mask[y : y + crop, x : x + crop],
        pad[y : y + crop, x : x + crop],
    )
    if hflip and _u(g) < 0.5:
        image, mask, pad = image.flip(-1), mask.flip(-1), pad.flip(-1)
    if rotate90:
        k = int(torch.randint(0, 4, (), generator=g))
        if k:
            image, mask, pad = (t.rot90(k, dims=(-2, -1)) for t in (image, mask, pad))
    return image.contiguous(), mask.contiguous(), pad.contiguous()


def strong_photometric(image, g, jitter=0.5, grayscale_prob=0.2, blur_prob=0.5, hue_jitter=0.25):
    """UniMatch's strong view on RGB [0,1]: colour jitter (p=0.8), grayscale, Gaussian blur."""
    if jitter > 0 and _u(g) < 0.8:
        b, c, s = (_u(g, max(0.0, 1 - jitter), 1 + jitter) for _ in range(3))
        hue = _u(g, -hue_jitter, hue_jitter)
        order = torch.randperm(4, generator=g).tolist()
        for op in order:
            if op == 0:
                image = TF.adjust_brightness(image, b)
            elif op == 1:
                image = TF.adjust_contrast(image, c)
            elif op == 2:
                image = TF.adjust_saturation(image, s)
            else:
                image = TF.adjust_hue(image, hue)
    if _u(g) < grayscale_prob:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _u(g) < blur_prob:
        sigma = _u(g, 0.1, 2.0)
        k = 2 * math.ceil(2 * sigma) + 1
        image = TF.gaussian_blur(image, [k, k], [sigma, sigma])
    return image.clamp(0, 1)


def cutmix_box(size: int, g, p: float = 0.5, area=(0.02, 0.4), ratio=(0.3, 1 / 0.3)) -> torch.Tensor:
    """A [size,size] uint8 box mask (1 = take from the mix partner), empty with prob 1-p."""
    box = torch.zeros(size, size, dtype=torch.uint8)
    if _u(g) >= p:
        return box
    for _ in range(100):
        a = _u(g, *area) * size * size
        r = math.exp(_u(g, math.log(ratio[0]), math.log(ratio[1])))
        bw, bh = int(math.sqrt(a / r)), int(math.sqrt(a * r))
        x, y = int(torch.randint(0, size + 1, (), generator=g)), int(torch.randint(0, size + 1, (), generator=g))
        if 0 < bw and 0 < bh and x + bw <= size and y + bh <= size:
            box[y : y + bh, x : x + bw] = 1
            break
    return box


def apply_cutmix(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Paste, where box==1, the same region of the next sample in the batch (x [B,...], box [B,H,W])."""
    partner = x.roll(1, dims=0)
    m = box.bool()
    if x.dim() == 4:
        m = m[:, None].expand_as(x)
    return torch.where(m, partner, x)


def normalise(image: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image - m) / s


class TrainView(torch.utils.data.Dataset):
    """Wraps a dataset split for training; indexed by (index, aug_seed) pairs from the sampler.

    labelled: {image, mask}; unlabelled: {image_w, image_s, pad, box, gt_w} (weak view, strong view,
    padding mask, CutMix box, ground truth under the weak view's geometry), images normalised with
    the data config's mean/std. With strong_views=2 (UniMatch V2) also image_s2 and box2, drawn after
    the first view's, so the first view is the same whatever the count.
    gt_w [crop,crop] int64 is the unlabelled image's ground truth where the dataset has one (the
    item's `gt`, as synthetic scenes give, else its mask, as prepared datasets give with
    data.options.unlabeled_masks) and ignore_index elsewhere: an ordinary batch field that only the
    oracle upper bound reads (VLMPurifier hands it on).
    """

    def __init__(self, dataset, data_cfg, train_cfg, labelled: bool, strong_views: int = 1):
        self.dataset, self.data, self.train, self.labelled = dataset, data_cfg, train_cfg, labelled
        self.strong_views = strong_views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        item = self.dataset[index]
        d, t = self.data, self.train
        mask = item["mask"] if self.labelled else item.get("gt", item["mask"])
        image, mask, pad = weak_geometric(
            item["image"], mask, d.crop_size, t.scale_range, d.ignore_index, g, t.hflip, t.rotate90
        )
        if self.labelled:
            return {"image": normalise(image, d.mean, d.std), "mask": mask}
        out = {"image_w": normalise(image, d.mean, d.std), "pad": pad, "gt_w": mask}
        for k in range(self.strong_views):
            strong = strong_photometric(image, g, t.color_jitter, t.grayscale_prob, t.blur_prob, t.hue_jitter)
            suffix = str(k + 1) if k else ""
            out[f"image_s{suffix}"] = normalise(strong, d.mean, d.std)
            out[f"box{suffix}"] = cutmix_box(d.crop_size, g, t.cutmix_prob)
        return out
