#include "quant/repack.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace edgellm {

namespace {

// One group's block from the 4 rows' block b (rows[i] = row i's blocks).
void pack_block(const block_q4_0* const (&rows)[4], int64_t b, block_q4_0x4& out) {
  for (int i = 0; i < 4; ++i) {
    const block_q4_0& in = rows[i][b];
    out.d[i] = in.d;
    for (int v = 0; v < 4; ++v)
      for (int t = 0; t < 4; ++t) out.qs[16 * v + 4 * i + t] = (uint8_t)(in.qs[4 * v + t] ^ 0x88);
  }
}

void unpack_block(const block_q4_0x4& in, int i, block_q4_0& o) {
  o.d = in.d[i];
  for (int v = 0; v < 4; ++v)
    for (int t = 0; t < 4; ++t) o.qs[4 * v + t] = (uint8_t)(in.qs[16 * v + 4 * i + t] ^ 0x88);
}

// Weight w (0..255) of a Q4_K super-block's codes: chunk w / 64, low nibbles first.
uint8_t q4_k_code(const block_q4_K& b, int w) {
  const uint8_t byte = b.qs[32 * (w / 64) + w % 32];
  return (w % 64) < 32 ? (uint8_t)(byte & 0x0F) : (uint8_t)(byte >> 4);
}
void set_q4_k_code(block_q4_K& b, int w, uint8_t q) {
  uint8_t& byte = b.qs[32 * (w / 64) + w % 32];
  byte = (w % 64) < 32 ? (uint8_t)((byte & 0xF0) | q) : (uint8_t)((byte & 0x0F) | (q << 4));
}

void pack_block(const block_q4_K* const (&rows)[4], int64_t b, block_q4_Kx4& out) {
  uint8_t code[kQKK];  // one row's codes in weight order, decoded once (load time)
  for (int i = 0; i < 4; ++i) {
    const block_q4_K& in = rows[i][b];
    for (int w = 0; w < kQKK; ++w) code[w] = q4_k_code(in, w);
    out.d[i] = in.d;
    out.dmin[i] = in.dmin;
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      get_scale_min_k4(s, in.scales, &sc, &m);
      const int h = s / 4, j = s % 4;
      out.sm[16 * h + 4 * i + j] = (uint8_t)(sc | (m >> 4) << 6);
      uint8_t& low = out.sm[32 + 4 * i + j];  // s < 4 writes it before s + 4 adds its nibble
      low = h == 0 ? (uint8_t)(m & 0x0F) : (uint8_t)(low | (m & 0x0F) << 4);
      for (int v = 0; v < 4; ++v)
        for (int t = 0; t < 4; ++t)
          out.qs[64 * s + 16 * v + 4 * i + t] = (uint8_t)(code[32 * s + 4 * v + t] | code[32 * s + 16 + 4 * v + t] << 4);
    }
  }
}

// The inverse of get_scale_min_k4 over the 8 sub-blocks: all 96 bits of the 12 bytes carry a
// scale or min bit, so a row's bytes come back exactly.
void set_scales_mins_k4(const uint8_t (&sc)[8], const uint8_t (&m)[8], uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
    q[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
    q[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4);
  }
}

void unpack_block(const block_q4_Kx4& in, int i, block_q4_K& o) {
  o.d = in.d[i];
  o.dmin = in.dmin[i];
  uint8_t sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    const int h = s / 4, j = s % 4;
    const uint8_t packed = in.sm[16 * h + 4 * i + j];
    const uint8_t low = in.sm[32 + 4 * i + j];
    sc[s] = packed & 0x3F;
    m[s] = (uint8_t)((packed >> 6) << 4 | (h == 0 ? low & 0x0F : low >> 4));
    for (int v = 0; v < 4; ++v)
      for (int t = 0; t < 4; ++t) {
        const uint8_t byte = in.qs[64 * s + 16 * v + 4 * i + t];
        set_q4_k_code(o, 32 * s + 4 * v + t, byte & 0x0F);
        set_q4_k_code(o, 32 * s + 16 + 4 * v + t, byte >> 4);
      }
  }
  set_scales_mins_k4(sc, m, o.scales);
}

// Weight w (0..255) of a Q6_K super-block's 6-bit code (0..63): per 128 weights (half h), weight
// 32 g + l has its low 4 bits in ql[64 h + l + 32 (g % 2)] (low nibble for g < 2) and its high 2
// in qh[32 h + l] >> 2 g.
uint8_t q6_k_code(const block_q6_K& b, int w) {
  const int h = w / 128, g = (w % 128) / 32, l = w % 32;
  const uint8_t ql = b.ql[64 * h + l + 32 * (g % 2)];
  return (uint8_t)((g < 2 ? ql & 0x0F : ql >> 4) | ((b.qh[32 * h + l] >> (2 * g)) & 3) << 4);
}
void set_q6_k_code(block_q6_K& b, int w, uint8_t q) {
  const int h = w / 128, g = (w % 128) / 32, l = w % 32;
  uint8_t& ql = b.ql[64 * h + l + 32 * (g % 2)];
  ql = g < 2 ? (uint8_t)((ql & 0xF0) | (q & 0x0F)) : (uint8_t)((ql & 0x0F) | (q & 0x0F) << 4);
  uint8_t& qh = b.qh[32 * h + l];
  qh = (uint8_t)((qh & ~(3 << (2 * g))) | (q >> 4) << (2 * g));
}

// Where Q6_K_X4 keeps the high 2 bits of lane v's weights of a sub-block in its qh byte.
constexpr int kQ6QhShift[4] = {0, 4, 2, 6};

void pack_block(const block_q6_K* const (&rows)[4], int64_t b, block_q6_Kx4& out) {
  uint8_t code[kQKK];  // as for Q4_K
  for (int i = 0; i < 4; ++i) {
    const block_q6_K& in = rows[i][b];
    for (int w = 0; w < kQKK; ++w) code[w] = q6_k_code(in, w);
    out.d[i] = in.d;
    for (int s = 0; s < 16; ++s) {
      out.sc[16 * (s / 4) + 4 * i + s % 4] = in.scales[s];
      for (int t = 0; t < 4; ++t) {
        uint8_t qh = 0;
        for (int v = 0; v < 4; ++v) qh = (uint8_t)(qh | (code[16 * s + 4 * v + t] >> 4) << kQ6QhShift[v]);
        out.qh[16 * s + 4 * i + t] = qh;
        for (int u = 0; u < 2; ++u)
          out.ql[32 * s + 16 * u + 4 * i + t] =
              (uint8_t)((code[16 * s + 8 * u + t] & 0x0F) | (code[16 * s + 8 * u + 4 + t] & 0x0F) << 4);
      }
    }
  }
}

void unpack_block(const block_q6_Kx4& in, int i, block_q6_K& o) {
  o.d = in.d[i];
  for (int s = 0; s < 16; ++s) {
    o.scales[s] = in.sc[16 * (s / 4) + 4 * i + s % 4];
    for (int t = 0; t < 4; ++t) {
      const uint8_t qh = in.qh[16 * s + 4 * i + t];
      for (int v = 0; v < 4; ++v) {
        const uint8_t ql = in.ql[32 * s + 16 * (v / 2) + 4 * i + t];
        const uint8_t low = v % 2 == 0 ? ql & 0x0F : ql >> 4;
        set_q6_k_code(o, 16 * s + 4 * v + t, (uint8_t)(low | ((qh >> kQ6QhShift[v]) & 3) << 4));
      }
    }
  }
}

// rows x k of Row blocks (BlockElems weights each) -> groups of Group blocks, in place or not.
template <class Row, class Group, int64_t BlockElems>
void repack_groups(const void* src, int64_t rows, int64_t k, void* dst) {
  const int64_t nb = k / BlockElems;
  const size_t row_bytes = (size_t)nb * sizeof(Row);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  std::vector<Row> group((size_t)(4 * nb));  // the group's 4 rows, for in-place repacks
  for (int64_t g = 0; g < rows / 4; ++g) {
    std::memcpy(group.data(), in + (size_t)g * 4 * row_bytes, 4 * row_bytes);
    const Row* const r[4] = {&group[0], &group[(size_t)nb], &group[(size_t)(2 * nb)], &group[(size_t)(3 * nb)]};
    auto* blocks = reinterpret_cast<Group*>(out + (size_t)g * 4 * row_bytes);
    for (int64_t b = 0; b < nb; ++b) pack_block(r, b, blocks[b]);
  }
  const size_t done = (size_t)x4_group_rows(rows) * row_bytes;
  if (out != in) std::memcpy(out + done, in + done, (size_t)(rows % 4) * row_bytes);
}

template <class Row, class Group>
void unpack_group(const Group* group, int64_t nb, Row* out) {
  for (int64_t b = 0; b < nb; ++b)
    for (int i = 0; i < 4; ++i) unpack_block(group[b], i, out[i * nb + b]);
}

// A repacked GEMM through the plain one: each group of [r0, r1) back to its 4 rows (a
// per-thread buffer that only grows), then `gemm` on them.
template <class Row, class Group, int64_t BlockElems>
void gemm_via_rows(GemmFn gemm, const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / BlockElems;
  thread_local std::vector<Row> rows;
  rows.resize((size_t)(4 * nb));
  for (int64_t g = r0 / 4; g * 4 < r1; ++g) {
    unpack_group(reinterpret_cast<const Group*>(a.w + g * 4 * a.w_row_bytes), nb, rows.data());
    GemmArgs t = a;  // the group's 4 rows as rows 0..3, written to y rows 4g..4g+3
    t.w = reinterpret_cast<const uint8_t*>(rows.data());
    t.y = a.y + g * 4;
    gemm(t, std::max<int64_t>(r0 - g * 4, 0), std::min<int64_t>(r1 - g * 4, 4));
  }
}

}  // namespace

DType repacked_type(DType t) {
  switch (t) {
    case DType::Q4_0: return DType::Q4_0_X4;
    case DType::Q4_K: return DType::Q4_K_X4;
    case DType::Q6_K: return DType::Q6_K_X4;
    default: return t;
  }
}

DType plain_type(DType t) {
  switch (t) {
    case DType::Q4_0_X4: return DType::Q4_0;
    case DType::Q4_K_X4: return DType::Q4_K;
    case DType::Q6_K_X4: return DType::Q6_K;
    default: return t;
  }
}

void repack_q4_0_x4(const void* src, int64_t rows, int64_t k, void* dst) {
  repack_groups<block_q4_0, block_q4_0x4, kQK>(src, rows, k, dst);
}
void unpack_q4_0_x4_group(const block_q4_0x4* group, int64_t nb, block_q4_0* out) { unpack_group(group, nb, out); }
void gemm_q4_0_x4_via_rows(GemmFn gemm_q4_0, const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_via_rows<block_q4_0, block_q4_0x4, kQK>(gemm_q4_0, a, r0, r1);
}

void repack_q4_k_x4(const void* src, int64_t rows, int64_t k, void* dst) {
  repack_groups<block_q4_K, block_q4_Kx4, kQKK>(src, rows, k, dst);
}
void unpack_q4_k_x4_group(const block_q4_Kx4* group, int64_t nb, block_q4_K* out) { unpack_group(group, nb, out); }
void gemm_q4_k_x4_via_rows(GemmFn gemm_q4_k, const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_via_rows<block_q4_K, block_q4_Kx4, kQKK>(gemm_q4_k, a, r0, r1);
}

void repack_q6_k_x4(const void* src, int64_t rows, int64_t k, void* dst) {
  repack_groups<block_q6_K, block_q6_Kx4, kQKK>(src, rows, k, dst);
}
void unpack_q6_k_x4_group(const block_q6_Kx4* group, int64_t nb, block_q6_K* out) { unpack_group(group, nb, out); }
void gemm_q6_k_x4_via_rows(GemmFn gemm_q6_k, const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_via_rows<block_q6_K, block_q6_Kx4, kQKK>(gemm_q6_k, a, r0, r1);
}

void repack_rows(DType t, const void* src, int64_t rows, int64_t k, void* dst) {
  if (t == DType::Q4_0) repack_q4_0_x4(src, rows, k, dst);
  if (t == DType::Q4_K) repack_q4_k_x4(src, rows, k, dst);
  if (t == DType::Q6_K) repack_q6_k_x4(src, rows, k, dst);
}

}  // namespace edgellm
