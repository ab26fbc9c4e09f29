// Model: claiming slots, reserving their memory, filling them from the
// store, and waiting for (or taking over from) other processes' loads.
#include <rocksdb/db.h>

#include <algorithm>
#include <chrono>

#include "pager/pager.h"

namespace pstore {

namespace {

constexpr int kWaitSliceMs = 10;  // how often a waiter checks that a loader is alive

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

}  // namespace

void Model::Unclaim(uint32_t s) {
  std::atomic<uint32_t>& word = seg_->state(s);
  word.store(MakeState(kEmpty, 0));
  FutexWakeAll(&word);
}

Result<std::vector<uint32_t>> Model::ClaimAndReserve(const uint32_t* tensors, size_t n,
                                                     std::vector<uint32_t>* busy) {
  std::vector<uint32_t> slots;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += layout_.tensors[tensors[i]].nslots;
  slots.reserve(total);
  for (size_t i = 0; i < n; i++) {
    const TensorPlace& p = layout_.tensors[tensors[i]];
    for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++) slots.push_back(s);
  }
  return ClaimSlots(slots, busy);
}

Result<std::vector<uint32_t>> Model::ClaimSlots(const std::vector<uint32_t>& slots,
                                                std::vector<uint32_t>* busy) {
  Segment& seg = *seg_;
  std::vector<uint32_t> mine;
  mine.reserve(slots.size());  // no allocation (and so no throw) once slots are claimed
  for (uint32_t s : slots) {
    std::atomic<uint32_t>& word = seg.state(s);
    uint32_t w = word.load();
    while (StateOf(w) == kEmpty) {
      if (word.compare_exchange_weak(w, MakeState(kLoading, seg.me()))) {
        mine.push_back(s);
        break;
      }
    }
    if (busy && (StateOf(w) == kLoading || StateOf(w) == kEvicting)) busy->push_back(s);
  }
  Status st;
  try {
    st = pager_->ReserveSlots(&seg, mine);
  } catch (...) {
    for (uint32_t s : mine) Unclaim(s);
    throw;
  }
  if (!st.ok()) {
    for (uint32_t s : mine) Unclaim(s);
    return st;
  }
  return mine;
}

Status Model::FillSlot(uint32_t s) {
  return FillSlots(&s, 1);
}

Status Model::FillSlots(const uint32_t* slots, size_t n) {
  // Whatever happens, every slot ends published or unclaimed: an exception
  // (out of memory) must not leave a claim that everyone would wait on.
  try {
    return FillSlotsOrThrow(slots, n);
  } catch (...) {
    for (size_t i = 0; i < n; i++) {
      uint32_t w = seg_->state(slots[i]).load();
      if (StateOf(w) == kLoading && OwnerOf(w) == seg_->me()) Unclaim(slots[i]);
    }
    throw;
  }
}

Status Model::FillSlotsOrThrow(const uint32_t* slots, size_t n) {
  Segment& seg = *seg_;
  Status first_error = reader_->EnsureDb();
  if (!first_error.ok()) {
    for (size_t i = 0; i < n; i++) Unclaim(slots[i]);
    return first_error;
  }
  std::unique_ptr<ChunkDecoder> decoder = pager_->TakeDecoder();
  // Slots go in groups: one MultiGet per group (RocksDB then reads each
  // table block once for all the group's small chunks), and each slot is
  // published as soon as its group is decoded. A group holds up to 512 chunks
  // or 1 MiB of them (so frames are still in cache when decoded).
  constexpr size_t kGroupPieces = 512;
  constexpr uint64_t kGroupBytes = 1ull << 20;
  std::vector<ChunkKey> keys;
  std::vector<rocksdb::PinnableSlice> frames(kGroupPieces * 2);
  std::vector<Status> statuses(kGroupPieces * 2);
  for (size_t i = 0; i < n;) {
    uint64_t t0 = NowNs();
    size_t end = i, npieces = 0;
    uint64_t nbytes = 0;
    while (end < n &&
           (npieces == 0 || (npieces + layout_.slots[slots[end]].npieces <= kGroupPieces &&
                             nbytes + layout_.slots[slots[end]].bytes <= kGroupBytes))) {
      npieces += layout_.slots[slots[end]].npieces;
      nbytes += layout_.slots[slots[end]].bytes;
      end++;
    }
    keys.clear();
    for (size_t k = i; k < end; k++) {
      const Slot& sl = layout_.slots[slots[k]];
      for (uint32_t p = 0; p < sl.npieces; p++)
        keys.push_back(manifest_->chunks[layout_.pieces[sl.first_piece + p].chunk]);
    }
    if (frames.size() < keys.size()) {
      frames.resize(keys.size());
      statuses.resize(keys.size());
    }
    for (size_t k = 0; k < keys.size(); k++) frames[k].Reset();
    reader_->view().ReadFrames(keys.data(), keys.size(), frames.data(), statuses.data());
    size_t at = 0;
    for (size_t k = i; k < end; k++) {
      uint32_t s = slots[k];
      const Slot& sl = layout_.slots[s];
      uint8_t* dst = seg.data_rw() + sl.offset;
      Status st;
      uint64_t read = 0, decoded = 0;
      for (uint32_t p = 0; p < sl.npieces; p++, at++) {
        const SlotPiece& pc = layout_.pieces[sl.first_piece + p];
        if (!st.ok()) continue;
        st = statuses[at];
        if (st.ok())
          st = decoder->Decode(std::string_view(frames[at].data(), frames[at].size()), keys[at],
                               std::span<uint8_t>(dst + pc.offset, pc.len));
        if (!st.ok()) {
          const ManifestTensor& t = manifest_->tensors[pc.tensor];
          st = st.WithContext("model " + digest_.Hex() + " tensor " + t.name + " chunk " +
                              std::to_string(pc.chunk - t.first_chunk));
        }
        read += frames[at].size();
        decoded += pc.len;
      }
      std::atomic<uint32_t>& word = seg.state(s);
      if (!st.ok()) {
        Unclaim(s);  // its unit stays allocated, for the next loader
        if (first_error.ok()) first_error = st;
        continue;
      }
      word.store(MakeState(kReady, 0), std::memory_order_release);
      FutexWakeAll(&word);
      seg.header()->loads.fetch_add(1, std::memory_order_relaxed);
      seg.header()->load_bytes.fetch_add(decoded, std::memory_order_relaxed);
      slots_loaded_.fetch_add(1, std::memory_order_relaxed);
      bytes_read_.fetch_add(read, std::memory_order_relaxed);
      bytes_decoded_.fetch_add(decoded, std::memory_order_relaxed);
    }
    load_ns_.fetch_add(NowNs() - t0, std::memory_order_relaxed);
    i = end;
  }
  pager_->GiveDecoder(std::move(decoder));
  pager_->pool_->Touch();
  return first_error;
}

Status Model::LoadSlots(uint32_t t) {
  Segment& seg = *seg_;
  for (;;) {
    std::vector<uint32_t> theirs;
    PSTORE_ASSIGN_OR_RETURN(std::vector<uint32_t> mine, ClaimAndReserve(&t, 1, &theirs));
    if (mine.empty() && theirs.empty()) return Status::OK();
    // Load our claims, the pool's threads and this one together.
    if (!mine.empty()) {
      struct Batch {
        std::vector<uint32_t> slots;
        std::atomic<size_t> next{0};
        std::mutex mu;
        std::condition_variable cv;
        size_t finished = 0;
        Status error;
      };
      std::shared_ptr<Batch> batch;
      try {
        batch = std::make_shared<Batch>();
        batch->slots = std::move(mine);
      } catch (...) {
        for (uint32_t s : mine) Unclaim(s);
        throw;
      }
      // Helpers hold the model weakly: one still queued after the batch is
      // done must not keep the model (and its attachment) alive.
      std::weak_ptr<Model> weak = weak_from_this();
      auto work = [weak, batch] {
        for (;;) {
          size_t i = batch->next.fetch_add(1);
          if (i >= batch->slots.size()) return;
          auto self = weak.lock();
          if (!self) return;
          Status st = Guarded([&] { return self->FillSlot(batch->slots[i]); });
          std::lock_guard<std::mutex> l(batch->mu);
          if (!st.ok() && batch->error.ok()) batch->error = st;
          if (++batch->finished == batch->slots.size()) batch->cv.notify_all();
        }
      };
      size_t helpers = std::min<size_t>(batch->slots.size() - 1, size_t(pager_->pool_->threads()));
      try {
        for (size_t h = 0; h < helpers; h++) pager_->pool_->Submit(work);
      } catch (...) {
        // Fewer helpers: this thread does the rest.
      }
      work();
      std::unique_lock<std::mutex> l(batch->mu);
      batch->cv.wait(l, [&] { return batch->finished == batch->slots.size(); });
      if (!batch->error.ok()) return batch->error;
    }
    // Wait for other processes' loads; take over from a loader that died.
    for (uint32_t s : theirs) {
      std::atomic<uint32_t>& word = seg.state(s);
      for (;;) {
        uint32_t w = word.load();
        uint32_t st = StateOf(w);
        if (st == kReady || st == kEmpty) break;
        FutexWait(&word, w, kWaitSliceMs);
        if (word.load() != w) continue;
        // No progress: is the loader (or evictor) alive? A dead one is reaped
        // under the budget lock (a dead evictor's unit is sorted out then).
        pager_->ReapUnderBudgetLock(&seg, OwnerOf(w));
      }
    }
  }
}

}  // namespace pstore
