"""Prototype classifier variants on the real tiles: region accuracy and the change that rule "bayes"
makes to precision@0.95 and mIoU, against the same noisy teacher as bench/purify_quality.py.

Variants (prototypes per class K, crop zooms, labelled segments per class): the plain classifier,
several prototypes per class (spherical k-means), multi-scale crops (the crop and its central half),
more labelled segments, and all of them together. Each is fitted without leakage (the other LoveDA
tiles; the left half of Potsdam for its right half), as in purify_quality.

    python bench/prototype_variants.py [--data ../shared/data]
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import purify_quality as pq  # noqa: E402

from semiearth.purify import NoisyTeacher  # noqa: E402

VARIANTS = [(1, "1.0", 48), (3, "1.0", 48), (1, "1.0,0.5", 48), (1, "1.0", 192), (3, "1.0,0.5", 192)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=pq.DEFAULT_DATA)
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "loveda")):
        print(f"no data at {args.data} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    settings = dict(max_regions=48, cell=32, context=2.0, low_thresh=0.7, crop_size=128, seed=0, backend="auto")
    for k, v in settings.items():
        setattr(args, k, v)
    warnings.simplefilter("ignore")
    units = [u for u in pq.prepare_units(args, NoisyTeacher()) if u["fit"] is not None]
    print("| K | scales | segments/class | " + " | ".join(u["name"] for u in units) + " |")
    print("|---|---|---|" + "---|" * len(units))
    for k, scales, n in VARIANTS:
        args.prototypes_per_class, args.scales, args.fit_per_class = k, scales, n
        t, cells = time.perf_counter(), []
        for u in units:
            proto, _ = pq.fit_prototype(args, u)
            w = pq.CachedQ(proto, gt=u["gts"])
            kw = pq.stats_kwargs_for(args, u["c"])
            r = pq.purify_row("p", w, "bayes", 1.0, u["images"], u["logits"], u["gts"], u["c"], kw)
            acc, _ = w.region_accuracy()
            d_miou, d_prec = (100 * (r[m] - u["teacher"][m]) for m in ("miou", "precision"))
            cells.append(f"acc {acc:.3f}, mIoU {d_miou:+.2f}, prec. {d_prec:+.3f}")
        print(f"| {k} | {scales} | {n} | " + " | ".join(cells) + f" |  ({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
