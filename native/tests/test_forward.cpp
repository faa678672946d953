// ForwardPass: stories260K's reference logits and greedy ids, and on tiny random models built in
// memory: chunked prefill equals token-by-token, a batched step over several sequences equals
// stepping them one by one, the context limit, sliding-window memory, and load-time refusals.
// Suite 'trace': run_trace (runtime/trace.h) on the reference table and this CPU's: each kept row
// is a softmax over the keys its query sees that reproduces the attention kernel's output, the kept
// layers and final norm line up with the logits, the trace leaves the pass as it found it, and bad
// requests are refused before anything runs.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <map>
#include <new>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "runtime/trace.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

// Counts operator new calls while g_count_allocations is set (to prove a step allocates nothing).
static std::atomic<bool> g_count_allocations{false};
static std::atomic<int64_t> g_allocations{0};
void* operator new(std::size_t n) {
  if (g_count_allocations) ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// GCC flags free() in a replaced operator delete as mismatched with new; it is the pair above.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

std::string models_dir() { return shared_models_dir("forward"); }

std::unique_ptr<Model> tiny(const TinyLlamaSpec& s) {
  return Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "tiny.gguf"));
}

ForwardOptions options(int64_t context, int64_t batch, int64_t sinks = -1) {
  ForwardOptions o;
  o.context = context;
  o.batch = batch;
  o.sinks = sinks;
  return o;
}

int32_t argmax(const float* x, int64_t n) { return (int32_t)(std::max_element(x, x + n) - x); }

// The logits of every position of `tokens`, one token per step.
std::vector<float> one_by_one(ForwardPass& f, const std::vector<int32_t>& tokens) {
  KvCache seq(f.cache_config());
  const int64_t V = f.model().config().n_vocab;
  std::vector<float> out(tokens.size() * (size_t)V);
  for (size_t i = 0; i < tokens.size(); ++i) {
    BatchToken t{&seq, (int64_t)i, tokens[i], true};
    f.step(&t, 1, &out[i * (size_t)V]);
  }
  return out;
}

// Whether `f` throws std::invalid_argument whose message contains `part`.
template <class F>
bool refuses(F f, const std::string& part) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return std::string(e.what()).find(part) != std::string::npos;
  }
  return false;
}

}  // namespace

TEST(forward, stories260K_step0_logits_and_greedy_ids_match_the_reference) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  auto m = Model::load(dir + "/stories260K.gguf");
  ThreadPool pool(2);
  ForwardPass f(*m, pool, {});
  KvCache seq(f.cache_config());
  std::vector<float> logits(512);
  const int32_t bos = 1;
  f.prefill(seq, &bos, 1, false, logits.data());
  const float want[8] = {-6.2229f, 8.4043f, -6.2237f, -6.2225f, -6.2220f, -6.2229f, -6.2219f, -6.2234f};
  CHECK_NEAR_ALL(logits.data(), want, 8, 1e-3, 0.0);
  CHECK_EQ(argmax(logits.data(), 512), 403);
  CHECK(std::fabs(logits[403] - 17.0235f) < 1e-3f);
  CHECK(std::fabs(logits[385] - 15.4062f) < 1e-3f);
  // The first 16 greedy ids after BOS (SOURCES.md).
  const int32_t ids[16] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338};
  int32_t next = argmax(logits.data(), 512);
  for (int i = 0; i < 16; ++i) {
    CHECK_EQ(next, ids[i]);
    f.prefill(seq, &next, 1, false, logits.data());
    next = argmax(logits.data(), 512);
  }
}

TEST(forward, chunked_prefill_equals_token_by_token) {
  // Steps of 7 tokens; then of 30 tokens x 160 FFN activations, more than one chunk of the
  // multi-token activation (split inside a token).
  for (const auto& [ff, batch] : {std::pair<int64_t, int64_t>{96, 7}, {160, 30}}) {
    TinyLlamaSpec s;
    s.n_ff = ff;
    auto m = tiny(s);
    ThreadPool pool(2);
    ForwardPass f(*m, pool, options(64, batch));
    const std::vector<int32_t> tokens = some_tokens(30, s.n_vocab, 3);
    std::vector<float> chunked(tokens.size() * (size_t)s.n_vocab);
    KvCache seq(f.cache_config());
    f.prefill(seq, tokens.data(), (int64_t)tokens.size(), true, chunked.data());
    const std::vector<float> single = one_by_one(f, tokens);
    CHECK_NEAR_ALL(chunked.data(), single.data(), (int64_t)single.size(), 1e-4, 1e-4);
  }
}

TEST(forward, a_batched_step_over_three_sequences_equals_stepping_each_alone) {
  for (int64_t experts : {0, 8}) {
    TinyLlamaSpec s;
    s.n_expert = experts;
    s.n_expert_used = experts ? 2 : 0;
    auto m = tiny(s);
    ThreadPool pool(2);
    ForwardPass f(*m, pool, options(64, 16));
    const int64_t V = s.n_vocab;
    // Three sequences with prompts of different lengths, then 4 steps of all three at once.
    std::vector<std::vector<int32_t>> seqs = {some_tokens(9, V, 1), some_tokens(3, V, 2), some_tokens(14, V, 3)};
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<float> logits(3 * (size_t)V);
    for (auto& t : seqs) {
      caches.push_back(std::make_unique<KvCache>(f.cache_config()));
      f.prefill(*caches.back(), t.data(), (int64_t)t.size(), false, logits.data());
    }
    std::vector<std::vector<float>> batched(3);
    for (int step = 0; step < 4; ++step) {
      BatchToken b[3];
      for (int i = 0; i < 3; ++i) {
        const int32_t tok = (int32_t)((7 * step + 11 * i) % V);
        b[i] = BatchToken{caches[(size_t)i].get(), (int64_t)seqs[(size_t)i].size(), tok, true};
        seqs[(size_t)i].push_back(tok);
      }
      CHECK_EQ(f.step(b, 3, logits.data()), (int64_t)3);
      for (int i = 0; i < 3; ++i)
        batched[(size_t)i].insert(batched[(size_t)i].end(), logits.begin() + i * V, logits.begin() + (i + 1) * V);
    }
    for (int i = 0; i < 3; ++i) {
      const std::vector<float> alone = one_by_one(f, seqs[(size_t)i]);
      const size_t n = seqs[(size_t)i].size();
      // The last 4 positions of the one-by-one run are the batched steps.
      CHECK_NEAR_ALL(batched[(size_t)i].data(), &alone[(n - 4) * (size_t)V], 4 * V, 1e-4, 1e-4);
    }
  }
}

TEST(forward, a_full_context_throws_context_full_and_leaves_the_sequence_unchanged) {
  TinyLlamaSpec s;
  auto m = tiny(s);
  ThreadPool pool(1);
  ForwardPass f(*m, pool, options(16, 8));
  KvCache seq(f.cache_config());
  const std::vector<int32_t> tokens = some_tokens(17, s.n_vocab, 5);
  std::vector<float> logits((size_t)s.n_vocab);
  f.prefill(seq, tokens.data(), 16, false, logits.data());
  bool threw = false;
  try {
    f.prefill(seq, tokens.data() + 16, 1, false, logits.data());
  } catch (const ContextFullError&) {
    threw = true;
  }
  CHECK(threw);
  CHECK_EQ(seq.length(0), (int64_t)16);
}

TEST(forward, sliding_window_and_sinks_keep_generating_in_constant_memory) {
  TinyLlamaSpec s;
  s.sliding_window = 8;
  auto m = tiny(s);
  ThreadPool pool(1);
  ForwardPass f(*m, pool, options(16, 4));
  CHECK(f.unbounded());
  KvCache seq(f.cache_config());
  const size_t bytes = seq.bytes();
  std::vector<float> logits((size_t)s.n_vocab);
  int32_t tok = 1;
  for (int i = 0; i < 100; ++i) {
    f.prefill(seq, &tok, 1, false, logits.data());
    tok = argmax(logits.data(), s.n_vocab);
  }
  CHECK_EQ(seq.length(0), (int64_t)100);
  CHECK_EQ(seq.bytes(), bytes);

  TinyLlamaSpec dense;
  auto d = tiny(dense);
  ForwardPass streaming(*d, pool, options(16, 4, 4));
  CHECK(streaming.unbounded());
  KvCache seq2(streaming.cache_config());
  const std::vector<int32_t> tokens = some_tokens(50, dense.n_vocab, 9);
  streaming.prefill(seq2, tokens.data(), 50, false, logits.data());
  CHECK_EQ(seq2.length(0), (int64_t)50);
}

TEST(forward, a_tensor_of_the_wrong_shape_is_corrupt_and_names_the_tensor) {
  // 2 KV heads of 16 make attn_k [64, 32]; the file's is [64, 64].
  GgufBuilder bad;
  bad.str("general.architecture", "llama");
  bad.u32("llama.embedding_length", 64);
  bad.u32("llama.block_count", 1);
  bad.u32("llama.feed_forward_length", 96);
  bad.u32("llama.attention.head_count", 4);
  bad.u32("llama.attention.head_count_kv", 2);
  bad.tensor("token_embd.weight", {64, 8}, DType::F32, std::vector<float>(64 * 8, 0.1f));
  bad.tensor("output_norm.weight", {64}, DType::F32, std::vector<float>(64, 1.0f));
  bad.tensor("blk.0.attn_norm.weight", {64}, DType::F32, std::vector<float>(64, 1.0f));
  bad.tensor("blk.0.attn_q.weight", {64, 64}, DType::F32, std::vector<float>(64 * 64, 0.0f));
  bad.tensor("blk.0.attn_k.weight", {64, 64}, DType::F32, std::vector<float>(64 * 64, 0.0f));
  std::string code, msg;
  try {
    Model::from_file(GgufFile::from_bytes(bad.bytes(), "bad.gguf"));
  } catch (const ModelError& e) {
    code = e.code;
    msg = e.message;
  }
  CHECK_MSG(code == "E_MODEL_CORRUPT", code + ": " + msg);
  CHECK_MSG(msg.find("blk.0.attn_k.weight") != std::string::npos, msg);
  CHECK_MSG(msg.find("[64, 64], expected [64, 32]") != std::string::npos, msg);
}

TEST(forward, an_unknown_architecture_is_unsupported_and_named) {
  GgufBuilder b;
  b.str("general.architecture", "mamba");
  std::string code, msg;
  try {
    Model::from_file(GgufFile::from_bytes(b.bytes(), "m.gguf"));
  } catch (const ModelError& e) {
    code = e.code;
    msg = e.message;
  }
  CHECK_MSG(code == "E_MODEL_UNSUPPORTED", code + ": " + msg);
  CHECK_MSG(msg.find("'mamba'") != std::string::npos, msg);
}

TEST(forward, a_decode_step_allocates_nothing) {
  for (int64_t experts : {0, 8}) {
    TinyLlamaSpec s;
    s.n_expert = experts;
    s.n_expert_used = experts ? 2 : 0;
    s.matrix_type = DType::Q8_0;
    auto m = tiny(s);
    ThreadPool pool(2);
    ForwardPass f(*m, pool, options(64, 8));
    KvCache a(f.cache_config()), b(f.cache_config());
    std::vector<float> logits(2 * (size_t)s.n_vocab);
    const std::vector<int32_t> prompt = some_tokens(8, s.n_vocab, 4);
    f.prefill(a, prompt.data(), 8, false, logits.data());
    f.prefill(b, prompt.data(), 3, false, logits.data());
    BatchToken step[2] = {{&a, 8, 5, true}, {&b, 3, 6, true}};
    g_allocations = 0;
    g_count_allocations = true;
    for (int i = 0; i < 4; ++i) {
      f.step(step, 2, logits.data());
      step[0].pos++;
      step[1].pos++;
    }
    g_count_allocations = false;
    CHECK_EQ((int64_t)g_allocations, (int64_t)0);
  }
}

// Any mix of weight types in one model, MoE experts included: a tiny model whose matrices cycle
// through every quantized and float weight type (random valid blocks) loads, and one prefill plus
// one decode step gives the same logits on every kernel table as on the reference table.
TEST(forward, a_model_mixing_every_weight_type_gives_the_same_logits_on_every_table) {
  for (int64_t experts : {0, 4}) {
    TinyLlamaSpec s;
    s.n_embd = 256;  // rows a multiple of the 256-weight super-blocks
    s.n_ff = 256;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_expert = experts;
    s.n_expert_used = experts ? 2 : 0;
    int next = 0;
    std::map<std::string, DType> types;
    s.random_blocks_of = [&](const std::string& name) {
      const DType t = kWeightTypes[(size_t)next++ % (sizeof kWeightTypes / sizeof kWeightTypes[0])];
      types[name] = t;
      return t;
    };
    auto m = tiny(s);
    std::set<DType> used;
    for (const auto& kv : types) used.insert(kv.second);
    CHECK_EQ(used.size(), sizeof kWeightTypes / sizeof kWeightTypes[0]);

    const std::vector<int32_t> prompt = some_tokens(5, s.n_vocab, 7);
    auto logits_on = [&](const KernelTable& kt) {
      ThreadPool pool(2);
      ForwardPass f(*m, pool, options(32, 8), kt);
      KvCache seq(f.cache_config());
      std::vector<float> out(2 * (size_t)s.n_vocab);
      f.prefill(seq, prompt.data(), (int64_t)prompt.size(), false, out.data());
      BatchToken t{&seq, (int64_t)prompt.size(), 3, true};
      f.step(&t, 1, out.data() + s.n_vocab);
      return out;
    };
    const std::vector<float> want = logits_on(kReferenceKernels);
    bool finite = true;
    for (float v : want) finite = finite && std::isfinite(v);
    CHECK_MSG(finite, "reference logits are not finite");
    for (const KernelTable* kt : runnable_kernel_tables()) {
      if (kt == &kReferenceKernels) continue;
      std::string missing;
      for (DType t : kWeightTypes)
        if (!kt->gemm_for(t)) missing += std::string(missing.empty() ? "" : ", ") + "gemm " + dtype_name(t);
      if (!kt->quantize_row_q8_1) missing += std::string(missing.empty() ? "" : ", ") + "quantize_row_q8_1";
      if (!kt->quantize_row_q8_k) missing += std::string(missing.empty() ? "" : ", ") + "quantize_row_q8_k";
      if (!missing.empty()) {
        CHECK_MSG(false, std::string(kt->name) + " lacks " + missing);
        continue;
      }
      const std::vector<float> got = logits_on(*kt);
      std::string why;
      // Reordered f32 sums move these logits (max ~20) by ~1e-5; a wrong block by far more.
      if (!near_all(got.data(), want.data(), (int64_t)want.size(), 1e-3, 1e-4, &why))
        CHECK_MSG(false, std::string(kt->name) + (experts ? " (MoE)" : "") + ": " + why);
    }
  }
}

TEST(trace, rows_are_softmaxes_over_the_visible_keys_and_reproduce_the_kernel_on_every_table) {
  for (const KernelTable* kt : {&reference_kernels(), &kernels()}) {
    TinyLlamaSpec s;  // GQA 4 heads over 2 KV heads
    s.sliding_window = 5;
    auto m = tiny(s);
    ThreadPool pool(2);
    ForwardPass f(*m, pool, options(64, 4), *kt);  // prefill in chunks of 4: rows come from several steps
    TraceRequest r{some_tokens(11, s.n_vocab, 9), 3, {1, 0}, {3, 0}};
    const Trace t = run_trace(f, r);
    const int64_t T = 14;
    CHECK_EQ((int64_t)t.tokens.size(), T);
    CHECK_EQ(t.layers[0].layer, (int64_t)1);
    CHECK_MSG(t.attention_error < 1e-4, std::string(kt->name) + ": attention error " + std::to_string(t.attention_error));
    for (const LayerTrace& lt : t.layers) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t q = 0; q < T; ++q) {
          const float* row = &lt.attention[(size_t)((h * T + q) * T)];
          double sum = 0.0;
          for (int64_t k = 0; k < T; ++k) {
            const bool visible = k <= q && q - k < s.sliding_window;
            CHECK(visible ? row[k] > 0.0f : row[k] == 0.0f);
            sum += row[k];
          }
          CHECK(std::fabs(sum - 1.0) < 1e-5);
        }
      }
    }
  }
}

TEST(trace, the_last_layer_and_the_final_norm_line_up_with_the_logits_and_the_pass_is_left_unchanged) {
  TinyLlamaSpec s;
  auto m = tiny(s);
  ThreadPool pool(1);
  ForwardPass f(*m, pool, options(64, 8));
  const std::vector<int32_t> prompt = some_tokens(9, s.n_vocab, 4);
  const int64_t T = 11, D = s.n_embd, V = s.n_vocab;
  auto plain = [&](const std::vector<int32_t>& tokens) {  // every position's logits, no observer
    KvCache seq(f.cache_config());
    std::vector<float> out(tokens.size() * (size_t)V);
    f.prefill(seq, tokens.data(), (int64_t)tokens.size(), true, out.data());
    return out;
  };
  const std::vector<float> before = plain(prompt);
  const Trace t = run_trace(f, TraceRequest{prompt, 2, {s.n_layer - 1}, {0}});
  // The trace computes what the plain pass does, and leaves no observer behind.
  CHECK_NEAR_ALL(t.logits.data(), before.data(), 9 * V, 0.0, 0.0);
  CHECK_NEAR_ALL(plain(prompt).data(), before.data(), 9 * V, 0.0, 0.0);
  // The generated tokens are the greedy ones (the trace steps them one by one, so within float noise).
  const std::vector<float> all = plain(t.tokens);
  CHECK_NEAR_ALL(t.logits.data(), all.data(), T * V, 1e-5, 1e-5);
  for (int64_t p = 9; p < T; ++p) {
    const float* row = &all[(size_t)((p - 1) * V)];
    CHECK_EQ(t.tokens[(size_t)p], (int32_t)(std::max_element(row, row + V) - row));
  }
  // The final norm is the output norm of the last layer's residual stream.
  const ModelWeights& w = m->weights();
  std::vector<float> normed((size_t)D);
  for (int64_t p = 0; p < T; ++p) {
    reference_kernels().rmsnorm(&t.layers[0].hidden[(size_t)(p * D)], w.output_norm.data(), normed.data(), D, m->config().rms_eps);
    CHECK_NEAR_ALL(&t.final_norm[(size_t)(p * D)], normed.data(), D, 1e-5, 1e-5);
  }
}

TEST(trace, bad_requests_are_refused_before_anything_runs) {
  TinyLlamaSpec s;
  auto m = tiny(s);
  ThreadPool pool(1);
  ForwardPass f(*m, pool, options(8, 8));
  CHECK(refuses([&] { run_trace(f, TraceRequest{{}, 0, {0}, {0}}); }, "at least one prompt token"));
  CHECK(refuses([&] { run_trace(f, TraceRequest{{1}, 0, {2}, {0}}); }, "layer 2 is out of range: the model has 2 layers (0..1)"));
  CHECK(refuses([&] { run_trace(f, TraceRequest{{1}, 0, {0}, {-1}}); }, "head -1 is out of range"));
  CHECK(refuses([&] { run_trace(f, TraceRequest{{1}, 0, {1, 1}, {0}}); }, "layer 1 is listed twice"));
  bool full = false;
  try {
    run_trace(f, TraceRequest{{1, 2, 3, 4, 5}, 4, {0}, {0}});  // 9 positions in a context of 8
  } catch (const ContextFullError&) {
    full = true;
  }
  CHECK(full);
}
