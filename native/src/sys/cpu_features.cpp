#include "sys/cpu_features.h"

#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace edgellm {

static void read_cpuinfo(CpuFeatures& f) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id)
  std::string phys, core;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (f.model.empty() && (key == "model name" || key == "Model")) f.model = value;
    if (key == "physical id") phys = value;
    if (key == "core id") {
      core = value;
      cores.insert({phys, core});
    }
  }
  if (!cores.empty()) f.physical_cores = (int)cores.size();
}

#if defined(__x86_64__)
// XCR0 bits 1, 2 (SSE, AVX state) and 5, 6, 7 (opmask, upper halves of zmm0-15, zmm16-31): the
// OS saves all of them on a context switch. Read with xgetbv only when CPUID says OSXSAVE.
static bool os_saves_zmm() {
  unsigned eax, ebx, ecx, edx;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  if (!(ecx & (1u << 27))) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const unsigned need = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7);
  return (lo & need) == need;
}
#endif

static CpuFeatures detect() {
  CpuFeatures f;
  unsigned hw = std::thread::hardware_concurrency();
  f.logical_cores = hw ? (int)hw : 1;
  f.physical_cores = f.logical_cores;
#if defined(__x86_64__)
  f.arch = "x86_64";
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && os_saves_zmm();
#elif defined(__aarch64__)
  f.arch = "aarch64";
  f.neon = true;
#if defined(__linux__)
  f.dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#else
  f.arch = "other";
#endif
  read_cpuinfo(f);
  if (f.physical_cores > f.logical_cores || f.physical_cores < 1) f.physical_cores = f.logical_cores;
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace edgellm
