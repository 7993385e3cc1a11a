// crop_batch, CUDA: one thread per output element (crop n, channel c, row oy, column ox).
// Mirrors csrc/cpu/crop_batch.cpp (and so crop_batch_reference in semiearth/ops/crop_batch.py):
// roi_align(aligned=True, sampling_ratio=1) sample positions computed in double exactly as the
// reference does, bilinear interpolation in double, then x * scale + shift in float32, and `fill`
// outside the image or (mask on) where the nearest pixel's label is not the region's class.
// Batch indices are validated by the Python wrapper (a host check here would synchronise); a
// region whose index is not an image of the batch reads nothing and gets `fill`.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

namespace semiearth {
namespace cuda {
namespace {

struct Axis {
  int64_t i0, i1, near;
  double l;
  bool valid;
};

__device__ __forceinline__ Axis sample_axis(double lo, double hi, int64_t i, int64_t size, int64_t extent) {
  const double bin = (hi - lo) / static_cast<double>(size);
  // __dadd_rn/__dmul_rn: no FMA contraction, so positions match the CPU and the reference bit for bit.
  double c = __dadd_rn(lo - 0.5, __dmul_rn(static_cast<double>(i) + 0.5, bin));
  Axis a;
  a.valid = c >= -1.0 && c <= static_cast<double>(extent);
  c = c < 0.0 ? 0.0 : c;
  if (c >= static_cast<double>(extent - 1)) c = static_cast<double>(extent - 1);
  a.i0 = static_cast<int64_t>(floor(c));
  a.i1 = a.i0 + 1 < extent - 1 ? a.i0 + 1 : extent - 1;
  a.l = c - static_cast<double>(a.i0);
  const int64_t nr = static_cast<int64_t>(floor(c + 0.5));
  a.near = nr < extent - 1 ? nr : extent - 1;
  return a;
}

template <typename scalar_t>
__global__ void crop_batch_kernel(const scalar_t* __restrict__ images, const double* __restrict__ regions,
                                  const int64_t* __restrict__ labels, const float* __restrict__ scale,
                                  const float* __restrict__ shift, float* __restrict__ out, int64_t N, int64_t B,
                                  int64_t H, int64_t W, int64_t S, float fill) {
  const int64_t total = N * 3 * S * S;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ox = idx % S;
    const int64_t oy = (idx / S) % S;
    const int64_t c = (idx / (S * S)) % 3;
    const int64_t n = idx / (3 * S * S);
    const double* r = regions + n * 6;
    const bool in_batch = r[0] >= 0.0 && r[0] < static_cast<double>(B);
    const int64_t b = in_batch ? static_cast<int64_t>(r[0]) : 0;
    const Axis ay = sample_axis(r[2], r[4], oy, S, H);
    const Axis ax = sample_axis(r[1], r[3], ox, S, W);
    bool keep = in_batch && ay.valid && ax.valid;
    if (keep && labels != nullptr) keep = labels[(b * H + ay.near) * W + ax.near] == static_cast<int64_t>(r[5]);
    if (!keep) {
      out[idx] = fill;
      continue;
    }
    const scalar_t* p = images + (b * 3 + c) * H * W;
    const double ly = ay.l, hy = 1.0 - ly, lx = ax.l, hx = 1.0 - lx;
    const double w00 = __dmul_rn(hy, hx), w01 = __dmul_rn(hy, lx), w10 = __dmul_rn(ly, hx), w11 = __dmul_rn(ly, lx);
    double v = __dmul_rn(static_cast<double>(p[ay.i0 * W + ax.i0]), w00);
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(p[ay.i0 * W + ax.i1]), w01));
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(p[ay.i1 * W + ax.i0]), w10));
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(p[ay.i1 * W + ax.i1]), w11));
    out[idx] = __fadd_rn(__fmul_rn(static_cast<float>(v), scale[c]), shift[c]);
  }
}

at::Tensor crop_batch_cuda(const at::Tensor& images_in, const at::Tensor& regions_in, int64_t size,
                           const std::optional<at::Tensor>& labels_in, const at::Tensor& scale_in,
                           const at::Tensor& shift_in, bool mask, double fill) {
  TORCH_CHECK(images_in.is_cuda(), "crop_batch: images must be a CUDA tensor");
  TORCH_CHECK(images_in.dim() == 4 && images_in.size(1) == 3, "crop_batch: images must be [B,3,H,W]");
  TORCH_CHECK(regions_in.dim() == 2 && regions_in.size(1) == 6, "crop_batch: regions must be [N,6]");
  TORCH_CHECK(size >= 1, "crop_batch: size must be >= 1");
  TORCH_CHECK(scale_in.numel() == 3 && shift_in.numel() == 3, "crop_batch: scale and shift must have 3 values");
  const c10::cuda::CUDAGuard guard(images_in.device());
  const at::Tensor images = images_in.contiguous();
  const at::Tensor regions = regions_in.to(images.device(), at::kDouble).contiguous();
  const at::Tensor scale = scale_in.to(images.device(), at::kFloat).contiguous();
  const at::Tensor shift = shift_in.to(images.device(), at::kFloat).contiguous();
  const int64_t H = images.size(2), W = images.size(3), N = regions.size(0), S = size;
  at::Tensor out = at::empty({N, 3, S, S}, images.options().dtype(at::kFloat));
  if (N == 0) return out;
  at::Tensor labels;
  if (mask && labels_in.has_value() && labels_in->defined()) {
    labels = labels_in->to(images.device(), at::kLong).contiguous();
    TORCH_CHECK(labels.sizes() == at::IntArrayRef({images.size(0), H, W}), "crop_batch: labels must be [B,H,W]");
  }
  const int64_t total = out.numel();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t* lab = labels.defined() ? labels.data_ptr<int64_t>() : nullptr;
  if (images.scalar_type() == at::kFloat) {
    crop_batch_kernel<float><<<blocks, threads, 0, stream>>>(images.data_ptr<float>(), regions.data_ptr<double>(),
                                                            lab, scale.data_ptr<float>(), shift.data_ptr<float>(),
                                                            out.data_ptr<float>(), N, images.size(0), H, W, S,
                                                            static_cast<float>(fill));
  } else if (images.scalar_type() == at::kByte) {
    crop_batch_kernel<uint8_t><<<blocks, threads, 0, stream>>>(
        images.data_ptr<uint8_t>(), regions.data_ptr<double>(), lab, scale.data_ptr<float>(),
        shift.data_ptr<float>(), out.data_ptr<float>(), N, images.size(0), H, W, S, static_cast<float>(fill));
  } else {
    TORCH_CHECK(false, "crop_batch: images must be float32 or uint8, got ", images.scalar_type());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CUDA, m) { m.impl("crop_batch", &semiearth::cuda::crop_batch_cuda); }
