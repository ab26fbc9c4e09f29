// A mutex the thread-safety analysis knows about (common/thread_annotations.h),
// and its scoped owner. std::mutex carries no annotations, so fields guarded
// by one cannot be checked; these wrap it and add nothing else.
//
// Thread-safety: a Mutex is for use from many threads; a MutexLock belongs to
// the thread that made it.
#pragma once

#include <mutex>

#include "common/thread_annotations.h"

namespace pstore {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex from construction to destruction.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace pstore
