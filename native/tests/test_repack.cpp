// Q4_0 and Q4_K repacked at load (quant/repack.h): the layouts round-trip, and every table's GEMM
// over them (neon-dotprod's sdot tiles under qemu -cpu cortex-a76, the plain NEON table's and
// the reference everywhere) computes what the reference Q4_0 / Q4_K GEMM computes on the file's
// rows: row counts and sub-ranges that start and end inside 4-row groups, odd block counts,
// 1..64 columns with strided y, codes and scales at both ends of their range against activations
// of +-127; and matmul() with rows % 4 tail rows.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gguf_builder.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/repack.h"
#include "quant_blocks.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/matmul.h"
#include "test.h"

using namespace edgellm;
using test::TinyLlamaSpec;
using test::tiny_llama;

namespace {

enum class Codes { Random, High, Low };

struct Problem {
  DType type;  // Q4_0 or Q4_K: the rows as the file stores them
  int64_t rows, k, ncols;
  std::vector<uint8_t> w, packed;  // the file's rows; the same repacked (repacked_type(type))
  std::vector<uint8_t> x;          // activation columns (Q8_0 or Q8_K)
  std::vector<float> xf;
  size_t w_row_bytes() const { return dtype_row_bytes(type, k); }
  size_t x_col_bytes() const { return dtype_row_bytes(dtype_activation(type), k); }
};

// High / Low: every code at its largest / smallest (Q4_K's scales and mins at 63, Q6_K's scales
// at -128), against activations of +1 / -1 (codes of +-127).
Problem make_problem(int64_t rows, int64_t k, int64_t ncols, Codes codes = Codes::Random, DType type = DType::Q4_0) {
  Problem p{type, rows, k, ncols, {}, {}, {}, {}};
  const size_t row_bytes = p.w_row_bytes(), block = dtype_block_bytes(type);
  const bool q4_k = type == DType::Q4_K;
  p.w.resize(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * row_bytes;
    test::random_row(type, row, k);
    if (codes == Codes::Random) continue;
    const uint8_t code_byte = codes == Codes::High ? 0xFF : 0x00;
    for (size_t b = 0; b < row_bytes / block; ++b) {
      uint8_t* blk = row + b * block;
      if (type == DType::Q6_K) {
        std::memset(blk, code_byte, offsetof(block_q6_K, scales));  // ql, qh
        std::memset(blk + offsetof(block_q6_K, scales), 0x80, sizeof(block_q6_K::scales));
        continue;
      }
      if (q4_k) std::memset(blk + offsetof(block_q4_K, scales), 0xFF, kKScaleSize);
      const size_t qs = q4_k ? offsetof(block_q4_K, qs) : offsetof(block_q4_0, qs);
      std::memset(blk + qs, code_byte, block - qs);
    }
  }
  p.packed.resize(p.w.size());
  repack_rows(type, p.w.data(), rows, k, p.packed.data());
  p.xf.resize(k * ncols);
  test::fill_normal(p.xf.data(), k * ncols, 1.0f);
  if (codes != Codes::Random)
    for (float& v : p.xf) v = codes == Codes::High ? 1.0f : -1.0f;
  p.x.resize(p.x_col_bytes() * ncols);
  for (int64_t c = 0; c < ncols; ++c)
    test::quantize_activation(dtype_activation(type), p.xf.data() + c * k, p.x.data() + c * p.x_col_bytes(), k);
  return p;
}

GemmArgs args(const Problem& p, const std::vector<uint8_t>& w, float* y, int64_t y_stride) {
  return GemmArgs{w.data(), p.w_row_bytes(), p.k, p.x.data(), p.x_col_bytes(), p.ncols, y, y_stride};
}

// The scale of the terms of y[c][r]: sum over weights of (|w - min part| + |min part|) * |x|, so
// that the tolerance follows what a different summation order can change.
double magnitude(const Problem& p, int64_t r, int64_t c) {
  std::vector<float> w((size_t)p.k), o((size_t)p.k);
  dequantize_row(p.type, p.w.data() + r * p.w_row_bytes(), w.data(), p.k);
  test::offset_part(p.type, p.w.data() + r * p.w_row_bytes(), p.k, o.data());
  double m = 0;
  for (int64_t i = 0; i < p.k; ++i)
    m += (std::abs((double)w[i] - o[i]) + std::abs((double)o[i])) * std::abs((double)p.xf[c * p.k + i]);
  return m;
}

std::string describe(const KernelTable& kt, const Problem& p, int64_t r0, int64_t r1) {
  return std::string(kt.name) + " " + dtype_name(repacked_type(p.type)) + " rows=" + std::to_string(p.rows) +
         " k=" + std::to_string(p.k) + " ncols=" + std::to_string(p.ncols) + " range=[" + std::to_string(r0) + "," +
         std::to_string(r1) + ")";
}

// kt's GEMM over the packed rows [r0, r1) against the reference GEMM over the file's rows; y
// outside the range must stay untouched.
void check_range(const KernelTable& kt, const Problem& p, int64_t r0, int64_t r1) {
  const int64_t stride = p.rows + 3;  // strided y columns
  const float kUntouched = -12345.0f;
  std::vector<float> want((size_t)(stride * p.ncols), kUntouched), got(want.size(), kUntouched);
  kReferenceKernels.gemm_for(p.type)(args(p, p.w, want.data(), stride), r0, r1);
  kt.gemm_for(repacked_type(p.type))(args(p, p.packed, got.data(), stride), r0, r1);
  for (int64_t c = 0; c < p.ncols; ++c)
    for (int64_t r = 0; r < stride; ++r) {
      const float g = got[c * stride + r], w = want[c * stride + r];
      if (r < r0 || r >= r1) {
        if (g != kUntouched) {
          test::fail(__FILE__, __LINE__, describe(kt, p, r0, r1) + ": wrote y outside the range at row " + std::to_string(r));
          return;
        }
        continue;
      }
      const double tol = 2e-6 * magnitude(p, r, c) + 1e-30;
      if (!(std::abs((double)g - (double)w) <= tol)) {
        test::fail(__FILE__, __LINE__, describe(kt, p, r0, r1) + ": y[" + std::to_string(c) + "][" + std::to_string(r) +
                                           "] = " + std::to_string(g) + ", reference " + std::to_string(w));
        return;
      }
    }
}

std::vector<const KernelTable*> repacking_tables() {
  std::vector<const KernelTable*> out;
  for (const KernelTable* kt : runnable_kernel_tables())
    if (kt->gemm_q4_0_x4) out.push_back(kt);
  return out;
}

// matmul() over the packed matrix on kt against the reference over the file's rows, every row.
void check_matmul(ThreadPool& pool, const KernelTable& kt, const Problem& p, int threads) {
  MatmulScratch scratch;
  std::vector<float> want((size_t)(p.rows * p.ncols)), got(want.size(), -1.0f);
  matmul(pool, kReferenceKernels, p.type, p.w.data(), p.rows, p.k, p.xf.data(), p.ncols, want.data(), scratch);
  matmul(pool, kt, repacked_type(p.type), p.packed.data(), p.rows, p.k, p.xf.data(), p.ncols, got.data(), scratch);
  std::string why;
  if (!test::near_all(got.data(), want.data(), (int64_t)got.size(), 1e-5, 1e-5, &why))
    test::fail(__FILE__, __LINE__, std::string(kt.name) + " " + dtype_name(repacked_type(p.type)) + " rows=" +
                                       std::to_string(p.rows) + " ncols=" + std::to_string(p.ncols) +
                                       " threads=" + std::to_string(threads) + ": " + why);
}

}  // namespace

TEST(repack, q4_0_x4_round_trips_in_place_and_keeps_the_tail_rows) {
  for (int64_t rows : {1, 3, 4, 5, 8, 11}) {
    for (int64_t k : {32, 96, 224}) {
      const Problem p = make_problem(rows, k, 1);
      const int64_t nb = k / kQK;
      const size_t row_bytes = dtype_row_bytes(DType::Q4_0, k);
      std::vector<uint8_t> in_place = p.w;
      repack_q4_0_x4(in_place.data(), rows, k, in_place.data());
      CHECK_MSG(in_place == p.packed, "in-place repack differs, rows=" + std::to_string(rows) + " k=" + std::to_string(k));
      std::vector<block_q4_0> back((size_t)(4 * nb));
      for (int64_t g = 0; g < rows / 4; ++g) {
        unpack_q4_0_x4_group(reinterpret_cast<const block_q4_0x4*>(p.packed.data() + g * 4 * row_bytes), nb, back.data());
        CHECK_MSG(std::memcmp(back.data(), p.w.data() + g * 4 * row_bytes, 4 * row_bytes) == 0,
                  "group " + std::to_string(g) + " does not unpack to its rows");
      }
      const size_t tail = (size_t)x4_group_rows(rows) * row_bytes;
      CHECK_MSG(std::memcmp(p.packed.data() + tail, p.w.data() + tail, p.w.size() - tail) == 0, "tail rows changed");
      if (rows >= 4) CHECK_MSG(std::memcmp(p.packed.data(), p.w.data(), 4 * row_bytes) != 0, "the first group was not repacked");
    }
  }
}

TEST(repack, q4_0_x4_gemms_match_the_q4_0_reference) {
  const auto tables = repacking_tables();
  CHECK(!tables.empty());  // the reference always has one
  for (const KernelTable* kt : tables) {
    for (int64_t k : {32, 96, 224, 1024})
      for (int64_t ncols : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 24, 64}) {
        if (k == 1024 && ncols > 8 && ncols != 64) continue;
        const Problem p = make_problem(12, k, ncols);
        for (const auto& range : std::vector<std::pair<int64_t, int64_t>>{{0, 12}, {1, 12}, {0, 11}, {2, 3}, {5, 11}, {3, 9}, {4, 8}, {6, 7}})
          check_range(*kt, p, range.first, range.second);
      }
    // Codes at both ends of their range with activations of +-127 (the int32 sums stay exact).
    for (Codes codes : {Codes::High, Codes::Low})
      for (int64_t ncols : {1, 4, 8, 11}) check_range(*kt, make_problem(8, 4096, ncols, codes), 0, 8);
  }
}

TEST(repack, matmul_runs_q4_0_x4_with_tail_rows_like_q4_0) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const KernelTable* kt : repacking_tables())
      for (int64_t rows : {1, 2, 3, 4, 5, 7, 13, 30, 66})
        for (int64_t ncols : {1, 3, 17}) check_matmul(pool, *kt, make_problem(rows, 96, ncols), threads);
  }
}

// Q4_K and Q6_K: the super-block layouts.
constexpr DType kSuperBlockTypes[] = {DType::Q4_K, DType::Q6_K};

// Group g of p.packed back to its 4 rows' bytes.
std::vector<uint8_t> unpacked_group(const Problem& p, int64_t g) {
  const int64_t nb = p.k / kQKK;
  const uint8_t* group = p.packed.data() + g * 4 * p.w_row_bytes();
  std::vector<uint8_t> out(4 * p.w_row_bytes());
  if (p.type == DType::Q4_K)
    unpack_q4_k_x4_group(reinterpret_cast<const block_q4_Kx4*>(group), nb, reinterpret_cast<block_q4_K*>(out.data()));
  else
    unpack_q6_k_x4_group(reinterpret_cast<const block_q6_Kx4*>(group), nb, reinterpret_cast<block_q6_K*>(out.data()));
  return out;
}

TEST(repack, k_quant_x4_layouts_round_trip_in_place_and_keep_the_tail_rows) {
  for (DType type : kSuperBlockTypes) {
    for (int64_t rows : {1, 3, 4, 5, 8, 11})
      for (int64_t k : {256, 768}) {
        const Problem p = make_problem(rows, k, 1, Codes::Random, type);
        const size_t row_bytes = p.w_row_bytes();
        std::vector<uint8_t> in_place = p.w;
        repack_rows(type, in_place.data(), rows, k, in_place.data());
        CHECK_MSG(in_place == p.packed, std::string(dtype_name(type)) + " in-place repack differs, rows=" +
                                            std::to_string(rows) + " k=" + std::to_string(k));
        for (int64_t g = 0; g < rows / 4; ++g)
          CHECK_MSG(std::memcmp(unpacked_group(p, g).data(), p.w.data() + g * 4 * row_bytes, 4 * row_bytes) == 0,
                    std::string(dtype_name(type)) + " group " + std::to_string(g) + " does not unpack to its rows");
        const size_t tail = (size_t)x4_group_rows(rows) * row_bytes;
        CHECK_MSG(std::memcmp(p.packed.data() + tail, p.w.data() + tail, p.w.size() - tail) == 0, "tail rows changed");
        if (rows >= 4) CHECK_MSG(std::memcmp(p.packed.data(), p.w.data(), 4 * row_bytes) != 0, "the first group was not repacked");
      }
  }
}

// The layout itself, on one hand-made group: what the kernels read where (quant/repack.h).
TEST(repack, q4_k_x4_puts_scales_mins_and_codes_where_the_kernels_read_them) {
  block_q4_K rows[4];
  std::memset(rows, 0, sizeof rows);
  for (int i = 0; i < 4; ++i) {
    rows[i].d = (uint16_t)(0x3C00 + i);
    rows[i].dmin = (uint16_t)(0x4000 + i);
    // Sub-block s of row i: scale 8 i + s, min 63 - 8 i - s (every bit position in use). Scales
    // and mins 0..3 in the low 6 bits of bytes 0..3 / 4..7; 4..7 split as get_scale_min_k4 reads them.
    for (int j = 0; j < 4; ++j) {
      const int sc_lo = 8 * i + j, sc_hi = 8 * i + j + 4, m_lo = 63 - sc_lo, m_hi = 63 - sc_hi;
      rows[i].scales[j] = (uint8_t)(sc_lo | (sc_hi >> 4) << 6);
      rows[i].scales[j + 4] = (uint8_t)(m_lo | (m_hi >> 4) << 6);
      rows[i].scales[j + 8] = (uint8_t)((sc_hi & 15) | (m_hi & 15) << 4);
    }
    // Weight w of row i has code (w + i) % 16.
    for (int w = 0; w < kQKK; ++w) {
      uint8_t& byte = rows[i].qs[32 * (w / 64) + w % 32];
      byte |= (uint8_t)(((w + i) % 16) << ((w % 64) < 32 ? 0 : 4));
    }
  }
  block_q4_Kx4 g;
  repack_q4_k_x4(rows, 4, kQKK, &g);
  for (int i = 0; i < 4; ++i) {
    CHECK(g.d[i] == rows[i].d && g.dmin[i] == rows[i].dmin);
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      get_scale_min_k4(s, rows[i].scales, &sc, &m);
      CHECK(sc == 8 * i + s && m == 63 - 8 * i - s);
      const uint8_t packed = g.sm[16 * (s / 4) + 4 * i + s % 4], low = g.sm[32 + 4 * i + s % 4];
      CHECK_MSG((packed & 0x3F) == sc, "scale of row " + std::to_string(i) + " sub-block " + std::to_string(s));
      CHECK_MSG(((packed >> 6) << 4 | (s < 4 ? low & 15 : low >> 4)) == m, "min of row " + std::to_string(i) + " sub-block " + std::to_string(s));
      for (int v = 0; v < 4; ++v)
        for (int t = 0; t < 4; ++t) {
          const uint8_t byte = g.qs[64 * s + 16 * v + 4 * i + t];
          CHECK((byte & 15) == (32 * s + 4 * v + t + i) % 16);
          CHECK((byte >> 4) == (32 * s + 16 + 4 * v + t + i) % 16);
        }
    }
  }
}

TEST(repack, k_quant_x4_gemms_match_the_reference_over_the_rows) {
  for (DType type : kSuperBlockTypes) {
    for (const KernelTable* kt : repacking_tables()) {
      // k = 256 n with n odd and even; sub-ranges that start and end inside groups (the tail rows
      // past the last group are matmul()'s, below).
      for (int64_t k : {256, 512, 768, 1280})
        for (int64_t ncols : {1, 2, 3, 4, 5, 7, 8, 9, 17, 64}) {
          if (k > 512 && ncols > 9 && ncols != 64) continue;
          const Problem p = make_problem(12, k, ncols, Codes::Random, type);
          for (const auto& range : std::vector<std::pair<int64_t, int64_t>>{{0, 12}, {1, 12}, {0, 11}, {2, 3}, {5, 11}, {3, 9}, {4, 8}, {6, 7}})
            check_range(*kt, p, range.first, range.second);
        }
      // Codes, scales and mins at both ends against activations of +-127 (the int32 sums stay exact).
      for (Codes codes : {Codes::High, Codes::Low})
        for (int64_t ncols : {1, 4, 5}) check_range(*kt, make_problem(8, 4096, ncols, codes, type), 0, 8);
    }
  }
}

TEST(repack, matmul_runs_k_quant_x4_with_tail_rows_like_the_rows) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (DType type : kSuperBlockTypes)
      for (const KernelTable* kt : repacking_tables())
        for (int64_t rows : {1, 3, 4, 5, 7, 13, 30, 66})
          for (int64_t ncols : {1, 3, 6}) check_matmul(pool, *kt, make_problem(rows, 768, ncols, Codes::Random, type), threads);
  }
}

TEST(repack, matmul_refuses_q4_0_x4_for_a_table_without_its_gemm) {
  KernelTable t = kReferenceKernels;
  t.name = "no-repack";
  t.gemm_q4_0_x4 = nullptr;
  ThreadPool pool(1);
  MatmulScratch scratch;
  const Problem p = make_problem(4, 32, 1);
  std::vector<float> y(4);
  std::string what;
  try {
    matmul(pool, t, DType::Q4_0_X4, p.packed.data(), 4, 32, p.xf.data(), 1, y.data(), scratch);
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK_MSG(what.find("EDGELLM_REPACK=0") != std::string::npos, "got: " + what);
}

// ---- models: which matrices are repacked, the logits, and the memory ----------------------
namespace {

// Sets EDGELLM_REPACK for one scope.
struct RepackEnv {
  explicit RepackEnv(const char* v) { setenv("EDGELLM_REPACK", v, 1); }
  ~RepackEnv() { unsetenv("EDGELLM_REPACK"); }
};

std::vector<float> logits_of(const Model& m, const KernelTable& kt, const std::vector<int32_t>& prompt) {
  ThreadPool pool(2);
  ForwardOptions o;
  o.context = 32;
  o.batch = 8;
  ForwardPass f(m, pool, o, kt);
  KvCache seq(f.cache_config());
  const int64_t V = m.config().n_vocab;
  std::vector<float> out(2 * (size_t)V);
  f.prefill(seq, prompt.data(), (int64_t)prompt.size(), false, out.data());
  BatchToken t{&seq, (int64_t)prompt.size(), 3, true};
  f.step(&t, 1, out.data() + V);
  return out;
}

// kB of a /proc/self/status field (VmRSS, VmHWM); -1 when there is none.
int64_t status_kb(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  int64_t kb = -1;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') kb = std::atoll(line + n + 1);
  std::fclose(f);
  return kb;
}

// Reads one byte per page of every matrix, as a first forward pass would.
uint64_t touch(const ModelWeights& w) {
  uint64_t sum = 0;
  auto read = [&](const WeightMatrix& m, int64_t count) {
    if (!m.present()) return;
    const auto* p = static_cast<const volatile uint8_t*>(m.data);
    const size_t bytes = (size_t)count * (size_t)m.rows * m.row_bytes();
    for (size_t i = 0; i < bytes; i += 4096) sum += p[i];
  };
  read(w.token_embd, 1);
  read(w.output, 1);
  for (const LayerWeights& L : w.layers)
    for (const WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) read(*m, 1);
  return sum;
}

}  // namespace

// The model of s loaded as stored and repacked ("force"), and the logits of a short prompt: the
// repacked model's on every table that runs repacked weights must be the stored one's on the
// reference. Returns the two models for the callers' checks of what was repacked.
static std::pair<std::unique_ptr<Model>, std::unique_ptr<Model>> check_repacked_logits(const TinyLlamaSpec& s) {
  const std::vector<uint8_t> bytes = tiny_llama(s).bytes();
  const std::vector<int32_t> prompt = {5, 17, 42, 3, 77};
  std::unique_ptr<Model> plain, packed;
  {
    RepackEnv off("0");
    plain = Model::from_file(GgufFile::from_bytes(bytes, "tiny.gguf"));
  }
  {
    RepackEnv on("force");
    packed = Model::from_file(GgufFile::from_bytes(bytes, "tiny.gguf"));
  }
  const std::vector<float> want = logits_of(*plain, kReferenceKernels, prompt);
  for (const KernelTable* kt : repacking_tables()) {
    const std::vector<float> got = logits_of(*packed, *kt, prompt);
    std::string why;
    if (!test::near_all(got.data(), want.data(), (int64_t)want.size(), 1e-3, 1e-4, &why))
      test::fail(__FILE__, __LINE__, std::string(kt->name) + ": " + why);
  }
  return {std::move(plain), std::move(packed)};
}

TEST(repack, a_model_repacks_its_q4_0_matrices_and_keeps_its_logits) {
  TinyLlamaSpec s;
  s.n_vocab = 98;  // the classifier ends with 2 plain rows
  s.random_blocks_of = [](const std::string&) { return DType::Q4_0; };
  const auto [plain, packed] = check_repacked_logits(s);
  CHECK(plain->weights().layers[0].wq.type == DType::Q4_0);
  CHECK(packed->weights().layers[0].wq.type == DType::Q4_0_X4);
  CHECK(packed->weights().layers[1].ffn_down.type == DType::Q4_0_X4);
  CHECK(packed->weights().output.type == DType::Q4_0_X4);
  CHECK(packed->weights().token_embd.type == DType::Q4_0);  // read by row: never repacked
}

// The same for a Q4_K_M-like model (Q6_K for ffn_down and the classifier, Q4_K elsewhere; k =
// n_embd = 256 per super-block; the classifier's 98 rows end with 2 plain Q6_K rows).
TEST(repack, a_model_repacks_its_q4_k_and_q6_k_matrices_and_keeps_its_logits) {
  TinyLlamaSpec s;
  s.n_vocab = 98;
  s.n_embd = 256;
  s.n_ff = 512;
  s.random_blocks_of = [](const std::string& name) {
    return name.find("ffn_down") != std::string::npos || name == "output.weight" ? DType::Q6_K : DType::Q4_K;
  };
  const auto [plain, packed] = check_repacked_logits(s);
  CHECK(plain->weights().layers[0].wq.type == DType::Q4_K);
  CHECK(packed->weights().layers[0].wq.type == DType::Q4_K_X4);
  CHECK(packed->weights().layers[1].ffn_gate.type == DType::Q4_K_X4);
  CHECK(packed->weights().layers[1].ffn_down.type == DType::Q6_K_X4);
  CHECK(packed->weights().output.type == DType::Q6_K_X4);
  CHECK(packed->weights().token_embd.type == DType::Q4_K);  // read by row: never repacked
}

// Sets EDGELLM_EXPERT_PAGING for one scope.
struct PagingEnv {
  explicit PagingEnv(const char* v) { setenv("EDGELLM_EXPERT_PAGING", v, 1); }
  ~PagingEnv() { unsetenv("EDGELLM_EXPERT_PAGING"); }
};

// An MoE too large for RAM keeps its experts paged: repacking them would pin private copies of
// every expert (the whole file, for an MoE), so they stay Q4_0 while the rest is repacked, and
// the logits are those of the file as stored on every table that runs repacked weights.
TEST(repack, a_paged_moe_leaves_its_experts_as_stored_and_keeps_its_logits) {
  TinyLlamaSpec s;
  s.n_expert = 8;
  s.n_expert_used = 2;
  s.random_blocks_of = [](const std::string&) { return DType::Q4_0; };
  const std::string path = "/tmp/edgellm-paged-moe-" + std::to_string((long)getpid()) + ".gguf";
  {
    const std::vector<uint8_t> bytes = tiny_llama(s).bytes();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    CHECK(f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    if (f) std::fclose(f);
  }
  const std::vector<int32_t> prompt = {5, 17, 42, 3, 77};
  std::unique_ptr<Model> plain, paged, pinned;
  {
    RepackEnv off("0");
    PagingEnv no("off");
    plain = Model::load(path);
  }
  {
    RepackEnv on("force");
    PagingEnv yes("on");
    paged = Model::load(path);
  }
  {
    RepackEnv on("force");
    PagingEnv no("off");
    pinned = Model::load(path);
  }
  std::remove(path.c_str());  // the mappings keep the file alive
  const LayerWeights& P = paged->weights().layers[1];
  CHECK(paged->weights().experts_paged);
  CHECK(!plain->weights().experts_paged && !pinned->weights().experts_paged);
  CHECK(P.gate_exps.paged_from == &paged->file() && P.down_exps.paged_from == &paged->file());
  CHECK(P.gate_exps.first.type == DType::Q4_0 && P.up_exps.first.type == DType::Q4_0 && P.down_exps.first.type == DType::Q4_0);
  CHECK(P.wq.type == DType::Q4_0_X4 && P.wo.type == DType::Q4_0_X4);  // the rest is repacked as before
  CHECK(pinned->weights().layers[1].gate_exps.first.type == DType::Q4_0_X4);
  CHECK(pinned->weights().layers[1].gate_exps.paged_from == nullptr);
  const std::vector<float> want = logits_of(*plain, kReferenceKernels, prompt);
  for (const KernelTable* kt : repacking_tables()) {
    const std::vector<float> got = logits_of(*paged, *kt, prompt);
    std::string why;
    if (!test::near_all(got.data(), want.data(), (int64_t)want.size(), 1e-3, 1e-4, &why))
      test::fail(__FILE__, __LINE__, std::string(kt->name) + ": " + why);
  }
}

// A repacked model must not hold its weights twice: the in-place repack writes private copies of
// the mapping's pages, which replace the file's pages. Steady RSS after every weight page is
// read, repack on vs off, for a ~17 MB Q4_0 file (RSS is the same under qemu-user).
TEST(repack, a_repacked_model_costs_no_more_rss_than_the_file) {
  TinyLlamaSpec s;
  s.n_vocab = 2000;
  s.n_embd = 768;
  s.n_ff = 2048;
  s.n_layer = 4;
  s.random_blocks_of = [](const std::string&) { return DType::Q4_0; };
  const std::string path = "/tmp/edgellm-repack-rss-" + std::to_string((long)getpid()) + ".gguf";
  int64_t file_kb = 0;
  {
    const std::vector<uint8_t> bytes = tiny_llama(s).bytes();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    CHECK(f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    if (f) std::fclose(f);
    file_kb = (int64_t)bytes.size() / 1024;
  }
  int64_t grew_kb[2] = {0, 0};
  const char* modes[2] = {"0", "force"};
  for (int i = 0; i < 2; ++i) {
    RepackEnv env(modes[i]);
    const int64_t before = status_kb("VmRSS");
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<Model> m = Model::load(path);
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t sum = touch(m->weights());
    grew_kb[i] = status_kb("VmRSS") - before;
    std::printf("  repack=%s: file %lld KiB, load %.0f ms, RSS +%lld KiB after reading every weight page (%llu)\n",
                modes[i], (long long)file_kb, load_ms, (long long)grew_kb[i], (unsigned long long)(sum & 1));
    CHECK(m->weights().layers[0].wq.type == (i == 0 ? DType::Q4_0 : DType::Q4_0_X4));
  }
  std::remove(path.c_str());
  if (status_kb("VmRSS") < 0) {
    std::printf("  SKIPPED: no /proc/self/status VmRSS\n");
    return;
  }
  CHECK_MSG(grew_kb[1] <= file_kb + 64 * 1024, "repacked RSS grew by " + std::to_string(grew_kb[1]) + " KiB for a " +
                                                    std::to_string(file_kb) + " KiB file");
  // Twice the weights would be ~file_kb more; allow page-table and allocator noise.
  CHECK_MSG(grew_kb[1] <= grew_kb[0] + file_kb / 10 + 2048,
            "repacked RSS +" + std::to_string(grew_kb[1]) + " KiB vs +" + std::to_string(grew_kb[0]) + " KiB as stored");
}
