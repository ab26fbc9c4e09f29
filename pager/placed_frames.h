// The frames of a bulk load where the read plan placed them: the plan's blob
// files mapped read-only, and for each slot loaded from one chunk, its frame
// in those mappings. The loaders decode such a frame straight from the OS
// cache, without a RocksDB lookup or a copy into a read buffer
// (docs/pager.md, "Cold loads"). A place is a hint, as the plan is: a frame
// is checked against its key like every other, and one that cannot be read
// there or does not match is read through the chunk source instead.
//
// Thread-safety: built by one thread, then immutable; Frame and Populate may
// be called from any thread while it lives.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "pager/shm_object.h"
#include "store/chunk_source.h"

namespace pstore {

class PlacedFrames {
 public:
  // The places of plan (made for keys of slots[i], i in plan order) of the
  // slots in `single` (slots of one piece), among nslots slots. Files that
  // cannot be mapped and places outside their file are left unplaced.
  PlacedFrames(const ReadPlan& plan, const std::vector<uint32_t>& slots,
               const std::vector<bool>& single, size_t nslots);

  // Slot s's frame in a mapping; empty when it has no place.
  std::string_view Frame(uint32_t s) const {
    return s < frames_.size() ? frames_[s] : std::string_view();
  }
  bool empty() const { return placed_ == 0; }

  // Reads the frames' pages into the mappings (one call for neighbours),
  // so that decoding them does not fault; those that could not be read (an
  // I/O error) are made empty, and so read through the source.
  static void Populate(std::vector<std::string_view>* frames);

 private:
  std::vector<bip::mapped_region> maps_;
  std::vector<std::string_view> frames_;  // by slot
  size_t placed_ = 0;
};

}  // namespace pstore
