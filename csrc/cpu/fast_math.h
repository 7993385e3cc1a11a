// Shared CPU building blocks of the semiearth kernels: a vectorisable expf and the per-pixel
// softmax statistics (max, argmax, max probability) over C class planes.
//
// The hot loop is compiled twice: for the x86-64 baseline (SSE2) and, on x86-64 with GCC/Clang,
// for AVX2+FMA, picked at run time from the CPU's features (no -march=native, so the library runs
// on any x86-64 machine). purify_stats and purify_apply both call softmax_stats(), so the bayes
// rule with a uniform q reproduces purify_stats' confidence bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace semiearth {
namespace cpu {

// cond ? a : b as a bitwise blend. With the default -ftrapping-math GCC does not if-convert a
// float comparison that feeds later arithmetic, which would keep the exp loop scalar.
static inline __attribute__((always_inline)) float select_if(bool cond, float a, float b) {
  int32_t ai, bi;
  std::memcpy(&ai, &a, sizeof(ai));
  std::memcpy(&bi, &b, sizeof(bi));
  const int32_t mask = -static_cast<int32_t>(cond);
  const int32_t ri = (ai & mask) | (bi & ~mask);
  float r;
  std::memcpy(&r, &ri, sizeof(r));
  return r;
}

// Cephes-style expf for x <= 0 (softmax's x - max): x = n ln2 + r, |r| <= ln2/2, exp(r) by a
// polynomial, 2^n from the exponent bits. About 1e-7 relative error, no libm call, branch-free so
// loops vectorise. exp(0) is exactly 1; below -87 it returns exp(-87) ~ 1.6e-38; NaN propagates.
static inline __attribute__((always_inline)) float exp_nonpositive(float x) {
  x = select_if(x < -87.0f, -87.0f, x);  // NaN compares false and stays NaN
  float fx = x * 1.44269504088896341f;
  fx = (fx + 12582912.0f) - 12582912.0f;  // round to nearest (|fx| < 2^22)
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  // exp(r) = 1 + r q(r), q of degree 4 fitted for minimax relative error on |r| <= ln2/2
  // (max 1.7e-7 in float arithmetic); the constant term 1 keeps exp(0) exact.
  float q = 8.290315046906471e-3f;
  q = q * r + 4.189793020486832e-2f;
  q = q * r + 1.666763573884964e-1f;
  q = q * r + 4.999915063381195e-1f;
  q = q * r + 9.999997019767761e-1f;
  const float y = q * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

constexpr int64_t kChunk = 1024;  // pixels per inner block: stats buffers stay in L1

// For n pixels whose class-c values are x[c * cstride + i]: arg[i] = argmax (lowest index on
// ties) and, when conf != nullptr, conf[i] = max softmax = 1 / sum_c exp(x_c - max). A NaN or
// +-inf logit makes conf NaN (x * 0 is added into the sum), which the Python wrappers check.
static inline __attribute__((always_inline)) void softmax_stats_impl(
    const float* __restrict x, int64_t cstride, int64_t C, int64_t n, int32_t* __restrict arg,
    float* __restrict conf) {
  float m[kChunk];
  float s[kChunk];
  int32_t a[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = std::min(kChunk, n - i0);
    const float* x0 = x + i0;
    for (int64_t i = 0; i < len; ++i) {
      m[i] = x0[i];
      a[i] = 0;
    }
    for (int64_t c = 1; c < C; ++c) {
      const float* xc = x0 + c * cstride;
      const int32_t ci = static_cast<int32_t>(c);
      for (int64_t i = 0; i < len; ++i) {  // unconditional stores: no (slow) masked stores
        const float v = xc[i];
        const float mi = m[i];
        const int32_t mask = -static_cast<int32_t>(v > mi);
        m[i] = select_if(v > mi, v, mi);
        a[i] = (ci & mask) | (a[i] & ~mask);
      }
    }
    for (int64_t i = 0; i < len; ++i) arg[i0 + i] = a[i];
    if (conf == nullptr) continue;
    for (int64_t i = 0; i < len; ++i) s[i] = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = x0 + c * cstride;
      for (int64_t i = 0; i < len; ++i) {
        const float v = xc[i];
        s[i] += exp_nonpositive(v - m[i]) + v * 0.0f;
      }
    }
    for (int64_t i = 0; i < len; ++i) conf[i0 + i] = 1.0f / s[i];
  }
}

inline void softmax_stats_generic(const float* x, int64_t cstride, int64_t C, int64_t n, int32_t* arg,
                                  float* conf) {
  softmax_stats_impl(x, cstride, C, n, arg, conf);
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define SEMIEARTH_X86_DISPATCH 1
__attribute__((target("avx2,fma"))) inline void softmax_stats_avx2(const float* x, int64_t cstride, int64_t C,
                                                                    int64_t n, int32_t* arg, float* conf) {
  softmax_stats_impl(x, cstride, C, n, arg, conf);
}

inline bool cpu_has_avx2_fma() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}
#endif

// softmax_stats_impl, with the widest instruction set this CPU has.
inline void softmax_stats(const float* x, int64_t cstride, int64_t C, int64_t n, int32_t* arg, float* conf) {
#ifdef SEMIEARTH_X86_DISPATCH
  if (cpu_has_avx2_fma()) {
    softmax_stats_avx2(x, cstride, C, n, arg, conf);
    return;
  }
#endif
  softmax_stats_generic(x, cstride, C, n, arg, conf);
}

}  // namespace cpu
}  // namespace semiearth
