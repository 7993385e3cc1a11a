"""SemiEarth's teacher-student training and VLM-PP in a torchgeo + Lightning setup.

The setup is torchgeo's usual one (LoveDA, its datamodule, SemanticSegmentationTask, a Lightning
Trainer); the three lines marked `# SemiEarth` are the whole change (docs/integrations.md):

    python examples/torchgeo_lightning.py --root data/loveda --download --steps 2000
    python examples/torchgeo_lightning.py --root tiny_loveda --steps 2 --backbone resnet18   # toy, CPU

LoveDA's Test split has no public masks, so its images are the unlabelled data. Needs the
`[torchgeo]` extra (pip install -e .[torchgeo]).
"""

import argparse

from lightning.pytorch import Trainer
from torch.utils.data import DataLoader
from torchgeo.datamodules import LoveDADataModule
from torchgeo.datasets import LoveDA

from semiearth.lightning import PrototypeClassifier, TeacherStudentTask, VLMPurifier  # SemiEarth

C = 8  # torchgeo's LoveDA: 0 = no-data (ignored), 1..7 = background .. agriculture


def build(args):
    """(task, datamodule, trainer) for the arguments."""
    datamodule = LoveDADataModule(root=args.root, batch_size=args.batch, download=args.download)
    unlabelled = DataLoader(LoveDA(args.root, split="test"), batch_size=args.batch, shuffle=True)  # SemiEarth
    purifier = VLMPurifier(PrototypeClassifier(num_classes=C, input_size=args.crop), C, cell=args.cell, max_regions=4)
    task = TeacherStudentTask(  # SemiEarth: was SemanticSegmentationTask(...) with the same arguments
        unlabelled, purifier, threshold=args.threshold, fit_images=args.fit_images,
        model="unet", backbone=args.backbone, weights=None, num_classes=C, ignore_index=0, lr=args.lr,
    )  # fmt: skip
    trainer = Trainer(
        max_steps=args.steps,
        accelerator=args.accelerator,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=args.val_batches,
        val_check_interval=args.val_every,  # None: after every epoch
    )
    return task, datamodule, trainer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="LoveDA root (torchgeo's layout: Train/, Val/, Test/)")
    ap.add_argument("--download", action="store_true", help="let torchgeo download LoveDA into --root")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--cell", type=int, default=32, help="VLM-PP grid cell (px)")
    ap.add_argument("--crop", type=int, default=64, help="region classifier input size (px)")
    ap.add_argument("--fit-images", type=int, default=16, help="labelled images the prototypes are fitted on")
    ap.add_argument("--val-batches", type=float, default=1.0, help="Lightning's limit_val_batches")
    ap.add_argument("--val-every", type=int, default=None, help="validate every N steps (default: every epoch)")
    ap.add_argument("--accelerator", default="auto")
    args = ap.parse_args(argv)
    task, datamodule, trainer = build(args)
    trainer.fit(task, datamodule=datamodule)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()}
    print(f"after {trainer.global_step} steps: {metrics}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
