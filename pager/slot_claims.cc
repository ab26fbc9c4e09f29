#include "pager/slot_claims.h"

namespace pstore {

void SlotClaims::Claim(const std::vector<uint32_t>& slots, std::vector<uint32_t>* busy) {
  // No allocation (and so no throw) between a claim and its record.
  slots_.reserve(slots_.size() + slots.size());
  held_.reserve(held_.size() + slots.size());
  for (uint32_t s : slots) {
    std::atomic<uint32_t>& word = seg_->state(s);
    uint32_t w = word.load();
    while (StateOf(w) == kEmpty) {
      if (word.compare_exchange_weak(w, MakeState(kLoading, seg_->me()))) {
        slots_.push_back(s);
        held_.push_back(1);
        break;
      }
    }
    if (busy && (StateOf(w) == kLoading || StateOf(w) == kEvicting)) busy->push_back(s);
  }
}

void SlotClaims::Publish(size_t i) {
  if (!held_[i]) return;
  std::atomic<uint32_t>& word = seg_->state(slots_[i]);
  word.store(MakeState(kReady, 0), std::memory_order_release);
  FutexWakeAll(&word);
  held_[i] = 0;
}

void SlotClaims::GiveUp(size_t i) {
  if (!held_[i]) return;
  std::atomic<uint32_t>& word = seg_->state(slots_[i]);
  word.store(MakeState(kEmpty, 0));
  FutexWakeAll(&word);
  held_[i] = 0;
}

}  // namespace pstore
