// AVX-512 VNNI (vpdpbusd) Q4_0 x Q8_0 GEMM for several sequences decoding together and for prompt
// processing; compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni (plus the AVX2 set) and called only when the CPU
// has them and the OS saves zmm state (dispatch.cpp).
//
// The register tile is 16 weight rows (one zmm lane per row) x up to 8 activation columns. Each
// dword lane holds 4 consecutive weights of its row, so one vpdpbusd with the column's 4 matching
// activation bytes broadcast to every lane ({1to16} memory operand) adds 4 products to each of
// 16 rows, and a block of 32 weights is 8 vpdpbusd into one int32 accumulator per column with no
// horizontal sum: then one convert and one FMA with the 16 row scales x the column's scale.
// That is 11 vector uops per 16 x 32 multiply-adds, where the AVX2 tile (maddubs, madd,
// convert, FMA per 2 blocks of 1 row x 1 column) needs ~6 per 64.
//
// The weights are Q4_0 rows as stored in the file (mmap'ed, read-only), so every 16-row block is
// regrouped into that lane-per-row layout before use. For more than 8 columns (prompt
// processing) each 16-row tile regroups a slab of kSlab blocks on the stack (per block: one
// gather for the 16 scales; the 16 rows' nibbles loaded 4 rows to a register and transposed
// with 12 permutes; unpacked once) and then serves
// every column from it: the regrouping is paid once per 16 rows x kSlab blocks, the
// multiply-adds once per column. vpdpbusd multiplies unsigned by signed bytes, so the weights
// go in as their unsigned nibbles n and each block's sum is corrected by -8 x sum(x), computed
// once per column and block for the whole call (shared by every row tile of the call).
//
// 2 to 8 columns keep each regrouped block in registers instead (gemm_in_registers, below):
// the stack round trip cost more than the multiply-adds at so few columns. One column (decode of
// one sequence) goes to the AVX2 GEMV, which streams rows for bandwidth: the regrouping costs
// more than it saves for a single column.
#include "kernels/avx512/intrinsics.h"  // first: see there

#include "kernels/avx2/avx2.h"
#include "kernels/avx512/avx512.h"
#include "kernels/common/gemm_tiling.h"

namespace edgellm::avx512 {

namespace {

constexpr int kRows = 16;     // weight rows per tile: one zmm lane each
constexpr int kMaxCols = 8;   // columns per register tile
constexpr int kSlab = 32;     // blocks regrouped at a time (1024 weights of 16 rows: 16 KiB + scales)

// A local min: no std:: template instantiated with this file's AVX-512 flags (the linker could
// hand such a copy to code that runs on CPUs without AVX-512).
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// One slab of a 16-row tile, regrouped: for block b and dword group g (weights 4g..4g+3 in the
// low nibbles of qs, 16+4g..16+4g+3 in the high ones), lane i holds row i's 4 unpacked nibbles.
struct alignas(64) Slab {
  __m512i lo[kSlab][4];
  __m512i hi[kSlab][4];
  __m512 d[kSlab];  // row scales as f32
};

// Per call, per column and block of the current slab: -8 x sum of the block's 32 activations,
// and the block's scale as f32.
template <int NC, int NB>
struct alignas(64) ColumnSums {
  int32_t corr[NC][NB];
  float d[NC][NB];
};
using ColumnSlab = ColumnSums<kMaxGemmCols, kSlab>;

template <class CS>
void fill_column_slab(const GemmArgs& a, int64_t b0, int nbs, CS& cs) {
  const __m256i ones = _mm256_set1_epi8(1);
  for (int64_t c = 0; c < a.ncols; ++c) {
    const block_q8_0* x = common::x_col<block_q8_0>(a, c) + b0;
    for (int j = 0; j < nbs; ++j) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j].qs));
      const __m256i s8 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);  // 8 partial sums
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
      cs.corr[c][j] = -8 * _mm_cvtsi128_si32(s4);
      cs.d[c][j] = _cvtsh_ss(x[j].d);
    }
  }
}

// k in slabs of NB blocks: the columns' block sums of each slab into cs, then
// f(a with x advanced to the slab's first block, b0, nbs).
template <int NB, class CS, class F>
void for_each_column_slab(const GemmArgs& a, CS& cs, F&& f) {
  const int64_t nb = a.k / kQK;
  for (int64_t b0 = 0; b0 < nb; b0 += NB) {
    const int nbs = (int)min64(NB, nb - b0);
    fill_column_slab(a, b0, nbs, cs);
    GemmArgs as = a;
    as.x = static_cast<const uint8_t*>(a.x) + b0 * sizeof(block_q8_0);
    f(as, b0, nbs);
  }
}

// Regroups blocks [b0, b0 + nbs) of rows r .. r + nrows - 1 (lanes past nrows repeat row r; their
// results are never stored).
void fill_slab(const GemmArgs& a, int64_t r, int nrows, int64_t b0, int nbs, Slab& s) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i valid = _mm512_maskz_mov_epi32((__mmask16)((1u << nrows) - 1), lane);
  const __m512i offs = _mm512_mullo_epi32(valid, _mm512_set1_epi32((int)a.w_row_bytes));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const uint8_t* base = a.w + r * a.w_row_bytes + b0 * sizeof(block_q4_0);
  const uint8_t* row[kRows];
  for (int i = 0; i < kRows; ++i) row[i] = base + (i < nrows ? i : 0) * a.w_row_bytes;
  // idx[g]: dwords 0..3 = dword g of the 4 rows (128-bit lanes) of the first source, 4..7 = of the second.
  __m512i idx[4];
  for (int g = 0; g < 4; ++g)
    idx[g] = _mm512_setr_epi32(g, 4 + g, 8 + g, 12 + g, 16 + g, 20 + g, 24 + g, 28 + g, g, g, g, g, g, g, g, g);
  for (int j = 0; j < nbs; ++j) {
    const int64_t off = j * (int64_t)sizeof(block_q4_0);
    const __m512i dh = _mm512_i32gather_epi32(offs, base + off, 1);  // low 16 bits: the f16 scale
    s.d[j] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dh));
    // z[q]: rows 4q .. 4q+3, one 16-byte qs per 128-bit lane.
    __m512i z[4];
    for (int q = 0; q < 4; ++q) {
      auto ld = [&](int i) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + off + 2)); };
      __m512i v = _mm512_castsi128_si512(ld(4 * q));
      v = _mm512_inserti32x4(v, ld(4 * q + 1), 1);
      v = _mm512_inserti32x4(v, ld(4 * q + 2), 2);
      z[q] = _mm512_inserti32x4(v, ld(4 * q + 3), 3);
    }
    for (int g = 0; g < 4; ++g) {
      const __m512i r01 = _mm512_permutex2var_epi32(z[0], idx[g], z[1]);  // rows 0..7 in dwords 0..7
      const __m512i r23 = _mm512_permutex2var_epi32(z[2], idx[g], z[3]);  // rows 8..15
      const __m512i q = _mm512_shuffle_i64x2(r01, r23, _MM_SHUFFLE(1, 0, 1, 0));
      s.lo[j][g] = _mm512_and_si512(q, low4);
      s.hi[j][g] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
    }
  }
}

// Asks for the slab's bytes of rows r .. r + nrows - 1 ahead of fill_slab: its gathers touch 16
// rows at once, which the hardware prefetchers do not follow, and wait on memory one gather at a
// time; the prefetches go out together (and for the next tile, while this one computes).
void prefetch_slab(const GemmArgs& a, int64_t r, int64_t nrows, int64_t b0, int nbs) {
  const int64_t bytes = nbs * (int64_t)sizeof(block_q4_0);
  for (int64_t i = 0; i < nrows; ++i) {
    const char* p = reinterpret_cast<const char*>(a.w + (r + i) * a.w_row_bytes + b0 * sizeof(block_q4_0));
    for (int64_t off = 0; off < bytes + 63; off += 64) _mm_prefetch(p + (off < bytes ? off : bytes - 1), _MM_HINT_T0);
  }
}

inline __m512i bcast4(const int8_t* p) { return _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(p)); }

// Columns c .. c + C - 1 of the tile's 16 rows over the slab; accumulates into y (first slab:
// stores). mask selects the rows that exist.
template <int C>
void tile_columns(const GemmArgs& a, const Slab& s, const ColumnSlab& cs, int64_t r, int64_t c, int nbs, bool first,
                  __mmask16 mask) {
  const block_q8_0* x[C];
  common::x_cols(a, c, x);
  __m512 acc[C];
  for (int j = 0; j < C; ++j)
    acc[j] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, common::y_at(a, c + j, r));
  for (int b = 0; b < nbs; ++b) {
    const __m512 dw = s.d[b];
    for (int j = 0; j < C; ++j) {
      const int8_t* q = x[j][b].qs;
      __m512i i = _mm512_set1_epi32(cs.corr[c + j][b]);
      i = _mm512_dpbusd_epi32(i, s.lo[b][0], bcast4(q + 0));
      i = _mm512_dpbusd_epi32(i, s.lo[b][1], bcast4(q + 4));
      i = _mm512_dpbusd_epi32(i, s.lo[b][2], bcast4(q + 8));
      i = _mm512_dpbusd_epi32(i, s.lo[b][3], bcast4(q + 12));
      i = _mm512_dpbusd_epi32(i, s.hi[b][0], bcast4(q + 16));
      i = _mm512_dpbusd_epi32(i, s.hi[b][1], bcast4(q + 20));
      i = _mm512_dpbusd_epi32(i, s.hi[b][2], bcast4(q + 24));
      i = _mm512_dpbusd_epi32(i, s.hi[b][3], bcast4(q + 28));
      const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(cs.d[c + j][b]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), sc, acc[j]);
    }
  }
  for (int j = 0; j < C; ++j) _mm512_mask_storeu_ps(common::y_at(a, c + j, r), mask, acc[j]);
}

// ---- 2 to 8 columns (that many sequences decoding together) ----------------------------------
// A register tile: each block of 16 rows is regrouped straight into 8 registers and serves every
// column before the next block is loaded, so nothing goes through the stack. The regrouping
// here puts row 4q + L of the tile's z[q] in 128-bit lane L and transposes 4x4 dwords inside
// each 128-bit lane (8 unpacks, no lane-crossing permutes), which leaves row lane_row(l) in dword
// lane l; accumulators are permuted back to row order once per tile (the mapping is its own
// inverse). Weights are read in row order, 16 rows of up to kRegSlab blocks per tile, and the next
// tile's bytes are prefetched a few lines per block while this one computes: a burst of
// prefetches per tile (or none) leaves this loop waiting on memory at a third of its speed.
inline int lane_row(int l) { return 4 * (l % 4) + l / 4; }

constexpr int kRegSlab = 256;  // blocks per column-sum slab: k up to 8192 is one slab (one pass per tile)
using RegColumns = ColumnSums<kMaxCols, kRegSlab>;

// Columns 0..C-1 of rows [r, r + nrows) over blocks [b0, b0 + nbs) (a's x already advanced to
// b0); accumulates into y unless first. pf: the next tile's first row at b0 (null: none), with
// pf_rows rows.
template <int C>
void tile_in_registers(const GemmArgs& a, const RegColumns& cs, int64_t r, int nrows, int64_t b0, int nbs, bool first,
                       const uint8_t* pf, int pf_rows) {
  const __mmask16 mask = (__mmask16)((1u << nrows) - 1);
  alignas(64) int32_t offs_a[kRows], perm_a[kRows];
  for (int l = 0; l < kRows; ++l) {
    const int row = lane_row(l);
    offs_a[l] = (row < nrows ? row : 0) * (int32_t)a.w_row_bytes;
    perm_a[l] = row;
  }
  const __m512i offs = _mm512_load_si512(offs_a);
  const __m512i perm = _mm512_load_si512(perm_a);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const uint8_t* base = a.w + r * a.w_row_bytes + b0 * sizeof(block_q4_0);
  const uint8_t* qs[kRows];  // each row's first qs byte (rows past nrows repeat row 0)
  for (int i = 0; i < kRows; ++i) qs[i] = base + (i < nrows ? i : 0) * a.w_row_bytes + 2;
  // The next tile, as pf_rows x lines_per_row cache lines spread evenly over this tile's blocks.
  const int64_t seg = nbs * (int64_t)sizeof(block_q4_0);
  const int lines_per_row = (int)((seg + 63) / 64) + 1;
  const int pf_lines = pf ? pf_rows * lines_per_row : 0;

  const block_q8_0* x[C];
  common::x_cols(a, 0, x);
  __m512 acc[C];
  for (int j = 0; j < C; ++j)
    acc[j] = first ? _mm512_setzero_ps() : _mm512_permutexvar_ps(perm, _mm512_maskz_loadu_ps(mask, common::y_at(a, j, r)));
  for (int b = 0; b < nbs; ++b) {
    const int64_t off = b * (int64_t)sizeof(block_q4_0);
    for (int l = b * pf_lines / nbs, e = (b + 1) * pf_lines / nbs; l < e; ++l) {
      const int64_t o = (int64_t)(l % lines_per_row) * 64;
      _mm_prefetch(reinterpret_cast<const char*>(pf + (l / lines_per_row) * (int64_t)a.w_row_bytes + (o < seg ? o : seg - 1)),
                   _MM_HINT_T0);
    }
    const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(offs, base + off, 1)));
    __m512i z[4];
    for (int q = 0; q < 4; ++q) {
      auto ld = [&](int i) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs[i] + off)); };
      __m512i v = _mm512_broadcast_i32x4(ld(4 * q));
      v = _mm512_mask_broadcast_i32x4(v, 0x00F0, ld(4 * q + 1));
      v = _mm512_mask_broadcast_i32x4(v, 0x0F00, ld(4 * q + 2));
      z[q] = _mm512_mask_broadcast_i32x4(v, 0xF000, ld(4 * q + 3));
    }
    const __m512i t01l = _mm512_unpacklo_epi32(z[0], z[1]), t01h = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t23l = _mm512_unpacklo_epi32(z[2], z[3]), t23h = _mm512_unpackhi_epi32(z[2], z[3]);
    const __m512i t[4] = {_mm512_unpacklo_epi64(t01l, t23l), _mm512_unpackhi_epi64(t01l, t23l),
                          _mm512_unpacklo_epi64(t01h, t23h), _mm512_unpackhi_epi64(t01h, t23h)};
    __m512i w[8];  // w[g]: weights 4g..4g+3 (low nibbles); w[4 + g]: 16 + 4g.. (high nibbles)
    for (int g = 0; g < 4; ++g) {
      w[g] = _mm512_and_si512(t[g], low4);
      w[4 + g] = _mm512_and_si512(_mm512_srli_epi16(t[g], 4), low4);
    }
    for (int j = 0; j < C; ++j) {
      const int8_t* q = x[j][b].qs;
      __m512i i = _mm512_set1_epi32(cs.corr[j][b]);
      for (int g = 0; g < 8; ++g) i = _mm512_dpbusd_epi32(i, w[g], bcast4(q + 4 * g));
      const __m512 sc = _mm512_mul_ps(d, _mm512_set1_ps(cs.d[j][b]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), sc, acc[j]);
    }
  }
  for (int j = 0; j < C; ++j) _mm512_mask_storeu_ps(common::y_at(a, j, r), mask, _mm512_permutexvar_ps(perm, acc[j]));
}

template <int C>
void gemm_in_registers(const GemmArgs& a, int64_t r0, int64_t r1) {
  RegColumns cols;
  for_each_column_slab<kRegSlab>(a, cols, [&](const GemmArgs& as, int64_t b0, int nbs) {
    prefetch_slab(a, r0, min64(kRows, r1 - r0), b0, nbs);  // the first tile has no predecessor to do it
    for (int64_t r = r0; r < r1; r += kRows) {
      const int64_t next = r + kRows;
      const uint8_t* pf = next < r1 ? a.w + next * a.w_row_bytes + b0 * sizeof(block_q4_0) : nullptr;
      tile_in_registers<C>(as, cols, r, (int)min64(kRows, r1 - r), b0, nbs, b0 == 0, pf, (int)min64(kRows, r1 - next));
    }
  });
}

}  // namespace

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) {
  switch (a.ncols) {
    case 1: avx2::gemm_q4_0(a, r0, r1); return;
    case 2: gemm_in_registers<2>(a, r0, r1); return;
    case 3: gemm_in_registers<3>(a, r0, r1); return;
    case 4: gemm_in_registers<4>(a, r0, r1); return;
    case 5: gemm_in_registers<5>(a, r0, r1); return;
    case 6: gemm_in_registers<6>(a, r0, r1); return;
    case 7: gemm_in_registers<7>(a, r0, r1); return;
    case 8: gemm_in_registers<8>(a, r0, r1); return;
    default: break;
  }
  Slab slab;
  ColumnSlab cols;
  for_each_column_slab<kSlab>(a, cols, [&](const GemmArgs& as, int64_t b0, int nbs) {
    for (int64_t r = r0; r < r1; r += kRows) {
      const int nrows = (int)min64(kRows, r1 - r);
      const __mmask16 mask = (__mmask16)((1u << nrows) - 1);
      if (r == r0) prefetch_slab(a, r, nrows, b0, nbs);
      if (r + kRows < r1) prefetch_slab(a, r + kRows, min64(kRows, r1 - r - kRows), b0, nbs);
      fill_slab(a, r, nrows, b0, nbs, slab);
      int64_t c = 0;
      for (; c + kMaxCols <= a.ncols; c += kMaxCols) tile_columns<kMaxCols>(as, slab, cols, r, c, nbs, b0 == 0, mask);
      switch (a.ncols - c) {
        case 1: tile_columns<1>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 2: tile_columns<2>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 3: tile_columns<3>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 4: tile_columns<4>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 5: tile_columns<5>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 6: tile_columns<6>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        case 7: tile_columns<7>(as, slab, cols, r, c, nbs, b0 == 0, mask); break;
        default: break;
      }
    }
  });
}

}  // namespace edgellm::avx512
