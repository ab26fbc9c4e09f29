// ModelHost: what a Model needs from the Pager that opened it, and nothing
// more. The Pager implements it (privately); a Model reaches its pager only
// through it, and the Pager builds a Model only through Model::Open, so
// neither reaches into the other's fields.
//
// Lifetime: the host outlives every Model it opened (docs/pager.md).
// Thread-safety: every method may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "codec/chunk_codec.h"
#include "common/status.h"
#include "pager/loader_pool.h"

namespace pstore {

class Segment;

class ModelHost {
 public:
  // The loader threads that prefetches and loads run on.
  virtual LoaderPool& loaders() = 0;
  // A decoder from the pool (its scratch memory kept warm), and back.
  virtual std::unique_ptr<ChunkDecoder> TakeDecoder() = 0;
  virtual void GiveDecoder(std::unique_ptr<ChunkDecoder> d) = 0;
  // Makes room under the store's budget for these slots of seg (evicting
  // unpinned slots of any of the store's models) and allocates them.
  virtual Status ReserveSlots(Segment* seg, const std::vector<uint32_t>& slots) = 0;
  // Reaps attachment a of seg if its owner died (under the budget lock).
  virtual void ReapUnderBudgetLock(Segment* seg, uint32_t a) = 0;
  // This process dropped a tensor's last pin: if pins kept the store over its
  // budget, evict down to it now.
  virtual void PinDropped() = 0;
  // The store's memory budget in bytes.
  virtual uint64_t budget() const = 0;

 protected:
  ~ModelHost() = default;
};

}  // namespace pstore
