// A persistent pool of worker threads for data-parallel kernels.
//
// Work is split into chunks handed out through an atomic counter, so a thread that the OS
// preempts (Node's event loop, GC, another process on a 2-core machine) simply takes fewer
// chunks instead of stalling everyone: run() waits only for chunks some thread has already
// claimed, never for a worker that has not woken up yet. Idle workers spin briefly (pause /
// yield instruction), then sleep on a condition variable, so the pool does not fight other
// work for the cores between calls. No allocation and no thread creation per call.
//
// EDGELLM_SPIN_US (read when a pool is built) sets how long an idle worker, and a caller
// waiting for the last chunks, spins before sleeping; default 50 microseconds, 0 = sleep at once.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

namespace edgellm {

class ThreadPool {
 public:
  using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end, int thread_index);

  // n_threads counts the calling thread: ThreadPool(1) runs everything on the caller and
  // starts no threads. n_threads must be in [1, 256] (std::invalid_argument otherwise).
  explicit ThreadPool(int n_threads);
  // Stops and joins the workers (they may be spinning or asleep). Not while run() is active.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // The spin budget in microseconds (EDGELLM_SPIN_US or the default).
  int spin_us() const;

  // Calls fn(ctx, b, e, thread) for the chunks [b, e) = [i * grain, min(n, (i + 1) * grain))
  // covering [0, n) exactly once, on up to size() threads including the caller (thread 0;
  // workers are 1..size()-1); returns when all chunks are done. Which thread runs which chunk
  // is decided at run time. fn must not throw. n >= 0 and grain >= 1 (std::invalid_argument);
  // grain is raised if [0, n) would otherwise have more than 2^31 - 1 chunks.
  // Calls from several threads are safe and run one at a time.
  void run(int64_t n, int64_t grain, ChunkFn fn, void* ctx);

  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(n, grain,
        [](void* c, int64_t b, int64_t e, int t) { (*static_cast<Fn*>(c))(b, e, t); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

 private:
  struct State;
  State* state_;
  int n_threads_;
};

// The default thread count and why, from the physical cores and the CPUs this process may use
// (affinity mask, cgroup CPU quota; see sys/cpu_budget.h): n = min(physical, usable), then
//   n > 4: 4. Decode streams the weights from DRAM once per token: on a Pi 5 (LPDDR4X, 17 GB/s
//     in theory) one Cortex-A76 running the repacked Q4_0 GEMV already asks for ~16 GB/s
//     (npm run bench:arm-model --bandwidth), so threads beyond a few add nothing to decode.
//   n == usable >= 3 (a Pi: 4 cores, all usable): n - 1. The pool's threads run flat out during a
//     step (the decode thread is one of them), and the daemon's event loop (MQTT, HTTP, SQLite,
//     token delivery) is a thread of the same process: with a thread per CPU, each wake-up of the
//     loop preempts a pool thread that may hold a chunk every other thread then waits for. The
//     memory-bound decode loses nothing by leaving that CPU free; prefill (compute-bound) loses up
//     to 1/n, which is what engine.threads is for (docs/raspberry-pi.md, "Threads").
//   otherwise n (1 or 2 usable CPUs, or fewer physical cores than usable CPUs, whose SMT
//     siblings stay free): leaving one of 2 CPUs would halve a compute-bound pass.
struct ThreadDefault {
  int threads;
  std::string reason;  // one line, for `edgellm doctor`
};
ThreadDefault default_threads_for(int physical_cores, int usable_cpus);

// default_threads_for(this machine's physical cores, usable_cpu_count()).threads.
int default_thread_count();
ThreadDefault default_threads();

}  // namespace edgellm
