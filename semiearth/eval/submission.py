"""Benchmark submissions: test-set predictions in the form an evaluation server scores.

``semiearth-predict --format loveda-submission --out submission.zip`` writes the LoveDA Test
predictions as the LoveDA semantic-segmentation server accepts them (docs/submission.md): one
single-channel uint8 PNG per Test image, named by its id (``4191.png`` .. ``5986.png``), 1024x1024,
class ids in the server's encoding, all at the top of one zip (no folder inside: a zipped folder
scores 0). What the server expects is stated by the dataset (:mod:`semiearth.data.loveda`); this
module checks the inputs against it and writes the zip.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from semiearth.data.classes import IGNORE_INDEX


class SubmissionError(ValueError):
    """Inputs or predictions that the evaluation server would not score as meant."""


@dataclass(frozen=True)
class SubmissionFormat:
    """What one evaluation server expects.

    lut: uint8 [256], our train id -> the server's class id (255: no class the server knows);
    ids: the test image ids (file stems) it scores; size: (height, width) of each prediction;
    class_names: in train-id order; url: where to upload."""

    name: str
    lut: np.ndarray
    ids: range
    size: tuple[int, int]
    class_names: tuple[str, ...]
    url: str
    input_hint: str


def loveda_format() -> SubmissionFormat:
    """The LoveDA semantic-segmentation server's format, from :mod:`semiearth.data.loveda`."""
    from semiearth.data.classes import LOVEDA
    from semiearth.data.loveda import SUBMISSION_URL, TEST_IDS, TEST_SIZE, submission_lut

    return SubmissionFormat(
        "loveda",
        submission_lut(),
        TEST_IDS,
        TEST_SIZE,
        tuple(LOVEDA.class_names),
        SUBMISSION_URL,
        "the official Test folder (Test/{Urban,Rural}/images_png)",
    )


FORMATS = {"loveda-submission": loveda_format}


def check_model_classes(fmt: SubmissionFormat, class_names, num_classes: int, source: str) -> None:
    """SubmissionError unless the checkpoint predicts the dataset's classes in train-id order."""
    if num_classes != len(fmt.class_names) or list(class_names or [])[:num_classes] != list(fmt.class_names):
        raise SubmissionError(
            f"{source} predicts {num_classes} classes {list(class_names or [])}; a {fmt.name} submission needs a "
            f"model trained on {fmt.name} ({list(fmt.class_names)})"
        )


def submission_names(fmt: SubmissionFormat, inputs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """[(input file, name in the zip)] sorted by id: every input must be one test image (its stem
    an id of ``fmt.ids``), each id once; SubmissionError naming the first that is not."""
    seen: dict[int, str] = {}
    for path, _ in inputs:
        stem = os.path.splitext(os.path.basename(path))[0]
        if not stem.isdigit() or int(stem) not in fmt.ids:
            raise SubmissionError(
                f"{path} is not a {fmt.name} test image (ids {fmt.ids.start}..{fmt.ids.stop - 1}); "
                f"--input must be {fmt.input_hint}"
            )
        if int(stem) in seen:
            raise SubmissionError(f"{seen[int(stem)]} and {path} are both test image {stem}: give only one of them")
        seen[int(stem)] = path
    return [(seen[i], f"{i}.png") for i in sorted(seen)]


def check_size(fmt: SubmissionFormat, path: str, shape: tuple[int, int]) -> None:
    if tuple(shape) != fmt.size:
        raise SubmissionError(
            f"{path} is {shape[1]}x{shape[0]} px; {fmt.name} test images are {fmt.size[1]}x{fmt.size[0]}: "
            f"--input must be {fmt.input_hint}, unresized"
        )


class SubmissionZip:
    """The zip of one submission: ``add(name, train ids [H,W] uint8)`` encodes the server's ids as a
    grey PNG at the top of the zip. The file appears under its name only once complete (a hidden
    ``.<name>.partial`` until then, removed on failure). A context manager."""

    def __init__(self, fmt: SubmissionFormat, path: str):
        self.fmt, self.path = fmt, os.fspath(path)
        folder, name = os.path.split(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._tmp = os.path.join(folder, f".{name}.partial")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        self.names: list[str] = []
        self.values = np.zeros(256, dtype=bool)

    def add(self, name: str, train_ids: np.ndarray) -> None:
        """Write ``name`` (a PNG of the server's ids of ``train_ids`` [H,W] uint8)."""
        check_size(self.fmt, name, train_ids.shape)
        ids = self.fmt.lut[train_ids]
        if (ids == IGNORE_INDEX).any():
            bad = sorted(set(np.unique(train_ids[ids == IGNORE_INDEX]).tolist()))
            raise SubmissionError(
                f"{name}: prediction holds {bad}, no {self.fmt.name} class (no-data pixels in the input?); "
                "the server scores class ids only"
            )
        buf = io.BytesIO()
        Image.fromarray(ids).save(buf, format="PNG")
        self._zip.writestr(name, buf.getvalue())
        self.names.append(name)
        self.values[ids] = True  # the values present (no sort of the image, as np.unique would)

    def summary(self) -> str:
        """One line: what was written, for whom, and what is missing."""
        fmt, n = self.fmt, len(self.names)
        values = np.flatnonzero(self.values).tolist()
        span = f"{self.names[0]} .. {self.names[-1]}" if n else "no files"
        missing = ""
        if n < len(fmt.ids):
            missing = f"; {len(fmt.ids) - n} test image(s) missing: the server expects all {len(fmt.ids)}"
        legend = ", ".join(f"{fmt.lut[t]} {c}" for t, c in enumerate(fmt.class_names))
        return (
            f"wrote {self.path}: {n} of {len(fmt.ids)} {fmt.name} test predictions ({span}), "
            f"{fmt.size[1]}x{fmt.size[0]} uint8 PNGs at the top of the zip, values {values} ({legend}){missing}; "
            f"upload at {fmt.url}"
        )

    def close(self) -> None:
        self._zip.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._zip.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
