// ISA-neutral parts of the fast GEMMs (avx2/gemm.cpp, neon/gemm.cpp, neon/gemm_dotprod.cpp):
// unpacking GemmArgs into row / column pointers, the order in which register tiles cover the
// output, and the float-weight tile over a per-ISA vector type. Header-only, no intrinsics: a fast-path file supplies the Tile (its register
// tile of R rows x C columns) and instantiates the driver with its own ISA flags.
//
// Everything here is in an anonymous namespace on purpose: each translation unit gets its own
// internal copy compiled with that file's flags (-mavx2, armv8-a, armv8.2-a+dotprod), so the
// linker can never merge an inline function built for one ISA into a caller built for another.
#pragma once
#include <cstdint>

#include "kernels/kernels.h"

namespace edgellm::common {
namespace {

// Weight row `row` of a as T elements (T: a block type or the float element type).
template <class T>
inline const T* w_row(const GemmArgs& a, int64_t row) {
  return reinterpret_cast<const T*>(a.w + row * a.w_row_bytes);
}

// The R weight rows r, r + rstep, ..., r + (R - 1) * rstep of a tile.
template <class T, int R>
inline void w_rows(const GemmArgs& a, int64_t r, int64_t rstep, const T* (&w)[R]) {
  for (int i = 0; i < R; ++i) w[i] = w_row<T>(a, r + i * rstep);
}

// Activation column c (Q8_0 blocks for the quantized GEMMs, floats for the others).
template <class T>
inline const T* x_col(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const T*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}

// The C activation columns c..c+C-1 of a tile.
template <class T, int C>
inline void x_cols(const GemmArgs& a, int64_t c, const T* (&x)[C]) {
  for (int j = 0; j < C; ++j) x[j] = x_col<T>(a, c + j);
}

// Where y[c][r] lives.
inline float* y_at(const GemmArgs& a, int64_t c, int64_t r) { return a.y + c * a.y_col_stride + r; }

// Runs Tile::run<R, C>(a, r, c) for columns c..c+C-1 of rows r..r+R-1 over all columns:
// 4-column tiles, then one 1- to 3-column tile for the rest.
template <class Tile, int R>
inline void run_columns(const GemmArgs& a, int64_t r) {
  int64_t c = 0;
  for (; c + 4 <= a.ncols; c += 4) Tile::template run<R, 4>(a, r, c);
  switch (a.ncols - c) {
    case 1: Tile::template run<R, 1>(a, r, c); break;
    case 2: Tile::template run<R, 2>(a, r, c); break;
    case 3: Tile::template run<R, 3>(a, r, c); break;
    default: break;
  }
}

// Runs Tile::run<R, C>(a, r, c, rstep) (rows r + i * rstep, i < R; columns c..c+C-1) over rows
// [r0, r1) and all columns. Decode (ncols == 1) takes 4 rows a quarter of the range apart
// (rstep = q): rows i, i + q, i + 2q, i + 3q together, so each of the 4 weight streams runs
// through contiguous memory from row to row, one stream per 4 KiB page, which is what hardware
// stream prefetchers track (4 adjacent rows would put 2 or more streams in most pages). A GEMM
// takes kGemmRows adjacent rows x 4 columns. The edges use smaller tiles.
template <class Tile, int kGemmRows>
void drive(const GemmArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  if (a.ncols == 1) {
    const int64_t q = (r1 - r0) / 4;
    for (int64_t i = 0; i < q; ++i) Tile::template run<4, 1>(a, r0 + i, 0, q);
    for (r = r0 + 4 * q; r < r1; ++r) Tile::template run<1, 1>(a, r, 0);
    return;
  }
  for (; r + kGemmRows <= r1; r += kGemmRows) run_columns<Tile, kGemmRows>(a, r);
  for (; r < r1; ++r) run_columns<Tile, 1>(a, r);
}

// drive() for GEMMs of many columns with the loops swapped inside blocks of kRowBlock rows: each
// 4-column tile runs over the block's row tiles before the next, so its activation columns stay
// in L1 while the block's weights (a few tens of KiB) come from L2; drive() instead runs every
// column tile per row tile, streaming all ncols columns from L2 once per kGemmRows rows.
// Up to 4 columns (one column tile) and decode go through drive() unchanged.
template <class Tile, int kGemmRows, int kRowBlock = 16>
void drive_row_blocks(const GemmArgs& a, int64_t r0, int64_t r1) {
  static_assert(kRowBlock % kGemmRows == 0, "a row block is whole row tiles");
  if (a.ncols <= 4) {
    drive<Tile, kGemmRows>(a, r0, r1);
    return;
  }
  for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
    const int64_t b1 = b0 + kRowBlock < r1 ? b0 + kRowBlock : r1;
    for (int64_t c = 0; c + 4 <= a.ncols; c += 4) {
      int64_t r = b0;
      for (; r + kGemmRows <= b1; r += kGemmRows) Tile::template run<kGemmRows, 4>(a, r, c);
      for (; r < b1; ++r) Tile::template run<1, 4>(a, r, c);
    }
    const int64_t tail = a.ncols % 4;
    if (tail) {
      GemmArgs t = a;  // the last `tail` columns as their own GEMM
      t.x = static_cast<const uint8_t*>(a.x) + (a.ncols - tail) * a.x_col_bytes;
      t.y = a.y + (a.ncols - tail) * a.y_col_stride;
      t.ncols = tail;
      for (int64_t r = b0; r + kGemmRows <= b1; r += kGemmRows) run_columns<Tile, kGemmRows>(t, r);
      for (int64_t r = b0 + (b1 - b0) / kGemmRows * kGemmRows; r < b1; ++r) run_columns<Tile, 1>(t, r);
    }
  }
}

// ---- float weights -------------------------------------------------------------------------
// The f32 / f16 / bf16 GEMM tile: R x C vector accumulators over k in steps of Vec::kLanes, then
// a horizontal sum and a scalar tail per output. A fast path supplies
//   struct Vec {                   // its float vector
//     using V = ...;
//     static constexpr int kLanes;
//     static V zero();
//     static V load(const float* p);          // kLanes floats
//     static V fma(V acc, V w, V x);          // acc + w * x, fused
//     static float hsum(V v);
//   };
//   struct Load {                  // one weight element type
//     using T = ...;
//     static Vec::V load(const T* p);         // kLanes elements as floats
//     static float load1(const T* p);
//   };
template <class Vec, class L>
struct FloatTile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    using T = typename L::T;
    using V = typename Vec::V;
    const T* w[R];
    const float* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    V acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = Vec::zero();
    int64_t e = 0;
    for (; e + Vec::kLanes <= a.k; e += Vec::kLanes) {
      V wv[R];
      for (int i = 0; i < R; ++i) wv[i] = L::load(w[i] + e);
      for (int j = 0; j < C; ++j) {
        const V xv = Vec::load(x[j] + e);
        for (int i = 0; i < R; ++i) acc[i][j] = Vec::fma(acc[i][j], wv[i], xv);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) {
        float sum = Vec::hsum(acc[i][j]);
        for (int64_t t = e; t < a.k; ++t) sum += L::load1(w[i] + t) * x[j][t];
        a.y[(c + j) * a.y_col_stride + r + i * rstep] = sum;
      }
  }
};

}  // namespace
}  // namespace edgellm::common
