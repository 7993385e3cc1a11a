"""Fake (meta) implementations of the semiearth ops: output shapes and dtypes, so they trace
under torch.compile and run on the meta device. Imported once the extension is loaded."""

import torch


@torch.library.register_fake("semiearth::purify_stats")
def _purify_stats_fake(logits, low_thresh, radius, cell, ignore):
    b, c, h, w = logits.shape
    hc, wc = -(-h // cell), -(-w // cell)
    new = logits.new_empty
    return (
        new((b, h, w), dtype=torch.float32),
        new((b, h, w), dtype=torch.int64),
        new((b, h, w), dtype=torch.uint8),
        new((b, hc, wc, c), dtype=torch.int32),
        new((b, hc, wc), dtype=torch.float32),
        new((b, hc, wc), dtype=torch.int32),
        new((), dtype=torch.int64),
    )


@torch.library.register_fake("semiearth::crop_batch")
def _crop_batch_fake(images, regions, size, labels, scale, shift, mask, fill):
    return images.new_empty((regions.shape[0], 3, size, size), dtype=torch.float32)


@torch.library.register_fake("semiearth::purify_apply")
def _purify_apply_fake(logits, label, conf, flags, seg_table, weights, cell, rule, tau):
    return torch.empty_like(label), torch.empty_like(conf)
