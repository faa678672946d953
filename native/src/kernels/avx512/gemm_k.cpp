// AVX-512 VNNI GEMMs of the K-quants: Q4_K, Q5_K and Q6_K weights x Q8_K activations, for several
// sequences decoding together (2 to 8 columns) and for prompt processing (up to 64); compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni and called only when the CPU has them (dispatch.cpp).
//
// As in the Q4_0 GEMM (gemm.cpp), a tile is 16 weight rows with one row per zmm lane: each dword
// lane holds 4 consecutive weight codes of its row, so one vpdpbusd with a column's 4 matching
// activation bytes broadcast ({1to16}) adds 4 products to each of 16 rows, with no horizontal sum.
// vpdpbusd multiplies unsigned by signed bytes, which is what the K-quants store: the codes are
// unsigned (Q4_K nibbles 0..15, Q5_K 0..31, Q6_K 0..63) and their offsets are linear in the
// activations, so they come from Q8_K's bsums (sums of each 16 activations) instead of the weights:
//   Q4_K / Q5_K: y += d_x * (d * sum_j sc_j * isum_j  -  dmin * sum_j m_j * bsum_j)
//   Q6_K:        y += d_x * d * sum_j sc_j * (isum_j - 32 * bsum_j)
// isum_j is sub-block j's integer dot product (one vpdpbusd chain per column), times the 16 rows'
// scales with one vpmulld; the bsum terms are vpdpwssd of the rows' (m_j, m_j) or (sc_2p, sc_2p+1)
// int16 pairs with a broadcast dword of two adjacent bsums. All integer sums fit int32 (Q6_K's
// largest, 16 x 63 x 128 x 16 x 128, is 2^28).
//
// The weights are read as the file stores them (mmap'ed): for each super-block, the tile's 16 rows
// are regrouped into that lane-per-row layout 16 bytes at a time (16 loads and 8 unpacks per 16 rows
// x 16 bytes, the in-register transpose of gemm.cpp, which leaves row lane_row(l) in lane l), the
// codes unpacked to bytes and the scales to int32 lanes. Up to 8 columns (sequences decoding
// together) take each sub-block's codes straight from the regrouping to the multiply-adds, with
// every accumulator in registers; more columns (prompts) regroup a super-block once into a stack
// buffer (Decoded, 4 KiB of codes + the scales) that serves them 8 at a time, accumulating
// through y. One and two columns go to the avx2 kernels, and so do Q6_K's up to 8 (see gemm_q4_k
// and gemm_q6_k below).
// The regrouping reads 16 rows at once, more streams than the hardware prefetchers follow, so the
// weights are prefetched in software: the next tile's bytes (16 adjacent rows, one contiguous
// range) into L2, a slice per super-block of this one, and the first tile of a range two
// super-blocks ahead into L1 (see prefetch_next_tile).
#include "kernels/avx512/intrinsics.h"  // first: see there

#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx512/avx512.h"
#include "kernels/common/gemm_tiling.h"

namespace edgellm::avx512 {

namespace {

constexpr int kRows = 16;    // weight rows per tile: one zmm lane each
constexpr int kMaxCols = 8;  // columns whose accumulators stay in registers
constexpr int kAhead = 2;    // super-blocks prefetched ahead of the one being regrouped

// A local min: no std:: template instantiated with this file's AVX-512 flags (the linker could
// hand such a copy to code that runs on CPUs without AVX-512).
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The regrouping and multiply-add steps must inline into one loop body per format and column
// count: out of line, their register arrays go through memory and the sub-block index (which
// selects shifts and scales) stops being a constant.
#define KQ_INLINE inline __attribute__((always_inline))

// Dword lane l of a regrouped vector holds row lane_row(l) of the tile (its own inverse).
inline int lane_row(int l) { return 4 * (l % 4) + l / 4; }

// acc + w . (the 4 bytes at p in every dword lane), with the broadcast folded into vpdpbusd's
// memory operand ({1to16}): GCC emits a separate vpbroadcastd for _mm512_set1_epi32(*p), a vector
// uop per multiply-add on the pipe the multiply-adds need (Zen 4).
KQ_INLINE __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}
// The same for vpdpwssd (int16 pairs).
KQ_INLINE __m512i dpwssd_bcast(__m512i acc, __m512i w, const int16_t* p) {
  asm("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

// 16 rows r .. r + nrows - 1 (rows past nrows repeat row r; their results are never stored).
struct Tile {
  const uint8_t* row[kRows];
  __m512i perm;  // lane l: lane_row(l), to put accumulators back in row order
  __mmask16 mask;
};

Tile make_tile(const GemmArgs& a, int64_t r, int nrows) {
  Tile t;
  alignas(64) int32_t perm[kRows];
  for (int i = 0; i < kRows; ++i) t.row[i] = a.w + (r + (i < nrows ? i : 0)) * a.w_row_bytes;
  for (int l = 0; l < kRows; ++l) perm[l] = lane_row(l);
  t.perm = _mm512_load_si512(perm);
  t.mask = (__mmask16)((1u << nrows) - 1);
  return t;
}

// The 16 bytes at byte `off` of each of the tile's rows, regrouped: t[g] lane l = dword g of row
// lane_row(l). Rows 4q .. 4q + 3 go in the 128-bit lanes of z[q]; two rounds of unpacks then
// transpose 4 x 4 dwords inside each 128-bit lane.
KQ_INLINE void load_chunk(const Tile& t, int64_t off, __m512i out[4]) {
  __m512i z[4];
  for (int q = 0; q < 4; ++q) {
    auto ld = [&](int i) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.row[i] + off)); };
    __m512i v = _mm512_broadcast_i32x4(ld(4 * q));
    v = _mm512_mask_broadcast_i32x4(v, 0x00F0, ld(4 * q + 1));
    v = _mm512_mask_broadcast_i32x4(v, 0x0F00, ld(4 * q + 2));
    z[q] = _mm512_mask_broadcast_i32x4(v, 0xF000, ld(4 * q + 3));
  }
  const __m512i t01l = _mm512_unpacklo_epi32(z[0], z[1]), t01h = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t23l = _mm512_unpacklo_epi32(z[2], z[3]), t23h = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t01l, t23l);
  out[1] = _mm512_unpackhi_epi64(t01l, t23l);
  out[2] = _mm512_unpacklo_epi64(t01h, t23h);
  out[3] = _mm512_unpackhi_epi64(t01h, t23h);
}

// Byte-wise x << s for s in -3..4 (16-bit shifts: callers mask the bits that matter, which never
// cross a byte boundary).
template <int S>
inline __m512i shift_bytes(__m512i x) {
  if constexpr (S >= 0) return _mm512_slli_epi16(x, S);
  else return _mm512_srli_epi16(x, -S);
}

// Asks for super-block sb of rows r .. r + nrows - 1 (block_bytes each).
inline void prefetch_blocks(const GemmArgs& a, int64_t r, int64_t nrows, int64_t sb, int64_t block_bytes) {
  for (int64_t i = 0; i < nrows; ++i) {
    const char* p = reinterpret_cast<const char*>(a.w + (r + i) * a.w_row_bytes + sb * block_bytes);
    for (int64_t off = 0; off < block_bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
    _mm_prefetch(p + block_bytes - 1, _MM_HINT_T0);
  }
}

// Every format supplies
//   Scales: the tile's per-row scales of one super-block, regrouped (lane l = row lane_row(l));
//   kSub sub-blocks of kSubLen weights, kDw = kSubLen / 4 code dwords each;
//   codes(t, boff, s, f): fills s, then calls f(j, w) for each sub-block j with its codes
//     w[e] (lane l = codes 4e .. 4e + 3 of row lane_row(l)) in registers;
//   finish<C>(s, x, si, acc): acc[c] += the super-block's result from si[c] = sum_j sc_j * isum_j.

// ---- Q4_K and Q5_K: 8 sub-blocks of 32, 6-bit scales and mins -------------------------------
// mm[p] = m_p in both int16 halves (for bsums 2p and 2p + 1, the two halves of sub-block p).
struct alignas(64) ScalesK4 {
  __m512i sc[8];
  __m512i mm[8];
  __m512 d, dmin;
};

// The 16-byte header (d, dmin, 12 scale bytes; get_scale_min_k4's packing) of both formats.
KQ_INLINE void decode_scales_k4(const Tile& t, int64_t boff, ScalesK4& o) {
  __m512i h[4];
  load_chunk(t, boff, h);  // h[0] = d | dmin << 16, h[1..3] = scales[0..3], [4..7], [8..11]
  o.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h[0]));
  o.dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h[0], 16)));
  const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3);
  auto byte_bits = [](__m512i v, int shift, __m512i mask) { return _mm512_and_si512(_mm512_srli_epi32(v, shift), mask); };
  for (int j = 0; j < 4; ++j) {
    o.sc[j] = byte_bits(h[1], 8 * j, m6);
    const __m512i m = byte_bits(h[2], 8 * j, m6);
    o.mm[j] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
    // Sub-block 4 + j: low 4 bits from scales[8 + j], high 2 from the top of scales[j] / [4 + j].
    o.sc[4 + j] = _mm512_or_si512(byte_bits(h[3], 8 * j, m4), _mm512_slli_epi32(byte_bits(h[1], 8 * j + 6, m2), 4));
    const __m512i m_hi = _mm512_or_si512(byte_bits(h[3], 8 * j + 4, m4), _mm512_slli_epi32(byte_bits(h[2], 8 * j + 6, m2), 4));
    o.mm[4 + j] = _mm512_or_si512(m_hi, _mm512_slli_epi32(m_hi, 16));
  }
}

struct K4Base {
  using Scales = ScalesK4;
  static constexpr int kSub = 8, kSubLen = 32, kDw = 8;
  static constexpr bool kFewColumns = true;  // tile_few_columns serves 3 to 8 columns
  template <int C>
  static KQ_INLINE void finish(const Scales& s, const block_q8_K* const (&x)[C], const __m512i (&si)[C], __m512 (&acc)[C]) {
    for (int c = 0; c < C; ++c) {
      __m512i mi = _mm512_setzero_si512();
      for (int p = 0; p < 8; ++p) mi = dpwssd_bcast(mi, s.mm[p], &x[c]->bsums[2 * p]);
      const __m512 dx = _mm512_set1_ps(x[c]->d);
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[c]), _mm512_mul_ps(s.d, dx), acc[c]);
      acc[c] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mi), _mm512_mul_ps(s.dmin, dx), acc[c]);
    }
  }
};

struct Q4K : K4Base {
  using Block = block_q4_K;
  // qs at byte 16: per 64 weights 32 bytes, low nibbles = sub-block 2p, high = 2p + 1.
  template <class Fn>
  static KQ_INLINE void codes(const Tile& t, int64_t boff, Scales& s, Fn&& f) {
    decode_scales_k4(t, boff, s);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      __m512i q[8], w[8];
      load_chunk(t, boff + 16 + 32 * p, q);
      load_chunk(t, boff + 16 + 32 * p + 16, q + 4);
      for (int e = 0; e < 8; ++e) w[e] = _mm512_and_si512(q[e], low4);
      f(2 * p, w);
      for (int e = 0; e < 8; ++e) w[e] = _mm512_and_si512(_mm512_srli_epi16(q[e], 4), low4);
      f(2 * p + 1, w);
    }
  }
};

struct Q5K : K4Base {
  using Block = block_q5_K;
  // qh at byte 16 (bit 2p / 2p + 1 of qh[l]: the fifth bit of weight l of sub-block 2p / 2p + 1),
  // qs at byte 48 as Q4_K's.
  template <int P, class Fn>
  static KQ_INLINE void pair(const Tile& t, int64_t boff, const __m512i (&qh)[8], Fn& f) {
    const __m512i low4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    __m512i q[8], w[8];
    load_chunk(t, boff + 48 + 32 * P, q);
    load_chunk(t, boff + 48 + 32 * P + 16, q + 4);
    for (int e = 0; e < 8; ++e)
      w[e] = _mm512_or_si512(_mm512_and_si512(q[e], low4), _mm512_and_si512(shift_bytes<4 - 2 * P>(qh[e]), bit4));
    f(2 * P, w);
    for (int e = 0; e < 8; ++e)
      w[e] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q[e], 4), low4),
                             _mm512_and_si512(shift_bytes<3 - 2 * P>(qh[e]), bit4));
    f(2 * P + 1, w);
  }
  template <class Fn>
  static KQ_INLINE void codes(const Tile& t, int64_t boff, Scales& s, Fn&& f) {
    decode_scales_k4(t, boff, s);
    __m512i qh[8];
    load_chunk(t, boff + 16, qh);
    load_chunk(t, boff + 32, qh + 4);
    pair<0>(t, boff, qh, f);
    pair<1>(t, boff, qh, f);
    pair<2>(t, boff, qh, f);
    pair<3>(t, boff, qh, f);
  }
};

// ---- Q6_K: 16 sub-blocks of 16, int8 scales, codes stored +32 ---------------------------------
struct alignas(64) ScalesQ6K {
  __m512i sc[16];
  __m512i sp[8];  // (sc[2p], sc[2p + 1]) as int16 halves
  __m512 d;
};

struct Q6K {
  using Block = block_q6_K;
  using Scales = ScalesQ6K;
  static constexpr int kSub = 16, kSubLen = 16, kDw = 4;
  static constexpr bool kFewColumns = false;  // gemm_q6_k sends up to 8 columns to avx2
  // Per 128 weights n: ql[64n + l] holds weights l (low nibble) and 64 + l (high), ql[64n + 32 + l]
  // weights 32 + l and 96 + l, and the four 2-bit pairs of qh[32n + l] their high bits (l < 32);
  // scales at byte 192, d at 208. Sub-block 8n + 2g + h holds l = 16h .. 16h + 15 of group g.
  template <class Fn>
  static KQ_INLINE void codes(const Tile& t, int64_t boff, Scales& s, Fn&& f) {
    __m512i sv[4];
    load_chunk(t, boff + 192, sv);
    for (int j = 0; j < 16; ++j) s.sc[j] = _mm512_srai_epi32(_mm512_slli_epi32(sv[j / 4], 24 - 8 * (j % 4)), 24);
    const __m512i low16 = _mm512_set1_epi32(0xFFFF);
    for (int p = 0; p < 8; ++p) s.sp[p] = _mm512_or_si512(_mm512_and_si512(s.sc[2 * p], low16), _mm512_slli_epi32(s.sc[2 * p + 1], 16));
    // d (the block's last 2 bytes) with 16 scalar loads: a vpgatherdd cost more than all the
    // regrouping's vector loads of the block (Zen 4).
    alignas(32) uint16_t d[kRows];
    for (int l = 0; l < kRows; ++l) std::memcpy(&d[l], t.row[lane_row(l)] + boff + 208, 2);
    s.d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d)));

    const __m512i low4 = _mm512_set1_epi8(0x0F), high2 = _mm512_set1_epi8(0x30);
    auto code = [&](__m512i lo, __m512i hi) { return _mm512_or_si512(_mm512_and_si512(lo, low4), _mm512_and_si512(hi, high2)); };
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m512i qa[4], qb[4], qh[4], w[4];
        load_chunk(t, boff + 64 * n + 16 * h, qa);
        load_chunk(t, boff + 64 * n + 32 + 16 * h, qb);
        load_chunk(t, boff + 128 + 32 * n + 16 * h, qh);
        for (int e = 0; e < 4; ++e) w[e] = code(qa[e], _mm512_slli_epi16(qh[e], 4));
        f(8 * n + h, w);
        for (int e = 0; e < 4; ++e) w[e] = code(qb[e], _mm512_slli_epi16(qh[e], 2));
        f(8 * n + 2 + h, w);
        for (int e = 0; e < 4; ++e) w[e] = code(_mm512_srli_epi16(qa[e], 4), qh[e]);
        f(8 * n + 4 + h, w);
        for (int e = 0; e < 4; ++e) w[e] = code(_mm512_srli_epi16(qb[e], 4), _mm512_srli_epi16(qh[e], 2));
        f(8 * n + 6 + h, w);
      }
  }
  template <int C>
  static KQ_INLINE void finish(const Scales& s, const block_q8_K* const (&x)[C], const __m512i (&si)[C], __m512 (&acc)[C]) {
    for (int c = 0; c < C; ++c) {
      __m512i off = _mm512_setzero_si512();  // sum_s sc_s * bsum_s: the codes' +32, times 32
      for (int p = 0; p < 8; ++p) off = dpwssd_bcast(off, s.sp[p], &x[c]->bsums[2 * p]);
      const __m512i sum = _mm512_sub_epi32(si[c], _mm512_slli_epi32(off, 5));
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(s.d, _mm512_set1_ps(x[c]->d)), acc[c]);
    }
  }
};

// si[c] += sc_j * (sub-block j's codes w . column c's activations), for C columns.
template <class F, int C>
KQ_INLINE void subblock_columns(const typename F::Scales& s, const block_q8_K* const (&x)[C], int j, const __m512i* w,
                             __m512i (&si)[C]) {
  for (int c = 0; c < C; ++c) {
    const int8_t* q = x[c]->qs + F::kSubLen * j;
    __m512i i = _mm512_setzero_si512();
    for (int e = 0; e < F::kDw; ++e) i = dpbusd_bcast(i, w[e], q + 4 * e);
    si[c] = _mm512_add_epi32(si[c], _mm512_mullo_epi32(i, s.sc[j]));
  }
}

// One super-block regrouped once for many columns: the codes of every sub-block and the scales.
template <class F>
struct alignas(64) Decoded {
  __m512i w[F::kSub][F::kDw];
  typename F::Scales s;
  KQ_INLINE void fill(const Tile& t, int64_t boff) {
    F::codes(t, boff, s, [&](int j, const __m512i* w_j) {
      for (int e = 0; e < F::kDw; ++e) _mm512_store_si512(&w[j][e], w_j[e]);
    });
  }
  // Adds the super-block for columns x[0..C) to acc (lane order).
  template <int C>
  KQ_INLINE void accumulate(const block_q8_K* const (&x)[C], __m512 (&acc)[C]) const {
    __m512i si[C];
    for (int c = 0; c < C; ++c) si[c] = _mm512_setzero_si512();
    for (int j = 0; j < F::kSub; ++j) {
      __m512i w_j[F::kDw];
      for (int e = 0; e < F::kDw; ++e) w_j[e] = _mm512_load_si512(&w[j][e]);
      subblock_columns<F, C>(s, x, j, w_j, si);
    }
    F::template finish<C>(s, x, si, acc);
  }
};

// ---- drivers ---------------------------------------------------------------------------------
// Before regrouping super-block sb (of nb) of the tile at row r: prefetch the sb-th of nb equal
// slices of the next tile's bytes into L2 (its 16 rows are adjacent: one sequential stream, spread
// evenly over this tile's work), and for the first tile of a range, which no tile before it
// prefetched, its own super-block kAhead ahead into L1. From DRAM (tools/gemm_bench, 1 thread,
// 32768 rows, Q4_K, 3 runs alternated) this lifted 8 columns from ~50 to 110-120 GMAC/s at
// k = 1024 and from ~82 to 105-108 at k = 4096 (4 columns, k = 1024: ~32 to ~95), against
// prefetching 16 rows x super-block sb + kAhead (the 16 rows' pieces are in as many DRAM pages):
// hardware prefetch alone measured the same ~50, and the next tile into L1 (_MM_HINT_T0) 65-100 at
// k = 1024 but 71-76 at k = 4096, where a tile (37 KiB) no longer fits in L1 beside this one.
inline void prefetch_next_tile(const GemmArgs& a, int64_t r, int64_t r1, int64_t sb, int64_t nb, int64_t block_bytes,
                               bool first) {
  if (first && sb + kAhead < nb) prefetch_blocks(a, r, min64(kRows, r1 - r), sb + kAhead, block_bytes);
  const int64_t rn = r + kRows;
  if (rn >= r1) return;
  const int64_t bytes = (min64(rn + kRows, r1) - rn) * (int64_t)a.w_row_bytes;
  const char* base = reinterpret_cast<const char*>(a.w + rn * a.w_row_bytes);
  for (int64_t off = bytes * sb / nb / 64 * 64, end = bytes * (sb + 1) / nb; off < end; off += 64)
    _mm_prefetch(base + off, _MM_HINT_T1);
}

// All of the tile's super-blocks for C (3 to 8) columns: each sub-block's codes go from the
// regrouping straight to the multiply-adds, every accumulator stays in registers.
template <class F, int C>
void tile_few_columns(const GemmArgs& a, const Tile& t, int64_t r, int64_t r1, bool first) {
  const int64_t nb = a.k / kQKK;
  const block_q8_K* x[C];
  common::x_cols(a, 0, x);
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  typename F::Scales s;
  for (int64_t sb = 0; sb < nb; ++sb) {
    prefetch_next_tile(a, r, r1, sb, nb, (int64_t)sizeof(typename F::Block), first);
    const block_q8_K* xs[C];
    for (int c = 0; c < C; ++c) xs[c] = x[c] + sb;
    __m512i si[C];
    for (int c = 0; c < C; ++c) si[c] = _mm512_setzero_si512();
    F::codes(t, sb * (int64_t)sizeof(typename F::Block), s,
             [&](int j, const __m512i* w) { subblock_columns<F, C>(s, xs, j, w, si); });
    F::template finish<C>(s, xs, si, acc);
  }
  for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(common::y_at(a, c, r), t.mask, _mm512_permutexvar_ps(t.perm, acc[c]));
}

// Columns c .. c + C - 1 of super-block sb, accumulated through y (first: stored).
template <int C, class F>
void columns_through_y(const GemmArgs& a, const Tile& t, const Decoded<F>& o, int64_t r, int64_t c, int64_t sb) {
  const block_q8_K* x[C];
  common::x_cols(a, c, x);
  for (int j = 0; j < C; ++j) x[j] += sb;
  __m512 acc[C];
  for (int j = 0; j < C; ++j)
    acc[j] = sb == 0 ? _mm512_setzero_ps()
                     : _mm512_permutexvar_ps(t.perm, _mm512_maskz_loadu_ps(t.mask, common::y_at(a, c + j, r)));
  o.template accumulate<C>(x, acc);
  for (int j = 0; j < C; ++j) _mm512_mask_storeu_ps(common::y_at(a, c + j, r), t.mask, _mm512_permutexvar_ps(t.perm, acc[j]));
}

// More than 8 columns: each regrouped super-block serves every column, 8 at a time.
template <class F>
void tile_many_columns(const GemmArgs& a, const Tile& t, int64_t r, int64_t r1, bool first, Decoded<F>& o) {
  const int64_t nb = a.k / kQKK;
  for (int64_t sb = 0; sb < nb; ++sb) {
    prefetch_next_tile(a, r, r1, sb, nb, (int64_t)sizeof(typename F::Block), first);
    o.fill(t, sb * (int64_t)sizeof(typename F::Block));
    int64_t c = 0;
    for (; c + kMaxCols <= a.ncols; c += kMaxCols) columns_through_y<kMaxCols>(a, t, o, r, c, sb);
    switch (a.ncols - c) {
      case 1: columns_through_y<1>(a, t, o, r, c, sb); break;
      case 2: columns_through_y<2>(a, t, o, r, c, sb); break;
      case 3: columns_through_y<3>(a, t, o, r, c, sb); break;
      case 4: columns_through_y<4>(a, t, o, r, c, sb); break;
      case 5: columns_through_y<5>(a, t, o, r, c, sb); break;
      case 6: columns_through_y<6>(a, t, o, r, c, sb); break;
      case 7: columns_through_y<7>(a, t, o, r, c, sb); break;
      default: break;
    }
  }
}

template <class F>
void gemm_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  Decoded<F> o;
  if (r0 < r1) prefetch_blocks(a, r0, min64(kRows, r1 - r0), 0, (int64_t)sizeof(typename F::Block));
  for (int64_t r = r0; r < r1; r += kRows) {
    const Tile t = make_tile(a, r, (int)min64(kRows, r1 - r));
    if constexpr (F::kFewColumns) {
      switch (a.ncols) {
        case 3: tile_few_columns<F, 3>(a, t, r, r1, r == r0); continue;
        case 4: tile_few_columns<F, 4>(a, t, r, r1, r == r0); continue;
        case 5: tile_few_columns<F, 5>(a, t, r, r1, r == r0); continue;
        case 6: tile_few_columns<F, 6>(a, t, r, r1, r == r0); continue;
        case 7: tile_few_columns<F, 7>(a, t, r, r1, r == r0); continue;
        case 8: tile_few_columns<F, 8>(a, t, r, r1, r == r0); continue;
        default: break;
      }
    }
    tile_many_columns<F>(a, t, r, r1, r == r0, o);
  }
}

}  // namespace

// One or two columns (one or two sequences decoding) go to the avx2 kernel, which streams 4 rows a
// quarter of the range apart with no regrouping: with the weights coming from DRAM (a model larger
// than the last-level cache) it measured faster there (tools/gemm_bench, 32768 x 4096: 2 columns
// 0.75-0.9x avx2 here, while from cache 1.3x). Its tile reads 16 adjacent rows at once.
// Q4_K up to 16 columns (batched decode) goes to avx2's 16-rows-in-lanes tile: with the weights
// coming from DRAM it measured 1.6x this tile's GMAC/s at 4-8 columns and 1.3x at 16 (1 thread,
// 16384 x 2816, tools/gemm_bench); in cache, and from 32 columns (prompts), this one is as fast
// or faster.
void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (a.ncols <= 16) return avx2::gemm_q4_k(a, r0, r1);
  gemm_k<Q4K>(a, r0, r1);
}
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (a.ncols <= 2) return avx2::gemm_q5_k(a, r0, r1);
  gemm_k<Q5K>(a, r0, r1);
}
// Q6_K's regrouping (three sources per code, 16 sub-block scales) costs more than the tile saves
// below 9 columns: there the avx2 kernel measured faster (tools/gemm_bench).
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (a.ncols <= kMaxCols) return avx2::gemm_q6_k(a, r0, r1);
  gemm_k<Q6K>(a, r0, r1);
}

}  // namespace edgellm::avx512
