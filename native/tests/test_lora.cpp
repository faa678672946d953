// LoRA adapters (model/lora.h) on tiny random models built in memory: an adapter's logits equal
// those of the base with B A merged into its weights (scale = user scale * alpha / rank), a batch
// mixing sequences with and without adapters equals each run alone, the decode loop groups them,
// and every adapter that does not fit its base is refused with a coded error naming the tensor.

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "model/lora.h"
#include "model/model.h"
#include "runtime/decode_loop.h"
#include "runtime/forward.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

struct Pair {
  std::vector<float> a;  // [rank][cols]
  std::vector<float> b;  // [rows][rank]
  int64_t rows, cols;
};

// An adapter for the tiny llama of `s`: random pairs of `rank` for the named matrices.
struct TinyAdapter {
  GgufBuilder file;
  std::map<std::string, Pair> pairs;
};

TinyAdapter tiny_adapter(const TinyLlamaSpec& s, const std::map<std::string, std::pair<int64_t, int64_t>>& targets,
                         int64_t rank, float alpha, uint32_t seed, DType type = DType::F32,
                         const std::string& arch = "llama") {
  std::mt19937 r(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  TinyAdapter t;
  t.file.str("general.architecture", arch);
  t.file.str("general.type", "adapter");
  t.file.str("adapter.type", "lora");
  if (alpha != 0.0f) t.file.f32("adapter.lora.alpha", alpha);
  (void)s;
  for (const auto& [name, shape] : targets) {
    const int64_t rows = shape.first, cols = shape.second;
    Pair p{std::vector<float>((size_t)(rank * cols)), std::vector<float>((size_t)(rows * rank)), rows, cols};
    for (float& x : p.a) x = nd(r) * 0.3f;
    for (float& x : p.b) x = nd(r) * 0.3f;
    t.file.tensor(name + ".lora_a", {cols, rank}, type, p.a);
    t.file.tensor(name + ".lora_b", {rank, rows}, type, p.b);
    t.pairs[name] = std::move(p);
  }
  return t;
}

std::map<std::string, std::pair<int64_t, int64_t>> all_targets(const TinyLlamaSpec& s) {
  const int64_t D = s.n_embd, kv = D / s.n_head * s.n_head_kv;
  std::map<std::string, std::pair<int64_t, int64_t>> t{{"output.weight", {s.n_vocab, D}}};
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string((long long)l) + ".";
    t[p + "attn_q.weight"] = {D, D};
    t[p + "attn_k.weight"] = {kv, D};
    t[p + "attn_v.weight"] = {kv, D};
    t[p + "attn_output.weight"] = {D, D};
    t[p + "ffn_gate.weight"] = {s.n_ff, D};
    t[p + "ffn_up.weight"] = {s.n_ff, D};
    t[p + "ffn_down.weight"] = {D, s.n_ff};
  }
  return t;
}

std::vector<float> logits_of(ForwardPass& f, const std::vector<int32_t>& tokens, const LoraSet* lora) {
  KvCache seq(f.cache_config());
  std::vector<float> out(tokens.size() * (size_t)f.model().config().n_vocab);
  f.prefill(seq, tokens.data(), (int64_t)tokens.size(), true, out.data(), lora);
  return out;
}

// The code and message of the ModelError that loading `adapter` on `base` throws.
std::pair<std::string, std::string> refusal(std::vector<uint8_t> adapter, const Model& base) {
  try {
    LoraAdapter::from_file(GgufFile::from_bytes(std::move(adapter), "a.gguf"), base);
  } catch (const ModelError& e) {
    return {e.code, e.message};
  }
  return {"", "loaded"};
}

}  // namespace

TEST(lora, an_adapter_gives_the_logits_of_its_pairs_merged_into_the_base) {
  TinyLlamaSpec s;
  const int64_t rank = 4;
  const float alpha = 8.0f, user = 0.75f;  // scale = 0.75 * 8 / 4 = 1.5
  TinyAdapter ad = tiny_adapter(s, all_targets(s), rank, alpha, 7);
  auto base = Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "base.gguf"));
  auto adapter = LoraAdapter::from_file(GgufFile::from_bytes(ad.file.bytes(), "a.gguf"), *base);
  CHECK_EQ(adapter->n_pairs(), (int64_t)all_targets(s).size());
  CHECK_EQ(adapter->max_rank(), rank);

  // The merged model: W + 1.5 B A for every pair, from the base file's F32 values.
  GgufBuilder merged_file = tiny_llama(s);
  const float scale = user * alpha / (float)rank;
  for (const auto& [name, p] : ad.pairs) {
    const GgufTensor& t = base->file().tensor(name);
    std::vector<float> w((size_t)(p.rows * p.cols));
    std::memcpy(w.data(), t.data, w.size() * sizeof(float));
    for (int64_t i = 0; i < p.rows; ++i)
      for (int64_t j = 0; j < p.cols; ++j) {
        double d = 0;
        for (int64_t k = 0; k < rank; ++k) d += (double)p.b[(size_t)(i * rank + k)] * p.a[(size_t)(k * p.cols + j)];
        w[(size_t)(i * p.cols + j)] += scale * (float)d;
      }
    CHECK(merged_file.retensor(name, w));
  }
  auto merged = Model::from_file(GgufFile::from_bytes(merged_file.bytes(), "merged.gguf"));

  ThreadPool pool(2);
  ForwardPass fa(*base, pool, ForwardOptions{64, 16});
  ForwardPass fm(*merged, pool, ForwardOptions{64, 16});
  const std::vector<int32_t> tokens = some_tokens(21, s.n_vocab, 3);  // two chunks of 16
  const LoraSet set{{adapter, user}};
  const std::vector<float> with = logits_of(fa, tokens, &set);
  const std::vector<float> want = logits_of(fm, tokens, nullptr);
  CHECK_NEAR_ALL(with.data(), want.data(), (int64_t)want.size(), 1e-4, 1e-4);
  // The adapter changes the logits measurably (so the comparison above can fail), and a scale
  // of 0 or no set at all gives the base model.
  const std::vector<float> plain = logits_of(fa, tokens, nullptr);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i) diff = std::max(diff, (double)std::fabs(plain[i] - want[i]));
  CHECK_MSG(diff > 0.1, "the adapter moved no logit by more than " + std::to_string(diff));
  const LoraSet off{{adapter, 0.0f}};
  const std::vector<float> zero = logits_of(fa, tokens, &off);
  CHECK_NEAR_ALL(zero.data(), plain.data(), (int64_t)plain.size(), 1e-6, 1e-6);
}

TEST(lora, without_alpha_the_scale_is_the_user_scale_and_quantized_pairs_run) {
  TinyLlamaSpec s;
  s.n_embd = 64;
  auto base = Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "base.gguf"));
  // Rank 32 so that lora_b's rows hold whole Q8_0 blocks.
  TinyAdapter f32 = tiny_adapter(s, {{"blk.0.attn_q.weight", {64, 64}}}, 32, 0.0f, 5);
  TinyAdapter q8 = tiny_adapter(s, {{"blk.0.attn_q.weight", {64, 64}}}, 32, 0.0f, 5, DType::Q8_0);
  auto a32 = LoraAdapter::from_file(GgufFile::from_bytes(f32.file.bytes(), "f32.gguf"), *base);
  auto a8 = LoraAdapter::from_file(GgufFile::from_bytes(q8.file.bytes(), "q8.gguf"), *base);
  const LoraPair* p = a32->find(&base->weights().layers[0].wq);
  CHECK(p != nullptr);
  if (p) CHECK(a32->scale(*p, 0.5f) == 0.5f);
  ThreadPool pool(2);
  ForwardPass f(*base, pool, ForwardOptions{64, 16});
  const std::vector<int32_t> tokens = some_tokens(6, s.n_vocab, 4);
  const LoraSet s32{{a32, 0.5f}}, s8{{a8, 0.5f}}, twice{{a32, 0.25f}, {a32, 0.25f}};
  const std::vector<float> l32 = logits_of(f, tokens, &s32);
  const std::vector<float> l8 = logits_of(f, tokens, &s8);
  const std::vector<float> l2 = logits_of(f, tokens, &twice);
  CHECK_NEAR_ALL(l8.data(), l32.data(), (int64_t)l32.size(), 2e-2, 2e-2);  // Q8_0 rounding
  CHECK_NEAR_ALL(l2.data(), l32.data(), (int64_t)l32.size(), 1e-4, 1e-4);  // two adapters add up
}

TEST(lora, a_batch_mixing_adapters_equals_each_sequence_alone) {
  TinyLlamaSpec s;
  auto base = Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "base.gguf"));
  TinyAdapter x = tiny_adapter(s, all_targets(s), 4, 4.0f, 11);
  TinyAdapter y = tiny_adapter(s, {{"blk.1.ffn_down.weight", {s.n_embd, s.n_ff}}}, 8, 16.0f, 12);
  auto ax = LoraAdapter::from_file(GgufFile::from_bytes(x.file.bytes(), "x.gguf"), *base);
  auto ay = LoraAdapter::from_file(GgufFile::from_bytes(y.file.bytes(), "y.gguf"), *base);
  const LoraSet sx{{ax, 1.0f}}, sy{{ay, 0.5f}};
  const LoraSet* sets[4] = {&sx, nullptr, &sx, &sy};  // x twice (one span), none, y
  ThreadPool pool(2);
  ForwardPass f(*base, pool, ForwardOptions{64, 16});
  const int64_t V = s.n_vocab;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<float> logits(4 * (size_t)V);
  for (int i = 0; i < 4; ++i) {
    seqs.push_back(some_tokens(5 + 3 * i, V, 20 + (uint32_t)i));
    caches.push_back(std::make_unique<KvCache>(f.cache_config()));
    f.prefill(*caches.back(), seqs.back().data(), (int64_t)seqs.back().size(), false, logits.data(), sets[i]);
  }
  std::vector<std::vector<float>> batched(4);
  for (int step = 0; step < 3; ++step) {
    BatchToken b[4];
    for (int i = 0; i < 4; ++i) {
      const int32_t tok = (int32_t)((5 * step + 13 * i) % V);
      b[i] = BatchToken{caches[(size_t)i].get(), (int64_t)seqs[(size_t)i].size(), tok, true, sets[i]};
      seqs[(size_t)i].push_back(tok);
    }
    CHECK_EQ(f.step(b, 4, logits.data()), (int64_t)4);
    for (int i = 0; i < 4; ++i)
      batched[(size_t)i].insert(batched[(size_t)i].end(), logits.begin() + i * V, logits.begin() + (i + 1) * V);
  }
  for (int i = 0; i < 4; ++i) {
    const std::vector<float> alone = logits_of(f, seqs[(size_t)i], sets[i]);
    const size_t n = seqs[(size_t)i].size();
    CHECK_NEAR_ALL(batched[(size_t)i].data(), &alone[(n - 3) * (size_t)V], 3 * V, 1e-4, 1e-4);
  }
}

TEST(lora, the_decode_loop_runs_each_sequence_with_its_own_adapter) {
  TinyLlamaSpec s;
  auto base = Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "base.gguf"));
  TinyAdapter x = tiny_adapter(s, all_targets(s), 8, 16.0f, 31);
  auto ax = LoraAdapter::from_file(GgufFile::from_bytes(x.file.bytes(), "x.gguf"), *base);
  auto with = std::make_shared<const LoraSet>(LoraSet{{ax, 1.0f}});
  ThreadPool pool(2);
  ForwardPass f(*base, pool, ForwardOptions{64, 16});
  std::mutex mu;
  // Greedy continuations computed one sequence at a time with prefill.
  const std::vector<int32_t> prompt = some_tokens(7, s.n_vocab, 40);
  auto greedy = [&](const LoraSet* set) {
    std::vector<int32_t> t = prompt;
    for (int i = 0; i < 6; ++i) {
      const std::vector<float> l = logits_of(f, t, set);
      const float* last = &l[(t.size() - 1) * (size_t)s.n_vocab];
      t.push_back((int32_t)(std::max_element(last, last + s.n_vocab) - last));
    }
    return std::vector<int32_t>(t.begin() + (long)prompt.size(), t.end());
  };
  const std::vector<int32_t> want_base = greedy(nullptr), want_lora = greedy(with.get());
  CHECK_MSG(want_base != want_lora, "the adapter does not change the greedy continuation: the test cannot tell them apart");

  std::vector<DecodeEvent> events, got;
  std::mutex ev_mu;
  std::condition_variable cv;
  DecodeLoop loop(f, mu, DecodeLoopOptions{4}, [&] { cv.notify_one(); });
  std::map<uint64_t, const LoraSet*> set_of;
  for (int i = 0; i < 4; ++i) {
    SequenceRequest r;
    r.prompt = prompt;
    r.max_tokens = 6;
    r.sampling.temperature = 0.0f;
    if (i % 2 == 0) r.lora = with;
    set_of[loop.submit(r)] = i % 2 == 0 ? with.get() : nullptr;
  }
  std::map<uint64_t, std::vector<int32_t>> tokens;
  int finished = 0;
  while (finished < 4) {
    {
      std::unique_lock<std::mutex> lock(ev_mu);
      cv.wait_for(lock, std::chrono::milliseconds(20));
    }
    loop.drain(events);
    for (const DecodeEvent& e : events) {
      if (e.kind == DecodeEvent::kToken) tokens[e.id].push_back(e.token);
      else ++finished;
    }
  }
  for (const auto& [id, t] : tokens) CHECK(t == (set_of[id] ? want_lora : want_base));
  CHECK_EQ((int64_t)tokens.size(), (int64_t)4);
}

TEST(lora, adapters_that_do_not_fit_the_base_are_refused_naming_the_tensor) {
  TinyLlamaSpec s;
  auto base = Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "base.gguf"));
  const int64_t D = s.n_embd;
  auto expect = [&](std::vector<uint8_t> bytes, const std::string& code, const std::string& part) {
    const auto [c, m] = refusal(std::move(bytes), *base);
    CHECK_MSG(c == code && m.find(part) != std::string::npos, "want " + code + " naming '" + part + "', got " + c + ": " + m);
  };
  // Shapes: lora_b's rows are not the base's.
  expect(tiny_adapter(s, {{"blk.0.attn_q.weight", {D + 32, D}}}, 4, 0, 1).file.bytes(), "E_MODEL_UNSUPPORTED",
         "'blk.0.attn_q.weight' is [64, 64] in the base model");
  // A base tensor the model does not have.
  expect(tiny_adapter(s, {{"blk.7.attn_q.weight", {D, D}}}, 4, 0, 1).file.bytes(), "E_MODEL_UNSUPPORTED",
         "'blk.7.attn_q.weight' does not exist in the base model");
  // A tensor edgellm does not adapt (the embeddings, read by row).
  expect(tiny_adapter(s, {{"token_embd.weight", {s.n_vocab, D}}}, 4, 0, 1).file.bytes(), "E_MODEL_UNSUPPORTED",
         "'token_embd.weight': edgellm does not adapt it");
  // Another architecture.
  expect(tiny_adapter(s, {{"blk.0.attn_q.weight", {D, D}}}, 4, 0, 1, DType::F32, "qwen2").file.bytes(),
         "E_MODEL_UNSUPPORTED", "for architecture 'qwen2' but the model is 'llama'");
  // A model file, not an adapter.
  expect(tiny_llama(s).bytes(), "E_MODEL_UNSUPPORTED", "not a LoRA adapter (general.type is absent");
  // An activated LoRA: it would apply only after its invocation tokens.
  TinyAdapter alora = tiny_adapter(s, {{"blk.0.attn_q.weight", {D, D}}}, 4, 0, 1);
  alora.file.u32("adapter.alora.invocation_tokens", 7);
  expect(alora.file.bytes(), "E_MODEL_UNSUPPORTED", "an activated LoRA");
  // Half a pair.
  GgufBuilder half;
  half.str("general.architecture", "llama");
  half.str("general.type", "adapter");
  half.str("adapter.type", "lora");
  half.tensor("blk.0.attn_q.weight.lora_a", {D, 4}, DType::F32, std::vector<float>((size_t)(4 * D), 0.1f));
  expect(half.bytes(), "E_MODEL_CORRUPT", "'blk.0.attn_q.weight.lora_b' is missing");
  // A tensor that is neither half.
  GgufBuilder odd;
  odd.str("general.architecture", "llama");
  odd.str("general.type", "adapter");
  odd.str("adapter.type", "lora");
  odd.tensor("blk.0.attn_q.weight", {D, D}, DType::F32, std::vector<float>((size_t)(D * D), 0.1f));
  expect(odd.bytes(), "E_MODEL_CORRUPT", "'blk.0.attn_q.weight' is neither");
  // Truncated files: an error at every length, never a crash.
  const std::vector<uint8_t> good = tiny_adapter(s, {{"blk.0.attn_q.weight", {D, D}}}, 4, 2.0f, 1).file.bytes();
  for (size_t n = 0; n < good.size(); n += 7) {
    const auto [c, m] = refusal(std::vector<uint8_t>(good.begin(), good.begin() + (long)n), *base);
    CHECK_MSG(c == "E_MODEL_CORRUPT" || c == "E_MODEL_UNSUPPORTED", "truncated to " + std::to_string(n) + ": " + c + " " + m);
  }
  CHECK(refusal(good, *base).first.empty());
}

TEST(lora, adapters_bind_to_q4_0_matrices_repacked_at_load) {
  // Repacking (Q4_0 -> Q4_0_X4, in place) changes a matrix's type, not its place: the adapter still
  // finds every matrix, and the repacked model with the adapter gives the plain one's logits.
  TinyLlamaSpec s;
  s.matrix_type = DType::Q4_0;
  const std::vector<uint8_t> base_bytes = tiny_llama(s).bytes();
  const std::vector<uint8_t> adapter_bytes = tiny_adapter(s, all_targets(s), 8, 16.0f, 41).file.bytes();
  const char* before = std::getenv("EDGELLM_REPACK");
  const std::string saved = before ? before : "";
  std::vector<std::vector<float>> logits;
  for (const char* repack : {"0", "force"}) {
    setenv("EDGELLM_REPACK", repack, 1);
    auto base = Model::from_file(GgufFile::from_bytes(base_bytes, "base.gguf"));
    auto adapter = LoraAdapter::from_file(GgufFile::from_bytes(adapter_bytes, "a.gguf"), *base);
    CHECK_EQ(adapter->n_pairs(), (int64_t)all_targets(s).size());
    if (std::string(repack) == "force") CHECK(base->weights().layers[0].wq.type == DType::Q4_0_X4);
    ThreadPool pool(2);
    // The reference table runs both layouts (this CPU's may have no Q4_0_X4 kernel).
    ForwardPass f(*base, pool, ForwardOptions{64, 16}, reference_kernels());
    const LoraSet set{{adapter, 1.0f}};
    logits.push_back(logits_of(f, some_tokens(9, s.n_vocab, 42), &set));
  }
  if (before) setenv("EDGELLM_REPACK", saved.c_str(), 1);
  else unsetenv("EDGELLM_REPACK");
  CHECK_NEAR_ALL(logits[1].data(), logits[0].data(), (int64_t)logits[0].size(), 1e-3, 1e-3);
}
