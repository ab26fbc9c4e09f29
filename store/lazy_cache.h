// LazyCache: the store's `lazy/` folder, where a host keeps what it fetched
// from a remote for models it opened lazily, without the writer lock
// (docs/remote.md, "Lazy opening"; byte formats in docs/format.md, "The lazy
// cache").
//
//   lazy/manifests/<digest hex>        a cached manifest's bytes
//   lazy/locations/<digest hex>        where its chunks are on the remote
//   lazy/names/<remote>/<hex of ref>   "name:tag<TAB>digest hex\n"
//   lazy/spool/<key hex>               a fetched chunk, checked before it was
//                                      written: magic, raw length, frame
//   lazy/tmp/                          files being written
//
// Every file is written whole to lazy/tmp/ under a name of its own and then
// renamed into place, so a reader never sees one in part, and a process
// killed while writing leaves only a temporary file that nothing reads
// (RemoveStaleTemporaries takes it out). Files are not fsynced: the cache is
// a copy of the remote, and whatever is read from it is checked again (a
// manifest against its digest here; a spooled frame against its key by the
// caller), so a file damaged by a crash is dropped and fetched again.
//
// Thread-safety: all methods may be called from many threads and processes
// at once; two writers of one file write the same bytes and the last rename
// wins.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"
#include "store/manifest.h"
#include "store/store_access.h"

namespace pstore {

struct SpooledFrame {
  uint64_t raw_len = 0;
  std::string frame;
};

struct CachedName {
  std::string remote;
  std::string ref;  // "name:tag"
  ModelDigest digest;
};

class LazyCache {
 public:
  // root: the store's folder. Folders are created on first write with the
  // access's modes and group.
  LazyCache(std::string root, StoreAccess access);

  std::string dir() const { return root_ + "/lazy"; }

  // The manifest with this digest, or nullopt when it is not cached (a file
  // whose bytes do not match the digest is removed and counts as absent).
  Result<std::optional<std::string>> GetManifest(const ModelDigest& digest) const;
  // REQUIRES: Manifest::DigestOf(bytes) == digest.
  Status PutManifest(const ModelDigest& digest, std::string_view bytes) const;
  Status RemoveManifest(const ModelDigest& digest) const;

  // The bytes of a model's chunk locations on its remote (a remote's
  // "l.<digest>" object, checked by its reader), or nullopt.
  Result<std::optional<std::string>> GetLocations(const ModelDigest& digest) const;
  Status PutLocations(const ModelDigest& digest, std::string_view bytes) const;

  Result<std::optional<ModelDigest>> GetName(const std::string& remote,
                                             const std::string& ref) const;
  Status PutName(const std::string& remote, const std::string& ref,
                 const ModelDigest& digest) const;
  Status RemoveName(const std::string& remote, const std::string& ref) const;
  // Every cached name of every remote (unreadable entries are skipped).
  std::vector<CachedName> ListNames() const;

  // The spooled frame of key, unchecked, or nullopt. A file too short to
  // hold its header is removed and counts as absent.
  Result<std::optional<SpooledFrame>> GetFrame(const ChunkKey& key) const;
  // REQUIRES: frame decodes to key (the caller checked it).
  Status PutFrame(const ChunkKey& key, uint64_t raw_len, std::string_view frame) const;
  Status RemoveFrame(const ChunkKey& key) const;
  // Whether a spool file for key exists (its contents unchecked).
  bool HasFrame(const ChunkKey& key) const;
  std::vector<ChunkKey> ListSpool() const;

  // Removes files in lazy/tmp/ last changed more than `age` ago (left by
  // processes that were killed while writing). Returns how many.
  int RemoveStaleTemporaries(std::chrono::seconds age) const;

 private:
  // Writes data to path through a temporary file of its own, then renames it.
  Status WriteWhole(const std::string& path, std::string_view data) const;
  Status MakeDir(const std::string& path) const;

  std::string root_;
  StoreAccess access_;
};

}  // namespace pstore
