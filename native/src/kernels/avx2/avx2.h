// x86-64 fast paths, compiled with -mavx2 -mfma -mf16c (only called when the CPU has all three).
#pragma once
#include "kernels/kernels.h"

namespace edgellm::avx2 {
#include "kernels/kernel_decls.inc"
}  // namespace edgellm::avx2
