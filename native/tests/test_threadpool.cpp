// ThreadPool: every index exactly once, for any size, grain and thread count; no deadlock over
// many runs, with concurrent callers, or at shutdown.
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/thread_pool.h"
#include "test.h"

using namespace edgellm;

namespace {

// Runs [0, n) with `grain` and checks each index was visited once, by a valid thread, in
// chunks of at most `grain` that start at multiples of grain.
void check_cover(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<uint8_t>> hits((size_t)n);
  for (auto& h : hits) h.store(0, std::memory_order_relaxed);
  std::atomic<int> bad_chunk{0}, bad_thread{0};
  pool.parallel_for(n, grain, [&](int64_t b, int64_t e, int t) {
    if (b < 0 || e > n || b >= e || e - b > grain || b % grain != 0) bad_chunk.fetch_add(1);
    if (t < 0 || t >= pool.size()) bad_thread.fetch_add(1);
    for (int64_t i = b; i < e; ++i) hits[(size_t)i].fetch_add(1, std::memory_order_relaxed);
  });
  int64_t wrong = 0, first_wrong = -1;
  for (int64_t i = 0; i < n; ++i)
    if (hits[(size_t)i].load(std::memory_order_relaxed) != 1 && wrong++ == 0) first_wrong = i;
  const std::string what = "threads=" + std::to_string(pool.size()) + " n=" + std::to_string(n) +
                           " grain=" + std::to_string(grain);
  CHECK_MSG(wrong == 0, what + ": " + std::to_string(wrong) + " indices not visited exactly once, first " +
                            std::to_string(first_wrong));
  CHECK_MSG(bad_chunk.load() == 0, what + ": chunk outside [0, n), longer than grain or misaligned");
  CHECK_MSG(bad_thread.load() == 0, what + ": thread index outside [0, size())");
}

}  // namespace

TEST(threadpool, every_index_exactly_once) {
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 1000, 1 << 20})
      for (int64_t grain : {1, 3, 64}) check_cover(pool, n, grain);
  }
}

TEST(threadpool, sizes_not_divisible_by_thread_count) {
  for (int threads = 2; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    for (int64_t n : {threads + 1, 3 * threads - 1, 1001, 4099}) check_cover(pool, n, 1);
    check_cover(pool, 1001, 1000);  // two chunks, the second one element long
  }
}

TEST(threadpool, caller_is_thread_zero_and_one_thread_runs_inline) {
  ThreadPool pool(1);
  const std::thread::id me = std::this_thread::get_id();
  bool all_on_caller = true;
  int64_t covered = 0;
  pool.parallel_for(100, 7, [&](int64_t b, int64_t e, int t) {
    all_on_caller = all_on_caller && t == 0 && std::this_thread::get_id() == me;
    covered += e - b;
  });
  CHECK(all_on_caller);
  CHECK_EQ(covered, 100);
}

TEST(threadpool, workers_take_part) {
  // With chunks that take a while, some chunk should land on a worker (not a hard guarantee
  // on a loaded machine, so allow a few attempts).
  ThreadPool pool(2);
  bool worker_seen = false;
  for (int attempt = 0; attempt < 20 && !worker_seen; ++attempt) {
    std::atomic<bool> seen{false};
    pool.parallel_for(64, 1, [&](int64_t, int64_t, int t) {
      if (t != 0) seen.store(true);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    });
    worker_seen = seen.load();
  }
  CHECK(worker_seen);
}

TEST(threadpool, many_tiny_runs_do_not_deadlock) {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::atomic<int64_t> total{0};
    const int runs = 10000;
    for (int r = 0; r < runs; ++r)
      pool.parallel_for(r % 5, 1, [&](int64_t b, int64_t e, int) { total.fetch_add(e - b); });
    int64_t want = 0;
    for (int r = 0; r < runs; ++r) want += r % 5;
    CHECK_EQ(total.load(), want);
  }
}

TEST(threadpool, runs_after_workers_fell_asleep) {
  ThreadPool pool(3);
  for (int i = 0; i < 3; ++i) {
    // Longer than any spin budget a test would set: the workers are asleep on the condvar.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    check_cover(pool, 5000, 16);
  }
}

TEST(threadpool, concurrent_callers_are_serialized) {
  ThreadPool pool(3);
  std::atomic<int> inside{0}, overlap{0};
  auto caller = [&](int64_t* sum) {
    for (int r = 0; r < 300; ++r) {
      std::atomic<int64_t> s{0};
      pool.parallel_for(997, 10, [&](int64_t b, int64_t e, int t) {
        if (b == 0 && inside.fetch_add(1) != 0) overlap.fetch_add(1);
        for (int64_t i = b; i < e; ++i) s.fetch_add(i, std::memory_order_relaxed);
        if (b == 0) inside.fetch_sub(1);
      });
      *sum += s.load();
    }
  };
  int64_t sum_a = 0, sum_b = 0;
  std::thread a(caller, &sum_a), b(caller, &sum_b);
  a.join();
  b.join();
  const int64_t want = 300 * (997 * 996 / 2);
  CHECK_EQ(sum_a, want);
  CHECK_EQ(sum_b, want);
  CHECK_EQ(overlap.load(), 0);
}

TEST(threadpool, destructor_with_sleeping_or_spinning_workers) {
  for (int threads = 1; threads <= 4; ++threads) {
    auto pool = std::make_unique<ThreadPool>(threads);
    pool.reset();  // workers may not even have started
    pool = std::make_unique<ThreadPool>(threads);
    check_cover(*pool, 100, 1);
    pool.reset();  // workers spinning right after a run
    pool = std::make_unique<ThreadPool>(threads);
    check_cover(*pool, 100, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    pool.reset();  // workers asleep
  }
}

TEST(threadpool, invalid_arguments) {
  bool threw = false;
  try {
    ThreadPool p(0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  ThreadPool pool(2);
  threw = false;
  try {
    pool.parallel_for(10, 0, [](int64_t, int64_t, int) {});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    pool.parallel_for(-1, 1, [](int64_t, int64_t, int) {});
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  check_cover(pool, 50, 3);  // still usable
}

TEST(threadpool, default_thread_count_is_between_1_and_4) {
  const int n = default_thread_count();
  CHECK(n >= 1);
  CHECK(n <= 4);
}

// The default on a Pi (4 cores, all usable) leaves one CPU to the daemon's event loop; quotas and
// affinity count as the machine (sys/cpu_budget.h); 1 or 2 CPUs are all used; never above 4.
TEST(threadpool, default_threads_leave_a_pi_one_cpu_for_the_event_loop) {
  const ThreadDefault pi = default_threads_for(4, 4);
  CHECK(pi.threads == 3);
  CHECK_MSG(pi.reason.find("event loop") != std::string::npos, pi.reason);
  CHECK(default_threads_for(4, 3).threads == 2);    // CPUQuota=300% on a Pi
  CHECK(default_threads_for(16, 4).threads == 3);   // a 4-CPU quota on a large machine
  CHECK(default_threads_for(2, 2).threads == 2);    // a 2-core box: one thread would halve prefill
  CHECK(default_threads_for(16, 2).threads == 2);
  CHECK(default_threads_for(1, 1).threads == 1);
  CHECK(default_threads_for(4, 0).threads == 1);    // a failed count never gives 0 threads
  CHECK(default_threads_for(4, 8).threads == 4);    // SMT: the siblings are left free
  CHECK(default_threads_for(16, 16).threads == 4);  // memory-bound decode: no more than 4
  const ThreadDefault here = default_threads();
  CHECK(here.threads == default_thread_count());
  CHECK(here.threads >= 1 && here.threads <= 4);
}
