// C++ tests of the semiearth ops, called through the dispatcher like any libtorch user would, on
// small hand-computed cases. Run by ctest (see CMakeLists.txt).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::equal(a, b);
}

bool near(const at::Tensor& a, const at::Tensor& b, double atol = 1e-6) {
  return a.sizes() == b.sizes() && at::allclose(a.to(at::kDouble), b.to(at::kDouble), 0.0, atol);
}

using Stats = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Stats purify_stats(const at::Tensor& logits, double thr, int64_t radius, int64_t cell,
                   const std::optional<at::Tensor>& ignore) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("semiearth::purify_stats", "")
                       .typed<Stats(const at::Tensor&, double, int64_t, int64_t, const std::optional<at::Tensor>&)>();
  return op.call(logits, thr, radius, cell, ignore);
}

at::Tensor crop_batch(const at::Tensor& images, const at::Tensor& regions, int64_t size,
                      const std::optional<at::Tensor>& labels, const at::Tensor& scale, const at::Tensor& shift,
                      bool mask, double fill) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("semiearth::crop_batch", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, const std::optional<at::Tensor>&,
                                         const at::Tensor&, const at::Tensor&, bool, double)>();
  return op.call(images, regions, size, labels, scale, shift, mask, fill);
}

std::tuple<at::Tensor, at::Tensor> purify_apply(const at::Tensor& logits, const at::Tensor& label,
                                                const at::Tensor& conf, const at::Tensor& flags,
                                                const at::Tensor& seg, const at::Tensor& weights, int64_t cell,
                                                int64_t rule, double tau) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("semiearth::purify_apply", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                    const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                                    int64_t, double)>();
  return op.call(logits, label, conf, flags, seg, weights, cell, rule, tau);
}

at::Tensor tensor(std::initializer_list<float> v) { return at::tensor(std::vector<float>(v), at::kFloat); }

// Labels [[0,0,1,1],[0,0,1,1]] with C = 3; the winning class has logit `a`, the others 0:
// a = 3 -> conf 0.9095 (high), a = 0.5 -> conf 0.4519 (LOW at threshold 0.7).
// LOW pixels: (0,1), (0,3), (1,2). cell 2 -> two cells (columns 0-1 and 2-3), radius 1.
at::Tensor tiny_logits() {
  const int lab[2][4] = {{0, 0, 1, 1}, {0, 0, 1, 1}};
  const float a[2][4] = {{3.f, 0.5f, 3.f, 0.5f}, {3.f, 3.f, 0.5f, 3.f}};
  at::Tensor x = at::zeros({1, 3, 2, 4}, at::kFloat);
  auto acc = x.accessor<float, 4>();
  for (int y = 0; y < 2; ++y)
    for (int i = 0; i < 4; ++i) acc[0][lab[y][i]][y][i] = a[y][i];
  return x;
}

void test_purify_stats() {
  const at::Tensor x = tiny_logits();
  const float hi = std::exp(3.f) / (std::exp(3.f) + 2.f), lo = std::exp(.5f) / (std::exp(.5f) + 2.f);
  const auto label = at::tensor(std::vector<int64_t>{0, 0, 1, 1, 0, 0, 1, 1}).view({1, 2, 4});
  const auto conf = tensor({hi, lo, hi, lo, hi, hi, lo, hi}).view({1, 2, 4});
  {
    auto [c, l, f, hist, mass, nb, nonfinite] = purify_stats(x, 0.7, 1, 2, std::nullopt);
    check(near(c, conf), "purify_stats: conf = max softmax");
    check(same(l, label), "purify_stats: label = argmax");
    // columns 1 and 2 touch the other class; LOW = 1, BOUNDARY = 2
    const auto flags = at::tensor(std::vector<uint8_t>{0, 3, 2, 1, 0, 2, 3, 0}).view({1, 2, 4});
    check(same(f, flags), "purify_stats: flags LOW | BOUNDARY");
    const auto h = at::tensor(std::vector<int32_t>{1, 0, 0, 0, 2, 0}).view({1, 1, 2, 3});
    check(same(hist, h), "purify_stats: per-cell class histogram of candidates");
    check(near(mass, tensor({1 - lo, 2 * (1 - lo)}).view({1, 1, 2}), 1e-6), "purify_stats: per-cell mass");
    check(same(nb, at::tensor(std::vector<int32_t>{1, 1}).view({1, 1, 2})), "purify_stats: nboundary");
  }
  {
    // ignore column 2: it no longer makes column 1 or 3 a boundary, but is one itself (IGNORED = 4)
    at::Tensor ignore = at::zeros({1, 2, 4}, at::kBool);
    ignore.select(2, 2).fill_(true);
    auto [c, l, f, hist, mass, nb, nonfinite] = purify_stats(x, 0.7, 1, 2, ignore);
    const auto flags = at::tensor(std::vector<uint8_t>{0, 1, 6, 1, 0, 0, 7, 0}).view({1, 2, 4});
    check(same(f, flags), "purify_stats: flags with an ignore mask");
    const auto h = at::tensor(std::vector<int32_t>{1, 0, 0, 0, 1, 0}).view({1, 1, 2, 3});
    check(same(hist, h), "purify_stats: ignored pixels are no candidates");
    check(near(mass, tensor({1 - lo, 1 - lo}).view({1, 1, 2}), 1e-6), "purify_stats: mass with an ignore mask");
    check(same(nb, at::zeros({1, 1, 2}, at::kInt)), "purify_stats: nboundary with an ignore mask");
  }
  {
    // radius 0: never a boundary; ties go to the lowest class
    at::Tensor t = at::zeros({1, 4, 1, 3}, at::kFloat);
    t[0][2][0][1] = 1.f;
    auto [c, l, f, hist, mass, nb, nonfinite] = purify_stats(t, 0.5, 0, 8, std::nullopt);
    check(same(l.slice(2, 0, 2), at::tensor(std::vector<int64_t>{0, 2}).view({1, 1, 2})),
          "purify_stats: argmax takes the lowest index on ties");
    check(std::fabs(c[0][0][0].item<float>() - 0.25f) < 1e-7, "purify_stats: uniform logits give conf 1/C");
    check((f.slice(2, 0, 2) & 2).sum().item<int64_t>() == 0, "purify_stats: radius 0 has no boundary");
    check(nonfinite.item<int64_t>() == 0, "purify_stats: finite logits count no non-finite pixel");
    // a NaN or inf logit: counted and returned, never thrown (the Python wrapper raises)
    t[0][1][0][0] = std::nanf("");
    t[0][3][0][2] = -INFINITY;
    auto bad = std::get<6>(purify_stats(t, 0.5, 0, 8, std::nullopt));
    check(bad.item<int64_t>() == 2, "purify_stats: non-finite logits are counted per pixel");
  }
}

void test_crop_batch() {
  // ramp image: value = x + 10 y + 100 c, 8 x 8
  const int64_t H = 8, W = 8;
  at::Tensor img = at::empty({1, 3, H, W}, at::kFloat);
  auto acc = img.accessor<float, 4>();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) acc[0][c][y][x] = x + 10.f * y + 100.f * c;
  const auto one = tensor({1, 1, 1}), zero = tensor({0, 0, 0});
  {
    // box [2,6) x [2,6) at 4 x 4: samples at the pixel centres 2..5 (aligned=True)
    auto out = crop_batch(img, tensor({0, 2, 2, 6, 6, 0}).view({1, 6}), 4, std::nullopt, one, zero, false, 0.0);
    bool ok = out.sizes() == at::IntArrayRef({1, 3, 4, 4});
    auto o = out.accessor<float, 4>();
    for (int c = 0; c < 3 && ok; ++c)
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) ok &= std::fabs(o[0][c][i][j] - ((2 + j) + 10.f * (2 + i) + 100.f * c)) < 1e-4f;
    check(ok, "crop_batch: pixel-aligned crop of a ramp");
  }
  {
    // same box at 8 x 8: samples at 1.75 + 0.5 k (bilinear is exact on a ramp); scale 2, shift 1
    auto out = crop_batch(img, tensor({0, 2, 2, 6, 6, 0}).view({1, 6}), 8, std::nullopt, tensor({2, 2, 2}),
                          tensor({1, 1, 1}), false, 0.0);
    auto o = out.accessor<float, 4>();
    bool ok = true;
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) {
          const float want = 2.f * ((1.75f + .5f * j) + 10.f * (1.75f + .5f * i) + 100.f * c) + 1.f;
          ok &= std::fabs(o[0][c][i][j] - want) < 1e-3f;
        }
    check(ok, "crop_batch: upsampled crop of a ramp, with scale and shift");
  }
  {
    // box partly outside: x in [-4, 4) at 4 samples -> x = -3.5, -1.5 (outside: fill), 0.5, 2.5
    auto out = crop_batch(img, tensor({0, -4, 0, 4, 8, 0}).view({1, 6}), 4, std::nullopt, one, zero, false, -7.0);
    auto o = out.accessor<float, 4>();
    bool ok = true;
    for (int i = 0; i < 4; ++i) {
      const float y = -0.5f + 2.f * (i + 0.5f);  // 0.5, 2.5, 4.5, 6.5
      ok &= o[0][0][i][0] == -7.f && o[0][0][i][1] == -7.f;
      ok &= std::fabs(o[0][0][i][2] - (0.5f + 10.f * y)) < 1e-4f && std::fabs(o[0][0][i][3] - (2.5f + 10.f * y)) < 1e-4f;
    }
    check(ok, "crop_batch: samples outside the image get the fill value");
  }
  {
    // class mask: labels 1 on the left half, 0 on the right; region class 1 keeps the left
    at::Tensor labels = at::zeros({1, H, W}, at::kLong);
    labels.slice(2, 0, 4).fill_(1);
    auto out = crop_batch(img.to(at::kByte), tensor({0, 2, 2, 6, 6, 1}).view({1, 6}), 4, labels, one, zero, true, -1.0);
    auto o = out.accessor<float, 4>();
    bool ok = true;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const float want = (2 + j < 4) ? float((2 + j) + 10 * (2 + i)) : -1.f;
        ok &= std::fabs(o[0][0][i][j] - want) < 1e-4f;
      }
    check(ok, "crop_batch: uint8 image, other classes masked with the fill value");
  }
  {
    auto out = crop_batch(img, at::zeros({0, 6}, at::kFloat), 5, std::nullopt, one, zero, false, 0.0);
    check(out.sizes() == at::IntArrayRef({0, 3, 5, 5}), "crop_batch: N = 0 regions");
  }
}

void test_purify_apply() {
  const at::Tensor x = tiny_logits();
  auto [conf, label, flags, hist, mass, nb, nonfinite] = purify_stats(x, 0.7, 1, 2, std::nullopt);
  // every (cell, class) segment is region 0
  const at::Tensor seg = at::zeros({1, 1, 2, 3}, at::kInt);
  {
    const at::Tensor uniform = at::zeros({1, 3}, at::kFloat);  // rule_weights of a uniform q
    auto [l, c] = purify_apply(x, label, conf, flags, seg, uniform, 2, 0, 0.7);
    check(same(l, label), "purify_apply bayes: uniform q keeps the labels");
    check(same(c, conf), "purify_apply bayes: uniform q keeps conf bit for bit");
  }
  {
    // q strongly for class 2: the LOW pixels (0,1), (0,3), (1,2) move to class 2, others stay
    const at::Tensor w = tensor({-10.f, -10.f, 0.f}).view({1, 3});
    auto [l, c] = purify_apply(x, label, conf, flags, seg, w, 2, 0, 0.7);
    const auto want = at::tensor(std::vector<int64_t>{0, 2, 1, 2, 0, 0, 2, 1}).view({1, 2, 4});
    check(same(l, want), "purify_apply bayes: confident disagreement relabels candidates only");
    // pixel (0,1): z = (0.5 - 10, -10, 0) -> conf = 1 / (1 + e^-9.5 + e^-10)
    const float want_c = 1.f / (1.f + std::exp(-9.5f) + std::exp(-10.f));
    check(std::fabs(c[0][0][1].item<float>() - want_c) < 1e-6f, "purify_apply bayes: fused confidence");
    check(c[0][0][0].item<float>() == conf[0][0][0].item<float>(), "purify_apply bayes: non-candidates copied");
  }
  {
    // paper rule: k = argmax w = 1, conf' = a c + (1 - a) w_k with a = c / tau
    const at::Tensor w = tensor({0.2f, 0.5f, 0.3f}).view({1, 3});
    auto [l, c] = purify_apply(x, label, conf, flags, seg, w, 2, 1, 0.7);
    const float c0 = conf[0][0][1].item<float>(), a = c0 / 0.7f;
    check(l[0][0][1].item<int64_t>() == 1 && std::fabs(c[0][0][1].item<float>() - (a * c0 + (1 - a) * 0.5f)) < 1e-6f,
          "purify_apply paper: class and confidence");
    check(l[0][1][0].item<int64_t>() == 0, "purify_apply paper: non-candidates copied");
  }
}

}  // namespace

int main() {
  try {
    test_purify_stats();
    test_crop_batch();
    test_purify_apply();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
