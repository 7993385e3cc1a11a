"""``semiearth-prepare``: official dataset downloads -> a prepared folder that every SemiEarth dataset
class reads.

What it does, per source scene (see each dataset class's ``find_scenes`` for the layouts read; the
datasets are those of semiearth.data.registry whose class has one), in four steps -- read, tile,
split, write (:func:`read_scene`, :func:`cut_tiles`, :func:`split_tiles`, :func:`write_splits` and
:func:`write_meta`):

1. reads the image (all bands, raw dtype) and its label, checks that both have the same size, and
   converts the label to train ids through the dataset's stated encoding
   (:mod:`semiearth.data.classes`). Unknown colours / values are reported with their pixel counts
   per file and stop the run, unless ``--on-unknown ignore`` maps them to ignore (still reported).
   Image no-data (GeoTIFF nodata / mask / alpha) becomes ignore in the mask; NaN/inf values of float
   images are refused naming the file, or are no-data where the file declares no-data. Any file name
   the OS allows is read (:func:`readable_path`) and tiles get names safe for split lists
   (:func:`safe_name`).
2. cuts ``--tile`` x ``--tile`` tiles every ``--stride`` pixels; the last row/column of tiles is
   aligned with the scene's edge so that the tiles cover the scene exactly (scenes smaller than a
   tile stay whole). Images are written losslessly: PNG for PNG/JPEG sources, GeoTIFF (with each
   tile's own georeference) for GeoTIFF sources; masks as single-channel index PNGs (255 = ignore).
3. assigns *scenes* (never single tiles, so tiles of one scene never straddle splits) to train / val /
   test: the official split where the dataset has one, the rest held out from the train pool with
   ``--val-frac`` / ``--test-frac`` (seeded). With fewer than 3 scenes the hold-out is per tile
   (then ``--stride`` must be >= ``--tile``, so that tiles do not share pixels).
   ``--protocol semiearth`` instead reproduces the SemiEarth authors' split (:func:`patch_split`):
   all labelled patches of all scenes (official train and test alike) shuffled 60/20/20, so scenes
   straddle the splits; a warning is printed and written into summary.md (docs/protocols.md).
4. writes ``splits/<a>_<b>/labeled.txt`` + ``unlabeled.txt`` for every ratio a/b (nested: the 1/100
   labelled tiles are among the 5/100 ones), ``splits/train.txt``, ``val.txt``, ``test.txt``; checks
   that no tile (and no scene, for scene-level splits) is in two of them; writes ``summary.json`` /
   ``summary.md`` (tiles, scenes, class pixel counts and frequencies, ignore share and image mean/std
   per split) and ``semiearth.json`` (everything needed to re-assemble the scenes: see
   :func:`assemble`).

Same arguments and seed -> byte-identical lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from semiearth.cli import printable
from semiearth.data.classes import (
    IGNORE_INDEX,
    SPECS,
    LabelError,
    convert_colour_mask,
    convert_index_mask,
)
from semiearth.data.deepglobe import BINARISED, binarise
from semiearth.data.folder import PREPARED_META
from semiearth.data.io import (
    DataError,
    Scene,
    check_same_size,
    image_bands,
    is_geotiff,
    read_label,
    read_label_palette,
    read_raster,
    to_rgb_float,
    write_geotiff,
    write_index_png,
    write_raster_png,
)
from semiearth.data.registry import dataset_spec, scene_finder
from semiearth.files import current_umask

DEFAULT_RATIOS = ("1/100", "5/100", "10/100")
PROTOCOLS = ("scene", "semiearth")
# default (val, test) shares per protocol: of the train scenes (scene), of all labelled patches (semiearth:
# the SemiEarth authors' 60/20/20, splits/splits.py of their repository)
DEFAULT_FRACS = {"scene": (0.1, 0.1), "semiearth": (0.2, 0.2)}
PATCH_WARNING = (
    "--protocol semiearth splits PATCHES at random over all tiles, so tiles (scenes) straddle train, val and "
    "test: neighbouring patches of one scene are in training and in test, which inflates test mIoU "
    "(docs/protocols.md measures by how much). Use it only to compare with the SemiEarth paper's tables; "
    "the default --protocol scene gives leak-free numbers."
)


# ----------------------------------------------------------------------------------------- helpers
def parse_ratio(text) -> Fraction:
    """'1/100', '0.05', '5%' or a number -> Fraction in (0, 1)."""
    s = str(text).strip()
    try:
        if s.endswith("%"):
            r = Fraction(s[:-1]) / 100
        else:
            r = Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"bad ratio {text!r}: use a/b (1/100), a decimal (0.05) or a percentage (5%)") from None
    r = r.limit_denominator(100000)
    if not 0 < r < 1:
        raise ValueError(f"ratio {text!r} must be strictly between 0 and 1")
    return r


def ratio_tag(r: Fraction) -> str:
    """Fraction(1, 100) -> '1_100' (the split folder name); 5/100 stays '5_100'."""
    return f"{r.numerator}_{r.denominator}"


def _ratio_tag_text(text) -> str:
    s = str(text).strip()
    if "/" in s:  # keep the user's own form: 5/100 -> 5_100 (not 1_20)
        a, b = s.split("/", 1)
        if a.strip().isdigit() and b.strip().isdigit():
            return f"{int(a)}_{int(b)}"
    return ratio_tag(parse_ratio(text))


def safe_name(name: str) -> str:
    """`name` usable as a tile file name in split lists (whitespace-separated, UTF-8): whitespace,
    control characters, bytes that are not UTF-8 (surrogate escapes of os.listdir) and '%' are
    written as %XX of their bytes, so distinct scene names stay distinct ('a b' -> 'a%20b')."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a raw byte of a file name that is not UTF-8
            out.append(f"%{code - 0xDC00:02X}")
        elif ch == "%" or ch.isspace() or not ch.isprintable() or 0xD800 <= code <= 0xDFFF:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def readable_path(path: str | None):
    """`path`, or for a GeoTIFF whose name is not UTF-8 (GDAL takes only UTF-8 names) a UTF-8 symlink
    to it; errors raised while it is in use name `path`, not the link."""
    if path is None or _utf8(path) or not is_geotiff(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="semiearth-link-")
    link = os.path.join(folder, "source" + os.path.splitext(path)[1])
    try:
        os.symlink(os.path.abspath(path), link)
        yield link
    except (DataError, LabelError) as err:
        raise type(err)(str(err).replace(link, printable(path))) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with windows of ``tile`` every ``stride``; the last window
    is aligned with the end. A length <= tile gives one window [0, length). (The package's one
    window-start helper, :func:`semiearth.eval.inference.window_starts`.)"""
    from semiearth.eval.inference import window_starts

    return window_starts(length, tile, stride)


@dataclass
class Tile:
    name: str
    scene: str
    x0: int
    y0: int
    x1: int
    y1: int
    image: str
    mask: str | None
    counts: list[int]  # pixels per train id 0..C-1, then ignore
    rgb_sum: list[float]
    rgb_sqsum: list[float]
    valid_px: int


def find_scenes(dataset: str, src: str, **kw) -> list[Scene]:
    """The source scenes of `dataset` in `src`, by the dataset class's own `find_scenes` (registry)."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"source folder not found: {src}")
    scenes = scene_finder(dataset)(src, **kw)
    if not scenes:
        raise DataError(f"no {dataset} scenes found in {src}")
    names = [s.name for s in scenes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"{src}: scene names are not unique: {sorted(dup)[:5]}")
    return scenes


def check_same_bands(scenes: list[Scene]) -> None:
    """All scene images must give the same number of bands (read from headers, before any work):
    a grayscale scene among RGB ones would make tiles of another kind without a word."""
    bands = {}
    for s in scenes:
        with readable_path(s.image) as path:
            bands[s.image] = image_bands(path)
    counts = Counter(b for b in bands.values() if b is not None)
    if len(counts) <= 1:
        return
    usual = counts.most_common(1)[0][0]
    odd = sorted(p for p, b in bands.items() if b is not None and b != usual)
    raise DataError(
        f"{len(odd)} of {len(scenes)} scene image(s) have another number of bands than the other scenes' {usual}, "
        f"e.g. {printable(odd[0])} ({bands[odd[0]]} band(s)): convert them (e.g. grayscale to RGB) or leave them out"
    )


def convert_label(scene: Scene, on_unknown: str, palette=None, dataset: str = "") -> tuple[np.ndarray, dict]:
    """Raw label of `scene` -> (train ids [H,W] uint8, unknown values/colours with pixel counts).

    `scene.label_kind`: "index", "colour", or "colour_binarised" (every channel set to 0/255 at 128
    first, as DeepGlobe's official README asks: its masks are not always exact 0/255).

    `palette` (train id -> RGB of the dataset) lets a palette PNG given as an index label be checked:
    its colours must be the dataset's (or gray), so another dataset's colour labels saved as palette
    PNGs are not read as indices."""
    raw = read_label(scene.label)
    colours = read_label_palette(scene.label) if raw.ndim == 2 else None
    if scene.label_kind in ("colour", BINARISED):
        if raw.ndim == 2 and colours is not None:  # a colour label stored as a palette PNG
            raw = colours[raw]
        if raw.ndim == 2:
            raise LabelError(f"{scene.label}: expected a colour (RGB) label, got a single-channel image")
        if scene.label_kind == BINARISED:  # DeepGlobe: channels binarised at 128, then the colour lookup
            raw = binarise(raw)
        return convert_colour_mask(raw, scene.encoding, scene.label, on_unknown="ignore")
    if raw.ndim == 3:
        raise LabelError(f"{scene.label}: expected an index label, got {raw.shape[2]} channels (a colour label?)")
    if colours is not None and palette is not None:
        check_label_colours(scene, raw, colours, palette, dataset)
    return convert_index_mask(raw, scene.encoding, scene.label, on_unknown="ignore")


def check_label_colours(scene: Scene, raw: np.ndarray, colours: np.ndarray, palette, dataset: str) -> None:
    """LabelError with pixel counts if the palette colours of `raw`'s values are neither gray (plain
    indices) nor the dataset's colour of the class each value maps to."""
    values, counts = np.unique(raw, return_counts=True)
    wrong: dict[tuple, int] = {}
    for v, n in zip(values.tolist(), counts.tolist(), strict=True):
        rgb = tuple(int(c) for c in colours[v])
        tid = scene.encoding.get(v)
        own = tid is not None and tid < len(palette) and tuple(palette[tid]) == rgb
        if not (own or rgb[0] == rgb[1] == rgb[2]):
            wrong[rgb] = wrong.get(rgb, 0) + n
    if not wrong:
        return
    text = ", ".join(f"RGB{c}: {n} px" for c, n in sorted(wrong.items(), key=lambda x: -x[1]))
    others = [s.name for s in SPECS.values() if s.colour_encoding and set(wrong) <= set(s.colour_encoding)]
    hint = f"these are the label colours of {'/'.join(others)}: semiearth-prepare {others[0]}" if others else (
        f"if it holds {dataset} index values, save it as a grayscale PNG")  # fmt: skip
    raise LabelError(f"{scene.label}: a palette label whose colours are not {dataset}'s ({text}); {hint}")


# ----------------------------------------------------------------------------------------- assign
def assign_splits(scenes: list[Scene], val_frac: float, test_frac: float, seed: int) -> tuple[dict, str]:
    """Scene name -> split in {train, val, test, unlabeled}; and the split level ("scene"/"tile").

    Tile level is returned when held-out splits are needed but fewer than 3 labelled scenes exist;
    then every labelled scene maps to "train" and :func:`_tile_holdout` splits its tiles."""
    out = {}
    pool = []
    for s in scenes:
        if s.label is None or s.role == "unlabeled":
            out[s.name] = "unlabeled"
        elif s.role in ("val", "test"):
            out[s.name] = s.role
        else:
            pool.append(s.name)
    pool.sort()
    have_val = any(v == "val" for v in out.values())
    have_test = any(v == "test" for v in out.values())
    need_val = 0 if have_val or val_frac <= 0 else max(1, round(val_frac * len(pool)))
    need_test = 0 if have_test or test_frac <= 0 else max(1, round(test_frac * len(pool)))
    if (need_val or need_test) and len(pool) < 3:
        for n in pool:
            out[n] = "train"
        return out, "tile"
    while need_val + need_test > len(pool) - 1:  # keep at least one train scene
        if need_val >= need_test and need_val > 1:
            need_val -= 1
        elif need_test > 1:
            need_test -= 1
        else:
            break
    rng = np.random.default_rng([seed, 0])
    order = [pool[i] for i in rng.permutation(len(pool))]
    for n in order[:need_val]:
        out[n] = "val"
    for n in order[need_val : need_val + need_test]:
        out[n] = "test"
    for n in order[need_val + need_test :]:
        out[n] = "train"
    return out, "scene"


def _overlap_groups(tiles: list) -> list[list[str]]:
    """Tiles grouped so that tiles sharing pixels (edge-aligned last tiles) stay together."""
    parent = {t.name: t.name for t in tiles}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    by_scene: dict[str, list] = {}
    for t in tiles:
        by_scene.setdefault(t.scene, []).append(t)
    for ts in by_scene.values():
        for i, a in enumerate(ts):
            for b in ts[i + 1 :]:
                if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                    parent[find(a.name)] = find(b.name)
    groups: dict[str, list[str]] = {}
    for t in tiles:
        groups.setdefault(find(t.name), []).append(t.name)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def _tile_holdout(train_tiles: list, val_frac, test_frac, have_val, have_test, seed) -> tuple[list, list, list]:
    """Hold out val/test from the train tiles by groups of pixel-sharing tiles (seeded)."""
    groups = _overlap_groups(train_tiles)
    n = len(groups)
    nv = 0 if have_val or val_frac <= 0 else max(1, round(val_frac * n))
    nt = 0 if have_test or test_frac <= 0 else max(1, round(test_frac * n))
    if nv + nt > n - 1:
        raise DataError(
            f"only {n} group(s) of disjoint labelled tiles: cannot hold out {nv} val + {nt} test and keep one for "
            "training; use a smaller --tile, more scenes, or --val-frac/--test-frac 0"
        )
    rng = np.random.default_rng([seed, 0])
    order = [groups[i] for i in rng.permutation(n)]

    def flat(gs):
        return [name for g in gs for name in g]

    return flat(order[nv + nt :]), flat(order[:nv]), flat(order[nv : nv + nt])


def patch_split(names: list[str], val_frac: float, test_frac: float, seed: int) -> tuple[list, list, list]:
    """The SemiEarth authors' split (their splits/splits.py): every labelled patch of every scene
    shuffled (seeded), the first floor(train share x n) train, the next floor(val_frac x n) val, the
    rest test -- so patches of one scene land in several splits. At least one patch per non-empty
    share (tiny sets); (train, val, test) names."""
    names = sorted(names)
    n = len(names)
    fv, ft = Fraction(str(val_frac)), Fraction(str(test_frac))
    n_train = max(1, int((1 - fv - ft) * n))
    n_val = max(1, int(fv * n)) if fv > 0 else 0
    if n_train + n_val + (1 if ft > 0 else 0) > n:
        raise DataError(
            f"only {n} labelled patch(es): cannot split them {float(1 - fv - ft):.0%}/{float(fv):.0%}/{float(ft):.0%} "
            "(train/val/test) with one in each; use a smaller --tile or more scenes"
        )
    order = [names[i] for i in np.random.default_rng([seed, 2]).permutation(n)]
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


# ----------------------------------------------------------------------------------------- main
def prepare(
    dataset: str,
    src: str,
    out: str,
    tile: int = 512,
    stride: int | None = None,
    ratios=DEFAULT_RATIOS,
    seed: int = 0,
    val_frac: float | None = None,
    test_frac: float | None = None,
    on_unknown: str = "error",
    label_variant: str = "auto",
    image_variant: str = "RGB",
    num_classes: int | None = None,
    value_scale: float = 255.0,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    protocol: str = "scene",
) -> dict:
    """Prepare ``dataset`` from ``src`` into ``out``; returns the summary dict (also written).

    ``protocol``: "scene" (default, leak-free: whole scenes per split) or "semiearth" (the SemiEarth
    authors' split: all labelled patches of all scenes shuffled 60/20/20; see :func:`patch_split`).
    ``val_frac`` / ``test_frac`` None: the protocol's default (:data:`DEFAULT_FRACS`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown --protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    val_frac = DEFAULT_FRACS[protocol][0] if val_frac is None else val_frac
    test_frac = DEFAULT_FRACS[protocol][1] if test_frac is None else test_frac
    stride = tile if stride is None else stride
    if tile < 1 or stride < 1:
        raise ValueError(f"--tile and --stride must be >= 1, got {tile} and {stride}")
    for name, frac in (("--val-frac", val_frac), ("--test-frac", test_frac)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be a share in [0, 1), got {frac}")
    if val_frac + test_frac >= 1:
        raise ValueError(f"--val-frac + --test-frac must be < 1 (some scenes must train), got {val_frac + test_frac:g}")
    if on_unknown not in ("error", "ignore"):
        raise ValueError("on_unknown must be 'error' or 'ignore'")
    tags = []
    for r in ratios:
        parse_ratio(r)
        tags.append((parse_ratio(r), _ratio_tag_text(r)))
    tags = sorted(dict((t, r) for r, t in tags).items(), key=lambda x: x[1])  # unique tags, by ratio
    scene_finder(dataset)  # an unknown dataset fails here, before any work
    spec = dataset_spec(dataset)  # the dataset's class table; None: the user gives --num-classes
    if spec is None:
        if not num_classes:
            raise ValueError(f"semiearth-prepare {dataset} needs --num-classes")
        class_names = [f"class_{i}" for i in range(num_classes)]
        from semiearth.data.classes import default_palette

        palette = [list(c) for c in default_palette(num_classes)]
    else:
        num_classes, class_names, palette = spec.num_classes, list(spec.class_names), [list(c) for c in spec.palette]

    scenes = find_scenes(
        dataset, src, label_variant=label_variant, image_variant=image_variant, num_classes=num_classes
    )
    check_same_bands(scenes)
    final_out = out
    if os.path.exists(out) and os.listdir(out):
        if not overwrite:
            raise FileExistsError(f"output folder is not empty: {out} (use --overwrite to replace it)")
        if not os.path.isfile(os.path.join(out, PREPARED_META)):
            raise FileExistsError(
                f"--overwrite refuses to replace {out}: it is not a prepared folder ({PREPARED_META} missing)"
            )
    # everything is written to a temporary sibling folder, renamed to `out` only when complete
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    out = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.partial-", dir=parent)
    os.chmod(out, 0o777 & ~current_umask())  # mkdtemp's 0700 would make the prepared folder private
    plan = Plan(
        dataset=dataset, src=src, tile=tile, stride=stride, tags=tags, seed=seed, val_frac=val_frac,
        test_frac=test_frac, on_unknown=on_unknown, label_variant=label_variant, num_classes=num_classes,
        class_names=class_names, palette=palette, check_palette=spec is not None, value_scale=value_scale,
        protocol=protocol,
    )  # fmt: skip
    try:
        summary = _prepare_into(out, scenes, plan, progress=progress, log=log)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if os.path.exists(final_out):
        shutil.rmtree(final_out)
    os.replace(out, final_out)
    log(f"prepared {summary['tiles']} tiles from {summary['scenes']} scenes into {final_out}")
    return summary


@dataclass(frozen=True)
class Plan:
    """The arguments of one `prepare` call that its steps read."""

    dataset: str
    src: str
    tile: int
    stride: int
    tags: list  # [(folder tag, Fraction)] sorted by ratio
    seed: int
    val_frac: float
    test_frac: float
    on_unknown: str
    label_variant: str
    num_classes: int
    class_names: list
    palette: list
    check_palette: bool  # palette PNG labels must use the dataset's colours (datasets with a class table)
    value_scale: float
    protocol: str = "scene"  # "scene" (leak-free) or "semiearth" (patch-level, the authors' split)


def _prepare_into(out: str, scenes: list[Scene], plan: Plan, *, progress: bool, log) -> dict:
    """read -> tile (per scene), then split -> write, into the (temporary) folder `out`."""
    if plan.protocol == "semiearth":  # every labelled scene to the patch pool; split per patch later
        split_of = {s.name: "unlabeled" if s.label is None or s.role == "unlabeled" else "train" for s in scenes}
        level = "patch"
    else:
        split_of, level = assign_splits(scenes, plan.val_frac, plan.test_frac, plan.seed)
    if level == "tile" and plan.stride < plan.tile:
        raise DataError(
            f"only {sum(s.label is not None for s in scenes)} labelled scene(s): val/test are held out per tile, "
            f"which needs --stride >= --tile (got {plan.stride} < {plan.tile}) so that splits share no pixels"
        )
    tiles: list[Tile] = []
    scene_meta: dict[str, dict] = {}
    unknown_report: dict[str, dict] = {}
    failed = False
    for scene in _progress(scenes, plan.dataset, progress):
        raster, mask, unknown = read_scene(scene, plan=plan)
        if unknown:
            unknown_report[scene.label] = unknown
            failed = failed or plan.on_unknown == "error"
        if failed:
            continue  # keep checking labels for the full report, write nothing more
        scene_meta[scene.name] = scene_record(scene, raster, split=split_of[scene.name])
        tiles += cut_tiles(scene, raster, mask, out=out, plan=plan)
    report_unknown(unknown_report, plan=plan, log=log)
    by_split = split_tiles(tiles, split_of, level, plan=plan)
    lists, ratio_info = write_splits(out, tiles, by_split, plan=plan)
    write_meta(out, plan=plan, level=level, ratio_info=ratio_info, unknown=unknown_report, scenes=scene_meta,
               tiles=tiles)  # fmt: skip
    check_splits(out)
    summary = summarise(out, tiles, lists, plan.num_classes, plan.class_names, protocol=plan.protocol)
    log(summary_markdown(summary))
    summary["tiles"], summary["scenes"] = len(tiles), len(scene_meta)
    return summary


def _progress(scenes: list[Scene], dataset: str, progress: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return scenes
    return tqdm(scenes, desc=f"prepare {dataset}", unit="scene", file=sys.stderr) if progress else scenes


# ----------------------------------------------------------------------------------------- read
def read_scene(scene: Scene, *, plan: Plan):
    """(raster, mask [H,W] uint8 train ids or None, unknown values/colours -> pixels) of one scene.

    The mask matches the image's size, holds no value outside 0..C-1 but ignore, and is ignore
    where the image has no data."""
    with readable_path(scene.image) as path:  # NaN/inf refused naming the file, or no-data where it declares some
        raster = read_raster(path, nonfinite="refuse")
    h, w = raster.shape
    if scene.label is None:
        return raster, None, {}
    palette = plan.palette if plan.check_palette else None
    with readable_path(scene.label) as path:
        mask, unknown = convert_label(dataclasses.replace(scene, label=path), plan.on_unknown, palette, plan.dataset)
    check_same_size((h, w), mask.shape, scene.image, scene.label)
    bad = (mask >= plan.num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        vals, cnts = np.unique(mask[bad], return_counts=True)
        raise LabelError(
            f"{scene.label}: label values outside the class range 0..{plan.num_classes - 1}: "
            + ", ".join(f"{v}: {c} px" for v, c in zip(vals.tolist(), cnts.tolist(), strict=True))
        )
    if raster.valid is not None:
        mask = mask.copy()
        mask[~raster.valid] = IGNORE_INDEX
    return raster, mask, {str(k): v for k, v in unknown.items()}


def report_unknown(unknown_report: dict, *, plan: Plan, log) -> None:
    """Stop with the per-file report of unknown label values (--on-unknown error), or log it (ignore)."""
    if not unknown_report:
        return
    lines = [f"  {path}: " + ", ".join(f"{k}: {v} px" for k, v in rep.items()) for path, rep in unknown_report.items()]
    if plan.on_unknown == "error":
        raise LabelError(
            f"{len(unknown_report)} label file(s) hold values/colours outside the {plan.dataset} encoding "
            "(nothing is mapped silently; rerun with --on-unknown ignore to map them to ignore):\n" + "\n".join(lines)
        )
    log(
        f"warning: unknown label values/colours mapped to ignore (--on-unknown ignore) in {len(unknown_report)} file(s):"
    )
    for text in lines:
        log(text)


def scene_record(scene: Scene, raster, *, split: str) -> dict:
    """What semiearth.json keeps of a source scene (enough to re-assemble it)."""
    h, w = raster.shape
    return {
        "image": os.path.abspath(scene.image),
        "label": os.path.abspath(scene.label) if scene.label else None,
        "role": scene.role,
        "split": split,
        "height": h,
        "width": w,
        "bands": int(raster.data.shape[0]),
        "dtype": raster.data.dtype.name,
        "crs": str(raster.crs) if raster.crs else None,
        "transform": list(raster.transform)[:6] if raster.transform is not None else None,
    }


# ----------------------------------------------------------------------------------------- tile
def cut_tiles(scene: Scene, raster, mask, *, out: str, plan: Plan) -> list[Tile]:
    """Write the scene's tiles (images losslessly, masks as index PNGs) and return them with their
    class counts and colour sums."""
    h, w = raster.shape
    geo = is_geotiff(scene.image)
    ext = ".tif" if geo or not (raster.data.dtype == np.uint8 and raster.data.shape[0] in (1, 3, 4)) else ".png"
    c = plan.num_classes
    tiles = []
    for y0 in tile_starts(h, plan.tile, plan.stride):
        for x0 in tile_starts(w, plan.tile, plan.stride):
            y1, x1 = min(y0 + plan.tile, h), min(x0 + plan.tile, w)
            name = f"{safe_name(scene.name)}_{x0}_{y0}_{x1}_{y1}"
            data = raster.data[:, y0:y1, x0:x1]
            img_rel = f"images/{name}{ext}"
            if ext == ".tif":
                tr = None
                if raster.transform is not None and geo:
                    from affine import Affine

                    tr = raster.transform @ Affine.translation(x0, y0)  # the tile's own georeference
                write_geotiff(os.path.join(out, img_rel), np.ascontiguousarray(data), raster.crs, tr, raster.nodata)
            else:
                write_raster_png(os.path.join(out, img_rel), np.ascontiguousarray(data))
            valid = raster.valid[y0:y1, x0:x1] if raster.valid is not None else None
            rgb = (
                to_rgb_float(data, plan.value_scale, scene.image)
                if data.shape[0] != 2
                else to_rgb_float(data[:1], plan.value_scale, scene.image)
            )
            if valid is not None:
                rgb = rgb[:, valid]
            rgb = rgb.reshape(3, -1).astype(np.float64)
            mask_rel, counts = None, [0] * (c + 1)
            if mask is not None:
                m = mask[y0:y1, x0:x1]
                mask_rel = f"masks/{name}.png"
                write_index_png(os.path.join(out, mask_rel), m)
                bc = np.bincount(m.ravel(), minlength=256)
                counts = [int(v) for v in bc[:c]] + [int(bc[IGNORE_INDEX])]
            tiles.append(
                Tile(
                    name=name,
                    scene=scene.name,
                    x0=x0,
                    y0=y0,
                    x1=x1,
                    y1=y1,
                    image=img_rel,
                    mask=mask_rel,
                    counts=counts,
                    rgb_sum=rgb.sum(1).tolist(),
                    rgb_sqsum=(rgb**2).sum(1).tolist(),
                    valid_px=int(rgb.shape[1]),
                )  # fmt: skip
            )
    return tiles


# ----------------------------------------------------------------------------------------- split
def split_tiles(tiles: list[Tile], split_of: dict, level: str, *, plan: Plan) -> dict[str, list[str]]:
    """Tile names per split (train, val, test, unlabeled), sorted; tile-level hold-out when `level`
    is "tile", the SemiEarth authors' random patch split when it is "patch"."""
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": [], "unlabeled": []}
    for t in tiles:
        by_split[split_of[t.scene]].append(t.name)
    if level == "patch":
        by_split["train"], by_split["val"], by_split["test"] = patch_split(
            by_split["train"], plan.val_frac, plan.test_frac, plan.seed
        )
    if level == "tile":
        have_val = any(s == "val" for s in split_of.values())
        have_test = any(s == "test" for s in split_of.values())
        train_set = set(by_split["train"])
        tr, va, te = _tile_holdout(
            [t for t in tiles if t.name in train_set], plan.val_frac, plan.test_frac, have_val, have_test, plan.seed
        )
        by_split["train"], by_split["val"], by_split["test"] = tr, by_split["val"] + va, by_split["test"] + te
    for k in by_split:
        by_split[k].sort()
    if not by_split["train"]:
        raise DataError(f"no labelled training tiles in {plan.src}")
    return by_split


# ----------------------------------------------------------------------------------------- write
def labeled_split(train: list[str], ratio, seed: int, floor: bool = False) -> tuple[list[str], list[str]]:
    """(labelled, unlabelled) names of the train pool at `ratio`, each sorted: the first
    k = round(ratio * len) (at least 1) of one seeded order, so the ratios of one seed are nested.
    ``floor``: k = int(ratio * len) (at least 1), the SemiEarth authors' rule (--protocol semiearth).
    Shared by `write_splits` and the torchgeo data source (semiearth/data/torchgeo.py)."""
    ordered = [train[i] for i in np.random.default_rng([seed, 1]).permutation(len(train))]
    k = int(parse_ratio(ratio) * len(train)) if floor else round(float(ratio) * len(train))
    k = min(len(train), max(1, k))
    return sorted(ordered[:k]), sorted(ordered[k:])


def write_splits(out: str, tiles: list[Tile], by_split: dict, *, plan: Plan) -> tuple[dict, dict]:
    """splits/train.txt, val.txt, test.txt, unlabeled_only.txt and <a>_<b>/labeled.txt + unlabeled.txt
    for every ratio (nested: seeded order, the first k train tiles are labelled); returns (the lists
    by file, the per-ratio counts)."""
    tile_of = {t.name: t for t in tiles}

    def line(name: str) -> str:
        t = tile_of[name]
        return f"{t.image} {t.mask}" if t.mask else t.image

    split_dir = os.path.join(out, "splits")
    os.makedirs(split_dir, exist_ok=True)
    lists: dict[str, list[str]] = {}

    def write_list(rel: str, names: list[str]) -> None:
        lists[rel] = names
        with open(os.path.join(split_dir, rel), "w") as f:
            f.writelines(line(n) + "\n" for n in names)

    write_list("train.txt", by_split["train"])
    for key in ("val", "test"):
        if by_split[key]:
            write_list(f"{key}.txt", by_split[key])
    if by_split["unlabeled"]:
        write_list("unlabeled_only.txt", by_split["unlabeled"])
    train = by_split["train"]
    ratio_info = {}
    authors = plan.protocol == "semiearth"  # their rule: int(p * n) labelled, unlabelled = the other train patches
    for tag, r in plan.tags:
        labeled, rest = labeled_split(train, r, plan.seed, floor=authors)
        unlabeled = rest + ([] if authors else by_split["unlabeled"])
        os.makedirs(os.path.join(split_dir, tag), exist_ok=True)
        write_list(f"{tag}/labeled.txt", labeled)
        if unlabeled:
            write_list(f"{tag}/unlabeled.txt", unlabeled)
        ratio_info[tag] = {"ratio": str(r), "labeled": len(labeled), "unlabeled": len(unlabeled)}
    return lists, ratio_info


def write_meta(out: str, *, plan: Plan, level: str, ratio_info: dict, unknown: dict, scenes: dict, tiles) -> None:
    """semiearth.json: sources, encodings, splits and tile boxes (see :func:`assemble`)."""
    c = plan.num_classes
    meta = {
        "format": "semiearth-prepared/1",
        "dataset": plan.dataset,
        "src": os.path.abspath(plan.src),
        "tile": plan.tile,
        "stride": plan.stride,
        "seed": plan.seed,
        "val_frac": plan.val_frac,
        "test_frac": plan.test_frac,
        "split_level": level,
        "protocol": plan.protocol,
        **({"warning": PATCH_WARNING} if plan.protocol == "semiearth" else {}),
        "ratios": ratio_info,
        "on_unknown": plan.on_unknown,
        "label_variant": plan.label_variant,
        "num_classes": c,
        "class_names": plan.class_names,
        "palette": plan.palette,
        "ignore_index": IGNORE_INDEX,
        "mask_encoding": f"train ids 0..{c - 1}, {IGNORE_INDEX} = ignore (no-data, boundary, unknown)",
        "unknown_labels": unknown,
        "scenes": scenes,
        "tiles": [
            {"name": t.name, "scene": t.scene, "box": [t.x0, t.y0, t.x1, t.y1], "image": t.image, "mask": t.mask}
            for t in tiles
        ],
    }
    with open(os.path.join(out, PREPARED_META), "w") as f:
        json.dump(meta, f, indent=1)


# ----------------------------------------------------------------------------------------- checks
def _read_list_names(path: str) -> list[str]:
    with open(path) as f:
        return [os.path.splitext(os.path.basename(ln.split()[0]))[0] for ln in f if ln.strip()]


def check_splits(out: str) -> None:
    """Raise DataError if any tile (or, for scene-level splits, any scene) is in two disjoint splits,
    or (tile level) two tiles of different splits share pixels."""
    with open(os.path.join(out, PREPARED_META)) as f:
        meta = json.load(f)
    tiles = {t["name"]: t for t in meta["tiles"]}
    sd = os.path.join(out, "splits")

    def load(rel):
        p = os.path.join(sd, rel)
        return set(_read_list_names(p)) if os.path.isfile(p) else set()

    train, val, test = load("train.txt"), load("val.txt"), load("test.txt")
    extra = load("unlabeled_only.txt")
    groups = {"train": train, "val": val, "test": test, "unlabeled_only": extra}
    problems = []
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = groups[a] & groups[b]
            if both:
                problems.append(f"{len(both)} tile(s) in both {a} and {b}, e.g. {sorted(both)[0]}")
    for tag in meta.get("ratios", {}):
        lab, unl = load(f"{tag}/labeled.txt"), load(f"{tag}/unlabeled.txt")
        if lab & unl:
            problems.append(f"{tag}: {len(lab & unl)} tile(s) both labeled and unlabeled")
        for other, s in (("val", val), ("test", test)):
            if (lab | unl) & s:
                problems.append(f"{tag}: {len((lab | unl) & s)} tile(s) of labeled/unlabeled also in {other}")
        if not lab <= train:
            problems.append(f"{tag}: labeled tiles outside train.txt")
    scene_split = {}
    for g, members in groups.items():
        for n in members:
            if n not in tiles:
                problems.append(f"{g}: tile {n} is not in {PREPARED_META}")
                continue
            scene_split.setdefault(tiles[n]["scene"], set()).add(g)
    if meta.get("split_level") == "scene":
        for scene, gs in scene_split.items():
            if len(gs) > 1:
                problems.append(f"scene {scene} has tiles in {sorted(gs)}")
    elif meta.get("split_level") != "patch":  # tile level: no two tiles of different splits may share pixels
        # (patch level, --protocol semiearth, mixes the patches of a scene on purpose)
        by_scene = {}
        for g, members in groups.items():
            for n in members:
                if n in tiles:
                    by_scene.setdefault(tiles[n]["scene"], []).append((g, tiles[n]["box"], n))
        for entries in by_scene.values():
            for i, (ga, ba, na) in enumerate(entries):
                for gb, bb, nb in entries[i + 1 :]:
                    if ga != gb and ba[0] < bb[2] and bb[0] < ba[2] and ba[1] < bb[3] and bb[1] < ba[3]:
                        problems.append(f"tiles {na} ({ga}) and {nb} ({gb}) share pixels")
    if problems:
        raise DataError(f"split overlap in {out}:\n  " + "\n  ".join(problems[:20]))


# ----------------------------------------------------------------------------------------- summary
def summarise(
    out: str, tiles: list[Tile], lists: dict[str, list[str]], num_classes: int, class_names, protocol: str = "scene"
) -> dict:
    """summary.json and summary.md: tiles, scenes and class frequencies per split list, the protocol
    (and, for --protocol semiearth, the warning that scenes straddle the splits)."""
    tile_of = {t.name: t for t in tiles}
    splits = {}
    for rel, names in lists.items():
        ts = [tile_of[n] for n in names]
        counts = np.zeros(num_classes + 1, dtype=np.int64)
        s = np.zeros(3)
        sq = np.zeros(3)
        n_px = 0
        for t in ts:
            counts += np.asarray(t.counts, dtype=np.int64)
            s += t.rgb_sum
            sq += t.rgb_sqsum
            n_px += t.valid_px
        labelled = int(counts.sum())
        cls = counts[:num_classes]
        mean = s / max(n_px, 1)
        std = np.sqrt(np.maximum(sq / max(n_px, 1) - mean**2, 0))
        splits[rel[:-4]] = {
            "tiles": len(ts),
            "scenes": len({t.scene for t in ts}),
            "labelled_tiles": sum(t.mask is not None for t in ts),
            "pixels": {name: int(c) for name, c in zip(class_names, cls, strict=True)},
            "ignore_pixels": int(counts[-1]),
            "frequency": {name: (float(c) / max(int(cls.sum()), 1)) for name, c in zip(class_names, cls, strict=True)},
            "ignore_share": float(counts[-1]) / max(labelled, 1),
            "mean": [round(float(v), 4) for v in mean],
            "std": [round(float(v), 4) for v in std],
        }
    summary = {"class_names": list(class_names), "protocol": protocol, "splits": splits}
    if protocol == "semiearth":
        summary["warning"] = PATCH_WARNING
        scenes_in = {k: {tile_of[n].scene for n in lists.get(f"{k}.txt", [])} for k in ("train", "val", "test")}
        summary["scenes_straddling"] = len(
            (scenes_in["train"] & (scenes_in["val"] | scenes_in["test"])) | (scenes_in["val"] & scenes_in["test"])
        )
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(summary) + "\n")
    return summary


def summary_markdown(summary: dict) -> str:
    names = summary["class_names"]
    head = "| split | tiles | scenes | " + " | ".join(names) + " | ignore |"
    rows = [head, "|" + "---|" * (len(names) + 4)]
    for split, s in summary["splits"].items():
        freq = " | ".join(f"{100 * s['frequency'][n]:.1f}%" for n in names)
        rows.append(f"| {split} | {s['tiles']} | {s['scenes']} | {freq} | {100 * s['ignore_share']:.1f}% |")
    table = "class frequencies per split (share of labelled pixels):\n" + "\n".join(rows)
    if "warning" not in summary:
        return table
    straddle = f" ({summary['scenes_straddling']} scene(s) have patches in more than one of train/val/test)"
    return f"**WARNING (protocol {summary['protocol']})**: {summary['warning']}{straddle}\n\n{table}"


# ----------------------------------------------------------------------------------------- assemble
def assemble(out: str, scene: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Re-assemble a prepared scene from its tiles: (image [bands,H,W] raw dtype, mask [H,W] uint8 or
    None). Used to verify that preparation is lossless."""
    with open(os.path.join(out, PREPARED_META)) as f:
        meta = json.load(f)
    if scene not in meta["scenes"]:
        raise KeyError(f"scene {scene!r} not in {out}; scenes: {sorted(meta['scenes'])[:10]}")
    sm = meta["scenes"][scene]
    image = np.zeros((sm["bands"], sm["height"], sm["width"]), dtype=sm["dtype"])
    mask = np.full((sm["height"], sm["width"]), IGNORE_INDEX, dtype=np.uint8) if sm["label"] else None
    for t in meta["tiles"]:
        if t["scene"] != scene:
            continue
        x0, y0, x1, y1 = t["box"]
        image[:, y0:y1, x0:x1] = read_raster(os.path.join(out, t["image"])).data
        if mask is not None and t["mask"]:
            mask[y0:y1, x0:x1] = read_label(os.path.join(out, t["mask"]))
    return image, mask


def config_hint(dataset: str, out: str, tags) -> str:
    tag = tags[0] if tags else "1_100"
    return (
        f"train with: semiearth-train --config {dataset} --set data.root={out} "
        f"--set data.splits.labeled=splits/{tag}/labeled.txt --set data.splits.unlabeled=splits/{tag}/unlabeled.txt"
    )


__all__ = [
    "DEFAULT_RATIOS",
    "PATCH_WARNING",
    "PROTOCOLS",
    "assemble",
    "assign_splits",
    "check_splits",
    "config_hint",
    "find_scenes",
    "parse_ratio",
    "patch_split",
    "prepare",
    "ratio_tag",
    "tile_starts",
]
