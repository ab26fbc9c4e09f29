// The owners of what a process holds in a segment while it uses it.
//
// SlotClaims: slots this attachment claimed (EMPTY -> LOADING by it). Each
// claim ends published (READY) or given up (EMPTY again), and waiters wake
// either way; whatever is still claimed when the SlotClaims goes is given
// up, so an error or an exception (out of memory) never leaves a claim that
// everyone would wait on. A Scope gives up the claims of one range of it
// when the scope is left: the undo of a fill that returns early or throws.
//
// TensorPin: one pin of a tensor by this attachment, dropped when the
// TensorPin goes unless Keep() hands it to the caller (Model::Acquire's pin,
// dropped by Model::Release).
//
// Thread-safety: a SlotClaims is filled by one thread; afterwards different
// threads may publish or give up different claims of it (each claim is
// touched by one thread), and it is destroyed after they are done. A
// TensorPin belongs to the thread that made it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pager/segment.h"

namespace pstore {

class SlotClaims {
 public:
  explicit SlotClaims(Segment* seg) : seg_(seg) {}
  ~SlotClaims() { GiveUp(0, slots_.size()); }
  SlotClaims(const SlotClaims&) = delete;
  SlotClaims& operator=(const SlotClaims&) = delete;

  // Claims each EMPTY slot of slots for this attachment; slots others are
  // loading or evicting go to busy (when not null).
  void Claim(const std::vector<uint32_t>& slots, std::vector<uint32_t>* busy);
  size_t size() const { return slots_.size(); }
  bool empty() const { return slots_.empty(); }
  uint32_t slot(size_t i) const { return slots_[i]; }
  const std::vector<uint32_t>& slots() const { return slots_; }

  // Claim i is loaded: READY, waiters wake.
  void Publish(size_t i);
  // Gives claim i up (if still held): EMPTY again, waiters wake.
  void GiveUp(size_t i);
  // Gives up every claim of [begin, end) still held.
  void GiveUp(size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) GiveUp(i);
  }

  class Scope {
   public:
    Scope(SlotClaims* c, size_t begin, size_t end) : c_(c), begin_(begin), end_(end) {}
    ~Scope() { c_->GiveUp(begin_, end_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    SlotClaims* const c_;
    const size_t begin_, end_;
  };

 private:
  Segment* const seg_;
  std::vector<uint32_t> slots_;
  std::vector<uint8_t> held_;  // per claim: 1 until published or given up
};

class TensorPin {
 public:
  // Pins tensor t for this attachment (seq_cst: before the caller's checks
  // of slot states, which the evictor orders against pins).
  TensorPin(Segment* seg, uint32_t t) : pin_(&seg->pin(seg->me(), t)) {
    pin_->fetch_add(1, std::memory_order_seq_cst);
  }
  ~TensorPin() { Drop(); }
  TensorPin(const TensorPin&) = delete;
  TensorPin& operator=(const TensorPin&) = delete;

  // Drops the pin now.
  void Drop() {
    if (pin_) pin_->fetch_sub(1);
    pin_ = nullptr;
  }
  // Hands the pin over: it stays when the TensorPin goes.
  void Keep() { pin_ = nullptr; }

 private:
  std::atomic<uint32_t>* pin_;
};

}  // namespace pstore
