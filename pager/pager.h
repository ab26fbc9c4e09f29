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

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "pager/budget_object.h"
#include "pager/loader_pool.h"
#include "pager/model.h"
#include "pager/segment.h"
#include "store/chunk_source.h"
#include "store/lazy_opener.h"
#include "store/store.h"

namespace pstore {

struct PagerOptions {
  uint64_t budget_bytes = 0;  // 0: the store's setting (itself 0: half of RAM)
  int loader_threads = 0;     // 0: max(2, cores); at most kMaxThreads
  // Check each chunk of a tensor in shared memory against its key on every
  // acquire that starts a model handle's hold on the tensor (none of its
  // acquires through that handle unreleased), and each tensor copied out of
  // shared memory: for a process that does not trust the others that may
  // write the store's shared memory.
  bool check_shared = false;
  // Where models' chunks are read from. Null: the store's own, the
  // generation each model was opened from (GenerationChunkSource; its
  // database is opened by the first load). Another source (for example one
  // that fetches from a remote what the store lacks) is read for every model
  // this pager opens: every frame it gives is decoded and checked against
  // its key, and a chunk it lacks is an error naming model, tensor and chunk.
  // Manifests and names still come from the store.
  std::shared_ptr<ChunkSource> chunk_source;
  // Opens the models the store does not have from a remote (store/
  // lazy_opener.h; docs/remote.md, "Lazy opening"). Null: none. A model
  // opened this way reads its chunks through the opener's source (the local
  // store, the host's spool, then the remote), shares its segment with the
  // host's other processes like any model, and is never written to the store
  // by the pager.
  std::shared_ptr<LazyOpener> lazy;
};

struct StoreMemory {
  uint64_t budget_bytes = 0;
  uint64_t resident_bytes = 0;  // every segment of the store on this host
  uint64_t segments = 0;
};

// A Pager is the ModelHost of the models it opens (pager/model_host.h):
// privately, so that only its models reach those methods.
class Pager : private ModelHost {
 public:
  ~Pager();
  static Result<std::unique_ptr<Pager>> Open(const std::string& root, const PagerOptions& opt);

  // Opens "name:tag" or a digest, from the newest generation of the store.
  Result<std::shared_ptr<Model>> OpenModel(std::string_view ref);
  StoreMemory Memory();
  bool check_shared() const { return check_shared_; }
  const std::string& store_id() const { return store_id_; }
  const std::string& root() const { return root_; }
  // The newest generation (opening it if the store changed since last time).
  Result<std::shared_ptr<StoreReader>> CurrentReader() EXCLUDES(mu_);

 private:
  Pager() = default;
  // ModelHost, for the models this pager opens.
  LoaderPool& loaders() override { return *pool_; }
  std::unique_ptr<ChunkDecoder> TakeDecoder() override;
  void GiveDecoder(std::unique_ptr<ChunkDecoder> d) override;
  // Makes room under the budget for these slots of seg and allocates them.
  Status ReserveSlots(Segment* seg, const std::vector<uint32_t>& slots) override
      EXCLUDES(budget_mu_);
  void PinDropped() override EXCLUDES(budget_mu_);
  uint64_t budget() const override { return budget_; }
  // Evicts until the store's memory plus `extra` fits the budget (or nothing
  // unpinned is left). Call with the budget lock held.
  void EvictToBudgetLocked(uint64_t extra) REQUIRES(budget_mu_);
  // Takes the budget lock and evicts down to the budget (after pins went away).
  void EnforceBudget() EXCLUDES(budget_mu_);
  // Reaps attachment a of seg if its owner died, under the budget lock (a
  // dead evictor's unit is sorted out then).
  void ReapUnderBudgetLock(Segment* seg, uint32_t a) override EXCLUDES(budget_mu_);
  // Gives idle scratch memory back to the system.
  void Trim();
  // This process's attachment to the model's segment, creating the segment
  // from layout, the manifest's bytes and its tensor table if needed.
  Result<std::shared_ptr<Segment>> GetSegment(const ModelDigest& d, const Layout& layout,
                                              std::string_view manifest, std::string_view tables);
  // This process's attachment to the model's complete segment, attaching if
  // there is one; nullptr if there is none.
  std::shared_ptr<Segment> FindResident(const ModelDigest& d);
  // Opens ref through lazy_; not_here is the local store's NotFound.
  Result<std::shared_ptr<Model>> OpenLazy(std::string_view ref, std::shared_ptr<StoreReader> reader,
                                          const Status& not_here);
  // Makes the model of parts (its host, source, label and digest set) on its
  // segment: the resident one, or one made from the manifest that
  // manifest_bytes gives.
  Result<std::shared_ptr<Model>> AttachModel(
      ModelParts parts, const std::function<Result<std::string>()>& manifest_bytes);

  std::string root_;
  std::string store_id_;
  StoreConfig config_;
  uint64_t budget_ = 0;
  bool check_shared_ = false;
  std::shared_ptr<ChunkSource> chunk_source_;  // PagerOptions::chunk_source
  std::shared_ptr<LazyOpener> lazy_;           // PagerOptions::lazy
  Segment::Options seg_opt_;
  std::unique_ptr<LoaderPool> pool_;
  // The budget lock: an OFD lock on byte 0 of the store's budget file in
  // /dev/shm excludes other processes; OFD locks do not exclude threads
  // sharing the descriptor, so budget_mu_ excludes this process's threads.
  // Both are taken and let go by a BudgetGuard (pager/budget_lock.h).
  Mutex budget_mu_;
  BudgetObject budget_obj_;
  // In that file: set while the store is over budget because of pins, so that
  // whoever drops a pin evicts what the pin kept.
  std::atomic<uint32_t>* over_budget_ = nullptr;

  Mutex mu_;
  std::shared_ptr<StoreReader> reader_ GUARDED_BY(mu_);
  std::map<std::string, std::weak_ptr<Segment>> segments_ GUARDED_BY(mu_);  // this process's models
  uint32_t evict_start_ GUARDED_BY(budget_mu_) = 0;
  // ListSegments, cached while /dev/shm is unchanged
  std::vector<std::string> seg_names_ GUARDED_BY(mu_);
  struct timespec shm_mtime_ GUARDED_BY(mu_) = {};

  Mutex decoders_mu_;
  std::vector<std::unique_ptr<ChunkDecoder>> decoders_ GUARDED_BY(decoders_mu_);
};

}  // namespace pstore
