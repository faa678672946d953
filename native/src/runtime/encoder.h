// Embeddings from an encoder (bert, nomic-bert): the whole input runs in one pass, every token
// attending to every token (no cache, no causal mask), and the last layer's hidden states are
// pooled into one vector as the file's pooling_type says, then L2-normalized.
//
//   EncoderPass enc(model, pool);
//   std::vector<float> e(model.config().n_embd);
//   enc.embed(tokens.data(), tokens.size(), e.data());
//
// Unlike ForwardPass, a call allocates its activations (an input is at most context_length
// tokens, and an embedding request is one call, not a decode loop).
#pragma once
#include <cstdint>

#include "kernels/kernels.h"
#include "model/model.h"
#include "runtime/matmul.h"
#include "runtime/thread_pool.h"

namespace edgellm {

class EncoderPass {
 public:
  // Throws ModelError E_NOT_EMBEDDING_MODEL for a model that is not an encoder.
  EncoderPass(const Model& model, ThreadPool& pool, const KernelTable& kt = kernels());

  // The last layer's output for every token: hidden is [n][n_embd]. Throws ModelError
  // E_EMPTY_INPUT (n == 0), E_INPUT_TOO_LONG (n > context_length), std::invalid_argument for a
  // token outside the vocabulary.
  void hidden_states(const int32_t* tokens, int64_t n, float* hidden);

  // The pooled, L2-normalized embedding: n_embd floats. Also throws ModelError E_NO_POOLING
  // (pooling_type none) and E_MODEL_UNSUPPORTED (rank pooling, a reranker's head).
  void embed(const int32_t* tokens, int64_t n, float* out);

 private:
  void attention(int64_t n, const float* q, const float* k, const float* v, float* out);
  void mm(const WeightMatrix& w, const float* x, int64_t ncols, float* y);

  const Model& model_;
  const ModelConfig& cfg_;
  ThreadPool& pool_;
  const KernelTable& kt_;
  MatmulScratch mm_scratch_;
};

// Throws ModelError E_NOT_EMBEDDING_MODEL unless c is an encoder's.
void require_encoder(const ModelConfig& c);

// Bytes an embedding of context_length tokens allocates while it runs (hidden states, Q/K/V,
// attention, FFN activations, per-thread scores, the matmul's quantized activations).
size_t encoder_scratch_bytes(const ModelConfig& c, int threads);

// y = (x - mean) / sqrt(var + eps) * w + b over n floats, as ggml_norm then mul and add
// (sums in double). y may alias x.
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps);

// ggml's GELU (tanh approximation) in place.
void gelu_tanh(float* x, int64_t n);

}  // namespace edgellm
