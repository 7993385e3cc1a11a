"""Class names, per-class synonyms and remote-sensing prompt templates for zero-shot classification.

Names and synonyms come from the one class table: the registered datasets' specs
(semiearth.data.classes.DatasetSpec, `class_names` and `synonyms`), read at lookup time, so a dataset
registered from outside the package (`register_dataset(name, cls)` with a `spec`) gets its classes
and prompts here with no edit. `DATASET_CLASSES[dataset]` is the dataset's class names in training
index order 0..C-1, spelled as words for prompts ("impervious_surface" -> "impervious surface");
`SYNONYMS[class name]` (either spelling) the phrases of the first registered spec that has some.
Datasets whose spec is only known by importing their module (a "module:Class" entry without a
DATASET_SPECS line, e.g. deepglobe) are consulted after the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

TEMPLATES = (
    "a satellite photo of {}.",
    "an aerial image of {}.",
    "an aerial photo of {}.",
    "a remote sensing image of {}.",
    "a top-down view of {}.",
    "a high resolution satellite image of {}.",
)


def registered_specs() -> Iterator:
    """The DatasetSpec of every registered dataset that has one: those known without importing a
    dataset module first (the spec table, datasets registered as classes), then the others."""
    from semiearth.data.registry import DATASET_SPECS, DATASETS, dataset_spec

    cheap = [n for n in DATASETS if n in DATASET_SPECS or not isinstance(DATASETS[n], str)]
    for name in [*cheap, *(n for n in DATASETS if n not in cheap)]:
        try:
            spec = dataset_spec(name)
        except ImportError:  # a dataset whose optional dependency is missing has no prompts to give
            continue
        if spec is not None:
            yield name, spec


def _words(name: str) -> str:
    return name.replace("_", " ")


class _DatasetClasses(Mapping):
    """dataset name -> its class names as words, from the registered specs."""

    def __getitem__(self, dataset: str) -> list[str]:
        from semiearth.data.registry import DATASETS, dataset_spec

        spec = dataset_spec(dataset) if dataset in DATASETS else None
        if spec is None:
            raise KeyError(dataset)
        return [_words(c) for c in spec.class_names]

    def __iter__(self):
        return (name for name, _ in registered_specs())

    def __len__(self) -> int:
        return sum(1 for _ in registered_specs())


class _Synonyms(Mapping):
    """class name (underscores or spaces) -> its prompt phrases, from the registered specs."""

    def __getitem__(self, name: str) -> list[str]:
        for _, spec in registered_specs():
            for cls, phrases in spec.synonyms.items():
                if name in (cls, _words(cls)):
                    return list(phrases)
        raise KeyError(name)

    def __iter__(self):
        seen = {}
        for _, spec in registered_specs():
            for cls in spec.synonyms:
                seen.setdefault(_words(cls), None)
        return iter(seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


DATASET_CLASSES: Mapping[str, list[str]] = _DatasetClasses()
SYNONYMS: Mapping[str, list[str]] = _Synonyms()


def resolve_class_names(class_names) -> list[str]:
    """A registered dataset's name ("potsdam", "loveda", ...) or a list of names -> names."""
    if isinstance(class_names, str):
        return list(DATASET_CLASSES[_dataset_key(class_names)])
    names = list(class_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class_names must be a dataset key or a non-empty list of strings, got {class_names!r}")
    return names


def _dataset_key(name: str) -> str:
    """The registered dataset that `name` spells ("LoveDA", "open-earth-map", ...), or a ValueError."""
    key = name.lower().replace("-", "").replace("_", "")
    known = {n.replace("_", ""): n for n in DATASET_CLASSES}
    if key not in known:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(known.values())} or pass a list")
    return known[key]


def dataset_synonyms(class_names) -> dict | None:
    """The prompt phrases of the dataset's own spec when `class_names` names a registered dataset that
    has some; None otherwise (a list of names, a dataset without a spec such as folder: SYNONYMS, the
    first spec that knows a name, applies).
    Classifiers prompt with these so that a class name two datasets share ("water") gets the phrases
    of the dataset being trained, not another's."""
    if not isinstance(class_names, str):
        return None
    from semiearth.data.registry import dataset_spec

    try:
        spec = dataset_spec(_dataset_key(class_names))
    except ValueError:
        return None
    return dict(spec.synonyms) if spec is not None and spec.synonyms else None


def prompts_for(name: str, templates=TEMPLATES, synonyms=None) -> list[str]:
    """All prompts of one class: every template with every synonym (the name, as words, when none known)."""
    table = SYNONYMS if synonyms is None else synonyms
    words = table.get(name) or table.get(_words(name)) or [_words(name)]
    return [t.format(w) for t in templates for w in words]
