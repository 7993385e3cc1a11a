"""How often does a training run send the same region to the classifier again? (issue 21: would a
VLM answer cache pay?)

Trains a config (default semiearth/configs/demo.yaml, shortened with --set) with its classifier wrapped: every
crop the purifier hands over is hashed (exact bytes of the [3,S,S] tensor: the key a cache of VLM
answers would use) and, as a looser near-duplicate key, its 8x8 average-pooled thumbnail quantised
to 16 levels per channel. Reports regions, repeat hits (a crop seen before in the run), the hit rate
and the VLM tokens a cache would save at the per-region counts of docs/classifiers.md (bench/vlm_timing.py:
211.8 tokens per region at purify.topk 3, 250 scoring every class).

    python -P bench/region_repeats.py --set train.iters=200 --json /tmp/region_repeats.json
"""

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from semiearth.config import load_config  # noqa: E402
from semiearth.train import purify_hook  # noqa: E402
from semiearth.train.trainer import train  # noqa: E402

TOKENS_PER_REGION = {"topk 3": 211.8, "all classes": 250.0}  # docs/classifiers.md "The VLM classifier" table


class Counter:
    def __init__(self):
        self.exact, self.coarse = set(), set()
        self.regions = self.exact_hits = self.coarse_hits = self.calls = 0

    def see(self, crops: torch.Tensor):
        self.calls += 1
        crops = crops.detach().float().cpu()
        thumbs = (F.adaptive_avg_pool2d(crops, 8) * 4).round().to(torch.int16) if crops.shape[0] else crops
        for crop, thumb in zip(crops, thumbs, strict=True):
            self.regions += 1
            key = hashlib.blake2b(crop.contiguous().numpy().tobytes(), digest_size=16).digest()
            self.exact_hits += key in self.exact
            self.exact.add(key)
            tkey = hashlib.blake2b(thumb.contiguous().numpy().tobytes(), digest_size=16).digest()
            self.coarse_hits += tkey in self.coarse
            self.coarse.add(tkey)


def wrap(classifier, counter: Counter):
    """The same classifier (attributes, fit, observe, signature) with its calls counted."""
    cls = type(classifier)
    inner_call = cls.__call__

    @functools.wraps(inner_call)  # inspect.signature follows __wrapped__: accepts_classes is unchanged
    def counted(self, crops, regions, *args, **kwargs):
        counter.see(crops)
        return inner_call(self, crops, regions, *args, **kwargs)

    classifier.__class__ = type(f"Counted{cls.__name__}", (cls,), {"__call__": counted})
    return classifier


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="demo")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.iters=200")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    counter = Counter()
    build = purify_hook.build_classifier
    purify_hook.build_classifier = lambda name, ctx: wrap(build(name, ctx), counter)
    with tempfile.TemporaryDirectory() as out:
        overrides = [f"out_dir={out}", "compare_baseline=false", *args.set]
        cfg = load_config(args.config, overrides)
        t0 = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - t0
    n = max(counter.regions, 1)
    row = {
        "config": args.config,
        "overrides": overrides[2:],
        "iters": cfg.train.iters,
        "purify_every": cfg.purify.every,
        "purify_calls": counter.calls,
        "regions": counter.regions,
        "exact_hits": counter.exact_hits,
        "exact_hit_rate": counter.exact_hits / n,
        "coarse_hits": counter.coarse_hits,
        "coarse_hit_rate": counter.coarse_hits / n,
        "tokens_saved": {k: counter.exact_hits * v for k, v in TOKENS_PER_REGION.items()},
        "tokens_total": {k: counter.regions * v for k, v in TOKENS_PER_REGION.items()},
        "train_seconds": seconds,
    }
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
