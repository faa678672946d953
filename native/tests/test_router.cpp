// Mixture-of-experts routing: the same experts as the reference on every table (exactly), and
// weights that are the full or the renormalized softmax at those experts.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

// A plain max: GCC 12's aarch64 vectorizer crashes on std::fmax reductions at -O3.
inline double max_of(double a, double b) { return a > b ? a : b; }

struct Config { int64_t experts, k; };
const Config kConfigs[] = {{32, 4}, {8, 2}, {128, 8}, {256, 8}, {60, 4}, {7, 7}, {1, 1}, {256, 256}, {33, 5}};

// Softmax over all n logits, in double.
std::vector<double> full_softmax(const float* x, int64_t n) {
  double max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  std::vector<double> p((size_t)n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (p[(size_t)i] = std::exp((double)x[i] - max));
  for (double& v : p) v /= sum;
  return p;
}

// Compares one table with the reference on these logits; returns the worst relative weight error.
double compare(const KernelTable& t, const std::vector<float>& logits, int64_t k, bool renorm, const char* what) {
  const int64_t n = (int64_t)logits.size();
  std::vector<int32_t> want_idx(k), got_idx(k);
  std::vector<float> want_w(k), got_w(k);
  kReferenceKernels.route_topk(logits.data(), n, k, renorm, want_idx.data(), want_w.data());
  t.route_topk(logits.data(), n, k, renorm, got_idx.data(), got_w.data());
  double worst = 0;
  for (int64_t j = 0; j < k; ++j) {
    if (got_idx[j] != want_idx[j]) {
      CHECK_MSG(false, std::string(t.name) + " " + what + ": E=" + std::to_string(n) + " k=" + std::to_string(k) +
                           " slot " + std::to_string(j) + " chose expert " + std::to_string(got_idx[j]) +
                           ", reference " + std::to_string(want_idx[j]));
      return worst;
    }
    const double rel = std::fabs((double)got_w[j] - want_w[j]) / max_of(std::fabs((double)want_w[j]), 1e-30);
    worst = max_of(worst, rel);
  }
  CHECK_MSG(worst <= 2e-6, std::string(t.name) + " " + what + ": weights differ by " + std::to_string(worst));
  return worst;
}

}  // namespace

// ---- the reference against hand-computed values ----

TEST(router, reference_ties_choose_the_lower_index_in_descending_order) {
  const float logits[6] = {1.0f, 3.0f, 2.0f, 3.0f, -5.0f, 3.0f};
  int32_t idx[4];
  float w[4];
  kReferenceKernels.route_topk(logits, 6, 4, false, idx, w);
  const int32_t want[4] = {1, 3, 5, 2};
  for (int j = 0; j < 4; ++j) CHECK_EQ(idx[j], want[j]);
  const float same[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  kReferenceKernels.route_topk(same, 4, 2, true, idx, w);
  CHECK_EQ(idx[0], 0);
  CHECK_EQ(idx[1], 1);
  CHECK(std::fabs(w[0] - 0.5f) < 1e-7f && std::fabs(w[1] - 0.5f) < 1e-7f);
}

TEST(router, reference_renormalized_weights_sum_to_one) {
  std::vector<float> logits(128);
  fill_normal(logits.data(), 128, 2.0f);
  int32_t idx[8];
  float w[8];
  kReferenceKernels.route_topk(logits.data(), 128, 8, true, idx, w);
  double sum = 0;
  for (float v : w) sum += v;
  CHECK(std::fabs(sum - 1.0) < 1e-6);
  for (int j = 1; j < 8; ++j) CHECK(w[j] <= w[j - 1]);
  // ln 3 apart: weights 3/4 and 1/4.
  const float two[3] = {std::log(3.0f), 0.0f, -10.0f};
  kReferenceKernels.route_topk(two, 3, 2, true, idx, w);
  CHECK(std::fabs(w[0] - 0.75f) < 1e-6f && std::fabs(w[1] - 0.25f) < 1e-6f);
}

TEST(router, reference_plain_weights_are_the_full_softmax_at_the_chosen_experts) {
  std::vector<float> logits(32);
  fill_normal(logits.data(), 32, 2.0f);
  int32_t idx[4];
  float w[4];
  kReferenceKernels.route_topk(logits.data(), 32, 4, false, idx, w);
  const std::vector<double> p = full_softmax(logits.data(), 32);
  for (int j = 0; j < 4; ++j) CHECK(std::fabs(w[j] - p[(size_t)idx[j]]) <= 1e-6 * p[(size_t)idx[j]]);
  // And they are the 4 largest probabilities.
  int larger = 0;
  for (double v : p) larger += v > p[(size_t)idx[3]];
  CHECK_EQ(larger, 3);
}

// ---- every table against the reference ----

TEST(router, tables_choose_the_same_experts_on_random_logits) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    double worst = 0;
    for (const Config& c : kConfigs) {
      for (bool renorm : {false, true}) {
        for (int rep = 0; rep < 50; ++rep) {
          std::vector<float> logits((size_t)c.experts);
          fill_normal(logits.data(), c.experts, rep % 2 ? 1.0f : 8.0f);
          worst = max_of(worst, compare(*t, logits, c.k, renorm, "random"));
        }
      }
    }
    std::printf("     route_topk %-12s max rel weight err %.3g\n", t->name, worst);
  }
}

TEST(router, tables_break_ties_like_the_reference) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    for (const Config& c : kConfigs) {
      for (bool renorm : {false, true}) {
        // Logits on a coarse grid: many ties, in every position of the list.
        for (int rep = 0; rep < 30; ++rep) {
          std::vector<float> logits((size_t)c.experts);
          fill_uniform(logits.data(), c.experts, -2.0f, 2.0f);
          for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
          compare(*t, logits, c.k, renorm, "grid");
        }
        std::vector<float> equal((size_t)c.experts, 0.25f);
        compare(*t, equal, c.k, renorm, "all equal");
        std::vector<float> inf((size_t)c.experts, -INFINITY);
        inf[(size_t)(c.experts / 2)] = 1.0f;
        compare(*t, inf, c.k, renorm, "-inf");
        std::vector<float> desc((size_t)c.experts), asc((size_t)c.experts);
        for (int64_t e = 0; e < c.experts; ++e) desc[(size_t)e] = -(float)e, asc[(size_t)e] = (float)e;
        compare(*t, desc, c.k, renorm, "descending");
        compare(*t, asc, c.k, renorm, "ascending");
      }
    }
  }
}

TEST(router, tables_follow_the_reference_on_nan_logits) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<float> logits(32);
    fill_normal(logits.data(), 32, 1.0f);
    logits[5] = NAN;
    std::vector<int32_t> a(4), b(4);
    std::vector<float> wa(4), wb(4);
    kReferenceKernels.route_topk(logits.data(), 32, 4, true, a.data(), wa.data());
    t->route_topk(logits.data(), 32, 4, true, b.data(), wb.data());
    for (int j = 0; j < 4; ++j) CHECK_EQ(a[j], b[j]);
  }
}
