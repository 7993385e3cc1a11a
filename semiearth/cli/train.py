"""semiearth-train --config NAME|FILE.yaml [--set key=value ...] [--out DIR] [--resume | --overwrite]

NAME is a config that ships with the package (`semiearth-train --list-configs` lists them: demo,
potsdam, loveda, ...); FILE.yaml a config of your own.
An output folder that already holds a run is refused unless --resume (continue it from
OUT/latest.pth) or --overwrite (delete it and start again) is given.
Ctrl-C or SIGTERM: the run stops after the current step and saves OUT/latest.pth (exit 130 / 143);
a second Ctrl-C exits at once (the last checkpoint saved stays intact).
Multi-process: `torchrun --nproc_per_node=N -m semiearth.train --config ...`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from semiearth.cli import OutputError, check_output_dir, cli_main, describe


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="semiearth-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="a packaged config's name (see --list-configs) or a YAML file")
    p.add_argument("--list-configs", action="store_true", help="list the packaged configs and exit")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. train.lr=0.01 (repeatable)",
    )
    p.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/latest.pth")
    mode.add_argument("--overwrite", action="store_true", help="delete the run already in OUT and start again")
    args = p.parse_args(argv)
    if not args.config and not args.list_configs:
        p.error("--config is required: a packaged config's name (--list-configs) or a YAML file")
    return args


def list_configs() -> None:
    """Print each packaged config's name and its first comment line (what it trains)."""
    from semiearth.configs import config_path, packaged_configs

    for name in packaged_configs():
        with open(config_path(name)) as f:
            first = f.readline().strip()
        print(f"{name:28s} {first.lstrip('# ') if first.startswith('#') else ''}")


def _latest_checkpoint(out_dir: str) -> str | None:
    """OUT/latest.pth, or that of the sub-run (semi/, supervised/) of a compare_baseline run."""
    for sub in ("semi", "supervised", ""):
        path = os.path.join(out_dir, sub, "latest.pth")
        if os.path.exists(path):
            return path
    return None


@cli_main("semiearth-train", io_code=1, data_code=4)
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_configs:
        list_configs()
        return 0
    from semiearth.config import ConfigError, load_config
    from semiearth.data.classes import LabelError
    from semiearth.data.io import DataError
    from semiearth.data.registry import check_data_config
    from semiearth.train.checkpoint import CheckpointError

    try:
        overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
        cfg = load_config(args.config, overrides)
        check_data_config(cfg.data)
        check_output_dir(cfg.out_dir, "--out" if args.out else "out_dir")  # a file, read-only: before any work
    except (ConfigError, FileNotFoundError) as err:
        print(f"semiearth-train: config error ({args.config}): {err}", file=sys.stderr)
        return 2
    except OutputError as err:
        print(f"semiearth-train: error: {err}", file=sys.stderr)
        return 2
    from semiearth.train import distributed as D
    from semiearth.train import run
    from semiearth.train.runs import RunFolderError

    try:
        result = run(cfg, resume=args.resume, overwrite=args.overwrite)
    except RunFolderError as err:
        print(f"semiearth-train: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"semiearth-train: {err}", file=sys.stderr)
        return 3
    except (DataError, LabelError, FileNotFoundError) as err:
        print(f"semiearth-train: data error: {describe(err)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        latest = _latest_checkpoint(cfg.out_dir)
        saved = f"the last checkpoint saved is {latest} (continue with --resume)" if latest else "nothing was saved yet"
        print(f"\nsemiearth-train: interrupted (Ctrl-C), exited at once; {saved}", file=sys.stderr)
        return 128 + int(signal.SIGINT)
    finally:
        D.cleanup()
    if result.get("interrupted"):
        return 128 + int(result.get("signal", signal.SIGTERM))
    return 0


if __name__ == "__main__":
    sys.exit(main())
