"""render (PNG panel), JSONL records and the noisy-teacher model."""

import pytest
import torch
from PIL import Image

from semiearth.purify import NoisyTeacher, OracleClassifier, VLMPurifier, read_records, render, write_records

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")


def purified(b=2, c=4, h=64, w=80):
    g = torch.Generator().manual_seed(0)
    gt = torch.nn.functional.interpolate(
        torch.randint(0, c, (b, 1, 4, 5), generator=g).float(), size=(h, w), mode="nearest"
    )[:, 0].long()
    logits = NoisyTeacher(blobs_per_mpix=2000.0, blob_radius=(4.0, 10.0), warp_scale=16, blur_px=5)(gt, c)
    images = torch.rand(b, 3, h, w, generator=g)
    oracle = OracleClassifier(c, gt=gt, class_names=["road", "tree", "water", "roof"])
    return images, gt, VLMPurifier(oracle, c, cell=16)(images, logits)


def test_render_panel_png(tmp_path):
    images, gt, out = purified()
    path = tmp_path / "panels" / "p.png"
    pic = render(images, out, gt=gt, path=str(path), index=1)
    assert path.exists()
    saved = Image.open(path)
    zoom = 3  # 80 px tiles are enlarged to at least MIN_TILE_WIDTH = 224
    assert saved.size == pic.size == (5 * 80 * zoom + 4 * 4, 64 * zoom + 16)
    no_gt = render(images[0], out, index=0)
    assert no_gt.size == (4 * 80 * zoom + 3 * 4, 64 * zoom + 16)
    u8 = render((images * 255).byte(), out, gt=gt)
    assert u8.size[0] == 5 * 80 * zoom + 16


def test_records_jsonl_roundtrip(tmp_path):
    _, _, out = purified()
    path = tmp_path / "logs" / "records.jsonl"
    assert write_records(str(path), out.records, step=7) == len(out.records) > 0
    write_records(str(path), out.records[:1], step=8)
    back = read_records(str(path))
    assert len(back) == len(out.records) + 1
    assert back[0]["step"] == 7 and back[-1]["step"] == 8
    assert back[0]["vlm_top3"][0]["name"] in ("road", "tree", "water", "roof")
    assert back[0]["box"] == out.records[0]["box"]


def test_noisy_teacher_is_seeded_and_realistic():
    gt = torch.zeros(128, 128, dtype=torch.long)
    gt[:, 64:] = 1
    gt[:8] = 255
    a = NoisyTeacher()(gt, 3, seed=1)
    b = NoisyTeacher()(gt, 3, seed=1)
    c = NoisyTeacher()(gt, 3, seed=2)
    assert a.shape == (3, 128, 128) and torch.equal(a, b) and not torch.equal(a, c)
    conf = torch.softmax(a, 0).amax(0)
    valid = gt != 255
    acc = float((a.argmax(0) == gt)[valid].float().mean())
    assert 0.6 < acc < 0.999  # wrong most of the time nowhere, perfect nowhere
    assert 0.3 < float((conf >= 0.95).float().mean()) < 0.99
    assert NoisyTeacher()(gt[None].expand(2, -1, -1), 3).shape == (2, 3, 128, 128)
