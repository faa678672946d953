// <immintrin.h> for the AVX-512 kernels, without GCC 12's false uninitialized warnings.
//
// GCC 12's avx512fintrin.h builds its "undefined" vectors (the pass-through operand of unmasked
// intrinsics such as _mm512_cvtepi32_ps or _mm512_castsi256_si512) by self-initialization,
// `__m512i __Y = __Y;`. Once inlined into a kernel, -Wall reports each use as "'__Y' may be used
// uninitialized" (GCC bug 105593, fixed in GCC 13): about 1,400 lines of warnings per build and
// none about our code. The warning's location is inside the header, so silencing it while the
// header is read keeps -Wuninitialized fully active for the kernels' own code. Every AVX-512 file
// includes this first, before any header that could include <immintrin.h> unwrapped.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
