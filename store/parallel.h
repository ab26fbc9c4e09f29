// ParallelFor: runs fn(i, worker) for i in [0, n) on `threads` worker threads
// while the calling thread reports progress; stops handing out work at the
// first error (or when progress asks to abort) and returns that error. A
// thread that cannot be started is an error too (never std::terminate).
//
// Thread-safety: fn runs concurrently on distinct i; it must synchronise
// whatever it shares. progress runs on the calling thread only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "common/status.h"

namespace pstore {

// Called about ten times a second and once at the end; returning false aborts.
using ProgressFn = std::function<bool(uint64_t done, uint64_t total)>;

// The most threads an import, export or verify (and a pager's loader pool)
// may be asked for: more would only cost memory and start-up time.
constexpr int kMaxThreads = 256;

// InvalidArgument naming `what` unless 0 <= n <= kMaxThreads (0: automatic).
inline Status CheckThreads(int n, std::string_view what) {
  if (n >= 0 && n <= kMaxThreads) return Status::OK();
  return Status::InvalidArgument(std::string(what) + " must be from 1 to " +
                                 std::to_string(kMaxThreads) + " (0: automatic), not " +
                                 std::to_string(n));
}

inline int DefaultThreads() {
  unsigned n = std::thread::hardware_concurrency();
  return int(std::clamp(n, 1u, 16u));
}

inline Status ParallelFor(size_t n, int threads, const std::function<Status(size_t, int)>& fn,
                          const std::atomic<uint64_t>* done = nullptr, uint64_t total = 0,
                          const ProgressFn& progress = nullptr) {
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  Status first_error;
  auto worker = [&](int w) {
    while (!stop.load(std::memory_order_relaxed)) {
      size_t i = next.fetch_add(1);
      if (i >= n) break;
      Status s = fn(i, w);
      if (!s.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (first_error.ok()) first_error = s;
        stop = true;
      }
    }
  };
  threads = std::max(1, std::min<int>(threads, int(std::max<size_t>(n, 1))));
  std::vector<std::thread> pool;
  int running = threads;
  std::condition_variable finished;
  Status start_error;
  for (int w = 0; w < threads; w++) {
    try {
      pool.emplace_back([&, w] {
        worker(w);
        std::lock_guard<std::mutex> l(mu);
        if (--running == 0) finished.notify_all();
      });
    } catch (const std::system_error& e) {
      // Out of threads: stop the ones started and report it.
      std::lock_guard<std::mutex> l(mu);
      start_error =
          Status::IOError("cannot start worker thread " + std::to_string(w + 1) + " of " +
                          std::to_string(threads) + " (" + e.what() + "); ask for fewer threads");
      stop = true;
      running -= threads - w;
      break;
    }
  }
  if (!start_error.ok()) {
    for (auto& t : pool) t.join();
    return start_error;
  }
  bool aborted = false;
  if (progress && done) {
    std::unique_lock<std::mutex> l(mu);
    while (running > 0) {
      if (finished.wait_for(l, std::chrono::milliseconds(100), [&] { return running == 0; })) break;
      l.unlock();
      bool go_on = aborted || progress(done->load(), total);
      l.lock();
      if (!go_on) {
        aborted = true;
        stop = true;
      }
    }
  }
  for (auto& t : pool) t.join();
  // The last call comes after every item is done, but still before the
  // caller commits anything: returning false there aborts too.
  if (progress && done && !aborted && first_error.ok() && !progress(done->load(), total))
    aborted = true;
  if (!first_error.ok()) return first_error;
  if (aborted) return Status::Aborted("stopped at the caller's request");
  return Status::OK();
}

}  // namespace pstore
