"""semiearth-eval --checkpoint RUN/best.pth [--split test] [--config X.yaml] [--set key=value ...]

Evaluates the network of a checkpoint that its S4 method evaluates (FixMatch: the EMA teacher), or
--weights NAME (the names of semiearth-predict too), on a split and prints per-class IoU/F1, mIoU, OA and mean F1. The run's saved config is used unless
--config is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from semiearth.cli import WEIGHTS_HELP, check_output_file, cli_main, describe


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="semiearth-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["val", "test", "labeled"])
    p.add_argument("--config", default=None, help="config file (default: the one stored in the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--weights",
        default=None,
        help=WEIGHTS_HELP,
    )
    p.add_argument("--mode", default=None, choices=["whole", "slide"], help="inference mode (overrides eval.mode)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    return p.parse_args(argv)


@cli_main("semiearth-eval", io_code=2, data_code=2, out_option="--json")
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.json:
        check_output_file(args.json, "--json")  # before the evaluation, not after it (cli_main words it)
    import torch

    from semiearth.config import ConfigError, apply_overrides, config_from_dict, load_config
    from semiearth.data import build_dataset
    from semiearth.data.classes import LabelError
    from semiearth.data.io import DataError
    from semiearth.data.registry import check_data_config
    from semiearth.eval import evaluate
    from semiearth.eval.metrics import format_table
    from semiearth.models import build_model
    from semiearth.train.checkpoint import (
        CheckpointError,
        check_compatible,
        inference_model,
        load_checkpoint,
    )

    try:
        ckpt = load_checkpoint(args.checkpoint)
        overrides = list(args.overrides) + ([f"eval.mode={args.mode}"] if args.mode else [])
        if args.config:
            cfg = load_config(args.config, overrides)
        else:
            cfg = config_from_dict(apply_overrides(ckpt["config"], overrides))
        check_compatible(ckpt, cfg.model.name, cfg.data.num_classes, args.checkpoint)
        check_data_config(cfg.data)
        cfg.model.pretrained = False  # the checkpoint holds every weight
        model = inference_model(
            ckpt, args.weights, args.checkpoint, lambda: build_model(cfg.model, cfg.data.num_classes)
        )
    except (CheckpointError, ConfigError, FileNotFoundError) as err:
        print(f"semiearth-eval: {describe(err)}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    try:
        dataset = build_dataset(cfg.data, args.split)
        metrics = evaluate(model, dataset, cfg.data, cfg.eval, device)
    except (DataError, LabelError, FileNotFoundError) as err:
        print(f"semiearth-eval: data error: {describe(err)}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint} on {cfg.data.name}/{args.split} ({len(dataset)} images, {cfg.eval.mode}):")
    print(format_table({args.split: metrics}, cfg.data.class_names))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
