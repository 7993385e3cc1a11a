"""Short CPU trainings whose final weights are the same bits on any x86-64 CPU with AVX2.

tests/test_train_methods.py compares FixMatch's weights with tests/data/fixmatch_reference.pt,
recorded by this script with the trainer of commit e9e60fa (before the method seam). Float
kernels round differently on another instruction set (AVX-512 against AVX2: 5e-8 in a conv
weight after 6 iterations, which Adam turns into 1e-2 in the biases that BatchNorm cancels), so
the runs pin ATen, oneDNN and MKL to AVX2 and one thread, in a fresh process (the settings are
read when torch starts).

    python tests/reference_run.py OUT.pt [--case none|oracle ...]
"""

import argparse
import os
import sys
import tempfile

# The numerics of every run: set before torch is imported (a subprocess sets them in its env).
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT",
              "OMP_NUM_THREADS": "1"}  # fmt: skip
# Frozen with the recording: not helpers.TINY_RUN, whose later edits must not move the reference.
OVERRIDES = [
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
    "train.iters=6",
    "train.deterministic=true",
    "train.threads=1",
    "train.eval_every=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "train.grad_clip=1.0",
]
CASES = {"none": [], "oracle": ["purify.method=oracle", "purify.every=1", "purify.max_regions=4"]}


def run_case(case: str) -> dict:
    """{network: state_dict} after the 6-iteration run of `case`."""
    import torch

    from semiearth.config import load_config
    from semiearth.train import train

    with tempfile.TemporaryDirectory() as out:
        train(load_config(None, [*OVERRIDES, *CASES[case], f"out_dir={out}"]))
        ckpt = torch.load(os.path.join(out, "latest.pth"), weights_only=True)
    if "weights" in ckpt:  # the checkpoint since the method seam
        return {net: ckpt["weights"][net] for net in ("student", "teacher")}
    return {"student": ckpt["model"], "teacher": ckpt["ema"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    args = parser.parse_args(argv)
    missing = {k: v for k, v in PINNED_ENV.items() if os.environ.get(k) != v}
    if missing:
        sys.exit(f"run with these environment variables set: {missing}")
    import torch

    cases = args.case or sorted(CASES)
    torch.save({"overrides": OVERRIDES, "cases": CASES, "env": PINNED_ENV,
                "weights": {case: run_case(case) for case in cases}}, args.out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
