"""Peak memory of semiearth-predict on large GeoTIFFs: bounded, not growing with the image.

    python bench/predict_memory.py [--sizes 10000 20000] [--model demo|tiny] [--device cpu] [--work DIR]

For each size N it writes an N x N uint8 RGB GeoTIFF (tiled 512 x 512, deflate, EPSG:32631: a
smooth synthetic scene written a block of rows at a time) and runs ``semiearth-predict`` on it
in a subprocess of its own, with a checkpoint of the demo model (semiearth/configs/demo.yaml: EfficientNet-
Lite0 FPN, 6 classes; weights initialised, not trained: memory and time do not depend on them;
``--model tiny`` for a quick run) at the config's window (512 px, overlap 0.25). A 512 x 512 image
gives the baseline (Python, torch, the model). Peak RSS is the subprocess's ``ru_maxrss``, read
by a wrapper process that runs only it (``RUSAGE_CHILDREN`` of the wrapper). Prints a Markdown
table (size, windows, peak RSS, wall time) and the ratio of the peaks of the largest and the
smallest image; target: within 20 %, under 2 GB.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def peak_rss(cmd: list[str]) -> dict:
    """{"rc", "seconds", "maxrss" (bytes)} of `cmd` run alone under a wrapper process."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_scene(path: str, size: int, rows: int = 512) -> None:
    """An N x N uint8 RGB GeoTIFF, tiled, with a CRS; written `rows` at a time (bounded memory)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", crs="EPSG:32631",
                   transform=from_origin(420000, 4500000, 0.3, 0.3))  # fmt: skip
    xx = np.arange(size, dtype=np.float32)[None]
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, rows):
            n = min(rows, size - r0)
            yy = np.arange(r0, r0 + n, dtype=np.float32)[:, None]
            a = (np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 60 + 128
            b = (np.sin((xx + yy) / 91.0) * 90 + 128) * np.ones_like(a)
            band = [a, b, 255 - a]
            dst.write(np.stack([np.clip(v, 0, 255).astype(np.uint8) for v in band]), window=Window(0, r0, size, n))


def write_checkpoint(path: str, model: str) -> dict:
    """A checkpoint of the demo config's model (or the tiny test model), weights initialised."""
    import torch
    import yaml

    from semiearth.config import config_from_dict, config_to_dict
    from semiearth.models import build_model
    from semiearth.train.checkpoint import save_checkpoint

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "semiearth", "configs", "demo.yaml")) as f:
        raw = yaml.safe_load(f)
    raw.pop("compare_baseline", None)
    raw["model"]["pretrained"] = False
    if model == "tiny":
        raw["model"] = {"name": "tiny", "pretrained": False, "decoder_channels": 8}
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.data.num_classes).eval()
    save_checkpoint(path, {"model": net.state_dict(), "ema": net.state_dict(), "config": config_to_dict(cfg)})
    return {"model": cfg.model.name, "window": cfg.eval.window, "classes": cfg.data.num_classes}


def windows(size: int, window: int, overlap: float = 0.25) -> int:
    stride = max(1, int(round(window * (1 - overlap))))
    n = len(range(0, size - window + 1, stride)) + (1 if (size - window) % stride else 0)
    return n * n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000])
    p.add_argument("--model", choices=["demo", "tiny"], default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default=None, help="folder for the images and outputs (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="semiearth-predict-memory-")
    os.makedirs(work, exist_ok=True)
    ckpt = os.path.join(work, f"{args.model}.pth")
    info = write_checkpoint(ckpt, args.model)
    rows = []
    for size in [512, *args.sizes]:
        image = os.path.join(work, f"scene_{size}.tif")
        if not os.path.exists(image):
            t = time.perf_counter()
            write_scene(image, size)
            print(f"wrote {image} ({os.path.getsize(image) / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr)  # fmt: skip
        cmd = [sys.executable, "-P", "-m", "semiearth.cli.predict", "--checkpoint", ckpt, "--input", image,
               "--out", os.path.join(work, f"out_{size}"), "--device", args.device, "--no-progress"]  # fmt: skip
        r = peak_rss(cmd)
        if r["rc"] != 0:
            raise SystemExit(f"semiearth-predict failed on {image} (exit {r['rc']}): {' '.join(cmd)}")
        rows.append({"size": size, "windows": windows(size, info["window"]), **r})
        print(f"{size} x {size}: peak RSS {r['maxrss'] / 2**20:.0f} MiB, {r['seconds']:.0f} s", file=sys.stderr)
    print(f"\nsemiearth-predict, {info['model']} ({info['classes']} classes), window {info['window']} px, overlap 0.25, "
          f"--device {args.device}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| image (uint8 RGB GeoTIFF) | windows | peak RSS | wall time |")
    print("|---|---:|---:|---:|")
    for r in rows:
        label = f"{r['size']} x {r['size']}" + (" (baseline)" if r["size"] == 512 else "")
        print(f"| {label} | {r['windows']} | {r['maxrss'] / 2**20:.0f} MiB | {r['seconds']:.0f} s |")
    big, small = rows[-1], rows[1] if len(rows) > 2 else rows[0]
    ratio = big["maxrss"] / small["maxrss"]
    print(f"\npeak RSS {big['size']} / {small['size']}: {ratio:.2f} (target <= 1.20); "
          f"largest peak {big['maxrss'] / 2**30:.2f} GiB (target < 2 GB)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "device": args.device, "rows": rows, "ratio": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
