#include "runtime/sampler.h"

#include "kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace edgellm {

namespace {

[[noreturn]] void refuse(const char* field, double value, const char* range) {
  throw std::invalid_argument(std::string("sampling: ") + field + " = " + std::to_string(value) +
                              " is out of range: it must be " + range);
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Larger logit first; equal logits by lower id, so every ordering is total and reproducible.
bool before(const SamplerCandidate& a, const SamplerCandidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// exp((logit - max) / temperature) with max itself weighing exactly 1, also when max is
// +-inf (all -inf: every candidate weighs 1; a +inf logit takes all the mass).
double weight(float logit, float max, double temperature) {
  if (logit == max) return 1.0;
  return std::exp(((double)logit - (double)max) / temperature);
}

// Keeps top[0..*n) as the best (by before()) of the items offered so far, at most cap of them:
// an insertion into a short sorted list; most offers lose to the last entry and cost one compare.
void offer(SamplerCandidate* top, int32_t* n, int32_t cap, const SamplerCandidate& c) {
  if (cap == 0) return;
  if (*n == cap && !before(c, top[cap - 1])) return;
  int32_t i = *n < cap ? (*n)++ : cap - 1;
  for (; i > 0 && before(c, top[i - 1]); --i) top[i] = top[i - 1];
  top[i] = c;
}

// The lowest id of the largest logit, NaN counting as -inf (the id 0 when every logit is -inf or
// NaN): what the penalized scan returns with penalties off. A sequence's decode step samples
// after every forward step, on the decode thread while the pool waits, so this runs as two
// passes the compiler vectorizes: the maximum in 8 independent lanes (a NaN never passes `>`),
// then the first id that equals it. (The scalar scan with its NaN test per logit took ~1% of an
// 8-sequence decode step of a 32000-token vocabulary.)
int32_t greedy_argmax(const float* logits, int32_t n) {
  constexpr int kLanes = 8;
  float m[kLanes];
  for (float& v : m) v = -INFINITY;
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) m[j] = logits[i + j] > m[j] ? logits[i + j] : m[j];
  for (; i < n; ++i) m[0] = logits[i] > m[0] ? logits[i] : m[0];
  float max = m[0];
  for (int j = 1; j < kLanes; ++j) max = m[j] > max ? m[j] : max;
  if (max == -INFINITY) return 0;
  for (i = 0; logits[i] != max; ++i) {
  }
  return i;
}

}  // namespace

LogNormalizer normalize_in_place(float* x, int32_t n, int32_t arg) {
  float max = arg >= 0 ? x[arg] : x[0];
  if (arg < 0)
    for (int32_t i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;  // a plain max reduction: vectorizes
  if (arg < 0)
    for (arg = 0; x[arg] != max;) ++arg;
  if (std::isinf(max)) {  // all -inf (uniform) or a +inf logit: weight()'s exact conventions
    double sum = 0.0;
    for (int32_t i = 0; i < n; ++i) sum += weight(x[i], max, 1.0);
    return {max, std::log(sum)};
  }
  kernels().softmax(x, n);
  return {max, -std::log((double)x[arg])};
}

float raw_logprob(const float* logits, int32_t n_vocab, int32_t token, float* scratch) {
  for (int32_t i = 0; i < n_vocab; ++i) scratch[i] = logits[i] != logits[i] ? -INFINITY : logits[i];  // NaN -> -inf
  const float l = scratch[token];
  return normalize_in_place(scratch, n_vocab).logprob(l);
}

void SamplingParams::validate() const {
  // Negated comparisons so that NaN fails every check.
  if (!(temperature >= 0.0f) || std::isinf(temperature))
    refuse("temperature", temperature, "a finite number >= 0 (0 = greedy)");
  if (top_k < 0) refuse("top_k", top_k, ">= 0 (0 = the whole vocabulary)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) refuse("top_p", top_p, "in (0, 1] (1 = off)");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) refuse("min_p", min_p, "in [0, 1] (0 = off)");
  if (!(repeat_penalty > 0.0f) || std::isinf(repeat_penalty))
    refuse("repeat_penalty", repeat_penalty, "a finite number > 0 (1 = off)");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    refuse("presence_penalty", presence_penalty, "in [-2, 2] (0 = off)");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    refuse("frequency_penalty", frequency_penalty, "in [-2, 2] (0 = off)");
  if (penalty_last_n < 0 || penalty_last_n > kMaxPenaltyLastN)
    refuse("penalty_last_n", penalty_last_n, "in [0, 1048576] tokens (0 = no penalties)");
}

void SamplerRng::reseed(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& s : s_) s = splitmix64(x);  // never all zero: splitmix64 is a bijection of distinct inputs
}

uint64_t SamplerRng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab)
    : params_(params), n_vocab_(n_vocab), rng_(params.seed) {
  params_.validate();
  if (n_vocab < 1) throw std::invalid_argument("sampling: n_vocab = " + std::to_string(n_vocab) + " must be >= 1");
  cand_.resize((size_t)n_vocab);
  reconfigure(params);
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= n_vocab_)
    throw std::invalid_argument("sampling: accepted token " + std::to_string(token) + " is outside the vocabulary [0, " +
                                std::to_string(n_vocab_) + ")");
  if (counts_.empty()) return;
  const int32_t cap = (int32_t)window_.size();
  if (window_len_ == cap) --counts_[(size_t)window_[(size_t)window_head_]];  // the oldest leaves
  else ++window_len_;
  window_[(size_t)window_head_] = token;
  ++counts_[(size_t)token];
  window_head_ = (window_head_ + 1) % cap;
}

void Sampler::reconfigure(const SamplingParams& params) {
  params.validate();
  params_ = params;
  const bool penalties = params_.penalty_last_n > 0 &&
                         (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                          params_.frequency_penalty != 0.0f);
  // reset() zeroes the counts; the window is written before it is read.
  window_.resize(penalties ? (size_t)params_.penalty_last_n : 0);
  counts_.resize(penalties ? (size_t)n_vocab_ : 0);  // empty = penalties off; the capacity stays
  reset();
}

void Sampler::reset() {
  if (!counts_.empty()) std::fill(counts_.begin(), counts_.end(), 0);
  window_len_ = 0;
  window_head_ = 0;
  n_cand_ = 0;
  rng_.reseed(params_.seed);
}

// Logit i after NaN -> -inf and the penalties (when penalize).
inline float Sampler::penalized(const float* logits, int32_t i, bool penalize) const {
  float l = logits[i];
  if (std::isnan(l)) l = -INFINITY;
  if (penalize) {
    const int32_t c = counts_[(size_t)i];
    if (c > 0) {
      // CTRL's repetition penalty with the usual fix for negative logits: always less likely.
      l = l <= 0.0f ? l * params_.repeat_penalty : l / params_.repeat_penalty;
      l -= (float)c * params_.frequency_penalty + params_.presence_penalty;
    }
  }
  return l;
}

void Sampler::load_penalized(const float* logits) {
  const bool penalize = penalizing();
  for (int32_t i = 0; i < n_vocab_; ++i) cand_[(size_t)i] = {i, penalized(logits, i, penalize), 0.0};
  n_cand_ = n_vocab_;
}

int32_t Sampler::sample(const float* logits) {
  SamplerCandidate* c = cand_.data();
  if (params_.temperature == 0.0f) {
    // Greedy: the largest penalized logit (ties: the lower id), without writing n_vocab
    // candidates first (a step of 8 sequences spent ~0.4 ms doing that on one thread).
    const bool penalize = penalizing();
    int32_t best = 0;
    float best_l;
    if (penalize) {
      best_l = penalized(logits, 0, penalize);
      for (int32_t i = 1; i < n_vocab_; ++i) {
        const float l = penalized(logits, i, penalize);
        if (l > best_l) best = i, best_l = l;
      }
    } else {
      best = greedy_argmax(logits, n_vocab_);
      best_l = penalized(logits, best, false);
    }
    c[0] = {best, best_l, 1.0};
    n_cand_ = 1;
    chosen_ = 0;
    sorted_ = true;
    return best;
  }
  load_penalized(logits);

  // top-k: select the k best in O(n), then order just those.
  bool sorted = false;
  const int32_t k = params_.top_k;
  if (k > 0 && k < n_cand_) {
    std::nth_element(c, c + k, c + n_cand_, before);
    n_cand_ = k;
    std::sort(c, c + n_cand_, before);
    sorted = true;
  }

  const bool top_p = params_.top_p < 1.0f;
  const bool min_p = params_.min_p > 0.0f;
  if ((top_p || min_p) && n_cand_ > 1) {
    if (top_p && !sorted) {
      std::sort(c, c + n_cand_, before);  // top-p needs the order; only without top-k is this the whole vocabulary
      sorted = true;
    }
    float max = c[0].logit;
    if (!sorted)
      for (int32_t i = 1; i < n_cand_; ++i) max = std::max(max, c[i].logit);
    double sum = 0.0;
    for (int32_t i = 0; i < n_cand_; ++i) sum += (c[i].p = weight(c[i].logit, max, 1.0));

    if (top_p) {
      const double target = (double)params_.top_p * sum;  // compare unnormalized: cum/sum >= top_p
      double cum = 0.0;
      for (int32_t i = 0; i < n_cand_; ++i) {
        cum += c[i].p;
        if (cum >= target) {
          n_cand_ = i + 1;
          break;
        }
      }
    }
    if (min_p) {
      // p_i >= min_p * p_max  <=>  weight_i >= min_p (the maximum weighs 1); order is kept.
      const double floor = (double)params_.min_p;
      int32_t kept = 0;
      for (int32_t i = 0; i < n_cand_; ++i)
        if (c[i].p >= floor) c[kept++] = c[i];
      n_cand_ = std::max(kept, 1);  // cannot be 0: the maximum is kept; guards a NaN weight anyway
    }
  }

  // temperature, then the draw.
  float max = c[0].logit;
  for (int32_t i = 1; i < n_cand_; ++i) max = std::max(max, c[i].logit);
  const double temp = (double)params_.temperature;
  double sum = 0.0;
  for (int32_t i = 0; i < n_cand_; ++i) sum += (c[i].p = weight(c[i].logit, max, temp));

  const double target = rng_.uniform() * sum;  // in [0, sum)
  int32_t chosen = -1;
  double cum = 0.0;
  for (int32_t i = 0; i < n_cand_; ++i) {
    cum += c[i].p;
    if (chosen < 0 && cum > target) chosen = i;  // strictly greater: a zero-weight candidate is never drawn
    c[i].p /= sum;
  }
  if (chosen < 0) {  // rounding left target >= the final cum: take the last candidate with weight
    chosen = n_cand_ - 1;
    while (chosen > 0 && c[chosen].p == 0.0) --chosen;
  }
  chosen_ = chosen;
  sorted_ = sorted;
  return c[chosen].id;
}

int32_t Sampler::token_logprobs(const float* logits, int32_t n_top, float* logprob, TokenLogprob* top) {
  n_top = std::clamp(n_top, 0, kMaxTopLogprobs);
  SamplerCandidate best[kMaxTopLogprobs];
  int32_t n = 0;
  if (params_.temperature == 0.0f) {
    // The greedy choice is the maximum: log p = -log(sum exp(l - max)).
    const bool penalize = penalizing();
    if (scratch_.empty()) scratch_.resize((size_t)n_vocab_);
    float* x = scratch_.data();
    if (penalize) {
      for (int32_t i = 0; i < n_vocab_; ++i) x[i] = penalized(logits, i, true);
    } else {
      for (int32_t i = 0; i < n_vocab_; ++i) x[i] = logits[i] != logits[i] ? -INFINITY : logits[i];  // NaN -> -inf
    }
    // The top n_top: most logits lose to the floor (the n_top-th best so far) in one compare.
    float floor = -INFINITY;
    for (int32_t i = 0; i < n_vocab_ && n_top > 0; ++i) {
      if (n == n_top && x[i] < floor) continue;
      offer(best, &n, n_top, {i, x[i], 0.0});
      if (n == n_top && n > 0) floor = best[n - 1].logit;
    }
    const LogNormalizer z = normalize_in_place(x, n_vocab_, cand_[0].id);
    *logprob = z.logprob(cand_[0].logit);
    for (int32_t i = 0; i < n; ++i) top[i] = {best[i].id, z.logprob(best[i].logit)};
    return n;
  }
  // The final candidates hold the drawn-from distribution; its order is the logits' order.
  const SamplerCandidate* c = cand_.data();
  *logprob = (float)std::log(c[chosen_].p);
  if (sorted_) {
    n = std::min(n_top, n_cand_);
    for (int32_t i = 0; i < n; ++i) best[i] = c[i];
  } else {
    for (int32_t i = 0; i < n_cand_; ++i) offer(best, &n, n_top, c[i]);
  }
  for (int32_t i = 0; i < n; ++i) top[i] = {best[i].id, (float)std::log(best[i].p)};
  return n;
}

}  // namespace edgellm
