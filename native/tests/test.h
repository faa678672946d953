// A minimal test harness: TEST(suite, name) registers a case; `edgellm_tests [suite]` runs them.
// Assertions record a failure with file:line and keep going inside the case.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace edgellm::test {

struct Case {
  const char* suite;
  const char* name;
  std::function<void()> fn;
};
std::vector<Case>& registry();
int& failures();  // failures in the running case

struct Registrar {
  Registrar(const char* suite, const char* name, std::function<void()> fn) {
    registry().push_back({suite, name, std::move(fn)});
  }
};

void fail(const char* file, int line, const std::string& msg);

// max |a - b| / (atol + rtol * max|b|) over n values; <= 1 passes. Reports the worst index.
bool near_all(const float* a, const float* b, int64_t n, double atol, double rtol, std::string* why);

std::mt19937& rng();
// Seeds rng() from the test's suite and name; the runner calls it before each test.
void seed_for(const char* suite, const char* name);
void fill_uniform(float* x, int64_t n, float lo, float hi);
void fill_normal(float* x, int64_t n, float stddev);

// ../shared/models (EDGELLM_SHARED_MODELS_DIR) when it holds stories260K.gguf; otherwise "" after
// a failure when CI=true, or else a SKIPPED line naming the `what` tests that did not run.
std::string shared_models_dir(const char* what);

}  // namespace edgellm::test

#define EDGELLM_CAT2(a, b) a##b
#define EDGELLM_CAT(a, b) EDGELLM_CAT2(a, b)
#define TEST(suite, name)                                                              \
  static void suite##_##name();                                                        \
  static ::edgellm::test::Registrar EDGELLM_CAT(reg_##suite##_##name, __LINE__)(#suite, #name, \
                                                                         suite##_##name); \
  static void suite##_##name()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) ::edgellm::test::fail(__FILE__, __LINE__, "CHECK(" #cond ") failed"); \
  } while (0)

#define CHECK_MSG(cond, msg)                                                          \
  do {                                                                                \
    if (!(cond)) ::edgellm::test::fail(__FILE__, __LINE__, std::string(msg));        \
  } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    auto va_ = (a);                                                                      \
    auto vb_ = (b);                                                                      \
    if (!(va_ == vb_))                                                                   \
      ::edgellm::test::fail(__FILE__, __LINE__,                                          \
                            "CHECK_EQ(" #a ", " #b ") failed: " + std::to_string(va_) + \
                                " != " + std::to_string(vb_));                           \
  } while (0)

// Arrays agree within atol + rtol * max|expected|.
#define CHECK_NEAR_ALL(actual, expected, n, atol, rtol)                               \
  do {                                                                                \
    std::string why_;                                                                 \
    if (!::edgellm::test::near_all((actual), (expected), (n), (atol), (rtol), &why_)) \
      ::edgellm::test::fail(__FILE__, __LINE__, why_);                                \
  } while (0)
