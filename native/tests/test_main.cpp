#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "kernels/kernels.h"
#include "sys/cpu_features.h"
#include "test.h"

namespace edgellm::test {

std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
int& failures() {
  static int n = 0;
  return n;
}
void fail(const char* file, int line, const std::string& msg) {
  ++failures();
  std::fprintf(stderr, "    %s:%d: %s\n", file, line, msg.c_str());
}

bool near_all(const float* a, const float* b, int64_t n, double atol, double rtol, std::string* why) {
  double maxb = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = std::fabs((double)b[i]);
    if (v > maxb) maxb = v;  // not std::fmax: aarch64 GCC 12 -O3 crashes (ICE) vectorizing it here
  }
  const double tol = atol + rtol * maxb;
  double worst = 0;
  int64_t wi = -1;
  for (int64_t i = 0; i < n; ++i) {
    double d = std::fabs((double)a[i] - (double)b[i]);
    if (std::isnan(a[i]) != std::isnan(b[i])) d = INFINITY;
    if (d > worst || (wi < 0 && d > tol)) { worst = d; wi = i; }
  }
  if (worst <= tol) return true;
  char buf[256];
  std::snprintf(buf, sizeof buf, "mismatch at [%lld]: got %.9g, want %.9g (|diff| %.3g > tol %.3g, n=%lld)",
                (long long)wi, (double)a[wi], (double)b[wi], worst, tol, (long long)n);
  *why = buf;
  return false;
}

std::mt19937& rng() {
  static std::mt19937 g(12345);
  return g;
}

// Before each test: rng() seeded from the test's own name (FNV-1a), so a test draws the same data
// whether it runs in the whole suite or alone (`edgellm_tests SUITE`): a failure in CI reproduces
// with a filter, and adding a test does not change the data of the ones after it.
void seed_for(const char* suite, const char* name) {
  uint32_t h = 2166136261u;
  for (const char* s : {suite, ".", name})
    for (; *s; ++s) h = (h ^ (uint8_t)*s) * 16777619u;
  rng().seed(h);
}
void fill_uniform(float* x, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < n; ++i) x[i] = d(rng());
}
void fill_normal(float* x, int64_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  for (int64_t i = 0; i < n; ++i) x[i] = d(rng());
}

#ifndef EDGELLM_SHARED_MODELS_DIR
#define EDGELLM_SHARED_MODELS_DIR "../shared/models"
#endif

std::string shared_models_dir(const char* what) {
  const std::string dir = EDGELLM_SHARED_MODELS_DIR;
  struct stat st;
  if (stat((dir + "/stories260K.gguf").c_str(), &st) == 0) return dir;
  const char* ci = std::getenv("CI");
  if (ci && std::string(ci) == "true") {
    fail(__FILE__, __LINE__, "../shared/models not found at " + dir + " and CI=true: the real-model tests must run in CI");
  } else {
    std::printf("     SKIPPED: ../shared/models not found (%s); real-model %s tests did not run\n", dir.c_str(), what);
  }
  return "";
}

}  // namespace edgellm::test

int main(int argc, char** argv) {
  using namespace edgellm;
  const char* only = argc > 1 ? argv[1] : nullptr;
  const CpuFeatures& f = cpu_features();
  std::printf("cpu: %s (%s) avx2=%d fma=%d f16c=%d neon=%d dotprod=%d\n", f.model.c_str(), f.arch.c_str(),
              f.avx2, f.fma, f.f16c, f.neon, f.dotprod);
  std::printf("kernel tables under test:");
  for (const KernelTable* t : runnable_kernel_tables()) std::printf(" %s", t->name);
  std::printf("\n");
  int passed = 0, failed = 0;
  for (auto& c : test::registry()) {
    if (only && std::strcmp(only, c.suite) != 0) continue;
    test::failures() = 0;
    test::seed_for(c.suite, c.name);
    try {
      c.fn();
    } catch (const std::exception& e) {
      test::fail(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
    }
    if (test::failures() == 0) {
      ++passed;
      std::printf("ok   %s.%s\n", c.suite, c.name);
    } else {
      ++failed;
      std::printf("FAIL %s.%s\n", c.suite, c.name);
    }
    std::fflush(stdout);
  }
  if (passed + failed == 0) {
    std::printf("no test matched '%s'\n", only ? only : "");
    return 1;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
