// Where prompt processing spends its time: the whole prefill of a random Q4_0 llama (the
// bench:vs-llamacpp shapes), then each of its parts timed alone with the same thread pool and
// kernel table: every weight shape's GEMM at the prefill chunk's column count, cycling through
// the layers so the weights come from memory as in the forward pass (with the Q8_0
// quantization of its activations, as matmul() does it), the quantization alone, and attention
// over the prompt's positions. What is left of the total is norms, RoPE, the residual adds,
// MoE routing and gathering, and the pool's synchronization.
//
//   edgellm_prefill_profile [--threads 2] [--prompt 512] [--batch 64] [--reps 3] [--moe] [--total-only]
//
// --total-only times the whole prefill alone (to run under a sampling profiler); --cpu-time
// (with --threads 1) counts the thread's CPU time instead of wall-clock time.
//
// Not a test: it prints milliseconds and GMAC/s per part (best of --reps runs each).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gguf_builder.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/matmul.h"

using namespace edgellm;

namespace {

bool g_cpu_time = false;

// Wall-clock seconds, or with --cpu-time (one thread only) this thread's CPU seconds, which leave
// out the time other processes on a shared machine held the core.
double now() {
  if (g_cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double best_of(int reps, const std::function<void()>& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 3;
  int64_t prompt = 512, batch = 64;
  bool moe = false, total_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::atoll(argv[++i]) : 0; };
    if (k == "--threads") threads = (int)next();
    else if (k == "--prompt") prompt = next();
    else if (k == "--batch") batch = next();
    else if (k == "--reps") reps = (int)next();
    else if (k == "--moe") moe = true;
    else if (k == "--total-only") total_only = true;
    else if (k == "--cpu-time") g_cpu_time = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (g_cpu_time && threads != 1) {
    std::fprintf(stderr, "--cpu-time measures one thread: use it with --threads 1\n");
    return 2;
  }
  try {
    test::TinyLlamaSpec s;
    s.n_embd = 1024;
    s.n_head = 16;
    s.n_head_kv = 4;
    s.n_vocab = 32000;
    s.matrix_type = DType::Q4_0;
    s.context = prompt + 8;
    if (moe) {
      s.n_layer = 4, s.n_ff = 512, s.n_expert = 32, s.n_expert_used = 4;
    } else {
      s.n_layer = 8, s.n_ff = 2816;
    }
    std::unique_ptr<Model> model = Model::from_file(GgufFile::from_bytes(test::tiny_llama(s).bytes(), "random.gguf"));
    const ModelConfig& c = model->config();
    const KernelTable& kt = kernels();
    ThreadPool pool(threads);
    ForwardOptions fo;
    fo.context = prompt + 8;
    fo.batch = batch;
    ForwardPass f(*model, pool, fo);
    KvCache seq(f.cache_config());
    std::vector<float> logits((size_t)c.n_vocab);
    std::vector<int32_t> toks((size_t)prompt);
    for (int64_t i = 0; i < prompt; ++i) toks[(size_t)i] = (int32_t)((i * 7919 + 1) % c.n_vocab);
    f.prefill(seq, toks.data(), 1, false, logits.data());  // first touch of the weights
    const double total = best_of(reps, [&] {
      seq.clear();
      f.prefill(seq, toks.data(), prompt, false, logits.data());
    });
    std::printf("%s, kernels %s, %d thread(s), prompt %ld in chunks of %ld: prefill %.1f ms = %.1f tokens/s\n",
                moe ? "MoE 32x4 1024x4" : "dense 1024x8 ffn 2816", kt.name, threads, (long)prompt, (long)batch,
                total * 1e3, (double)prompt / total);

    if (total_only) return 0;
    const int64_t chunks = (prompt + batch - 1) / batch;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x((size_t)(batch * 4096)), y((size_t)(batch * 32000));
    for (float& v : x) v = nd(rng);
    MatmulScratch scratch;
    const std::vector<LayerWeights>& Ls = model->weights().layers;
    struct Shape {
      const char* name;
      std::function<WeightMatrix(int64_t)> w;  // the matrix of call i (layers, experts in turn)
      int64_t cols;   // columns per call
      int64_t calls;  // calls per prefill
    };
    std::vector<Shape> shapes;
    const int64_t per_layer = chunks * c.n_layer, nl = c.n_layer, ne = std::max<int64_t>(1, c.n_expert);
    shapes.push_back({"attn_q", [&](int64_t i) { return Ls[(size_t)(i % nl)].wq; }, batch, per_layer});
    shapes.push_back({"attn_k", [&](int64_t i) { return Ls[(size_t)(i % nl)].wk; }, batch, per_layer});
    shapes.push_back({"attn_v", [&](int64_t i) { return Ls[(size_t)(i % nl)].wv; }, batch, per_layer});
    shapes.push_back({"attn_output", [&](int64_t i) { return Ls[(size_t)(i % nl)].wo; }, batch, per_layer});
    if (moe) {
      const int64_t m = std::max<int64_t>(1, batch * c.n_expert_used / c.n_expert);  // columns per expert on average
      shapes.push_back({"ffn_gate_inp (f32)", [&](int64_t i) { return Ls[(size_t)(i % nl)].router; }, batch, per_layer});
      shapes.push_back({"expert gate", [&](int64_t i) { return Ls[(size_t)(i / ne % nl)].gate_exps.expert(i % ne); }, m, per_layer * ne});
      shapes.push_back({"expert up", [&](int64_t i) { return Ls[(size_t)(i / ne % nl)].up_exps.expert(i % ne); }, m, per_layer * ne});
      shapes.push_back({"expert down", [&](int64_t i) { return Ls[(size_t)(i / ne % nl)].down_exps.expert(i % ne); }, m, per_layer * ne});
    } else {
      shapes.push_back({"ffn_gate", [&](int64_t i) { return Ls[(size_t)(i % nl)].ffn_gate; }, batch, per_layer});
      shapes.push_back({"ffn_up", [&](int64_t i) { return Ls[(size_t)(i % nl)].ffn_up; }, batch, per_layer});
      shapes.push_back({"ffn_down", [&](int64_t i) { return Ls[(size_t)(i % nl)].ffn_down; }, batch, per_layer});
    }
    shapes.push_back({"output (last token)", [&](int64_t) { return model->weights().output; }, 1, 1});
    double parts = 0;
    std::printf("\n%-22s %12s %6s %8s %10s %10s\n", "part", "rows x k", "cols", "calls", "ms total", "GMAC/s");
    for (const Shape& sh : shapes) {
      const WeightMatrix w0 = sh.w(0);
      const int64_t inner = std::min<int64_t>(sh.calls, std::max<int64_t>(1, (int64_t)(2e9 / ((double)w0.rows * w0.cols * sh.cols))));
      const double t = best_of(reps, [&] {
                         for (int64_t i = 0; i < inner; ++i) {
                           const WeightMatrix w = sh.w(i);
                           matmul(pool, kt, w.type, w.data, w.rows, w.cols, x.data(), sh.cols, y.data(), scratch);
                         }
                       }) / (double)inner;
      const double ms = t * (double)sh.calls * 1e3;
      parts += ms;
      std::printf("%-22s %5ldx%-6ld %6ld %8ld %10.1f %10.1f\n", sh.name, (long)w0.rows, (long)w0.cols, (long)sh.cols,
                  (long)sh.calls, ms, (double)w0.rows * w0.cols * sh.cols / t / 1e9);
    }

    // Activation quantization alone (it is inside every GEMM above): all of a chunk's columns of
    // the widest input (ffn_down's k), per layer per chunk, and of the n_embd-wide inputs.
    {
      const int64_t k = moe ? c.n_embd : c.n_ff;
      std::vector<block_q8_0> q((size_t)(batch * k / kQK));
      const double t = best_of(reps, [&] {
        for (int i = 0; i < 100; ++i) kt.quantize_row_q8_0(x.data(), q.data(), batch * std::min<int64_t>(k, 4096));
      }) / 100;
      std::printf("%-22s %12s %6ld %8s %10.2f   (one thread, k=%ld; inside the GEMMs above)\n", "quantize x -> Q8_0", "",
                  (long)batch, "", t * 1e3 * (double)per_layer, (long)k);
    }

    // Attention: chunk i's queries at positions [i*batch, (i+1)*batch) against the cache holding
    // [0, (i+1)*batch), on every layer, split over the pool by (query, head) as the forward pass does.
    {
      KvCacheConfig kc = f.cache_config();
      KvCache cache(kc);
      std::vector<float> kv((size_t)(prompt * c.kv_dim())), q((size_t)(batch * c.q_dim())), out(q.size());
      for (float& v : kv) v = nd(rng);
      for (float& v : q) v = nd(rng);
      for (int64_t p0 = 0; p0 < prompt; p0 += batch)
        cache.store_block(0, p0, std::min(batch, prompt - p0), &kv[(size_t)(p0 * c.kv_dim())], &kv[(size_t)(p0 * c.kv_dim())]);
      std::vector<int64_t> pos((size_t)batch);
      const double t = best_of(reps, [&] {
        for (int64_t ch = 0; ch < chunks; ++ch) {
          const int64_t n = std::min(batch, prompt - ch * batch);
          for (int64_t i = 0; i < n; ++i) pos[(size_t)i] = ch * batch + i;
          AttentionArgs a{q.data(), pos.data(), n, c.n_head, c.n_head_kv, c.head_dim, c.attn_scale, cache.view(0), out.data()};
          const int64_t tasks = n * c.n_head;
          pool.parallel_for(tasks, std::max<int64_t>(1, tasks / (pool.size() * 4)),
                            [&](int64_t b, int64_t e, int) { kt.attention(a, b, e); });
        }
      });
      const double ms = t * (double)c.n_layer * 1e3;
      parts += ms;
      std::printf("%-22s %12s %6ld %8ld %10.1f\n", "attention", "", (long)batch, (long)(chunks * c.n_layer), ms);
    }
    std::printf("%-22s %12s %6s %8s %10.1f   (norms, RoPE, adds, MoE routing/gather, pool sync)\n", "rest", "", "", "",
                total * 1e3 - parts);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
