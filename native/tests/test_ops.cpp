// Element-wise and normalization kernels: every runnable table against the reference on random
// data with awkward sizes, and the reference itself against hand-computed values.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

// A plain max: GCC 12's aarch64 vectorizer crashes on std::fmax reductions at -O3.
inline double max_of(double a, double b) { return a > b ? a : b; }

const int64_t kSizes[] = {1, 3, 7, 8, 9, 16, 31, 33, 4097, 11008, 14336};

// Worst absolute and element-relative error over everything added, printed once per kernel.
struct ErrStat {
  double abs = 0, rel = 0;
  void add(const float* a, const float* b, int64_t n, double floor) {
    for (int64_t i = 0; i < n; ++i) {
      const double d = std::fabs((double)a[i] - (double)b[i]);
      const double m = std::fabs((double)b[i]);
      if (d > abs) abs = d;
      if (d / (m > floor ? m : floor) > rel) rel = d / (m > floor ? m : floor);
    }
  }
  void print(const char* kernel, const KernelTable& t) const {
    std::printf("     %-8s %-12s max |err| %.3g, max rel err %.3g\n", kernel, t.name, abs, rel);
  }
};

// |a - b| <= rel * max(|b|, floor) element by element.
void check_rel(const float* a, const float* b, int64_t n, double rel, double floor, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    const double m = std::fabs((double)b[i]);
    const double d = std::fabs((double)a[i] - (double)b[i]);
    if (!(d <= rel * (m > floor ? m : floor))) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s n=%lld: [%lld] got %.9g want %.9g", what, (long long)n, (long long)i,
                    (double)a[i], (double)b[i]);
      CHECK_MSG(false, buf);
      return;
    }
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// ---- the reference against hand-computed values ----

TEST(ops, rmsnorm_reference_of_constant_vector_is_the_weight) {
  std::vector<float> x(37, -3.0f), w(37), y(37);
  for (int i = 0; i < 37; ++i) w[i] = 0.5f + i;
  kReferenceKernels.rmsnorm(x.data(), w.data(), y.data(), 37, 0.0f);
  for (int i = 0; i < 37; ++i) CHECK(std::fabs(y[i] + w[i]) <= 1e-6f * w[i]);
  // eps: x / sqrt(x^2 + eps) with x = 2, eps = 5 -> 2/3.
  std::vector<float> c(5, 2.0f);
  kReferenceKernels.rmsnorm(c.data(), nullptr, c.data(), 5, 5.0f);
  for (float v : c) CHECK(std::fabs(v - 2.0f / 3.0f) < 1e-7f);
}

TEST(ops, rope_reference_rotates_a_unit_vector_by_the_angle) {
  const float th = 0.3f;
  float cs[2] = {std::cos(th), std::sin(th)};
  float x[2] = {1.0f, 0.0f};
  kReferenceKernels.rope(x, 1, 2, 2, cs, RopeMode::Normal);
  CHECK(std::fabs(x[0] - std::cos(th)) < 1e-7f && std::fabs(x[1] - std::sin(th)) < 1e-7f);
  // rope_cache: position 5, n_rot 4, base 10000 -> angles 5 and 5 * 10000^(-1/2) = 0.05.
  float c4[4];
  rope_cache(5, 4, 10000.0f, 1.0f, c4);
  CHECK(std::fabs(c4[0] - std::cos(5.0f)) < 1e-6f && std::fabs(c4[1] - std::sin(5.0f)) < 1e-6f);
  CHECK(std::fabs(c4[2] - std::cos(0.05f)) < 1e-6f && std::fabs(c4[3] - std::sin(0.05f)) < 1e-6f);
}

TEST(ops, rope_reference_normal_and_neox_pair_different_dims) {
  // A quarter turn maps each pair (a, b) to (-b, a).
  const float cs[4] = {0.0f, 1.0f, 0.0f, 1.0f};
  float normal[6] = {1, 2, 3, 4, 5, 6}, neox[6] = {1, 2, 3, 4, 5, 6};
  kReferenceKernels.rope(normal, 1, 6, 4, cs, RopeMode::Normal);  // pairs (0,1) (2,3); 4, 5 untouched
  kReferenceKernels.rope(neox, 1, 6, 4, cs, RopeMode::NeoX);      // pairs (0,2) (1,3); 4, 5 untouched
  const float want_normal[6] = {-2, 1, -4, 3, 5, 6}, want_neox[6] = {-3, -4, 1, 2, 5, 6};
  for (int i = 0; i < 6; ++i) {
    CHECK_EQ(normal[i], want_normal[i]);
    CHECK_EQ(neox[i], want_neox[i]);
  }
}

TEST(ops, activations_reference_known_values) {
  const float g[4] = {0.0f, 1.0f, -1.0f, 3.0f}, up[4] = {1, 1, 1, 2};
  float s[4], e[4];
  kReferenceKernels.swiglu(g, up, s, 4);
  kReferenceKernels.geglu(g, up, e, 4);
  const float want_s[4] = {0.0f, 0.7310585786f, -0.2689414214f, 2 * 2.857722013f};
  const float want_e[4] = {0.0f, 0.8411919906f, -0.1588080094f, 2 * 2.996362525f};  // gelu_tanh
  CHECK_NEAR_ALL(s, want_s, 4, 1e-6, 0.0);
  CHECK_NEAR_ALL(e, want_e, 4, 1e-6, 0.0);
}

TEST(ops, softmax_reference_sums_to_one_and_known_ratio) {
  float x[2] = {0.0f, std::log(2.0f)};
  kReferenceKernels.softmax(x, 2);
  CHECK(std::fabs(x[0] - 1.0f / 3.0f) < 1e-7f && std::fabs(x[1] - 2.0f / 3.0f) < 1e-7f);
  std::vector<float> y(1000);
  fill_normal(y.data(), 1000, 5.0f);
  kReferenceKernels.softmax(y.data(), 1000);
  double sum = 0;
  for (float v : y) sum += v;
  CHECK(std::fabs(sum - 1.0) < 1e-5);
}

// ---- every table against the reference ----

TEST(ops, rmsnorm_matches_reference) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    ErrStat st;
    for (int64_t n : kSizes) {
      std::vector<float> x(n), w(n), want(n), got(n);
      fill_normal(x.data(), n, 2.0f);
      fill_uniform(w.data(), n, -2.0f, 2.0f);
      for (const float* wp : {(const float*)w.data(), (const float*)nullptr}) {
        kReferenceKernels.rmsnorm(x.data(), wp, want.data(), n, 1e-5f);
        t->rmsnorm(x.data(), wp, got.data(), n, 1e-5f);
        check_rel(got.data(), want.data(), n, 1e-5, 1e-30, t->name);
        st.add(got.data(), want.data(), n, 1e-30);
      }
      got = x;  // in place (y aliases x)
      t->rmsnorm(got.data(), w.data(), got.data(), n, 1e-5f);
      kReferenceKernels.rmsnorm(x.data(), w.data(), want.data(), n, 1e-5f);
      check_rel(got.data(), want.data(), n, 1e-5, 1e-30, t->name);
    }
    st.print("rmsnorm", *t);
  }
}

TEST(ops, rope_matches_reference_bit_exactly_in_both_layouts) {
  struct Shape { int64_t heads, head_dim, n_rot; };
  const Shape shapes[] = {{1, 2, 2},  {3, 4, 4},    {2, 6, 6},    {4, 8, 8},    {2, 10, 10}, {8, 64, 64},
                          {2, 64, 32}, {4, 80, 80}, {2, 80, 24}, {2, 128, 128}, {2, 128, 64}, {1, 256, 256},
                          {3, 18, 14}, {2, 34, 34}};
  for (const KernelTable* t : runnable_kernel_tables()) {
    for (const Shape& s : shapes) {
      for (RopeMode mode : {RopeMode::Normal, RopeMode::NeoX}) {
        std::vector<float> x(s.heads * s.head_dim), cs(s.n_rot);
        fill_normal(x.data(), (int64_t)x.size(), 1.0f);
        rope_cache(1234, s.n_rot, 10000.0f, 1.0f, cs.data());
        std::vector<float> want = x, got = x;
        kReferenceKernels.rope(want.data(), s.heads, s.head_dim, s.n_rot, cs.data(), mode);
        t->rope(got.data(), s.heads, s.head_dim, s.n_rot, cs.data(), mode);
        CHECK_MSG(same_bits(got, want), std::string(t->name) + " rope differs, head_dim " +
                                            std::to_string(s.head_dim) + " n_rot " + std::to_string(s.n_rot));
        // Dims past n_rot are untouched.
        for (int64_t h = 0; h < s.heads; ++h)
          for (int64_t d = s.n_rot; d < s.head_dim; ++d)
            CHECK_EQ(got[h * s.head_dim + d], x[h * s.head_dim + d]);
      }
    }
  }
}

TEST(ops, swiglu_matches_reference) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    ErrStat st;
    for (int64_t n : kSizes) {
      std::vector<float> g(n), up(n), want(n), got(n);
      fill_normal(g.data(), n, 4.0f);
      fill_normal(up.data(), n, 1.0f);
      const float extremes[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 20.0f, -20.0f, 88.0f, -88.0f, 100.0f, -100.0f, -1e4f};
      for (int64_t i = 0; i < n && i < 11; ++i) g[(i * 7919) % n] = extremes[i];
      kReferenceKernels.swiglu(g.data(), up.data(), want.data(), n);
      t->swiglu(g.data(), up.data(), got.data(), n);
      check_rel(got.data(), want.data(), n, 4e-6, 1e-30, t->name);
      st.add(got.data(), want.data(), n, 1e-30);
      t->swiglu(g.data(), up.data(), g.data(), n);  // out aliases gate
      check_rel(g.data(), want.data(), n, 4e-6, 1e-30, t->name);
    }
    st.print("swiglu", *t);
  }
}

TEST(ops, geglu_matches_reference) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    ErrStat st;
    for (int64_t n : kSizes) {
      std::vector<float> g(n), up(n), want(n), got(n);
      fill_normal(g.data(), n, 3.0f);
      fill_normal(up.data(), n, 1.0f);
      const float extremes[] = {0.0f, 1e-8f, -1e-8f, 10.0f, -10.0f, 50.0f, -50.0f, -1e4f};
      for (int64_t i = 0; i < n && i < 8; ++i) g[(i * 7919) % n] = extremes[i];
      kReferenceKernels.geglu(g.data(), up.data(), want.data(), n);
      t->geglu(g.data(), up.data(), got.data(), n);
      // The reference's 1 + tanh(u) cancels for g < 0 (absolute error ~6e-8 * |g|), so the
      // comparison allows that on top of a relative 4e-6.
      for (int64_t i = 0; i < n; ++i) {
        const double tol = 4e-6 * std::fabs(want[i]) + 1.2e-7 * std::fabs(g[i] * up[i]);
        if (!(std::fabs((double)got[i] - want[i]) <= tol)) {
          CHECK_MSG(false, std::string(t->name) + " geglu n=" + std::to_string(n) + " i=" + std::to_string(i) +
                               " got " + std::to_string(got[i]) + " want " + std::to_string(want[i]));
          break;
        }
      }
      st.add(got.data(), want.data(), n, 1e-3);  // relative where |out| > 1e-3
      t->geglu(g.data(), up.data(), up.data(), n);  // out aliases up
      CHECK_NEAR_ALL(up.data(), got.data(), n, 0.0, 0.0);
    }
    st.print("geglu", *t);
  }
}

TEST(ops, softmax_matches_reference) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    ErrStat st;
    for (int64_t n : kSizes) {
      std::vector<float> x(n);
      fill_normal(x.data(), n, 8.0f);
      std::vector<float> want = x, got = x;
      kReferenceKernels.softmax(want.data(), n);
      t->softmax(got.data(), n);
      check_rel(got.data(), want.data(), n, 1e-5, 1e-35, t->name);
      st.add(got.data(), want.data(), n, 1e-35);
      double sum = 0;
      for (float v : got) sum += v;
      CHECK(std::fabs(sum - 1.0) < 1e-5);
    }
    st.print("softmax", *t);
  }
}

TEST(ops, softmax_over_a_large_vocabulary_keeps_the_small_terms) {
  // The sampler's log-probs are -log(softmax(l)[argmax]): the sum's error is theirs. A float sum
  // over 32k-152k logits drops the small terms (~1e-5 nats off under qemu's NEON); a double sum
  // keeps them.
  for (const KernelTable* t : runnable_kernel_tables()) {
    for (int64_t n : {32000, 152064}) {
      std::vector<float> x((size_t)n);
      fill_normal(x.data(), n, 4.0f);
      int64_t arg = 0;
      for (int64_t i = 1; i < n; ++i) arg = x[(size_t)i] > x[(size_t)arg] ? i : arg;
      double sum = 0;
      for (float v : x) sum += std::exp((double)v - (double)x[(size_t)arg]);
      t->softmax(x.data(), n);
      const double err = std::fabs(-std::log((double)x[(size_t)arg]) - std::log(sum));
      CHECK_MSG(err < 2e-6, std::string(t->name) + " n=" + std::to_string(n) + ": log-sum off by " + std::to_string(err));
    }
  }
}

TEST(ops, softmax_gives_zero_for_minus_infinity_and_huge_negative_inputs) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    for (int64_t n : {5, 13}) {  // inside one vector and across a tail
      std::vector<float> x(n, -INFINITY);
      x[0] = 3.0f;
      x[1] = -1000.0f;
      x[2] = 3.0f - 50.0f;
      x[3] = 3.0f - 87.0f;
      x[n - 1] = 3.0f - 104.0f;
      t->softmax(x.data(), n);
      CHECK(std::fabs(x[0] - 1.0f) < 1e-6f);
      CHECK_EQ(x[1], 0.0f);
      CHECK(std::fabs(x[2] - std::exp(-50.0f)) <= 4e-6f * std::exp(-50.0f));
      CHECK(std::fabs(x[3] - std::exp(-87.0f)) <= 4e-6f * std::exp(-87.0f));
      for (int64_t i = 4; i < n; ++i) CHECK_EQ(x[i], 0.0f);
    }
  }
}

TEST(ops, add_and_scale_match_reference_exactly) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    for (int64_t n : kSizes) {
      std::vector<float> a(n), b(n), want(n), got(n);
      fill_normal(a.data(), n, 1.0f);
      fill_normal(b.data(), n, 1.0f);
      kReferenceKernels.add(a.data(), b.data(), want.data(), n);
      t->add(a.data(), b.data(), got.data(), n);
      CHECK(same_bits(got, want));
      std::vector<float> alias = a;
      t->add(alias.data(), b.data(), alias.data(), n);
      CHECK(same_bits(alias, want));
      kReferenceKernels.scale(a.data(), 0.37f, want.data(), n);
      t->scale(a.data(), 0.37f, got.data(), n);
      CHECK(same_bits(got, want));
    }
  }
}

// softmax([0, x...]) with every x <= -40 sums to exactly 1.0f, so its outputs are the kernel's
// exp(x) itself: this measures the vector exp in ulps over every reduced argument r.
TEST(ops, softmax_exp_is_accurate_to_a_few_ulp) {
  const int64_t n = 4097;
  std::vector<float> x(n);
  fill_uniform(x.data(), n, -87.0f, -40.0f);
  x[0] = 0.0f;
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<float> y = x;
    t->softmax(y.data(), n);
    CHECK_EQ(y[0], 1.0f);
    double worst_ulp = 0;
    for (int64_t i = 1; i < n; ++i) {
      const double want = std::exp((double)x[i]);
      const double ulp = std::ldexp(1.0, std::ilogb((float)want) - 23);
      worst_ulp = max_of(worst_ulp, std::fabs((double)y[i] - want) / ulp);
    }
    std::printf("     exp      %-12s max error %.2f ulp\n", t->name, worst_ulp);
    CHECK(worst_ulp <= 3.0);
  }
}
