// DecodeLoop on tiny random models built in memory: a sequence's tokens equal greedy decoding by
// hand; sequences decoded together equal each decoded alone; the max_sequences cap queues the
// rest; stop tokens, max_tokens, cancel (queued and active) and stop() finish sequences as
// documented and free their caches.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "gguf_builder.h"
#include "model/model.h"
#include "runtime/decode_loop.h"
#include "runtime/forward.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

std::unique_ptr<Model> tiny_model() {
  TinyLlamaSpec s;
  return Model::from_file(GgufFile::from_bytes(tiny_llama(s).bytes(), "tiny.gguf"));
}

ForwardOptions opts(int64_t context, int64_t batch) {
  ForwardOptions o;
  o.context = context;
  o.batch = batch;
  return o;
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// Collects the loop's events as the JS side would: per sequence its tokens and its finish.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  bool pending = false;
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, std::vector<DecodeEvent>> token_events;  // with their step_sequences, at_ms, logprobs
  std::map<uint64_t, DecodeEvent> finished;
  std::vector<DecodeEvent> buf;

  std::function<void()> notifier() {
    return [this] {
      std::lock_guard<std::mutex> l(mu);
      pending = true;
      cv.notify_all();
    };
  }
  // Waits (at most 10 s) until `n` sequences have finished.
  bool wait_finished(DecodeLoop& loop, size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait_until(l, deadline, [&] { return pending; });
        pending = false;
      }
      loop.drain(buf);
      for (auto& e : buf) {
        if (e.kind == DecodeEvent::kToken) {
          tokens[e.id].push_back(e.token);
          token_events[e.id].push_back(e);
        } else {
          finished[e.id] = e;
        }
      }
      if (finished.size() >= n) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
    }
  }
};

// Greedy decoding by hand: prefill, then argmax and one step per token.
std::vector<int32_t> greedy_by_hand(ForwardPass& f, const std::vector<int32_t>& prompt, int n) {
  const int64_t V = f.model().config().n_vocab;
  KvCache seq(f.cache_config());
  std::vector<float> logits((size_t)V);
  f.prefill(seq, prompt.data(), (int64_t)prompt.size(), false, logits.data());
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    Sampler s(greedy(), (int32_t)V);
    const int32_t t = s.sample(logits.data());
    out.push_back(t);
    BatchToken b{&seq, seq.length(0), t, true};
    f.step(&b, 1, logits.data());
  }
  return out;
}

std::vector<int32_t> prompt_of(int n, int seed) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back((int32_t)((seed * 31 + i * 17) % 96));
  return p;
}

}  // namespace

TEST(engine_loop, one_sequence_yields_the_greedy_tokens_then_length) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(128, 16));
  const auto prompt = prompt_of(21, 1);  // more than one prefill chunk
  const auto want = greedy_by_hand(f, prompt, 12);
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {2}, c.notifier());
  const uint64_t id = loop.submit({prompt, greedy(), 12, {}});
  CHECK(c.wait_finished(loop, 1));
  CHECK(c.tokens[id] == want);
  CHECK(c.finished[id].reason == FinishReason::kLength);
  CHECK_EQ(c.finished[id].completion_tokens, (int64_t)12);
  CHECK_EQ(c.finished[id].prompt_tokens, (int64_t)21);
  CHECK(c.finished[id].timings.total_ms >= c.finished[id].timings.ttft_ms);
  CHECK_EQ(loop.state().active, (int64_t)0);
}

TEST(engine_loop, sequences_decoded_together_equal_each_decoded_alone) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(128, 16));
  std::vector<std::vector<int32_t>> prompts = {prompt_of(5, 1), prompt_of(19, 2), prompt_of(2, 3), prompt_of(11, 4),
                                               prompt_of(7, 5)};
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {3}, c.notifier());  // 5 sequences, 3 slots: two wait in the queue
  std::vector<uint64_t> ids;
  for (auto& p : prompts) ids.push_back(loop.submit({p, greedy(), 10, {}}));
  CHECK(c.wait_finished(loop, prompts.size()));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto want = greedy_by_hand(f, prompts[i], 10);
    CHECK_MSG(c.tokens[ids[i]] == want, "sequence " + std::to_string(i) + " differs from decoding it alone");
  }
  CHECK_EQ(loop.state().active, (int64_t)0);
  CHECK_EQ(loop.state().queued, (int64_t)0);
}

// log_softmax(row)[token] in double.
double log_softmax_at(const float* row, int64_t n, int32_t token) {
  double max = -INFINITY, sum = 0.0;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, (double)row[i]);
  for (int64_t i = 0; i < n; ++i) sum += std::exp((double)row[i] - max);
  return (double)row[token] - max - std::log(sum);
}

TEST(engine_loop, logprobs_are_computed_only_for_the_sequences_that_ask) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(128, 16));
  const int64_t V = m->config().n_vocab;
  const auto prompt = prompt_of(37, 3);  // more prompt rows than kRawLogprobRows: several chunks
  const int n_gen = 6;
  // By hand: every prompt position's logits, then greedy steps with each token's log-softmax.
  KvCache seq(f.cache_config());
  std::vector<float> all(prompt.size() * (size_t)V);
  f.prefill(seq, prompt.data(), (int64_t)prompt.size(), true, all.data());
  double prompt_sum = 0;
  for (size_t p = 0; p + 1 < prompt.size(); ++p) prompt_sum += log_softmax_at(&all[p * (size_t)V], V, prompt[p + 1]);
  std::vector<float> row(all.end() - V, all.end());
  std::vector<int32_t> want;
  std::vector<double> want_lp;
  for (int i = 0; i < n_gen; ++i) {
    const int32_t t = (int32_t)(std::max_element(row.begin(), row.end()) - row.begin());
    want.push_back(t);
    want_lp.push_back(log_softmax_at(row.data(), V, t));
    BatchToken b{&seq, seq.length(0), t, true};
    f.step(&b, 1, row.data());
  }

  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {3}, c.notifier());
  SamplingParams g = greedy();
  g.penalty_last_n = 0;
  SequenceRequest asks{prompt, g, n_gen, {}};
  asks.top_logprobs = 3;
  asks.raw_logprobs = true;
  const uint64_t a = loop.submit(asks);
  const uint64_t plain_id = loop.submit({prompt, g, n_gen, {}});
  SequenceRequest top0{prompt, g, n_gen, {}};
  top0.top_logprobs = 0;
  const uint64_t z = loop.submit(top0);
  CHECK(c.wait_finished(loop, 3));
  CHECK(c.tokens[a] == want);
  CHECK(c.tokens[plain_id] == want);
  CHECK(c.tokens[z] == want);
  for (size_t i = 0; i < c.token_events[a].size() && i < want.size(); ++i) {
    const DecodeEvent& e = c.token_events[a][i];
    CHECK_EQ(e.n_top, 3);
    CHECK_MSG(std::fabs(e.logprob - want_lp[i]) < 1e-4, "token " + std::to_string(i) + ": " + std::to_string(e.logprob) +
                                                            " != " + std::to_string(want_lp[i]));
    CHECK_EQ(e.top[0].id, want[i]);
    CHECK(e.top[0].logprob >= e.top[1].logprob && e.top[1].logprob >= e.top[2].logprob);
    CHECK_EQ(c.token_events[plain_id][i].n_top, -1);
    CHECK_EQ(c.token_events[z][i].n_top, 0);
    CHECK(std::fabs(c.token_events[z][i].logprob - want_lp[i]) < 1e-4);
  }
  const DecodeEvent& fa = c.finished[a];
  CHECK_EQ(fa.prompt_logprob_tokens, (int64_t)prompt.size() - 1);
  CHECK_MSG(std::fabs(fa.prompt_logprob_sum - prompt_sum) < 1e-3 * prompt.size(),
            std::to_string(fa.prompt_logprob_sum) + " != " + std::to_string(prompt_sum));
  double gen_sum = 0;
  for (double lp : want_lp) gen_sum += lp;
  CHECK_EQ(fa.completion_logprob_tokens, (int64_t)n_gen);
  CHECK(std::fabs(fa.completion_logprob_sum - gen_sum) < 1e-3);
  CHECK_EQ(c.finished[plain_id].prompt_logprob_tokens, (int64_t)0);
}

TEST(engine_loop, top_logprobs_out_of_range_is_refused_at_submit) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(64, 8));
  std::mutex fmu;
  DecodeLoop loop(f, fmu, {1}, [] {});
  SequenceRequest r{{1, 2}, greedy(), 2, {}};
  r.top_logprobs = 21;
  std::string why;
  try {
    loop.submit(r);
  } catch (const std::invalid_argument& e) {
    why = e.what();
  }
  CHECK_MSG(why.find("top_logprobs must be from 0 to 20") != std::string::npos, why);
}

TEST(engine_loop, a_stop_token_finishes_with_stop_and_is_not_posted) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(128, 16));
  const auto prompt = prompt_of(4, 7);
  const auto want = greedy_by_hand(f, prompt, 6);
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {1}, c.notifier());
  const uint64_t id = loop.submit({prompt, greedy(), 50, {want[3]}});
  CHECK(c.wait_finished(loop, 1));
  // Tokens before the first occurrence of the stop token.
  std::vector<int32_t> before;
  for (int32_t t : want) {
    if (t == want[3]) break;
    before.push_back(t);
  }
  CHECK(c.tokens[id] == before);
  CHECK(c.finished[id].reason == FinishReason::kStop);
  CHECK_EQ(c.finished[id].token, want[3]);
  CHECK_EQ(c.finished[id].completion_tokens, (int64_t)before.size() + 1);
}

TEST(engine_loop, cancel_drops_a_queued_sequence_and_frees_an_active_one) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(256, 16));
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {1}, c.notifier());
  const uint64_t a = loop.submit({prompt_of(3, 1), greedy(), 200, {}});
  const uint64_t b = loop.submit({prompt_of(3, 2), greedy(), 200, {}});
  CHECK_EQ(loop.state().queued + loop.state().active, (int64_t)2);
  loop.cancel(b);  // still queued (one slot, held by a or about to be): dropped at once
  CHECK_EQ(loop.state().queued + loop.state().active, (int64_t)1);
  loop.cancel(a);
  CHECK(c.wait_finished(loop, 2));
  CHECK(c.finished[a].reason == FinishReason::kCancelled);
  CHECK(c.finished[b].reason == FinishReason::kCancelled);
  CHECK_EQ(c.finished[b].completion_tokens, (int64_t)0);
  CHECK(c.tokens[a].size() < 200);
  CHECK_EQ(loop.state().active, (int64_t)0);
  // The loop keeps serving after cancels.
  const uint64_t d = loop.submit({prompt_of(3, 3), greedy(), 3, {}});
  CHECK(c.wait_finished(loop, 3));
  CHECK(c.finished[d].reason == FinishReason::kLength);
  CHECK_EQ(c.tokens[d].size(), (size_t)3);
}

TEST(engine_loop, stop_cancels_every_sequence_and_refuses_new_ones) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(256, 16));
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {1}, c.notifier());
  const uint64_t a = loop.submit({prompt_of(3, 1), greedy(), 250, {}});
  const uint64_t b = loop.submit({prompt_of(3, 2), greedy(), 250, {}});
  loop.stop();
  CHECK(c.wait_finished(loop, 2));
  CHECK(c.finished[a].reason == FinishReason::kCancelled);
  CHECK(c.finished[b].reason == FinishReason::kCancelled);
  bool threw = false;
  try {
    loop.submit({prompt_of(3, 1), greedy(), 5, {}});
  } catch (const std::logic_error&) {
    threw = true;
  }
  CHECK(threw);
}

TEST(engine_loop, bad_requests_are_refused_at_submit) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(16, 8));
  std::mutex fmu;
  DecodeLoop loop(f, fmu, {1}, nullptr);
  auto refused = [&](SequenceRequest r) {
    try {
      loop.submit(std::move(r));
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  CHECK(refused({{}, greedy(), 5, {}}));
  CHECK(refused({{1, 96}, greedy(), 5, {}}));
  CHECK(refused({{1}, greedy(), 0, {}}));
  CHECK(refused({prompt_of(17, 1), greedy(), 1, {}}));  // longer than the context
  SamplingParams bad;
  bad.top_p = 0;
  CHECK(refused({{1}, bad, 5, {}}));
}

TEST(engine_loop, the_end_of_a_bounded_context_finishes_with_length) {
  auto m = tiny_model();
  ThreadPool pool(1);
  ForwardPass f(*m, pool, opts(16, 8));
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {1}, c.notifier());
  const uint64_t id = loop.submit({prompt_of(10, 1), greedy(), 100, {}});
  CHECK(c.wait_finished(loop, 1));
  CHECK(c.finished[id].reason == FinishReason::kLength);
  // 10 prompt positions + 6 fed tokens fill 16; the 7th sampled token has no position to go to.
  CHECK_EQ(c.tokens[id].size(), (size_t)7);
}

// A finished sequence's KV cache and sampler serve the next one admitted: nothing of the first
// (cache contents, penalty window, RNG state) may reach the second, whatever their sampling.
TEST(engine_loop, a_reused_cache_and_sampler_start_clean) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(128, 16));
  SamplingParams penalized = greedy();
  penalized.repeat_penalty = 1.3f;
  penalized.penalty_last_n = 16;
  SamplingParams random;
  random.temperature = 0.9f;
  random.seed = 7;
  const std::vector<std::pair<std::vector<int32_t>, SamplingParams>> reqs = {
      {prompt_of(23, 1), penalized}, {prompt_of(6, 2), random}, {prompt_of(9, 3), penalized}, {prompt_of(4, 4), greedy()}};
  // Each alone in a fresh loop.
  std::vector<std::vector<int32_t>> want;
  for (const auto& r : reqs) {
    std::mutex fmu;
    Collector c;
    DecodeLoop loop(f, fmu, {1}, c.notifier());
    const uint64_t id = loop.submit({r.first, r.second, 9, {}});
    CHECK(c.wait_finished(loop, 1));
    want.push_back(c.tokens[id]);
  }
  // One after the other through one slot: each reuses the previous one's cache and sampler.
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {1}, c.notifier());
  std::vector<uint64_t> ids;
  for (const auto& r : reqs) ids.push_back(loop.submit({r.first, r.second, 9, {}}));
  CHECK(c.wait_finished(loop, reqs.size()));
  for (size_t i = 0; i < reqs.size(); ++i)
    CHECK_MSG(c.tokens[ids[i]] == want[i], "sequence " + std::to_string(i) + " differs from decoding it in a fresh loop");
  CHECK_EQ(loop.state().spare, (int64_t)1);
}

TEST(engine_loop, spare_caches_are_freed_after_the_loop_idles) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(64, 8));
  std::mutex fmu;
  Collector c;
  DecodeLoopOptions o;
  o.max_sequences = 3;
  o.keep_spares = std::chrono::milliseconds(1000);  // long enough that the count below is read first
  DecodeLoop loop(f, fmu, o, c.notifier());
  for (int i = 0; i < 5; ++i) loop.submit({prompt_of(3 + i, i), greedy(), 4, {}});
  CHECK(c.wait_finished(loop, 5));
  CHECK_EQ(loop.state().spare, (int64_t)3);  // at most max_sequences are kept
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (loop.state().spare > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK_EQ(loop.state().spare, (int64_t)0);
  // And the loop still works after giving them back.
  const uint64_t id = loop.submit({prompt_of(5, 9), greedy(), 3, {}});
  CHECK(c.wait_finished(loop, 6));
  CHECK_EQ((int64_t)c.tokens[id].size(), (int64_t)3);
}

TEST(engine_loop, token_events_say_how_many_sequences_their_step_advanced_and_when) {
  auto m = tiny_model();
  ThreadPool pool(2);
  ForwardPass f(*m, pool, opts(128, 16));
  std::mutex fmu;
  Collector c;
  DecodeLoop loop(f, fmu, {3}, c.notifier());
  std::vector<uint64_t> ids;
  {
    // Holding the forward mutex keeps the loop from stepping until all three are queued.
    std::lock_guard<std::mutex> hold(fmu);
    for (int i = 0; i < 3; ++i) ids.push_back(loop.submit({prompt_of(5 + 7 * i, i), greedy(), 10, {}}));
  }
  CHECK(c.wait_finished(loop, 3));
  int32_t most = 0;
  for (uint64_t id : ids) {
    const auto& ev = c.token_events[id];
    CHECK_EQ(ev.size(), (size_t)10);
    CHECK(std::abs(ev.front().at_ms - c.finished[id].timings.ttft_ms) < 1e-6);  // the first token's time is the ttft
    for (size_t i = 0; i < ev.size(); ++i) {
      CHECK(ev[i].step_sequences >= 1 && ev[i].step_sequences <= 3);
      if (i > 0) CHECK(ev[i].at_ms >= ev[i - 1].at_ms);
      most = std::max(most, ev[i].step_sequences);
    }
  }
  CHECK_EQ(most, (int32_t)3);  // the three ran side by side
  // Alone, every step advances one sequence.
  const uint64_t alone = loop.submit({prompt_of(4, 9), greedy(), 6, {}});
  CHECK(c.wait_finished(loop, 4));
  for (const auto& e : c.token_events[alone]) CHECK_EQ(e.step_sequences, (int32_t)1);
}
