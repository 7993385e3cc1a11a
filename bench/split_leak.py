"""How much does a patch-level split (the SemiEarth authors' protocol) inflate test mIoU against a
leak-free scene-level one? (issue 22, item 3; the table is in docs/protocols.md.)

The same scenes are prepared twice with semiearth-prepare's code (semiearth.data.prepare.prepare):
  scene      --protocol scene: whole scenes to train / val / test (--val-frac / --test-frac 0.2 of the
             scenes, so both protocols hold out the same shares);
  semiearth  --protocol semiearth: all patches of all scenes shuffled 60/20/20.
and the same short training runs on each (the same config, labelled ratio, iterations and seed), best
checkpoint on val, reported on test. Per seed (the split seed and the training seed both = seed) it
prints test mIoU for both protocols and the difference semiearth - scene; then mean +- std over seeds.

Sources of scenes:
  synthetic  (default) --scenes (60) procedurally generated scenes of --scene-size (256) px from
             semiearth/data/synthetic.py (6 Potsdam classes; each scene has its own illumination,
             colour cast, roof and lawn colours, so its patches share a look that unseen scenes lack);
  loveda     the 3 real 1024 px LoveDA tiles in ../shared/data/loveda (read in place; with 3 scenes the
             scene protocol has 1 train, 1 val and 1 test scene).

    python -P bench/split_leak.py [--source synthetic|loveda] [--seeds 0 1 2 3 4 5] [--scenes 60]
        [--scene-size 256] [--tile 64] [--ratio 1/4] [--iters 1000] [--json leak.json]
        [--set train.method=fixmatch ...]     # any config override, applied to every run

Training: semiearth/configs/demo.yaml's augmentation with train.method=supervised on the labelled
patches (the leak under test is labelled train vs test; --set train.method=fixmatch adds the
unlabelled patches), the tiny model (model.name=tiny, random init, lr 0.01), 64 px crops, batch 8,
purify none, whole-tile evaluation, best.pth picked on val every iters/8. Times per training are
printed (docs/protocols.md: the measured table and its times).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from PIL import Image  # noqa: E402

from semiearth.config import load_config  # noqa: E402
from semiearth.data.classes import LOVEDA, SYNTHETIC  # noqa: E402
from semiearth.data.prepare import PROTOCOLS, parse_ratio, prepare, ratio_tag  # noqa: E402

SHARED_LOVEDA = os.path.join(ROOT, "..", "shared", "data", "loveda")
RUN = [
    "train.method=supervised",
    "model.name=tiny",
    "model.pretrained=false",
    "model.decoder_channels=16",
    "data.crop_size=64",
    "train.batch_size=8",
    "train.unlabeled_batch_size=8",
    "train.lr=0.01",
    "train.num_workers=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "purify=none",
    "eval.mode=whole",
    "compare_baseline=false",
]


def write_synthetic(src: str, scenes: int, size: int) -> tuple[list, int]:
    """`scenes` synthetic scenes as a generic folder (images/ + masks/ in train ids); (class names, C)."""
    from semiearth.data.synthetic import generate_scene

    os.makedirs(os.path.join(src, "images"))
    os.makedirs(os.path.join(src, "masks"))
    for i in range(scenes):
        image, mask = generate_scene(10_000 + i, size)
        rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(src, "images", f"scene{i:02d}.png"))
        Image.fromarray(mask.numpy().astype(np.uint8)).save(os.path.join(src, "masks", f"scene{i:02d}.png"))
    return list(SYNTHETIC.class_names), SYNTHETIC.num_classes


def prepare_both(source: str, work: str, args, seed: int) -> dict:
    """{protocol: prepared folder} of the same scenes, split with `seed`."""
    out = {}
    for protocol in PROTOCOLS:
        folder = os.path.join(work, f"{protocol}_{seed}")
        if source == "synthetic":
            kw = {"num_classes": 6}
            dataset, src = "folder", os.path.join(work, "src")
        else:
            kw, dataset, src = {}, "loveda", SHARED_LOVEDA
        prepare(dataset, src, folder, tile=args.tile, ratios=[args.ratio], seed=seed, val_frac=0.2, test_frac=0.2,
                protocol=protocol, progress=False, log=lambda *a: None, **kw)  # fmt: skip
        out[protocol] = folder
    return out


def train_once(folder: str, source: str, classes: list, args, seed: int, run_dir: str) -> dict:
    """Train the short run on a prepared folder; {test mIoU, val mIoU, seconds, test patches}."""
    from semiearth.train import train

    tag = ratio_tag(parse_ratio(args.ratio))
    splits = (
        f"{{labeled: splits/{tag}/labeled.txt, unlabeled: splits/{tag}/unlabeled.txt, "
        "val: splits/val.txt, test: splits/test.txt}"
    )
    data = [
        f"data.name={'folder' if source == 'synthetic' else 'loveda'}",
        f"data.root={folder}",
        f"data.splits={splits}",
        "data.options={}",
        f"data.num_classes={len(classes)}",
        f"data.class_names=[{', '.join(classes)}]",
        "data.palette=null",
    ]
    iters = [
        f"train.iters={args.iters}",
        f"train.eval_every={max(args.iters // 8, 1)}",
        f"train.log_every={args.iters}",
    ]
    cfg = load_config(os.path.join(ROOT, "semiearth", "configs", "demo.yaml"),
                      [*RUN, *data, *iters, f"train.seed={seed}", f"out_dir={run_dir}", *args.set])  # fmt: skip
    t0 = time.time()
    result = train(cfg)
    with open(os.path.join(folder, "splits", "test.txt")) as f:
        n_test = sum(1 for line in f if line.strip())
    return {
        "test_miou": result["test"]["mIoU"],
        "val_miou": result["val"]["mIoU"],
        "seconds": round(time.time() - t0, 1),
        "test_patches": n_test,
    }


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def report(rows: list[dict]) -> str:
    """The markdown table of per-seed test (and val) mIoU for both protocols, their difference, and
    mean +- std over seeds with the standard error of the mean difference."""
    pct = {(p, k): [100 * r[p][k] for r in rows] for p in PROTOCOLS for k in ("test_miou", "val_miou")}
    diff = [100 * r["diff"] for r in rows]
    out = [
        "| seed | test mIoU, scene split | test mIoU, patch split (semiearth) | difference | val mIoU, scene / patch |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        out.append(
            f"| {r['seed']} | {pct['scene', 'test_miou'][i]:.2f} | {pct['semiearth', 'test_miou'][i]:.2f} | "
            f"{diff[i]:+.2f} | {pct['scene', 'val_miou'][i]:.2f} / {pct['semiearth', 'val_miou'][i]:.2f} |"
        )
    se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    out.append(
        f"| mean +- std ({len(rows)} seeds) | {mean_std(pct['scene', 'test_miou'])} | "
        f"{mean_std(pct['semiearth', 'test_miou'])} | {mean_std(diff)} (s.e. {se:.2f}) | "
        f"{mean_std(pct['scene', 'val_miou'])} / {mean_std(pct['semiearth', 'val_miou'])} |"
    )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=("synthetic", "loveda"), default="synthetic")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--scenes", type=int, default=60, help="synthetic scenes (default 60)")
    ap.add_argument("--scene-size", type=int, default=256, help="synthetic scene size in px (default 256)")
    ap.add_argument("--tile", type=int, default=64, help="patch size of both preparations (default 64)")
    ap.add_argument("--ratio", default="1/4", help="labelled share of the train patches (default 1/4)")
    ap.add_argument("--iters", type=int, default=1000, help="training iterations per run (default 1000)")
    ap.add_argument("--set", action="append", default=[], help="a config override for every run")
    ap.add_argument("--json", help="write the per-seed results here")
    ap.add_argument("--report", nargs="+", metavar="JSON", help="only print the table of earlier --json files, merged")
    args = ap.parse_args(argv)
    if args.report:
        rows = []
        for path in args.report:
            with open(path) as f:
                rows += json.load(f)["runs"]
        print(report(sorted(rows, key=lambda r: r["seed"])))
        return 0
    if args.source == "loveda" and not os.path.isfile(os.path.join(SHARED_LOVEDA, "img", "0.png")):
        print(f"split_leak: the real LoveDA tiles are not at {SHARED_LOVEDA} (../shared/data)", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="split-leak-") as work:
        if args.source == "synthetic":
            classes, _ = write_synthetic(os.path.join(work, "src"), args.scenes, args.scene_size)
        else:
            classes = list(LOVEDA.class_names)
        for seed in args.seeds:
            folders = prepare_both(args.source, work, args, seed)
            row = {"seed": seed}
            for protocol, folder in folders.items():
                row[protocol] = train_once(
                    folder, args.source, classes, args, seed, os.path.join(work, f"run_{protocol}_{seed}")
                )
            row["diff"] = row["semiearth"]["test_miou"] - row["scene"]["test_miou"]
            rows.append(row)
            print(
                f"[split_leak] seed {seed}: test mIoU scene {100 * row['scene']['test_miou']:.2f} "
                f"({row['scene']['test_patches']} patches, {row['scene']['seconds']} s), semiearth "
                f"{100 * row['semiearth']['test_miou']:.2f} ({row['semiearth']['test_patches']} patches, "
                f"{row['semiearth']['seconds']} s), difference {100 * row['diff']:+.2f}",
                flush=True,
            )
    print("\n" + report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
