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
Masks
    :func:`read_label` returns the raw label: ``[H,W]`` for index labels (palette PNGs give their
    indices), ``[H,W,3]`` uint8 for colour-coded labels.
"""

from __future__ import annotations

import os
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


def read_raster(path: str, bands: list[int] | None = None) -> Raster:
    """Raw bands of an image file as [bands,H,W] (all bands, or the 1-based ``bands``)."""
    path = os.fspath(path)
    _require_file(path)
    if is_geotiff(path):
        rasterio = _rasterio()
        try:
            with open_geotiff(path) as src:
                count = src.count
                if bands:
                    bad = [b for b in bands if not 1 <= int(b) <= count]
                    if bad:
                        raise DataError(f"{path}: band(s) {bad} requested but the file has {count} band(s)")
                    idx = [int(b) for b in bands]
                else:
                    idx = list(range(1, count + 1))
                data = src.read(idx)
                valid = None
                has_mask = src.nodata is not None or any(
                    rasterio.enums.MaskFlags.all_valid not in flags for flags in src.mask_flag_enums
                )
                if has_mask:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", rasterio.errors.NodataShadowWarning)
                        valid = src.dataset_mask() > 0
                    if valid.all():
                        valid = None
                return Raster(data, valid, src.crs, src.transform, src.nodata)
        except DataError:
            raise
        except Exception as e:  # rasterio raises RasterioIOError and friends, truncated data CPLE_*
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    try:
        with Image.open(path) as im:
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed it globally: we still refuse truncated files
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    im.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = True
            else:
                im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("1", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
                im = im.convert("RGBA" if mode == "LA" else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path} (unreadable or truncated): {e}") from e
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    valid = None
    if arr.shape[0] == 4 and not bands:  # RGBA: alpha 0 = no data
        valid = arr[3] > 0
        arr = arr[:3]
        if valid.all():
            valid = None
    if bands:
        bad = [b for b in bands if not 1 <= int(b) <= arr.shape[0]]
        if bad:
            raise DataError(f"{path}: band(s) {bad} requested but the file has {arr.shape[0]} band(s)")
        arr = arr[[int(b) - 1 for b in bands]]
    return Raster(np.ascontiguousarray(arr), valid)


def to_rgb_float(data: np.ndarray, value_scale: float = 255.0, source: str = "<array>") -> np.ndarray:
    """[bands,H,W] raw -> float32 [3,H,W] in [0,1] (first three bands; one band repeated)."""
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    elif data.shape[0] == 2:
        raise DataError(f"{source}: 2 bands cannot make RGB; select 1 or 3 bands (config data.bands)")
    data = data[:3]
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.bool_:
        return data.astype(np.float32)
    check_value_scale(data, value_scale, source)
    out = data.astype(np.float32) / float(value_scale)
    return np.clip(out, 0.0, 1.0, out=out)


MAX_CLIPPED = 0.01  # share of values above value_scale beyond which the scale is wrong, not the pixels


def check_value_scale(data: np.ndarray, value_scale: float, source: str = "<array>") -> None:
    """Refuse a non-uint8 image [bands,H,W] whose values mostly lie above ``value_scale``.

    A few saturated pixels (clouds in reflectance data) are clipped to 1.0 as intended; more than 1%
    means the scale does not fit the data (a 16-bit image read with the 8-bit default 255 would be
    all white), so it is an error that names the fix instead of a silently wrong result."""
    if value_scale <= 0:
        raise DataError(f"{source}: data.value_scale must be > 0, got {value_scale}")
    above = int(np.count_nonzero(data > value_scale))
    if above > MAX_CLIPPED * data.size:
        raise DataError(
            f"{source}: {100 * above / data.size:.0f}% of the values of this {data.dtype} image exceed "
            f"data.value_scale={value_scale:g} (max {data.max()}) and would all be clipped to 1.0; set data.value_scale "
            "to the value of full brightness (65535 for 16-bit, 4095 for 12-bit, 10000 for reflectance; "
            "semiearth-predict --value-scale, semiearth-prepare --value-scale)"
        )


def read_image(
    path: str, bands: list[int] | None = None, value_scale: float = 255.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image file -> (float32 [3,H,W] RGB in [0,1], valid [H,W] bool or None)."""
    r = read_raster(path, bands)
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
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im)
            elif im.mode == "1":
                arr = np.asarray(im).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read label {path} (unreadable or truncated): {e}") from e
    return arr


def read_label_palette(path: str) -> np.ndarray | None:
    """The colour table [256,3] uint8 of a palette (P mode) PNG label, else None."""
    if is_geotiff(path):
        return None
    with Image.open(path) as im:
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
        with Image.open(path) as im:
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


def write_geotiff(
    path: str, data: np.ndarray, crs=None, transform=None, nodata=None, colormap: dict | None = None
) -> None:
    """Write [bands,H,W] (or [H,W]) as a deflate-compressed GeoTIFF with the given georeference."""
    rasterio = _rasterio()
    if data.ndim == 2:
        data = data[None]
    _mkparent(path)
    profile = dict(
        driver="GTiff",
        height=int(data.shape[1]),
        width=int(data.shape[2]),
        count=int(data.shape[0]),
        dtype=data.dtype.name,
        compress="deflate",
    )
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if data.shape[0] not in (1, 3):
        profile["photometric"] = "MINISBLACK"  # extra bands are data (e.g. NIR), not alpha
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colormap is not None and data.shape[0] == 1 and data.dtype == np.uint8:
                dst.write_colormap(1, colormap)


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
