// One model version opened by a Pager: acquire, release and copy tensors,
// load their slots into the shared segment, prefetch in the background.
//
// Thread-safety: a Model is safe to use from many threads at once. A pointer
// from Acquire stays valid until the matching Release (and the Model lives);
// it must not be written through.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pager/layout.h"
#include "pager/model_host.h"
#include "pager/segment.h"
#include "pager/slot_claims.h"
#include "pager/tensor_table.h"
#include "pager/warmer.h"
#include "store/chunk_read.h"
#include "store/chunk_source.h"
#include "store/manifest.h"

namespace pstore {

class PlacedFrames;

struct ModelStats {
  uint64_t acquires = 0;
  uint64_t hits = 0;                   // acquires whose slots were all resident
  uint64_t misses = 0;                 // acquires that waited for at least one load
  uint64_t slots_loaded = 0;           // loads this process did
  uint64_t bytes_read = 0;             // frame bytes read from the store by this process
  uint64_t bytes_decoded = 0;          // raw bytes decoded by this process
  uint64_t load_ns = 0;                // time this process spent loading slots
  uint64_t file_order_prefetches = 0;  // bulk prefetches read in file order
  uint64_t frames_mapped = 0;          // frames decoded from the store's mapped files
  uint64_t resident_bytes = 0;         // the segment's memory now (all processes)
  uint64_t pinned_bytes = 0;           // bytes of tensors this process pins now
  uint64_t segment_loads = 0;          // slot loads into the segment by every process
  uint64_t segment_bytes = 0;          // bytes those loads decoded
  uint64_t evictions = 0;              // slots evicted from the segment
};

// What a Model is made of; the Pager fills it in when it opens a model.
struct ModelParts {
  ModelHost* host = nullptr;            // the Pager; outlives the Model
  std::shared_ptr<ChunkSource> source;  // where its chunks are read from
  std::string label;                    // names the model in messages
  ModelDigest digest;
  // The tensor table and layout: in the segment's memory (checked once when
  // opening), or this process's own (check_shared).
  TensorTable tables;
  LayoutView layout;
  std::shared_ptr<Segment> segment;  // this process's attachment; keeps both mapped
  bool check_shared = false;         // PagerOptions::check_shared
};

// One model version opened by a Pager. It refers to its Pager: release every
// Model (and wait for its prefetches) before destroying the Pager. (The C API
// keeps a store open while any of its models is.)
class Model : public std::enable_shared_from_this<Model> {
 public:
  // For the Pager (Pager::OpenModel): a Model of these parts.
  static std::shared_ptr<Model> Open(ModelParts parts);
  ~Model();
  // Names, dtypes, shapes, sizes and chunk keys of the tensors, the format
  // and the metadata; valid while the Model lives.
  const TensorTable& tables() const { return tables_; }
  const ModelDigest& digest() const { return digest_; }
  const LayoutView& layout() const { return layout_; }
  uint32_t tensor_count() const { return tables_.count(); }
  // Index of the tensor called name, or -1.
  int64_t Find(std::string_view name) const;

  // Pins tensor t, loading its slots if needed; returns its bytes.
  Result<const uint8_t*> Acquire(uint32_t t);
  // Where Acquire(t) puts tensor t's bytes (for an empty tensor, the same
  // non-null pointer to no bytes), known without pinning or loading anything.
  // The bytes may be read only while t is acquired: before, they may not be
  // loaded, or be evicted.
  const uint8_t* Address(uint32_t t) const;
  // Undoes one Acquire of t.
  Status Release(uint32_t t);
  // Copies tensor t into dst (cap bytes) without mapping what is not resident.
  Status Copy(uint32_t t, void* dst, size_t cap);
  // Loads these tensors in the background (no pins).
  void Prefetch(const std::vector<uint32_t>& tensors);
  // Waits for every prefetch so far; returns the first error among them.
  Status WaitPrefetch();
  ModelStats Stats() const;

 private:
  explicit Model(ModelParts parts);
  Status LoadSlots(uint32_t t);
  // Checks tensor t's bytes at p against its chunk keys (check_shared).
  Status CheckBytes(uint32_t t, const uint8_t* p) const;
  // Whether every slot of a tensor is READY (call with the tensor pinned).
  bool Resident(const TensorPlace& p) const;
  // Reads, decodes and checks claims [from, to) into shared memory,
  // reading their chunks in batches; a slot that fails is given up, the
  // others are published (and on an exception, what is left is given up).
  // Returns the first error. REQUIRES: their memory reserved.
  // Frames in `placed` are decoded from there (placed_frames.h).
  Status FillSlots(SlotClaims* claims, size_t from, size_t to,
                   const PlacedFrames* placed = nullptr);
  // Prefetches: batches of tensors (or of slots) for the loader threads.
  static constexpr uint64_t kPrefetchBatchBytes = 4ull << 20;
  static constexpr uint64_t kBulkBytes = 32ull << 20;  // a bulk load from here
  void SubmitPrefetch(std::vector<uint32_t> items, bool slots,
                      std::shared_ptr<Warmer> warmer = nullptr,
                      std::shared_ptr<const PlacedFrames> placed = nullptr);
  // Runs work on a loader thread as part of the prefetches WaitPrefetch waits
  // for; its error (or an exception, as a status) is theirs.
  void RunInBackground(std::function<Status()> work);
  // Prefetches the tensors' slots in the order their chunks sit in the
  // store's files; false (nothing done) when that order is not worth finding.
  bool PrefetchInFileOrder(const std::vector<uint32_t>& tensors);
  // Prefetches the tensors in batches, in the order given.
  void PrefetchInBatches(const std::vector<uint32_t>& tensors);
  // Claims these EMPTY slots into claims (which must be empty) and reserves
  // their memory; on error the claims are left for claims to give up. Slots
  // others are loading go to busy.
  Status ClaimSlots(const std::vector<uint32_t>& slots, std::vector<uint32_t>* busy,
                    SlotClaims* claims);
  // The same for the slots of these tensors.
  Status ClaimAndReserve(const uint32_t* tensors, size_t n, std::vector<uint32_t>* busy,
                         SlotClaims* claims);

  ModelHost* const host_;
  const std::shared_ptr<ChunkSource> source_;
  const std::string label_;
  const std::shared_ptr<Segment> seg_;  // first: it keeps what the two below point into
  const TensorTable tables_;
  const ModelDigest digest_;
  const LayoutView layout_;
  // With check_shared, per tensor, in this process's memory (nothing another
  // process can change): how many of this handle's acquires are not yet
  // released, and whether the bytes were checked since that count left 0.
  // The check runs when it goes from 0 to 1; bytes changed while it stays
  // above 0 are not seen. Guarded by check_mu_[t % kCheckStripes].
  struct CheckState {
    uint32_t held = 0;
    bool checked = false;
  };
  static constexpr size_t kCheckStripes = 64;
  std::unique_ptr<CheckState[]> check_;
  std::mutex check_mu_[kCheckStripes];

  std::atomic<uint64_t> acquires_{0}, hits_{0}, misses_{0}, slots_loaded_{0}, bytes_read_{0},
      bytes_decoded_{0}, load_ns_{0}, file_order_prefetches_{0}, frames_mapped_{0};
  std::mutex prefetch_mu_;
  std::condition_variable prefetch_cv_;
  uint64_t prefetch_pending_ = 0;
  Status prefetch_error_;
};

}  // namespace pstore
