// The sampler chain (runtime/sampler.h): greedy, each filter against hand-computed
// probabilities, the empirical distribution of the draw, seeding, penalties and validation.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/sampler.h"
#include "test.h"

using namespace edgellm;

namespace {

// Every filter off, temperature 1: the sampler draws from softmax(logits).
SamplingParams plain() {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back((float)std::log(p));
  return l;
}

// Checks the sampler's final candidates: ids (in its order) and probabilities.
void check_distribution(const Sampler& s, const std::vector<int32_t>& ids, const std::vector<double>& probs) {
  CHECK_EQ(s.n_candidates(), (int32_t)ids.size());
  if (s.n_candidates() != (int32_t)ids.size()) return;
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK_EQ(s.candidates()[i].id, ids[i]);
    CHECK_MSG(std::fabs(s.candidates()[i].p - probs[i]) < 1e-6,
              "candidate " + std::to_string(i) + ": p " + std::to_string(s.candidates()[i].p) + " != " +
                  std::to_string(probs[i]));
  }
}

std::string refusal(const SamplingParams& p) {
  try {
    p.validate();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(sampler, defaults_are_llama_cpp_defaults) {
  const SamplingParams p;
  CHECK(p.temperature == 0.8f);
  CHECK_EQ(p.top_k, 40);
  CHECK(p.top_p == 0.95f);
  CHECK(p.min_p == 0.05f);
  CHECK(p.repeat_penalty == 1.0f);
  CHECK(p.presence_penalty == 0.0f);
  CHECK(p.frequency_penalty == 0.0f);
  CHECK_EQ(p.penalty_last_n, 64);
  CHECK(refusal(p).empty());
}

TEST(sampler, greedy_picks_the_largest_logit) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p, 5);
  const float logits[] = {0.1f, 2.0f, -1.0f, 3.5f, 3.4f};
  CHECK_EQ(s.sample(logits), 3);
  check_distribution(s, {3}, {1.0});
}

TEST(sampler, greedy_breaks_ties_by_the_lower_id) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p, 6);
  const float logits[] = {1.0f, 7.0f, 2.0f, 7.0f, 7.0f, -INFINITY};
  for (int i = 0; i < 3; ++i) CHECK_EQ(s.sample(logits), 1);
}

// The lowest id of the largest logit, NaN as -inf (0 when nothing beats -inf): the rule greedy
// sampling keeps, checked over a vocabulary whose size is not a multiple of any vector width.
int32_t first_of_largest(const std::vector<float>& l) {
  int32_t best = 0;
  float best_l = std::isnan(l[0]) ? -INFINITY : l[0];
  for (size_t i = 1; i < l.size(); ++i)
    if (!std::isnan(l[i]) && l[i] > best_l) best = (int32_t)i, best_l = l[i];
  return best;
}

TEST(sampler, greedy_over_a_large_vocabulary_takes_the_first_largest_and_skips_nan) {
  const int32_t n = 32003;
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p, n);
  std::vector<float> l((size_t)n);
  test::fill_normal(l.data(), n, 3.0f);
  for (int32_t i = 0; i < n; i += 97) l[(size_t)i] = NAN;
  CHECK_EQ(s.sample(l.data()), first_of_largest(l));
  // The largest in the tail past the last full group of lanes, then tied at ids in other lanes.
  for (int32_t at : {n - 1, n - 2, 12345, 5, 0}) {
    l[(size_t)at] = 100.0f;
    CHECK_EQ(s.sample(l.data()), first_of_largest(l));
    CHECK_EQ(s.sample(l.data()), at);
  }
  // Nothing above -inf: id 0, also when id 0 itself is NaN.
  std::fill(l.begin(), l.end(), -INFINITY);
  l[7] = NAN;
  l[0] = NAN;
  CHECK_EQ(s.sample(l.data()), 0);
  std::fill(l.begin(), l.end(), NAN);
  l[n - 1] = -INFINITY;
  CHECK_EQ(s.sample(l.data()), 0);
  l[n - 1] = -1e30f;
  CHECK_EQ(s.sample(l.data()), n - 1);
}

TEST(sampler, top_k_1_is_greedy_at_any_temperature) {
  SamplingParams p;
  p.top_k = 1;
  p.temperature = 1.5f;
  Sampler s(p, 1000);
  std::vector<float> logits(1000);
  for (int trial = 0; trial < 50; ++trial) {
    test::fill_normal(logits.data(), 1000, 2.0f);
    if (trial % 5 == 0) logits[700] = logits[200] = 100.0f;  // a tie: 200 wins
    int32_t best = 0;
    for (int32_t i = 1; i < 1000; ++i)
      if (logits[(size_t)i] > logits[(size_t)best]) best = i;
    CHECK_EQ(s.sample(logits.data()), best);
  }
}

TEST(sampler, top_k_keeps_the_k_largest_and_renormalizes) {
  SamplingParams p = plain();
  p.top_k = 2;
  Sampler s(p, 5);
  const float logits[] = {1.0f, 2.0f, 3.0f, 4.0f, 0.5f};
  s.sample(logits);
  // e^4 / (e^4 + e^3) = 1 / (1 + e^-1)
  check_distribution(s, {3, 2}, {0.7310585786300049, 0.2689414213699951});
}

TEST(sampler, top_p_keeps_the_smallest_prefix_reaching_p) {
  const std::vector<float> logits = logits_of({0.05, 0.5, 0.15, 0.3});
  SamplingParams p = plain();
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3
  Sampler s(p, 4);
  s.sample(logits.data());
  check_distribution(s, {1, 3}, {0.625, 0.375});

  p.top_p = 0.81f;  // needs 0.5 + 0.3 + 0.15
  Sampler s2(p, 4);
  s2.sample(logits.data());
  check_distribution(s2, {1, 3, 2}, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95});
}

TEST(sampler, min_p_drops_tokens_below_min_p_times_the_top_probability) {
  const std::vector<float> logits = logits_of({0.05, 0.5, 0.15, 0.3});
  SamplingParams p = plain();
  p.min_p = 0.5f;  // floor 0.25: keeps 0.5 and 0.3
  Sampler s(p, 4);
  s.sample(logits.data());
  check_distribution(s, {1, 3}, {0.625, 0.375});  // unsorted path: id order

  p.min_p = 0.25f;  // floor 0.125: keeps 0.5, 0.3, 0.15
  p.top_p = 0.99f;  // keeps all four, but sorts them first
  Sampler s2(p, 4);
  s2.sample(logits.data());
  check_distribution(s2, {1, 3, 2}, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95});
}

TEST(sampler, temperature_divides_the_logits) {
  SamplingParams p = plain();
  p.temperature = 0.5f;
  Sampler s(p, 3);
  const float logits[] = {0.0f, (float)std::log(2.0), (float)std::log(4.0)};
  s.sample(logits);
  // exp(2 * logit) = 1, 4, 16
  check_distribution(s, {0, 1, 2}, {1.0 / 21, 4.0 / 21, 16.0 / 21});
}

TEST(sampler, filters_see_temperature_1_and_temperature_reshapes_the_survivors) {
  const std::vector<float> logits = logits_of({0.05, 0.5, 0.15, 0.3});
  SamplingParams p = plain();
  p.min_p = 0.25f;  // at T = 1 keeps 0.5, 0.3, 0.15; at T = 2 it would keep all four
  p.temperature = 2.0f;
  Sampler s(p, 4);
  s.sample(logits.data());
  const double a = std::sqrt(0.5), b = std::sqrt(0.3), c = std::sqrt(0.15), z = a + b + c;
  check_distribution(s, {1, 2, 3}, {a / z, c / z, b / z});  // no top-k / top-p: id order
}

TEST(sampler, the_whole_default_chain_on_a_small_vocabulary) {
  // top-k 40 keeps all 6; top-p 0.95 drops the last 0.04; min-p 0.05 drops p < 0.02 (0.015);
  // T = 0.8 raises the rest to the power 1.25.
  const std::vector<double> probs = {0.3, 0.25, 0.2, 0.14, 0.045, 0.015, 0.01, 0.02, 0.02};
  const std::vector<float> logits = logits_of(probs);
  SamplingParams p;
  Sampler s(p, (int32_t)probs.size());
  s.sample(logits.data());
  // top-p: 0.3 .25 .2 .14 (0.89) + .045 (0.935) + .02 (id 7 before id 8 on the tie: 0.955) -> 6 kept.
  // min-p: floor 0.015 keeps all six (0.02 >= 0.015).
  const std::vector<int32_t> ids = {0, 1, 2, 3, 4, 7};
  std::vector<double> w;
  double z = 0;
  for (int32_t id : ids) z += w.emplace_back(std::pow(probs[(size_t)id], 1.25));
  for (double& x : w) x /= z;
  check_distribution(s, ids, w);
}

TEST(sampler, draws_follow_the_filtered_distribution) {
  // 200k draws from a 7-token distribution after top-k 6, min-p and T = 0.7.
  const std::vector<float> logits = {2.0f, 1.5f, 0.3f, 1.0f, -0.5f, 0.0f, 0.9f, -3.0f};
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 6;
  p.top_p = 1.0f;
  p.min_p = 0.15f;
  p.seed = 20240607;
  Sampler s(p, (int32_t)logits.size());
  s.sample(logits.data());
  // Expected: survivors of top-k then min-p at T = 1, then softmax(logit / 0.7).
  std::vector<double> expect(logits.size(), 0.0);
  {
    std::vector<int32_t> order = {0, 1, 3, 6, 2, 5};  // the six largest
    double z = 0;
    for (int32_t id : order)
      if (std::exp((double)logits[(size_t)id] - 2.0) >= 0.15) z += (expect[(size_t)id] = std::exp(logits[(size_t)id] / (double)0.7f));
    for (double& e : expect) e /= z;
  }
  CHECK(expect[5] == 0.0 && expect[4] == 0.0 && expect[7] == 0.0);  // top-k cut 4 and 7, min-p cut 5 (e^-2 < 0.15)
  for (int32_t i = 0; i < s.n_candidates(); ++i)
    CHECK(std::fabs(s.candidates()[i].p - expect[(size_t)s.candidates()[i].id]) < 1e-9);

  const int n = 200000;
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++count[(size_t)s.sample(logits.data())];
  // Pearson's chi-square over the categories with p > 0; a category with p = 0 must never appear.
  double chi2 = 0;
  int dof = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (expect[i] == 0.0) {
      CHECK_EQ(count[i], 0);
      continue;
    }
    const double e = expect[i] * n;
    chi2 += (count[i] - e) * (count[i] - e) / e;
    ++dof;
  }
  // Critical value at significance 1e-4 (z = 3.719) by Wilson-Hilferty: ~23.5 for dof = 4.
  // A sampler that moved 0.5% of the mass between two tokens with p ~ 0.3 would score about
  // 2 * (0.005 n)^2 / (0.3 n) = 33 here; a correct one stays below with probability 0.9999.
  const double k = dof, z = 3.719;
  const double crit = k * std::pow(1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k)), 3);
  CHECK_MSG(chi2 < crit, "chi-square " + std::to_string(chi2) + " >= " + std::to_string(crit) + " (dof " +
                             std::to_string(dof) + ")");
  // And each frequency within 5 standard deviations of its probability.
  for (size_t i = 0; i < logits.size(); ++i) {
    const double f = (double)count[i] / n, sd = std::sqrt(expect[i] * (1 - expect[i]) / n);
    CHECK_MSG(std::fabs(f - expect[i]) <= 5 * sd + 1e-12,
              "token " + std::to_string(i) + ": frequency " + std::to_string(f) + " vs p " + std::to_string(expect[i]));
  }
}

TEST(sampler, the_same_seed_gives_the_same_tokens_and_another_seed_others) {
  std::vector<float> logits(50);
  test::fill_normal(logits.data(), 50, 1.0f);
  SamplingParams p = plain();
  p.seed = 7;
  Sampler a(p, 50), b(p, 50);
  p.seed = 8;
  Sampler c(p, 50);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.sample(logits.data()));
    tb.push_back(b.sample(logits.data()));
    tc.push_back(c.sample(logits.data()));
  }
  CHECK(ta == tb);
  CHECK(ta != tc);
  a.reset();
  for (int i = 0; i < 64; ++i) CHECK_EQ(a.sample(logits.data()), ta[(size_t)i]);
}

TEST(sampler, the_rng_and_the_draws_are_the_same_on_every_platform) {
  // Golden values: these must hold on x86-64 and aarch64 alike (no implementation-defined
  // std:: distributions are involved). The raw outputs are xoshiro256** seeded by splitmix64(0),
  // checked against an independent implementation; the draws were recorded on x86-64.
  SamplerRng rng(0);
  const uint64_t first[3] = {rng.next(), rng.next(), rng.next()};
  CHECK(first[0] == 0x99EC5F36CB75F2B4ull);
  CHECK(first[1] == 0xBF6E1F784956452Aull);
  CHECK(first[2] == 0x1A5F849D4933E6E0ull);

  std::vector<float> logits(16);
  for (int i = 0; i < 16; ++i) logits[(size_t)i] = (float)std::sin(i * 1.7) * 2.0f;
  SamplingParams p;  // the default chain
  p.seed = 42;
  Sampler s(p, 16);
  std::string got;
  for (int i = 0; i < 24; ++i) got += std::to_string(s.sample(logits.data())) + " ";
  CHECK_MSG(got == "12 1 5 15 11 5 5 4 5 8 5 1 4 1 5 9 8 9 5 5 12 12 1 8 ", "draws: " + got);
}

TEST(sampler, repeat_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens) {
  SamplingParams p = plain();
  p.repeat_penalty = 2.0f;
  Sampler s(p, 5);
  s.accept(1);
  s.accept(2);
  s.accept(1);  // counted twice: the repeat penalty does not stack
  const float logits[] = {1.0f, 3.0f, -1.5f, 0.0f, 2.0f};
  s.sample(logits);
  const float want[] = {1.0f, 1.5f, -3.0f, 0.0f, 2.0f};
  for (int32_t i = 0; i < 5; ++i) CHECK(s.candidates()[i].logit == want[i]);
}

TEST(sampler, frequency_and_presence_penalties_subtract_per_count_and_once) {
  SamplingParams p = plain();
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s(p, 4);
  for (int32_t t : {3, 3, 3, 0}) s.accept(t);
  const float logits[] = {1.0f, 1.0f, 1.0f, 1.0f};
  s.sample(logits);
  const float want[] = {1.0f - 0.5f - 0.25f, 1.0f, 1.0f, 1.0f - 1.5f - 0.25f};
  for (int32_t i = 0; i < 4; ++i) CHECK(s.candidates()[i].logit == want[i]);
}

TEST(sampler, penalties_only_see_the_last_penalty_last_n_tokens) {
  SamplingParams p = plain();
  p.repeat_penalty = 2.0f;
  p.penalty_last_n = 2;
  Sampler s(p, 4);
  for (int32_t t : {0, 1, 2}) s.accept(t);  // 0 has left the window
  const float logits[] = {4.0f, 4.0f, 4.0f, 4.0f};
  s.sample(logits);
  const float want[] = {4.0f, 2.0f, 2.0f, 4.0f};
  for (int32_t i = 0; i < 4; ++i) CHECK(s.candidates()[i].logit == want[i]);
  s.reset();  // forgets the window
  s.sample(logits);
  for (int32_t i = 0; i < 4; ++i) CHECK(s.candidates()[i].logit == 4.0f);
}

TEST(sampler, penalties_apply_before_greedy) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repeat_penalty = 1.5f;
  Sampler s(p, 3);
  const float logits[] = {1.0f, 3.0f, 2.5f};
  CHECK_EQ(s.sample(logits), 1);
  s.accept(1);
  CHECK_EQ(s.sample(logits), 2);  // 3 / 1.5 = 2 < 2.5
}

TEST(sampler, nan_logits_are_never_drawn) {
  SamplingParams p = plain();
  Sampler s(p, 4);
  const float logits[] = {NAN, 0.0f, NAN, 0.0f};
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.sample(logits);
    CHECK(t == 1 || t == 3);
  }
}

TEST(sampler, a_large_vocabulary_draws_from_its_top_k) {
  const int32_t n = 32000;
  std::vector<float> logits((size_t)n);
  test::fill_normal(logits.data(), n, 3.0f);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), [](float a, float b) { return a > b; });
  SamplingParams p;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  Sampler s(p, n);
  for (int i = 0; i < 100; ++i) CHECK(logits[(size_t)s.sample(logits.data())] >= sorted[39]);
  CHECK_EQ(s.n_candidates(), 40);
}

TEST(sampler, validation_names_the_field_and_its_range) {
  SamplingParams p;
  p.top_p = 0.0f;
  CHECK(contains(refusal(p), "top_p") && contains(refusal(p), "(0, 1]"));
  p = {};
  p.top_p = 1.5f;
  CHECK(contains(refusal(p), "top_p"));
  p = {};
  p.temperature = -0.1f;
  CHECK(contains(refusal(p), "temperature") && contains(refusal(p), ">= 0"));
  p = {};
  p.temperature = NAN;
  CHECK(contains(refusal(p), "temperature"));
  p = {};
  p.top_k = -1;
  CHECK(contains(refusal(p), "top_k"));
  p = {};
  p.min_p = 1.01f;
  CHECK(contains(refusal(p), "min_p") && contains(refusal(p), "[0, 1]"));
  p = {};
  p.repeat_penalty = 0.0f;
  CHECK(contains(refusal(p), "repeat_penalty") && contains(refusal(p), "> 0"));
  p = {};
  p.presence_penalty = 2.5f;
  CHECK(contains(refusal(p), "presence_penalty"));
  p = {};
  p.frequency_penalty = -3.0f;
  CHECK(contains(refusal(p), "frequency_penalty"));
  p = {};
  p.penalty_last_n = -1;
  CHECK(contains(refusal(p), "penalty_last_n"));

  p = {};
  p.top_p = -1.0f;
  bool threw = false;
  try {
    Sampler s(p, 10);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    Sampler s(SamplingParams{}, 0);
  } catch (const std::invalid_argument& e) {
    threw = contains(e.what(), "n_vocab");
  }
  CHECK(threw);
}

TEST(sampler, accept_refuses_a_token_outside_the_vocabulary) {
  Sampler s(SamplingParams{}, 10);
  bool threw = false;
  try {
    s.accept(10);
  } catch (const std::invalid_argument& e) {
    threw = contains(e.what(), "outside the vocabulary");
  }
  CHECK(threw);
}

namespace {
// log_softmax(l)[i] in double, by the definition.
double log_softmax_at(const std::vector<float>& l, int32_t i) {
  double max = -INFINITY, sum = 0.0;
  for (float x : l) max = std::max(max, (double)x);
  for (float x : l) sum += std::exp((double)x - max);
  return (double)l[(size_t)i] - max - std::log(sum);
}
}  // namespace

TEST(sampler, greedy_logprobs_are_the_log_softmax_of_the_logits) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, -3.0f};
  SamplingParams p = plain();
  p.temperature = 0.0f;
  Sampler s(p, (int32_t)l.size());
  CHECK_EQ(s.sample(l.data()), 1);  // ties: the lower id
  float lp = 0;
  TokenLogprob top[kMaxTopLogprobs];
  CHECK_EQ(s.token_logprobs(l.data(), 4, &lp, top), 4);
  CHECK(std::fabs(lp - log_softmax_at(l, 1)) < 1e-6);
  const int32_t order[] = {1, 3, 4, 0};
  for (int i = 0; i < 4; ++i) {
    CHECK_EQ(top[i].id, order[i]);
    CHECK(std::fabs(top[i].logprob - log_softmax_at(l, order[i])) < 1e-6);
  }
  std::vector<float> scratch(l.size());
  CHECK(std::fabs(raw_logprob(l.data(), (int32_t)l.size(), 5, scratch.data()) - log_softmax_at(l, 5)) < 1e-6);
  CHECK_EQ(s.token_logprobs(l.data(), 0, &lp, top), 0);
}

TEST(sampler, greedy_logprobs_over_a_large_vocabulary_match_double_precision) {
  // The vectorized softmax path (every kernel table's softmax, with its tail) against the definition.
  for (int32_t n : {7, 33, 32000}) {
    std::vector<float> l((size_t)n);
    edgellm::test::fill_normal(l.data(), n, 4.0f);
    SamplingParams p = plain();
    p.temperature = 0.0f;
    Sampler s(p, n);
    const int32_t token = s.sample(l.data());
    float lp = 0;
    TokenLogprob top[kMaxTopLogprobs];
    CHECK_EQ(s.token_logprobs(l.data(), 20, &lp, top), std::min(n, 20));
    CHECK_MSG(std::fabs(lp - log_softmax_at(l, token)) < 1e-5, std::to_string(lp) + " vs " + std::to_string(log_softmax_at(l, token)));
    for (int32_t i = 0; i < std::min(n, 20); ++i) CHECK(std::fabs(top[i].logprob - log_softmax_at(l, top[i].id)) < 1e-5);
    std::vector<float> with_nan = l, scratch((size_t)n);
    with_nan[(size_t)(n / 2)] = NAN;
    const int32_t other = (token + 1) % n;
    if (other != n / 2) {
      std::vector<float> no_nan = l;
      no_nan[(size_t)(n / 2)] = -INFINITY;
      CHECK(std::fabs(raw_logprob(with_nan.data(), n, other, scratch.data()) - log_softmax_at(no_nan, other)) < 1e-5);
    }
  }
  // Every logit -inf: uniform, as sample() treats it.
  std::vector<float> dead(5, -INFINITY), scratch(5);
  CHECK(std::fabs(raw_logprob(dead.data(), 5, 2, scratch.data()) - (float)-std::log(5.0)) < 1e-6);
}

TEST(sampler, greedy_logprobs_see_the_penalties) {
  std::vector<float> l = {1.0f, 3.0f, 2.0f};
  SamplingParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 2.0f;
  Sampler s(p, 3);
  s.accept(1);  // 3 -> 1.5: token 2 wins
  CHECK_EQ(s.sample(l.data()), 2);
  float lp = 0;
  TokenLogprob top[kMaxTopLogprobs];
  CHECK_EQ(s.token_logprobs(l.data(), 3, &lp, top), 3);
  const std::vector<float> penalized = {1.0f, 1.5f, 2.0f};
  CHECK(std::fabs(lp - log_softmax_at(penalized, 2)) < 1e-6);
  CHECK_EQ(top[1].id, 1);
  CHECK(std::fabs(top[1].logprob - log_softmax_at(penalized, 1)) < 1e-6);
}

TEST(sampler, sampled_logprobs_are_of_the_filtered_tempered_distribution) {
  const std::vector<float> l = {0.1f, 1.0f, 3.0f, 2.0f, -0.5f};
  for (int filtered = 0; filtered < 2; ++filtered) {
    SamplingParams p = plain();
    p.temperature = 0.5f;
    p.top_k = filtered ? 3 : 0;  // without top-k the candidates stay in id order
    p.seed = 7;
    Sampler s(p, (int32_t)l.size());
    const int32_t token = s.sample(l.data());
    // The distribution drawn from: softmax(l / 0.5) over the kept ids.
    std::vector<int32_t> kept = filtered ? std::vector<int32_t>{2, 3, 1} : std::vector<int32_t>{2, 3, 1, 0, 4};
    std::vector<float> scaled;
    for (int32_t id : kept) scaled.push_back(l[(size_t)id] / 0.5f);
    float lp = 0;
    TokenLogprob top[kMaxTopLogprobs];
    const int32_t n = s.token_logprobs(l.data(), 20, &lp, top);
    CHECK_EQ(n, (int32_t)kept.size());  // never more than the filters kept
    for (size_t i = 0; i < kept.size() && (int32_t)i < n; ++i) {
      CHECK_EQ(top[i].id, kept[i]);
      CHECK(std::fabs(top[i].logprob - log_softmax_at(scaled, (int32_t)i)) < 1e-5);
      if (kept[i] == token) CHECK(std::fabs(lp - top[i].logprob) < 1e-6);
    }
  }
}
