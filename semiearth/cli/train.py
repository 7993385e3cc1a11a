"""semiearth-train --config configs/X.yaml [--set key=value ...] [--out DIR] [--resume]

Multi-process: `torchrun --nproc_per_node=N -m semiearth.train --config ...`.
"""

from __future__ import annotations

import argparse
import signal
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="semiearth-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. train.lr=0.01 (repeatable)",
    )
    p.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest.pth")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from semiearth.config import ConfigError, load_config
    from semiearth.train.checkpoint import CheckpointError

    try:
        overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
        cfg = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"semiearth-train: config error: {err}", file=sys.stderr)
        return 2
    from semiearth.train import distributed as D
    from semiearth.train import run

    try:
        result = run(cfg, resume=args.resume)
    except CheckpointError as err:
        print(f"semiearth-train: {err}", file=sys.stderr)
        return 3
    finally:
        D.cleanup()
    if result.get("interrupted"):
        return 128 + int(signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
