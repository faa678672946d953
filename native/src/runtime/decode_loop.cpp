#include "runtime/decode_loop.h"

#include <algorithm>
#include <functional>
#include <new>
#include <stdexcept>

namespace edgellm {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "error";
}

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

DecodeLoop::DecodeLoop(ForwardPass& forward, std::mutex& forward_mu, const DecodeLoopOptions& opts,
                       std::function<void()> notify)
    : forward_(forward), forward_mu_(forward_mu), max_sequences_(opts.max_sequences),
      n_vocab_(forward.model().config().n_vocab), notify_(std::move(notify)), keep_spares_(opts.keep_spares) {
  if (max_sequences_ < 1 || max_sequences_ > forward.max_batch())
    throw std::invalid_argument("maxSequences must be from 1 to the batch size (" +
                                std::to_string(forward.max_batch()) + "), got " + std::to_string(max_sequences_));
  active_.reserve((size_t)max_sequences_);
  admitted_.reserve((size_t)max_sequences_);
  batch_.reserve((size_t)forward.max_batch());
  rows_.reserve((size_t)forward.max_batch());
  logits_.resize((size_t)max_sequences_ * (size_t)n_vocab_);
  out_.reserve(256);
  thread_ = std::thread([this] { run(); });
}

DecodeLoop::~DecodeLoop() { stop(); }

uint64_t DecodeLoop::submit(SequenceRequest req) {
  if (req.prompt.empty()) throw std::invalid_argument("the prompt has no tokens");
  for (int32_t t : req.prompt)
    if (t < 0 || t >= n_vocab_)
      throw std::invalid_argument("prompt token " + std::to_string(t) + " is outside the vocabulary (0.." +
                                  std::to_string(n_vocab_ - 1) + ")");
  for (int32_t t : req.stop_tokens)
    if (t < 0 || t >= n_vocab_)
      throw std::invalid_argument("stop token " + std::to_string(t) + " is outside the vocabulary");
  if (req.max_tokens < 1) throw std::invalid_argument("max_tokens must be at least 1");
  if (req.top_logprobs < -1 || req.top_logprobs > kMaxTopLogprobs)
    throw std::invalid_argument("top_logprobs must be from 0 to " + std::to_string(kMaxTopLogprobs) + " (or -1 for none), got " +
                                std::to_string(req.top_logprobs));
  if (!forward_.unbounded() && (int64_t)req.prompt.size() > forward_.context())
    throw std::invalid_argument("the prompt has " + std::to_string(req.prompt.size()) +
                                " tokens but the context holds " + std::to_string(forward_.context()));
  req.sampling.validate();
  std::sort(req.stop_tokens.begin(), req.stop_tokens.end());

  auto s = std::make_unique<Sequence>();
  s->req = std::move(req);
  s->submitted = Clock::now();
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw std::logic_error("the decode loop has stopped");
    id = s->id = next_id_++;
    queue_.push_back(std::move(s));
  }
  wake_.notify_one();
  return id;
}

void DecodeLoop::cancel(uint64_t id) {
  std::unique_ptr<Sequence> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const auto& s) { return s->id == id; });
    if (it != queue_.end()) {
      dropped = std::move(*it);
      queue_.erase(it);
    } else {
      cancels_.push_back(id);
    }
  }
  if (dropped) {
    DecodeEvent e;
    e.kind = DecodeEvent::kFinished;
    e.id = dropped->id;
    e.reason = FinishReason::kCancelled;
    e.prompt_tokens = (int64_t)dropped->req.prompt.size();
    post(std::move(e));
  } else {
    wake_.notify_one();
  }
}

void DecodeLoop::drain(std::vector<DecodeEvent>& out) {
  out.clear();
  std::lock_guard<std::mutex> lock(out_mu_);
  out.swap(out_);  // both vectors keep their capacity: steady state allocates nothing
  notify_pending_ = false;
}

void DecodeLoop::stop() {
  std::lock_guard<std::mutex> serial(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

DecodeLoopState DecodeLoop::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {n_active_, (int64_t)queue_.size(), n_spare_};
}

void DecodeLoop::post(DecodeEvent&& e) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    out_.push_back(std::move(e));
    if (!notify_pending_) wake = notify_pending_ = true;
  }
  if (wake && notify_) notify_();
}

void DecodeLoop::finish(std::unique_ptr<Sequence> s, FinishReason reason, int32_t stop_token, const std::string& code,
                        const std::string& message) {
  const Clock::time_point now = Clock::now();
  DecodeEvent e;
  e.kind = DecodeEvent::kFinished;
  e.id = s->id;
  e.token = stop_token;
  e.reason = reason;
  e.prompt_tokens = (int64_t)s->req.prompt.size();
  e.completion_tokens = s->generated;
  if (s->has_started) {
    e.timings.queue_ms = ms_between(s->submitted, s->started);
    if (!prefilling(*s)) e.timings.prompt_ms = ms_between(s->started, s->prefilled_at);
  } else {
    e.timings.queue_ms = ms_between(s->submitted, now);
  }
  if (s->generated > 0) {
    e.timings.ttft_ms = ms_between(s->submitted, s->first_token);
    e.timings.decode_ms = ms_between(s->first_token, s->last_token);
  }
  e.timings.total_ms = ms_between(s->submitted, now);
  e.error_code = code;
  e.error_message = message;
  if (s->req.raw_logprobs) {
    e.prompt_logprob_sum = s->prompt_logprob_sum;
    e.prompt_logprob_tokens = s->prompt_logprob_tokens;
    e.completion_logprob_sum = s->completion_logprob_sum;
    e.completion_logprob_tokens = s->generated;
  }
  const bool held_slot = s->holds_slot;
  // The KV cache goes back to the spares (or is freed) before anyone hears of the finish.
  if (s->cache && (int64_t)spare_caches_.size() < max_sequences_) spare_caches_.push_back(std::move(s->cache));
  if (s->sampler && (int64_t)spare_samplers_.size() < max_sequences_) spare_samplers_.push_back(std::move(s->sampler));
  s.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_slot) --n_active_;
    n_spare_ = (int64_t)spare_caches_.size();
  }
  post(std::move(e));
}

bool DecodeLoop::admit(std::unique_ptr<Sequence>& s) {
  try {
    if (!spare_caches_.empty()) {
      s->cache = std::move(spare_caches_.back());
      spare_caches_.pop_back();
      s->cache->clear();
      std::lock_guard<std::mutex> lock(mu_);
      n_spare_ = (int64_t)spare_caches_.size();
    } else {
      s->cache = std::make_unique<KvCache>(forward_.cache_config());
    }
    if (!spare_samplers_.empty()) {
      s->sampler = std::move(spare_samplers_.back());
      spare_samplers_.pop_back();
      s->sampler->reconfigure(s->req.sampling);
    } else {
      s->sampler = std::make_unique<Sampler>(s->req.sampling, (int32_t)n_vocab_);
    }
    // Penalties see the prompt too, as llama.cpp's server and CLI do.
    for (int32_t t : s->req.prompt) s->sampler->accept(t);
    const size_t rows_needed = (size_t)(max_sequences_ + kRawLogprobRows) * (size_t)n_vocab_;
    if (s->req.raw_logprobs && logits_.size() < rows_needed) logits_.resize(rows_needed);
    if (s->req.raw_logprobs) raw_scratch_.resize((size_t)n_vocab_);
    s->prompt_logprob_sum = s->completion_logprob_sum = 0;
    s->prompt_logprob_tokens = 0;
    return true;
  } catch (const std::bad_alloc&) {
    finish(std::move(s), FinishReason::kError, -1, "E_OUT_OF_MEMORY",
           "not enough memory for another sequence's KV cache; lower maxSequences or contextSize");
  } catch (const std::exception& e) {
    finish(std::move(s), FinishReason::kError, -1, "E_ENGINE", e.what());
  }
  return false;
}

// Ends every sequence of the failed step (their caches may be half-written).
void DecodeLoop::fail_batch(const std::string& code, const std::string& message) {
  for (auto& s : active_) {
    const bool in_batch = std::any_of(batch_.begin(), batch_.end(), [&](const BatchToken& b) { return b.cache == s->cache.get(); });
    if (in_batch) finish(std::move(s), FinishReason::kError, -1, code, message);
  }
  active_.erase(std::remove(active_.begin(), active_.end(), nullptr), active_.end());
}

void DecodeLoop::release_spares() {
  spare_caches_.clear();
  spare_samplers_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  n_spare_ = 0;
}

void DecodeLoop::run() {
  const int64_t max_batch = forward_.max_batch();
  const int64_t context = forward_.context();
  const bool bounded = !forward_.unbounded();
  for (;;) {
    // Between steps: take cancels and new sequences, or sleep until there is work.
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto has_work = [&] { return stopping_ || !cancels_.empty() || !active_.empty() || !queue_.empty(); };
      if (!spare_caches_.empty() || !spare_samplers_.empty()) {
        if (!wake_.wait_for(lock, keep_spares_, has_work)) {  // idle that long: give the memory back
          lock.unlock();
          release_spares();
          lock.lock();
        }
      }
      wake_.wait(lock, has_work);
      stopping = stopping_;
      cancels_now_.swap(cancels_);
      cancels_.clear();
      if (stopping) {
        while (!queue_.empty()) {
          admitted_.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      } else {
        while ((int64_t)(active_.size() + admitted_.size()) < max_sequences_ && !queue_.empty()) {
          queue_.front()->holds_slot = true;
          ++n_active_;
          admitted_.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
    }
    if (stopping) {
      for (auto& s : admitted_) finish(std::move(s), FinishReason::kCancelled);
      for (auto& s : active_) finish(std::move(s), FinishReason::kCancelled);
      admitted_.clear();
      active_.clear();
      return;
    }
    for (uint64_t id : cancels_now_) {
      for (auto& s : active_)
        if (s && s->id == id) finish(std::move(s), FinishReason::kCancelled);
      for (auto& s : admitted_)
        if (s && s->id == id) finish(std::move(s), FinishReason::kCancelled);
    }
    cancels_now_.clear();
    bool joined_with_lora = false;
    for (auto& s : admitted_) {
      if (s && s->req.lora) joined_with_lora = true;
      if (s && admit(s)) active_.push_back(std::move(s));
    }
    admitted_.clear();
    active_.erase(std::remove(active_.begin(), active_.end(), nullptr), active_.end());
    // Group the sequences by adapter set (the base model's first), so that each set's columns
    // are one span of the step's GEMMs (ForwardPass::apply_lora). An insertion sort: stable
    // (arrival order within a set), in place, and active_ holds at most max_sequences.
    if (joined_with_lora) {
      const std::less<const LoraSet*> before;
      for (size_t i = 1; i < active_.size(); ++i)
        for (size_t j = i; j > 0 && before(active_[j]->req.lora.get(), active_[j - 1]->req.lora.get()); --j)
          std::swap(active_[j], active_[j - 1]);
    }
    if (active_.empty()) continue;

    // One token of every decoding sequence, then prompt chunks in the budget left.
    batch_.clear();
    rows_.clear();
    int32_t step_sequences = 0;  // decoding ones plus prefilling ones given a chunk
    const Clock::time_point step_start = Clock::now();
    for (auto& s : active_) {
      if (prefilling(*s)) continue;
      const int64_t pos = s->cache->length(0);
      if (bounded && pos >= context) {  // no room for the token it has to feed
        finish(std::move(s), FinishReason::kLength);
        continue;
      }
      batch_.push_back(BatchToken{s->cache.get(), pos, s->next, true, s->req.lora.get()});
      rows_.push_back({s.get(), -1});
      ++step_sequences;
    }
    int64_t budget = max_batch - (int64_t)batch_.size();
    int64_t raw_rows = kRawLogprobRows;  // rows left for raw_logprobs prompts this step
    for (auto& s : active_) {
      if (!s || !prefilling(*s) || budget == 0) continue;
      if (!s->has_started) {
        s->has_started = true;
        s->started = step_start;
      }
      const bool raw = s->req.raw_logprobs;
      int64_t n = std::min(budget, (int64_t)s->req.prompt.size() - s->prefilled);
      if (raw) {
        n = std::min(n, raw_rows);
        raw_rows -= n;
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = s->prefilled + i;
        const bool last = p + 1 == (int64_t)s->req.prompt.size();
        batch_.push_back(BatchToken{s->cache.get(), p, s->req.prompt[(size_t)p], last || raw, s->req.lora.get()});
        if (last) rows_.push_back({s.get(), -1});
        else if (raw) rows_.push_back({s.get(), s->req.prompt[(size_t)p + 1]});
      }
      s->prefilled += n;
      budget -= n;
      if (n > 0) ++step_sequences;
    }
    active_.erase(std::remove(active_.begin(), active_.end(), nullptr), active_.end());
    if (batch_.empty()) continue;

    try {
      std::lock_guard<std::mutex> lock(forward_mu_);
      forward_.step(batch_.data(), (int64_t)batch_.size(), logits_.data());
    } catch (const ContextFullError& e) {
      fail_batch("E_CONTEXT_FULL", e.what());
      continue;
    } catch (const std::bad_alloc&) {
      fail_batch("E_OUT_OF_MEMORY", "not enough memory to evaluate a step");
      continue;
    } catch (const std::exception& e) {
      fail_batch("E_ENGINE", e.what());
      continue;
    }

    // Sample each sequence that got logits; finished ones leave before the next step.
    const Clock::time_point now = Clock::now();
    for (size_t r = 0; r < rows_.size(); ++r) {
      Sequence* s = rows_[r].seq;
      const float* row = &logits_[r * (size_t)n_vocab_];
      if (rows_[r].target >= 0) {
        s->prompt_logprob_sum += raw_logprob(row, (int32_t)n_vocab_, rows_[r].target, raw_scratch_.data());
        ++s->prompt_logprob_tokens;
        continue;
      }
      if (s->generated == 0) s->prefilled_at = now;
      const int32_t token = s->sampler->sample(row);
      if (s->req.top_logprobs >= 0) s->n_top = s->sampler->token_logprobs(row, s->req.top_logprobs, &s->logprob, s->top);
      if (s->req.raw_logprobs) s->completion_logprob_sum += raw_logprob(row, (int32_t)n_vocab_, token, raw_scratch_.data());
      s->sampler->accept(token);
      ++s->generated;
      if (s->generated == 1) s->first_token = now;
      s->last_token = now;
      s->next = token;
      s->fresh = true;
    }
    for (auto& s : active_) {
      if (!s->fresh) continue;  // still prefilling: no token this step
      s->fresh = false;
      const int32_t token = s->next;
      if (std::binary_search(s->req.stop_tokens.begin(), s->req.stop_tokens.end(), token)) {
        finish(std::move(s), FinishReason::kStop, token);
        continue;
      }
      DecodeEvent e;
      e.kind = DecodeEvent::kToken;
      e.id = s->id;
      e.token = token;
      e.step_sequences = step_sequences;
      e.at_ms = ms_between(s->submitted, now);
      if (s->req.top_logprobs >= 0) {
        e.logprob = s->logprob;
        e.n_top = s->n_top;
        std::copy(s->top, s->top + s->n_top, e.top);
      }
      post(std::move(e));
      if (s->generated >= s->req.max_tokens) finish(std::move(s), FinishReason::kLength);
    }
    active_.erase(std::remove(active_.begin(), active_.end(), nullptr), active_.end());
  }
}

}  // namespace edgellm
