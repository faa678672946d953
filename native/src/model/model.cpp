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
#include "sys/memory_budget.h"

namespace edgellm {

namespace {

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
                                              shape_string(t->ne, shown) + ", expected " + shape_string(want, n));
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

  // Consecutive row ranges of one [cols, sum of rows] matrix, as matrices of their own: phi3's
  // fused attn_qkv (Q, K, V rows) and ffn_up (gate rows, then up rows). Views, nothing copied.
  std::vector<WeightMatrix> split_rows(const std::string& name, int64_t cols, std::initializer_list<int64_t> parts) const {
    int64_t total = 0;
    for (int64_t r : parts) total += r;
    const WeightMatrix whole = matrix(name, cols, total);
    std::vector<WeightMatrix> out;
    int64_t first = 0;
    for (int64_t r : parts) {
      out.push_back(WeightMatrix{whole.type, whole.row(first), r, cols});
      first += r;
    }
    return out;
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

// deepseek2's layer: latent attention (q with or without LoRA, attn_kv_b or its split form) and
// a dense FFN in the leading layers, routed + shared experts after them.
void bind_mla_layer(const Binder& b, const ModelConfig& c, int64_t l, LayerWeights& L) {
  const MlaConfig& a = c.mla;
  MlaLayerWeights& M = L.mla;
  const std::string p = "blk." + std::to_string((long long)l) + ".";
  const int64_t q_dim = c.n_head * c.head_dim, nope = a.qk_nope, r = a.kv_lora_rank;
  L.attn_norm = b.vector(p + "attn_norm.weight", c.n_embd);
  if (a.q_lora_rank > 0) {
    M.wq_a = b.matrix(p + "attn_q_a.weight", c.n_embd, a.q_lora_rank);
    M.q_a_norm = b.vector(p + "attn_q_a_norm.weight", a.q_lora_rank);
    M.wq_b = b.matrix(p + "attn_q_b.weight", a.q_lora_rank, q_dim);
  } else {
    L.wq = b.matrix(p + "attn_q.weight", c.n_embd, q_dim);
  }
  M.wkv_a = b.matrix(p + "attn_kv_a_mqa.weight", c.n_embd, a.cache_dim(c.n_rot));
  M.kv_a_norm = b.vector(p + "attn_kv_a_norm.weight", r);
  if (a.split_kv_b) {
    const GgufTensor* kb = b.find(p + "attn_k_b.weight", {nope, r, c.n_head}, true);
    const GgufTensor* vb = b.find(p + "attn_v_b.weight", {r, a.v_dim, c.n_head}, true);
    M.k_b = HeadMatrices{WeightMatrix{kb->type, kb->data, r, nope}, c.n_head, (size_t)r * dtype_row_bytes(kb->type, nope)};
    M.v_b = HeadMatrices{WeightMatrix{vb->type, vb->data, a.v_dim, r}, c.n_head, (size_t)a.v_dim * dtype_row_bytes(vb->type, r)};
  } else {
    // Head h's rows of attn_kv_b: qk_nope rows of K, then v_dim rows of V, each of kv_lora_rank.
    const WeightMatrix kv = b.matrix(p + "attn_kv_b.weight", r, c.n_head * (nope + a.v_dim));
    const size_t head_bytes = (size_t)(nope + a.v_dim) * kv.row_bytes();
    M.v_b = HeadMatrices{WeightMatrix{kv.type, kv.row(nope), a.v_dim, r}, c.n_head, head_bytes};
    // The absorbed path multiplies by K's transpose: [kv_lora_rank rows][qk_nope] per head, f32.
    M.k_b_owned.assign((size_t)(c.n_head * r * nope), 0.0f);
    std::vector<float> row((size_t)r);
    for (int64_t h = 0; h < c.n_head; ++h) {
      float* kt = &M.k_b_owned[(size_t)(h * r * nope)];
      for (int64_t i = 0; i < nope; ++i) {
        dequantize_row(kv.type, kv.row(h * (nope + a.v_dim) + i), row.data(), r);
        for (int64_t j = 0; j < r; ++j) kt[j * nope + i] = row[(size_t)j];
      }
    }
    M.k_b = HeadMatrices{WeightMatrix{DType::F32, M.k_b_owned.data(), r, nope}, c.n_head, (size_t)(r * nope) * sizeof(float)};
  }
  L.wo = b.matrix(p + "attn_output.weight", c.n_head * a.v_dim, c.n_embd);
  L.ffn_norm = b.vector(p + "ffn_norm.weight", c.n_embd);
  if (l < a.n_layer_dense_lead) {
    L.ffn_gate = b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    L.ffn_up = b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
    L.ffn_down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    return;
  }
  L.router = b.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert);
  M.exp_probs_b = b.vector(p + "exp_probs_b.bias", c.n_expert, /*required=*/false);
  L.gate_exps = b.experts(p + "ffn_gate_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
  L.up_exps = b.experts(p + "ffn_up_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert);
  L.down_exps = b.experts(p + "ffn_down_exps.weight", c.n_ff_expert, c.n_embd, c.n_expert);
  if (a.n_expert_shared > 0) {
    const int64_t fs = c.n_ff_expert * a.n_expert_shared;
    M.gate_shexp = b.matrix(p + "ffn_gate_shexp.weight", c.n_embd, fs);
    M.up_shexp = b.matrix(p + "ffn_up_shexp.weight", c.n_embd, fs);
    M.down_shexp = b.matrix(p + "ffn_down_shexp.weight", fs, c.n_embd);
  }
}

// bert / nomic-bert, named as llama.cpp names them: attention as attn_q/k/v (bert, with biases)
// or one attn_qkv (nomic-bert; bert converters may fuse too, with a bias), post-norms
// attn_output_norm and layer_output_norm, an FFN of ffn_up (+ ffn_gate for nomic-bert's SwiGLU)
// and ffn_down. No output norm nor classifier: an encoder's output is its hidden states.
void bind_encoder(const Binder& b, const GgufFile& f, const ModelConfig& c, ModelWeights& w) {
  const int64_t D = c.n_embd;
  w.token_embd = b.matrix("token_embd.weight", D, c.n_vocab);
  if (const GgufTensor* t = f.find_tensor("token_types.weight")) {
    if (t->ne[0] != D || t->ne[1] < 1 || t->ne[2] != 1 || t->ne[3] != 1)
      throw ModelError("E_MODEL_CORRUPT", f.path() + ": tensor 'token_types.weight' has shape " + shape_string(t->ne, t->n_dims) +
                                              ", expected [" + std::to_string((long long)D) + ", token types]");
    w.token_type0.resize((size_t)D);
    dequantize_row(t->type, t->data, w.token_type0.data(), D);
  }
  if (c.arch == Arch::Bert) w.position_embd = b.matrix("position_embd.weight", D, c.context_length);
  w.embd_norm = b.vector("token_embd_norm.weight", D);
  w.embd_norm_b = b.vector("token_embd_norm.bias", D);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    LayerWeights& L = w.layers[(size_t)l];
    const std::string p = "blk." + std::to_string((long long)l) + ".";
    if (f.find_tensor(p + "attn_qkv.weight")) {
      const std::vector<WeightMatrix> qkv = b.split_rows(p + "attn_qkv.weight", D, {c.q_dim(), c.kv_dim(), c.kv_dim()});
      L.wq = qkv[0], L.wk = qkv[1], L.wv = qkv[2];
      const std::vector<float> bqkv = b.vector(p + "attn_qkv.bias", c.q_dim() + 2 * c.kv_dim(), /*required=*/false);
      if (!bqkv.empty()) {
        L.bq.assign(bqkv.begin(), bqkv.begin() + c.q_dim());
        L.bk.assign(bqkv.begin() + c.q_dim(), bqkv.begin() + c.q_dim() + c.kv_dim());
        L.bv.assign(bqkv.begin() + c.q_dim() + c.kv_dim(), bqkv.end());
      }
    } else {
      L.wq = b.matrix(p + "attn_q.weight", D, c.q_dim());
      L.wk = b.matrix(p + "attn_k.weight", D, c.kv_dim());
      L.wv = b.matrix(p + "attn_v.weight", D, c.kv_dim());
      L.bq = b.vector(p + "attn_q.bias", c.q_dim());
      L.bk = b.vector(p + "attn_k.bias", c.kv_dim());
      L.bv = b.vector(p + "attn_v.bias", c.kv_dim());
    }
    L.wo = b.matrix(p + "attn_output.weight", c.q_dim(), D);
    L.bo = b.vector(p + "attn_output.bias", D, /*required=*/false);
    L.attn_out_norm = b.vector(p + "attn_output_norm.weight", D);
    L.attn_out_norm_b = b.vector(p + "attn_output_norm.bias", D);
    L.ffn_up = b.matrix(p + "ffn_up.weight", D, c.n_ff);
    L.ffn_up_b = b.vector(p + "ffn_up.bias", c.n_ff, /*required=*/false);
    if (c.arch == Arch::NomicBert) L.ffn_gate = b.matrix(p + "ffn_gate.weight", D, c.n_ff);
    L.ffn_down = b.matrix(p + "ffn_down.weight", c.n_ff, D);
    L.ffn_down_b = b.vector(p + "ffn_down.bias", D, /*required=*/false);
    L.layer_out_norm = b.vector(p + "layer_output_norm.weight", D);
    L.layer_out_norm_b = b.vector(p + "layer_output_norm.bias", D);
  }
}

// EDGELLM_REPACK: "0" keeps every matrix as the file stores it; "force" repacks Q4_0, Q4_K and Q6_K
// whatever the table (tests and memory measurements on hosts without the dotprod table);
// otherwise they are repacked when this process runs the neon-dotprod table, whose sdot kernels
// want Q4_0_X4, Q4_K_X4 and Q6_K_X4.
bool repack_enabled() {
  const char* e = std::getenv("EDGELLM_REPACK");
  if (e && std::strcmp(e, "0") == 0) return false;
  if (e && std::strcmp(e, "force") == 0) return true;
  return kernels().isa == Isa::NeonDotprod;
}

// Repacks `count` consecutive Q4_0, Q4_K or Q6_K matrices of m's shape in place (*_X4;
// quant/repack.h). The file mapping
// is private: the writes go to private copies of its pages, which replace the file's pages in
// this process (RSS stays one copy of the weights; the file is never written), and the range
// is made read-only again afterwards. When the pages cannot be made writable (no memory for
// the copies), the matrix stays as stored, which every table runs.
void repack_matrix(const GgufFile& file, WeightMatrix& m, int64_t count) {
  if (!m.present() || repacked_type(m.type) == m.type) return;
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
    repack_rows(m.type, p + (size_t)e * (size_t)m.rows * m.row_bytes(), m.rows, m.cols, p + (size_t)e * (size_t)m.rows * m.row_bytes());
  if (file.mapped()) mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ);
  m.type = repacked_type(m.type);
}

// Every matrix only matmul() reads: not the embeddings (read by row), nor a tied classifier.
void repack_weights(const GgufFile& file, ModelWeights& w) {
  if (!w.tied_output) repack_matrix(file, w.output, 1);
  for (LayerWeights& L : w.layers) {
    for (WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.router})
      repack_matrix(file, *m, 1);
    for (ExpertMatrices* e : {&L.gate_exps, &L.up_exps, &L.down_exps})
      if (!e->paged_from) repack_matrix(file, e->first, e->n_expert);
  }
}

// EDGELLM_EXPERT_PAGING: "on" / "off" force the choice (measurements of either under the same
// memory limit); otherwise an MoE's routed experts are paged when the tensor data is more than
// 3/4 of this process's memory budget (the cgroup limit or MemAvailable): the last quarter is
// what the KV cache, the scratch, the runtime and the OS's own pages need beside the weights.
bool page_experts(const GgufFile& file, const ModelConfig& c) {
  if (!c.is_moe() || !file.mapped()) return false;
  const char* e = std::getenv("EDGELLM_EXPERT_PAGING");
  if (e && std::strcmp(e, "on") == 0) return true;
  if (e && std::strcmp(e, "off") == 0) return false;
  const uint64_t data = file.file_size() - file.data_offset();
  return data > memory_budget_bytes() / 4 * 3;
}

// Paged experts are read on demand: no read-around on their faults (the neighbouring pages are
// experts the router did not pick), and ForwardPass asks for each picked expert's whole slice as
// soon as the router picks it (ExpertMatrices::will_need), so one token's reads are a few large
// requests that overlap the earlier experts' GEMMs instead of a page-sized fault at a time.
void page_expert_weights(const GgufFile& file, ModelWeights& w) {
  w.experts_paged = true;
  for (LayerWeights& L : w.layers) {
    for (ExpertMatrices* e : {&L.gate_exps, &L.up_exps, &L.down_exps}) {
      if (!e->first.present()) continue;  // deepseek2's leading dense layers
      e->paged_from = &file;
      file.advise_random(e->first.data, (size_t)e->n_expert * e->expert_bytes());
    }
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
  w.layers.resize((size_t)c.n_layer);
  if (c.encoder) {
    bind_encoder(b, m->file_, c, w);
    if (repack_enabled()) repack_weights(m->file_, w);
    return m;
  }

  w.token_embd = b.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  w.output_norm = b.vector("output_norm.weight", c.n_embd);
  w.output = b.matrix("output.weight", c.n_embd, c.n_vocab, /*required=*/false);
  if (!w.output.present()) {  // tied classifier: the embedding matrix doubles as the output
    w.output = w.token_embd;
    w.tied_output = true;
  }
  if (c.rope_freq_factors) w.rope_freq_factors = b.vector("rope_freqs.weight", c.n_rot / 2);
  if (c.rope_orig_context > 0) {
    w.rope_factors_long = b.vector("rope_factors_long.weight", c.n_rot / 2);
    w.rope_factors_short = b.vector("rope_factors_short.weight", c.n_rot / 2);
  }

  if (c.arch == Arch::Deepseek2) {
    for (int64_t l = 0; l < c.n_layer; ++l) bind_mla_layer(b, c, l, w.layers[(size_t)l]);
    if (page_experts(m->file_, c)) page_expert_weights(m->file_, w);
    return m;
  }
  for (int64_t l = 0; l < c.n_layer; ++l) {
    LayerWeights& L = w.layers[(size_t)l];
    const std::string p = "blk." + std::to_string((long long)l) + ".";
    L.attn_norm = b.vector(p + "attn_norm.weight", c.n_embd);
    if (m->file_.find_tensor(p + "attn_qkv.weight")) {  // phi3: one matrix, Q rows then K then V
      const std::vector<WeightMatrix> qkv = b.split_rows(p + "attn_qkv.weight", c.n_embd, {c.q_dim(), c.kv_dim(), c.kv_dim()});
      L.wq = qkv[0], L.wk = qkv[1], L.wv = qkv[2];
    } else {
      L.wq = b.matrix(p + "attn_q.weight", c.n_embd, c.q_dim());
      L.wk = b.matrix(p + "attn_k.weight", c.n_embd, c.kv_dim());
      L.wv = b.matrix(p + "attn_v.weight", c.n_embd, c.kv_dim());
    }
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
    if (c.qk_norm_full) {  // olmoe: one norm over all heads
      L.q_norm = b.vector(p + "attn_q_norm.weight", c.q_dim());
      L.k_norm = b.vector(p + "attn_k_norm.weight", c.kv_dim());
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
    } else if (c.arch == Arch::Phi3) {  // one matrix: the gate rows, then the up rows
      const std::vector<WeightMatrix> gate_up = b.split_rows(p + "ffn_up.weight", c.n_embd, {c.n_ff, c.n_ff});
      L.ffn_gate = gate_up[0], L.ffn_up = gate_up[1];
      L.ffn_down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    } else {
      L.ffn_gate = b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
      L.ffn_up = b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
      L.ffn_down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    }
  }
  if (page_experts(m->file_, c)) page_expert_weights(m->file_, w);
  if (repack_enabled()) repack_weights(m->file_, w);
  return m;
}

ModelStats file_stats(const GgufFile& file) {
  ModelStats s;
  s.file_bytes = file.file_size();
  for (const GgufTensor& t : file.tensors()) {
    s.n_params += t.n_elements();
    s.weight_bytes += t.bytes;
    if (t.name.find("_exps.") != std::string::npos) s.expert_bytes += t.bytes;
    const std::string type = ggml_type_name((uint32_t)t.type);  // also types edgellm does not run
    s.tensor_types[type] += 1;
    s.tensor_type_bytes[type] += t.bytes;
    if (!t.runnable) s.unrunnable.push_back(&t);
  }
  return s;
}

ModelStats Model::stats() const { return file_stats(file_); }

}  // namespace edgellm
