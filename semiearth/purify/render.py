"""Pictures and logs for people: a PNG panel per image and JSONL records of every purified region."""

import json
import os

import numpy as np
import torch

from semiearth.data.classes import colourise, default_palette
from semiearth.ops import BOUNDARY, IGNORED, LOW

MIN_TILE_WIDTH = 224  # px per panel tile, for legible text


def image_to_rgb(image: torch.Tensor, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0)) -> np.ndarray:
    """[3,H,W] uint8 or normalised float -> [H,W,3] uint8."""
    x = image.detach().cpu()
    if x.dtype == torch.uint8:
        return x.permute(1, 2, 0).numpy().copy()
    x = x.float() * torch.tensor(image_std)[:, None, None] + torch.tensor(image_mean)[:, None, None]
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def candidate_map(flags: torch.Tensor) -> np.ndarray:
    """[H,W] flags -> RGB: grey confident, orange candidate, red candidate on a boundary, black ignored."""
    f = flags.detach().cpu().numpy()
    out = np.full((*f.shape, 3), 200, dtype=np.uint8)
    cand = (f & (LOW | IGNORED)) == LOW
    out[cand] = (255, 165, 0)
    out[cand & ((f & BOUNDARY) > 0)] = (220, 0, 0)
    out[(f & IGNORED) > 0] = (0, 0, 0)
    return out


def render(
    image: torch.Tensor,
    out,
    gt: torch.Tensor | None = None,
    path: str | None = None,
    index: int = 0,
    image_mean=(0.0, 0.0, 0.0),
    image_std=(1.0, 1.0, 1.0),
    class_names=None,
    palette=None,
):
    """A PNG panel for image `index` of a PurifyOutput: image with region boxes and their VLM top-1
    class, teacher pseudo-label, candidate/boundary map, purified label, ground truth when given.
    Labels are drawn in `palette` (RGB per class: the dataset's, semiearth.data.classes.palette_of;
    None: default_palette of the classes q has).

    image: [3,H,W] or the batch [B,3,H,W] (uint8, or normalised with image_mean/std); gt [H,W] or
    [B,H,W]. Saves to `path` when given; returns the PIL image.
    """
    from PIL import Image, ImageDraw

    if out.stats is None:
        raise ValueError("render: out has no stats; pass the PurifyOutput that VLMPurifier returned")
    if image.dim() == 4:
        image = image[index]
    if gt is not None and gt.dim() == 3:
        gt = gt[index]
    names = class_names or out.class_names
    c = out.q.shape[1] if out.q is not None and out.q.dim() == 2 else len(names or ()) or 12
    palette = palette if palette is not None else default_palette(c)
    panels = [
        ("image + regions (VLM top-1)", image_to_rgb(image, image_mean, image_std)),
        ("teacher pseudo-label", colourise(out.stats.label[index], palette)),
        ("candidates (red: on boundary)", candidate_map(out.stats.flags[index])),
        ("purified label", colourise(out.label[index], palette)),
    ]
    if gt is not None:
        panels.append(("ground truth", colourise(gt, palette)))
    # Small tiles (e.g. 64 px training crops) are enlarged, nearest-neighbour, so titles and
    # region labels stay readable.
    zoom = max(1, -(-MIN_TILE_WIDTH // panels[0][1].shape[1]))
    panels = [(name, arr.repeat(zoom, axis=0).repeat(zoom, axis=1)) for name, arr in panels]
    h, w = panels[0][1].shape[:2]
    title = 16
    canvas = Image.new("RGB", (w * len(panels) + 4 * (len(panels) - 1), h + title), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (name, arr) in enumerate(panels):
        x0 = i * (w + 4)
        canvas.paste(Image.fromarray(arr), (x0, title))
        draw.text((x0 + 2, 2), name, fill=(0, 0, 0))
    regions = out.regions.detach().cpu() if out.regions is not None else torch.zeros(0, 6)
    for k, reg in enumerate(regions.tolist()):
        if int(reg[0]) != index:
            continue
        top = int(out.q[k].argmax()) if out.q is not None else -1
        changed = top != int(reg[5])
        color = (255, 0, 0) if changed else (0, 255, 0)
        x1, y1, x2, y2 = (v * zoom for v in reg[1:5])
        for px in (0, 3 * (w + 4)):
            draw.rectangle([x1 + px, y1 + title, x2 + px - 1, y2 + title - 1], outline=color)
        label = names[top] if names else str(top)
        draw.text((x1 + 2, y1 + title + 1), label, fill=color)
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        canvas.save(path)
    return canvas


def write_records(path: str, records, **extra) -> int:
    """Append records (dicts) to a JSONL file, each merged with `extra` (e.g. step=..., epoch=...)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps({**extra, **rec}) + "\n")
    return len(records)


def read_records(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
