// AVX-512 attention for prefill: up to 16 (query, head) rows that share a KV head go through the
// keys together, one row per zmm lane, so each K and V element is loaded (and widened from f16)
// once per 16 rows and every multiply-add is a full-width FMA with no horizontal sums:
//   scores:  s[key][lane] += K[key][i] * Q^T[i][lane]      (Q transposed once per row group)
//   output:  O^T[i][lane] += V[key][i] * p[key][lane]
// with the online softmax (running max and sum per lane, rescale when the max grows) per tile of
// kTile keys, as common/attention_online.h does per row. Each lane sees the keys [0, pos] of its
// own query (causal); the group walks keys up to its largest position and masks the rest.
//
// Only full caches (no ring, no window: slot = position) with head_dim a multiple of 16 up to 256
// take this path; everything else (sliding windows, sinks, rings, odd head sizes) runs the avx2
// kernel, as do the last rows of a KV head's group in the task range when fewer than kMinRows
// are left. A task range inside one query (decode: one query per sequence, where 16 lanes would
// carry mostly padding) goes to attend_shared_query instead: dims in lanes, each K/V tile widened
// once for all the heads that read it (10.5 -> 6.5 us for 16 heads over 4 KV heads at position
// 56, head_dim 64, one thread).
#include "kernels/avx512/intrinsics.h"  // first: see there

#include <cmath>
#include <cstdint>

#include "kernels/avx2/avx2.h"
#include "kernels/avx512/avx512.h"

namespace edgellm::avx512 {

namespace {

constexpr int kLanes = 16;
constexpr int64_t kTile = 32;       // keys per softmax tile
constexpr int64_t kMaxDim = 256;
constexpr int kMinRows = 4;         // fewer rows of a KV head go through the avx2 kernel one by one

// exp(x) for x <= 0 (scores minus the running max): 2^n x e^r with |r| <= ln2/2 and a degree-7
// Taylor polynomial (relative error < 1e-8 before rounding); x below -87 gives ~0.
inline __m512 exp_neg(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// K and V rows of positions t0 .. t0 + n - 1 of KV head hk, widened to f32 (full cache: slot =
// position).
void widen_keys(const AttentionArgs& a, int64_t hk, int64_t t0, int64_t n, float (*kf)[kMaxDim], float (*vf)[kMaxDim]) {
  const int64_t d = a.head_dim, stride = a.n_head_kv * d;
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* kr = a.kv.k + (t0 + j) * stride + hk * d;
    const uint16_t* vr = a.kv.v + (t0 + j) * stride + hk * d;
    for (int64_t i = 0; i < d; i += 16) {
      _mm512_store_ps(&kf[j][i], _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kr + i))));
      _mm512_store_ps(&vf[j][i], _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vr + i))));
    }
  }
}

// One group of up to 16 rows (tasks) that read KV head hk.
void attend_group(const AttentionArgs& a, int64_t hk, const int64_t* tasks, int nrows) {
  const int64_t d = a.head_dim;
  alignas(64) float qt[kMaxDim][kLanes];   // Q^T, pre-scaled
  alignas(64) float ot[kMaxDim][kLanes];   // O^T accumulators
  alignas(64) float kf[kTile][kMaxDim];    // the tile's K rows as f32
  alignas(64) float vf[kTile][kMaxDim];    // and V rows
  alignas(64) float pt[kTile][kLanes];     // scores, then probabilities, per key and lane
  alignas(64) int32_t pos_l[kLanes];
  int64_t max_pos = 0;
  for (int l = 0; l < kLanes; ++l) {
    const int64_t t = tasks[l < nrows ? l : 0];
    const int64_t qi = t / a.n_head, h = t % a.n_head;
    const float* q = a.q + (qi * a.n_head + h) * d;
    for (int64_t i = 0; i < d; ++i) qt[i][l] = q[i] * a.scale;
    pos_l[l] = (int32_t)a.pos[qi];
    if (l < nrows && a.pos[qi] > max_pos) max_pos = a.pos[qi];
  }
  for (int64_t i = 0; i < d; ++i) _mm512_store_ps(ot[i], _mm512_setzero_ps());
  const __m512i pos_v = _mm512_load_si512(pos_l);
  __m512 run_max = _mm512_set1_ps(-INFINITY), run_sum = _mm512_setzero_ps();

  for (int64_t t0 = 0; t0 <= max_pos; t0 += kTile) {
    const int64_t n = max_pos + 1 - t0 < kTile ? max_pos + 1 - t0 : kTile;
    widen_keys(a, hk, t0, n, kf, vf);
    // Scores, 4 keys at a time (each Q^T row loaded once for 4 FMAs).
    __m512 tile_max = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    auto finish = [&](int64_t key, __m512 s) {
      const __mmask16 vis = _mm512_cmp_epi32_mask(_mm512_set1_epi32((int32_t)(t0 + key)), pos_v, _MM_CMPINT_LE);
      s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), vis, s);
      _mm512_store_ps(pt[key], s);
      tile_max = _mm512_max_ps(tile_max, s);
    };
    for (; j + 4 <= n; j += 4) {
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t i = 0; i < d; ++i) {
        const __m512 q = _mm512_load_ps(qt[i]);
        s0 = _mm512_fmadd_ps(_mm512_set1_ps(kf[j][i]), q, s0);
        s1 = _mm512_fmadd_ps(_mm512_set1_ps(kf[j + 1][i]), q, s1);
        s2 = _mm512_fmadd_ps(_mm512_set1_ps(kf[j + 2][i]), q, s2);
        s3 = _mm512_fmadd_ps(_mm512_set1_ps(kf[j + 3][i]), q, s3);
      }
      finish(j, s0), finish(j + 1, s1), finish(j + 2, s2), finish(j + 3, s3);
    }
    for (; j < n; ++j) {
      __m512 s = _mm512_setzero_ps();
      for (int64_t i = 0; i < d; ++i) s = _mm512_fmadd_ps(_mm512_set1_ps(kf[j][i]), _mm512_load_ps(qt[i]), s);
      finish(j, s);
    }
    // Online softmax per lane. Lanes with no visible key yet keep max -inf and add nothing.
    const __m512 new_max = _mm512_max_ps(run_max, tile_max);
    const __mmask16 has = _mm512_cmp_ps_mask(new_max, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __mmask16 grew = _mm512_mask_cmp_ps_mask(has, new_max, run_max, _CMP_GT_OQ);
    if (grew) {
      // corr = exp(old - new) (0 where old was -inf)
      const __m512 corr = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(run_max, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ),
                                              exp_neg(_mm512_sub_ps(run_max, new_max)));
      const __m512 c = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), grew, corr);
      run_sum = _mm512_mul_ps(run_sum, c);
      for (int64_t i = 0; i < d; ++i) _mm512_store_ps(ot[i], _mm512_mul_ps(_mm512_load_ps(ot[i]), c));
    }
    run_max = new_max;
    for (int64_t k = 0; k < n; ++k) {
      const __m512 s = _mm512_load_ps(pt[k]);
      const __mmask16 vis = _mm512_mask_cmp_ps_mask(has, s, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
      const __m512 p = _mm512_maskz_mov_ps(vis, exp_neg(_mm512_sub_ps(s, new_max)));
      _mm512_store_ps(pt[k], p);
      run_sum = _mm512_add_ps(run_sum, p);
    }
    // O^T += V^T P, 16 dims at a time held in registers across the tile's keys.
    for (int64_t i0 = 0; i0 < d; i0 += 16) {
      __m512 o[16];
      for (int u = 0; u < 16; ++u) o[u] = _mm512_load_ps(ot[i0 + u]);
      for (int64_t k = 0; k < n; ++k) {
        const __m512 p = _mm512_load_ps(pt[k]);
        for (int u = 0; u < 16; ++u) o[u] = _mm512_fmadd_ps(_mm512_set1_ps(vf[k][i0 + u]), p, o[u]);
      }
      for (int u = 0; u < 16; ++u) _mm512_store_ps(ot[i0 + u], o[u]);
    }
  }
  // out = O / sum (no visible key: zeros).
  const __mmask16 pos_sum = _mm512_cmp_ps_mask(run_sum, _mm512_setzero_ps(), _CMP_GT_OQ);
  alignas(64) float inv[kLanes];
  _mm512_store_ps(inv, _mm512_maskz_div_ps(pos_sum, _mm512_set1_ps(1.0f), run_sum));
  for (int l = 0; l < nrows; ++l) {
    const int64_t t = tasks[l];
    float* out = a.out + ((t / a.n_head) * a.n_head + t % a.n_head) * d;
    for (int64_t i = 0; i < d; ++i) out[i] = ot[i][l] * inv[l];
  }
}

// The rows of one query (decode: a sequence's heads) that read KV head hk, all seeing keys
// [0, pos]. Dims go in lanes: each tile's K and V rows are widened to f32 once and shared by the
// rows, a score is a dot product of d/16 FMAs and one horizontal sum, the 16 scores of a tile are
// one exp, and O += p V is d/16 FMAs per key with the row's O held in registers. The 16-lane
// group above would carry one lane per head here (4 of 16 for 4 heads per KV head).
constexpr int64_t kKeys = 16;  // keys per tile: one zmm of scores

void attend_shared_query(const AttentionArgs& a, int64_t hk, const int64_t* tasks, int nrows) {
  const int64_t d = a.head_dim, nc = d / 16;
  const int64_t nkeys = a.pos[tasks[0] / a.n_head] + 1;
  alignas(64) float kf[kKeys][kMaxDim];
  alignas(64) float vf[kKeys][kMaxDim];
  alignas(64) float ob[kLanes][kMaxDim];  // O per row
  alignas(64) float sc[kKeys];
  float run_max[kLanes], run_sum[kLanes];
  for (int r = 0; r < nrows; ++r) {
    run_max[r] = -INFINITY;
    run_sum[r] = 0;
    for (int64_t c = 0; c < nc; ++c) _mm512_store_ps(&ob[r][16 * c], _mm512_setzero_ps());
  }
  for (int64_t t0 = 0; t0 < nkeys; t0 += kKeys) {
    const int64_t n = nkeys - t0 < kKeys ? nkeys - t0 : kKeys;
    widen_keys(a, hk, t0, n, kf, vf);
    const __mmask16 valid = (__mmask16)((1u << n) - 1);
    for (int r = 0; r < nrows; ++r) {
      const float* q = a.q + tasks[r] * d;  // task t = qi * n_head + h
      for (int64_t j = 0; j < n; ++j) {
        __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_load_ps(&kf[j][0]));
        for (int64_t c = 1; c < nc; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_load_ps(&kf[j][16 * c]), acc);
        sc[j] = _mm512_reduce_add_ps(acc) * a.scale;
      }
      const __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid, sc);
      const float new_max = std::fmax(run_max[r], _mm512_reduce_max_ps(s));
      const float corr = run_max[r] == -INFINITY ? 0.0f : std::exp(run_max[r] - new_max);
      run_max[r] = new_max;
      alignas(64) float p[kKeys];
      const __m512 pv = _mm512_maskz_mov_ps(valid, exp_neg(_mm512_sub_ps(s, _mm512_set1_ps(new_max))));
      _mm512_store_ps(p, pv);
      run_sum[r] = run_sum[r] * corr + _mm512_reduce_add_ps(pv);
      const __m512 cv = _mm512_set1_ps(corr);
      for (int64_t c0 = 0; c0 < nc; c0 += 4) {  // 4 x 16 dims of O in registers across the tile's keys
        const int64_t m = nc - c0 < 4 ? nc - c0 : 4;
        __m512 o[4];
        for (int64_t u = 0; u < m; ++u) o[u] = _mm512_mul_ps(_mm512_load_ps(&ob[r][16 * (c0 + u)]), cv);
        for (int64_t j = 0; j < n; ++j) {
          const __m512 pj = _mm512_set1_ps(p[j]);
          for (int64_t u = 0; u < m; ++u) o[u] = _mm512_fmadd_ps(pj, _mm512_load_ps(&vf[j][16 * (c0 + u)]), o[u]);
        }
        for (int64_t u = 0; u < m; ++u) _mm512_store_ps(&ob[r][16 * (c0 + u)], o[u]);
      }
    }
  }
  for (int r = 0; r < nrows; ++r) {
    const __m512 inv = _mm512_set1_ps(1.0f / run_sum[r]);  // key 0 is always visible: run_sum >= 1
    float* out = a.out + tasks[r] * d;
    for (int64_t c = 0; c < nc; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(_mm512_load_ps(&ob[r][16 * c]), inv));
  }
}

// Tasks [t0, t1) grouped by the KV head they read, up to 16 at a time in task order: f(hk, tasks, n).
template <class F>
void for_each_kv_group(const AttentionArgs& a, int64_t t0, int64_t t1, F&& f) {
  const int64_t group = a.n_head / a.n_head_kv;
  for (int64_t hk = 0; hk < a.n_head_kv; ++hk) {
    int64_t tasks[kLanes];
    int n = 0;
    for (int64_t t = t0; t < t1; ++t) {
      if ((t % a.n_head) / group != hk) continue;
      tasks[n++] = t;
      if (n == kLanes) {
        f(hk, tasks, n);
        n = 0;
      }
    }
    if (n > 0) f(hk, tasks, n);
  }
}

}  // namespace

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) {
  const int64_t d = a.head_dim;
  // Rings, windows and soft-capped scores (gemma2) take the AVX2 path, which handles them.
  if (a.kv.ring || a.kv.window != 0 || a.softcap > 0.0f || d % 16 != 0 || d > kMaxDim) {
    avx2::attention(a, t0, t1);
    return;
  }
  if (t1 > t0 && t0 / a.n_head == (t1 - 1) / a.n_head) {  // one query's heads (decode)
    for_each_kv_group(a, t0, t1, [&](int64_t hk, const int64_t* tasks, int n) { attend_shared_query(a, hk, tasks, n); });
    return;
  }
  if (t1 - t0 < kMinRows) {
    avx2::attention(a, t0, t1);
    return;
  }
  for_each_kv_group(a, t0, t1, [&](int64_t hk, const int64_t* tasks, int n) {
    if (n >= kMinRows) attend_group(a, hk, tasks, n);
    else
      for (int i = 0; i < n; ++i) avx2::attention(a, tasks[i], tasks[i] + 1);
  });
}

}  // namespace edgellm::avx512
