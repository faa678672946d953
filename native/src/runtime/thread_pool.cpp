// How a run() hands out work (see thread_pool.h for the contract):
//
// `next` packs (job sequence number << 32 | next chunk index). A thread claims chunk i of job s
// with a compare-exchange from (s, i) to (s, i + 1), so a worker that read `next` before it was
// preempted can never claim a chunk of a later job by mistake: its exchange fails. The job's
// description lives in one of two slots (s & 1); the caller only rewrites slot s & 1 for job
// s + 2, after job s + 1 was published, so a claim that succeeds always reads its own job.
//
// `done` counts finished chunks of the current job. The caller returns when done == n_chunks,
// i.e. it waits for chunks that were claimed, not for workers that have not shown up.
#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sys/cpu_budget.h"
#include "sys/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace edgellm {

namespace {

constexpr int kDefaultSpinUs = 50;
constexpr int kMaxThreads = 256;
constexpr int64_t kMaxChunks = INT32_MAX;  // the chunk index lives in the low 32 bits of `next`

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

int spin_us_from_env() {
  const char* s = std::getenv("EDGELLM_SPIN_US");
  if (!s || !*s) return kDefaultSpinUs;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < 0 || v > 1000000)
    throw std::invalid_argument(std::string("EDGELLM_SPIN_US=") + s +
                                " is not a spin time; use microseconds in 0..1000000");
  return (int)v;
}

inline uint32_t seq_of(uint64_t word) { return (uint32_t)(word >> 32); }
inline int64_t index_of(uint64_t word) { return (int64_t)(word & 0xFFFFFFFFu); }

// Spins with a pause instruction until pred() holds or spin_us elapse; true if pred() held.
// The clock is read every 64 pauses (a pause is tens of cycles on x86, a few on ARM), and
// every 2 us the thread offers its core to the OS: when threads outnumber free cores
// (a busy 2-core machine), the thread we are waiting for may be queued behind us on this core.
template <class Pred>
bool spin_until(int spin_us, Pred pred) {
  if (pred()) return true;
  if (spin_us <= 0) return false;
  using Clock = std::chrono::steady_clock;
  constexpr auto kYieldEvery = std::chrono::microseconds(2);
  Clock::time_point now = Clock::now();
  const Clock::time_point deadline = now + std::chrono::microseconds(spin_us);
  Clock::time_point next_yield = now + kYieldEvery;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      cpu_relax();
      if (pred()) return true;
    }
    now = Clock::now();
    if (now >= deadline) return pred();
    if (now >= next_yield) {
      std::this_thread::yield();
      next_yield = Clock::now() + kYieldEvery;
    }
  }
}

}  // namespace

struct ThreadPool::State {
  // Fields of one job; relaxed atomics because a stale worker may read a slot while the caller
  // rewrites it (it then fails its claim and ignores what it read).
  struct Job {
    std::atomic<ChunkFn> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int64_t> n{0};
    std::atomic<int64_t> grain{1};
    std::atomic<int64_t> n_chunks{0};
  };

  alignas(64) std::atomic<uint64_t> next{0};  // (seq << 32) | next chunk index
  alignas(64) std::atomic<int64_t> done{0};   // chunks of the current job finished
  alignas(64) std::atomic<int> sleepers{0};   // workers blocked on work_cv
  std::atomic<bool> caller_waiting{false};    // the caller is blocked on done_cv
  std::atomic<bool> stop{false};
  Job jobs[2];

  std::mutex run_mutex;  // one run() at a time
  uint32_t seq = 0;      // last published job; guarded by run_mutex

  std::mutex m;  // for the two condition variables
  std::condition_variable work_cv, done_cv;

  int spin_us = kDefaultSpinUs;
  std::vector<std::thread> workers;

  // Claims and runs chunks of job `s` until none are left; returns how many it ran.
  int64_t work_on(uint32_t s, int thread_index) {
    Job& job = jobs[s & 1];
    int64_t ran = 0;
    uint64_t w = next.load(std::memory_order_acquire);
    for (;;) {
      if (seq_of(w) != s) break;
      const int64_t i = index_of(w);
      if (i >= job.n_chunks.load(std::memory_order_relaxed)) break;
      if (!next.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;  // w now holds the current value
      const int64_t grain = job.grain.load(std::memory_order_relaxed);
      const int64_t b = i * grain;
      const int64_t e = std::min(job.n.load(std::memory_order_relaxed), b + grain);
      job.fn.load(std::memory_order_relaxed)(job.ctx.load(std::memory_order_relaxed), b, e, thread_index);
      ++ran;
      w = next.load(std::memory_order_acquire);
    }
    return ran;
  }

  // Adds finished chunks; whoever finishes the job wakes a sleeping caller.
  void finish(int64_t ran, int64_t n_chunks) {
    if (ran == 0) return;
    if (done.fetch_add(ran) + ran == n_chunks && caller_waiting.load()) {
      { std::lock_guard<std::mutex> lk(m); }
      done_cv.notify_one();
    }
  }

  void stop_and_join() {
    {
      std::lock_guard<std::mutex> lk(m);
      stop.store(true);
    }
    work_cv.notify_all();
    for (std::thread& t : workers) t.join();
    workers.clear();
  }

  void worker_main(int thread_index) {
    uint32_t seen = 0;
    for (;;) {
      auto has_news = [&] {
        return seq_of(next.load(std::memory_order_acquire)) != seen || stop.load(std::memory_order_relaxed);
      };
      if (!spin_until(spin_us, has_news)) {
        std::unique_lock<std::mutex> lk(m);
        sleepers.fetch_add(1);  // seq_cst: pairs with the caller's store of `next`
        while (seq_of(next.load()) == seen && !stop.load()) work_cv.wait(lk);
        sleepers.fetch_sub(1);
      }
      if (stop.load()) return;
      seen = seq_of(next.load(std::memory_order_acquire));
      // n_chunks of job `seen` stays in its slot until job seen + 2, which cannot start
      // before our chunks are counted in finish().
      const int64_t n_chunks = jobs[seen & 1].n_chunks.load(std::memory_order_relaxed);
      finish(work_on(seen, thread_index), n_chunks);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : state_(nullptr), n_threads_(n_threads) {
  if (n_threads < 1 || n_threads > kMaxThreads)
    throw std::invalid_argument("ThreadPool: n_threads must be in 1.." + std::to_string(kMaxThreads) +
                                ", got " + std::to_string(n_threads));
  state_ = new State();
  try {
    state_->spin_us = spin_us_from_env();
    state_->workers.reserve(n_threads - 1);
    for (int t = 1; t < n_threads; ++t) state_->workers.emplace_back([s = state_, t] { s->worker_main(t); });
  } catch (...) {
    state_->stop_and_join();
    delete state_;
    throw;
  }
}

ThreadPool::~ThreadPool() {
  state_->stop_and_join();
  delete state_;
}

int ThreadPool::spin_us() const { return state_->spin_us; }

void ThreadPool::run(int64_t n, int64_t grain, ChunkFn fn, void* ctx) {
  if (n < 0) throw std::invalid_argument("ThreadPool::run: n must be >= 0, got " + std::to_string(n));
  if (grain < 1) throw std::invalid_argument("ThreadPool::run: grain must be >= 1, got " + std::to_string(grain));
  if (!fn) throw std::invalid_argument("ThreadPool::run: fn is null");
  if (n == 0) return;
  if ((n - 1) / grain + 1 > kMaxChunks) grain = (n - 1) / kMaxChunks + 1;
  const int64_t n_chunks = (n - 1) / grain + 1;

  State& s = *state_;
  std::lock_guard<std::mutex> serial(s.run_mutex);

  // One chunk or no workers: nothing to share, so do not wake anyone.
  if (n_chunks == 1 || n_threads_ == 1) {
    for (int64_t b = 0; b < n; b += grain) fn(ctx, b, std::min(n, b + grain), 0);
    return;
  }

  const uint32_t seq = ++s.seq;
  State::Job& job = s.jobs[seq & 1];
  job.fn.store(fn, std::memory_order_relaxed);
  job.ctx.store(ctx, std::memory_order_relaxed);
  job.n.store(n, std::memory_order_relaxed);
  job.grain.store(grain, std::memory_order_relaxed);
  job.n_chunks.store(n_chunks, std::memory_order_relaxed);
  s.done.store(0, std::memory_order_relaxed);
  s.next.store((uint64_t)seq << 32);  // seq_cst: publishes the job, pairs with `sleepers`
  if (s.sleepers.load() > 0) {
    { std::lock_guard<std::mutex> lk(s.m); }
    s.work_cv.notify_all();
  }

  s.finish(s.work_on(seq, 0), n_chunks);

  // Wait for chunks still running on workers: spin first (they are usually a few
  // microseconds from done), then sleep so a preempted worker can have this core.
  if (!spin_until(s.spin_us, [&] { return s.done.load(std::memory_order_acquire) == n_chunks; })) {
    std::unique_lock<std::mutex> lk(s.m);
    s.caller_waiting.store(true);  // seq_cst: pairs with the fetch_add in finish()
    while (s.done.load() != n_chunks) s.done_cv.wait(lk);
    s.caller_waiting.store(false);
  }
}

ThreadDefault default_threads_for(int physical_cores, int usable_cpus) {
  const int usable = std::max(1, usable_cpus);
  const int n = std::max(1, std::min(physical_cores, usable));
  const std::string of = " of " + std::to_string(usable) + " usable CPUs";
  if (n > 4) return {4, "4" + of + ": decode is memory-bound, more threads read DRAM no faster"};
  if (n == usable && n >= 3)
    return {n - 1, std::to_string(n - 1) + of + ": one left to the event loop (MQTT, HTTP); decode is memory-bound, " +
                       std::to_string(n - 1) + " threads read DRAM as fast as " + std::to_string(n)};
  if (n < usable) return {n, std::to_string(n) + of + ": one per physical core, the SMT siblings left to the event loop"};
  return {n, std::to_string(n) + of + ": every usable CPU (with 2 or fewer, leaving one would halve prefill)"};
}

ThreadDefault default_threads() { return default_threads_for(cpu_features().physical_cores, usable_cpu_count()); }

int default_thread_count() { return default_threads().threads; }

}  // namespace edgellm
