// Picks the next token from a row of logits, as llama.cpp's default sampler chain does.
//
// The chain, in order (each step is skipped when its parameter turns it off):
//   1. penalties    over the last penalty_last_n accepted tokens, for each token seen c > 0 times:
//                   logit /= repeat_penalty when logit > 0, logit *= repeat_penalty otherwise,
//                   then logit -= c * frequency_penalty + presence_penalty.
//                   (off: penalty_last_n == 0, or repeat 1 and frequency/presence 0)
//   2. greedy       temperature == 0: the largest penalized logit, the lower id on ties. Done.
//   3. top-k        keep the k largest logits (partial selection, then a sort of those k).  (off: 0)
//   4. softmax      p_i = exp(logit_i - max) / sum over the kept candidates.
//   5. top-p        keep the smallest prefix (by p, descending) whose p sums to >= top_p. (off: 1)
//   6. min-p        keep p_i >= min_p * p_max.                                          (off: 0)
//   7. temperature  p_i = softmax(logit_i / temperature) over what is left.
//   8. dist         draw one candidate with a uniform double from the sampler's own RNG.
// Filters always keep at least one candidate. Ordering among equal logits is by id, so the
// result depends only on the logits, the accepted tokens and the seed.
//
// Determinism: the RNG is xoshiro256** seeded through splitmix64 and the draw uses its own
// 53-bit uniform double, so the same seed and logits give the same tokens on every platform
// (no std:: distributions, whose output is implementation-defined). Probabilities are computed
// in double, so libm's last-ulp differences between platforms cannot move a draw in practice.
//
// Log-probabilities (token_logprobs(), only for sequences that ask): of the distribution the draw
// was made from, i.e. after penalties, the filters and temperature (tokens the filters removed have
// probability 0 and are never listed). Greedy decoding draws from no distribution, so it reports
// the log-softmax of the penalized logits (temperature 1, no filters): with penalties off, exactly
// log_softmax(logits), what `edgellm logits` prints. raw_logprob() is the model's own log-softmax
// (no penalties, no temperature), the drift signal's measure.
//
// Memory: every buffer is allocated in the constructor (O(n_vocab + penalty_last_n)); sample()
// and accept() never allocate. A Sampler belongs to one sequence and is not thread-safe.
#pragma once
#include <cstdint>
#include <vector>

namespace edgellm {

// Defaults are llama.cpp's (common_params_sampling).
struct SamplingParams {
  float temperature = 0.8f;       // >= 0; 0 = greedy
  int32_t top_k = 40;             // >= 0; 0 = the whole vocabulary
  float top_p = 0.95f;            // (0, 1]; 1 = off
  float min_p = 0.05f;            // [0, 1]; 0 = off
  float repeat_penalty = 1.0f;    // > 0; 1 = off
  float presence_penalty = 0.0f;  // [-2, 2] (the OpenAI API's range); 0 = off
  float frequency_penalty = 0.0f; // [-2, 2]; 0 = off
  int32_t penalty_last_n = 64;    // [0, kMaxPenaltyLastN] accepted tokens; 0 = no penalties
  uint64_t seed = 0;              // any value; the caller picks a fresh one for varied output

  static constexpr int32_t kMaxPenaltyLastN = 1 << 20;

  // Throws std::invalid_argument naming the field, its value and the allowed range.
  void validate() const;
};

// xoshiro256** (Blackman & Vigna), state filled from the seed by splitmix64.
class SamplerRng {
 public:
  explicit SamplerRng(uint64_t seed) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next();
  // Uniform in [0, 1): the top 53 bits of next() times 2^-53.
  double uniform() { return (double)(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

// Most alternatives token_logprobs() lists per token (the OpenAI API's top_logprobs limit).
constexpr int32_t kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t id;
  float logprob;  // natural log; -inf for a token of probability 0
};

// The normalizer of a row of logits: log p_i = (l_i - max) - log_sum, log_sum = log(sum exp(l - max)).
struct LogNormalizer {
  float max;
  double log_sum;
  float logprob(float l) const { return l == max ? (float)-log_sum : (float)(((double)l - (double)max) - log_sum); }
};

// The normalizer of x[0..n) (NaN-free logits), through the kernel table's vectorized softmax in
// place: x holds probabilities afterwards. The maximum weighs exactly 1, so log_sum = -log p_max
// (the kernels sum in double: ~1e-7 off over a 152k vocabulary). An infinite maximum takes the
// exact double path (x left as it was).
// `arg`: the index of the (first) maximum when the caller knows it, else -1.
LogNormalizer normalize_in_place(float* x, int32_t n, int32_t arg = -1);

// log_softmax(logits)[token] (NaN logits count as -inf); scratch holds n_vocab floats.
float raw_logprob(const float* logits, int32_t n_vocab, int32_t token, float* scratch);

struct SamplerCandidate {
  int32_t id;
  float logit;  // after penalties (before temperature)
  double p;     // after the last step that ran (the final distribution after sample())
};

class Sampler {
 public:
  // Throws std::invalid_argument for bad params or n_vocab < 1.
  Sampler(const SamplingParams& params, int32_t n_vocab);

  // The next token for one row of n_vocab logits. Does not accept it: call accept() with the
  // token the sequence keeps. NaN logits count as -inf.
  int32_t sample(const float* logits);

  // Records a token of the sequence (generated, or prompt tokens if they should be penalized
  // too) in the penalty window. Throws std::invalid_argument for an id outside the vocabulary.
  void accept(int32_t token);

  // Forgets accepted tokens and restarts the RNG from the seed: the next sample() calls repeat
  // the first ones.
  void reset();

  // Becomes a new Sampler(params, n_vocab()) but keeps its buffers (a sequence reusing a finished
  // one's sampler touches no new memory). Throws std::invalid_argument for bad params, unchanged.
  void reconfigure(const SamplingParams& params);

  // After sample(logits) (the same row): the log-probability of the token it returned, and the
  // n_top (0..kMaxTopLogprobs) most probable tokens of that distribution into top[], most probable
  // first (ties by lower id). Returns how many it wrote: fewer than n_top when the filters kept
  // fewer candidates. Costs nothing unless called; greedy pays a vectorized softmax over the
  // vocabulary, in a buffer of n_vocab floats allocated by the first greedy call.
  int32_t token_logprobs(const float* logits, int32_t n_top, float* logprob, TokenLogprob* top);

  const SamplingParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

  // The candidates left after the last sample() with their final probabilities: by descending
  // logit (ties by id) when top-k or top-p ran, else by id; greedy leaves the chosen token alone
  // with p = 1. Valid until the next sample().
  const SamplerCandidate* candidates() const { return cand_.data(); }
  int32_t n_candidates() const { return n_cand_; }

 private:
  bool penalizing() const { return !counts_.empty() && window_len_ > 0; }
  float penalized(const float* logits, int32_t i, bool penalize) const;
  void load_penalized(const float* logits);

  SamplingParams params_;
  int32_t n_vocab_;
  SamplerRng rng_;
  std::vector<SamplerCandidate> cand_;  // n_vocab; the first n_cand_ are live
  int32_t n_cand_ = 0;
  int32_t chosen_ = 0;     // index in cand_ of the last sample()'s token
  bool sorted_ = false;    // cand_[0..n_cand_) is in before() order
  std::vector<int32_t> window_;  // ring of the last penalty_last_n accepted tokens
  int32_t window_len_ = 0;
  int32_t window_head_ = 0;      // next slot to write
  std::vector<int32_t> counts_;  // n_vocab: occurrences in the window (empty when penalties are off)
  std::vector<float> scratch_;   // greedy token_logprobs: the penalized logits, then their softmax
};

}  // namespace edgellm
