// RemoteTier: one remote of a store (a RADOS pool and namespace) as push and
// pull see it: chunk objects, manifest objects and the names object.
//
// Objects (docs/format.md, "Remote objects"):
//   c.<32 hex>    a chunk frame (RadosChunkSource; remotes written before
//                 packs, read only)
//   k., i., l.    packs, the chunk index and locations (pack_layout.h)
//   m.<32 hex>    a manifest's bytes, named by their digest; written whole by
//                 one exclusive create + write_full, so never seen in part and
//                 never replaced
//   pstore.names  the names: one omap entry per "name:tag", whose value is
//                 the manifest digest's 32 hex digits. Every change is one
//                 atomic operation that compares the entry with what the
//                 caller last read (omap_cmp) and sets or removes it only if
//                 it is unchanged; it is never read, changed and written back.
//
// Ordering that push keeps: packs, index entries, locations, then the
// manifest, then the name; so a name on the remote always points at a
// manifest whose chunks are all there.
//
// Every operation is bounded by the remote's timeout (see RadosOptions).
//
// Thread-safety: all methods may be called from many threads at once.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "store/manifest.h"
#include "store/remote/rados_chunk_source.h"

namespace pstore {

struct RemoteIo;  // store/remote/rados_io.h

class RemoteTier {
 public:
  ~RemoteTier();
  // Connects once (chunks, names and manifests share the connection) and
  // opens the pool. Errors as RadosChunkSource::Open.
  static Result<std::unique_ptr<RemoteTier>> Open(const RadosOptions& options);

  ChunkSource& chunks();
  std::string Describe() const;
  // The pool and namespace, for the code in store/remote/ that works on
  // objects directly (push claims, gc). Valid as long as this tier.
  RemoteIo Io();

  static constexpr const char* kNamesObject = "pstore.names";
  static std::string ManifestObject(const ModelDigest& d) { return "m." + d.Hex(); }

  // "name:tag" -> digest, every name on the remote.
  Result<std::map<std::string, ModelDigest>> ListNames();
  // The digest the name points at, or nullopt.
  Result<std::optional<ModelDigest>> GetName(const std::string& ref);
  // Points ref at digest if it still points at expected (nullopt: if it is
  // absent), atomically. Busy when it was changed in between.
  Status SetName(const std::string& ref, const std::optional<ModelDigest>& expected,
                 const ModelDigest& digest);
  // Removes ref if it still points at expected. Busy when it changed.
  Status RemoveName(const std::string& ref, const ModelDigest& expected);

  // Stores a manifest's bytes under their digest (kept if already there).
  Status PutManifest(const ModelDigest& digest, std::string_view bytes);
  // The manifest's bytes, or nullopt when the object does not exist. The
  // caller checks them against the digest.
  Result<std::optional<std::string>> GetManifest(const ModelDigest& digest);

 private:
  struct Impl;
  explicit RemoteTier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pstore
