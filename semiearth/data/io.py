"""Reading and writing images and label masks: PNG/JPEG via Pillow, GeoTIFF via rasterio.

Every failure is a :class:`DataError` (a ``ValueError``) or ``FileNotFoundError`` whose message
names the file: missing, unreadable or truncated images, masks of another size than their image,
labels outside the class range (see :func:`semiearth.data.classes.check_train_ids`).

Images
    :func:`read_image` returns float32 ``[3,H,W]`` in [0,1] and a validity mask ``[H,W]`` (or None
    when every pixel is valid). uint8 data is divided by 255; every other dtype (uint16, int16,
    float) by ``value_scale`` (config ``data.value_scale``: the raw value of full brightness) and
    clipped to [0,1]; more than 1% of values above it is an error (the scale does not fit the data). GeoTIFF: ``bands`` picks 1-based bands in RGB
    order (default: bands 1,2,3; a single band is repeated); the raster's nodata value, internal
    mask or alpha band marks invalid pixels, which datasets set to ignore in the mask.
    Non-finite values (NaN/inf of a float image): ``read_image`` refuses them naming the file, or
    marks their pixels invalid where the file declares no-data (a nodata value, mask or alpha);
    ``nonfinite="nodata"`` always marks them invalid (see :func:`read_raster`).
Large images
    :class:`ImageReader` reads a GeoTIFF a window at a time (memory bounded by the window);
    PNG/JPEG are decoded whole by Pillow. Pillow's decompression-bomb limit (about 89 Mpx, a guard
    against hostile downloads) is raised for the files given here: past it one line on stderr says
    how much memory decoding takes, and a file that would not fit in the memory available is a
    DataError saying how to convert it to a tiled GeoTIFF. :class:`StripWriter` writes GeoTIFF or
    PNG output in row strips.
Masks
    :func:`read_label` returns the raw label: ``[H,W]`` for index labels (palette PNGs give their
    indices), ``[H,W,3]`` uint8 for colour-coded labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

GEOTIFF_EXTS = (".tif", ".tiff")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DataError(ValueError):
    """Bad input data; the message names the offending file."""


def is_geotiff(path: str) -> bool:
    return str(path).lower().endswith(GEOTIFF_EXTS)


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"file not found: {path}")
    if not os.path.isfile(path):
        raise DataError(f"not a file: {path}")


def _rasterio():
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - rasterio is a requirement here
        raise ImportError("reading GeoTIFF needs rasterio: pip install rasterio") from e
    return rasterio


@dataclass
class Raster:
    """Raw pixels of a raster file plus what is needed to write results back in its frame."""

    data: np.ndarray  # [bands,H,W] raw dtype
    valid: np.ndarray | None  # [H,W] bool, None when all valid
    crs: object = None
    transform: object = None
    nodata: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])


def open_geotiff(path: str):
    """rasterio dataset of `path`, without the warning for files that carry no georeference."""
    rasterio = _rasterio()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


# -- Pillow: files the user gave, past the decompression-bomb limit ------------------------------
_NOTED: set[str] = set()


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take: MemAvailable, capped by a cgroup (v2) limit; None
    where neither is known."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read().strip())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def human_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} KB" if n >= 1e3 else f"{n:.0f} B"


def _decode_bytes(im) -> int:
    """Peak bytes of decoding `im` into an array: Pillow's own buffer (4 bytes a pixel for colour,
    plus a converted copy for palette and other modes) and the array."""
    px = im.width * im.height
    one = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
    internal = one.get(im.mode, 4)
    array = {"1": 1, "L": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4, "RGBA": 4, "LA": 4}.get(im.mode, 3)
    converted = 4 if im.mode in ("P", "1", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX") else 0
    return px * (internal + converted + array)


def _tiled_geotiff_hint(path: str) -> str:
    out = os.path.splitext(os.path.basename(path))[0] + ".tif"
    return f"gdal_translate -co TILED=YES -co COMPRESS=DEFLATE {path} {out} (or rio convert -f GTiff --co tiled=true {path} {out})"


@contextlib.contextmanager
def open_pillow(path: str):
    """``Image.open(path)`` for a file the user gave: Pillow's decompression-bomb limit (a guard
    against hostile files from elsewhere) is lifted for it. Past the limit one line on stderr says
    how much memory decoding takes; a file that would not fit in the memory available is a
    DataError that says how to convert it to a tiled GeoTIFF (read in windows)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with im:
        w, h = im.size
        if limit and w * h > limit:
            need, avail = _decode_bytes(im), available_memory()
            if avail is not None and need > avail:
                raise DataError(
                    f"{path}: {w}x{h} px needs about {human_bytes(need)} of memory to decode, more than the "
                    f"{human_bytes(avail)} available; convert it to a tiled GeoTIFF, which is read in windows: "
                    + _tiled_geotiff_hint(path)
                )
            if path not in _NOTED:
                _NOTED.add(path)
                print(
                    f"note: {path}: {w}x{h} px is past Pillow's decompression-bomb limit ({limit} px); reading it "
                    f"anyway (a file you gave) takes about {human_bytes(need)} of memory; a tiled GeoTIFF is read "
                    f"in windows instead: {_tiled_geotiff_hint(path)}",
                    file=sys.stderr,
                )
        yield im


def _load_strict(im) -> None:
    """``im.load()`` that refuses truncated files even where LOAD_TRUNCATED_IMAGES was relaxed globally."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True
    else:
        im.load()


def _pick_bands(path: str, bands, count: int) -> list[int]:
    if not bands:
        return list(range(1, count + 1))
    bad = [b for b in bands if not 1 <= int(b) <= count]
    if bad:
        raise DataError(f"{path}: band(s) {bad} requested but the file has {count} band(s)")
    return [int(b) for b in bands]


# -- reading -------------------------------------------------------------------------------------
class ImageReader:
    """Raw pixels of an image file, a window at a time: ``read(y0, y1, x0, x1)`` -> [bands, y1-y0, x1-x0].

    GeoTIFF is read through rasterio windows, so memory is bounded by the window whatever the
    raster's size (tiled files read fastest; bound GDAL's block cache with :func:`gdal_cache`).
    PNG/JPEG/BMP are decoded once by Pillow (they have no windowed reader) and held as the decoded
    array (uint8; uint16 for 16-bit PNG), bands interleaved. ``bands``: 1-based band numbers (None:
    every band; a PNG's alpha is then the validity mask, not a band). ``valid(y0, y1, x0, x1)``:
    bool [h,w], False where the file marks no data (nodata value, internal mask, alpha band, PNG
    alpha); None when the file marks nothing (``has_mask`` False). A context manager."""

    def __init__(self, path: str, bands: list[int] | None = None):
        self.path = os.fspath(path)
        _require_file(self.path)
        self.crs = self.transform = self.nodata = None
        self.has_mask = False
        self._src = self._pixels = self._alpha = self._index = None
        if is_geotiff(self.path):
            self._open_geotiff(bands)
        else:
            self._decode(bands)

    def _fail(self, e: Exception) -> DataError:
        return DataError(f"cannot read image {self.path}: {type(e).__name__}: {e}")

    def _open_geotiff(self, bands) -> None:
        rasterio = _rasterio()
        try:
            self._src = src = open_geotiff(self.path)
        except Exception as e:  # rasterio raises RasterioIOError and friends
            raise self._fail(e) from e
        try:
            self.bands = _pick_bands(self.path, bands, src.count)
            self.height, self.width = int(src.height), int(src.width)
            self.dtype = np.dtype(src.dtypes[self.bands[0] - 1])
            self.crs, self.transform, self.nodata = src.crs, src.transform, src.nodata
            self.has_mask = src.nodata is not None or any(
                rasterio.enums.MaskFlags.all_valid not in flags for flags in src.mask_flag_enums
            )
        except DataError:
            src.close()
            raise
        except Exception as e:
            src.close()
            raise self._fail(e) from e

    def _decode(self, bands) -> None:
        try:
            with open_pillow(self.path) as im:
                _load_strict(im)
                mode = im.mode
                if mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif mode in ("1", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
                    im = im.convert("RGBA" if mode == "LA" else "RGB")
                arr = np.asarray(im)
                del im
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {self.path} (unreadable or truncated): {e}") from e
        count = 1 if arr.ndim == 2 else int(arr.shape[2])
        self.height, self.width = int(arr.shape[0]), int(arr.shape[1])
        self.dtype = arr.dtype
        if bands:
            self.bands = _pick_bands(self.path, bands, count)
            self._index = [b - 1 for b in self.bands]
        elif count == 4:  # RGBA: alpha 0 = no data
            self.bands, self._alpha, self.has_mask = [1, 2, 3], arr[..., 3], True
            arr = arr[..., :3]
        else:
            self.bands = list(range(1, count + 1))
        self._pixels = arr

    @property
    def count(self) -> int:
        return len(self.bands)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Raw bands [count, y1-y0, x1-x0] of rows y0..y1-1, columns x0..x1-1 (inside the image)."""
        if self._src is not None:
            from rasterio.windows import Window

            try:
                return self._src.read(self.bands, window=Window(x0, y0, x1 - x0, y1 - y0))
            except Exception as e:  # truncated or corrupt data: CPLE_* errors
                raise self._fail(e) from e
        px = self._pixels[y0:y1, x0:x1]
        px = px[None] if px.ndim == 2 else np.moveaxis(px, -1, 0)
        return px if self._index is None else px[self._index]

    def valid(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """bool [y1-y0, x1-x0]: pixels with data; None when the file marks no pixel as no-data."""
        if not self.has_mask:
            return None
        if self._src is not None:
            rasterio = _rasterio()
            from rasterio.windows import Window

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", rasterio.errors.NodataShadowWarning)
                    return self._src.dataset_mask(window=Window(x0, y0, x1 - x0, y1 - y0)) > 0
            except Exception as e:
                raise self._fail(e) from e
        return self._alpha[y0:y1, x0:x1] > 0

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
        self._pixels = self._alpha = None

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


NONFINITE_MODES = ("keep", "refuse", "nodata")


def read_raster(path: str, bands: list[int] | None = None, nonfinite: str = "keep") -> Raster:
    """Raw bands of an image file as [bands,H,W] (all bands, or the 1-based ``bands``).

    ``nonfinite`` (NaN/inf values of a float image): "keep" them as read; "refuse" them with a
    DataError naming the file unless the file declares no-data (a nodata value, mask or alpha:
    their pixels are then marked invalid); "nodata": always mark their pixels invalid."""
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    path = os.fspath(path)
    with ImageReader(path, bands) as r:
        data = np.ascontiguousarray(r.read(0, r.height, 0, r.width))
        valid = r.valid(0, r.height, 0, r.width)
        if valid is not None and valid.all():
            valid = None
        raster = Raster(data, valid, r.crs, r.transform, r.nodata)
        declared = r.has_mask
    if nonfinite == "keep" or data.dtype.kind not in "fc":
        return raster
    bad = ~np.isfinite(data).all(axis=0)
    if valid is not None:
        bad &= valid
    if not bad.any():
        return raster
    if nonfinite == "refuse" and not declared:
        y, x = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{path}: {int(bad.sum())} pixel(s) of this {data.dtype} image hold NaN or inf values (e.g. row {y}, "
            f"column {x}) and the file declares no nodata value to mark them; set one (e.g. "
            f"`gdal_edit.py -a_nodata nan {path}`: they become ignore) or fill them"
        )
    return dataclasses.replace(raster, valid=~bad if valid is None else valid & ~bad)


def rgb_bands(data: np.ndarray, source: str = "<array>") -> np.ndarray:
    """The bands [bands,...] that make RGB: the first three, or one band repeated."""
    if data.shape[0] == 1:
        return np.repeat(data, 3, axis=0)
    if data.shape[0] == 2:
        raise DataError(f"{source}: 2 bands cannot make RGB; select 1 or 3 bands (config data.bands)")
    return data[:3]


def to_rgb_float(
    data: np.ndarray, value_scale: float = 255.0, source: str = "<array>", check_scale: bool = True
) -> np.ndarray:
    """[bands,H,W] raw -> float32 [3,H,W] in [0,1] (first three bands; one band repeated).

    ``check_scale``: refuse values mostly above ``value_scale`` (:func:`check_value_scale`); off where
    the caller checked the whole image already (a window of it). NaN becomes 0 (inf is clipped)."""
    data = rgb_bands(data, source)
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.bool_:
        return data.astype(np.float32)
    if check_scale:
        check_value_scale(data, value_scale, source)
    out = data.astype(np.float32) / float(value_scale)
    np.clip(out, 0.0, 1.0, out=out)
    if data.dtype.kind in "fc":
        out[np.isnan(out)] = 0.0
    return out


MAX_CLIPPED = 0.01  # share of values above value_scale beyond which the scale is wrong, not the pixels


def check_value_scale(data: np.ndarray, value_scale: float, source: str = "<array>") -> None:
    """Refuse a non-uint8 image [bands,H,W] whose values mostly lie above ``value_scale``.

    A few saturated pixels (clouds in reflectance data) are clipped to 1.0 as intended; more than 1%
    means the scale does not fit the data (a 16-bit image read with the 8-bit default 255 would be
    all white), so it is an error that names the fix instead of a silently wrong result. Non-finite
    values do not count (they are no data)."""
    if value_scale <= 0:
        raise DataError(f"{source}: data.value_scale must be > 0, got {value_scale}")
    above = int(np.count_nonzero(data > value_scale))
    if data.dtype.kind in "fc":
        above -= int(np.count_nonzero(np.isposinf(data)))
    if above > MAX_CLIPPED * data.size:
        finite = data if data.dtype.kind not in "fc" else data[np.isfinite(data)]
        check_value_counts(above, data.size, finite.max(), data.dtype, value_scale, source)


def check_value_counts(above: int, size: int, vmax, dtype, value_scale: float, source: str = "<array>") -> None:
    """:func:`check_value_scale` from counts gathered a window at a time: ``above`` of ``size`` values
    exceed ``value_scale``, the largest finite value is ``vmax``."""
    if value_scale <= 0:
        raise DataError(f"{source}: data.value_scale must be > 0, got {value_scale}")
    if above > MAX_CLIPPED * size:
        raise DataError(
            f"{source}: {100 * above / size:.0f}% of the values of this {np.dtype(dtype)} image exceed "
            f"data.value_scale={value_scale:g} (max {vmax}) and would all be clipped to 1.0; set data.value_scale "
            "to the value of full brightness (65535 for 16-bit, 4095 for 12-bit, 10000 for reflectance; "
            "semiearth-predict --value-scale, semiearth-prepare --value-scale)"
        )


def read_image(
    path: str, bands: list[int] | None = None, value_scale: float = 255.0, nonfinite: str = "refuse"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image file -> (float32 [3,H,W] RGB in [0,1], valid [H,W] bool or None).

    Invalid pixels are 0. ``nonfinite`` as in :func:`read_raster`; by default NaN/inf values are
    refused (a DataError naming the file) unless the file declares no-data, which marks them invalid."""
    r = read_raster(path, bands, nonfinite)
    img = to_rgb_float(r.data, value_scale, path)
    if r.valid is not None:
        img[:, ~r.valid] = 0.0
    return img, r.valid


def read_label(path: str) -> np.ndarray:
    """Raw label file -> [H,W] (index) or [H,W,3] uint8 (colour)."""
    path = os.fspath(path)
    _require_file(path)
    if is_geotiff(path):
        try:
            with open_geotiff(path) as src:
                data = src.read()
        except Exception as e:
            raise DataError(f"cannot read label {path}: {type(e).__name__}: {e}") from e
        if data.shape[0] == 1:
            return data[0]
        return np.ascontiguousarray(np.moveaxis(data[:3], 0, -1))
    try:
        with open_pillow(path) as im:
            im.load()
            if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im)
            elif im.mode == "1":
                arr = np.asarray(im).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read label {path} (unreadable or truncated): {e}") from e
    return arr


def read_label_palette(path: str) -> np.ndarray | None:
    """The colour table [256,3] uint8 of a palette (P mode) PNG label, else None."""
    if is_geotiff(path):
        return None
    with open_pillow(path) as im:
        if im.mode != "P":
            return None
        table = np.zeros((256, 3), dtype=np.uint8)
        colours = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)[:256]
        table[: len(colours)] = colours
        return table


_ONE_BAND_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F")


def image_bands(path: str) -> int | None:
    """Number of bands `read_raster(path)` gives (alpha dropped), from the header only; None if the
    file cannot be opened (reading it reports why)."""
    try:
        if is_geotiff(path):
            with open_geotiff(path) as src:
                return int(src.count)
        with open_pillow(path) as im:
            return 1 if im.mode in _ONE_BAND_MODES else 3
    except Exception:  # noqa: BLE001 - unreadable files get their own error when read
        return None


def check_same_size(image_hw: tuple[int, int], mask_hw: tuple[int, int], image_path: str, mask_path: str) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise DataError(
            f"mask {mask_path} is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]}"
        )


# -- writing ------------------------------------------------------------------------------------
def _mkparent(path: str) -> None:
    d = os.path.dirname(os.fspath(path))
    if d:
        os.makedirs(d, exist_ok=True)


def write_index_png(path: str, mask: np.ndarray) -> None:
    """Write a uint8 index mask [H,W] as a single-channel PNG."""
    _mkparent(path)
    Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)), mode="L").save(path)


def write_rgb_png(path: str, rgb: np.ndarray) -> None:
    """Write uint8 [H,W,3] (or [3,H,W]) as an RGB PNG."""
    if rgb.ndim == 3 and rgb.shape[0] == 3 and rgb.shape[2] != 3:
        rgb = np.moveaxis(rgb, 0, -1)
    _mkparent(path)
    Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8)), mode="RGB").save(path)


def write_raster_png(path: str, data: np.ndarray) -> None:
    """Write raw [bands,H,W] uint8 (1, 3 or 4 bands) or uint16 (1 band) losslessly as PNG."""
    _mkparent(path)
    if data.dtype == np.uint8 and data.shape[0] in (1, 3, 4):
        arr = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
        Image.fromarray(np.ascontiguousarray(arr)).save(path)
    elif data.dtype == np.uint16 and data.shape[0] == 1:
        Image.fromarray(np.ascontiguousarray(data[0]).astype(np.uint16)).save(path)
    else:
        raise DataError(f"{path}: {data.shape[0]} band(s) of {data.dtype} cannot be stored as PNG; use GeoTIFF")


def geotiff_profile(height: int, width: int, count: int, dtype, crs=None, transform=None, nodata=None) -> dict:
    """rasterio profile of the GeoTIFFs written here: deflate-compressed, the given georeference."""
    profile = dict(
        driver="GTiff",
        height=int(height),
        width=int(width),
        count=int(count),
        dtype=np.dtype(dtype).name,
        compress="deflate",
    )
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if count not in (1, 3):
        profile["photometric"] = "MINISBLACK"  # extra bands are data (e.g. NIR), not alpha
    return profile


def write_geotiff(
    path: str, data: np.ndarray, crs=None, transform=None, nodata=None, colormap: dict | None = None
) -> None:
    """Write [bands,H,W] (or [H,W]) as a deflate-compressed GeoTIFF with the given georeference."""
    rasterio = _rasterio()
    if data.ndim == 2:
        data = data[None]
    _mkparent(path)
    profile = geotiff_profile(data.shape[1], data.shape[2], data.shape[0], data.dtype, crs, transform, nodata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colormap is not None and data.shape[0] == 1 and data.dtype == np.uint8:
                dst.write_colormap(1, colormap)


class StripWriter:
    """A uint8 image [count,H,W] written in row strips (``write(top, rows)``, rows [count,n,W] or
    [n,W]), so that memory is bounded by the strip, whatever the image's size.

    ``.tif``: a GeoTIFF as :func:`write_geotiff` writes it (deflate, CRS, transform, nodata, colour
    map). ``.png``: the strips go to a temporary GeoTIFF that GDAL's PNG driver turns into the PNG
    row by row when closed (Pillow encodes only whole images). The file appears under its name
    only once complete: until then it is a hidden ``.<name>.partial`` beside it, removed on
    failure. A context manager (an exception inside removes the partial file)."""

    def __init__(self, path: str, height: int, width: int, count: int = 1, crs=None, transform=None, nodata=None,
                 colormap: dict | None = None):  # fmt: skip
        rasterio = _rasterio()
        self.path = os.fspath(path)
        _mkparent(self.path)
        folder, name = os.path.split(self.path)
        self._png = self.path.lower().endswith(".png")
        self._tmp = os.path.join(folder, f".{name}.partial")
        self._tmp_png = self._tmp + ".png"
        self.height, self.width, self.count = int(height), int(width), int(count)
        if self._png:
            crs = transform = nodata = colormap = None  # the PNG keeps pixels only
        profile = geotiff_profile(height, width, count, np.uint8, crs, transform, nodata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dst = rasterio.open(self._tmp, "w", **profile)
        try:
            if colormap is not None and count == 1:
                self._dst.write_colormap(1, colormap)
        except BaseException:
            self.abort()
            raise

    def write(self, top: int, rows: np.ndarray) -> None:
        from rasterio.windows import Window

        rows = rows[None] if rows.ndim == 2 else rows
        if rows.shape[0] != self.count or rows.shape[2] != self.width or not 0 <= top <= self.height - rows.shape[1]:
            raise ValueError(
                f"{self.path}: strip {rows.shape} at row {top} does not fit {self.count}x{self.height}x{self.width}"
            )
        self._dst.write(np.ascontiguousarray(rows, dtype=np.uint8), window=Window(0, top, self.width, rows.shape[1]))

    def close(self) -> None:
        """Finish the file and give it its name."""
        rasterio = _rasterio()
        try:
            self._dst.close()
            if self._png:
                import rasterio.shutil

                with rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml beside the PNG
                    rasterio.shutil.copy(self._tmp, self._tmp_png, driver="PNG")
                os.replace(self._tmp_png, self.path)
                os.remove(self._tmp)
            else:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove what was written."""
        try:
            self._dst.close()
        except Exception:  # noqa: BLE001 - already failing; the partial file goes anyway
            pass
        for p in (self._tmp, self._tmp_png):
            if os.path.lexists(p):
                os.remove(p)

    def __enter__(self) -> StripWriter:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def gdal_cache(megabytes: int = 64):
    """GDAL's block cache bounded to ``megabytes`` while inside: its default (5% of the RAM) would
    keep most of a large raster in memory once its windows have been read or written."""
    rasterio = _rasterio()
    with rasterio.Env(GDAL_CACHEMAX=int(megabytes)):
        yield


def list_images(folder: str, exts=IMAGE_EXTS) -> list[str]:
    """Sorted image files directly in ``folder``; a missing folder is a FileNotFoundError naming it."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(exts) and os.path.isfile(os.path.join(folder, f))
    )


@dataclass
class Scene:
    """A source scene for ``semiearth-prepare``: an image, its raw label (or None) and its role.

    ``role``: "train" (labelled/unlabelled pool), "val", "test", "pool" (no official split: val and
    test are held out from it as well), or "unlabeled" (no public labels; unlabelled data only).
    ``label_kind``: "index" (``encoding`` maps raw values) or "colour" (``encoding`` maps RGB).
    """

    name: str
    image: str
    label: str | None
    role: str
    label_kind: str = "index"
    encoding: dict | None = None


def find_mmseg_scenes(src: str, encoding: dict, roles: dict[str, str]) -> list[Scene] | None:
    """Scenes of an mmsegmentation-style layout: ``img_dir/<sub>/`` + ``ann_dir/<sub>/`` with
    sub-folders mapped to roles by ``roles`` (e.g. {"train": "train", "val": "test"}), or a flat
    ``img/`` + ``ann/`` (or ``img_dir/`` + ``ann_dir/`` without sub-folders): role "pool".
    None if ``src`` has no such layout."""
    for img_name, ann_name in (("img_dir", "ann_dir"), ("img", "ann")):
        img_root, ann_root = os.path.join(src, img_name), os.path.join(src, ann_name)
        if not os.path.isdir(img_root):
            continue
        subs = [s for s in sorted(os.listdir(img_root)) if os.path.isdir(os.path.join(img_root, s))]
        groups = [(os.path.join(img_root, s), os.path.join(ann_root, s), roles.get(s, "pool"), s) for s in subs]
        if not groups:
            groups = [(img_root, ann_root, "pool", "")]
        scenes = []
        for img_dir, ann_dir, role, sub in groups:
            for p in list_images(img_dir):
                stem = os.path.splitext(os.path.basename(p))[0]
                label = None
                for ext in (".png", ".tif"):
                    if os.path.isfile(os.path.join(ann_dir, stem + ext)):
                        label = os.path.join(ann_dir, stem + ext)
                        break
                r = role if label is not None else "unlabeled"
                scenes.append(Scene(f"{sub}_{stem}" if sub else stem, p, label, r, "index", encoding))
        return scenes
    return None
