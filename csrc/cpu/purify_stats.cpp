// purify_stats, CPU: one pass over teacher logits [B,C,H,W] -> conf, label, flags and per-cell
// pooling. Specification: semiearth/ops/purify_stats.py (purify_stats_reference).
//
// Threads take bands of rows (image b, cell row cy) from a shared counter. A band computes argmax
// (and, for its own rows, the confidence) over C for its rows plus `radius` halo rows above and
// below (recomputing the halo is cheaper than a second pass over the logits), keeps the labels in
// a local 8-bit buffer (32-bit past 254 classes), derives the boundary flag with separable min/max
// filters, and pools its cells, which no other band touches. Pixels with a NaN confidence (a NaN
// or inf logit) are counted and the count is returned: the Python wrapper raises the ValueError.
// Bad input never throws from inside the extension, since a C++ exception crossing into torch
// crashed the process where the extension's compiler was not torch's (see tests/test_bad_input.py).
#include <ATen/Dispatch.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "fast_math.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace semiearth {
namespace cpu {
namespace {

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

// A band's labels are kept in a small unsigned type L (uint8_t when C < 255, else uint32_t), so the
// boundary filter runs 32 pixels a vector. kNone = max(L) stands for ignored pixels and the columns
// outside the image: it never wins a min, and kNone + 1 wraps to 0, which never wins a max. A pixel
// is BOUNDARY when the window's min label is below its own, or the window's max of (label + 1)
// above its own + 1.
template <typename L>
struct Scratch {
  static constexpr L kNone = std::numeric_limits<L>::max();
  std::vector<float> tmp, mass_x;
  std::vector<double> mass_cell;
  std::vector<int32_t> arg;                            // argmax, band rows plus halo
  std::vector<L> own, win, hmin, hmax, vmin, vmax, cl;  // win: padded by r columns, kNone where ignored
  std::vector<uint8_t> low, bnd, nb_x, cnt;             // cnt: [C, W] candidate counts since the last flush
  int64_t nonfinite = 0;
};

// Per-x counters are uint8: they are flushed into the band's cells at least every 255 rows.
constexpr int64_t kFlushRows = 255;
// Up to this many classes, candidates are counted per class with vector compares; above, scattered.
constexpr int64_t kVectorCountClasses = 32;

// Adds the per-x counters (mass, boundary candidates and, with vector counting, class counts) to
// the band's cells and zeroes them.
template <typename L>
void flush_counts(Scratch<L>& s, int64_t C, int64_t W, int64_t Wc, int64_t cell, bool vector_count,
                  int32_t* hist_row, int32_t* nrow) {
  for (int64_t cx = 0; cx < Wc; ++cx) {
    const int64_t xa = cx * cell, xb = std::min(W, xa + cell);
    double m = 0.0;
    int32_t nb = 0;
    for (int64_t x = xa; x < xb; ++x) {
      m += s.mass_x[x];
      nb += s.nb_x[x];
    }
    s.mass_cell[cx] += m;
    nrow[cx] += nb;
    if (!vector_count) continue;
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* __restrict cc = s.cnt.data() + c * W;
      int32_t h = 0;
      for (int64_t x = xa; x < xb; ++x) h += cc[x];
      hist_row[cx * C + c] += h;
    }
  }
  std::fill(s.nb_x.begin(), s.nb_x.end(), 0);
  std::fill(s.mass_x.begin(), s.mass_x.end(), 0.0f);
  if (vector_count) std::fill(s.cnt.begin(), s.cnt.end(), 0);
}

// Widens n labels into the int64 output. Nothing reads the output here again, so with AVX2 the
// stores stream past the caches, which saves reading each line in before overwriting it.
void store_labels(const int32_t* src, int64_t* dst, int64_t n);

// One row's LOW flags, and the uncertainty mass (1 - conf) of its candidates added per x; ig is the
// row of the ignore mask or null. Returns how many confidences are NaN (from NaN or inf logits).
static inline __attribute__((always_inline)) int32_t conf_row(int64_t W, const float* __restrict cf, float thr,
                                                              const uint8_t* __restrict ig, uint8_t* __restrict low,
                                                              float* __restrict mass_x) {
  int32_t nonfinite = 0;
  if (ig == nullptr) {
    for (int64_t x = 0; x < W; ++x) {
      const float c = cf[x];
      low[x] = c < thr;
      mass_x[x] += static_cast<float>(c < thr) * (1.0f - c);
      nonfinite += c != c;
    }
    return nonfinite;
  }
  for (int64_t x = 0; x < W; ++x) {
    const float c = cf[x];
    low[x] = c < thr;
    mass_x[x] += static_cast<float>((c < thr) & (ig[x] == 0)) * (1.0f - c);
    nonfinite += c != c;
  }
  return nonfinite;
}

// One row's flags (bit 0 LOW, bit 1 BOUNDARY, bit 2 IGNORED), candidate labels cl (kNone for
// non-candidates) and boundary-candidate counts; ig is the row of the ignore mask or null.
template <typename L>
static inline __attribute__((always_inline)) void flag_row(int64_t W, const uint8_t* __restrict low,
                                                           const uint8_t* __restrict bnd,
                                                           const uint8_t* __restrict ig, const L* __restrict l,
                                                           uint8_t* __restrict fl, L* __restrict cl,
                                                           uint8_t* __restrict nb_x) {
  if (ig == nullptr) {
    for (int64_t x = 0; x < W; ++x) {
      fl[x] = static_cast<uint8_t>(low[x] | (bnd[x] << 1));
      cl[x] = l[x] | static_cast<L>(low[x] - 1);  // all ones (kNone) unless a candidate
      nb_x[x] += low[x] & bnd[x];
    }
    return;
  }
  for (int64_t x = 0; x < W; ++x) {
    const uint8_t cand = low[x] & (ig[x] ^ 1);
    fl[x] = static_cast<uint8_t>(low[x] | (bnd[x] << 1) | (ig[x] << 2));
    cl[x] = l[x] | static_cast<L>(cand - 1);
    nb_x[x] += cand & bnd[x];
  }
}

// Steps 2-4 of a band whose argmax (rows ya..yb) is in s.arg and confidences (rows y0..y1) in
// conf_all: label output, boundary flag, flags, and the pooling of the band's cells.
template <typename L>
static inline __attribute__((always_inline)) void band_post_impl(const Ctx& k, int64_t b, int64_t cy,
                                                                  Scratch<L>& s) {
  constexpr L kNone = Scratch<L>::kNone;
  const int64_t C = k.C, H = k.H, W = k.W, Wc = k.Wc, cell = k.cell, r = k.r, HW = H * W;
  const int64_t y0 = cy * cell, y1 = std::min(H, y0 + cell);
  const int64_t ya = std::max<int64_t>(0, y0 - r), yb = std::min(H, y1 + r);
  const int64_t nr = yb - ya, Wp = W + 2 * r;
  const uint8_t* ign = k.ign_all == nullptr ? nullptr : k.ign_all + b * HW;
  store_labels(s.arg.data() + (y0 - ya) * W, k.label_all + b * HW + y0 * W, (y1 - y0) * W);
  // 2. Labels in L (own) and the padded window rows (win), then the horizontal window per row.
  s.win.resize(static_cast<size_t>(nr * Wp));
  if (ign != nullptr) s.own.resize(static_cast<size_t>(nr * W));
  for (int64_t j = 0; j < nr; ++j) {
    const int32_t* __restrict a = s.arg.data() + j * W;
    L* __restrict w = s.win.data() + j * Wp;
    std::fill_n(w, r, kNone);
    std::fill_n(w + r + W, r, kNone);
    if (ign == nullptr) {
      for (int64_t x = 0; x < W; ++x) w[r + x] = static_cast<L>(a[x]);
    } else {
      const uint8_t* __restrict ig = ign + (ya + j) * W;
      L* __restrict o = s.own.data() + j * W;
      for (int64_t x = 0; x < W; ++x) {
        o[x] = static_cast<L>(a[x]);
        w[r + x] = ig[x] ? kNone : static_cast<L>(a[x]);
      }
    }
  }
  if (r > 0) {
    s.hmin.resize(static_cast<size_t>(nr * W));
    s.hmax.resize(static_cast<size_t>(nr * W));
    for (int64_t j = 0; j < nr; ++j) {
      const L* __restrict w = s.win.data() + j * Wp;
      L* __restrict hn = s.hmin.data() + j * W;
      L* __restrict hx = s.hmax.data() + j * W;
      for (int64_t x = 0; x < W; ++x) {
        hn[x] = w[x];
        hx[x] = static_cast<L>(w[x] + 1);
      }
      for (int64_t d = 1; d <= 2 * r; ++d) {
        const L* __restrict q = w + d;
        for (int64_t x = 0; x < W; ++x) {
          hn[x] = std::min(hn[x], q[x]);
          hx[x] = std::max(hx[x], static_cast<L>(q[x] + 1));
        }
      }
    }
  }
  // 3-4. Per row: vertical window, flags, candidates; per-x counters, flushed into the cells.
  const bool vector_count = sizeof(L) == 1 && C <= kVectorCountClasses;
  s.vmin.resize(static_cast<size_t>(W));
  s.vmax.resize(static_cast<size_t>(W));
  s.cl.resize(static_cast<size_t>(W));
  s.low.resize(static_cast<size_t>(W));
  s.bnd.assign(static_cast<size_t>(W), 0);
  s.nb_x.assign(static_cast<size_t>(W), 0);
  s.mass_x.assign(static_cast<size_t>(W), 0.0f);
  s.mass_cell.assign(static_cast<size_t>(Wc), 0.0);
  if (vector_count) s.cnt.assign(static_cast<size_t>(C * W), 0);
  int32_t* hist_row = k.hist_all + (b * k.Hc + cy) * Wc * C;
  int32_t* nrow = k.nb_all + (b * k.Hc + cy) * Wc;
  std::fill_n(hist_row, Wc * C, 0);
  std::fill_n(nrow, Wc, 0);
  const float thr = k.thr;
  uint8_t* __restrict bnd = s.bnd.data();
  uint8_t* __restrict low = s.low.data();
  L* __restrict cl = s.cl.data();
  for (int64_t y = y0; y < y1; ++y) {
    const L* __restrict l = ign == nullptr ? s.win.data() + (y - ya) * Wp + r : s.own.data() + (y - ya) * W;
    if (r > 0) {
      const int64_t ja = std::max(ya, y - r) - ya, jb = std::min(yb - 1, y + r) - ya;
      L* __restrict vn = s.vmin.data();
      L* __restrict vx = s.vmax.data();
      std::copy_n(s.hmin.data() + ja * W, W, vn);
      std::copy_n(s.hmax.data() + ja * W, W, vx);
      for (int64_t jj = ja + 1; jj <= jb; ++jj) {
        const L* __restrict hn = s.hmin.data() + jj * W;
        const L* __restrict hx = s.hmax.data() + jj * W;
        for (int64_t x = 0; x < W; ++x) {
          vn[x] = std::min(vn[x], hn[x]);
          vx[x] = std::max(vx[x], hx[x]);
        }
      }
      for (int64_t x = 0; x < W; ++x) bnd[x] = (vn[x] < l[x]) | (vx[x] > static_cast<L>(l[x] + 1));
    }
    const float* __restrict cf = k.conf_all + b * HW + y * W;
    uint8_t* __restrict fl = k.flags_all + b * HW + y * W;
    const uint8_t* ig = ign == nullptr ? nullptr : ign + y * W;
    s.nonfinite += conf_row(W, cf, thr, ig, low, s.mass_x.data());
    flag_row(W, low, bnd, ig, l, fl, cl, s.nb_x.data());
    if (vector_count) {
      uint8_t* cnt = s.cnt.data();
      for (int64_t c = 0; c < C; ++c) {
        uint8_t* __restrict cc = cnt + c * W;
        const L lc = static_cast<L>(c);
        for (int64_t x = 0; x < W; ++x) cc[x] += cl[x] == lc;
      }
    } else {
      for (int64_t x = 0; x < W; ++x)
        if (cl[x] != kNone) hist_row[(x / cell) * C + cl[x]] += 1;
    }
    if ((y - y0 + 1) % kFlushRows == 0) flush_counts(s, C, W, Wc, cell, vector_count, hist_row, nrow);
  }
  flush_counts(s, C, W, Wc, cell, vector_count, hist_row, nrow);
  float* mrow = k.mass_all + (b * k.Hc + cy) * Wc;
  for (int64_t cx = 0; cx < Wc; ++cx) mrow[cx] = static_cast<float>(s.mass_cell[cx]);
}

template <typename L>
void band_post_generic(const Ctx& k, int64_t b, int64_t cy, Scratch<L>& s) {
  band_post_impl(k, b, cy, s);
}
#ifdef SEMIEARTH_X86_DISPATCH
template <typename L>
__attribute__((target("avx2,fma"))) void band_post_avx2(const Ctx& k, int64_t b, int64_t cy, Scratch<L>& s) {
  band_post_impl(k, b, cy, s);
}
#endif

template <typename L>
void band_post(const Ctx& k, int64_t b, int64_t cy, Scratch<L>& s) {
#ifdef SEMIEARTH_X86_DISPATCH
  if (cpu_has_avx2_fma()) return band_post_avx2(k, b, cy, s);
#endif
  band_post_generic(k, b, cy, s);
}

// Every band of the batch (image b, cell row cy), split over the threads; returns how many
// pixels had a NaN confidence (a NaN or inf logit).
template <typename L, typename scalar_t>
int64_t run_bands(const Ctx& k, const scalar_t* x_all, int64_t B, int64_t sb, int64_t sc, int64_t sp) {
  const int64_t C = k.C, H = k.H, W = k.W, HW = H * W, Hc = k.Hc, cell = k.cell, r = k.r;
  const int64_t bands = B * Hc;
  std::atomic<int64_t> nonfinite{0}, next{0};
  // Each thread takes the next free band until none is left: page faults and a busy neighbour on
  // a shared machine make equal static shares finish at different times.
  at::parallel_for(0, std::min<int64_t>(bands, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    Scratch<L> s;
    for (int64_t band; (band = next.fetch_add(1, std::memory_order_relaxed)) < bands;) {
      const int64_t b = band / Hc, cy = band % Hc;
      const int64_t y0 = cy * cell, y1 = std::min(H, y0 + cell);
      const int64_t ya = std::max<int64_t>(0, y0 - r), yb = std::min(H, y1 + r);
      const scalar_t* img = x_all + b * sb;
      s.arg.resize(static_cast<size_t>((yb - ya) * W));
      // 1. argmax for the halo and band rows, confidence for the band rows only.
      pixels_stats(img, sp, sc, C, ya * W, (y0 - ya) * W, s.arg.data(), nullptr, s.tmp);
      pixels_stats(img, sp, sc, C, y0 * W, (y1 - y0) * W, s.arg.data() + (y0 - ya) * W,
                   k.conf_all + b * HW + y0 * W, s.tmp);
      pixels_stats(img, sp, sc, C, y1 * W, (yb - y1) * W, s.arg.data() + (y1 - ya) * W, nullptr, s.tmp);
      band_post(k, b, cy, s);
    }
    nonfinite += s.nonfinite;
  });
  return nonfinite.load();
}

void store_labels_portable(const int32_t* __restrict src, int64_t* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
#ifdef SEMIEARTH_X86_DISPATCH
__attribute__((target("avx2"))) void store_labels_avx2(const int32_t* src, int64_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31) != 0; ++i) dst[i] = src[i];
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
  for (; i < n; ++i) dst[i] = src[i];
  _mm_sfence();  // order the streamed stores before anything that follows
}
#endif

void store_labels(const int32_t* src, int64_t* dst, int64_t n) {
#ifdef SEMIEARTH_X86_DISPATCH
  if (cpu_has_avx2_fma()) return store_labels_avx2(src, dst, n);
#endif
  store_labels_portable(src, dst, n);
}

// Asks the kernel for 2 MiB pages under the aligned interior of a fresh output buffer, before it is
// first written: a 32 MiB label map then costs 16 page faults instead of 8192. Advice only (as
// torch's THP_MEM_ALLOC_ENABLE=1 gives); a no-op where unsupported.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + t.nbytes();
  const uintptr_t a = (begin + kHuge - 1) & ~(kHuge - 1), z = end & ~(kHuge - 1);
  if (z > a) madvise(reinterpret_cast<void*>(a), z - a, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> purify_stats_cpu(
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
  if (B == 0 || HW == 0) return {conf, label, flags, hist, mass, nbound, at::zeros({}, at::kLong)};
  for (const at::Tensor* t : {&conf, &label, &flags}) advise_huge_pages(*t);

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

  int64_t nonfinite = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "purify_stats_cpu", [&] {
    const scalar_t* x_all = logits.data_ptr<scalar_t>();
    nonfinite = C < Scratch<uint8_t>::kNone ? run_bands<uint8_t>(k, x_all, B, sb, sc, sp)
                                           : run_bands<uint32_t>(k, x_all, B, sb, sc, sp);
  });
  return {conf, label, flags, hist, mass, nbound, at::scalar_tensor(nonfinite, at::kLong)};
}

}  // namespace
}  // namespace cpu
}  // namespace semiearth

TORCH_LIBRARY_IMPL(semiearth, CPU, m) { m.impl("purify_stats", &semiearth::cpu::purify_stats_cpu); }
