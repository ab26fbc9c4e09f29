// LazyOpener: what the pager asks for a model the local store does not have
// (docs/remote.md, "Lazy opening"). The implementation on a RADOS remote is
// store/remote/lazy_remote.h; the pager knows only this interface.
//
// Open resolves "name:tag" through the host's lazy cache, or else the remote
// (keeping the name and the manifest, checked against its digest, in the
// cache), and returns the model's manifest and the chunk source its loads go
// through: the local store, then the spool, then the remote, each remote
// frame checked against its key and kept in the spool.
//
// Thread-safety: Open may be called from many threads at once; a LazyModel's
// source is thread-safe (store/chunk_source.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "store/chunk_source.h"
#include "store/manifest.h"

namespace pstore {

struct LazyModel {
  ModelDigest digest;
  std::string manifest_bytes;  // checked against digest
  std::shared_ptr<const Manifest> manifest;
  std::shared_ptr<ChunkSource> source;
};

class LazyOpener {
 public:
  virtual ~LazyOpener() = default;
  // nullopt when the remote has no model of that name. local: the local
  // store's source, tried first (may be null); the model's source keeps it.
  virtual Result<std::optional<LazyModel>> Open(std::string_view ref,
                                                std::shared_ptr<ChunkSource> local) = 0;
};

}  // namespace pstore
