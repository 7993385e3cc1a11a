// purify_stats, CPU: one pass over teacher logits [B,C,H,W] -> conf, label, flags and per-cell
// pooling. Specification: semiearth/ops/purify_stats.py (purify_stats_reference).
//
// One parallel_for over bands of rows (image b, cell row cy). A band computes argmax (and, for
// its own rows, the confidence) over C for its rows plus `radius` halo rows above and below
// (recomputing the halo is cheaper than a second pass over the logits), keeps the labels in a
// local int32 buffer, then derives the boundary flag with separable min/max filters and pools
// its cells, which no other band touches.
#include <ATen/Dispatch.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <optional>
#include <tuple>
#include <vector>

#include "fast_math.h"

namespace semiearth {
namespace cpu {
namespace {

constexpr uint8_t kLow = 1, kBoundary = 2, kIgnored = 4;

// arg/conf for the n pixels starting at flat pixel p0 of one image, whose class-c value of pixel p
// is img[c * sc + p * sp]. Float logits with unit pixel stride (NCHW) go to softmax_stats in
// place; other dtypes and layouts (channels-last: sp = C, sc = 1) are gathered into float class
// planes of kGather pixels first, which stay in L1 for the softmax that follows.
constexpr int64_t kGather = 512;

template <typename scalar_t>
void pixels_stats(const scalar_t* img, int64_t sp, int64_t sc, int64_t C, int64_t p0, int64_t n, int32_t* arg,
                  float* conf, std::vector<float>& tmp) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (sp == 1) {
      softmax_stats(img + p0, sc, C, n, arg, conf);
      return;
    }
  }
  tmp.resize(static_cast<size_t>(C * kGather));
  for (int64_t i0 = 0; i0 < n; i0 += kGather) {
    const int64_t len = std::min(kGather, n - i0);
    const scalar_t* src = img + (p0 + i0) * sp;
    float* __restrict dst = tmp.data();
    if (sc == 1) {  // channels-last: the C values of a pixel are adjacent
      for (int64_t i = 0; i < len; ++i)
        for (int64_t c = 0; c < C; ++c) dst[c * len + i] = static_cast<float>(src[i * sp + c]);
    } else {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < len; ++i) dst[c * len + i] = static_cast<float>(src[c * sc + i * sp]);
    }
    softmax_stats(dst, len, C, len, arg + i0, conf == nullptr ? nullptr : conf + i0);
  }
}

// Everything a band needs besides the logits.
struct Ctx {
  int64_t C, H, W, Hc, Wc, cell, r;
  float thr;
  const uint8_t* ign_all;  // [B,H,W] or nullptr
  float* conf_all;
  int64_t* label_all;
  uint8_t* flags_all;
  int32_t* hist_all;
  float* mass_all;
  int32_t* nb_all;
};

// Per-thread scratch buffers, reused across bands.
struct Scratch {
  std::vector<float> tmp, mass_x;
  std::vector<int32_t> lab, hmin, hmax, pmin, pmax, vmin, vmax, cnt, nb_x;
  std::vector<uint8_t> bnd;
};

// Steps 2-3 of a band whose labels (rows ya..yb) are in s.lab and confidences (rows y0..y1) in
// conf_all: label output, boundary flag, flags, and the pooling of the band's cells.
static inline __attribute__((always_inline)) void band_post_impl(const Ctx& k, int64_t b, int64_t cy, Scratch& s) {
  const int64_t C = k.C, H = k.H, W = k.W, Wc = k.Wc, cell = k.cell, r = k.r, HW = H * W;
  const int64_t y0 = cy * cell, y1 = std::min(H, y0 + cell);
  const int64_t ya = std::max<int64_t>(0, y0 - r), yb = std::min(H, y1 + r);
  const int64_t nr = yb - ya;
  const uint8_t* ign = k.ign_all == nullptr ? nullptr : k.ign_all + b * HW;
  {
    const int32_t* __restrict src = s.lab.data() + (y0 - ya) * W;
    int64_t* __restrict dst = k.label_all + b * HW + y0 * W;
    const int64_t n = (y1 - y0) * W;
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
  // Horizontal min / max of the labels of non-ignored pixels within the radius, row by row
  // (ignored or outside: +inf for the min, -1 for the max). A pixel is BOUNDARY when the
  // window's min is below or its max above its own label.
  if (r > 0) {
    s.hmin.resize(static_cast<size_t>(nr * W));
    s.hmax.resize(static_cast<size_t>(nr * W));
    s.pmin.assign(static_cast<size_t>(W + 2 * r), INT32_MAX);
    s.pmax.assign(static_cast<size_t>(W + 2 * r), -1);
    s.vmax.resize(static_cast<size_t>(W));
    for (int64_t j = 0; j < nr; ++j) {
      const int32_t* __restrict l = s.lab.data() + j * W;
      int32_t* __restrict pn = s.pmin.data() + r;
      int32_t* __restrict px = s.pmax.data() + r;
      if (ign == nullptr) {
        for (int64_t x = 0; x < W; ++x) pn[x] = px[x] = l[x];
      } else {
        const uint8_t* __restrict ig = ign + (ya + j) * W;
        for (int64_t x = 0; x < W; ++x) {
          const int32_t m = -static_cast<int32_t>(ig[x] != 0);
          pn[x] = (l[x] & ~m) | (INT32_MAX & m);
          px[x] = (l[x] & ~m) | m;  // -1 where ignored
        }
      }
      int32_t* __restrict hn = s.hmin.data() + j * W;
      int32_t* __restrict hx = s.hmax.data() + j * W;
      const int32_t* __restrict qn0 = s.pmin.data();
      const int32_t* __restrict qx0 = s.pmax.data();
      for (int64_t x = 0; x < W; ++x) {
        hn[x] = qn0[x];
        hx[x] = qx0[x];
      }
      for (int64_t d = 1; d <= 2 * r; ++d) {
        const int32_t* __restrict qn = s.pmin.data() + d;
        const int32_t* __restrict qx = s.pmax.data() + d;
        for (int64_t x = 0; x < W; ++x) {
          hn[x] = std::min(hn[x], qn[x]);
          hx[x] = std::max(hx[x], qx[x]);
        }
      }
    }
  }
  // Flags, then per-x accumulators over the band's rows (class counts in s.cnt[(C + 1) x W],
  // row C for non-candidates; uncertainty mass; boundary count), reduced per cell at the end.
  s.cnt.assign(static_cast<size_t>((C + 1) * W), 0);
  s.mass_x.assign(static_cast<size_t>(W), 0.0f);
  s.nb_x.assign(static_cast<size_t>(W), 0);
  s.bnd.resize(static_cast<size_t>(W));
  s.vmin.resize(static_cast<size_t>(W));
  int32_t* __restrict cnt = s.cnt.data();
  float* __restrict mass_x = s.mass_x.data();
  int32_t* __restrict nb_x = s.nb_x.data();
  uint8_t* __restrict bnd = s.bnd.data();
  const float thr = k.thr;
  for (int64_t y = y0; y < y1; ++y) {
    const int32_t* __restrict l = s.lab.data() + (y - ya) * W;
    if (r > 0) {
      const int64_t ja = std::max(ya, y - r) - ya, jb = std::min(yb - 1, y + r) - ya;
      int32_t* __restrict vn = s.vmin.data();
      int32_t* __restrict vx = s.vmax.data();
      std::copy_n(s.hmin.data() + ja * W, W, vn);
      std::copy_n(s.hmax.data() + ja * W, W, vx);
      for (int64_t jj = ja + 1; jj <= jb; ++jj) {
        const int32_t* __restrict hn = s.hmin.data() + jj * W;
        const int32_t* __restrict hx = s.hmax.data() + jj * W;
        for (int64_t x = 0; x < W; ++x) {
          vn[x] = std::min(vn[x], hn[x]);
          vx[x] = std::max(vx[x], hx[x]);
        }
      }
      for (int64_t x = 0; x < W; ++x) bnd[x] = static_cast<uint8_t>((vn[x] < l[x]) | (vx[x] > l[x]));
    } else {
      std::fill_n(bnd, W, uint8_t(0));
    }
    const float* __restrict cf = k.conf_all + b * HW + y * W;
    uint8_t* __restrict fl = k.flags_all + b * HW + y * W;
    if (ign == nullptr) {
      for (int64_t x = 0; x < W; ++x) fl[x] = static_cast<uint8_t>((cf[x] < thr) | (bnd[x] << 1));
    } else {
      const uint8_t* __restrict ig = ign + y * W;
      for (int64_t x = 0; x < W; ++x)
        fl[x] = static_cast<uint8_t>((cf[x] < thr) | (bnd[x] << 1) | ((ig[x] != 0) << 2));
    }
    for (int64_t x = 0; x < W; ++x) {
      const int32_t cand = (fl[x] & (kLow | kIgnored)) == kLow;
      mass_x[x] += static_cast<float>(cand) * (1.0f - cf[x]);
      nb_x[x] += cand & (fl[x] >> 1);
    }
    // cl = label of a candidate, -1 otherwise; class counts per x, vectorised over x for few
    // classes, a branch-free scatter for many.
    int32_t* __restrict cl = s.vmin.data();
    for (int64_t x = 0; x < W; ++x) {
      const int32_t m = -static_cast<int32_t>((fl[x] & (kLow | kIgnored)) == kLow);
      cl[x] = (l[x] & m) | ~m;
    }
    if (C <= 16) {
      for (int64_t c = 0; c < C; ++c) {
        int32_t* __restrict cc = cnt + c * W;
        const int32_t ci = static_cast<int32_t>(c);
        for (int64_t x = 0; x < W; ++x) cc[x] += cl[x] == ci;
      }
    } else {
      for (int64_t x = 0; x < W; ++x) {
        const int64_t row = cl[x] + ((cl[x] >> 31) & (C + 1));  // -1 -> C, the unused row
        cnt[row * W + x] += 1;
      }
    }
  }
  int32_t* hist_row = k.hist_all + (b * k.Hc + cy) * Wc * C;
  float* mrow = k.mass_all + (b * k.Hc + cy) * Wc;
  int32_t* nrow = k.nb_all + (b * k.Hc + cy) * Wc;
  for (int64_t cx = 0; cx < Wc; ++cx) {
    const int64_t xa = cx * cell, xb = std::min(W, xa + cell);
    double m = 0.0;
    int32_t nb = 0;
    for (int64_t x = xa; x < xb; ++x) {
      m += mass_x[x];
      nb += nb_x[x];
    }
    mrow[cx] = static_cast<float>(m);
    nrow[cx] = nb;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t* __restrict cc = cnt + c * W;
      int32_t h = 0;
      for (int64_t x = xa; x < xb; ++x) h += cc[x];
      hist_row[cx * C + c] = h;
    }
  }
}

void band_post_generic(const Ctx& k, int64_t b, int64_t cy, Scratch& s) { band_post_impl(k, b, cy, s); }
#ifdef SEMIEARTH_X86_DISPATCH
__attribute__((target("avx2,fma"))) void band_post_avx2(const Ctx& k, int64_t b, int64_t cy, Scratch& s) {
  band_post_impl(k, b, cy, s);
}
#endif

void band_post(const Ctx& k, int64_t b, int64_t cy, Scratch& s) {
#ifdef SEMIEARTH_X86_DISPATCH
  if (cpu_has_avx2_fma()) return band_post_avx2(k, b, cy, s);
#endif
  band_post_generic(k, b, cy, s);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> purify_stats_cpu(
    const at::Tensor& logits_in, double low_thresh, int64_t radius, int64_t cell,
    const std::optional<at::Tensor>& ignore_in) {
  TORCH_CHECK(logits_in.dim() == 4, "purify_stats: logits must be [B,C,H,W]");
  TORCH_CHECK(radius >= 0, "purify_stats: radius must be >= 0");
  TORCH_CHECK(cell >= 1, "purify_stats: cell must be >= 1");
  // Any layout whose pixels are evenly strided (NCHW, channels-last, a column step of either) is
  // read in place: copying 100 MB of logits would cost more than the kernel itself.
  const auto evenly_strided = [](const at::Tensor& t) {
    return t.size(2) <= 1 || t.stride(2) == t.size(3) * t.stride(3);
  };
  const at::Tensor logits = evenly_strided(logits_in) ? logits_in : logits_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1), H = logits.size(2), W = logits.size(3);
  const int64_t sb = logits.stride(0), sc = logits.stride(1), sp = logits.stride(3);
  TORCH_CHECK(C >= 1 && C < INT32_MAX, "purify_stats: logits must have at least one class");
  const int64_t HW = H * W;
  const int64_t Hc = (H + cell - 1) / cell, Wc = (W + cell - 1) / cell;
  at::Tensor ignore;
  if (ignore_in.has_value() && ignore_in->defined()) {
    ignore = ignore_in->contiguous();
    TORCH_CHECK(ignore.scalar_type() == at::kBool && ignore.sizes() == at::IntArrayRef({B, H, W}),
                "purify_stats: ignore must be a [B,H,W] bool tensor");
  }
  const auto opts = logits.options();
  at::Tensor conf = at::empty({B, H, W}, opts.dtype(at::kFloat));
  at::Tensor label = at::empty({B, H, W}, opts.dtype(at::kLong));
  at::Tensor flags = at::empty({B, H, W}, opts.dtype(at::kByte));
  at::Tensor hist = at::empty({B, Hc, Wc, C}, opts.dtype(at::kInt));
  at::Tensor mass = at::empty({B, Hc, Wc}, opts.dtype(at::kFloat));
  at::Tensor nbound = at::empty({B, Hc, Wc}, opts.dtype(at::kInt));
  if (B == 0 || HW == 0) return {conf, label, flags, hist, mass, nbound};

  Ctx k;
  k.C = C, k.H = H, k.W = W, k.Hc = Hc, k.Wc = Wc, k.cell = cell;
  k.r = std::min<int64_t>(radius, std::max(H, W));  // a larger radius sees the same pixels
  k.thr = static_cast<float>(low_thresh);
  k.ign_all = ignore.defined() ? reinterpret_cast<const uint8_t*>(ignore.data_ptr<bool>()) : nullptr;
  k.conf_all = conf.data_ptr<float>();
  k.label_all = label.data_ptr<int64_t>();
  k.flags_all = flags.data_ptr<uint8_t>();
  k.hist_all = hist.data_ptr<int32_t>();
  k.mass_all = mass.data_ptr<float>();
  k.nb_all = nbound.data_ptr<int32_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "purify_stats_cpu", [&] {
    const scalar_t* x_all = logits.data_ptr<scalar_t>();
    at::parallel_for(0, B * Hc, 1, [&](int64_t begin, int64_t end) {
      Scratch s;
      for (int64_t band = begin; band < end; ++band) {
        const int64_t b = band / Hc, cy = band % Hc;
        const int64_t y0 = cy * cell, y1 = std::min(H, y0 + cell);
        const int64_t ya = std::max<int64_t>(0, y0 - k.r), yb = std::min(H, y1 + k.r);
        const scalar_t* img = x_all + b * sb;
        s.lab.resize(static_cast<size_t>((yb - ya) * W));
        // 1. argmax for the halo and band rows, confidence for the band rows only.
        pixels_stats(img, sp, sc, C, ya * W, (y0 - ya) * W, s.lab.data(), nullptr, s.tmp);
        pixels_stats(img, sp, sc, C, y0 * W, (y1 - y0) * W, s.lab.data() + (y0 - ya) * W,
                     k.conf_all + b * HW + y0 * W, s.tmp);
        pixels_stats(img, sp, sc, C, y1 * W, (yb - y1) * W, s.lab.data() + (y1 - ya) * W, nullptr, s.tmp);
        // 2-3. labels, boundary, flags, cell pooling.
        band_post(k, b, cy, s);
      }
    });
  });
  return {conf, label, flags, hist, mass, nbound};
}

}  // namespace
}  // namespace cpu
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CPU, m) { m.impl("purify_stats", &semiearth::cpu::purify_stats_cpu); }
