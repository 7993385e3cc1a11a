"""VLM-PP in a training loop that is not SemiEarth's: a plain FixMatch-EMA loop with a torchvision
model, which calls the purifier between its teacher and its loss. Only `semiearth.purify` is used;
the synthetic scenes at the bottom stand in for your own data.

    python examples/vlmpp_in_your_loop.py --iters 50
"""

import argparse
import copy

import torch
import torch.nn.functional as F
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from semiearth.purify import PrototypeClassifier, VLMPurifier

MEAN, STD, C = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 6


def normalise(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def strong(x, g):
    """Colour jitter and noise on RGB in [0, 1] (FixMatch's strong view, kept short)."""
    gain = 0.7 + 0.6 * torch.rand(x.shape[0], 3, 1, 1, generator=g)
    return (x * gain + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def train(model, labelled, unlabelled, iters, batch, seed, threshold=0.95):
    """labelled: (images [N,3,H,W] in [0,1], masks [N,H,W]); unlabelled: images [M,3,H,W]."""
    g = torch.Generator().manual_seed(seed)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # VLM-PP: a region classifier (here few-shot prototypes on an offline ImageNet encoder; a CLIP or
    # VLM from semiearth.purify works the same) and the purifier, told how the images are normalised.
    clf = PrototypeClassifier("efficientnet_lite0", num_classes=C, input_size=32)
    purifier = VLMPurifier(clf, C, cell=16, max_regions=4, image_mean=MEAN, image_std=STD)
    clf.fit(normalise(labelled[0]), labelled[1], image_mean=MEAN, image_std=STD, purifier=purifier, cell=16)
    for it in range(iters):
        i = torch.randint(0, len(labelled[0]), (batch,), generator=g)
        j = torch.randint(0, len(unlabelled), (batch,), generator=g)
        img_x, mask_x, img_u = normalise(labelled[0][i]), labelled[1][i], unlabelled[j]
        with torch.no_grad():
            logits_w = teacher(normalise(img_u))["out"]
        out = purifier(normalise(img_u), logits_w)  # <- VLM-PP between the teacher and the loss
        pred_x = model(img_x)["out"]
        pred_s = model(normalise(strong(img_u, g)))["out"]
        loss_x = F.cross_entropy(pred_x, mask_x)
        loss_u = (F.cross_entropy(pred_s, out.label, reduction="none") * (out.conf >= threshold)).mean()
        opt.zero_grad()
        ((loss_x + loss_u) / 2).backward()
        opt.step()
        m = min(1 - 1 / (it + 1), 0.99)
        for pt, ps in zip(teacher.state_dict().values(), model.state_dict().values(), strict=True):
            pt.copy_(pt * m + ps * (1 - m) if pt.is_floating_point() else ps)
        print(f"iter {it + 1}: loss_x {loss_x.item():.3f} loss_u {loss_u.item():.3f} "
              f"admitted {(out.conf >= threshold).float().mean().item():.2f} regions {out.num_regions} "
              f"relabelled {out.relabelled} confirmed {out.confirmed}", flush=True)  # fmt: skip
    return model


def synthetic(n, size, seed):
    """Your data here: images [n,3,S,S] in [0,1] and masks [n,S,S] (SemiEarth's synthetic scenes)."""
    from semiearth.data.synthetic import generate_scene

    scenes = [generate_scene(seed * 10_000 + k, size) for k in range(n)]
    return torch.stack([s[0] for s in scenes]), torch.stack([s[1] for s in scenes])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--labeled", type=int, default=4)
    ap.add_argument("--unlabeled", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    labelled = synthetic(args.labeled, args.size, args.seed)
    unlabelled = synthetic(args.unlabeled, args.size, args.seed + 1)[0]
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=C)
    train(model, labelled, unlabelled, args.iters, args.batch, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
