#include "model/model.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant/repack.h"

namespace edgellm {

namespace {

std::string shape_str(const int64_t* ne, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string((long long)ne[i]);
  return s + "]";
}

// Binds tensors by name, checking each one's shape (ggml ne order) against what the
// hyperparameters say it must be.
class Binder {
 public:
  explicit Binder(const GgufFile& f) : f_(f) {}

  // nullptr when the tensor is absent and optional.
  const GgufTensor* find(const std::string& name, std::initializer_list<int64_t> shape, bool required) const {
    const GgufTensor* t = f_.find_tensor(name);
    if (!t) {
      if (required) throw ModelError("E_MODEL_CORRUPT", f_.path() + ": tensor '" + name + "' is missing");
      return nullptr;
    }
    int64_t want[4] = {1, 1, 1, 1};
    int n = 0;
    for (int64_t d : shape) want[n++] = d;
    bool ok = true;
    for (int i = 0; i < 4; ++i) ok = ok && t->ne[i] == want[i];
    if (!ok) {
      const int shown = t->n_dims > n ? t->n_dims : n;
      throw ModelError("E_MODEL_CORRUPT", f_.path() + ": tensor '" + name + "' has shape " +
                                              shape_str(t->ne, shown) + ", expected " + shape_str(want, n));
    }
    return t;
  }

  // A matrix of `rows` x `cols` (ggml shape [cols, rows]).
  WeightMatrix matrix(const std::string& name, int64_t cols, int64_t rows, bool required = true) const {
    const GgufTensor* t = find(name, {cols, rows}, required);
    if (!t) return {};
    return WeightMatrix{t->type, t->data, rows, cols};
  }

  ExpertMatrices experts(const std::string& name, int64_t cols, int64_t rows, int64_t n_expert) const {
    const GgufTensor* t = find(name, {cols, rows, n_expert}, true);
    return ExpertMatrices{WeightMatrix{t->type, t->data, rows, cols}, n_expert};
  }

  // A vector of n values as f32 (empty when absent and optional).
  std::vector<float> vector(const std::string& name, int64_t n, bool required = true) const {
    const GgufTensor* t = find(name, {n}, required);
    if (!t) return {};
    std::vector<float> v((size_t)n);
    dequantize_row(t->type, t->data, v.data(), n);
    return v;
  }

 private:
  const GgufFile& f_;
};

// EDGELLM_REPACK: "0" keeps every matrix as the file stores it; "force" repacks Q4_0 whatever the
// table (tests and memory measurements on hosts without the dotprod table); otherwise Q4_0 is
// repacked when this process runs the neon-dotprod table, whose sdot kernels want Q4_0_X4.
bool repack_q4_0() {
  const char* e = std::getenv("EDGELLM_REPACK");
  if (e && std::strcmp(e, "0") == 0) return false;
  if (e && std::strcmp(e, "force") == 0) return true;
  return kernels().isa == Isa::NeonDotprod;
}

// Repacks `count` consecutive Q4_0 matrices of m's shape to Q4_0_X4 in place. The file mapping
// is private: the writes go to private copies of its pages, which replace the file's pages in
// this process (RSS stays one copy of the weights; the file is never written), and the range
// is made read-only again afterwards. When the pages cannot be made writable (no memory for
// the copies), the matrix stays Q4_0, which every table runs.
void repack_matrix(const GgufFile& file, WeightMatrix& m, int64_t count) {
  if (!m.present() || m.type != DType::Q4_0) return;
  auto* p = const_cast<uint8_t*>(static_cast<const uint8_t*>(m.data));
  const size_t bytes = (size_t)count * (size_t)m.rows * m.row_bytes();
  uintptr_t lo = 0, hi = 0;
  if (file.mapped()) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = (uintptr_t)p & ~(page - 1);
    hi = ((uintptr_t)p + bytes + page - 1) & ~(page - 1);
    if (mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ | PROT_WRITE) != 0) return;
  }
  for (int64_t e = 0; e < count; ++e)
    repack_q4_0_x4(p + (size_t)e * (size_t)m.rows * m.row_bytes(), m.rows, m.cols, p + (size_t)e * (size_t)m.rows * m.row_bytes());
  if (file.mapped()) mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ);
  m.type = DType::Q4_0_X4;
}

// Every matrix only matmul() reads: not the embeddings (read by row), nor a tied classifier.
void repack_weights(const GgufFile& file, ModelWeights& w) {
  if (!w.tied_output) repack_matrix(file, w.output, 1);
  for (LayerWeights& L : w.layers) {
    for (WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.router})
      repack_matrix(file, *m, 1);
    for (ExpertMatrices* e : {&L.gate_exps, &L.up_exps, &L.down_exps}) repack_matrix(file, e->first, e->n_expert);
  }
}

}  // namespace

Model::Model(GgufFile file) : file_(std::move(file)) {}

std::unique_ptr<Model> Model::load(const std::string& path) { return from_file(GgufFile::open(path)); }

std::unique_ptr<Model> Model::from_file(GgufFile file) {
  std::unique_ptr<Model> m(new Model(std::move(file)));
  m->config_ = read_model_config(m->file_);
  const ModelConfig& c = m->config_;
  ModelWeights& w = m->weights_;
  const Binder b(m->file_);

  w.token_embd = b.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  w.output_norm = b.vector("output_norm.weight", c.n_embd);
  w.output = b.matrix("output.weight", c.n_embd, c.n_vocab, /*required=*/false);
  if (!w.output.present()) {  // tied classifier: the embedding matrix doubles as the output
    w.output = w.token_embd;
    w.tied_output = true;
  }
  if (c.rope_freq_factors) w.rope_freq_factors = b.vector("rope_freqs.weight", c.n_rot / 2);

  w.layers.resize((size_t)c.n_layer);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    LayerWeights& L = w.layers[(size_t)l];
    const std::string p = "blk." + std::to_string((long long)l) + ".";
    L.attn_norm = b.vector(p + "attn_norm.weight", c.n_embd);
    L.wq = b.matrix(p + "attn_q.weight", c.n_embd, c.q_dim());
    L.wk = b.matrix(p + "attn_k.weight", c.n_embd, c.kv_dim());
    L.wv = b.matrix(p + "attn_v.weight", c.n_embd, c.kv_dim());
    L.wo = b.matrix(p + "attn_output.weight", c.q_dim(), c.n_embd);
    // QKV biases: qwen2 always has them; other llama-likes may.
    const bool need_bias = c.arch == Arch::Qwen2;
    L.bq = b.vector(p + "attn_q.bias", c.q_dim(), need_bias);
    L.bk = b.vector(p + "attn_k.bias", c.kv_dim(), need_bias);
    L.bv = b.vector(p + "attn_v.bias", c.kv_dim(), need_bias);
    if (c.qk_norm) {
      L.q_norm = b.vector(p + "attn_q_norm.weight", c.head_dim);
      L.k_norm = b.vector(p + "attn_k_norm.weight", c.head_dim);
    }
    if (c.post_norms) {
      L.attn_post_norm = b.vector(p + "post_attention_norm.weight", c.n_embd);
      L.ffn_post_norm = b.vector(p + "post_ffw_norm.weight", c.n_embd);
    }
    L.ffn_norm = b.vector(p + "ffn_norm.weight", c.n_embd);
    if (c.is_moe()) {
      L.router = b.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert);
      L.gate_exps = b.experts(p + "ffn_gate_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
      L.up_exps = b.experts(p + "ffn_up_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
      L.down_exps = b.experts(p + "ffn_down_exps.weight", c.n_ff_expert, c.n_embd, c.n_expert);
    } else {
      L.ffn_gate = b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
      L.ffn_up = b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
      L.ffn_down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    }
  }
  if (repack_q4_0()) repack_weights(m->file_, w);
  return m;
}

ModelStats file_stats(const GgufFile& file) {
  ModelStats s;
  s.file_bytes = file.file_size();
  for (const GgufTensor& t : file.tensors()) {
    s.n_params += t.n_elements();
    s.weight_bytes += t.bytes;
    const std::string type = ggml_type_name((uint32_t)t.type);  // also types edgellm does not run
    s.tensor_types[type] += 1;
    s.tensor_type_bytes[type] += t.bytes;
    if (!t.runnable) s.unrunnable.push_back(&t);
  }
  return s;
}

ModelStats Model::stats() const { return file_stats(file_); }

}  // namespace edgellm
