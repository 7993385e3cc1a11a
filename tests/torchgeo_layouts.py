"""Small synthetic copies of torchgeo datasets in their own on-disk layouts (as torchgeo's own
tests/data generators write them), for the torchgeo data source, smp and Lightning tests.

Each builder writes `n_train` train and `n_test` test (and val) samples of `size` x `size` pixels
with masks in the dataset's own encoding, and returns the root. Images are smooth random fields
with masks drawn from the same field, so a model has something to learn.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# torchgeo 0.8 colour tables (Potsdam2D / Vaihingen2D share one; DeepGlobeLandCover's is its own)
ISPRS_COLOURS = ((255, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0))
DEEPGLOBE_COLOURS = ((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0))


def _field(rng, size: int, values: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image [S,S,3], int label map [S,S] in 0..values-1), the label a coarse random grid."""
    coarse = rng.integers(0, values, (4, 4))
    label = np.kron(coarse, np.ones((size // 4, size // 4), dtype=np.int64))
    colour = rng.integers(0, 256, (values, 3))
    image = colour[label] + rng.integers(-20, 20, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def _png(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def loveda(root: str, n_train: int = 4, n_test: int = 2, size: int = 64, seed: int = 0) -> str:
    """Train|Val|Test/{Urban,Rural}/images_png + masks_png (raw 0 = no-data, 1..7 = classes); Test
    without masks (its labels are not public)."""
    rng = np.random.default_rng(seed)
    k = 0
    for part, n in (("Train", n_train), ("Val", n_test), ("Test", n_test)):
        for scene in ("Urban", "Rural"):
            for _ in range(n):
                image, label = _field(rng, size, 8)  # 0 (no-data) included
                _png(f"{root}/{part}/{scene}/images_png/{k}.png", image)
                if part != "Test":
                    _png(f"{root}/{part}/{scene}/masks_png/{k}.png", label.astype(np.uint8))
                k += 1
    return root


def _colour_label(label: np.ndarray, colours) -> np.ndarray:
    return np.asarray(colours, dtype=np.uint8)[label]


def potsdam(root: str, n_train: int = 4, n_test: int = 2, size: int = 64, seed: int = 0) -> str:
    """4_Ortho_RGBIR/<name>_RGBIR.tif (4 bands, read by rasterio) and <name>_label.tif (colour)."""
    import rasterio
    from torchgeo.datasets import Potsdam2D

    rng = np.random.default_rng(seed)
    os.makedirs(f"{root}/4_Ortho_RGBIR", exist_ok=True)
    names = Potsdam2D.splits["train"][:n_train] + Potsdam2D.splits["test"][:n_test]
    for name in names:
        image, label = _field(rng, size, 6)
        bands = np.concatenate([image, image[..., :1]], axis=2).transpose(2, 0, 1)  # R, G, B, IR
        profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint8")
        with rasterio.open(f"{root}/4_Ortho_RGBIR/{name}_RGBIR.tif", "w", **profile) as f:
            f.write(bands)
        Image.fromarray(_colour_label(label, ISPRS_COLOURS)).save(f"{root}/{name}_label.tif")
    return root


def vaihingen(root: str, n_train: int = 4, n_test: int = 2, size: int = 64, seed: int = 0) -> str:
    """top/<name>.tif (IRRG) and <name>.tif (colour label) at the root."""
    from torchgeo.datasets import Vaihingen2D

    rng = np.random.default_rng(seed)
    os.makedirs(f"{root}/top", exist_ok=True)
    for name in Vaihingen2D.splits["train"][:n_train] + Vaihingen2D.splits["test"][:n_test]:
        image, label = _field(rng, size, 6)
        Image.fromarray(image).save(f"{root}/top/{name}")
        Image.fromarray(_colour_label(label, ISPRS_COLOURS)).save(f"{root}/{name}")
    return root


def deepglobe(root: str, n_train: int = 4, n_test: int = 2, size: int = 64, seed: int = 0) -> str:
    """data/{training,test}_data/images/<id>_sat.jpg and masks/<id>_mask.png (colour; black = Unknown)."""
    rng = np.random.default_rng(seed)
    k = 0
    for part, n in (("training_data", n_train), ("test_data", n_test)):
        for _ in range(n):
            image, label = _field(rng, size, 7)
            _png(f"{root}/data/{part}/images/{k}_sat.jpg", image)
            _png(f"{root}/data/{part}/masks/{k}_mask.png", _colour_label(label, DEEPGLOBE_COLOURS))
            k += 1
    return root


BUILDERS = {"LoveDA": loveda, "Potsdam2D": potsdam, "Vaihingen2D": vaihingen, "DeepGlobeLandCover": deepglobe}
