// crop_batch, CPU: regions [N,6] (batch, x1, y1, x2, y2, class) of images [B,3,H,W] (float32 or
// uint8) -> crops [N,3,S,S] float32. Specification: semiearth/ops/crop_batch.py
// (crop_batch_reference): torchvision roi_align(aligned=True, sampling_ratio=1) sampling, then
// x * scale + shift per channel, and `fill` outside the image or (mask on) where the nearest
// pixel's label is not the region's class.
//
// The sample positions are computed once per crop and axis, in double exactly as the reference
// does; bilinear interpolation is in double too (as the reference), so crops match it to the
// last bit on x86-64. at::parallel_for over (crop, output row).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

namespace semiearth {
namespace cpu {
namespace {

struct Axis {  // one sample position along one axis
  int64_t i0, i1, near;
  double l;
  bool valid;
};

// roi_align(aligned=True, sampling_ratio=1) positions of `size` samples in [lo, hi) (see
// sample_coords in crop_batch.py): clamped coordinate, its two pixels and weight, validity
// (-1 <= c <= extent before clamping) and the nearest pixel.
void sample_axis(double lo, double hi, int64_t size, int64_t extent, Axis* out) {
  const double bin = (hi - lo) / static_cast<double>(size);
  for (int64_t i = 0; i < size; ++i) {
    double c = (lo - 0.5) + (static_cast<double>(i) + 0.5) * bin;
    Axis a;
    a.valid = c >= -1.0 && c <= static_cast<double>(extent);
    c = c < 0.0 ? 0.0 : c;
    if (c >= static_cast<double>(extent - 1)) c = static_cast<double>(extent - 1);
    a.i0 = static_cast<int64_t>(std::floor(c));
    a.i1 = std::min(a.i0 + 1, extent - 1);
    a.l = c - static_cast<double>(a.i0);
    a.near = std::min(static_cast<int64_t>(std::floor(c + 0.5)), extent - 1);
    out[i] = a;
  }
}

at::Tensor crop_batch_cpu(const at::Tensor& images_in, const at::Tensor& regions_in, int64_t size,
                          const std::optional<at::Tensor>& labels_in, const at::Tensor& scale_in,
                          const at::Tensor& shift_in, bool mask, double fill) {
  TORCH_CHECK(images_in.dim() == 4 && images_in.size(1) == 3, "crop_batch: images must be [B,3,H,W]");
  TORCH_CHECK(regions_in.dim() == 2 && regions_in.size(1) == 6, "crop_batch: regions must be [N,6]");
  TORCH_CHECK(size >= 1, "crop_batch: size must be >= 1");
  TORCH_CHECK(scale_in.numel() == 3 && shift_in.numel() == 3, "crop_batch: scale and shift must have 3 values");
  const at::Tensor images = images_in.contiguous();
  const at::Tensor regions = regions_in.to(at::kDouble).contiguous();
  const at::Tensor scale_t = scale_in.to(at::kFloat).contiguous();
  const at::Tensor shift_t = shift_in.to(at::kFloat).contiguous();
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3), N = regions.size(0), S = size;
  at::Tensor out = at::empty({N, 3, S, S}, images.options().dtype(at::kFloat));
  if (N == 0) return out;
  TORCH_CHECK(H >= 1 && W >= 1, "crop_batch: images must have H, W >= 1");
  at::Tensor labels;
  const bool use_mask = mask && labels_in.has_value() && labels_in->defined();
  if (use_mask) {
    labels = labels_in->to(at::kLong).contiguous();
    TORCH_CHECK(labels.sizes() == at::IntArrayRef({B, H, W}), "crop_batch: labels must be [B,H,W]");
  }
  const double* reg = regions.data_ptr<double>();
  for (int64_t n = 0; n < N; ++n) {
    const double bd = reg[n * 6];
    TORCH_CHECK(bd >= 0 && bd < static_cast<double>(B), "crop_batch: region ", n, " has batch index ", bd,
                " outside [0, ", B, ")");
  }
  // Sample tables of every crop: [N][S] along y and along x.
  std::vector<Axis> ys(static_cast<size_t>(N * S)), xs(static_cast<size_t>(N * S));
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const double* r = reg + n * 6;
      sample_axis(r[2], r[4], S, H, ys.data() + n * S);
      sample_axis(r[1], r[3], S, W, xs.data() + n * S);
    }
  });
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = scale_t.data_ptr<float>()[c];
    shift[c] = shift_t.data_ptr<float>()[c];
  }
  const float fillf = static_cast<float>(fill);
  const int64_t* lab_all = use_mask ? labels.data_ptr<int64_t>() : nullptr;
  float* out_all = out.data_ptr<float>();

  auto run = [&](auto* img_all) {
    at::parallel_for(0, N * S, 8, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / S, oy = row % S;
        const double* r = reg + n * 6;
        const int64_t b = static_cast<int64_t>(r[0]);
        const int64_t cls = static_cast<int64_t>(r[5]);
        const Axis& ay = ys[n * S + oy];
        const Axis* ax = xs.data() + n * S;
        float* o[3];
        for (int c = 0; c < 3; ++c) o[c] = out_all + ((n * 3 + c) * S + oy) * S;
        if (!ay.valid) {
          for (int c = 0; c < 3; ++c) std::fill(o[c], o[c] + S, fillf);
          continue;
        }
        const auto* img = img_all + b * 3 * H * W;
        const int64_t r0 = ay.i0 * W, r1 = ay.i1 * W;
        const double ly = ay.l, hy = 1.0 - ly;
        const int64_t* lrow = use_mask ? lab_all + (b * H + ay.near) * W : nullptr;
        for (int64_t ox = 0; ox < S; ++ox) {
          const Axis& a = ax[ox];
          bool keep = a.valid;
          if (use_mask && keep) keep = lrow[a.near] == cls;
          if (!keep) {
            for (int c = 0; c < 3; ++c) o[c][ox] = fillf;
            continue;
          }
          const double lx = a.l, hx = 1.0 - lx;
          const double w00 = hy * hx, w01 = hy * lx, w10 = ly * hx, w11 = ly * lx;
          for (int c = 0; c < 3; ++c) {
            const auto* p = img + c * H * W;
            const double v = static_cast<double>(p[r0 + a.i0]) * w00 + static_cast<double>(p[r0 + a.i1]) * w01 +
                             static_cast<double>(p[r1 + a.i0]) * w10 + static_cast<double>(p[r1 + a.i1]) * w11;
            o[c][ox] = static_cast<float>(v) * scale[c] + shift[c];
          }
        }
      }
    });
  };
  if (images.scalar_type() == at::kFloat) {
    run(images.data_ptr<float>());
  } else if (images.scalar_type() == at::kByte) {
    run(images.data_ptr<uint8_t>());
  } else {
    TORCH_CHECK(false, "crop_batch: images must be float32 or uint8, got ", images.scalar_type());
  }
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CPU, m) { m.impl("crop_batch", &semiearth::cpu::crop_batch_cpu); }
