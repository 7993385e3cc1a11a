# The README's two commands: `make demo` (the main job) and `make test` (the whole test suite).
# Both set everything up on a fresh machine: a virtualenv in .venv, the pinned torch, the
# dependencies, and the extension semiearth._C (with CUDA kernels when nvcc is present).

VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
# torch pins that import torchvision and compile CUDA sources on these machines (see README, Install).
ifeq ($(ARCH),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1 triton==3.8.0
endif
# The Triton of the GPU image (see DEVELOPERS notes): the kernel budget test compiles for it too,
# from its own folder (`pip install --target`), beside the pinned one.
OTHER_TRITON ?= triton==3.6.0
OTHER_TRITON_DIR := $(abspath $(VENV))/other-triton
CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
FORCE_CUDA ?= $(if $(CUDA_HOME),1,0)
export CUDA_HOME FORCE_CUDA

.PHONY: setup build test test-python test-cpp test-docs docs demo bench gpu-check gpu-wheels lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-torchgeo.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps --target $(OTHER_TRITON_DIR) $(OTHER_TRITON) \
		|| echo "$(OTHER_TRITON) is not installable here: the kernel budget test checks the pinned Triton only"
	touch $@

# The extension is rebuilt only when it is missing, its sources or build files changed, or
# FORCE_CUDA changed since the last build (`make clean` forces a rebuild).
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc -type f)
BUILT := $(VENV)/.built

build: setup
	@if [ "$$(cat $(BUILT) 2>/dev/null)" = "FORCE_CUDA=$(FORCE_CUDA)" ] && ls semiearth/_C*.so >/dev/null 2>&1 \
		&& [ -z "$$(find $(BUILD_INPUTS) -newer $(BUILT))" ]; then \
		echo "semiearth._C is up to date (make clean to rebuild)"; \
	else \
		$(PY) -m pip install --no-build-isolation --no-deps -e . && echo "FORCE_CUDA=$(FORCE_CUDA)" > $(BUILT); \
	fi

test: test-python test-cpp test-docs

# -P: the checkout is not put on sys.path, so its kernels/ folder (installed as semiearth.kernels)
# does not shadow the `kernels` package that transformers imports.
test-python: build
	SEMIEARTH_OTHER_TRITON=$(OTHER_TRITON_DIR) TRITON_INTERPRET=1 $(PY) -P -m pytest -q tests bench

# The documentation site (docs/, mkdocs.yml): a broken link or a docstring reference to a missing
# name fails the build. `make docs` serves it at http://127.0.0.1:8000.
test-docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

docs: setup
	$(VENV)/bin/mkdocs serve

test-cpp: setup
	cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		-DPython3_EXECUTABLE=$(abspath $(PY))
	cmake --build build/cmake
	cd build/cmake && ctest --output-on-failure

demo: build
	$(VENV)/bin/semiearth-train --config demo --overwrite

bench: build
	$(PY) bench/purify_throughput.py

# On a machine with an NVIDIA GPU and a CUDA torch (its own Python, no venv): build with CUDA, GPU
# tests, benchmarks, training-step split; all figures in $(GPU_OUT)/gpu_check.json.
GPU_OUT ?= runs/gpu_check
gpu-check:
	OUT=$(GPU_OUT) PYTHON=$${PYTHON:-python3} bash bench/gpu_check.sh

# The packages the GPU image (Python 3.12, its own torch) lacks, as wheels in .whl/ that
# bench/gpu_check.sh installs there: the config (pydantic) and the OpenCLIP classifier.
GPU_WHEELS ?= pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5
gpu-wheels:
	grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf build semiearth/_C*.so *.egg-info $(BUILT)
