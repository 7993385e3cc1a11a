// purify_apply, CPU: fuse per-region class weights into the pseudo-labels of the candidate pixels
// of selected segments. Specification: semiearth/ops/purify_apply.py (purify_apply_reference).
//
// A pixel is hit when it is a candidate ((flags & (LOW|IGNORED)) == LOW) and its segment
// r = seg_table[b, y / cell, x / cell, label] >= 0. Rule 0 (bayes): z_c = x_c + weights[r, c],
// label = argmax z, conf = max softmax z, computed by the same softmax_stats() as purify_stats, so
// zero weights (a uniform q) give back purify_stats' confidence bit for bit. Rule 1 (paper):
// label = k = argmax weights[r], conf = a * c + (1 - a) * weights[r, k], a = clamp(c / tau, 0, 1).
// Every other pixel is copied. at::parallel_for over image rows; the hit pixels of a row are
// gathered into a small [C, n] buffer so the softmax runs vectorised over them.
#include <ATen/Dispatch.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cstring>
#include <tuple>
#include <vector>

#include "fast_math.h"

namespace semiearth {
namespace cpu {
namespace {

constexpr uint8_t kLow = 1, kIgnored = 4;

std::tuple<at::Tensor, at::Tensor> purify_apply_cpu(const at::Tensor& logits_in, const at::Tensor& label_in,
                                                    const at::Tensor& conf_in, const at::Tensor& flags_in,
                                                    const at::Tensor& seg_in, const at::Tensor& weights_in,
                                                    int64_t cell, int64_t rule, double tau) {
  TORCH_CHECK(logits_in.dim() == 4, "purify_apply: logits must be [B,C,H,W]");
  TORCH_CHECK(cell >= 1, "purify_apply: cell must be >= 1");
  TORCH_CHECK(rule == 0 || rule == 1, "purify_apply: rule must be 0 (bayes) or 1 (paper)");
  const at::Tensor logits = logits_in.contiguous();
  const int64_t B = logits.size(0), C = logits.size(1), H = logits.size(2), W = logits.size(3);
  const int64_t HW = H * W, Hc = (H + cell - 1) / cell, Wc = (W + cell - 1) / cell;
  const at::Tensor label = label_in.to(at::kLong).contiguous();
  const at::Tensor conf = conf_in.to(at::kFloat).contiguous();
  const at::Tensor flags = flags_in.to(at::kByte).contiguous();
  const at::Tensor seg = seg_in.to(at::kInt).contiguous();
  const at::Tensor weights = weights_in.to(at::kFloat).contiguous();
  TORCH_CHECK(label.sizes() == at::IntArrayRef({B, H, W}) && conf.sizes() == label.sizes() &&
                  flags.sizes() == label.sizes(),
              "purify_apply: label, conf and flags must be [B,H,W] like the logits");
  TORCH_CHECK(seg.sizes() == at::IntArrayRef({B, Hc, Wc, C}), "purify_apply: seg_table must be [B,Hc,Wc,C]");
  TORCH_CHECK(weights.dim() == 2 && weights.size(1) == C, "purify_apply: weights must be [N,C]");
  const int64_t N = weights.size(0);
  at::Tensor label_out = at::empty_like(label);
  at::Tensor conf_out = at::empty_like(conf);
  if (label.numel() == 0) return {label_out, conf_out};

  const int64_t* lab_all = label.data_ptr<int64_t>();
  const float* conf_all = conf.data_ptr<float>();
  const uint8_t* flags_all = flags.data_ptr<uint8_t>();
  const int32_t* seg_all = seg.data_ptr<int32_t>();
  const float* w_all = weights.data_ptr<float>();
  int64_t* lab_o = label_out.data_ptr<int64_t>();
  float* conf_o = conf_out.data_ptr<float>();

  // Rule "paper": each region's class k (lowest index on ties) and weight.
  std::vector<int64_t> top_k;
  std::vector<float> top_w;
  if (rule == 1) {
    top_k.resize(static_cast<size_t>(N));
    top_w.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
      const float* w = w_all + n * C;
      int64_t k = 0;
      for (int64_t c = 1; c < C; ++c)
        if (w[c] > w[k]) k = c;
      top_k[n] = k;
      top_w[n] = w[k];
    }
  }
  const float tauf = static_cast<float>(tau);
  std::atomic<bool> bad_label{false}, bad_region{false};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "purify_apply_cpu", [&] {
    const scalar_t* x_all = logits.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, 4, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> hx, hr, arg;
      std::vector<float> z, cf;
      hx.reserve(static_cast<size_t>(W));
      hr.reserve(static_cast<size_t>(W));
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, y = row % H;
        const int64_t off = b * HW + y * W;
        std::memcpy(lab_o + off, lab_all + off, sizeof(int64_t) * W);
        std::memcpy(conf_o + off, conf_all + off, sizeof(float) * W);
        const uint8_t* fl = flags_all + off;
        const int64_t* lab = lab_all + off;
        const int32_t* seg_row = seg_all + (b * Hc + y / cell) * Wc * C;
        hx.clear();
        hr.clear();
        for (int64_t x = 0; x < W; ++x) {
          if ((fl[x] & (kLow | kIgnored)) != kLow) continue;
          const int64_t l = lab[x];
          if (l < 0 || l >= C) {
            bad_label = true;
            continue;
          }
          const int32_t r = seg_row[(x / cell) * C + l];
          if (r < 0) continue;
          if (r >= N) {
            bad_region = true;
            continue;
          }
          hx.push_back(static_cast<int32_t>(x));
          hr.push_back(r);
        }
        const int64_t nh = static_cast<int64_t>(hx.size());
        if (nh == 0) continue;
        if (rule == 1) {
          for (int64_t i = 0; i < nh; ++i) {
            const int64_t x = hx[i];
            const float c = conf_all[off + x];
            float a = c / tauf;
            a = a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a);
            lab_o[off + x] = top_k[hr[i]];
            conf_o[off + x] = a * c + (1.0f - a) * top_w[hr[i]];
          }
          continue;
        }
        z.resize(static_cast<size_t>(C * nh));
        cf.resize(static_cast<size_t>(nh));
        arg.resize(static_cast<size_t>(nh));
        const scalar_t* xr = x_all + b * C * HW + y * W;
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* xc = xr + c * HW;
          float* zc = z.data() + c * nh;
          for (int64_t i = 0; i < nh; ++i) zc[i] = static_cast<float>(xc[hx[i]]) + w_all[hr[i] * C + c];
        }
        softmax_stats(z.data(), nh, C, nh, arg.data(), cf.data());
        for (int64_t i = 0; i < nh; ++i) {
          lab_o[off + hx[i]] = arg[i];
          conf_o[off + hx[i]] = cf[i];
        }
      }
    });
  });
  TORCH_CHECK(!bad_label, "purify_apply: label holds values outside [0, ", C, ")");
  TORCH_CHECK(!bad_region, "purify_apply: seg_table refers to regions >= weights.size(0) = ", N);
  return {label_out, conf_out};
}

}  // namespace
}  // namespace cpu
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CPU, m) { m.impl("purify_apply", &semiearth::cpu::purify_apply_cpu); }
