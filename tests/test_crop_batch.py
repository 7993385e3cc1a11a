"""crop_batch: the C++ (and CUDA) kernels against the torch reference and torchvision roi_align."""

import os

import pytest
import torch
import torchvision
from helpers import backend_device, real_tiles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semiearth import ops

BACKENDS = ["cpp", "cuda"]


def random_regions(n, b, h, w, g, num_classes=4, outside=0.3):
    """[N,6] boxes of any size, some partly (or fully) outside the image, some degenerate."""
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * (1 + 2 * outside) - outside * torch.tensor([w, h])
    x1y1 = centre - wh / 2
    batch = torch.randint(0, b, (n, 1), generator=g).float()
    cls = torch.randint(0, num_classes, (n, 1), generator=g).float()
    regions = torch.cat([batch, x1y1, x1y1 + wh, cls], dim=1)
    if n > 2:
        regions[0, 3] = regions[0, 1]  # zero width
        regions[1, 1:5] = torch.tensor([-0.5, -0.5, w + 0.5, h + 0.5])  # the whole image and a bit
    return regions


def run(backend, images, regions, size, labels=None, scale=1.0, shift=0.0, mask=True, fill=0.0):
    name, device = backend_device(backend)
    to = (lambda t: None if t is None else t.to(device)) if device.type != "cpu" else (lambda t: t)
    out = ops.crop_batch(to(images), to(regions), size, to(labels), scale, shift, mask, fill, backend=name)
    assert out.dtype == torch.float32 and out.shape == (regions.shape[0], 3, size, size)
    return out.cpu()


def reference(images, regions, size, labels=None, scale=1.0, shift=0.0, mask=True, fill=0.0):
    return ops.crop_batch(images, regions, size, labels, scale, shift, mask, fill, backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_crops_match_reference(backend):
    backend_device(backend)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        b=st.integers(1, 3),
        h=st.integers(1, 120),
        w=st.integers(1, 120),
        n=st.integers(0, 12),
        size=st.sampled_from([1, 2, 7, 16, 33]),
        uint8=st.booleans(),
        use_mask=st.booleans(),
        seed=st.integers(0, 2**31 - 1),
    )
    def check(b, h, w, n, size, uint8, use_mask, seed):
        g = torch.Generator().manual_seed(seed)
        images = torch.rand(b, 3, h, w, generator=g)
        if uint8:
            images = (images * 255).to(torch.uint8)
        regions = random_regions(n, b, h, w, g)
        labels = torch.randint(0, 4, (b, h, w), generator=g) if use_mask else None
        scale, shift = [0.5, 2.0, 1.5], [0.1, -0.2, 0.3]
        got = run(backend, images, regions, size, labels, scale, shift, True, -3.0)
        want = reference(images, regions, size, labels, scale, shift, True, -3.0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [1, 5, 64])
def test_equals_torchvision_roi_align(backend, size):
    """Mask off, identity scale/shift: torchvision roi_align(aligned=True, sampling_ratio=1)."""
    g = torch.Generator().manual_seed(size)
    images = torch.rand(3, 3, 57, 83, generator=g)
    regions = random_regions(40, 3, 57, 83, g)
    got = run(backend, images, regions, size, mask=False)
    want = torchvision.ops.roi_align(images, regions[:, :5], size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uint8_images_and_normalisation(backend):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 40, 50), generator=g, dtype=torch.uint8)
    regions = random_regions(9, 2, 40, 50, g, outside=0.0)
    # inside the image: outside samples are `fill` here, but 0 * scale + shift after roi_align
    regions[:, [1, 3]] = regions[:, [1, 3]].clamp(0, 50)
    regions[:, [2, 4]] = regions[:, [2, 4]].clamp(0, 40)
    mean, std = torch.tensor([0.48, 0.46, 0.41]), torch.tensor([0.27, 0.26, 0.28])
    scale, shift = 1 / (255 * std), -mean / std
    got = run(backend, images, regions, 24, None, scale, shift, mask=False)
    want = torchvision.ops.roi_align(images.float(), regions[:, :5], 24, sampling_ratio=1, aligned=True)
    want = want * scale[None, :, None, None] + shift[None, :, None, None]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, reference(images, regions, 24, None, scale, shift, False), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_regions(backend):
    images = torch.rand(2, 3, 16, 16)
    for regions in (torch.zeros(0, 6), torch.zeros(0, 6, dtype=torch.float64)):
        out = run(backend, images, regions, 32, torch.zeros(2, 16, 16, dtype=torch.long))
        assert out.shape == (0, 3, 32, 32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_outside_get_fill(backend):
    images = torch.rand(1, 3, 10, 10)
    regions = torch.tensor([[0, -30.0, -30.0, -20.0, -20.0, 0], [0, 5.0, 5.0, 25.0, 25.0, 0]])
    out = run(backend, images, regions, 8, fill=7.0, mask=False)
    assert bool((out[0] == 7.0).all())  # entirely outside
    # right/bottom half of the second box lies beyond x, y > 10 (roi_align: c > extent is outside)
    assert bool((out[1, :, :, -2:] == 7.0).all()) and bool((out[1, :, :2, :2] != 7.0).all())
    torch.testing.assert_close(out, reference(images, regions, 8, fill=7.0, mask=False))


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_mask_on_real_tiles(backend):
    """Crops of the real LoveDA / Potsdam tiles with their ground truth as the class mask."""
    for i, (tag, image, ann, c) in enumerate(real_tiles()):
        g = torch.Generator().manual_seed(i)
        h, w = ann.shape
        regions = random_regions(12, 1, h, w, g, num_classes=c, outside=0.1)
        images, labels = image[None], ann[None]
        scale, shift = [1 / 255 / 0.27] * 3, [-1.7, -1.7, -1.6]
        got = run(backend, images, regions, 48, labels, scale, shift, True, 0.0)
        want = reference(images, regions, 48, labels, scale, shift, True, 0.0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=tag)
        # a masked crop keeps exactly the samples whose nearest pixel has the region's class
        assert bool((got == 0).any())


def test_non_contiguous_inputs():
    backend_device("cpp")
    g = torch.Generator().manual_seed(2)
    base = torch.rand(2, 40, 60, 3, generator=g)
    images = base.permute(0, 3, 1, 2)[:, :, :, ::2]
    labels = torch.randint(0, 3, (2, 60, 40), generator=g).transpose(1, 2)[:, :, ::2]
    regions = random_regions(8, 2, 40, 30, g, num_classes=3).double()[:, [0, 1, 2, 3, 4, 5]]
    regions = torch.cat([regions, regions], 0)[::2]
    assert not images.is_contiguous() and not labels.is_contiguous()
    got = run("cpp", images, regions, 20, labels, [2.0, 1.0, 0.5], 0.25)
    torch.testing.assert_close(got, reference(images, regions, 20, labels, [2.0, 1.0, 0.5], 0.25))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(images=torch.rand(3, 8, 8)), ValueError, "images"),
        (dict(images=torch.rand(1, 4, 8, 8)), ValueError, "images"),
        (dict(images=torch.rand(1, 3, 8, 8).double()), TypeError, "images"),
        (dict(images=torch.zeros(1, 3, 8, 8, dtype=torch.int32)), TypeError, "images"),
        (dict(regions=torch.tensor([[1.0, 0, 0, 4, 4, 0]])), ValueError, "regions.*batch"),
        (dict(regions=torch.tensor([[-1.0, 0, 0, 4, 4, 0]])), ValueError, "regions.*batch"),
        (dict(regions=torch.tensor([[0.5, 0, 0, 4, 4, 0]])), ValueError, "regions.*batch"),
        (dict(regions=torch.tensor([[0.0, 5, 0, 4, 4, 0]])), ValueError, "x2 >= x1"),
        (dict(regions=torch.tensor([[0.0, 0, 5, 4, 4, 0]])), ValueError, "y2 >= y1"),
        (dict(regions=torch.tensor([[0.0, 0, float("nan"), 4, 4, 0]])), ValueError, "regions"),
        (dict(regions=torch.zeros(2, 5)), ValueError, "regions"),
        (dict(regions=torch.zeros(2, 6, dtype=torch.int64)), TypeError, "regions"),
        (dict(size=0), ValueError, "size"),
        (dict(labels=torch.zeros(1, 8, 8, dtype=torch.int32)), TypeError, "labels"),
        (dict(labels=torch.zeros(1, 8, 9, dtype=torch.int64)), ValueError, "labels"),
        (dict(scale=[1.0, 2.0]), ValueError, "scale"),
        (dict(shift=float("inf")), ValueError, "shift"),
    ],
)
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_bad_input_names_the_argument(kwargs, error, match, backend):
    if backend == "cpp":
        backend_device("cpp")
    args = dict(images=torch.rand(1, 3, 8, 8), regions=torch.tensor([[0.0, 0, 0, 4, 4, 0]]), size=4, labels=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.crop_batch(**args, backend=backend)


@pytest.mark.skipif(os.environ.get("FORCE_CUDA") != "1", reason="FORCE_CUDA=1 not set: CUDA kernels are optional")
def test_cuda_kernels_compiled_in():
    """With FORCE_CUDA=1 (as `make test` sets) the extension must contain the CUDA kernels."""
    backend_device("cpp")
    assert ops.has_cuda_kernels(), "semiearth._C was built without WITH_CUDA although FORCE_CUDA=1"
    from semiearth import _C

    assert _C.with_cuda()
    assert torch._C._dispatch_has_kernel_for_dispatch_key("semiearth::crop_batch", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("semiearth::crop_batch", "CPU")


def test_meta_and_compile():
    backend_device("cpp")
    images, regions = torch.rand(2, 3, 20, 20), torch.tensor([[1.0, 2, 2, 10, 12, 0], [0.0, 0, 0, 5, 5, 1]])
    out = torch.ops.semiearth.crop_batch(
        images.to("meta"),
        regions.to("meta"),
        9,
        None,
        torch.ones(3, device="meta"),
        torch.zeros(3, device="meta"),
        False,
        0.0,
    )
    assert out.shape == (2, 3, 9, 9) and out.dtype == torch.float32

    def f(im, reg):
        return torch.ops.semiearth.crop_batch(im, reg, 9, None, torch.ones(3), torch.zeros(3), False, 0.0) * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(images, regions), f(images, regions))
