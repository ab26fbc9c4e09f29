// The writing side of packs (store/remote/pack_layout.h), for push: which
// chunks the remote has (the chunk index, and on remotes written before
// packs their own objects), packs of the chunks it lacks with their index
// entries, and the model's locations object.
//
// Order kept (docs/remote.md, "Packs"): a pack is written whole before any
// index entry names it; entries are set only where absent (the first writer
// of a key wins), or replaced when the pack they name was found missing
// (compared with the old value); locations are built from the index after
// the push's own entries are set, and every pack they name is retained
// (gc mark read and cleared) before the locations are written.
//
// Thread-safety: PackWriter::Add may be called from many threads at once;
// the free functions from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "store/chunk_source.h"
#include "store/remote/pack_layout.h"

namespace pstore {

class PushClaim;

// Packs hold up to this many bytes of frames (a chunk larger goes alone).
inline constexpr size_t kPackBytes = 16 << 20;
// The names object's xattr that says the remote was first written by a
// pstore with packs, so holds no chunk objects c.<key> to dedup against.
inline constexpr const char* kLayoutXattr = "pstore.layout";

using IndexMap = std::unordered_map<ChunkKey, ChunkLocation, ChunkKeyHasher>;

// Whether the remote may hold chunk objects of a pstore from before packs
// (its names object exists without kLayoutXattr). On a remote with no names
// object yet it creates one carrying the xattr and answers false.
Result<bool> MayHoldChunkObjects(const RemoteIo& io);

// The index entries of keys (those the index has), one omap read per shard
// touched, all at once. An entry that does not parse is Corruption.
Result<IndexMap> LookupIndex(const RemoteIo& io, std::span<const ChunkKey> keys);

// Sets index entries: each only where absent, or, for a key in `replace`,
// only where it still holds that old value. Entries someone else set first
// are kept (the caller reads the index again for what counts).
Status SetIndexEntries(const RemoteIo& io, const IndexMap& entries, const IndexMap& replace);

// Writes the locations object l.<digest>, right after renewing the push's
// claim (Busy if a gc withdrew it). Locations already there are never
// replaced while valid: if they parse and every object they name exists
// (each retained, as is l.<digest>), they are kept and ours dropped; only
// locations naming a missing object, or damaged ones, are replaced, guarded
// by the version read so a concurrent writer's are not overwritten.
Status PutLocationsObject(const RemoteIo& io, PushClaim* claim, const ModelDigest& digest,
                          const std::string& bytes);

// Fills packs from checked frames and writes each when full (Flush: the
// last), then its index entries.
class PackWriter {
 public:
  // replace: old index values of keys whose packs were found missing.
  PackWriter(RemoteIo io, IndexMap replace = {})
      : io_(std::move(io)), replace_(std::move(replace)) {}
  Status Add(std::span<const ChunkFrameRef> frames) EXCLUDES(mu_);
  Status Flush() EXCLUDES(mu_);

 private:
  struct Pending {
    std::string bytes;
    std::vector<std::pair<ChunkKey, ChunkLocation>> entries;
  };
  Status Write(Pending p);

  RemoteIo io_;
  const IndexMap replace_;
  Mutex mu_;
  Pending open_ GUARDED_BY(mu_);
};

}  // namespace pstore
