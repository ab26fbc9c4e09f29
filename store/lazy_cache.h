// LazyCache: the store's `lazy/` folder, where a host keeps what it fetched
// from a remote for models it opened lazily, without the writer lock
// (docs/remote.md, "Lazy opening"; byte formats in docs/format.md, "The lazy
// cache").
//
//   lazy/manifests/<digest hex>        a cached manifest's bytes
//   lazy/locations/<remote>/<digest hex>
//                                      where its chunks are on that remote
//                                      (pack ids are the remote's own), or
//                                      the marker "none" for a model pushed
//                                      before packs
//   lazy/names/<remote>/<hex of ref>   "name:tag<TAB>digest hex\n"
//   lazy/spool/<key hex>               a fetched chunk, checked before it was
//                                      written: magic, raw length, frame
//   lazy/tmp/                          files being written
//
// Every file is written whole to lazy/tmp/ under a name of its own and then
// renamed into place, so a reader never sees one in part, and a process
// killed while writing leaves only a temporary file that nothing reads
// (RemoveStaleTemporaries takes it out). Manifests, locations and names are
// fsynced (the file, then its folder, and a folder created for it in its
// parent) before the next is written, and a removed manifest's folder is
// synced before its locations are removed, so after a power loss a cached
// manifest still has the locations written before it. Should one be found
// without them nonetheless (a file system that lost a synced entry, or a
// cache an older pstore wrote), the reader takes them as unknown and reads
// them from the remote on the first read that goes there. Spooled frames are
// not synced: whatever is read from the cache is checked again (a manifest
// against its digest here; locations against their check digest and a
// spooled frame against its key by the caller), so a file damaged by a crash
// is dropped and fetched again.
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
  // Removes the manifest, then its locations for every remote (so a
  // process killed in between leaves locations without a manifest, which
  // nothing reads, never a manifest without its locations).
  Status RemoveManifest(const ModelDigest& digest) const;

  // What the cache knows of a model's chunk locations on one remote.
  struct CachedLocations {
    enum Kind { kUnknown, kNone, kBytes } kind = kUnknown;
    // kBytes: the remote's "l.<digest>" object, checked by its reader.
    std::string bytes;
  };
  // kUnknown when nothing is cached for (remote, digest) (never fetched, or
  // cached by a pstore that kept locations per digest only): the caller
  // reads "l.<digest>" when it first goes to the remote. kNone: the remote has no locations for the
  // model (pushed before packs: one object per chunk).
  Result<CachedLocations> GetLocations(const std::string& remote, const ModelDigest& digest) const;
  // Caches the remote's locations object, or (bytes == nullopt) the marker
  // that it has none.
  Status PutLocations(const std::string& remote, const ModelDigest& digest,
                      const std::optional<std::string_view>& bytes) const;
  // Drops what is cached for (remote, digest), e.g. bytes that did not parse.
  Status RemoveLocations(const std::string& remote, const ModelDigest& digest) const;
  // The path of the file for (remote, digest), for messages.
  std::string LocationsPath(const std::string& remote, const ModelDigest& digest) const;

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
  // Writes data to path through a temporary file of its own, then renames
  // it; durable: fsyncs the file before and its folder after the rename.
  Status WriteWhole(const std::string& path, std::string_view data, bool durable = false) const;
  // Creates path if it is not there; durable: syncs its parent after
  // creating it.
  Status MakeDir(const std::string& path, bool durable = false) const;

  std::string root_;
  StoreAccess access_;
};

}  // namespace pstore
