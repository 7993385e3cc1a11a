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

#include <climits>
#include <optional>
#include <tuple>
#include <vector>

#include "fast_math.h"

namespace semiearth {
namespace cpu {
namespace {

constexpr uint8_t kLow = 1, kBoundary = 2, kIgnored = 4;

// arg/conf for the n pixels starting at flat pixel p0 of one image (plane stride HW).
template <typename scalar_t>
void pixels_stats(const scalar_t* img, int64_t HW, int64_t C, int64_t p0, int64_t n, int32_t* arg, float* conf,
                  std::vector<float>& tmp) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<scalar_t, float>) {
    softmax_stats(img + p0, HW, C, n, arg, conf);
  } else {
    tmp.resize(static_cast<size_t>(C * kChunk));
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t len = std::min(kChunk, n - i0);
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* src = img + c * HW + p0 + i0;
        float* dst = tmp.data() + c * len;
        for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<float>(src[i]);
      }
      softmax_stats(tmp.data(), len, C, len, arg + i0, conf == nullptr ? nullptr : conf + i0);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> purify_stats_cpu(
    const at::Tensor& logits_in, double low_thresh, int64_t radius, int64_t cell,
    const std::optional<at::Tensor>& ignore_in) {
  TORCH_CHECK(logits_in.dim() == 4, "purify_stats: logits must be [B,C,H,W]");
  TORCH_CHECK(radius >= 0, "purify_stats: radius must be >= 0");
  TORCH_CHECK(cell >= 1, "purify_stats: cell must be >= 1");
  const at::Tensor logits = logits_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1), H = logits.size(2), W = logits.size(3);
  TORCH_CHECK(C >= 1 && C <= INT32_MAX, "purify_stats: logits must have at least one class");
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
  at::Tensor hist = at::zeros({B, Hc, Wc, C}, opts.dtype(at::kInt));
  at::Tensor mass = at::empty({B, Hc, Wc}, opts.dtype(at::kFloat));
  at::Tensor nbound = at::empty({B, Hc, Wc}, opts.dtype(at::kInt));
  if (B == 0 || HW == 0) return {conf, label, flags, hist, mass, nbound};

  const float thr = static_cast<float>(low_thresh);
  const int64_t r = std::min<int64_t>(radius, std::max(H, W));  // a larger radius sees the same pixels
  const uint8_t* ign_all = ignore.defined() ? reinterpret_cast<const uint8_t*>(ignore.data_ptr<bool>()) : nullptr;
  float* conf_all = conf.data_ptr<float>();
  int64_t* label_all = label.data_ptr<int64_t>();
  uint8_t* flags_all = flags.data_ptr<uint8_t>();
  int32_t* hist_all = hist.data_ptr<int32_t>();
  float* mass_all = mass.data_ptr<float>();
  int32_t* nb_all = nbound.data_ptr<int32_t>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "purify_stats_cpu", [&] {
    const scalar_t* x_all = logits.data_ptr<scalar_t>();
    at::parallel_for(0, B * Hc, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> tmp;
      std::vector<int32_t> lab, hmin, hmax, pmin, pmax, vmin, vmax;
      std::vector<uint8_t> bnd(static_cast<size_t>(W));
      std::vector<double> mass_acc(static_cast<size_t>(Wc));
      std::vector<int32_t> nb_acc(static_cast<size_t>(Wc));
      for (int64_t band = begin; band < end; ++band) {
        const int64_t b = band / Hc, cy = band % Hc;
        const int64_t y0 = cy * cell, y1 = std::min(H, y0 + cell);
        const int64_t ya = std::max<int64_t>(0, y0 - r), yb = std::min(H, y1 + r);
        const int64_t nr = yb - ya;
        const scalar_t* img = x_all + b * C * HW;
        const uint8_t* ign = ign_all == nullptr ? nullptr : ign_all + b * HW;
        lab.resize(static_cast<size_t>(nr * W));
        // 1. argmax for halo + band rows, confidence for the band rows.
        pixels_stats(img, HW, C, ya * W, (y0 - ya) * W, lab.data(), nullptr, tmp);
        pixels_stats(img, HW, C, y0 * W, (y1 - y0) * W, lab.data() + (y0 - ya) * W, conf_all + b * HW + y0 * W,
                     tmp);
        pixels_stats(img, HW, C, y1 * W, (yb - y1) * W, lab.data() + (y1 - ya) * W, nullptr, tmp);
        {
          const int32_t* src = lab.data() + (y0 - ya) * W;
          int64_t* dst = label_all + b * HW + y0 * W;
          const int64_t n = (y1 - y0) * W;
          for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
        }
        // 2. horizontal min/max of the labels of non-ignored pixels within radius, per row.
        if (r > 0) {
          hmin.resize(static_cast<size_t>(nr * W));
          hmax.resize(static_cast<size_t>(nr * W));
          pmin.assign(static_cast<size_t>(W + 2 * r), INT32_MAX);
          pmax.assign(static_cast<size_t>(W + 2 * r), -1);
          vmin.resize(static_cast<size_t>(W));
          vmax.resize(static_cast<size_t>(W));
          for (int64_t j = 0; j < nr; ++j) {
            const int32_t* l = lab.data() + j * W;
            const uint8_t* ig = ign == nullptr ? nullptr : ign + (ya + j) * W;
            int32_t* pn = pmin.data() + r;
            int32_t* px = pmax.data() + r;
            if (ig == nullptr) {
              for (int64_t x = 0; x < W; ++x) pn[x] = px[x] = l[x];
            } else {
              for (int64_t x = 0; x < W; ++x) {
                pn[x] = ig[x] ? INT32_MAX : l[x];
                px[x] = ig[x] ? -1 : l[x];
              }
            }
            int32_t* hn = hmin.data() + j * W;
            int32_t* hx = hmax.data() + j * W;
            for (int64_t x = 0; x < W; ++x) {
              hn[x] = pmin[x];
              hx[x] = pmax[x];
            }
            for (int64_t d = 1; d <= 2 * r; ++d) {
              const int32_t* qn = pmin.data() + d;
              const int32_t* qx = pmax.data() + d;
              for (int64_t x = 0; x < W; ++x) {
                hn[x] = std::min(hn[x], qn[x]);
                hx[x] = std::max(hx[x], qx[x]);
              }
            }
          }
        }
        // 3. flags and cell pooling, row by row.
        for (int64_t cx = 0; cx < Wc; ++cx) {
          mass_acc[cx] = 0.0;
          nb_acc[cx] = 0;
        }
        int32_t* hist_row = hist_all + (b * Hc + cy) * Wc * C;
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t j = y - ya;
          const int32_t* l = lab.data() + j * W;
          if (r > 0) {
            const int64_t ja = std::max(ya, y - r) - ya, jb = std::min(yb - 1, y + r) - ya;
            std::copy_n(hmin.data() + ja * W, W, vmin.data());
            std::copy_n(hmax.data() + ja * W, W, vmax.data());
            for (int64_t jj = ja + 1; jj <= jb; ++jj) {
              const int32_t* hn = hmin.data() + jj * W;
              const int32_t* hx = hmax.data() + jj * W;
              for (int64_t x = 0; x < W; ++x) {
                vmin[x] = std::min(vmin[x], hn[x]);
                vmax[x] = std::max(vmax[x], hx[x]);
              }
            }
            for (int64_t x = 0; x < W; ++x) bnd[x] = (vmin[x] < l[x]) | (vmax[x] > l[x]);
          } else {
            std::fill(bnd.begin(), bnd.end(), uint8_t(0));
          }
          const float* cf = conf_all + b * HW + y * W;
          uint8_t* fl = flags_all + b * HW + y * W;
          const uint8_t* ig = ign == nullptr ? nullptr : ign + y * W;
          for (int64_t x = 0; x < W; ++x) {
            const uint8_t low = cf[x] < thr ? kLow : 0;
            const uint8_t igf = (ig != nullptr && ig[x]) ? kIgnored : 0;
            fl[x] = low | static_cast<uint8_t>(bnd[x] ? kBoundary : 0) | igf;
          }
          for (int64_t cx = 0; cx < Wc; ++cx) {
            const int64_t xa = cx * cell, xb = std::min(W, xa + cell);
            int32_t* h = hist_row + cx * C;
            double m = 0.0;
            int32_t nb = 0;
            for (int64_t x = xa; x < xb; ++x) {
              if ((fl[x] & (kLow | kIgnored)) != kLow) continue;
              h[l[x]] += 1;
              m += static_cast<double>(1.0f - cf[x]);
              nb += (fl[x] & kBoundary) ? 1 : 0;
            }
            mass_acc[cx] += m;
            nb_acc[cx] += nb;
          }
        }
        float* mrow = mass_all + (b * Hc + cy) * Wc;
        int32_t* nrow = nb_all + (b * Hc + cy) * Wc;
        for (int64_t cx = 0; cx < Wc; ++cx) {
          mrow[cx] = static_cast<float>(mass_acc[cx]);
          nrow[cx] = nb_acc[cx];
        }
      }
    });
  });
  return {conf, label, flags, hist, mass, nbound};
}

}  // namespace
}  // namespace cpu
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CPU, m) { m.impl("purify_stats", &semiearth::cpu::purify_stats_cpu); }
