// The pager's loader threads, and the guard every task run on them goes
// through.
//
// Thread-safety: Submit, Touch and threads may be called from any thread;
// Stop (and the destructor) from one thread, not from a loader thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace pstore {

// Runs fn on a loader thread, where an exception must not escape: it becomes
// an error for whoever waits on the work.
template <typename F>
Status Guarded(F&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return Status::NoMemory("out of memory while loading");
  } catch (const std::exception& e) {
    return Status::Internal(std::string("loading failed: ") + e.what());
  }
}

// Threads that load slots in the background. When no work has come for a
// while, one of them runs on_idle (the pager gives back its scratch memory).
class LoaderPool {
 public:
  // Starts up to `threads` threads; start_status() says whether all started.
  LoaderPool(int threads, std::function<void()> on_idle);
  ~LoaderPool();
  // An error when a thread could not be started (the pool then has none).
  const Status& start_status() const { return start_status_; }
  void Submit(std::function<void()> task);
  // Runs what is queued (and what that queues), then joins the threads.
  void Stop();
  // Marks activity (loads by any thread), so on_idle runs only once none
  // has come for a while.
  void Touch() {
    last_touch_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                      std::memory_order_relaxed);
    dirty_.store(true, std::memory_order_relaxed);
  }
  int threads() const { return int(threads_.size()); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::atomic<bool> dirty_{false};
  std::atomic<std::chrono::steady_clock::rep> last_touch_{0};  // Touch()'s time
  std::function<void()> on_idle_;
  void StartThread();
  std::vector<std::thread> threads_;
  Status start_status_;
};

}  // namespace pstore
