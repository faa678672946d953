// Plain C++ reference kernels: the definition of what every fast path must compute.
#pragma once
#include "kernels/kernels.h"

namespace edgellm::ref {
#include "kernels/kernel_decls.inc"
}  // namespace edgellm::ref
