// Packs: the remote layout that stores many chunks in one RADOS object
// (docs/remote.md, "Packs"; byte formats in docs/format.md, "Remote
// objects").
//
//   k.<32 hex>   a pack: chunk frames concatenated, written whole by one
//                exclusive create + write_full, never changed
//   i.<2 hex>    a shard of the chunk index: omap key = a chunk key's 32 hex
//                digits (the shard is its first byte), value = where its
//                frame is (IndexValue). The first entry set for a key wins.
//   l.<32 hex>   a model's locations, named by its manifest digest: where
//                each distinct chunk of the manifest is (a range of a pack,
//                or its own object c.<key> on remotes written before packs)
//
// This file holds the names, the byte formats and a reader that reads
// chunks by their locations; writing them is push's (pack_push.h).
//
// Thread-safety: plain values; LocatedChunkSource may be used from many
// threads at once (its locations are immutable, librados' IoCtx is
// thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/chunk_source.h"
#include "store/manifest.h"
#include "store/remote/rados_io.h"

namespace pstore {

using PackId = ChunkKey;  // 16 random bytes

// Where one chunk's frame is: a byte range of a pack, or (own) the chunk's
// own object c.<key>.
struct ChunkLocation {
  bool own = false;
  PackId pack;
  uint64_t offset = 0;
  uint32_t length = 0;
  bool operator==(const ChunkLocation&) const = default;
};

inline std::string PackObject(const PackId& id) {
  return "k." + id.Hex();
}
inline std::string LocationsObject(const ModelDigest& d) {
  return "l." + d.Hex();
}
// The index shard that holds key's entry: "i." + the key's first byte.
std::string IndexShard(const ChunkKey& key);
PackId NewPackId();

// An index entry's value: 16 bytes of pack id, offset (64 bits) and length
// (32 bits), little-endian; nullopt if value is not one.
std::string EncodeIndexValue(const ChunkLocation& loc);
std::optional<ChunkLocation> DecodeIndexValue(std::string_view value);

// A model's locations (the l.<digest> object).
class Locations {
 public:
  void Set(const ChunkKey& key, const ChunkLocation& loc) { map_[key] = loc; }
  const ChunkLocation* Find(const ChunkKey& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }
  size_t size() const { return map_.size(); }
  const std::unordered_map<ChunkKey, ChunkLocation, ChunkKeyHasher>& map() const { return map_; }
  // The distinct packs named, in no particular order.
  std::vector<PackId> Packs() const;

  // Bytes, in key order (so two pushes building the same locations write
  // the same bytes).
  std::string Serialize() const;
  // Corruption (naming `what`) if bytes are not a locations object whose
  // check digest matches.
  static Result<Locations> Parse(std::string_view bytes, const std::string& what);

 private:
  std::unordered_map<ChunkKey, ChunkLocation, ChunkKeyHasher> map_;
};

// OK if no chunk of manifest m is given a frame longer than a chunk of its
// raw length encodes to (MaxFrameBytes), else Corruption naming `what` (the
// locations object), the tensor, the chunk and the range. What a reader
// holds is then bounded by the raw bytes it asks for, whatever the object
// says.
Status CheckFrameLengths(const Locations& locations, const Manifest& m, const std::string& what);

// Reads a model's locations object: nullopt when there is none (a model
// pushed before packs: every chunk is its own object).
Result<std::optional<Locations>> ReadLocations(const RemoteIo& io, const ModelDigest& digest);
// The error for a model's locations object that failed its check (st, from
// Locations::Parse or ReadLocations): Corruption naming model, the object,
// outcome (what became of the operation) and the remedy.
Status DamagedLocations(const Status& st, const std::string& model, std::string_view outcome);

// The chunks of a model read by their locations: a batch's chunks in one
// pack are read by one operation of coalesced byte ranges, one operation per
// pack, every pack of the batch at once (up to max_in_flight); a chunk with
// no location, or located in its own object, is read from c.<key>. A chunk
// whose pack is missing is read once more from where the chunk index says it
// is now, if that differs (the pack removed and the chunk pushed again by a
// push of any model); if it is not there either it is missing (nullopt). Frames are
// returned unchecked: the caller checks each against its key, so a wrong
// location shows as damage, named by Locate ("k.<id> bytes A-B"), and may
// ask ReadElsewhere for a frame that failed its check.
class LocatedChunkSource final : public ChunkSource {
 public:
  // locations_object: the object the locations were read from (l.<digest>),
  // for messages.
  LocatedChunkSource(RemoteIo io, std::shared_ptr<const Locations> locations,
                     std::string locations_object = "its locations object")
      : io_(std::move(io)),
        locations_(std::move(locations)),
        locations_object_(std::move(locations_object)) {}

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  Status Write(std::span<const ChunkFrameRef> frames) override;
  std::string Describe() const override { return io_.where; }
  std::string Locate(const ChunkKey& key) const override;

  // The frames of keys read from where the chunk index says they are, for
  // keys whose index entry names another place than their locations (a
  // pack found missing or damaged, its chunks pushed again into another);
  // nullopt for the others. Unchecked, like Read's.
  Result<std::vector<std::optional<std::string>>> ReadElsewhere(std::span<const ChunkKey> keys);

 private:
  // Reads keys by `locations` (the model's, or where the index moved them).
  Result<std::vector<std::optional<std::string>>> ReadAt(std::span<const ChunkKey> keys,
                                                         const Locations* locations);

  RemoteIo io_;
  std::shared_ptr<const Locations> locations_;
  std::string locations_object_;
};

}  // namespace pstore
