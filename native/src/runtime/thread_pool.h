// A persistent pool of worker threads for data-parallel kernels.
//
// Work is split into chunks handed out through an atomic counter, so a thread that the OS
// preempts (Node's event loop, GC, another process on a 2-core machine) simply takes fewer
// chunks instead of stalling everyone. Idle workers spin briefly, then sleep on a condition
// variable, so the pool does not fight other work for the cores between calls.
// No allocation and no thread creation per call.
#pragma once
#include <cstdint>

namespace edgellm {

class ThreadPool {
 public:
  using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end, int thread_index);

  // n_threads counts the calling thread: ThreadPool(1) runs everything on the caller.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(ctx, b, e, thread) for chunks [b, e) covering [0, n), each at most `grain` long,
  // on up to size() threads including the caller; returns when all chunks are done.
  // One parallel_for at a time per pool (calls from several threads are serialized).
  void run(int64_t n, int64_t grain, ChunkFn fn, void* ctx);

  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& f) {
    run(n, grain,
        [](void* c, int64_t b, int64_t e, int t) { (*static_cast<F*>(c))(b, e, t); },
        static_cast<void*>(&f));
  }

 private:
  struct State;
  State* state_;
  int n_threads_;
};

// Default thread count: the physical cores, at most 4 (a Pi has 4; more rarely helps a
// memory-bound decode and starves the daemon's own threads).
int default_thread_count();

}  // namespace edgellm
