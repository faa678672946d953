// AVX2 + FMA + F16C GEMV / small GEMM for the K-quant weights that most GGUF files are made of
// (Q4_K, Q5_K, Q6_K) against Q8_K activations (quantize_row_q8_k, quantize_q8_k.cpp).
//
// A super-block is 256 weights with sub-block scales; everything inside one super-block is
// integer: the weight codes go into _mm256_maddubs_epi16 as unsigned bytes (Q4_K 0..15, Q5_K
// 0..31, Q6_K 0..63) against the signed Q8_K codes, each 32-weight product vector is weighted by
// its 6- or 8-bit sub-block scale in the _mm256_madd_epi16 that widens it to int32, and the
// per-super-block offset (Q4_K/Q5_K: dmin x min; Q6_K: the -32 of its codes) comes from the
// Q8_K bsums, so it costs one madd per row and column instead of a pass over the weights. One
// convert and one float FMA per super-block then apply d x d_x (and -dmin x d_x). That is ~3
// vector uops per 32 multiply-adds per column, plus the unpacking of the weights, which a tile
// does once per row and super-block for all of its columns.
//
// With several columns, Q4_K and Q6_K go to the 16-row tile with the rows in the vector lanes
// (gemm_kquants_rows.cpp; the thresholds and figures at drive_rows_first) for whole tiles; Q5_K,
// one column and the rows left over take the tiles here.
// Tiling (see drive below): up to 8 columns (decode of 1 to 8 sequences) run in one tile per
// 4 rows a quarter of the range apart, the decode order of common::drive, so every weight block
// is read from memory once for all columns and each row is its own sequential stream; more
// columns (prompt processing) take 4 adjacent rows x 8-column tiles: the rows stay in L1 while
// the column tiles walk over them, and each column's Q8_K blocks are loaded from L2 once per
// 4 rows. Per row and super-block the columns' sums stay in registers (8 int32 vectors; the
// compiler spills a few at 8 columns); 4-column tiles, the 8 sub-block scales kept on the stack
// as madd memory operands, fully unrolled chunks and unpacking the whole super-block before the
// columns were all slower in A/B runs (single thread, 64 columns: 8-column tiles ~66 GMAC/s,
// the others 53-58).
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/avx2/avx2.h"
#include "kernels/common/gemm_tiling.h"

namespace edgellm::avx2 {

namespace {

using common::w_rows;
using common::x_cols;

constexpr int kTileRows = 4;  // rows per tile
constexpr int kTileCols = 8;  // columns per tile: the 8 int32 sums of a row fit next to its unpacked weights

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Decode streams rows from DRAM; as in gemm.cpp, a software prefetch 512 bytes ahead of every
// super-block (each of its cache lines: the window stays contiguous from block to block) lifts a
// 4-stream GEMV from ~0.8 to ~0.9-1.0 of read bandwidth.
constexpr int kPrefetchBytes = 512;
template <class Block>
inline void prefetch_block(const Block* blk) {
  const char* p = reinterpret_cast<const char*>(blk) + kPrefetchBytes;
  for (size_t off = 0; off < sizeof(Block); off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

// _mm256_shuffle_epi8 control that broadcasts int16 lane s (0..7) of each 128-bit half.
inline __m256i broadcast_word_control(int s) { return _mm256_set1_epi16((short)(0x0100 + 0x0202 * s)); }

// ---- Q4_K / Q5_K x Q8_K ------------------------------------------------------------------
// Per super-block: y += d_x * (d * sum_s sc_s * (q . x)_s - dmin * sum_s m_s * (bsum_2s + bsum_2s+1))
// over the 8 sub-blocks s of 32 weights.

// The 12 scale bytes as 8 six-bit scales and 8 six-bit mins (get_scale_min_k4, four at a time):
// bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3, and bytes 8-11 the low 4 bits
// of scale 4+j (low nibble) and min 4+j (high nibble), whose top 2 bits are the top bits of bytes
// j (scale) and 4+j (min). Scalar on purpose: the integer ALUs are idle while the vector ports
// bound the GEMV; the same decode in SSE/AVX2 (16 vector ops) made 1-column GEMV ~13% slower.
inline void unpack_scales_mins_k4(const uint8_t* packed, uint64_t* scales, uint64_t* mins) {
  uint32_t a, b, c;
  std::memcpy(&a, packed, 4);
  std::memcpy(&b, packed + 4, 4);
  std::memcpy(&c, packed + 8, 4);
  const uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
  *scales = sc_lo | (uint64_t)sc_hi << 32;
  *mins = m_lo | (uint64_t)m_hi << 32;
}

// Q4_K and Q5_K differ only in the fifth bit of Q5_K's codes (qh).
template <class Block>
struct KQuant45 {
  static constexpr bool kFifthBit = std::is_same<Block, block_q5_K>::value;

  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQKK;
    const Block* w[R];
    const block_q8_K* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    for (int64_t b = 0; b < nb; ++b) {
      for (int i = 0; i < R; ++i) {
        const Block& blk = w[i][b];
        prefetch_block(&blk);
        uint64_t sc, mn;
        unpack_scales_mins_k4(blk.scales, &sc, &mn);
        // 8 scales as int16 in both 128-bit halves; 8 mins as int16, each twice (m_s pairs with
        // bsums 2s and 2s+1).
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        const __m128i m8 = _mm_cvtsi64_si128((long long)mn);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        __m256i hbits;
        if constexpr (kFifthBit) hbits = load256(blk.qh);
        __m256i isum[C];
        for (int j = 0; j < C; ++j) isum[j] = _mm256_setzero_si256();
        // 4 chunks of 64 weights: 32 bytes whose low nibbles are sub-block 2h, high nibbles 2h+1.
        for (int h = 0; h < 4; ++h) {
          const __m256i q = load256(blk.qs + 32 * h);
          __m256i lo = _mm256_and_si256(q, low4);
          __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
          if constexpr (kFifthBit) {
            // Bits 2h and 2h+1 of qh[l] are the fifth bits of weights l (lo) and 32 + l (hi);
            // hbits is shifted right by 2 per chunk, so they are bits 0 and 1 here.
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hbits, 4), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hbits, 3), bit4));
            hbits = _mm256_srli_epi16(hbits, 2);
          }
          const __m256i sc_lo = _mm256_shuffle_epi8(scales, broadcast_word_control(2 * h));
          const __m256i sc_hi = _mm256_shuffle_epi8(scales, broadcast_word_control(2 * h + 1));
          for (int j = 0; j < C; ++j) {
            const __m256i plo = _mm256_maddubs_epi16(lo, load256(x[j][b].qs + 64 * h));
            const __m256i phi = _mm256_maddubs_epi16(hi, load256(x[j][b].qs + 64 * h + 32));
            isum[j] = _mm256_add_epi32(
                isum[j], _mm256_add_epi32(_mm256_madd_epi16(plo, sc_lo), _mm256_madd_epi16(phi, sc_hi)));
          }
        }
        // One hadd puts the partial sums of isum in lanes 0, 1, 4, 5 and those of the min term
        // in lanes 2, 3, 6, 7, scaled by [d, d, -dmin, -dmin] x d_x.
        const __m256 ddmin = _mm256_cvtph_ps(_mm_set1_epi32((int)(blk.d | (uint32_t)blk.dmin << 16)));
        const __m256 dpat =
            _mm256_xor_ps(_mm256_permute_ps(ddmin, 0x50), _mm256_setr_ps(0, 0, -0.0f, -0.0f, 0, 0, -0.0f, -0.0f));
        for (int j = 0; j < C; ++j) {
          const __m256i msum = _mm256_madd_epi16(mins, load256(x[j][b].bsums));
          const __m256 both = _mm256_cvtepi32_ps(_mm256_hadd_epi32(isum[j], msum));
          acc[i][j] = _mm256_fmadd_ps(both, _mm256_mul_ps(dpat, _mm256_set1_ps(x[j][b].d)), acc[i][j]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]);
  }
};

// ---- Q6_K x Q8_K -------------------------------------------------------------------------
// Per super-block: y += d_x * d * (sum_s sc_s * (q . x)_s - 32 * sum_s sc_s * bsum_s) over the 16
// sub-blocks s of 16 weights, q = 6-bit unsigned code (w = d * sc * (q - 32)); both sums are int32,
// so one convert and one FMA per super-block.
struct KQuant6 {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQKK;
    const block_q6_K* w[R];
    const block_q8_K* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i high2 = _mm256_set1_epi8(0x30);
    // Weights 32t..32t+31 of a 128-weight half are sub-blocks 2t (low 128-bit half) and 2t+1
    // (high half): the scale of word 2t in the low half, of word 2t+1 in the high one.
    auto pair_control = [](int t) {
      const short lo = (short)(0x0100 + 0x0202 * (2 * t)), hi = (short)(0x0100 + 0x0202 * (2 * t + 1));
      return _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
    };
    for (int64_t b = 0; b < nb; ++b) {
      for (int i = 0; i < R; ++i) {
        const block_q6_K& blk = w[i][b];
        prefetch_block(&blk);
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);  // the 16 scales, for the -32 term
        __m256i isum[C];
        for (int j = 0; j < C; ++j) isum[j] = _mm256_setzero_si256();
        // Two halves of 128 weights: ql 64 bytes (low nibbles: weights 0-63, high: 64-127),
        // qh 32 bytes (bits 2t, 2t+1 of qh[l]: the top bits of weight 32t + l).
        for (int n = 0; n < 2; ++n) {
          const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(n == 0 ? sc8 : _mm_unpackhi_epi64(sc8, sc8)));
          const __m256i ql0 = load256(blk.ql + 64 * n), ql1 = load256(blk.ql + 64 * n + 32);
          const __m256i qh = load256(blk.qh + 32 * n);
          const __m256i q[4] = {
              _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), high2)),
              _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), high2)),
              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(qh, high2)),
              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), high2)),
          };
          for (int t = 0; t < 4; ++t) {
            const __m256i sc = _mm256_shuffle_epi8(scales, pair_control(t));
            for (int j = 0; j < C; ++j) {
              const __m256i p = _mm256_maddubs_epi16(q[t], load256(x[j][b].qs + 128 * n + 32 * t));
              isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p, sc));
            }
          }
        }
        const float d = _cvtsh_ss(blk.d);
        for (int j = 0; j < C; ++j) {
          const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(x[j][b].bsums)), 5);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[j], offset)),
                                      _mm256_set1_ps(d * x[j][b].d), acc[i][j]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]);
  }
};

// ---- tiling ------------------------------------------------------------------------------

// Tile::run<R, C>(a, r, c, rstep) with the runtime column count C (1..kTileCols).
template <class Tile, int R>
inline void run_tile(const GemmArgs& a, int64_t r, int64_t c, int64_t cols, int64_t rstep) {
  switch (cols) {
    case 1: Tile::template run<R, 1>(a, r, c, rstep); break;
    case 2: Tile::template run<R, 2>(a, r, c, rstep); break;
    case 3: Tile::template run<R, 3>(a, r, c, rstep); break;
    case 4: Tile::template run<R, 4>(a, r, c, rstep); break;
    case 5: Tile::template run<R, 5>(a, r, c, rstep); break;
    case 6: Tile::template run<R, 6>(a, r, c, rstep); break;
    case 7: Tile::template run<R, 7>(a, r, c, rstep); break;
    case 8: Tile::template run<R, 8>(a, r, c, rstep); break;
    default: break;
  }
}

// Every column of rows r, r + rstep, ... (R of them) in tiles of kTileCols columns.
template <class Tile, int R>
inline void run_all_columns(const GemmArgs& a, int64_t r, int64_t rstep) {
  for (int64_t c = 0; c < a.ncols; c += kTileCols)
    run_tile<Tile, R>(a, r, c, a.ncols - c < kTileCols ? a.ncols - c : kTileCols, rstep);
}

// Up to kTileCols columns: 4 rows a quarter of the range apart (each its own stream, as in
// common::drive's decode order) with every column in the tile. More columns: 4 adjacent rows at
// a time. The last rows of the range go one at a time.
template <class Tile>
void drive(const GemmArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  if (a.ncols <= kTileCols) {
    const int64_t q = (r1 - r0) / kTileRows;
    for (int64_t i = 0; i < q; ++i) run_tile<Tile, kTileRows>(a, r0 + i, 0, a.ncols, q);
    r = r0 + kTileRows * q;
  } else {
    for (; r + kTileRows <= r1; r += kTileRows) run_all_columns<Tile, kTileRows>(a, r, 1);
  }
  for (; r < r1; ++r) run_all_columns<Tile, 1>(a, r, 1);
}

// Several columns: whole 16-row tiles with the rows in the vector lanes (gemm_kquants_rows.cpp),
// from min_cols columns on, the rest here. The thresholds are where that tile measured faster
// (tools/gemm_bench, 2048 x 1024, single thread, AMD EPYC Zen 4): Q4_K from 2 columns (2: 49 -> 62
// GMAC/s, 8: 58 -> 102, 64: 55 -> 121); Q6_K from 5 (its regrouping of three sources per code
// costs more: 4 columns 53 -> 52, 5: 53 -> 56, 8: 51 -> 68, 64: 49 -> 101). From DRAM (Q4_K
// 8192 x 2816, Q6_K 32000 x 1024, 8 columns) the gains were smaller: Q4_K 52 -> 89, Q6_K 52 -> 54.
template <class Tile>
void drive_rows_first(GemmFn rows_tiles, int64_t min_cols, const GemmArgs& a, int64_t r0, int64_t r1) {
  if (a.ncols >= min_cols) {
    const int64_t r = r0 + (r1 - r0) / 16 * 16;
    rows_tiles(a, r0, r);
    r0 = r;
  }
  if (r0 < r1) drive<Tile>(a, r0, r1);
}

}  // namespace

void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  drive_rows_first<KQuant45<block_q4_K>>(gemm_q4_k_rows, 2, a, r0, r1);
}
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1) { drive<KQuant45<block_q5_K>>(a, r0, r1); }
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1) { drive_rows_first<KQuant6>(gemm_q6_k_rows, 5, a, r0, r1); }

}  // namespace edgellm::avx2
