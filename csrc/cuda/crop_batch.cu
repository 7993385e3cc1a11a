// crop_batch, CUDA. Mirrors csrc/cpu/crop_batch.cpp (and so crop_batch_reference in
// semiearth/ops/crop_batch.py): roi_align(aligned=True, sampling_ratio=1) sample positions computed
// in double exactly as the reference does, bilinear interpolation in double, then x * scale + shift
// in float32, and `fill` outside the image or (mask on) where the nearest pixel's label is not the
// region's class. Results are bit-identical to the CPU kernel and to the earlier CUDA kernel.
//
// Layout: a 2-D grid, blockIdx.y = region and blockIdx.x * blockDim.x + threadIdx.x = output pixel
// oy * S + ox, one thread per output pixel (torchvision's roi_align has one per output element).
// Beyond 65535 regions, blockIdx.x also counts chunks of 65535 regions (n = blockIdx.y + chunk *
// gridDim.y): no loop, so nothing stays live across the region set-up. Per block, threads 0 and 1
// read the region row once and put each axis' start and bin width (the one double division),
// batch, class, scale and shift in shared memory; per thread, the two sample positions, the four
// weights and the one label test are computed once, then the 3 channels are interpolated and
// written. Offsets inside an image or a crop are int32 (index_t = int64_t only for a single image
// or crop of >= 2^31 elements); the image, label and crop bases of a region are 64-bit.
//
// Batch indices are validated by the Python wrapper (a host check here would synchronise); a
// region whose index is not an image of the batch reads nothing and gets `fill`. The launcher
// never reads device memory: scale and shift go to the kernel by value when they are CPU tensors,
// as device pointers otherwise.
//
// Only the headers used (not ATen/ATen.h): nvcc's device pass over the torch headers is most of
// the build time of this file, and of tests/cuda_ptxas.py.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

namespace semiearth {
namespace cuda {
namespace {

constexpr int kMaxThreads = 256;
// Resident blocks per SM that ptxas must allow: caps registers at 65536 / (256 * 4) = 64 (the
// budget of tests/test_cuda_budgets.py). Without it ptxas sometimes picks 48 and spills.
constexpr int kMinBlocks = 4;
constexpr int64_t kMaxGridY = 65535;

// scale and shift by value (CPU tensors); device tensors come as pointers instead.
struct Affine {
  float scale[3];
  float shift[3];
};

// Image extent along one axis: its size and, precomputed on the host, size and size - 1 in double.
template <typename index_t>
struct Extent {
  index_t size;
  double d, top;
};

template <typename index_t>
struct Axis {  // one sample position along one axis
  index_t i0, i1, near;
  double l;
  bool valid;
};

// Sample i of an axis whose first bin starts at `start` = lo - 0.5: the clamped coordinate, its
// two pixels and weight, validity (-1 <= c <= extent before clamping) and the nearest pixel.
// __dadd_rn/__dmul_rn: no FMA contraction, so positions match the CPU and the reference bit for
// bit. floor(c) is exact in both int and double (0 <= c <= extent - 1), so c - floor(c) equals
// the reference's c - i0.
template <typename index_t>
__device__ __forceinline__ Axis<index_t> sample_axis(double start, double bin, index_t i, const Extent<index_t>& e) {
  double c = __dadd_rn(start, __dmul_rn(static_cast<double>(i) + 0.5, bin));
  Axis<index_t> a;
  a.valid = c >= -1.0 && c <= e.d;
  c = c < 0.0 ? 0.0 : c;
  if (c >= e.top) c = e.top;
  const double f = floor(c);
  a.i0 = static_cast<index_t>(f);
  a.i1 = a.i0 + 1 < e.size - 1 ? a.i0 + 1 : e.size - 1;
  a.l = c - f;
  const index_t nr = static_cast<index_t>(floor(c + 0.5));
  a.near = nr < e.size - 1 ? nr : e.size - 1;
  return a;
}

// regions are float32 (what the wrapper passes; widened to double exactly) or double.
__device__ __forceinline__ double region_value(const float* rf, const double* rd, int64_t i) {
  return rf != nullptr ? static_cast<double>(rf[i]) : rd[i];
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocks)
    crop_batch_kernel(const scalar_t* __restrict__ images, const float* __restrict__ regions_f,
                      const double* __restrict__ regions_d, const int64_t* __restrict__ labels, Affine affine,
                      const float* __restrict__ scale_dev, const float* __restrict__ shift_dev,
                      float* __restrict__ out, int64_t N, int64_t B, Extent<index_t> ey, Extent<index_t> ex,
                      index_t S, double Sd, at::cuda::detail::IntDivider<std::make_unsigned_t<index_t>> div_s,
                      at::cuda::detail::IntDivider<uint32_t> div_bx, float fill) {
  using uindex_t = std::make_unsigned_t<index_t>;
  // The block's region, set up by threads 0 and 1. Its image, label and crop bases are offsets
  // from here: added to the kernel's pointers, each tap's address is one 32-bit offset added to
  // one 64-bit base.
  __shared__ double s_start[2], s_bin[2];  // [0] y, [1] x
  __shared__ int64_t s_img, s_out, s_cls;  // s_img < 0: the batch index is not an image of the batch
  __shared__ float s_affine[6];            // scale 0..2, shift 3..5
  const uint32_t chunk = div_bx.div(blockIdx.x);
  const int64_t n = blockIdx.y + static_cast<int64_t>(chunk) * gridDim.y;
  if (n >= N) return;  // the whole block (only in the last chunk of regions)
  const index_t HW = ey.size * ex.size, SS = S * S;
  if (threadIdx.x < 2) {
    // Thread 0: the y axis (y1, y2), batch, class, scale and shift; thread 1: the x axis (x1, x2).
    const int64_t row = n * 6;
    const int k = threadIdx.x == 0 ? 2 : 1;
    const double lo = region_value(regions_f, regions_d, row + k);
    const double hi = region_value(regions_f, regions_d, row + k + 2);
    s_start[threadIdx.x] = lo - 0.5;
    s_bin[threadIdx.x] = (hi - lo) / Sd;
    if (threadIdx.x == 0) {
      const double bd = region_value(regions_f, regions_d, row);
      const bool in_batch = bd >= 0.0 && bd < static_cast<double>(B);
      s_img = in_batch ? static_cast<int64_t>(bd) * HW : -1;  // in pixels; x3 channels below
      s_out = n * 3 * SS;
      s_cls = static_cast<int64_t>(region_value(regions_f, regions_d, row + 5));
#pragma unroll
      for (int c = 0; c < 3; ++c) {  // constant indices: a dynamic one would put `affine` on the stack
        s_affine[c] = scale_dev != nullptr ? scale_dev[c] : affine.scale[c];
        s_affine[3 + c] = shift_dev != nullptr ? shift_dev[c] : affine.shift[c];
      }
    }
  }
  __syncthreads();
  const index_t p = static_cast<index_t>(blockIdx.x - chunk * div_bx.divisor) * blockDim.x + threadIdx.x;
  if (p >= SS) return;
  const index_t oy = static_cast<index_t>(div_s.div(static_cast<uindex_t>(p)));
  const index_t ox = p - oy * S;
  const Axis<index_t> ay = sample_axis(s_start[0], s_bin[0], oy, ey);
  const Axis<index_t> ax = sample_axis(s_start[1], s_bin[1], ox, ex);
  const int64_t pix = s_img;
  float* const o = out + s_out;
  bool keep = pix >= 0 && ay.valid && ax.valid;
  if (keep && labels != nullptr) keep = labels[pix + (ay.near * ex.size + ax.near)] == s_cls;
  if (!keep) {
    o[p] = fill;
    o[SS + p] = fill;
    o[2 * SS + p] = fill;
    return;
  }
  const double ly = ay.l, hy = 1.0 - ly, lx = ax.l, hx = 1.0 - lx;
  const double w00 = __dmul_rn(hy, hx), w01 = __dmul_rn(hy, lx), w10 = __dmul_rn(ly, hx), w11 = __dmul_rn(ly, lx);
  const index_t r0 = ay.i0 * ex.size, r1 = ay.i1 * ex.size;
  const index_t o00 = r0 + ax.i0, o01 = r0 + ax.i1, o10 = r1 + ax.i0, o11 = r1 + ax.i1;
  const scalar_t* const img = images + 3 * pix;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const index_t ch = c * HW;
    double v = __dmul_rn(static_cast<double>(img[ch + o00]), w00);
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(img[ch + o01]), w01));
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(img[ch + o10]), w10));
    v = __dadd_rn(v, __dmul_rn(static_cast<double>(img[ch + o11]), w11));
    o[c * SS + p] = __fadd_rn(__fmul_rn(static_cast<float>(v), s_affine[c]), s_affine[3 + c]);
  }
}

template <typename scalar_t, typename index_t>
void launch(const at::Tensor& images, const float* regions_f, const double* regions_d, const int64_t* lab,
            const Affine& affine, const float* scale_dev, const float* shift_dev, at::Tensor& out, int64_t N,
            int64_t S, float fill) {
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3), SS = S * S;
  const int threads = SS >= kMaxThreads ? kMaxThreads : static_cast<int>((SS + 31) / 32 * 32);
  const int64_t blocks_x = (SS + threads - 1) / threads;  // per region
  const int64_t grid_y = std::min<int64_t>(N, kMaxGridY);
  const int64_t chunks = (N + grid_y - 1) / grid_y;
  TORCH_CHECK(blocks_x * chunks <= std::numeric_limits<int32_t>::max(), "crop_batch: ", N, " crops of ", S, "x", S,
              " exceed the CUDA grid");
  const dim3 grid(static_cast<unsigned>(blocks_x * chunks), static_cast<unsigned>(grid_y));
  const Extent<index_t> ey{static_cast<index_t>(H), static_cast<double>(H), static_cast<double>(H - 1)};
  const Extent<index_t> ex{static_cast<index_t>(W), static_cast<double>(W), static_cast<double>(W - 1)};
  using uindex_t = std::make_unsigned_t<index_t>;
  const at::cuda::detail::IntDivider<uindex_t> div_s(static_cast<uindex_t>(S));
  const at::cuda::detail::IntDivider<uint32_t> div_bx(static_cast<uint32_t>(blocks_x));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  crop_batch_kernel<scalar_t, index_t><<<grid, threads, 0, stream>>>(
      images.data_ptr<scalar_t>(), regions_f, regions_d, lab, affine, scale_dev, shift_dev, out.data_ptr<float>(), N,
      B, ey, ex, static_cast<index_t>(S), static_cast<double>(S), div_s, div_bx, fill);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// scale or shift: 3 values by value (CPU tensor) or a float32 device pointer (CUDA tensor, kept
// alive in `keep`); reading a device tensor here would synchronise.
const float* channelwise(const at::Tensor& t, const at::Device& device, float* values, at::Tensor& keep) {
  if (t.device().is_cpu()) {
    const at::Tensor v = t.to(at::kFloat).contiguous();
    for (int c = 0; c < 3; ++c) values[c] = v.data_ptr<float>()[c];
    return nullptr;
  }
  keep = t.to(device, at::kFloat).contiguous();
  return keep.data_ptr<float>();
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
  // float32 regions (what the wrapper passes) are read as they are and widened to double in the
  // kernel (exact, as the CPU kernel's conversion); anything else is converted to double first.
  const at::ScalarType rtype = regions_in.scalar_type() == at::kFloat ? at::kFloat : at::kDouble;
  const at::Tensor regions = regions_in.to(images.device(), rtype).contiguous();
  const int64_t H = images.size(2), W = images.size(3), N = regions.size(0), S = size;
  at::Tensor out = at::empty({N, 3, S, S}, images.options().dtype(at::kFloat));
  if (N == 0) return out;
  TORCH_CHECK(H >= 1 && W >= 1, "crop_batch: images must have H, W >= 1");
  at::Tensor labels;
  if (mask && labels_in.has_value() && labels_in->defined()) {
    labels = labels_in->to(images.device(), at::kLong).contiguous();
    TORCH_CHECK(labels.sizes() == at::IntArrayRef({images.size(0), H, W}), "crop_batch: labels must be [B,H,W]");
  }
  Affine affine;
  at::Tensor scale_keep, shift_keep;
  const float* scale_dev = channelwise(scale_in, images.device(), affine.scale, scale_keep);
  const float* shift_dev = channelwise(shift_in, images.device(), affine.shift, shift_keep);
  const float* regions_f = rtype == at::kFloat ? regions.data_ptr<float>() : nullptr;
  const double* regions_d = rtype == at::kDouble ? regions.data_ptr<double>() : nullptr;
  const int64_t* lab = labels.defined() ? labels.data_ptr<int64_t>() : nullptr;
  const float fillf = static_cast<float>(fill);
  // int32 offsets inside an image (3 * H * W) and a crop (3 * S * S); int64 only beyond.
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  const bool small = 3 * H * W <= kInt32Max && 3 * S * S <= kInt32Max;
  auto run = [&](auto scalar) {
    using scalar_t = decltype(scalar);
    if (small) {
      launch<scalar_t, int32_t>(images, regions_f, regions_d, lab, affine, scale_dev, shift_dev, out, N, S, fillf);
    } else {
      launch<scalar_t, int64_t>(images, regions_f, regions_d, lab, affine, scale_dev, shift_dev, out, N, S, fillf);
    }
  };
  if (images.scalar_type() == at::kFloat) {
    run(float{});
  } else if (images.scalar_type() == at::kByte) {
    run(uint8_t{});
  } else {
    TORCH_CHECK(false, "crop_batch: images must be float32 or uint8, got ", images.scalar_type());
  }
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CUDA, m) { m.impl("crop_batch", &semiearth::cuda::crop_batch_cuda); }
