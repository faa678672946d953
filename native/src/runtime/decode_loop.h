// The decode loop: one thread per model that advances every active sequence by one token per
// step, with one ForwardPass::step (one pass over the weights) for all of them.
//
//   DecodeLoop loop(fwd, fwd_mutex, {.max_sequences = 4}, [&] { /* events are waiting */ });
//   uint64_t id = loop.submit({prompt, sampling, max_tokens, stop_tokens});
//   ... on notify: loop.drain(events);   // Token events, then one Finished event per sequence
//   loop.cancel(id);                      // between steps; a queued sequence is dropped at once
//   loop.stop();                          // cancels everything, joins the thread
//
// Continuous batching: sequences join and leave between steps. At most max_sequences are active
// (each owns a KvCache and a Sampler); the rest wait in submission order. A step holds one token
// of every decoding sequence plus, in the budget left up to the pass's max_batch, the next chunk
// of prompt tokens of sequences still prefilling, so a new prompt is evaluated alongside the
// others' decoding instead of stalling them.
//
// A sequence finishes on a stop token (kStop; the token is not posted), after max_tokens
// generated tokens (kLength), at the end of the context of a bounded model (kLength: callers
// that check prompt + max_tokens against the context up front never reach it), on cancel or
// stop() (kCancelled), or on an engine failure (kError with a code). Its KvCache is released (kept
// as a spare for the next sequence, or freed) before its Finished event is posted, so active()
// already excludes it when the event arrives.
//
// Events go to an outbox; `notify` runs (on the loop thread) whenever the outbox turns
// non-empty, so a slow consumer gets many tokens per drain instead of one wake-up per token.
// The hot loop reuses its buffers: a step allocates nothing but what the outbox needs to grow.
//
// Log-probabilities are computed only for sequences that ask: top_logprobs >= 0 puts the sampled
// token's log-probability and its alternatives in each Token event (Sampler::token_logprobs: the
// distribution drawn from; greedy: the log-softmax of the penalized logits). raw_logprobs sums the
// model's own log-softmax (no penalties, no temperature) of every prompt token after the first
// (given its prefix) and of every generated token, reported in the Finished event: the drift
// signal. Prompt tokens need their own logits rows, so such a sequence prefills at most
// kRawLogprobRows tokens per step, in rows allocated when the first such sequence arrives.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"

namespace edgellm {

struct SequenceRequest {
  std::vector<int32_t> prompt;       // at least one token (BOS counts)
  SamplingParams sampling;
  int64_t max_tokens = 0;            // >= 1 generated tokens, counting a stop token
  std::vector<int32_t> stop_tokens;  // ids that end the sequence (end-of-generation tokens)
  int32_t top_logprobs = -1;         // -1: no log-probabilities; 0..kMaxTopLogprobs alternatives per token
  bool raw_logprobs = false;         // sum the model's log-probabilities of prompt and generated tokens
  // LoRA adapters with their scales (null: the base model). Requests that share one set object
  // are decoded next to each other, so each adapted matrix costs one GEMM per set and step.
  std::shared_ptr<const LoraSet> lora = nullptr;
};

// Logits rows, beyond one per active sequence, that raw_logprobs prompts may use in one step.
constexpr int64_t kRawLogprobRows = 16;

enum class FinishReason : uint8_t { kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

// Milliseconds from submit(); all zero for a sequence cancelled while queued.
struct SequenceTimings {
  double queue_ms = 0;   // submit -> its first prompt chunk starts
  double prompt_ms = 0;  // first prompt chunk -> logits of the last prompt token
  double ttft_ms = 0;    // submit -> first generated token sampled
  double total_ms = 0;   // submit -> finished
  double decode_ms = 0;  // first generated token -> last generated token
};

struct DecodeEvent {
  enum Kind : uint8_t { kToken, kFinished } kind = kToken;
  uint64_t id = 0;
  int32_t token = -1;  // kToken: the generated token; kFinished with kStop: the stop token, else -1
  // kToken only (a request's trace): sequences the step that sampled it advanced (decoding and
  // prefilling, this one included), and when it was sampled, in ms from submit().
  int32_t step_sequences = 0;
  double at_ms = 0;
  // kFinished only:
  FinishReason reason = FinishReason::kStop;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // generated, including a stop token
  SequenceTimings timings;
  std::string error_code, error_message;  // kError
  // raw_logprobs sequences, kFinished: sums of natural-log probabilities and how many tokens each has.
  double prompt_logprob_sum = 0, completion_logprob_sum = 0;
  int64_t prompt_logprob_tokens = 0, completion_logprob_tokens = 0;
  // kToken of a sequence with top_logprobs >= 0 (n_top = -1 otherwise): the token's log-probability
  // and the n_top most probable alternatives. A fixed array: posting a token never allocates.
  float logprob = 0;
  int32_t n_top = -1;
  TokenLogprob top[kMaxTopLogprobs];
};

struct DecodeLoopOptions {
  int64_t max_sequences = 4;  // active at once, 1 .. the pass's max_batch
  // A finished sequence's KV cache and sampler are kept (up to max_sequences of each) for the
  // next one admitted, and freed once the loop has had nothing to do for this long. A fresh
  // cache is allocated and touched page by page while every other sequence waits for the step
  // (~3 ms per MiB on a VM whose page faults cost ~12 us; llama.cpp allocates its KV cache once).
  std::chrono::milliseconds keep_spares{2000};
};

struct DecodeLoopState {
  int64_t active = 0;  // sequences holding a KvCache
  int64_t queued = 0;  // submitted, waiting for a slot
  int64_t spare = 0;   // KV caches kept for reuse by finished sequences
};

class DecodeLoop {
 public:
  // `forward_mu` is held around every step: other evaluations on the same ForwardPass take it too.
  // Starts the loop thread. Throws std::invalid_argument for max_sequences out of range.
  DecodeLoop(ForwardPass& forward, std::mutex& forward_mu, const DecodeLoopOptions& opts,
             std::function<void()> notify);
  ~DecodeLoop();  // stop()
  DecodeLoop(const DecodeLoop&) = delete;
  DecodeLoop& operator=(const DecodeLoop&) = delete;

  // Queues a sequence and returns its id (> 0). Throws std::invalid_argument naming what is wrong
  // (empty prompt, a token outside the vocabulary, max_tokens < 1, bad sampling parameters, a
  // prompt longer than a bounded context) and std::logic_error after stop().
  uint64_t submit(SequenceRequest req);

  // Ends a sequence with kCancelled: a queued one at once, an active one before the next step.
  // Unknown or finished ids are ignored.
  void cancel(uint64_t id);

  // Moves every waiting event into `out` (cleared first), in the order they happened.
  void drain(std::vector<DecodeEvent>& out);

  // Cancels every sequence (each gets its Finished event) and joins the thread. Idempotent.
  void stop();

  DecodeLoopState state() const;
  int64_t max_sequences() const { return max_sequences_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Sequence {
    uint64_t id = 0;
    SequenceRequest req;
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<Sampler> sampler;
    int64_t prefilled = 0;  // prompt tokens in the cache
    int32_t next = -1;      // the last sampled token, fed by the next step
    int64_t generated = 0;
    Clock::time_point submitted, started, prefilled_at, first_token, last_token;
    bool has_started = false;
    bool holds_slot = false;  // counted in n_active_
    bool fresh = false;     // sampled a token in the step just run
    float logprob = 0;      // of `next`, with top_logprobs
    int32_t n_top = -1;
    TokenLogprob top[kMaxTopLogprobs];
    double prompt_logprob_sum = 0, completion_logprob_sum = 0;  // raw_logprobs
    int64_t prompt_logprob_tokens = 0;
  };
  // A logits row of the step: sampled for `seq`, or (target >= 0) a raw_logprobs prompt row that
  // scores the prompt's next token.
  struct Row {
    Sequence* seq;
    int32_t target;
  };

  void run();
  bool admit(std::unique_ptr<Sequence>& s);  // a (spare or new) cache + sampler; false = finished with an error
  void release_spares();
  void finish(std::unique_ptr<Sequence> s, FinishReason reason, int32_t stop_token = -1,
              const std::string& code = "", const std::string& message = "");
  void fail_batch(const std::string& code, const std::string& message);
  void post(DecodeEvent&& e);  // under out_mu_; notifies on empty -> non-empty
  bool prefilling(const Sequence& s) const { return s.prefilled < (int64_t)s.req.prompt.size(); }

  ForwardPass& forward_;
  std::mutex& forward_mu_;
  const int64_t max_sequences_;
  const int64_t n_vocab_;
  std::function<void()> notify_;

  // Shared with callers, under mu_.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> queue_;
  std::vector<uint64_t> cancels_;
  int64_t n_active_ = 0;  // sequences holding a slot (and so a KvCache) (state())
  int64_t n_spare_ = 0;   // spare_caches_.size() (state())
  uint64_t next_id_ = 1;
  bool stopping_ = false;

  // Loop thread only.
  std::vector<std::unique_ptr<Sequence>> active_;
  std::vector<BatchToken> batch_;
  std::vector<Row> rows_;             // logits row -> what it is for
  std::vector<float> logits_;         // [max_sequences (+ kRawLogprobRows once needed)][n_vocab]
  std::vector<float> raw_scratch_;    // n_vocab once a raw_logprobs sequence came: raw_logprob()'s softmax
  std::vector<uint64_t> cancels_now_;
  std::vector<std::unique_ptr<Sequence>> admitted_;
  const std::chrono::milliseconds keep_spares_;
  std::vector<std::unique_ptr<KvCache>> spare_caches_;  // cleared, for the next admitted sequence
  std::vector<std::unique_ptr<Sampler>> spare_samplers_;

  std::mutex out_mu_;
  std::vector<DecodeEvent> out_;
  bool notify_pending_ = false;

  std::mutex stop_mu_;  // serializes stop()
  std::thread thread_;
};

}  // namespace edgellm
