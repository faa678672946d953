// Decode speed of the forward pass: greedy tokens per second for one sequence and for several
// sequences stepping together, on a GGUF file or on a random Q4_0 llama built in memory.
//
//   edgellm_decode_bench --model TinyLLama-v0-Q4_0.gguf --threads 2 --tokens 128
//   edgellm_decode_bench --random-llama 1024,8,2816,32000 --threads 1 --tokens 32 --seqs 4
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "model/model.h"
#include "runtime/forward.h"

using namespace edgellm;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (every thread), s: with --threads 1 the decode's own cost, which
// another process on a shared machine does not inflate the way it does wall time.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double g_cpu_seconds = 0.0;  // CPU time of the last decode()

int32_t argmax(const float* x, int64_t n) { return (int32_t)(std::max_element(x, x + n) - x); }

// Greedy decode of `tokens` steps on `seqs` sequences at once, after a BOS each; tokens/s overall.
double decode(ForwardPass& f, int64_t seqs, int64_t tokens) {
  const int64_t V = f.model().config().n_vocab;
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<BatchToken> batch((size_t)seqs);
  std::vector<float> logits((size_t)(seqs * V));
  for (int64_t s = 0; s < seqs; ++s) {
    caches.push_back(std::make_unique<KvCache>(f.cache_config()));
    batch[(size_t)s] = BatchToken{caches.back().get(), 0, (int32_t)(1 + s), true};
  }
  f.step(batch.data(), seqs, logits.data());  // the BOS step (not timed: first touch of the weights)
  const double t0 = now(), c0 = cpu_now();
  for (int64_t i = 0; i < tokens; ++i) {
    for (int64_t s = 0; s < seqs; ++s) {
      batch[(size_t)s].pos += 1;
      batch[(size_t)s].token = argmax(&logits[(size_t)(s * V)], V);
    }
    f.step(batch.data(), seqs, logits.data());
  }
  g_cpu_seconds = cpu_now() - c0;
  return (double)(tokens * seqs) / (now() - t0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, random;
  int threads = 1;
  int64_t tokens = 64, seqs = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model_path = v;
    else if (k == "--random-llama") random = v;
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else if (k == "--tokens") tokens = std::atoll(v.c_str());
    else if (k == "--seqs") seqs = std::atoll(v.c_str());
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    std::unique_ptr<Model> model;
    if (!model_path.empty()) {
      model = Model::load(model_path);
    } else if (!random.empty()) {
      test::TinyLlamaSpec s;
      if (std::sscanf(random.c_str(), "%ld,%ld,%ld,%ld", &s.n_embd, &s.n_layer, &s.n_ff, &s.n_vocab) != 4) {
        std::fprintf(stderr, "--random-llama takes EMBD,LAYERS,FF,VOCAB\n");
        return 2;
      }
      s.n_head = s.n_embd / 64;
      s.n_head_kv = s.n_head;
      s.matrix_type = DType::Q4_0;
      s.context = 2048;
      model = Model::from_file(GgufFile::from_bytes(test::tiny_llama(s).bytes(), "random-llama.gguf"));
    } else {
      std::fprintf(stderr, "usage: edgellm_decode_bench (--model FILE | --random-llama EMBD,LAYERS,FF,VOCAB) "
                           "[--threads N] [--tokens N] [--seqs N]\n");
      return 2;
    }
    const ModelStats st = model->stats();
    ThreadPool pool(threads);
    ForwardOptions o;
    o.context = std::min<int64_t>(model->config().context_length, tokens + 8);
    ForwardPass f(*model, pool, o);
    const double tps = decode(f, seqs, tokens);
    std::printf("%s: %s, %.1fM params, %.1f MB weights, kernels %s, %d thread(s), %ld sequence(s): %.1f tokens/s (%.1f per CPU-second)\n",
                model_path.empty() ? "random llama" : model_path.c_str(), model->config().arch_name.c_str(),
                (double)st.n_params / 1e6, (double)st.weight_bytes / 1e6, kernels().name, threads, (long)seqs, tps,
                (double)(tokens * seqs) / g_cpu_seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
