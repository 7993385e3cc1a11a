"""Class names, per-class synonyms and remote-sensing prompt templates for zero-shot classification.

The class names are those of the one class table, semiearth.data.classes (SPECS), in training index
order 0..C-1 (ignore removed), spelled as words for prompts ("impervious_surface" -> "impervious surface").
"""

from semiearth.data.classes import SPECS

DATASET_CLASSES = {
    name: [c.replace("_", " ") for c in SPECS[name].class_names]
    for name in ("potsdam", "vaihingen", "loveda", "openearthmap")
}

# Phrases a caption of an aerial image would use for each class; prompts = templates x synonyms.
SYNONYMS = {
    "impervious surface": ["road", "pavement", "parking lot", "asphalt", "sidewalk", "paved area"],
    "building": ["building", "roof", "rooftop", "house", "residential building"],
    "low vegetation": ["grass", "lawn", "low vegetation", "meadow", "bushes"],
    "tree": ["tree", "trees", "tree canopy", "woodland"],
    "car": ["car", "cars", "parked car", "vehicle"],
    "clutter": ["clutter", "debris", "construction site", "container", "miscellaneous objects"],
    "background": ["background", "open land", "miscellaneous land", "bare surface"],
    "road": ["road", "street", "highway", "paved road"],
    "water": ["water", "river", "lake", "pond"],
    "barren": ["barren land", "bare soil", "sand", "bare ground"],
    "forest": ["forest", "trees", "woodland", "dense vegetation"],
    "agriculture": ["farmland", "cropland", "agricultural field", "crop field"],
    "bareland": ["bare land", "bare soil", "sand", "barren ground"],
    "rangeland": ["rangeland", "grassland", "shrubland", "pasture"],
    "developed space": ["developed area", "pavement", "parking lot", "urban open space", "plaza"],
    "agriculture land": ["farmland", "cropland", "agricultural field", "crop field"],
}

TEMPLATES = (
    "a satellite photo of {}.",
    "an aerial image of {}.",
    "an aerial photo of {}.",
    "a remote sensing image of {}.",
    "a top-down view of {}.",
    "a high resolution satellite image of {}.",
)


def resolve_class_names(class_names) -> list[str]:
    """A dataset key ("potsdam", "vaihingen", "loveda", "openearthmap") or a list of names -> names."""
    if isinstance(class_names, str):
        key = class_names.lower().replace("-", "").replace("_", "")
        if key not in DATASET_CLASSES:
            raise ValueError(f"unknown dataset {class_names!r}; known: {sorted(DATASET_CLASSES)} or pass a list")
        return list(DATASET_CLASSES[key])
    names = list(class_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class_names must be a dataset key or a non-empty list of strings, got {class_names!r}")
    return names


def prompts_for(name: str, templates=TEMPLATES, synonyms=None) -> list[str]:
    """All prompts of one class: every template with every synonym (the name itself when none known)."""
    table = SYNONYMS if synonyms is None else synonyms
    words = table.get(name, [name])
    return [t.format(w) for t in templates for w in words]
