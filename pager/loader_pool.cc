#include "pager/loader_pool.h"

#include <chrono>
#include <system_error>

namespace pstore {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kIdleTrimAfter = std::chrono::milliseconds(50);

}  // namespace

LoaderPool::LoaderPool(int threads, std::function<void()> on_idle) : on_idle_(std::move(on_idle)) {
  for (int i = 0; i < threads; i++) {
    try {
      StartThread();
    } catch (const std::system_error& e) {
      start_status_ = Status::IOError("cannot start loader thread " + std::to_string(i + 1) +
                                      " of " + std::to_string(threads) + " (" + e.what() +
                                      "); ask for fewer loader threads");
      Stop();
      threads_.clear();
      return;
    }
  }
}

void LoaderPool::StartThread() {
  threads_.emplace_back([this] {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        if (!cv_.wait_for(l, kIdleTrimAfter, [this] { return stop_ || !queue_.empty(); })) {
          // Nothing to do for a while, and no load by another thread
          // either: give scratch memory back, once.
          const Clock::duration since =
              Clock::now().time_since_epoch() -
              Clock::duration(last_touch_.load(std::memory_order_relaxed));
          if (since >= kIdleTrimAfter && dirty_.exchange(false)) {
            l.unlock();
            if (on_idle_) on_idle_();
          }
          continue;
        }
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
      Touch();
    }
  });
}

LoaderPool::~LoaderPool() {
  Stop();
}

void LoaderPool::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // Threads leave once the queue is empty, so tasks that queue more (a bulk
  // prefetch's plan) still have them run.
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void LoaderPool::Submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

}  // namespace pstore
