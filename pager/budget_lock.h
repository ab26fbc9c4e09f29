// The owner of the store's budget lock (pager/budget_object.h): this
// process's threads are excluded by a Mutex, other processes by an OFD write
// lock on the budget object's byte kBudgetLockByte, which does not exclude
// threads sharing the descriptor. The guard takes both, in that order, and
// lets go of both however its scope is left.
//
// Thread-safety: a BudgetGuard belongs to the thread that made it.
#pragma once

#include <cerrno>

#include "common/mutex.h"
#include "common/status.h"
#include "pager/budget_object.h"
#include "pager/ofd_lock.h"

namespace pstore {

class SCOPED_CAPABILITY BudgetGuard {
 public:
  // Takes mu, then waits for the OFD lock on fd; locked() says whether the
  // latter was had (mu is held either way until the guard goes).
  BudgetGuard(Mutex* mu, int fd) ACQUIRE(mu) : mu_(mu), fd_(fd) {
    mu_->Lock();
    locked_ = OfdLock(fd_, kBudgetLockByte, /*wait=*/true);
    if (!locked_) error_ = errno;
  }
  ~BudgetGuard() RELEASE() {
    if (locked_) OfdUnlock(fd_, kBudgetLockByte);
    mu_->Unlock();
  }
  BudgetGuard(const BudgetGuard&) = delete;
  BudgetGuard& operator=(const BudgetGuard&) = delete;

  bool locked() const { return locked_; }
  // Why the OFD lock was not had.
  Status status() const {
    return locked_ ? Status::OK() : Status::FromErrno("budget lock", error_);
  }

 private:
  Mutex* const mu_;
  const int fd_;
  bool locked_ = false;
  int error_ = 0;
};

}  // namespace pstore
