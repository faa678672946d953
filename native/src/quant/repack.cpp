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

}  // namespace

void repack_q4_0_x4(const void* src, int64_t rows, int64_t k, void* dst) {
  const int64_t nb = k / kQK;
  const size_t row_bytes = (size_t)nb * sizeof(block_q4_0);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  std::vector<block_q4_0> group((size_t)(4 * nb));  // the group's 4 rows, for in-place repacks
  for (int64_t g = 0; g < rows / 4; ++g) {
    std::memcpy(group.data(), in + (size_t)g * 4 * row_bytes, 4 * row_bytes);
    const block_q4_0* const r[4] = {&group[0], &group[(size_t)nb], &group[(size_t)(2 * nb)], &group[(size_t)(3 * nb)]};
    auto* blocks = reinterpret_cast<block_q4_0x4*>(out + (size_t)g * 4 * row_bytes);
    for (int64_t b = 0; b < nb; ++b) pack_block(r, b, blocks[b]);
  }
  const size_t done = (size_t)q4_0_x4_group_rows(rows) * row_bytes;
  if (out != in) std::memcpy(out + done, in + done, (size_t)(rows % 4) * row_bytes);
}

void unpack_q4_0_x4_group(const block_q4_0x4* group, int64_t nb, block_q4_0* out) {
  for (int64_t b = 0; b < nb; ++b) {
    for (int i = 0; i < 4; ++i) {
      block_q4_0& o = out[i * nb + b];
      o.d = group[b].d[i];
      for (int v = 0; v < 4; ++v)
        for (int t = 0; t < 4; ++t) o.qs[4 * v + t] = (uint8_t)(group[b].qs[16 * v + 4 * i + t] ^ 0x88);
    }
  }
}

void gemm_q4_0_x4_via_rows(GemmFn gemm_q4_0, const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / kQK;
  thread_local std::vector<block_q4_0> rows;
  rows.resize((size_t)(4 * nb));
  for (int64_t g = r0 / 4; g * 4 < r1; ++g) {
    unpack_q4_0_x4_group(reinterpret_cast<const block_q4_0x4*>(a.w + g * 4 * a.w_row_bytes), nb, rows.data());
    GemmArgs t = a;  // the group's 4 rows as rows 0..3, written to y rows 4g..4g+3
    t.w = reinterpret_cast<const uint8_t*>(rows.data());
    t.y = a.y + g * 4;
    gemm_q4_0(t, std::max<int64_t>(r0 - g * 4, 0), std::min<int64_t>(r1 - g * 4, 4));
  }
}

}  // namespace edgellm
