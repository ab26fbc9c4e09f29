// Ingesting the lazy cache: the writer's step that turns lazily cached models
// whose chunks are all on the host into local models (docs/remote.md, "Lazy
// opening").
//
// For each cached name: if every chunk of its manifest is in the local store
// or in the spool (each spooled frame checked against its key), the spooled
// chunks are written to the store and the manifest and name committed as pull
// commits (StoreWriter::CommitManifest: all or nothing); then the model's
// spool files, its cached manifest and its cached name are removed. A model
// still missing chunks stays in the cache, untouched. A failure takes out the
// chunks this step wrote for that model, so the store is as it was, and the
// cache keeps everything.
//
// Thread-safety: one call at a time per StoreWriter (the writer's lock).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/lazy_cache.h"
#include "store/store.h"

namespace pstore {

struct IngestResult {
  std::vector<std::string> published;  // "name:tag" of the models now local
  std::vector<std::string> partial;    // cached models still missing chunks
  std::vector<std::string> skipped;    // names taken locally by another model
  std::vector<std::string> failed;     // "name:tag: why" of entries that could not be ingested
  uint64_t chunks = 0;                 // spooled chunks written to the store
  int temporaries_removed = 0;
};

Result<IngestResult> IngestLazyCache(StoreWriter* writer);

}  // namespace pstore
