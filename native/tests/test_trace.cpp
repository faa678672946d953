// run_trace (runtime/trace.h) on tiny random models built in memory, on the reference table and
// this CPU's: each kept row is a softmax over the keys its query sees that reproduces the attention
// kernel's output, the kept layers and final norm line up with the logits, the trace leaves the
// pass as it found it, and bad requests are refused before anything runs.

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "runtime/trace.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

std::unique_ptr<Model> tiny(const TinyLlamaSpec& s) {
  return Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "tiny.gguf"));
}

ForwardOptions options(int64_t context, int64_t batch) {
  ForwardOptions o;
  o.context = context;
  o.batch = batch;
  return o;
}

std::vector<int32_t> some_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 r(seed);
  std::vector<int32_t> t((size_t)n);
  for (int32_t& x : t) x = (int32_t)(r() % (uint32_t)vocab);
  return t;
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
