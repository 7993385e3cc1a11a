"""semiearth-predict: segment whole images of any size with a trained SemiEarth checkpoint.

    semiearth-predict --checkpoint runs/loveda/best.pth --input scene.tif --out preds/
    semiearth-predict --checkpoint runs/loveda/best.pth --input images/ --out preds/ --overlap 0.5

For every input image (a file, or every image under a folder, sub-folders kept) it writes

* ``<name>.png``: the prediction as a single-channel index PNG (train ids 0..C-1; 255 where the
  input is no-data), or ``<name>.tif`` for GeoTIFF input: an index GeoTIFF with the input's CRS
  and transform (nodata 255, the palette as its colour map);
* ``<name>_colour.png``: a colour preview (the dataset's palette; no-data black).

Images are read like the training data (``data.bands``, ``data.value_scale``, normalised with
``data.mean``/``data.std`` of the checkpoint's config) and segmented by a sliding window
(``--window``, default ``eval.window`` of the config; ``--overlap`` share, default 0.25) whose
softmax outputs are averaged where windows overlap. Images smaller than the window are padded.
Windows are processed in row strips, so memory stays O(window x width), whatever the image height.

Checkpoint format: a file written by ``semiearth.train.checkpoint.save_checkpoint`` with
``config`` (the resolved config as a dict; the model is rebuilt from ``config.model`` with
``config.data.num_classes`` outputs) and the weights of every network of its S4 method; the one the
method evaluates is used by default (FixMatch: the EMA teacher), ``--weights NAME`` picks another,
the same names as ``semiearth-eval``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from semiearth.cli import WEIGHTS_HELP, OutputError, check_output_dir, cli_main, describe
from semiearth.data.classes import IGNORE_INDEX, colourise, default_palette
from semiearth.data.io import IMAGE_EXTS, DataError, is_geotiff, read_raster, to_rgb_float, write_geotiff, write_rgb_png


class PredictError(RuntimeError):
    pass


def load_model(path: str, weights: str | None = None, device: str = "cpu"):
    """(model in eval mode, Config) from a SemiEarth checkpoint; weights: a network name of the
    checkpoint's method (None: the one the method evaluates)."""
    from semiearth.config import config_from_dict
    from semiearth.models import build_model
    from semiearth.train.checkpoint import CheckpointError, inference_model, load_checkpoint

    state = load_checkpoint(path)
    if "config" not in state or not isinstance(state["config"], dict):
        raise PredictError(f"checkpoint {path} has no resolved 'config': cannot rebuild its model")
    cfg = config_from_dict(state["config"])
    cfg.model.pretrained = False  # the checkpoint brings every weight; never download or read backbone files
    try:
        model = inference_model(state, weights, path, lambda: build_model(cfg.model, cfg.data.num_classes))
    except CheckpointError as e:
        raise PredictError(str(e)) from e
    return model.to(device).eval(), cfg


def starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    s = list(range(0, length - window + 1, stride))
    if s[-1] + window < length:
        s.append(length - window)
    return s


@torch.no_grad()
def sliding_predict(
    model, image: torch.Tensor, window: int, stride: int, batch_size: int = 4, multiple: int = 1, progress=None
) -> np.ndarray:
    """Normalised image [3,H,W] -> label [H,W] uint8 by softmax-averaged sliding windows.

    Rows are finished strip by strip: a buffer of ``window`` rows holds the running sums."""
    from semiearth.eval.inference import predict_whole

    dev = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    _, h, w = image.shape
    ph, pw = max(0, window - h), max(0, window - w)
    x = F.pad(image, (0, pw, 0, ph)) if (ph or pw) else image
    H, W = x.shape[-2:]
    ys, xs = starts(H, window, stride), starts(W, window, stride)
    out = np.empty((H, W), dtype=np.uint8)
    buf = cnt = None
    top = 0

    def flush(upto: int) -> None:
        nonlocal buf, cnt, top
        n = upto - top
        if n <= 0:
            return
        out[top:upto] = (buf[:, :n] / cnt[:n]).argmax(0).to(torch.uint8).cpu().numpy()
        buf = torch.cat([buf[:, n:], torch.zeros_like(buf[:, :n])], 1)
        cnt = torch.cat([cnt[n:], torch.zeros_like(cnt[:n])], 0)
        top = upto

    for y in ys:
        if buf is not None:
            flush(y)
        boxes = [(y, xx) for xx in xs]
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            batch = torch.stack([x[:, yy : yy + window, xx : xx + window] for yy, xx in chunk]).to(dev)
            p = predict_whole(model, batch, multiple).float()
            if buf is None:
                buf = torch.zeros(p.shape[1], window, W, device=dev)
                cnt = torch.zeros(window, W, device=dev)
            for (yy, xx), pi in zip(chunk, p, strict=True):
                buf[:, yy - top : yy - top + window, xx : xx + window] += pi
                cnt[yy - top : yy - top + window, xx : xx + window] += 1
            if progress is not None:
                progress.update(len(chunk))
    flush(H)
    return out[:h, :w]


def window_and_stride(window: int, overlap: float, multiple: int = 1) -> tuple[int, int]:
    """The window rounded down to the model's size multiple, and the stride from that window.

    Errors name the option: a window below 1 px or below the multiple, an overlap outside [0, 0.9]
    (0.99 at 512 px would mean a stride of 5 px: hours of windows)."""
    if window < 1:
        raise PredictError(f"--window must be a positive number of pixels, got {window}")
    if window < multiple:
        raise PredictError(
            f"--window {window} is smaller than this model's input multiple {multiple}: use >= {multiple}"
        )
    if not 0 <= overlap <= 0.9:
        raise PredictError(f"--overlap must be in [0, 0.9], got {overlap}")
    window -= window % multiple
    return window, max(1, int(round(window * (1.0 - overlap))))


def list_inputs(path: str) -> list[tuple[str, str]]:
    """[(file, relative stem)] for a file or every image under a folder."""
    if os.path.isfile(path):
        return [(path, os.path.splitext(os.path.basename(path))[0])]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input not found: {path}")
    found = []
    for d, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."):
                p = os.path.join(d, f)
                found.append((p, os.path.splitext(os.path.relpath(p, path))[0]))
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {path}")
    return found


def predict_files(
    model,
    cfg,
    inputs: list[tuple[str, str]],
    out_dir: str,
    window: int,
    overlap: float,
    batch_size: int = 4,
    progress: bool = True,
) -> list[str]:
    """Segment every input; returns the written index files."""
    from tqdm import tqdm

    data = cfg.data
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    window, stride = window_and_stride(window, overlap, multiple)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    palette = [tuple(c) for c in (data.palette or default_palette(data.num_classes))]
    mean = torch.tensor(data.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(3, 1, 1)
    written = []
    bar = tqdm(total=0, unit="win", desc="predict", disable=not progress, file=sys.stderr)
    for path, stem in inputs:
        raster = read_raster(path, data.bands)
        rgb = torch.from_numpy(to_rgb_float(raster.data, data.value_scale, path))
        x = (rgb - mean) / std
        h, w = raster.shape
        n = len(starts(max(h, window), window, stride)) * len(starts(max(w, window), window, stride))
        bar.total += n
        bar.set_postfix_str(os.path.basename(path))
        label = sliding_predict(model, x, window, stride, batch_size, multiple, bar)
        if raster.valid is not None:
            label[~raster.valid] = IGNORE_INDEX
        base = os.path.join(out_dir, stem)
        os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
        if is_geotiff(path):
            cmap = {i: (*palette[i], 255) for i in range(min(len(palette), 255))}
            cmap[IGNORE_INDEX] = (0, 0, 0, 0)
            target = base + ".tif"
            write_geotiff(target, label, raster.crs, raster.transform, nodata=IGNORE_INDEX, colormap=cmap)
        else:
            from PIL import Image

            target = base + ".png"
            Image.fromarray(label, mode="L").save(target)
        write_rgb_png(base + "_colour.png", colourise(label, palette))
        written.append(target)
    bar.close()
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semiearth-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by semiearth-train")
    p.add_argument("--input", required=True, help="an image file (PNG/JPEG/GeoTIFF) or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--window", type=int, default=None, help="sliding-window size (default: eval.window of the config)")
    p.add_argument(
        "--overlap", type=float, default=0.25, help="overlap share of neighbouring windows, 0..0.9 (default 0.25)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument(
        "--weights",
        default=None,
        help=WEIGHTS_HELP,
    )
    p.add_argument("--value-scale", type=float, default=None, help="non-uint8 images: raw value of full brightness "
                   "(default: data.value_scale of the checkpoint's config)")  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def check_args(args) -> None:
    """The options that need no checkpoint, checked before any work (PredictError naming the option)."""
    if args.window is not None:
        window_and_stride(args.window, args.overlap)
    elif not 0 <= args.overlap <= 0.9:
        raise PredictError(f"--overlap must be in [0, 0.9], got {args.overlap}")
    if args.batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.value_scale is not None and not args.value_scale > 0:
        raise PredictError(f"--value-scale must be > 0, got {args.value_scale}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise PredictError(f"--out {args.out} is a file; name a folder (it is created if missing)")


@cli_main("semiearth-predict", io_code=1, data_code=1)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        check_output_dir(args.out)  # read-only, under a file: before the work, not after it
    except (PredictError, OutputError) as e:
        print(f"semiearth-predict: error: {e}", file=sys.stderr)
        return 2
    try:
        model, cfg = load_model(args.checkpoint, args.weights, args.device)
        if args.value_scale is not None:
            cfg.data.value_scale = args.value_scale
        inputs = list_inputs(args.input)
        window = args.window or int(getattr(cfg.eval, "window", 0) or cfg.data.crop_size)
        written = predict_files(
            model, cfg, inputs, args.out, window, args.overlap, args.batch_size, not args.no_progress
        )
    except (PredictError, DataError, FileNotFoundError, RuntimeError) as e:
        print(f"semiearth-predict: error: {describe(e, args.out)}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} prediction(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
