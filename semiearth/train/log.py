"""Run logging (rank 0 only): tqdm console, TensorBoard, metrics.jsonl, purify.jsonl, panels."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import torch

from semiearth.data.classes import colourise, palette_of


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunLogger:
    """Writes under `out_dir`: metrics.jsonl, purify.jsonl, tb/ (TensorBoard), panels/."""

    def __init__(self, out_dir: str, total: int, start: int = 0, enabled: bool = True, desc: str = "train"):
        self.enabled = enabled
        self.out_dir = out_dir
        self.bar = None
        self.tb = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        self.metrics = open(os.path.join(out_dir, "metrics.jsonl"), "a")
        self.purify = open(os.path.join(out_dir, "purify.jsonl"), "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tb"))
        except Exception as err:  # tensorboard missing or broken: keep training, say so
            print(f"[semiearth] TensorBoard disabled: {err}")
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, mininterval=2.0)

    def step(self, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def log(self, iteration: int, values: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        row = {"iter": iteration, "time": time.time(), "split": prefix, **_jsonable(values)}
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(f"{prefix}/{key}", value, iteration)
                elif isinstance(value, dict):
                    for k, v in value.items():
                        if isinstance(v, int | float) and math.isfinite(v):
                            self.tb.add_scalar(f"{prefix}/{key}/{k}", v, iteration)

    def records(self, iteration: int, records: list[dict]) -> None:
        if not self.enabled:
            return
        for rec in records:
            self.purify.write(json.dumps({"iter": iteration, **_jsonable(rec)}) + "\n")
        self.purify.flush()

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()
        self.purify.close()
        if self.tb is not None:
            self.tb.close()


PANEL_TILE = 192  # px: each tile is enlarged (nearest neighbour) to at least this width
PANEL_COLUMNS = ("weak view", "teacher pseudo-label", "purified pseudo-label", "changed / newly admitted")


def panel_font(size: int):
    """A scalable font of `size` px (Pillow's bundled one), or the small bitmap default."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def save_panel(path: str, image_rgb: torch.Tensor, teacher: torch.Tensor, purified: torch.Tensor, conf_t, conf_p,
               palette, threshold: float, ignore_index: int = 255, class_names=None, title: str = "") -> None:  # fmt: skip
    """One row per image: image | teacher label | purified label | changed (red) / newly admitted (green),
    under a title and column headings, above a class-colour legend. image_rgb [K,3,H,W] in [0, 1];
    teacher/purified [K,H,W] int64; conf_t/conf_p [K,H,W] float (admitted: >= threshold)."""
    from PIL import Image

    rows = []
    for i in range(image_rgb.shape[0]):
        img = (image_rgb[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        diff = np.full_like(img, 40)
        changed = (teacher[i] != purified[i]).cpu().numpy()
        admitted = ((conf_p[i] >= threshold) & (conf_t[i] < threshold)).cpu().numpy()
        diff[admitted] = (0, 200, 0)
        diff[changed] = (230, 30, 30)
        tiles = [img, colourise(teacher[i], palette, ignore_index), colourise(purified[i], palette, ignore_index), diff]
        rows.append(tiles)
    zoom = max(1, -(-PANEL_TILE // rows[0][0].shape[1]))
    rows = [[t.repeat(zoom, axis=0).repeat(zoom, axis=1) for t in r] for r in rows]
    names = class_names or [str(c) for c in range(len(palette))]
    legend = [(tuple(palette[c]), names[c]) for c in range(min(len(palette), len(names)))]
    legend += [
        ((0, 0, 0), "ignored / padding"),
        ((230, 30, 30), "last column: relabelled"),
        ((0, 200, 0), f"last column: newly >= {threshold:g}"),
    ]
    canvas = panel_canvas(rows, title, legend)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(canvas).save(path)


def panel_canvas(rows, title: str, legend, gap: int = 6) -> np.ndarray:
    """[H,W,3] uint8: a title line, column headings (PANEL_COLUMNS), the tile grid, the legend."""
    from PIL import Image, ImageDraw

    th, tw = rows[0][0].shape[:2]
    big, small = panel_font(18), panel_font(14)
    width = len(PANEL_COLUMNS) * (tw + gap) + gap
    per_line = max(1, width // 200)
    legend_lines = -(-len(legend) // per_line)
    top = 30 + 24
    height = top + len(rows) * (th + gap) + 10 + legend_lines * 24
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), title, fill=(0, 0, 0), font=big)
    for j, name in enumerate(PANEL_COLUMNS):
        draw.text((gap + j * (tw + gap), 32), name, fill=(0, 0, 0), font=small)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (gap + j * (tw + gap), top + i * (th + gap)))
    y0 = top + len(rows) * (th + gap) + 6
    for k, (colour, name) in enumerate(legend):
        x, y = gap + (k % per_line) * 200, y0 + (k // per_line) * 24
        draw.rectangle([x, y + 2, x + 16, y + 18], fill=colour, outline=(0, 0, 0))
        draw.text((x + 22, y + 2), name, fill=(0, 0, 0), font=small)
    return np.asarray(canvas)


def write_panels(out_dir: str, iteration: int, pseudo, cfg) -> None:
    """panels/iter_N.png: image | teacher label | purified label | changed (red) / newly admitted (green);
    panels/iter_N_vlmpp.png: VLM-PP's own rendering (region boxes, VLM top-1, candidates).

    pseudo: the step's PseudoLabels (semiearth/train/purify_hook.py); cfg: the run's Config."""
    img_w, data = pseudo.images, cfg.data
    if pseudo.output is not None:
        from semiearth.purify import render

        vlm_path = os.path.join(out_dir, "panels", f"iter_{iteration:06d}_vlmpp.png")
        os.makedirs(os.path.dirname(vlm_path), exist_ok=True)
        try:
            render(img_w, pseudo.output, path=vlm_path, image_mean=data.mean, image_std=data.std,
                   class_names=data.class_names, palette=palette_of(data))  # fmt: skip
        except Exception as err:  # a panel must never stop training
            print(f"[semiearth] VLM-PP panel failed: {err}", file=sys.stderr)
    k = min(4, img_w.shape[0])
    mean = torch.tensor(data.mean, device=img_w.device).view(1, 3, 1, 1)
    std = torch.tensor(data.std, device=img_w.device).view(1, 3, 1, 1)
    rgb = img_w[:k] * std + mean
    palette = palette_of(data)
    path = os.path.join(out_dir, "panels", f"iter_{iteration:06d}.png")
    vlmpp = "purified by VLM-PP" if pseudo.output is not None else "no VLM-PP this iteration"
    title = f"iteration {iteration}: pseudo-labels of {k} unlabelled crops ({vlmpp})"
    save_panel(path, rgb, pseudo.teacher_label[:k], pseudo.label[:k], pseudo.teacher_conf[:k], pseudo.conf[:k],
               palette, cfg.train.threshold, data.ignore_index, data.class_names, title)  # fmt: skip
