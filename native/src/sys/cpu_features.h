// What this CPU can run, read once at startup.
#pragma once
#include <string>

namespace edgellm {

struct CpuFeatures {
  bool avx2 = false;     // x86-64: AVX2
  bool fma = false;      // x86-64: FMA3
  bool f16c = false;     // x86-64: F16C
  bool avx512vnni = false;  // x86-64: AVX512F+BW+VL+VNNI, and XCR0 says the OS saves zmm state
  bool neon = false;     // aarch64: Advanced SIMD (always on aarch64)
  bool dotprod = false;  // aarch64: SDOT/UDOT (HWCAP_ASIMDDP), ARMv8.2 Cortex-A76 and later
  std::string arch;      // "x86_64", "aarch64", ...
  std::string model;     // CPU model name from /proc/cpuinfo when available
  int logical_cores = 1;
  int physical_cores = 1;
};

const CpuFeatures& cpu_features();

}  // namespace edgellm
