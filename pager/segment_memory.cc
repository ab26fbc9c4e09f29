// Segment: memory. Allocating units and ranges of the data region (huge
// pages where the kernel allows), punching them out, and evicting a unit.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include "pager/segment.h"

namespace pstore {

namespace {
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

// The slots of one unit an eviction claimed (READY -> EVICTING by this
// attachment). Each claim ends in the state End gives (EMPTY once the unit
// is punched) or, on every other way out, READY again, unchanged; waiters
// wake either way.
class EvictionClaims {
 public:
  // Reserves room for n claims: no allocation (and so no throw) while claiming.
  EvictionClaims(std::atomic<uint32_t>* states, size_t n) : states_(states) { slots_.reserve(n); }
  ~EvictionClaims() { End(kReady); }
  EvictionClaims(const EvictionClaims&) = delete;
  EvictionClaims& operator=(const EvictionClaims&) = delete;

  // Claims READY slot s for attachment me (seq_cst); false if it is not READY.
  bool Claim(uint32_t s, uint32_t me) {
    uint32_t w = states_[s].load();
    if (StateOf(w) != kReady ||
        !states_[s].compare_exchange_strong(w, MakeState(kEvicting, me), std::memory_order_seq_cst))
      return false;
    slots_.push_back(s);
    return true;
  }
  const std::vector<uint32_t>& slots() const { return slots_; }
  // Ends every claim in state `to`.
  void End(SlotState to) {
    for (uint32_t s : slots_) {
      states_[s].store(MakeState(to, 0));
      FutexWakeAll(&states_[s]);
    }
    slots_.clear();
  }

 private:
  std::atomic<uint32_t>* const states_;
  std::vector<uint32_t> slots_;
};

}  // namespace

Status Segment::ReserveUnit(uint32_t u) {
  if (alloc_[u].load()) return Status::OK();
  const uint64_t off = uint64_t(u) * hdr_->unit_bytes, len = hdr_->unit_bytes;
  auto allocate = [&](uint64_t at, uint64_t n) -> Status {
    int e = ::posix_fallocate(fd(), off_t(hdr_->data_off + at), off_t(n));
    if (e != 0)
      return Status::FromErrno("allocate shared memory for " + name_ +
                                   " (is /dev/shm full? lower the budget or free memory)",
                               e);
    return Status::OK();
  };
  // Back the unit by huge pages (Linux 6.1+), so every process maps it with
  // one fault per 2 MiB: with one page of each huge page allocated, a
  // collapse fills the rest with zeros in the new huge page, which is far
  // cheaper than allocating 512 small pages and copying them. Where the
  // kernel refuses, allocate and map the small pages instead.
  // On every way out but success nothing may stay allocated: the unit is
  // not marked, so no eviction would ever free it.
  class Undo {
   public:
    Undo(Segment* seg, uint64_t off, uint64_t len) : seg_(seg), off_(off), len_(len) {}
    ~Undo() {
      if (seg_) seg_->Punch(off_, len_);
    }
    void Keep() { seg_ = nullptr; }

   private:
    Segment* seg_;
    const uint64_t off_, len_;
  } undo(this, off, len);
  for (uint64_t at = off; at < off + len; at += kHugePage)
    PSTORE_RETURN_IF_ERROR(allocate(at, hdr_->page));
  bool huge = ::madvise(data_rw_ + off, len, MADV_COLLAPSE) == 0;
  // After a collapse this only checks that nothing is left a hole.
  PSTORE_RETURN_IF_ERROR(allocate(off, len));
#ifdef MADV_POPULATE_WRITE
  if (!huge) ::madvise(data_rw_ + off, len, MADV_POPULATE_WRITE);
#endif
  undo.Keep();
  alloc_[u].store(1);
  return Status::OK();
}

Status Segment::ReserveRange(uint64_t off, uint64_t len) {
  int e = ::posix_fallocate(fd(), off_t(hdr_->data_off + off), off_t(len));
  if (e != 0)
    return Status::FromErrno("allocate shared memory for " + name_ +
                                 " (is /dev/shm full? lower the budget or free memory)",
                             e);
#ifdef MADV_POPULATE_WRITE
  ::madvise(data_rw_ + off, len, MADV_POPULATE_WRITE);  // one call, not a fault per page
#endif
  alloc_[off / hdr_->unit_bytes].store(1);  // something in the unit to evict
  return Status::OK();
}

void Segment::Punch(uint64_t off, uint64_t len) {
  ::fallocate(fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(hdr_->data_off + off),
              off_t(len));
}

uint64_t Segment::ResidentBytes() const {
  struct stat st;
  if (::fstat(fd(), &st) != 0) return 0;
  return uint64_t(st.st_blocks) * 512;
}

uint64_t Segment::TryEvictUnit(uint32_t u) {
  if (!alloc_[u].load()) return 0;
  const UnitInfo& ui = units_[u];
  const uint32_t first = ui.first_slot, end = ui.first_slot + ui.nslots;
  bool referenced = false;
  for (uint32_t s = first; s < end; s++) {
    uint32_t st = StateOf(states_[s].load());
    if (st == kLoading || st == kEvicting) return 0;
    if (refs_[s]) {
      refs_[s] = 0;  // second chance
      referenced = true;
    }
  }
  if (referenced) return 0;
  // Recorded first, so that if we die midway a reaper knows what we did.
  attach_[me_].evicting_unit.store(2 * int64_t(u));
  struct Done {
    AttachEntry& e;
    ~Done() { e.evicting_unit.store(-1); }
  } done{attach_[me_]};
  // Claim every READY slot (seq_cst), then look at the pins: a reader pins
  // (seq_cst) before it checks the state, so one of us sees the other.
  // Claims not ended otherwise are READY again when `claimed` goes.
  EvictionClaims claimed(states_, end - first);
  bool ok = true;
  for (uint32_t s = first; s < end && ok; s++) {
    if (StateOf(states_[s].load()) != kEmpty) ok = claimed.Claim(s, me_);
  }
  for (uint32_t s : claimed.slots())
    if (ok && SlotPinned(s)) ok = false;
  // An EMPTY slot may have been claimed by a loader meanwhile: the unit is in use.
  for (uint32_t s = first; s < end && ok; s++)
    if (StateOf(states_[s].load()) == kLoading) ok = false;
  if (!ok) return 0;
  // Commit: from here a reaper finishes the job if we die.
  attach_[me_].evicting_unit.store(2 * int64_t(u) + 1);
  alloc_[u].store(0);
  uint64_t before = ResidentBytes();
  Punch(uint64_t(u) * hdr_->unit_bytes, hdr_->unit_bytes);
  uint64_t after = ResidentBytes();
  // Counted before the slots can be loaded again: a process that checks what
  // others loaded (Model's check_shared) re-checks a tensor when the count
  // moved since its last check.
  hdr_->evictions.fetch_add(claimed.slots().size());
  claimed.End(kEmpty);
  uint64_t freed = before > after ? before - after : 0;
  hdr_->evicted_bytes.fetch_add(freed, std::memory_order_relaxed);
  return freed;
}

}  // namespace pstore
