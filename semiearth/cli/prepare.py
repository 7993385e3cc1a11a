"""semiearth-prepare: official dataset downloads -> tiles, index masks, seeded split lists, summary.

    semiearth-prepare loveda --src LoveDA/ --out data/loveda
    semiearth-prepare potsdam --src Potsdam/ --out data/potsdam --tile 512 --stride 512
    semiearth-prepare vaihingen --src Vaihingen/ --out data/vaihingen
    semiearth-prepare openearthmap --src OpenEarthMap_wo_xBD/ --out data/oem
    semiearth-prepare deepglobe --src land-train-valid-test/ --out data/deepglobe --tile 612
    semiearth-prepare potsdam --src Potsdam/ --out data/potsdam_authors --protocol semiearth   # the paper's split (leaks)
    semiearth-prepare folder --src my_data/ --out data/mine --num-classes 5
    semiearth-prepare check --out data/loveda          # re-check a prepared folder for split overlap

See semiearth/data/prepare.py for what is written.
"""

from __future__ import annotations

import argparse
import os
import sys

from semiearth.cli import check_output_dir, cli_main, describe, printable
from semiearth.data.classes import LabelError
from semiearth.data.io import DataError
from semiearth.data.prepare import DEFAULT_RATIOS, PATCH_WARNING, PROTOCOLS, check_splits, config_hint, prepare
from semiearth.data.registry import preparable_datasets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semiearth-prepare",
        description="Tile a dataset's scenes, convert its labels to train ids, write seeded split lists "
        "(labelled/unlabelled at each ratio, val, test) and a class-frequency summary.",
    )
    p.add_argument(
        "dataset", choices=(*preparable_datasets(), "check"), help="dataset to prepare (or 'check' an --out folder)"
    )
    p.add_argument("--src", help="the official download (unpacked)")
    p.add_argument("--out", required=True, help="output folder (data.root for training)")
    p.add_argument("--tile", type=int, default=512, help="tile size in pixels (default 512)")
    p.add_argument("--stride", type=int, default=None, help="tile stride (default = --tile: no overlap)")
    p.add_argument(
        "--ratios",
        default=",".join(DEFAULT_RATIOS),
        help="labelled ratios, comma-separated: a/b, decimals or percentages (default 1/100,5/100,10/100)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default 0)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="scene",
        help="scene (default): whole scenes per split, leak-free; semiearth: the SemiEarth authors' split, "
        "all labelled patches of all scenes shuffled 60/20/20 (scenes straddle the splits: inflated test mIoU)",
    )
    p.add_argument(
        "--val-frac",
        type=float,
        default=None,
        help="share held out as val: of the train scenes when the dataset has no official val (default 0.1); "
        "with --protocol semiearth of all labelled patches (default 0.2)",
    )
    p.add_argument(
        "--test-frac",
        type=float,
        default=None,
        help="share held out as test: of the train scenes when the dataset has no official test (default 0.1); "
        "with --protocol semiearth of all labelled patches (default 0.2)",
    )
    p.add_argument(
        "--on-unknown",
        choices=("error", "ignore"),
        default="error",
        help="label colours/values outside the encoding: stop with a report (default) or map to ignore (reported)",
    )
    p.add_argument(
        "--label-variant",
        choices=("auto", "full", "eroded"),
        default="auto",
        help="ISPRS labels: eroded boundaries (*_noBoundary, boundary = ignore) or full; auto prefers eroded",
    )
    p.add_argument("--image-variant", default="RGB", help="Potsdam images: RGB (default), IRRG or RGBIR")
    p.add_argument("--num-classes", type=int, default=None, help="folder dataset: number of classes")
    p.add_argument(
        "--value-scale", type=float, default=255.0, help="non-uint8 images: raw value of 1.0 (for the mean/std summary)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@cli_main("semiearth-prepare", io_code=1, data_code=1, config_code=1)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dataset == "check":
            check_splits(args.out)
            print(f"{args.out}: splits are disjoint")
            return 0
        if not args.src:
            print("semiearth-prepare: error: --src is required", file=sys.stderr)
            return 2
        check_output_dir(args.out)  # before the work; the tiles go to a sibling folder first, then renamed
        if os.path.isdir(args.out):
            check_output_dir(os.path.dirname(os.path.abspath(args.out)), f"--out {args.out}: its parent folder")
        ratios = [r for r in args.ratios.split(",") if r.strip()]
        if args.protocol == "semiearth":  # before the work; summary.md (printed at the end) repeats it
            print(f"semiearth-prepare: warning: {PATCH_WARNING}", file=sys.stderr)
        summary = prepare(
            args.dataset,
            args.src,
            args.out,
            tile=args.tile,
            stride=args.stride,
            ratios=ratios,
            seed=args.seed,
            val_frac=args.val_frac,
            test_frac=args.test_frac,
            on_unknown=args.on_unknown,
            label_variant=args.label_variant,
            image_variant=args.image_variant,
            num_classes=args.num_classes,
            value_scale=args.value_scale,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            log=lambda text: print(printable(text)),
            protocol=args.protocol,
        )
        tags = [k.split("/")[0] for k in summary["splits"] if k.endswith("/labeled")]
        print(printable(config_hint(args.dataset, args.out, tags)))
        return 0
    except (DataError, LabelError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"semiearth-prepare: error: {printable(describe(e, args.out))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
