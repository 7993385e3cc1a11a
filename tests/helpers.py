"""Shared helpers of the op tests: backends, the real tiles in ../shared/data, logits from labels."""

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semiearth import ops

# ../shared/data relative to the repository root (present in CI, absent in a user's fresh clone).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
GPU = torch.cuda.is_available()

# --set overrides for a tiny, fast training run (synthetic data, tiny model, no VLM-PP).
TINY_RUN = [
    "data.crop_size=32",
    "data.options={size: 40, labeled: 4, unlabeled: 12, val: 3, test: 3}",
    "model.name=tiny",
    "model.pretrained=false",
    "model.decoder_channels=8",
    "train.batch_size=2",
    "train.unlabeled_batch_size=2",
    "train.lr=0.01",
    "train.log_every=2",
    "train.threshold=0.5",
    "purify=none",
]


# semiearth-train on semiearth/configs/demo.yaml shrunk to TINY_RUN, without checkpoints or panels.
TINY_CLI = [*TINY_RUN, "train.ckpt_every=0", "train.panel_every=0", "compare_baseline=false"]


def cli_args(out, *overrides, extra=()) -> list:
    """semiearth-train's argv for a TINY_CLI run into `out` with more --set overrides."""
    sets = [a for o in [*TINY_CLI, *overrides] for a in ("--set", o)]
    return ["--config", "demo", "--out", str(out), *sets, *extra]


def one_line_error(capsys, *words) -> str:
    """The captured stderr, asserted to be one line without a traceback that contains `words`."""
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    return err


def save_tiny_checkpoint(path):
    """A checkpoint of two tiny 6-class networks (student, teacher) at `path`; returns them."""
    from semiearth.config import config_from_dict, config_to_dict
    from semiearth.models import build_model
    from semiearth.train.checkpoint import save_checkpoint

    cfg = config_from_dict(
        {"model": {"name": "tiny", "pretrained": False, "decoder_channels": 8}, "eval": {"window": 32}}
    )
    torch.manual_seed(0)
    student, teacher = build_model(cfg.model, 6), build_model(cfg.model, 6)
    state = {"model_name": "tiny", "num_classes": 6, "model": student.state_dict(), "ema": teacher.state_dict()}
    save_checkpoint(str(path), {**state, "config": config_to_dict(cfg)})
    return student, teacher


def shared_data() -> Path:
    """The shared tiles folder, or skip the test with the reason."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real tiles not found at {SHARED_DATA.resolve()} (../shared/data is absent outside CI)")
    return SHARED_DATA


def load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).copy()


def real_tiles():
    """[(name, image uint8 [3,H,W], ann uint8 [H,W] with 0 = ignore, num classes incl. 0)]."""
    root = shared_data()
    tiles = [
        (f"loveda/{i}", root / "loveda" / "img" / f"{i}.png", root / "loveda" / "ann" / f"{i}.png", 8) for i in range(3)
    ]
    name = "2_10_0_0_512_512.png"
    tiles.append(("potsdam", root / "potsdam" / "img" / name, root / "potsdam" / "ann" / name, 7))
    out = []
    for tag, img, ann, c in tiles:
        if not (img.is_file() and ann.is_file()):
            pytest.skip(f"tile {img} or {ann} missing in {root}")
        image = torch.from_numpy(load_png(img)[..., :3]).permute(2, 0, 1).contiguous()
        out.append((tag, image, torch.from_numpy(load_png(ann)).long(), c))
    return out


def logits_from_labels(labels: torch.Tensor, num_classes: int, blur: int = 9, noise: float = 0.6, seed: int = 0):
    """Teacher-like logits [B,C,H,W] float32 from labels [B,H,W]: the one-hot map box-blurred (soft,
    uncertain class borders) times a gain, plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    soft = F.avg_pool2d(onehot, blur, stride=1, padding=blur // 2, count_include_pad=False)
    return 6.0 * soft + noise * torch.randn(soft.shape, generator=g)


def safe_thresh(logits: torch.Tensor, thr: float) -> float:
    """`thr`, nudged so that no pixel's confidence lies within float rounding of it (there, a 1-ulp
    difference between kernels would flip the LOW flag, which the tests compare exactly)."""
    conf = torch.softmax(logits.float(), dim=1).amax(dim=1)
    for _ in range(100):
        if not bool(((conf - thr).abs() < 2e-6).any()):
            return thr
        thr = thr - 1.7e-5 if thr > 0.5 else thr + 1.7e-5
    return thr


def triton_kernels(module: str):
    """Import semiearth.kernels.<module>; skip only when Triton cannot run here at all.

    A kernel module that fails to import is a failure, never a skip.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    if not (GPU or TRITON_INTERPRET):
        pytest.skip("Triton needs a GPU, or TRITON_INTERPRET=1 to run on the CPU")
    return importlib.import_module(f"semiearth.kernels.{module}")


def backend_device(backend: str, kernels_module: str | None = None):
    """(backend argument, device) to run a fast `backend` on, or skip with the reason.

    "cpp": the C++ CPU kernels; "triton": semiearth.kernels on CUDA tensors, or on CPU tensors
    under the interpreter; "cuda": the op on CUDA tensors (CUDA kernel or Triton), GPU only.
    """
    if backend == "cpp":
        if not ops.has_cpp():
            pytest.skip("the C++ extension semiearth._C is not built (pip install --no-build-isolation -e .)")
        return "cpp", torch.device(ops.backend_device("cpp"))
    if backend == "triton":
        triton_kernels(kernels_module)
        return "triton", torch.device("cuda" if GPU else "cpu")
    if backend == "cuda":
        if not GPU:
            pytest.skip("no GPU: CUDA kernels are compile-checked only (see test_cuda_kernels_compiled_in)")
        return "auto", torch.device(ops.backend_device("cuda"))
    raise ValueError(backend)


def assert_stats_equal(out, ref) -> None:
    """Exact for label/flags/hist/nboundary, allclose for conf and mass."""
    out = [t.cpu() if isinstance(t, torch.Tensor) else t for t in out]
    for name in ("label", "flags", "hist", "nboundary"):
        a, b = getattr(type(ref)(*out), name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
        if not torch.equal(a, b):
            bad = (a != b).nonzero()[:5].tolist()
            raise AssertionError(f"{name} differs at {int((a != b).sum())} places, e.g. {bad}")
    got = type(ref)(*out)
    torch.testing.assert_close(got.conf, ref.conf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.mass, ref.mass, rtol=1e-5, atol=1e-4)
    assert got.cell == ref.cell
