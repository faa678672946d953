// AVX2 Q4_K / Q6_K x Q8_K GEMM for several columns (sequences decoding together, prompts), with
// the weight rows in the vector lanes. gemm_kquants.cpp hands it whole tiles of 16 rows when a
// call has enough columns (Q4_K 2, Q6_K 5); fewer columns and the leftover rows stay there.
//
// gemm_kquants.cpp's tile holds 32 consecutive weights of one row in a register: per 32
// multiply-adds of a column it spends a maddubs, a madd with the sub-block scale and an add, and
// the madd is half of the multiplies (Q4_K: 16 per 256 multiply-adds per column). Here a tile is
// 16 adjacent rows and one register holds 4 consecutive codes of 8 of them, one row per int32
// lane; a column's 4 matching activation bytes are broadcast to every lane (one vpbroadcastd from
// memory serves both 8-row halves). The maddubs of one sub-block then sum in
// int16 before one madd applies every row's scale at once (a vector of per-lane scales), so per
// 256 multiply-adds per column Q4_K needs 8 maddubs + 1 madd (a 32-weight sub-block: 8 maddubs,
// |sum| <= 8 x 2 x 15 x 127 < 2^15) and Q6_K 8 + 4 (its 6-bit codes let only 2 maddubs share an
// int16: 4 x 63 x 127 < 2^15), and the int32 sums keep the rows in lanes: a column's 16 results
// are two vector stores, with no horizontal sums.
//
// The weights stay the mmap'ed blocks: once per tile and super-block, the 16 rows' codes are
// regrouped into that layout (a 4x4 dword transpose per 128-bit lane of 8 rows x 16 bytes, then
// the nibbles / 6-bit codes unpacked) into a 4 KiB buffer on the stack, with the rows' scales,
// mins and f16 factors as lane vectors; every column reads it from L1. The codes are unsigned
// (Q4_K 0..15, Q6_K 0..63), and the parts linear in the activations come from Q8_K's bsums once
// per column and super-block:
//   Q4_K: y += d_x * (d * sum_s sc_s * isum_s  -  dmin * sum_s m_s * (bsum_2s + bsum_2s+1))
//   Q6_K: y += d_x * d * (sum_s sc_s * isum_s  -  32 * sum_s sc_s * bsum_s)
// Columns go 2 at a time: their 4 int32 sums (2 columns x 2 halves), 4 int16 partial sums and the
// 2 weight registers of a step fit the 16 ymm registers without spills.
// The bytes of the tile 2 ahead (16 adjacent rows: one contiguous range) are prefetched into L2 a
// slice per super-block while this one computes.
#include <immintrin.h>

#include <cstddef>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/common/gemm_tiling.h"

namespace edgellm::avx2 {

namespace {

constexpr int kRows = 16;      // rows per tile: two halves of 8, one row per int32 lane
constexpr int kHalves = 2;     // 8-row halves per tile
constexpr int kGroups = kQKK / 4;  // 4-weight groups per super-block
constexpr int kColStep = 2;    // columns whose sums stay in registers together
constexpr int kAheadTiles = 2; // prefetch distance (see tile)

// The regrouping and the column loops must inline into one body per format and column count:
// out of line, their arrays go through memory and the sub-block indices stop being constants.
#define KR_INLINE inline __attribute__((always_inline))

KR_INLINE __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// [16 bytes at lo | 16 bytes at hi], as a blend of two 32-byte loads (lo and hi - 16) rather than
// a load and an insert: the insert takes a shuffle port, which the transposes keep busy. Reads
// 16 bytes past lo + 16 and 16 before hi: callers pass rows of one tile with lo's row before
// hi's (so both stray ranges lie inside the weight rows of the tile or their padding).
KR_INLINE __m256i load_2x128(const uint8_t* lo, const uint8_t* hi) {
  return _mm256_blend_epi32(load256(lo), load256(hi - 16), 0xF0);
}

// An empty asm that the value passes through: GCC otherwise reassociates a chain of integer
// adds into a tree of all the products first, which needs more registers than there are and
// spills them (measured: a third of the loop's instructions were spill moves).
KR_INLINE __m256i chain(__m256i v) {
  asm("" : "+x"(v));
  return v;
}

// The 4 bytes at p in every int32 lane.
KR_INLINE __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// 16 bytes at offset `off` of 8 blocks (rows 0-7 of a half) with dword j of row l in dword lane
// l of out[j]: in each 128-bit lane (rows 0-3 low, 4-7 high) a 4x4 transpose of dwords.
// The loads stray up to 16 bytes outside the 16 (load_2x128): after rows 0-3's and before rows
// 4-7's, which are rows of the same tile.
KR_INLINE void transpose_8x16(const uint8_t* const* blk, size_t off, __m256i out[4]) {
  __m256i m[4];
  for (int i = 0; i < 4; ++i) m[i] = load_2x128(blk[i] + off, blk[i + 4] + off);
  const __m256i a0 = _mm256_unpacklo_epi32(m[0], m[1]), a1 = _mm256_unpackhi_epi32(m[0], m[1]);
  const __m256i a2 = _mm256_unpacklo_epi32(m[2], m[3]), a3 = _mm256_unpackhi_epi32(m[2], m[3]);
  out[0] = _mm256_unpacklo_epi64(a0, a2);
  out[1] = _mm256_unpackhi_epi64(a0, a2);
  out[2] = _mm256_unpacklo_epi64(a1, a3);
  out[3] = _mm256_unpackhi_epi64(a1, a3);
}

// pshufb control that builds each dword from bytes of the same dword: byte i of the result is
// byte b_i (0..3) of the source dword, or zero for b_i = -1.
KR_INLINE __m256i dword_bytes(int b0, int b1, int b2, int b3) {
  auto sel = [](int b, int lane_dword) { return (char)(b < 0 ? 0x80 : 4 * lane_dword + b); };
  return _mm256_setr_epi8(sel(b0, 0), sel(b1, 0), sel(b2, 0), sel(b3, 0), sel(b0, 1), sel(b1, 1), sel(b2, 1), sel(b3, 1),
                          sel(b0, 2), sel(b1, 2), sel(b2, 2), sel(b3, 2), sel(b0, 3), sel(b1, 3), sel(b2, 3), sel(b3, 3),
                          sel(b0, 0), sel(b1, 0), sel(b2, 0), sel(b3, 0), sel(b0, 1), sel(b1, 1), sel(b2, 1), sel(b3, 1),
                          sel(b0, 2), sel(b1, 2), sel(b2, 2), sel(b3, 2), sel(b0, 3), sel(b1, 3), sel(b2, 3), sel(b3, 3));
}

// One tile's super-block, regrouped: codes[q][h] holds weights 4q..4q+3 of rows 8h..8h+7, one row
// per int32 lane (unsigned bytes); per sub-block s the rows' scales as (sc, sc) int16 pairs; the
// pairs the bsums terms multiply (Q4_K: (m_2p, m_2p+1); Q6_K: (sc_2p, sc_2p+1)); the f16 factors
// as floats (Q4_K: d and dmin; Q6_K: d).
template <int kSubBlocks>
struct Regrouped {
  __m256i codes[kGroups][kHalves];
  __m256i scales[kSubBlocks][kHalves];
  __m256i pairs[8][kHalves];
  __m256 d[kHalves], dmin[kHalves];
};

// ---- Q4_K ---------------------------------------------------------------------------------
// Bytes 32c + l of qs: low nibble weight 64c + l, high nibble 64c + 32 + l; sub-block s is
// weights 32s..32s+31. The 12 scale bytes (get_scale_min_k4): bytes 0-3 scales 0-3 in their
// low 6 bits, bytes 4-7 mins 0-3, bytes 8-11 the low 4 bits of scale 4+j (low nibble) and min
// 4+j (high nibble), whose top 2 bits are the top bits of bytes j and 4+j.
struct Q4K {
  using Block = block_q4_K;
  static constexpr int kSubBlocks = 8;

  KR_INLINE static void regroup(const uint8_t* const* blk, Regrouped<kSubBlocks>& o, int h) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
#pragma GCC unroll 2
      for (int part = 0; part < 2; ++part) {
        __m256i t[4];
        transpose_8x16(blk, offsetof(block_q4_K, qs) + 32 * c + 16 * part, t);
        for (int j = 0; j < 4; ++j) {
          const int g = 4 * part + j;  // dword g of the 32 bytes: weights 64c + 4g (low), + 32 (high)
          o.codes[16 * c + g][h] = _mm256_and_si256(t[j], low4);
          o.codes[16 * c + 8 + g][h] = _mm256_and_si256(_mm256_srli_epi16(t[j], 4), low4);
        }
      }
    // Dwords of the first 16 bytes: (d, dmin), scales bytes 0-3, 4-7, 8-11.
    __m256i hd[4];
    transpose_8x16(blk, 0, hd);
    const __m256i m6 = _mm256_set1_epi8(0x3F), top = _mm256_set1_epi8(0x30);
    const __m256i sc_lo = _mm256_and_si256(hd[1], m6), m_lo = _mm256_and_si256(hd[2], m6);
    const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(hd[3], low4), _mm256_and_si256(_mm256_srli_epi32(hd[1], 2), top));
    const __m256i m_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(hd[3], 4), low4),
                                         _mm256_and_si256(_mm256_srli_epi32(hd[2], 2), top));
    for (int s = 0; s < 4; ++s) {
      o.scales[s][h] = _mm256_shuffle_epi8(sc_lo, dword_bytes(s, -1, s, -1));
      o.scales[4 + s][h] = _mm256_shuffle_epi8(sc_hi, dword_bytes(s, -1, s, -1));
    }
    for (int p = 0; p < 2; ++p) {
      o.pairs[p][h] = _mm256_shuffle_epi8(m_lo, dword_bytes(2 * p, -1, 2 * p + 1, -1));
      o.pairs[2 + p][h] = _mm256_shuffle_epi8(m_hi, dword_bytes(2 * p, -1, 2 * p + 1, -1));
    }
    // d and dmin: the low and high halves of dword 0, packed and widened to floats.
    const __m256i dd = _mm256_packus_epi32(_mm256_and_si256(hd[0], _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(hd[0], 16));
    const __m256i both = _mm256_permute4x64_epi64(dd, 0xD8);  // [d rows 0-3, d rows 4-7 | dmin 0-3, dmin 4-7]
    o.d[h] = _mm256_cvtph_ps(_mm256_castsi256_si128(both));
    o.dmin[h] = _mm256_cvtph_ps(_mm256_extracti128_si256(both, 1));
  }

  // Columns x[0..C) of super-block b against the regrouped tile; adds to acc[j][h].
  template <int C>
  KR_INLINE static void columns(const Regrouped<kSubBlocks>& w, const block_q8_K* const* x, __m256 (*acc)[kHalves]) {
    __m256i isum[C][kHalves];
    for (int j = 0; j < C; ++j)
      for (int h = 0; h < kHalves; ++h) isum[j][h] = _mm256_setzero_si256();
    for (int s = 0; s < kSubBlocks; ++s) {
      __m256i t[C][kHalves];
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m256i w0 = w.codes[8 * s + g][0], w1 = w.codes[8 * s + g][1];
        for (int j = 0; j < C; ++j) {
          const __m256i xb = broadcast4(x[j]->qs + 32 * s + 4 * g);
          const __m256i p0 = _mm256_maddubs_epi16(w0, xb), p1 = _mm256_maddubs_epi16(w1, xb);
          t[j][0] = g == 0 ? p0 : chain(_mm256_add_epi16(t[j][0], p0));
          t[j][1] = g == 0 ? p1 : chain(_mm256_add_epi16(t[j][1], p1));
        }
      }
      for (int j = 0; j < C; ++j)
        for (int h = 0; h < kHalves; ++h)
          isum[j][h] = chain(_mm256_add_epi32(isum[j][h], _mm256_madd_epi16(t[j][h], w.scales[s][h])));
    }
    for (int j = 0; j < C; ++j) {
      // (bsum_2s + bsum_2s+1) for s = 0..7 as int16, both 128-bit lanes; pair p in dword p.
      const __m128i b16 = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j]->bsums)),
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j]->bsums + 8)));
      const __m256i bs = _mm256_broadcastsi128_si256(b16);
      const __m256 dx = _mm256_set1_ps(x[j]->d);
      for (int h = 0; h < kHalves; ++h) {
        __m256i msum = _mm256_madd_epi16(w.pairs[0][h], _mm256_shuffle_epi32(bs, 0x00));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(w.pairs[1][h], _mm256_shuffle_epi32(bs, 0x55)));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(w.pairs[2][h], _mm256_shuffle_epi32(bs, 0xAA)));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(w.pairs[3][h], _mm256_shuffle_epi32(bs, 0xFF)));
        acc[j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j][h]), _mm256_mul_ps(w.d[h], dx), acc[j][h]);
        acc[j][h] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(w.dmin[h], dx), acc[j][h]);
      }
    }
  }
};

// ---- Q6_K ---------------------------------------------------------------------------------
// Per 128-weight half n: ql bytes 64n + l (l < 32): low nibble weight 128n + l, high nibble
// 128n + 64 + l; ql bytes 64n + 32 + l: 128n + 32 + l and 128n + 96 + l; qh byte 32n + l, bits
// 2t..2t+1: the top 2 bits of weight 128n + 32t + l. Sub-block s (scale scales[s], int8) is
// weights 16s..16s+15.
struct Q6K {
  using Block = block_q6_K;
  static constexpr int kSubBlocks = 16;
  static constexpr int kPairs = 8;  // (sc_2p, sc_2p+1) pairs

  KR_INLINE static void regroup(const uint8_t* const* blk, Regrouped<kSubBlocks>& o, int h) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), high2 = _mm256_set1_epi8(0x30);
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n)
#pragma GCC unroll 2
      for (int part = 0; part < 2; ++part) {
        __m256i l0[4], l1[4], qh[4];
        transpose_8x16(blk, offsetof(block_q6_K, ql) + 64 * n + 16 * part, l0);
        transpose_8x16(blk, offsetof(block_q6_K, ql) + 64 * n + 32 + 16 * part, l1);
        transpose_8x16(blk, offsetof(block_q6_K, qh) + 32 * n + 16 * part, qh);
        for (int j = 0; j < 4; ++j) {
          const int q = 32 * n + 4 * part + j;  // group of weights 128n + 4(4 part + j)
          o.codes[q][h] = _mm256_or_si256(_mm256_and_si256(l0[j], low4), _mm256_and_si256(_mm256_slli_epi16(qh[j], 4), high2));
          o.codes[q + 8][h] = _mm256_or_si256(_mm256_and_si256(l1[j], low4), _mm256_and_si256(_mm256_slli_epi16(qh[j], 2), high2));
          o.codes[q + 16][h] =
              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0[j], 4), low4), _mm256_and_si256(qh[j], high2));
          o.codes[q + 24][h] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1[j], 4), low4),
                                               _mm256_and_si256(_mm256_srli_epi16(qh[j], 2), high2));
        }
      }
    // The int8 scales, 4 per dword: placed in the high byte of each int16 and shifted down
    // arithmetically, which sign-extends them.
    __m256i sc[4];
    transpose_8x16(blk, offsetof(block_q6_K, scales), sc);
    for (int s = 0; s < kSubBlocks; ++s)
      o.scales[s][h] = _mm256_srai_epi16(_mm256_shuffle_epi8(sc[s / 4], dword_bytes(-1, s % 4, -1, s % 4)), 8);
    for (int p = 0; p < kPairs; ++p)
      o.pairs[p][h] =
          _mm256_srai_epi16(_mm256_shuffle_epi8(sc[p / 2], dword_bytes(-1, 2 * (p % 2), -1, 2 * (p % 2) + 1)), 8);
    const auto d16 = [&](int i) { return (short)reinterpret_cast<const block_q6_K*>(blk[i])->d; };
    o.d[h] = _mm256_cvtph_ps(_mm_setr_epi16(d16(0), d16(1), d16(2), d16(3), d16(4), d16(5), d16(6), d16(7)));
  }

  template <int C>
  KR_INLINE static void columns(const Regrouped<kSubBlocks>& w, const block_q8_K* const* x, __m256 (*acc)[kHalves]) {
    __m256i isum[C][kHalves];
    for (int j = 0; j < C; ++j)
      for (int h = 0; h < kHalves; ++h) isum[j][h] = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int s = 0; s < kSubBlocks; ++s)
      for (int pair = 0; pair < 2; ++pair) {
        // Groups 4s + 2 pair and + 1: 8 weights, 2 maddubs per int16 lane.
        const int q = 4 * s + 2 * pair;
        const __m256i wa0 = w.codes[q][0], wb0 = w.codes[q + 1][0];
        const __m256i wa1 = w.codes[q][1], wb1 = w.codes[q + 1][1];
        for (int j = 0; j < C; ++j) {
          const __m256i xa = broadcast4(x[j]->qs + 4 * q), xb = broadcast4(x[j]->qs + 4 * q + 4);
          const __m256i t0 = _mm256_add_epi16(_mm256_maddubs_epi16(wa0, xa), _mm256_maddubs_epi16(wb0, xb));
          const __m256i t1 = _mm256_add_epi16(_mm256_maddubs_epi16(wa1, xa), _mm256_maddubs_epi16(wb1, xb));
          isum[j][0] = chain(_mm256_add_epi32(isum[j][0], _mm256_madd_epi16(t0, w.scales[s][0])));
          isum[j][1] = chain(_mm256_add_epi32(isum[j][1], _mm256_madd_epi16(t1, w.scales[s][1])));
        }
      }
    for (int j = 0; j < C; ++j) {
      const __m256 dx = _mm256_set1_ps(x[j]->d);
      for (int h = 0; h < kHalves; ++h) {
        // sum_s sc_s * bsum_s, two sub-blocks per madd (bsums 2p, 2p+1 broadcast as one dword).
        __m256i off = _mm256_setzero_si256();
        for (int p = 0; p < kPairs; ++p)
          off = _mm256_add_epi32(off, _mm256_madd_epi16(w.pairs[p][h], broadcast4(reinterpret_cast<const int8_t*>(x[j]->bsums + 2 * p))));
        const __m256i total = _mm256_sub_epi32(isum[j][h], _mm256_slli_epi32(off, 5));
        acc[j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(w.d[h], dx), acc[j][h]);
      }
    }
  }
};

// ---- the tile ----------------------------------------------------------------------------

// Rows [r, r + 16) against every column.
template <class F>
void tile(const GemmArgs& a, int64_t r, int64_t r_end) {
  using Block = typename F::Block;
  const int64_t nb = a.k / kQKK;
  alignas(32) Regrouped<F::kSubBlocks> w;
  __m256 acc[kMaxGemmCols][kHalves];
  for (int64_t j = 0; j < a.ncols; ++j)
    for (int h = 0; h < kHalves; ++h) acc[j][h] = _mm256_setzero_ps();
  // The tile kAheadTiles after this one in the range (16 rows, one contiguous range of bytes) is
  // prefetched into L2 a slice per super-block. From DRAM (8 columns, Q6_K 32000 x 1024, other
  // processes loading memory): without it 27 GMAC/s; 1 tile ahead 35-36, 2 or more 40-42; into
  // L1 instead of L2, a third slower.
  const bool next = r + (1 + kAheadTiles) * kRows <= r_end;
  const uint8_t* next_base = a.w + (r + kAheadTiles * kRows) * a.w_row_bytes;
  const size_t next_bytes = kRows * a.w_row_bytes, slice = (next_bytes + nb - 1) / nb;
  for (int64_t b = 0; b < nb; ++b) {
    if (next)
      for (size_t off = b * slice; off < (b + 1) * slice && off < next_bytes; off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next_base + off), _MM_HINT_T1);
    for (int h = 0; h < kHalves; ++h) {
      const uint8_t* blk[8];
      for (int i = 0; i < 8; ++i)
        blk[i] = a.w + (r + 8 * h + i) * a.w_row_bytes + b * sizeof(Block);
      F::regroup(blk, w, h);
    }
    int64_t c = 0;
    for (; c + kColStep <= a.ncols; c += kColStep) {
      const block_q8_K* x[kColStep];
      for (int j = 0; j < kColStep; ++j) x[j] = common::x_col<block_q8_K>(a, c + j) + b;
      F::template columns<kColStep>(w, x, acc + c);
    }
    if (c < a.ncols) {
      const block_q8_K* x[1] = {common::x_col<block_q8_K>(a, c) + b};
      F::template columns<1>(w, x, acc + c);
    }
  }
  for (int64_t j = 0; j < a.ncols; ++j)
    for (int h = 0; h < kHalves; ++h) _mm256_storeu_ps(common::y_at(a, j, r + 8 * h), acc[j][h]);
}

template <class F>
void drive(const GemmArgs& a, int64_t r0, int64_t r1) {
  // The tiles before the first kAheadTiles have nothing ahead of them: their bytes now, except
  // the first tile's, which is read at once.
  const int64_t first = r0 + kRows, last = r1 < r0 + kAheadTiles * kRows ? r1 : r0 + kAheadTiles * kRows;
  for (int64_t off = 0; first < last && off < (last - first) * (int64_t)a.w_row_bytes; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(a.w + first * a.w_row_bytes + off), _MM_HINT_T1);
  for (int64_t r = r0; r + kRows <= r1; r += kRows) tile<F>(a, r, r1);
}

}  // namespace

void gemm_q4_k_rows(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q4K>(a, r0, r1); }
void gemm_q6_k_rows(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q6K>(a, r0, r1); }

}  // namespace edgellm::avx2
