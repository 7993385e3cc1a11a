"""Class names, palettes, prompt synonyms and label encodings of every supported dataset, stated explicitly.

Every dataset in SemiEarth is trained on *train ids* ``0..C-1`` with ``ignore_index`` (255) for
pixels that carry no class (no-data, eroded boundaries, unknown). The official releases encode their
labels in other ways; each :class:`DatasetSpec` below says how, and :func:`convert_index_mask` /
:func:`convert_colour_mask` convert them. Nothing is mapped implicitly: a raw value or colour that
the encoding does not list is an error (or, when asked for, mapped to ignore and reported).

Encodings
---------
LoveDA (``masks_png``, index PNG):
    0 no-data -> ignore, 1 background -> 0, 2 building -> 1, 3 road -> 2, 4 water -> 3,
    5 barren -> 4, 6 forest -> 5, 7 agriculture -> 6.
ISPRS Potsdam / Vaihingen, official colour labels (RGB):
    (255,255,255) impervious surfaces -> 0, (0,0,255) building -> 1, (0,255,255) low vegetation -> 2,
    (0,255,0) tree -> 3, (255,255,0) car -> 4, (255,0,0) clutter/background -> 5,
    (0,0,0) eroded boundary (``*_noBoundary`` variants) -> ignore.
ISPRS, mmsegmentation's converted index PNGs (``ann_dir``):
    0 boundary -> ignore, 1 impervious -> 0, ..., 6 clutter -> 5.
OpenEarthMap (label GeoTIFF, index):
    0 unknown -> ignore, 1 bareland -> 0, 2 rangeland -> 1, 3 developed space -> 2, 4 road -> 3,
    5 tree -> 4, 6 water -> 5, 7 agriculture land -> 6, 8 building -> 7.
Prepared folders (``semiearth-prepare`` output) and the generic folder format:
    train ids already (0..C-1, 255 ignore).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255


class LabelError(ValueError):
    """A label file holds values or colours that its encoding does not define."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's classes are, how they are drawn and named in prompts, and how its raw labels
    encode them: the one class table. The config takes data.num_classes, class_names and palette from
    it (semiearth/config.py); panels, predict previews and VLM-PP renders colour with `palette`
    (:func:`colourise`); zero-shot classifiers prompt with `synonyms` (purify/classifiers/classes.py)."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per train id
    # class name -> phrases a caption of an aerial image would use for it (prompts = templates x phrases;
    # a class without an entry is prompted with its name, underscores as spaces)
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # raw index value -> train id (or IGNORE_INDEX) for index-encoded labels
    index_encoding: dict[int, int] = field(default_factory=dict)
    # raw RGB colour -> train id (or IGNORE_INDEX) for colour-encoded labels
    colour_encoding: dict[tuple[int, int, int], int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# -- LoveDA -------------------------------------------------------------------------------------
# Download: https://zenodo.org/records/5706578 (Train.zip, Val.zip, Test.zip)
LOVEDA = DatasetSpec(
    name="loveda",
    class_names=("background", "building", "road", "water", "barren", "forest", "agriculture"),
    palette=(
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    ),
    synonyms={
        "background": ("background", "open land", "miscellaneous land", "bare surface"),
        "building": ("building", "roof", "rooftop", "house", "residential building"),
        "road": ("road", "street", "highway", "paved road"),
        "water": ("water", "river", "lake", "pond"),
        "barren": ("barren land", "bare soil", "sand", "bare ground"),
        "forest": ("forest", "trees", "woodland", "dense vegetation"),
        "agriculture": ("farmland", "cropland", "agricultural field", "crop field"),
    },
    index_encoding={0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, 8)}},
)

# -- ISPRS Potsdam / Vaihingen -------------------------------------------------------------------
# Download: https://www.isprs.org/resources/datasets/benchmarks/UrbanSemLab/2d-sem-label-potsdam.aspx
# (2_Ortho_RGB.zip, 5_Labels_all.zip or 5_Labels_all_noBoundary.zip) and .../2d-sem-label-vaihingen.aspx
# (ISPRS_semantic_labeling_Vaihingen.zip, ..._ground_truth_COMPLETE.zip, ..._ground_truth_eroded_COMPLETE.zip)
ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_PALETTE = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
ISPRS_SYNONYMS = {
    "impervious_surface": ("road", "pavement", "parking lot", "asphalt", "sidewalk", "paved area"),
    "building": ("building", "roof", "rooftop", "house", "residential building"),
    "low_vegetation": ("grass", "lawn", "low vegetation", "meadow", "bushes"),
    "tree": ("tree", "trees", "tree canopy", "woodland"),
    "car": ("car", "cars", "parked car", "vehicle"),
    "clutter": ("clutter", "debris", "construction site", "container", "miscellaneous objects"),
}
ISPRS_COLOURS = {colour: i for i, colour in enumerate(ISPRS_PALETTE)}
ISPRS_COLOURS[(0, 0, 0)] = IGNORE_INDEX  # eroded boundaries in the *_noBoundary label variants
# mmsegmentation's tools/dataset_converters/{potsdam,vaihingen}.py output
ISPRS_MMSEG_INDEX = {0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, 7)}}

POTSDAM = DatasetSpec(
    name="potsdam",
    class_names=ISPRS_CLASSES,
    palette=ISPRS_PALETTE,
    synonyms=ISPRS_SYNONYMS,
    index_encoding=ISPRS_MMSEG_INDEX,
    colour_encoding=ISPRS_COLOURS,
)

VAIHINGEN = DatasetSpec(  # images are IRRG false colour (near-infrared, red, green) in the three channels
    name="vaihingen",
    class_names=ISPRS_CLASSES,
    palette=ISPRS_PALETTE,
    synonyms=ISPRS_SYNONYMS,
    index_encoding=ISPRS_MMSEG_INDEX,
    colour_encoding=ISPRS_COLOURS,
)

# The built-in synthetic scenes (semiearth/data/synthetic.py) draw the Potsdam classes.
SYNTHETIC = DatasetSpec(name="synthetic", class_names=ISPRS_CLASSES, palette=ISPRS_PALETTE, synonyms=ISPRS_SYNONYMS)

# -- DeepGlobe Land Cover (semiearth/data/deepglobe.py reads its colour masks) ------------------------
DEEPGLOBE = DatasetSpec(
    name="deepglobe",
    class_names=("urban_land", "agriculture_land", "rangeland", "forest_land", "water", "barren_land"),
    palette=((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)),
    synonyms={
        "urban_land": ("urban area", "buildings", "residential area", "built-up land"),
        "agriculture_land": ("farmland", "cropland", "agricultural field", "plantation"),
        "rangeland": ("rangeland", "grassland", "shrubland", "meadow"),
        "forest_land": ("forest", "trees", "woodland", "tree canopy"),
        "water": ("water", "river", "lake", "sea"),
        "barren_land": ("barren land", "bare soil", "rock", "sand"),
    },
    colour_encoding={
        (0, 255, 255): 0,
        (255, 255, 0): 1,
        (255, 0, 255): 2,
        (0, 255, 0): 3,
        (0, 0, 255): 4,
        (255, 255, 255): 5,
        (0, 0, 0): IGNORE_INDEX,  # unknown: clouds and others, never a class
    },
)  # download: https://competitions.codalab.org/competitions/18468 (DeepGlobe Land Cover starting kit;
# also https://www.kaggle.com/datasets/balraj98/deepglobe-land-cover-classification-dataset)

# -- OpenEarthMap --------------------------------------------------------------------------------
# Download: https://zenodo.org/records/7223446 (OpenEarthMap_wo_xBD.zip; xBD part from https://xview2.org)
OPENEARTHMAP = DatasetSpec(
    name="openearthmap",
    class_names=(
        "bareland",
        "rangeland",
        "developed_space",
        "road",
        "tree",
        "water",
        "agriculture_land",
        "building",
    ),
    palette=(
        (128, 0, 0),
        (0, 255, 36),
        (148, 148, 148),
        (255, 255, 255),
        (34, 97, 38),
        (0, 69, 255),
        (75, 181, 73),
        (222, 31, 7),
    ),
    synonyms={
        "bareland": ("bare land", "bare soil", "sand", "barren ground"),
        "rangeland": ("rangeland", "grassland", "shrubland", "pasture"),
        "developed_space": ("developed area", "pavement", "parking lot", "urban open space", "plaza"),
        "road": ("road", "street", "highway", "paved road"),
        "tree": ("tree", "trees", "tree canopy", "woodland"),
        "water": ("water", "river", "lake", "pond"),
        "agriculture_land": ("farmland", "cropland", "agricultural field", "crop field"),
        "building": ("building", "roof", "rooftop", "house", "residential building"),
    },
    index_encoding={0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, 9)}},
)

# The specs defined here (with a label encoding: semiearth-prepare reads them); every registered
# dataset's spec, these and those of other modules, is `semiearth.data.registry.dataset_spec(name)`.
SPECS: dict[str, DatasetSpec] = {s.name: s for s in (LOVEDA, POTSDAM, VAIHINGEN, OPENEARTHMAP)}


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A deterministic, distinguishable palette for datasets that state none (the ISPRS colours first)."""
    rng = np.random.default_rng(12345)
    out = list(ISPRS_PALETTE[:num_classes])
    while len(out) < num_classes:
        out.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
    return out


def palette_of(data) -> list[tuple[int, int, int]]:
    """The colours of a DataConfig's classes: data.palette (the dataset spec's unless the config gives
    one), else default_palette(data.num_classes). Panels, predict and VLM-PP renders all use it."""
    return [tuple(c) for c in (data.palette or default_palette(data.num_classes))]


def _counts_text(values: np.ndarray, counts: np.ndarray, limit: int = 20) -> str:
    order = np.argsort(-counts)[:limit]
    parts = [f"{values[i]}: {int(counts[i])} px" for i in order]
    more = "" if len(values) <= limit else f", ... ({len(values) - limit} more)"
    return ", ".join(parts) + more


def convert_index_mask(
    raw: np.ndarray, encoding: dict[int, int], source: str = "<array>", on_unknown: str = "error"
) -> tuple[np.ndarray, dict[int, int]]:
    """Map raw index values to train ids through ``encoding``.

    Returns (mask uint8 [H,W], unknown {raw value: pixel count}). Values not in ``encoding`` raise
    :class:`LabelError` naming ``source`` and listing them with pixel counts, or with
    ``on_unknown="ignore"`` become ignore and are returned in ``unknown`` (to be reported).
    """
    if raw.ndim != 2:
        raise LabelError(f"{source}: expected a single-band index label, got shape {tuple(raw.shape)}")
    if not np.issubdtype(raw.dtype, np.integer):
        raw = raw.astype(np.int64)
    values, inverse = np.unique(raw, return_inverse=True)
    inverse = inverse.reshape(raw.shape)
    mapped = np.empty(len(values), dtype=np.uint8)
    unknown = {}
    for i, v in enumerate(values.tolist()):
        if v in encoding:
            mapped[i] = encoding[v]
        else:
            unknown[int(v)] = int((inverse == i).sum())
            mapped[i] = IGNORE_INDEX
    if unknown and on_unknown != "ignore":
        vals = np.array(list(unknown)), np.array(list(unknown.values()))
        raise LabelError(f"{source}: label values not in the encoding {sorted(encoding)}: {_counts_text(*vals)}")
    return mapped[inverse], unknown


def convert_colour_mask(
    rgb: np.ndarray, colours: dict[tuple[int, int, int], int], source: str = "<array>", on_unknown: str = "error"
) -> tuple[np.ndarray, dict[tuple[int, int, int], int]]:
    """Map an RGB colour label [H,W,3] to train ids through ``colours``.

    Unknown colours raise :class:`LabelError` naming ``source`` with each colour's pixel count, or
    with ``on_unknown="ignore"`` become ignore and are returned as {colour: pixel count}.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise LabelError(f"{source}: expected an RGB colour label [H,W,3], got shape {tuple(rgb.shape)}")
    rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, inverse = np.unique(code, return_inverse=True)
    inverse = inverse.reshape(code.shape)
    table = {(r << 16) | (g << 8) | b: tid for (r, g, b), tid in colours.items()}
    mapped = np.empty(len(values), dtype=np.uint8)
    unknown = {}
    for i, v in enumerate(values.tolist()):
        if v in table:
            mapped[i] = table[v]
        else:
            unknown[(v >> 16, (v >> 8) & 255, v & 255)] = int((inverse == i).sum())
            mapped[i] = IGNORE_INDEX
    if unknown and on_unknown != "ignore":
        keys = list(unknown)
        text = ", ".join(f"RGB{c}: {unknown[c]} px" for c in sorted(keys, key=lambda c: -unknown[c])[:20])
        raise LabelError(
            f"{source}: {len(keys)} colour(s) not in the label encoding "
            f"(known: {sorted(colours)}): {text}. Use --on-unknown ignore to map them to ignore explicitly."
        )
    return mapped[inverse], unknown


def colourise(mask, palette, ignore_index: int = IGNORE_INDEX, ignore_colour=(0, 0, 0)) -> np.ndarray:
    """Train-id mask [H,W] (numpy or a torch tensor) -> RGB uint8 [H,W,3] via ``palette``; ignore and
    out-of-range pixels get ``ignore_colour``. The one colouring of labels (panels, predict, VLM-PP)."""
    if not isinstance(mask, np.ndarray):  # a torch tensor, on any device
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = ignore_colour
    for i, c in enumerate(palette):
        if i < 256:
            lut[i] = c
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_colour
    out = lut[np.clip(mask, 0, 255).astype(np.uint8)]
    if mask.dtype != np.uint8:
        outside = (mask < 0) | (mask > 255)
        if outside.any():
            out[outside] = ignore_colour
    return out


def check_train_ids(mask: np.ndarray, num_classes: int, ignore_index: int, source: str) -> None:
    """Raise :class:`LabelError` naming ``source`` if ``mask`` holds values outside 0..C-1 and ignore."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    bad |= mask < 0
    if bad.any():
        values, counts = np.unique(mask[bad], return_counts=True)
        raise LabelError(
            f"{source}: label values outside the class range 0..{num_classes - 1} "
            f"(ignore {ignore_index}): {_counts_text(values, counts)}"
        )
