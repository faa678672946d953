// AVX2+F16C attention: one pass over the visible keys per (query, head) task with an online
// softmax (flash-attention style). Keys are taken in tiles of kTile: scores for the tile, one
// rescale of the running sum and accumulator when the maximum grows, then the weighted V rows.
// Working memory is fixed-size on the stack (head_dim <= kMaxHeadDim).
#include <cmath>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/vecmath.h"
#include "quant/fp16.h"

namespace edgellm::avx2 {

namespace {

constexpr int64_t kTile = 64;
constexpr int64_t kMaxHeadDim = 256;

// q . k over d dims, k in f16. Never reads past k[d - 1].
inline float dot_f16(const float* q, const uint16_t* k, int64_t d) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i))), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i + 8))), acc1);
  }
  for (; i + 8 <= d; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i),
                           _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i))), acc0);
  float s = hsum_ps(_mm256_add_ps(acc0, acc1));
  if (i + 4 <= d) {
    __m128 p = _mm_mul_ps(_mm_loadu_ps(q + i), _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(k + i))));
    p = _mm_add_ps(p, _mm_movehl_ps(p, p));
    s += _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
    i += 4;
  }
  for (; i < d; ++i) s += q[i] * half_to_float(k[i]);
  return s;
}

// acc += w * v over d dims, v in f16.
inline void axpy_f16(float* acc, float w, const uint16_t* v, int64_t d) {
  const __m256 vw = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vw, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(v + i))),
                                              _mm256_loadu_ps(acc + i)));
  if (i + 4 <= d) {
    _mm_storeu_ps(acc + i, _mm_fmadd_ps(_mm256_castps256_ps128(vw),
                                        _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(v + i))),
                                        _mm_loadu_ps(acc + i)));
    i += 4;
  }
  for (; i < d; ++i) acc[i] += w * half_to_float(v[i]);
}

// acc holds d floats in a buffer padded to a multiple of 8.
inline void scale_buf(float* acc, float s, int64_t d) {
  const __m256 vs = _mm256_set1_ps(s);
  for (int64_t i = 0; i < d; i += 8) _mm256_storeu_ps(acc + i, _mm256_mul_ps(_mm256_loadu_ps(acc + i), vs));
}

// Online-softmax state of one task.
struct Online {
  float max = -INFINITY;
  float sum = 0.0f;
  alignas(32) float acc[kMaxHeadDim];
};

// Keys at positions [p0, p1) (all visible), folded into st.
void attend_range(const AttentionArgs& a, const float* q, int64_t hk, int64_t p0, int64_t p1, Online& st) {
  const KvView& kv = a.kv;
  const int64_t d = a.head_dim, stride = a.n_head_kv * d;
  const int64_t ring_len = kv.capacity - kv.sinks;
  alignas(32) float score[kTile];
  int64_t slot_of[kTile];
  for (int64_t t0 = p0; t0 < p1; t0 += kTile) {
    const int64_t n = p1 - t0 < kTile ? p1 - t0 : kTile;
    // Slot of the first key, then step and wrap (positions in one tile are consecutive).
    int64_t slot = t0;
    if (kv.ring && t0 >= kv.sinks) slot = kv.sinks + (t0 - kv.sinks) % ring_len;
    float tile_max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      if (kv.ring && t0 + j >= kv.sinks && slot == kv.capacity) slot = kv.sinks;
      slot_of[j] = slot;
      score[j] = dot_f16(q, kv.k + slot * stride + hk * d, d) * a.scale;
      tile_max = std::fmax(tile_max, score[j]);
      ++slot;
    }
    if (tile_max == -INFINITY) continue;  // nothing to add (also avoids -inf - -inf)
    const int64_t n8 = (n + 7) & ~int64_t(7);
    for (int64_t j = n; j < n8; ++j) score[j] = -INFINITY;  // exp -> 0
    if (tile_max > st.max) {
      const float corr = std::exp(st.max - tile_max);  // 0 on the first tile
      st.sum *= corr;
      scale_buf(st.acc, corr, d);
      st.max = tile_max;
    }
    const __m256 vm = _mm256_set1_ps(st.max);
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t j = 0; j < n8; j += 8) {
      const __m256 p = exp_ps(_mm256_sub_ps(_mm256_load_ps(score + j), vm));
      _mm256_store_ps(score + j, p);
      vsum = _mm256_add_ps(vsum, p);
    }
    st.sum += hsum_ps(vsum);
    for (int64_t j = 0; j < n; ++j) axpy_f16(st.acc, score[j], kv.v + slot_of[j] * stride + hk * d, d);
  }
}

}  // namespace

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) {
  const KvView& kv = a.kv;
  const int64_t d = a.head_dim;
  const int64_t group = a.n_head / a.n_head_kv;
  Online st;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t qi = t / a.n_head, h = t % a.n_head, hk = h / group;
    const int64_t qp = a.pos[qi];
    const float* q = a.q + (qi * a.n_head + h) * d;
    float* out = a.out + (qi * a.n_head + h) * d;
    st.max = -INFINITY;
    st.sum = 0.0f;
    for (int64_t i = 0; i < kMaxHeadDim; ++i) st.acc[i] = 0.0f;
    // Visible positions: the sinks [0, min(S, qp+1)) and the window [max(qp-W+1, ..), qp].
    if (kv.window == 0) {
      attend_range(a, q, hk, 0, qp + 1, st);
    } else {
      const int64_t sink_end = kv.sinks < qp + 1 ? kv.sinks : qp + 1;
      int64_t lo = qp - kv.window + 1;
      if (lo < sink_end) lo = sink_end;
      if (sink_end > 0) attend_range(a, q, hk, 0, sink_end, st);
      attend_range(a, q, hk, lo, qp + 1, st);
    }
    const float inv = st.sum > 0.0f ? 1.0f / st.sum : 0.0f;  // no visible key -> zeros
    for (int64_t i = 0; i < d; ++i) out[i] = st.acc[i] * inv;
  }
}

}  // namespace edgellm::avx2
