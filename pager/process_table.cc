// Segment: the process table. Liveness of attachments (OFD locks), and
// reaping a dead attachment's pins, claims and unfinished eviction.
#include <fcntl.h>

#include "pager/ofd_lock.h"
#include "pager/segment.h"

namespace pstore {

bool Segment::ReapLocked(uint32_t a, bool budget_locked) {
  const int64_t ev = attach_[a].evicting_unit.load();
  if (ev >= 0 && !budget_locked) return false;
  // Clear a's pins: punching the row zeroes it and frees its pages.
  ::fallocate(fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              off_t(hdr_->pins_off + a * hdr_->pins_stride), off_t(hdr_->pins_stride));
  // A half-loaded slot is empty again (its unit stays allocated for the next
  // loader).
  for (uint32_t s = 0; s < hdr_->nslots; s++) {
    uint32_t w = states_[s].load();
    if (StateOf(w) == kLoading && OwnerOf(w) == a &&
        states_[s].compare_exchange_strong(w, MakeState(kEmpty, 0)))
      FutexWakeAll(&states_[s]);
  }
  // An eviction a did not commit to changed nothing: its claimed slots are
  // READY again. One it committed to cleared the unit's allocation before
  // punching: finish the punch unless a loader has allocated the unit again
  // since (allocation happens under the budget lock, which we hold), and
  // empty its slots.
  if (ev >= 0) {
    const uint32_t u = uint32_t(ev / 2);
    const bool committed = ev % 2 == 1;
    if (u < hdr_->nunits) {
      if (committed && alloc_[u].load() == 0)
        Punch(uint64_t(u) * hdr_->unit_bytes, hdr_->unit_bytes);
      for (uint32_t k = units_[u].first_slot; k < units_[u].first_slot + units_[u].nslots; k++) {
        uint32_t wk = states_[k].load();
        if (StateOf(wk) == kEvicting && OwnerOf(wk) == a &&
            states_[k].compare_exchange_strong(wk, MakeState(committed ? kEmpty : kReady, 0)))
          FutexWakeAll(&states_[k]);
      }
    }
  }
  attach_[a].evicting_unit.store(-1);
  attach_[a].used.store(0);
  return true;
}

bool Segment::ReapIfDead(uint32_t a, bool budget_locked) {
  if (a >= kMaxAttach || a == me_) return false;
  OfdByteLock liveness(fd(), kAttachLockBase + a, /*wait=*/false);
  if (!liveness.held()) return false;  // alive
  return !attach_[a].used.load() || ReapLocked(a, budget_locked);
}

int Segment::ReapDead(bool budget_locked) {
  int n = 0;
  for (uint32_t a = 0; a < kMaxAttach; a++)
    if (a != me_ && attach_[a].used.load() && ReapIfDead(a, budget_locked)) n++;
  return n;
}

bool Segment::SlotPinned(uint32_t s) const {
  const SlotInfo& si = slots_[s];
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    if (!attach_[a].used.load(std::memory_order_seq_cst)) continue;
    for (uint32_t t = si.first_tensor; t < si.first_tensor + si.ntensors; t++)
      if (pin(a, t).load(std::memory_order_seq_cst) != 0) return true;
  }
  return false;
}

void Segment::AbandonAsIfDead() {
  // The OFD locks go with the open file description, which the mappings
  // hold as well as the descriptor: the lock is not unlocked, it goes.
  attach_lock_.Forget();
  data_rw_map_ = bip::mapped_region();
  data_ro_map_ = bip::mapped_region();
  header_map_ = bip::mapped_region();
  data_rw_ = data_ro_ = base_ = nullptr;
  shm_ = bip::shared_memory_object();
  me_ = kMaxAttach;
}

}  // namespace pstore
