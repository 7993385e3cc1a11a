"""semiearth-predict: segment whole images of any size with a trained SemiEarth checkpoint.

    semiearth-predict --checkpoint runs/loveda/best.pth --input scene.tif --out preds/
    semiearth-predict --checkpoint runs/loveda/best.pth --input images/ --out preds/ --overlap 0.5

For every input image (a file, or every image under a folder, sub-folders kept) it writes

* ``<name>.png``: the prediction as a single-channel index PNG (train ids 0..C-1; 255 where the
  input is no-data), or ``<name>.tif`` for GeoTIFF input: an index GeoTIFF with the input's CRS
  and transform (nodata 255, the palette as its colour map);
* ``<name>_colour.png``: a colour preview (the dataset's palette; no-data black).

``<name>`` is the input's name without its extension; inputs that would write the same file
(``a.jpg`` and ``a.png``; ``a.tif`` and ``a.png`` share ``a_colour.png``) get their extension into
it instead: ``a_jpg.png``, ``a_png.png``, ``a_tif.tif``. Files appear only once complete.

Images are read like the training data (``data.bands``, ``data.value_scale``, normalised with
``data.mean``/``data.std`` of the checkpoint's config) and segmented by a sliding window
(``--window``, default ``eval.window`` of the config; ``--overlap`` share, default 0.25) whose
softmax outputs are averaged where windows overlap. Images smaller than the window are padded.
Pixels whose values are not finite (NaN/inf of a float GeoTIFF) are no-data (255) in the output,
and a line says how many.

Memory does not grow with the image: a GeoTIFF is read through rasterio windows, a batch of
windows at a time, and the outputs are written in row strips as rows are finished; only the
running sums of the rows where two rows of windows overlap are kept (classes x <= window x width
floats). PNG/JPEG inputs are decoded whole as uint8 by Pillow (past its decompression-bomb limit
with a line stating the memory; convert huge ones to a tiled GeoTIFF, ``gdal_translate -co
TILED=YES``), never as float copies of the whole.

Checkpoint format: a file written by ``semiearth.train.checkpoint.save_checkpoint`` with
``config`` (the resolved config as a dict; the model is rebuilt from ``config.model`` with
``config.data.num_classes`` outputs) and the weights of every network of its S4 method; the one the
method evaluates is used by default (FixMatch: the EMA teacher), ``--weights NAME`` picks another,
the same names as ``semiearth-eval``.

``--format loveda-submission --out submission.zip`` (``--input`` the official LoveDA Test folder)
writes the test predictions zipped as the LoveDA evaluation server scores them instead: one
``<id>.png`` per Test image, 1024x1024 uint8, the server's class ids (:mod:`semiearth.eval.submission`,
docs/submission.md).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from semiearth.cli import WEIGHTS_HELP, OutputError, check_output_dir, check_output_file, cli_main, describe
from semiearth.data.classes import IGNORE_INDEX, colourise, default_palette
from semiearth.data.io import (
    IMAGE_EXTS,
    DataError,
    ImageReader,
    StripWriter,
    check_value_counts,
    gdal_cache,
    is_geotiff,
    rgb_bands,
    to_rgb_float,
)
from semiearth.eval.inference import TensorSource, predict_strips, window_starts
from semiearth.eval.submission import (
    FORMATS,
    SubmissionError,
    SubmissionZip,
    check_model_classes,
    check_size,
    submission_names,
)


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


@torch.no_grad()
def sliding_predict(
    model, image: torch.Tensor, window: int, stride: int, batch_size: int = 4, multiple: int = 1, progress=None
) -> np.ndarray:
    """Normalised image [3,H,W] -> label [H,W] uint8 by softmax-averaged sliding windows
    (:func:`semiearth.eval.inference.predict_strips` over an image in memory)."""
    _, h, w = image.shape
    out = np.empty((h, w), dtype=np.uint8)
    for top, rows in predict_strips(model, TensorSource(image, window), window, stride, batch_size, multiple, progress):
        out[top : top + len(rows)] = rows
    return out


class FileSource:
    """The normalised windows of an image file, read as the training data is read (raw bands ->
    [0,1] by ``value_scale`` -> (x - mean) / std), a window at a time from an
    :class:`~semiearth.data.io.ImageReader`; zeros past the edges and for NaN values.

    Opening it reads a non-uint8 file once, a block at a time: values mostly above ``value_scale``
    are refused as :func:`~semiearth.data.io.check_value_scale` refuses them, and the pixels with
    non-finite values (NaN/inf) where the file marks data are counted (``nonfinite``); they are
    no-data in the prediction (:meth:`invalid`)."""

    BLOCK = 1024  # px: the side of the blocks of the value check and of the no-data masks

    def __init__(self, reader, value_scale: float, mean: torch.Tensor, std: torch.Tensor):
        self.reader, self.value_scale, self.mean, self.std = reader, value_scale, mean, std
        self.shape = (reader.height, reader.width)
        rgb_bands(np.empty((reader.count, 0, 0), reader.dtype), reader.path)  # 2 bands: the error now
        self.floats = reader.dtype.kind in "fc"
        self.nonfinite = 0
        if reader.dtype not in (np.uint8, np.bool_):
            self._scan()

    def _blocks(self, y0: int = 0, y1: int | None = None):
        h, w = self.shape
        for r0 in range(y0, h if y1 is None else y1, self.BLOCK):
            r1 = min(r0 + self.BLOCK, h if y1 is None else y1)
            for c0 in range(0, w, self.BLOCK):
                yield r0, r1, c0, min(c0 + self.BLOCK, w)

    def _scan(self) -> None:
        above = size = 0
        vmax = None
        for y0, y1, x0, x1 in self._blocks():
            data = rgb_bands(self.reader.read(y0, y1, x0, x1), self.reader.path)
            above += int(np.count_nonzero(data > self.value_scale))
            size += data.size
            if self.floats:
                finite = np.isfinite(data)
                above -= int(np.count_nonzero(np.isposinf(data)))
                values = data[finite]
                bad = ~finite.all(axis=0)
                valid = self.reader.valid(y0, y1, x0, x1)
                self.nonfinite += int(np.count_nonzero(bad if valid is None else bad & valid))
            else:
                values = data
            if values.size:
                vmax = values.max() if vmax is None else max(vmax, values.max())
        check_value_counts(above, size, vmax, self.reader.dtype, self.value_scale, self.reader.path)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        h, w = self.shape
        out = torch.zeros(3, y1 - y0, x1 - x0)
        r1, c1 = min(y1, h), min(x1, w)
        if r1 > y0 and c1 > x0:
            raw = self.reader.read(y0, r1, x0, c1)
            rgb = np.ascontiguousarray(to_rgb_float(raw, self.value_scale, self.reader.path, check_scale=False))
            out[:, : r1 - y0, : c1 - x0] = (torch.from_numpy(rgb) - self.mean) / self.std
        return out

    def invalid(self, y0: int, y1: int) -> np.ndarray | None:
        """bool [y1-y0, w]: rows y0..y1-1 where the file marks no data or values are not finite."""
        floats = self.floats and self.nonfinite
        if not (self.reader.has_mask or floats):
            return None
        bad = np.zeros((y1 - y0, self.shape[1]), dtype=bool)
        for r0, r1, c0, c1 in self._blocks(y0, y1):
            valid = self.reader.valid(r0, r1, c0, c1)
            if valid is not None:
                bad[r0 - y0 : r1 - y0, c0:c1] |= ~valid
            if floats:
                data = rgb_bands(self.reader.read(r0, r1, c0, c1), self.reader.path)
                bad[r0 - y0 : r1 - y0, c0:c1] |= ~np.isfinite(data).all(axis=0)
        return bad


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


def _outputs(path: str, stem: str, out_dir: str) -> tuple[str, str]:
    base = os.path.join(out_dir, stem)
    return base + (".tif" if is_geotiff(path) else ".png"), base + "_colour.png"


def _clashes(plan: list[tuple[str, str, str]]) -> dict[int, tuple[int, str]]:
    """{input index: (another input index, the file both would write)}."""
    owner: dict[str, int] = {}
    clash: dict[int, tuple[int, str]] = {}
    for i, (_, index, colour) in enumerate(plan):
        for f in (index, colour):
            j = owner.setdefault(os.path.normpath(os.path.abspath(f)), i)
            if j != i:
                clash.setdefault(i, (j, f))
                clash.setdefault(j, (i, f))
    return clash


def output_files(inputs: list[tuple[str, str]], out_dir: str) -> list[tuple[str, str, str]]:
    """[(input, index file, colour preview)]: ``<stem>.png`` (``<stem>.tif`` for GeoTIFF) and
    ``<stem>_colour.png``. Inputs whose files would collide (a.jpg and a.png; a.tif and a.png share
    a_colour.png) get their extension into the name instead: a_jpg.png, a_png.png, a_tif.tif, ...
    Names that still collide, or an output that would overwrite an input, are a PredictError
    before any work."""
    plan = [(p, *_outputs(p, stem, out_dir)) for p, stem in inputs]
    clash = _clashes(plan)
    if clash:
        plan = [
            (p, *_outputs(p, f"{stem}_{os.path.splitext(p)[1][1:]}" if i in clash else stem, out_dir))
            for i, (p, stem) in enumerate(inputs)
        ]
        clash = _clashes(plan)
        if clash:
            i, (j, f) = next(iter(clash.items()))
            raise PredictError(f"{inputs[i][0]} and {inputs[j][0]} would both be written to {f}: rename one of them")
    sources = {os.path.realpath(p): p for p, _ in inputs}
    for p, index, colour in plan:
        for f in (index, colour):
            if os.path.realpath(f) in sources:
                raise PredictError(
                    f"--out {out_dir}: the prediction of {p} would overwrite the input {sources[os.path.realpath(f)]}; "
                    "choose another output folder"
                )
    return plan


WHOLE_IMAGE_PIXELS = 1 << 20  # images up to 1 Mpx are normalised whole; larger ones are read a window at a time
GDAL_CACHE_MB = 64  # GDAL's block cache while predicting (its default, 5% of the RAM, would hold the raster)


def _setup(model, cfg, window: int, overlap: float, batch_size: int):
    """(window, stride, model size multiple, mean [3,1,1], std [3,1,1]) for predicting with ``cfg``."""
    multiple = int(getattr(model, "size_multiple", 1) or 1)
    window, stride = window_and_stride(window, overlap, multiple)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    mean = torch.tensor(cfg.data.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg.data.std, dtype=torch.float32).view(3, 1, 1)
    return window, stride, multiple, mean, std


def _open_source(reader, cfg, mean, std, bar) -> FileSource:
    source = FileSource(reader, cfg.data.value_scale, mean, std)
    if source.nonfinite:
        bar.write(
            f"semiearth-predict: note: {reader.path}: {source.nonfinite} pixel(s) hold NaN or inf values; "
            f"they are no-data ({IGNORE_INDEX}) in the prediction",
            file=sys.stderr,
        )
    return source


def label_strips(model, source: FileSource, window: int, stride: int, batch_size: int, multiple: int, bar):
    """(top row, labels [n,w] uint8) of one image, top to bottom; no-data pixels are IGNORE_INDEX.

    Images up to WHOLE_IMAGE_PIXELS are normalised whole (:func:`sliding_predict`), larger ones read
    a batch of windows at a time (:func:`semiearth.eval.inference.predict_strips`)."""
    h, w = source.shape
    bar.total += len(window_starts(max(h, window), window, stride)) * len(window_starts(max(w, window), window, stride))
    bar.set_postfix_str(os.path.basename(source.reader.path))
    if h * w <= WHOLE_IMAGE_PIXELS:
        strips = [(0, sliding_predict(model, source.read(0, h, 0, w), window, stride, batch_size, multiple, bar))]
    else:
        strips = predict_strips(model, source, window, stride, batch_size, multiple, bar)
    for top, rows in strips:
        bad = source.invalid(top, top + len(rows))
        if bad is not None:
            rows[bad] = IGNORE_INDEX
        yield top, rows


def _progress(progress: bool):
    from tqdm import tqdm

    return tqdm(total=0, unit="win", desc="predict", disable=not progress, file=sys.stderr)


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
    """Segment every input; returns the written index files (one per input, see :func:`output_files`).

    Memory does not grow with the image: a GeoTIFF is read a batch of windows at a time (PNG/JPEG:
    the decoded uint8 image is held, Pillow has no windowed reader) and the outputs are written in
    row strips as the rows are finished (:func:`semiearth.eval.inference.predict_strips`)."""
    data = cfg.data
    window, stride, multiple, mean, std = _setup(model, cfg, window, overlap, batch_size)
    palette = [tuple(c) for c in (data.palette or default_palette(data.num_classes))]
    cmap = {i: (*palette[i], 255) for i in range(min(len(palette), 255))}
    cmap[IGNORE_INDEX] = (0, 0, 0, 0)
    plan = output_files(inputs, out_dir)
    written = []
    bar = _progress(progress)
    with gdal_cache(GDAL_CACHE_MB):
        for path, target, colour in plan:
            with ImageReader(path, data.bands) as reader:
                source = _open_source(reader, cfg, mean, std, bar)
                h, w = source.shape
                geo = dict(crs=reader.crs, transform=reader.transform, nodata=IGNORE_INDEX, colormap=cmap)
                with (
                    StripWriter(target, h, w, 1, **(geo if is_geotiff(target) else {})) as index,
                    StripWriter(colour, h, w, 3) as preview,
                ):
                    for top, rows in label_strips(model, source, window, stride, batch_size, multiple, bar):
                        index.write(top, rows)
                        preview.write(top, np.moveaxis(colourise(rows, palette), -1, 0))
            written.append(target)
    bar.close()
    return written


def predict_submission(
    model,
    cfg,
    inputs: list[tuple[str, str]],
    out_zip: str,
    fmt: str,
    window: int,
    overlap: float,
    batch_size: int = 4,
    progress: bool = True,
) -> str:
    """Segment the test images ``inputs`` into the zip ``out_zip`` in the form the benchmark's
    evaluation server ``fmt`` scores (:mod:`semiearth.eval.submission`); returns its one-line summary.
    The inputs' ids and sizes and the checkpoint's classes are checked before any prediction."""
    spec = FORMATS[fmt]()
    check_model_classes(spec, cfg.data.class_names, cfg.data.num_classes, "the checkpoint")
    names = submission_names(spec, inputs)
    window, stride, multiple, mean, std = _setup(model, cfg, window, overlap, batch_size)
    bar = _progress(progress)
    with gdal_cache(GDAL_CACHE_MB), SubmissionZip(spec, out_zip) as sub:
        for path, name in names:
            with ImageReader(path, cfg.data.bands) as reader:
                check_size(spec, path, (reader.height, reader.width))
                source = _open_source(reader, cfg, mean, std, bar)
                labels = np.empty(source.shape, dtype=np.uint8)
                for top, rows in label_strips(model, source, window, stride, batch_size, multiple, bar):
                    labels[top : top + len(rows)] = rows
            sub.add(name, labels)
    bar.close()
    return sub.summary()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semiearth-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by semiearth-train")
    p.add_argument("--input", required=True, help="an image file (PNG/JPEG/GeoTIFF) or a folder of them")
    p.add_argument(
        "--out",
        required=True,
        help="output folder: <name>.png (GeoTIFF input: <name>.tif) and <name>_colour.png per input; inputs that "
        "would write the same file (a.jpg and a.png) get their extension into the name (a_jpg.png, a_png.png). "
        "--format loveda-submission: the zip file to write",
    )
    p.add_argument(
        "--format",
        choices=["files", *FORMATS],
        default="files",
        help="files: index + colour files per input (default); loveda-submission: the LoveDA Test predictions "
        "zipped as its evaluation server takes them (--input the official Test folder, --out a .zip; "
        "docs/submission.md)",
    )
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
    if args.format != "files":
        if not args.out.lower().endswith(".zip"):
            raise PredictError(f"--format {args.format}: --out must name the .zip to write, got {args.out}")
    elif os.path.exists(args.out) and not os.path.isdir(args.out):
        raise PredictError(f"--out {args.out} is a file; name a folder (it is created if missing)")


@cli_main("semiearth-predict", io_code=1, data_code=1)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.format == "files":
            check_output_dir(args.out)  # read-only, under a file: before the work, not after it
        else:
            check_output_file(args.out, "--out")
    except (PredictError, OutputError) as e:
        print(f"semiearth-predict: error: {e}", file=sys.stderr)
        return 2
    try:
        model, cfg = load_model(args.checkpoint, args.weights, args.device)
        if args.value_scale is not None:
            cfg.data.value_scale = args.value_scale
        inputs = list_inputs(args.input)
        window = args.window or int(getattr(cfg.eval, "window", 0) or cfg.data.crop_size)
        run = (model, cfg, inputs, args.out)
        opts = (window, args.overlap, args.batch_size, not args.no_progress)
        if args.format != "files":
            print(predict_submission(*run, args.format, *opts))
            return 0
        written = predict_files(*run, *opts)
    except (PredictError, SubmissionError, DataError, FileNotFoundError, RuntimeError) as e:
        print(f"semiearth-predict: error: {describe(e, args.out)}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} prediction(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
