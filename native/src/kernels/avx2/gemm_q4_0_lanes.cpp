// AVX2 Q4_0 x Q8_0 GEMM for 4 or more columns (several sequences decoding together, prompt
// processing), with the columns in the vector lanes. (1 to 3 columns stream the weights in the
// decode tiling instead, gemm.cpp.)
//
// The row-tile GEMM (Q4PairTile in gemm.cpp) keeps 32 weights of one row in a register and
// spends, per row, column and block, a maddubs pair plus an add, a -8 x sum(x) correction, a
// madd, a convert, a scale permute and an FMA on 32 multiply-adds, then a horizontal sum per
// output. Here one register holds the activations of up to 8 columns instead: lane bytes
// [m W, (m + 1) W) are W = 32 / CE consecutive activations of column m (CE = 8, 4, 2 or 1 columns
// per register), and the W weights of one row that match them are broadcast to every column
// (one vpbroadcastd/q or vbroadcasti128 from L1). So a block of one row against CE columns is CE
// maddubs summed in 16 bits (no overflow: |sum| <= 8 x 2 x 15 x 128 < 2^15), one madd, one add of
// the columns' -8 x sum(x) correction, one convert and one FMA, and every int32 lane belongs to
// one column: no horizontal sums, no scale permutes. Per 256 multiply-adds of 8 columns that is
// ~20 vector uops where the row tile needs ~55.
//
// The activations are regrouped into that layout once per call (an 8x8 dword, 4x4 qword or 2x2
// 128-bit transpose per block of CE columns, plus the block's scales and corrections as lane
// vectors), which every row of the call then reads; the weights are unpacked once per tile of
// 4 rows (nibbles in activation order, interleaved by block so one pointer walks them; scales as
// f32, converted 4 at a time) and serve every column group. Weights are
// read in row order (rows r..r+3 are contiguous in the file), and the next tile's bytes are
// prefetched while this one computes. Columns go in groups of 8; a last group of 1-7 takes the
// narrowest of CE = 1, 2, 4, 8 that holds it, its missing columns repeating column 0.
//
// Measured against the row tile (single thread, thread CPU time, 4096 x 4096 Q4_0 through
// matmul(), AMD EPYC with the machine shared): 4 columns 39 -> 63 GMAC/s, 8: 39 -> 95,
// 16: 42 -> 96, 64: 45 -> 111; instructions per multiply-add (callgrind, 256 x 4096) 0.324 ->
// 0.243 / 0.174 / 0.156 / 0.143.
#include <immintrin.h>

#include <cstring>
#include <new>

#include "kernels/avx2/avx2.h"
#include "kernels/common/gemm_tiling.h"

namespace edgellm::avx2 {

namespace {

constexpr int kLaneBytes = 32;   // one ymm
constexpr int kGroupCols = 8;    // columns per register at most (4-byte lane groups)
constexpr int kTileRows = 4;     // rows per tile

// A local min: no std:: template instantiated with this file's AVX2 flags (the linker could hand
// such a copy to code that runs on CPUs without AVX2).
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The regrouped activations of one column group, per block: CE registers of activations, then
// the columns' scales (f32) and -8 x sum(x) corrections (int32) per int32 lane. Lane l of a
// register belongs to column l / (8 / CE); the correction of a column is spread over its lanes
// (each lane carries the sum of its own activations), which the final lane sum adds back up.
inline size_t group_block_bytes(int ce) { return (size_t)ce * kLaneBytes + 2 * kLaneBytes; }

// Regroups blocks [0, nb) of columns cols[0..ce) (pointers; padding columns repeat column 0) into
// dst (group_block_bytes(CE) per block).
template <int CE>
void regroup_columns(const block_q8_0* const* cols, int64_t nb, uint8_t* dst) {
  constexpr int G = kGroupCols / CE;  // int32 lanes per column
  const __m256i eight = _mm256_set1_epi8(8);
  const __m256i minus1 = _mm256_set1_epi16(-1);
  for (int64_t b = 0; b < nb; ++b, dst += group_block_bytes(CE)) {
    __m256i r[CE], o[CE];
    for (int m = 0; m < CE; ++m) r[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cols[m][b].qs));
    if constexpr (CE == 1) {
      o[0] = r[0];
    } else if constexpr (CE == 2) {  // register t: [col 0 bytes 16t..16t+15 | col 1 bytes 16t..]
      o[0] = _mm256_permute2x128_si256(r[0], r[1], 0x20);
      o[1] = _mm256_permute2x128_si256(r[0], r[1], 0x31);
    } else if constexpr (CE == 4) {  // register t: qword t of columns 0..3
      const __m256i t0 = _mm256_unpacklo_epi64(r[0], r[1]), t1 = _mm256_unpackhi_epi64(r[0], r[1]);
      const __m256i t2 = _mm256_unpacklo_epi64(r[2], r[3]), t3 = _mm256_unpackhi_epi64(r[2], r[3]);
      o[0] = _mm256_permute2x128_si256(t0, t2, 0x20);
      o[1] = _mm256_permute2x128_si256(t1, t3, 0x20);
      o[2] = _mm256_permute2x128_si256(t0, t2, 0x31);
      o[3] = _mm256_permute2x128_si256(t1, t3, 0x31);
    } else {  // CE == 8, register t: dword t of columns 0..7
      __m256i t[8], u[8];
      for (int h = 0; h < 2; ++h) {
        t[4 * h + 0] = _mm256_unpacklo_epi32(r[4 * h + 0], r[4 * h + 1]);
        t[4 * h + 1] = _mm256_unpackhi_epi32(r[4 * h + 0], r[4 * h + 1]);
        t[4 * h + 2] = _mm256_unpacklo_epi32(r[4 * h + 2], r[4 * h + 3]);
        t[4 * h + 3] = _mm256_unpackhi_epi32(r[4 * h + 2], r[4 * h + 3]);
        // u[4h + d]: dword d (low 128 bits) and d + 4 (high) of the 4 columns 4h..4h+3
        u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
      }
      for (int d = 0; d < 4; ++d) {
        o[d] = _mm256_permute2x128_si256(u[d], u[4 + d], 0x20);
        o[d + 4] = _mm256_permute2x128_si256(u[d], u[4 + d], 0x31);
      }
    }
    __m256i s16 = _mm256_maddubs_epi16(eight, o[0]);  // 8 x (x_2i + x_2i+1); |sum of 8| <= 16320
    for (int t = 0; t < CE; ++t) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + t * kLaneBytes), o[t]);
      if (t > 0) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(eight, o[t]));
    }
    alignas(32) float d[8];
    for (int l = 0; l < 8; ++l) d[l] = _cvtsh_ss(cols[l / G][b].d);
    _mm256_storeu_ps(reinterpret_cast<float*>(dst + CE * kLaneBytes), _mm256_load_ps(d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (CE + 1) * kLaneBytes), _mm256_madd_epi16(s16, minus1));
  }
}

// A tile of R rows, unpacked and interleaved by block: n[(b R + i) 32 ..] = the 32 nibbles of
// row i's block b in activation order, d[b R + i] = its scale. One pointer per array walks the
// tile in order.
struct TileView {
  const uint8_t* n;
  const float* d;
};

// Unpacks blocks [0, nb) of rows r .. r + R - 1 of a into n and d (TileView's layout).
template <int R>
void unpack_tile(const GemmArgs& a, int64_t r, int64_t nb, uint8_t* n, float* d) {
  static_assert(R >= 1 && R <= 4, "4 f16 scales per 128-bit convert");
  const __m256i lane_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const block_q4_0* w[R];
  common::w_rows(a, r, 1, w);
  for (int64_t b = 0; b < nb; ++b, n += R * kLaneBytes, d += R) {
    for (int i = 0; i < R; ++i) {
      const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i][b].qs)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(n + i * kLaneBytes),
                          _mm256_and_si256(_mm256_srlv_epi32(q, lane_shift), low4));
    }
    // (insert positions spelled out: they must be immediates even in unoptimized builds)
    __m128i h = _mm_cvtsi32_si128(w[0][b].d);
    if constexpr (R > 1) h = _mm_insert_epi16(h, w[1][b].d, 1);
    if constexpr (R > 2) h = _mm_insert_epi16(h, w[2][b].d, 2);
    if constexpr (R > 3) h = _mm_insert_epi16(h, w[3][b].d, 3);
    const __m128 f = _mm_cvtph_ps(h);  // R <= 4 scales
    if constexpr (R == 4) {
      _mm_storeu_ps(d, f);
    } else {
      alignas(16) float tmp[4];
      _mm_store_ps(tmp, f);
      for (int i = 0; i < R; ++i) d[i] = tmp[i];
    }
  }
}

// An empty asm that claims to change v: keeps the computation of v where the source puts it.
inline void pin(__m256i& v) { asm("" : "+x"(v)); }

// The W = 32 / CE weights at p broadcast to every column's lane group.
template <int CE>
inline __m256i broadcast_weights(const uint8_t* p) {
  if constexpr (CE == 8) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  } else if constexpr (CE == 4) {
    long long v;
    std::memcpy(&v, p, 8);
    return _mm256_set1_epi64x(v);
  } else if constexpr (CE == 2) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
}

// R rows x one column group of CE columns (ncols of them real) over all nb blocks; writes
// y[(c + m) * stride + r_i] for the R rows. pf: the next tile's weights to prefetch
// (pf_bytes of them; null: none).
template <int R, int CE>
void tile(TileView w, const uint8_t* xg, int64_t nb, float* y, int64_t stride, int64_t ncols,
          const uint8_t* pf, int64_t pf_bytes) {
  constexpr int W = kLaneBytes / CE;
  constexpr int G = kGroupCols / CE;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
  const size_t xstride = group_block_bytes(CE);
  // Prefetch the next tile a line or two per block, spread over this tile's blocks.
  const int64_t pf_step = pf ? (pf_bytes + nb - 1) / nb : 0;
  for (int64_t b = 0; b < nb; ++b, xg += xstride, w.n += R * kLaneBytes, w.d += R) {
    if (pf) {
      const int64_t off = b * pf_step;
      _mm_prefetch(reinterpret_cast<const char*>(pf + off), _MM_HINT_T0);
      if (pf_step > 64) _mm_prefetch(reinterpret_cast<const char*>(pf + off + 64), _MM_HINT_T0);
    }
    // x register t serves the R rows; each row sums its CE products in a chain (pinned: GCC would
    // otherwise reassociate the sums into trees, start all R x CE products at once and spill).
    __m256i s16[R];
    for (int t = 0; t < CE; ++t) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + t * kLaneBytes));
      for (int i = 0; i < R; ++i) {
        const __m256i p = _mm256_maddubs_epi16(broadcast_weights<CE>(w.n + i * kLaneBytes + t * W), x);
        s16[i] = t == 0 ? p : _mm256_add_epi16(s16[i], p);
        pin(s16[i]);
      }
    }
    const __m256 dx = _mm256_loadu_ps(reinterpret_cast<const float*>(xg + CE * kLaneBytes));
    const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + (CE + 1) * kLaneBytes));
    for (int i = 0; i < R; ++i) {
      const __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(s16[i], ones), corr);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(_mm256_broadcast_ss(w.d + i), dx), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[i]);
    for (int m = 0; m < ncols; ++m) {
      float s = lanes[m * G];
      for (int g = 1; g < G; ++g) s += lanes[m * G + g];
      y[m * stride + i] = s;
    }
  }
}

// Columns per register for a group of n columns (1..8): the smallest of 1, 2, 4, 8 that holds n.
inline int group_width(int64_t n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8; }

template <int R>
void tile_all_groups(const GemmArgs& a, TileView w, const uint8_t* xbuf, const int64_t* group_off,
                     int64_t ngroups, int64_t r, const uint8_t* pf, int64_t pf_bytes) {
  const int64_t nb = a.k / kQK;
  for (int64_t g = 0; g < ngroups; ++g) {
    const int64_t c = g * kGroupCols;
    const int64_t n = min64(kGroupCols, a.ncols - c);
    const uint8_t* xg = xbuf + group_off[g];
    float* y = common::y_at(a, c, r);
    // The next tile's prefetches ride on the first group.
    const uint8_t* p = g == 0 ? pf : nullptr;
    switch (group_width(n)) {
      case 1: tile<R, 1>(w, xg, nb, y, a.y_col_stride, n, p, pf_bytes); break;
      case 2: tile<R, 2>(w, xg, nb, y, a.y_col_stride, n, p, pf_bytes); break;
      case 4: tile<R, 4>(w, xg, nb, y, a.y_col_stride, n, p, pf_bytes); break;
      default: tile<R, 8>(w, xg, nb, y, a.y_col_stride, n, p, pf_bytes); break;
    }
  }
}

}  // namespace

namespace {

// The call's buffer, kept per thread: it grows to the largest call this thread has run and is
// then reused, so a decode step, which repeats the same shapes, allocates nothing (kernels.h).
// Raw ::operator new / delete, not std::vector: a template instantiated in this file would carry
// AVX2 code that the linker may pick for shared code.
struct ThreadScratch {
  uint8_t* p = nullptr;
  size_t bytes = 0;
  ~ThreadScratch() { ::operator delete(p); }
};

uint8_t* thread_scratch(size_t bytes) {
  static thread_local ThreadScratch s;
  if (s.bytes < bytes) {
    ::operator delete(s.p);
    s.p = nullptr;
    s.p = static_cast<uint8_t*>(::operator new(bytes));
    s.bytes = bytes;
  }
  return s.p;
}

// At most kMaxGemmCols columns (the contract; group_off is sized for it).
void lanes_gemm(const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / kQK;
  const int64_t ngroups = (a.ncols + kGroupCols - 1) / kGroupCols;
  // One buffer per call (the thread's scratch): the regrouped activations of every column group,
  // then one unpacked tile of kTileRows rows (32 bytes + a f32 scale per row and block).
  int64_t group_off[kMaxGemmCols / kGroupCols + 1];
  size_t xbytes = 0;
  for (int64_t g = 0; g < ngroups; ++g) {
    group_off[g] = (int64_t)xbytes;
    xbytes += (size_t)nb * group_block_bytes(group_width(min64(kGroupCols, a.ncols - g * kGroupCols)));
  }
  const size_t row_bytes = (size_t)nb * (kLaneBytes + sizeof(float));
  uint8_t* buf = thread_scratch(xbytes + kTileRows * row_bytes);
  for (int64_t g = 0; g < ngroups; ++g) {
    const int64_t c = g * kGroupCols;
    const int64_t n = min64(kGroupCols, a.ncols - c);
    const block_q8_0* cols[kGroupCols];
    for (int m = 0; m < kGroupCols; ++m) cols[m] = common::x_col<block_q8_0>(a, c + (m < n ? m : 0));
    uint8_t* dst = buf + group_off[g];
    switch (group_width(n)) {
      case 1: regroup_columns<1>(cols, nb, dst); break;
      case 2: regroup_columns<2>(cols, nb, dst); break;
      case 4: regroup_columns<4>(cols, nb, dst); break;
      default: regroup_columns<8>(cols, nb, dst); break;
    }
  }
  uint8_t* wn = buf + xbytes;
  float* wd = reinterpret_cast<float*>(wn + kTileRows * nb * kLaneBytes);
  const TileView w{wn, wd};
  int64_t r = r0;
  for (; r + kTileRows <= r1; r += kTileRows) {
    unpack_tile<kTileRows>(a, r, nb, wn, wd);
    const int64_t next = min64(kTileRows, r1 - r - kTileRows);
    const uint8_t* pf = next > 0 ? a.w + (r + kTileRows) * a.w_row_bytes : nullptr;
    tile_all_groups<kTileRows>(a, w, buf, group_off, ngroups, r, pf, next * (int64_t)a.w_row_bytes);
  }
  for (; r < r1; ++r) {
    unpack_tile<1>(a, r, nb, wn, wd);
    tile_all_groups<1>(a, w, buf, group_off, ngroups, r, nullptr, 0);
  }
}

}  // namespace

void gemm_q4_0_lanes(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (r1 <= r0) return;
  for (int64_t c0 = 0; c0 < a.ncols; c0 += kMaxGemmCols) {
    GemmArgs part = a;
    part.x = static_cast<const uint8_t*>(a.x) + c0 * a.x_col_bytes;
    part.ncols = min64(kMaxGemmCols, a.ncols - c0);
    part.y = a.y + c0 * a.y_col_stride;
    lanes_gemm(part, r0, r1);
  }
}

}  // namespace edgellm::avx2
