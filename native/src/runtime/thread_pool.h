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

// Default thread count: the physical cores, at most 4 (a Pi has 4; more rarely helps a
// memory-bound decode and starves the daemon's own threads), and no more than the CPUs this
// process may use (affinity mask, cgroup CPU quota; see sys/cpu_budget.h).
int default_thread_count();

}  // namespace edgellm
