// The pager: lazy, shared, budgeted access to a store's models from one process.
//
// A Pager belongs to one store. OpenModel maps the model's shared-memory
// segment (creating it on first use on the host) and returns a Model; Acquire
// pages a tensor in if needed, pins it and returns a pointer into the shared,
// read-only mapping. Only the slots a tensor covers are read from the store
// and decoded (straight into shared memory, checked against their keys), by
// whichever process gets there first; everyone else maps the same pages.
//
// Budget: before a slot is filled, the process takes the store's budget lock
// (an OFD lock on a small shared-memory file), adds up what every segment of
// the store holds (the files' allocated blocks) and, if the slot would exceed
// the budget, evicts unpinned slots (CLOCK, across all the store's models)
// until it fits or nothing evictable is left. Resident memory therefore stays
// within the budget plus what is pinned.
//
// Thread-safety: Pager and Model are safe to use from many threads at once.
// A pointer from Acquire stays valid until the matching Release (and the Model
// lives); it must not be written through.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pager/layout.h"
#include "pager/name_index.h"
#include "pager/segment.h"
#include "store/store.h"

namespace pstore {

struct PagerOptions {
  uint64_t budget_bytes = 0;  // 0: the store's setting (itself 0: half of RAM)
  int loader_threads = 0;     // 0: max(2, cores); at most kMaxThreads
  // Check each chunk of a tensor in shared memory against its key on every
  // acquire that starts a model handle's hold on the tensor (none of its
  // acquires through that handle unreleased), and each tensor copied out of
  // shared memory: for a process that
  // does not trust the others that may write the store's shared memory.
  bool check_shared = false;
};

struct ModelStats {
  uint64_t acquires = 0;
  uint64_t hits = 0;            // acquires whose slots were all resident
  uint64_t misses = 0;          // acquires that waited for at least one load
  uint64_t slots_loaded = 0;    // loads this process did
  uint64_t bytes_read = 0;      // frame bytes read from the store by this process
  uint64_t bytes_decoded = 0;   // raw bytes decoded by this process
  uint64_t load_ns = 0;         // time this process spent loading slots
  uint64_t file_order_prefetches = 0;  // bulk prefetches read in file order
  uint64_t resident_bytes = 0;  // the segment's memory now (all processes)
  uint64_t pinned_bytes = 0;    // bytes of tensors this process pins now
  uint64_t segment_loads = 0;   // slot loads into the segment by every process
  uint64_t segment_bytes = 0;   // bytes those loads decoded
  uint64_t evictions = 0;       // slots evicted from the segment
};

class Pager;

// Threads that load slots in the background. When no work has come for a
// while, one of them runs on_idle (the pager gives back its scratch memory).
class LoaderPool {
 public:
  // Starts up to `threads` threads; start_status() says whether all started.
  LoaderPool(int threads, std::function<void()> on_idle);
  ~LoaderPool();
  // An error when a thread could not be started (the pool then has none).
  const Status& start_status() const { return start_status_; }
  void Submit(std::function<void()> task);
  // Runs what is queued (and what that queues), then joins the threads.
  void Stop();
  // Marks activity (loads by any thread), so on_idle runs after it settles.
  void Touch() { dirty_.store(true, std::memory_order_relaxed); }
  int threads() const { return int(threads_.size()); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::atomic<bool> dirty_{false};
  std::function<void()> on_idle_;
  void StartThread();
  std::vector<std::thread> threads_;
  Status start_status_;
};

// One model version opened by a Pager. It refers to its Pager: release every
// Model (and wait for its prefetches) before destroying the Pager. (The C API
// keeps a store open while any of its models is.)
class Model : public std::enable_shared_from_this<Model> {
 public:
  ~Model();
  const Manifest& manifest() const { return *manifest_; }
  const ModelDigest& digest() const { return digest_; }
  const Layout& layout() const { return layout_; }
  uint32_t tensor_count() const { return uint32_t(manifest_->tensors.size()); }
  // Index of the tensor called name, or -1.
  int64_t Find(std::string_view name) const;

  // Pins tensor t, loading its slots if needed; returns its bytes.
  Result<const uint8_t*> Acquire(uint32_t t);
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
  friend class Pager;
  Model() = default;
  Status LoadSlots(uint32_t t);
  // Checks tensor t's bytes at p against its chunk keys (check_shared).
  Status CheckBytes(uint32_t t, const uint8_t* p) const;
  // Whether every slot of a tensor is READY (call with the tensor pinned).
  bool Resident(const TensorPlace& p) const;
  // Reads, decodes and checks slot s into shared memory. REQUIRES: s is
  // claimed (LOADING) by this process and its memory reserved.
  Status FillSlot(uint32_t s);
  // The same for several slots, reading their chunks in batches; a slot that
  // fails is unclaimed, the others are published. Returns the first error.
  Status FillSlots(const uint32_t* slots, size_t n);
  Status FillSlotsOrThrow(const uint32_t* slots, size_t n);
  // Reads a bulk prefetch's blob frames into the OS cache a few batches
  // ahead of the loaders, from a thread of its own, without copying them
  // (docs/pager.md, "Cold loads"). A hint: the loaders read through RocksDB
  // whether it kept up or not.
  struct Warmer {
    static constexpr size_t kAhead = 4;  // batches
    struct Range {
      uint32_t file;  // into fds
      uint64_t begin, end;
    };
    std::vector<UniqueFd> fds;
    std::vector<std::vector<Range>> batches;  // in the order the loaders take them
    // The warmer thread's loop: batch after batch, at most kAhead ahead of
    // the loaders; nothing if the frames are mostly in the OS cache already.
    void Run(const std::shared_ptr<Warmer>& self);
    // A loader starts or finishes a batch.
    void Started();
    void Finished();

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    size_t started_ = 0, finished_ = 0;
  };
  // Prefetches: batches of tensors (or of slots) for the loader threads.
  static constexpr uint64_t kPrefetchBatchBytes = 4ull << 20;
  static constexpr uint64_t kBulkBytes = 32ull << 20;  // a bulk load from here
  void SubmitPrefetch(std::vector<uint32_t> items, bool slots,
                      std::shared_ptr<Warmer> warmer = nullptr);
  // Runs work on a loader thread as part of the prefetches WaitPrefetch waits
  // for; its error (or an exception, as a status) is theirs.
  void RunInBackground(std::function<Status()> work);
  // Prefetches the tensors' slots in the order their chunks sit in the
  // store's files; false (nothing done) when that order is not worth finding.
  bool PrefetchInFileOrder(const std::vector<uint32_t>& tensors);
  // Prefetches the tensors in batches, in the order given.
  void PrefetchInBatches(const std::vector<uint32_t>& tensors);
  // Claims these EMPTY slots and reserves their memory; on error the claims
  // are undone. Slots others are loading go to busy.
  Result<std::vector<uint32_t>> ClaimSlots(const std::vector<uint32_t>& slots,
                                           std::vector<uint32_t>* busy);
  // Claims the EMPTY slots of these tensors and reserves their memory; on
  // error the claims are undone. Slots others are loading go to busy.
  Result<std::vector<uint32_t>> ClaimAndReserve(const uint32_t* tensors, size_t n,
                                                std::vector<uint32_t>* busy);
  // Undoes a claim: the slot is EMPTY again and waiters wake.
  void Unclaim(uint32_t s);

  Pager* pager_ = nullptr;
  std::shared_ptr<StoreReader> reader_;  // the generation the model came from
  std::shared_ptr<const Manifest> manifest_;
  ModelDigest digest_;
  Layout layout_;
  std::shared_ptr<Segment> seg_;
  mutable std::once_flag by_name_once_;
  mutable NameIndex by_name_;  // built by the first Find
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
      bytes_decoded_{0}, load_ns_{0}, file_order_prefetches_{0};
  std::mutex prefetch_mu_;
  std::condition_variable prefetch_cv_;
  uint64_t prefetch_pending_ = 0;
  Status prefetch_error_;
};

struct StoreMemory {
  uint64_t budget_bytes = 0;
  uint64_t resident_bytes = 0;  // every segment of the store on this host
  uint64_t segments = 0;
};

class Pager {
 public:
  ~Pager();
  static Result<std::unique_ptr<Pager>> Open(const std::string& root, const PagerOptions& opt);

  // Opens "name:tag" or a digest, from the newest generation of the store.
  Result<std::shared_ptr<Model>> OpenModel(std::string_view ref);
  StoreMemory Memory();
  uint64_t budget() const { return budget_; }
  bool check_shared() const { return check_shared_; }
  const std::string& store_id() const { return store_id_; }
  const std::string& root() const { return root_; }
  // The newest generation (opening it if the store changed since last time).
  Result<std::shared_ptr<StoreReader>> CurrentReader();

 private:
  friend class Model;
  Pager() = default;
  // Makes room under the budget for these slots of seg and allocates them.
  Status ReserveSlots(Segment* seg, const std::vector<uint32_t>& slots);
  // Evicts until the store's memory plus `extra` fits the budget (or nothing
  // unpinned is left). Call with the budget lock held; skip is not evicted.
  void EvictToBudgetLocked(uint64_t extra);
  // Takes the budget lock and evicts down to the budget (after pins went away).
  void EnforceBudget();
  // Reaps attachment a of seg if its owner died, under the budget lock (a
  // dead evictor's unit is sorted out then).
  void ReapUnderBudgetLock(Segment* seg, uint32_t a);
  // A decoder from the pool, and back.
  std::unique_ptr<ChunkDecoder> TakeDecoder();
  void GiveDecoder(std::unique_ptr<ChunkDecoder> d);
  // Gives idle scratch memory back to the system.
  void Trim();
  Result<std::shared_ptr<Segment>> GetSegment(const ModelDigest& d, const Layout& layout,
                                              std::string_view manifest,
                                              std::shared_ptr<const Manifest> parsed);
  // This process's attachment to the model's complete segment, attaching if
  // there is one; nullptr if there is none.
  std::shared_ptr<Segment> FindResident(const ModelDigest& d);

  std::string root_;
  std::string store_id_;
  StoreConfig config_;
  uint64_t budget_ = 0;
  bool check_shared_ = false;
  Segment::Options seg_opt_;
  std::unique_ptr<LoaderPool> pool_;
  // The budget lock: an OFD lock on byte 0 of the store's budget file in
  // /dev/shm excludes other processes; OFD locks do not exclude threads
  // sharing the descriptor, so budget_mu_ excludes this process's threads.
  std::mutex budget_mu_;
  UniqueFd budget_fd_;
  // In that file: set while the store is over budget because of pins, so that
  // whoever drops a pin evicts what the pin kept.
  std::atomic<uint32_t>* over_budget_ = nullptr;

  std::mutex mu_;  // guards reader_, segments_, the segment list
  std::shared_ptr<StoreReader> reader_;
  std::map<std::string, std::weak_ptr<Segment>> segments_;      // this process's models
  uint32_t evict_start_ = 0;
  std::vector<std::string> seg_names_;  // ListSegments, cached while /dev/shm is unchanged
  struct timespec shm_mtime_ = {};

  std::mutex decoders_mu_;
  std::vector<std::unique_ptr<ChunkDecoder>> decoders_;
};

}  // namespace pstore
