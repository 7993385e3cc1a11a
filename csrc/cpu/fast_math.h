// Shared CPU building blocks of the semiearth kernels: a fast expf for softmax and the per-pixel
// softmax statistics (argmax, max probability) over C class planes.
//
// softmax_stats() has two bodies that give the same bits: AVX2+FMA intrinsics, picked at run time
// on x86-64 CPUs that have them (no -march=native, so the library runs on any x86-64), and a
// portable loop that compilers vectorise elsewhere (NEON on arm64). Both evaluate exactly the
// same sequence of float operations per pixel, so a pixel's result does not depend on which body
// or which vector lane computed it; purify_apply relies on this to reproduce purify_stats'
// confidence bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define SEMIEARTH_X86_DISPATCH 1
#include <immintrin.h>
#endif

namespace semiearth {
namespace cpu {

// exp(d) for d <= 0 as 2^t, t = d log2(e) = n + f with n = round(t), |f| <= 1/2: 2^f by a degree-5
// polynomial (minimax relative error 9e-8, about 2e-7 in float arithmetic; its constant term 1
// keeps exp(0) exact), 2^n added to the exponent bits. t is clamped at -125 (exp(d) < 3e-38
// there), so 2^n stays a normal float.
namespace expc {
constexpr float kLog2e = 1.44269504088896341f, kMinT = -125.0f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (t + kRound) - kRound rounds t to an integer
constexpr float kP1 = 0.6931470036506653f, kP2 = 0.24022242426872253f, kP3 = 0.05550733581185341f,
                kP4 = 0.009671512991189957f, kP5 = 0.001326472731307149f;  // 2^f = 1 + kP1 f + ... + kP5 f^5
}  // namespace expc

static inline __attribute__((always_inline)) float exp_nonpositive(float d) {
  using namespace expc;
  const float t = std::max(d * kLog2e, kMinT);
  const float k = t + kRound;  // n sits in the low mantissa bits of k
  const float f = t - (k - kRound);
  float p = std::fma(kP5, f, kP4);
  p = std::fma(p, f, kP3);
  p = std::fma(p, f, kP2);
  p = std::fma(p, f, kP1);
  p = std::fma(p, f, 1.0f);
  int32_t kb, pb;
  std::memcpy(&kb, &k, sizeof(kb));
  std::memcpy(&pb, &p, sizeof(pb));
  pb += static_cast<int32_t>(static_cast<uint32_t>(kb) << 23);
  float y;
  std::memcpy(&y, &pb, sizeof(y));
  return y;
}

// One pixel whose class-c value is x[c * cstride]: argmax (lowest index on ties) and, when conf is
// not null, max softmax = 1 / sum_c exp(x_c - max). A NaN or +-inf logit makes conf NaN: `bad`
// collects x * 0, which is 0 for finite x and NaN otherwise.
static inline __attribute__((always_inline)) void softmax_pixel(const float* x, int64_t cstride, int64_t C,
                                                                int32_t* arg, float* conf) {
  float m = x[0], bad = x[0] * 0.0f;
  int32_t a = 0;
  for (int64_t c = 1; c < C; ++c) {
    const float v = x[c * cstride];
    a = v > m ? static_cast<int32_t>(c) : a;
    m = v > m ? v : m;
    bad = std::fma(v, 0.0f, bad);
  }
  *arg = a;
  if (conf == nullptr) return;
  float s = 0.0f;
  for (int64_t c = 0; c < C; ++c) s += exp_nonpositive(x[c * cstride] - m);
  *conf = 1.0f / s + bad;
}

// The portable body: chunks of pixels whose statistics stay in L1, one class plane at a time, so
// the inner loops run over contiguous pixels and vectorise.
static inline void softmax_stats_portable(const float* __restrict x, int64_t cstride, int64_t C, int64_t n,
                                          int32_t* __restrict arg, float* __restrict conf) {
  constexpr int64_t kChunk = 256;
  float m[kChunk], s[kChunk], bad[kChunk];
  int32_t a[kChunk];
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = std::min(kChunk, n - i0);
    const float* x0 = x + i0;
    for (int64_t i = 0; i < len; ++i) {
      m[i] = x0[i];
      a[i] = 0;
      bad[i] = x0[i] * 0.0f;
    }
    for (int64_t c = 1; c < C; ++c) {
      const float* xc = x0 + c * cstride;
      for (int64_t i = 0; i < len; ++i) {
        const float v = xc[i];
        a[i] = v > m[i] ? static_cast<int32_t>(c) : a[i];
        m[i] = v > m[i] ? v : m[i];
        bad[i] = std::fma(v, 0.0f, bad[i]);
      }
    }
    std::copy_n(a, len, arg + i0);
    if (conf == nullptr) continue;
    std::fill_n(s, len, 0.0f);
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = x0 + c * cstride;
      for (int64_t i = 0; i < len; ++i) s[i] += exp_nonpositive(xc[i] - m[i]);
    }
    for (int64_t i = 0; i < len; ++i) conf[i0 + i] = 1.0f / s[i] + bad[i];
  }
}

#ifdef SEMIEARTH_X86_DISPATCH
// exp_nonpositive on 8 lanes, operation for operation.
__attribute__((target("avx2,fma"))) static inline __m256 exp_nonpositive8(__m256 d) {
  using namespace expc;
  const __m256 t = _mm256_max_ps(_mm256_mul_ps(d, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(kMinT));
  const __m256 k = _mm256_add_ps(t, _mm256_set1_ps(kRound));
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(k, _mm256_set1_ps(kRound)));
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kP5), f, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i scale = _mm256_slli_epi32(_mm256_castps_si256(k), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), scale));
}

// The AVX2 body: blocks of 2 x 8 pixels held in registers through both passes over the classes
// (the second pass re-reads the block's logits from L1), so loads of the next block overlap the
// arithmetic of this one. The last n % 16 pixels take softmax_pixel.
__attribute__((target("avx2,fma"))) inline void softmax_stats_avx2(const float* x, int64_t cstride, int64_t C,
                                                                    int64_t n, int32_t* arg, float* conf) {
  constexpr int U = 2;
  int64_t i = 0;
  for (; i + 8 * U <= n; i += 8 * U) {
    __m256 m[U], bad[U], s[U];
    __m256i a[U];
    for (int u = 0; u < U; ++u) {
      m[u] = _mm256_loadu_ps(x + i + 8 * u);
      bad[u] = _mm256_mul_ps(m[u], _mm256_setzero_ps());
      a[u] = _mm256_setzero_si256();
    }
    for (int64_t c = 1; c < C; ++c) {
      const __m256 cv = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(c)));
      for (int u = 0; u < U; ++u) {
        const __m256 v = _mm256_loadu_ps(x + c * cstride + i + 8 * u);
        const __m256 gt = _mm256_cmp_ps(v, m[u], _CMP_GT_OQ);
        a[u] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a[u]), cv, gt));
        m[u] = _mm256_max_ps(v, m[u]);  // v > m ? v : m, as in softmax_pixel
        bad[u] = _mm256_fmadd_ps(v, _mm256_setzero_ps(), bad[u]);
      }
    }
    for (int u = 0; u < U; ++u) _mm256_storeu_si256(reinterpret_cast<__m256i*>(arg + i + 8 * u), a[u]);
    if (conf == nullptr) continue;
    for (int u = 0; u < U; ++u) s[u] = _mm256_setzero_ps();
    for (int64_t c = 0; c < C; ++c)
      for (int u = 0; u < U; ++u) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + c * cstride + i + 8 * u), m[u]);
        s[u] = _mm256_add_ps(s[u], exp_nonpositive8(d));
      }
    for (int u = 0; u < U; ++u)
      _mm256_storeu_ps(conf + i + 8 * u, _mm256_add_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), s[u]), bad[u]));
  }
  for (; i < n; ++i) softmax_pixel(x + i, cstride, C, arg + i, conf == nullptr ? nullptr : conf + i);
}

// Whether to take the AVX2 bodies: the CPU has AVX2 and FMA, and SEMIEARTH_DISABLE_AVX2 is unset or
// "0" (set, it runs the portable bodies, as on arm64, so that tests can check them on x86 too).
inline bool cpu_has_avx2_fma() {
  static const bool ok = [] {
    const char* off = std::getenv("SEMIEARTH_DISABLE_AVX2");
    if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}
#endif

// For n pixels whose class-c values are x[c * cstride + i]: arg[i] = argmax (lowest index on
// ties) and, when conf != nullptr, conf[i] = max softmax (NaN where a logit is NaN or +-inf).
inline void softmax_stats(const float* x, int64_t cstride, int64_t C, int64_t n, int32_t* arg, float* conf) {
#ifdef SEMIEARTH_X86_DISPATCH
  if (cpu_has_avx2_fma()) {
    softmax_stats_avx2(x, cstride, C, n, arg, conf);
    return;
  }
#endif
  softmax_stats_portable(x, cstride, C, n, arg, conf);
}

}  // namespace cpu
}  // namespace semiearth
