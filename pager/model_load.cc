// Model: claiming slots, reserving their memory, filling them from the
// store, and waiting for (or taking over from) other processes' loads.
#include <algorithm>
#include <chrono>

#include "pager/model.h"
#include "pager/placed_frames.h"

namespace pstore {

namespace {

constexpr int kWaitSliceMs = 10;  // how often a waiter checks that a loader is alive

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

}  // namespace

Status Model::ClaimAndReserve(const uint32_t* tensors, size_t n, std::vector<uint32_t>* busy,
                              SlotClaims* claims) {
  std::vector<uint32_t> slots;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += layout_.tensors[tensors[i]].nslots;
  slots.reserve(total);
  for (size_t i = 0; i < n; i++) {
    const TensorPlace& p = layout_.tensors[tensors[i]];
    for (uint32_t s = p.first_slot; s < p.first_slot + p.nslots; s++) slots.push_back(s);
  }
  return ClaimSlots(slots, busy, claims);
}

Status Model::ClaimSlots(const std::vector<uint32_t>& slots, std::vector<uint32_t>* busy,
                         SlotClaims* claims) {
  claims->Claim(slots, busy);
  return host_->ReserveSlots(seg_.get(), claims->slots());
}

Status Model::FillSlots(SlotClaims* claims, size_t from, size_t to, const PlacedFrames* placed) {
  // Whatever happens, every slot ends published or given up: what is still
  // claimed when this returns or throws is given up here.
  SlotClaims::Scope give_up_rest(claims, from, to);
  const size_t n = to - from;
  auto slot = [&](size_t k) { return claims->slot(from + k); };
  Segment& seg = *seg_;
  Status first_error;
  std::unique_ptr<ChunkDecoder> decoder = host_->TakeDecoder();
  // Slots go in groups: one batch read per group (a local store then reads
  // each table block once for all the group's small chunks), and each slot is
  // published as soon as its group is decoded. A group holds up to 512 chunks
  // or 1 MiB of them (so frames are still in cache when decoded). Frames the
  // plan placed in a mapped file are decoded from there (placed_frames.h);
  // the others, and placed ones that cannot be read there, are read from the
  // source in the group's batch.
  constexpr size_t kGroupPieces = 512;
  constexpr uint64_t kGroupBytes = 1ull << 20;
  constexpr size_t kMapped = SIZE_MAX;
  std::vector<ChunkKey> keys;
  std::vector<std::string_view> mapped;  // by slot of the group
  std::vector<size_t> index;             // by piece of the group: into keys, or kMapped
  std::vector<std::span<uint8_t>> outs;
  FrameBatch frames, retry;
  DecodedChunks got;
  for (size_t i = 0; i < n;) {
    uint64_t t0 = NowNs();
    size_t end = i, npieces = 0;
    uint64_t nbytes = 0;
    while (end < n &&
           (npieces == 0 || (npieces + layout_.slots[slot(end)].npieces <= kGroupPieces &&
                             nbytes + layout_.slots[slot(end)].bytes <= kGroupBytes))) {
      npieces += layout_.slots[slot(end)].npieces;
      nbytes += layout_.slots[slot(end)].bytes;
      end++;
    }
    mapped.assign(end - i, std::string_view());
    if (placed) {
      for (size_t k = i; k < end; k++) mapped[k - i] = placed->Frame(slot(k));
      PlacedFrames::Populate(&mapped);
    }
    keys.clear();
    index.clear();
    outs.clear();
    for (size_t k = i; k < end; k++) {
      const Slot& sl = layout_.slots[slot(k)];
      uint8_t* dst = seg.data_rw() + sl.offset;
      for (uint32_t p = 0; p < sl.npieces; p++) {
        const SlotPiece& pc = layout_.pieces[sl.first_piece + p];
        index.push_back(mapped[k - i].empty() ? keys.size() : kMapped);
        if (mapped[k - i].empty()) {
          keys.push_back(tables_.chunk(pc.chunk));
          outs.emplace_back(dst + pc.offset, pc.len);
        }
      }
    }
    // Each frame the source reads is decoded once, into its slot, and checked
    // against its key there. A source that cannot answer fails every slot of
    // the group it reads.
    Status batch_error = keys.empty()
                             ? Status::OK()
                             : source_->ReadDecoded(keys, outs, decoder.get(), &frames, &got);
    size_t at = 0;
    for (size_t k = i; k < end; k++) {
      const Slot& sl = layout_.slots[slot(k)];
      Status st;
      uint64_t read = 0, decoded = 0;
      for (uint32_t p = 0; p < sl.npieces; p++, at++) {
        const SlotPiece& pc = layout_.pieces[sl.first_piece + p];
        if (!st.ok()) continue;
        const ChunkUse use{label_, tables_.name(pc.tensor),
                           pc.chunk - tables_.first_chunk(pc.tensor)};
        const ChunkKey& key = tables_.chunk(pc.chunk);
        if (index[at] == kMapped) {
          std::string_view frame = mapped[k - i];
          std::span<uint8_t> out(seg.data_rw() + sl.offset + pc.offset, pc.len);
          st = decoder->Decode(frame, key, out);
          if (st.ok()) {
            read += frame.size();
            frames_mapped_.fetch_add(1, std::memory_order_relaxed);
          } else {
            // Not the frame the plan said, or damaged there: what the
            // source reads (and says about it) is what counts.
            uint64_t frame_bytes = 0;
            st = ReadChunk(*source_, key, use, decoder.get(), &retry, out, &frame_bytes);
            if (st.ok()) read += frame_bytes;
          }
        } else {
          const size_t f = index[at];
          st = batch_error.ok() ? got.status[f] : batch_error;
          if (!st.ok()) st = ChunkUseError(st, use, key);
          if (st.ok()) read += got.frame_bytes[f];
        }
        decoded += pc.len;
      }
      if (!st.ok()) {
        claims->GiveUp(from + k);  // its unit stays allocated, for the next loader
        if (first_error.ok()) first_error = st;
        continue;
      }
      claims->Publish(from + k);
      seg.header()->loads.fetch_add(1, std::memory_order_relaxed);
      seg.header()->load_bytes.fetch_add(decoded, std::memory_order_relaxed);
      slots_loaded_.fetch_add(1, std::memory_order_relaxed);
      bytes_read_.fetch_add(read, std::memory_order_relaxed);
      bytes_decoded_.fetch_add(decoded, std::memory_order_relaxed);
    }
    load_ns_.fetch_add(NowNs() - t0, std::memory_order_relaxed);
    i = end;
  }
  host_->GiveDecoder(std::move(decoder));
  host_->loaders().Touch();
  return first_error;
}

Status Model::LoadSlots(uint32_t t) {
  Segment& seg = *seg_;
  for (;;) {
    std::vector<uint32_t> theirs;
    // Our claims, loaded by the pool's threads and this one together; what
    // is not loaded when the batch goes is given up.
    struct Batch {
      explicit Batch(Segment* seg) : claims(seg) {}
      SlotClaims claims;
      std::atomic<size_t> next{0};
      std::mutex mu;
      std::condition_variable cv;
      size_t finished = 0;
      Status error;
    };
    auto batch = std::make_shared<Batch>(&seg);
    PSTORE_RETURN_IF_ERROR(ClaimAndReserve(&t, 1, &theirs, &batch->claims));
    if (batch->claims.empty() && theirs.empty()) return Status::OK();
    if (!batch->claims.empty()) {
      // Helpers hold the model weakly: one still queued after the batch is
      // done must not keep the model (and its attachment) alive.
      std::weak_ptr<Model> weak = weak_from_this();
      auto work = [weak, batch] {
        for (;;) {
          size_t i = batch->next.fetch_add(1);
          if (i >= batch->claims.size()) return;
          auto self = weak.lock();
          if (!self) return;
          Status st = Guarded([&] { return self->FillSlots(&batch->claims, i, i + 1); });
          std::lock_guard<std::mutex> l(batch->mu);
          if (!st.ok() && batch->error.ok()) batch->error = st;
          if (++batch->finished == batch->claims.size()) batch->cv.notify_all();
        }
      };
      size_t helpers =
          std::min<size_t>(batch->claims.size() - 1, size_t(host_->loaders().threads()));
      try {
        for (size_t h = 0; h < helpers; h++) host_->loaders().Submit(work);
      } catch (...) {
        // Fewer helpers: this thread does the rest.
      }
      work();
      std::unique_lock<std::mutex> l(batch->mu);
      batch->cv.wait(l, [&] { return batch->finished == batch->claims.size(); });
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
        host_->ReapUnderBudgetLock(&seg, OwnerOf(w));
      }
    }
  }
}

}  // namespace pstore
