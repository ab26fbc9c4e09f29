// Push and pull: moving one model between a local store and a remote tier.
//
// Push (docs/remote.md): asks the remote's chunk index which of the model's
// chunks it lacks, uploads those (checked against their keys first) into
// packs with their index entries, retains the packs the index names for the
// model, writes its locations, then the manifest, then publishes the name
// with a compare-and-set on the names object. Each step starts only when the one before has
// completed, so a push killed or cut off at any moment leaves at most unreferenced objects: a name
// on the remote always points at a whole model.
//
// Pull: reads the name, the manifest (checked against its digest) and its
// locations (chunks read by pack range; without them, by object), asks
// the local store which chunks it lacks, fetches those, checks each against
// its key (a mismatch names model, tensor and chunk, and nothing of it is
// stored), writes them, then commits the manifest and the name as import
// does. A failed pull takes out the chunks it wrote, so the local store is as
// it was; a killed one leaves only unreferenced chunks, which the next pull
// reuses and the next compact removes.
//
// Thread-safety: one call at a time per StoreWriter; Push only reads its view.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "store/parallel.h"
#include "store/remote/remote_tier.h"
#include "store/store.h"

namespace pstore {

struct TransferOptions {
  bool force = false;  // replace a name that points at another model
  size_t batch = 32;   // chunks per batch of remote operations
  // Raw bytes per batch at most (a larger chunk is a batch of its own), so
  // that the frames a worker holds are bounded whatever the chunk size.
  uint64_t batch_bytes = 32ull << 20;
  int threads = 0;      // batches at once (0: two per core)
  ProgressFn progress;  // raw bytes of the model's distinct chunks done / total
};

struct TransferResult {
  ModelDigest digest;
  bool unchanged = false;     // the name already pointed at this model
  uint64_t chunks = 0;        // distinct chunks of the model
  uint64_t raw_bytes = 0;     // their raw bytes
  uint64_t moved_chunks = 0;  // chunks uploaded (push) or fetched (pull)
  uint64_t moved_bytes = 0;   // their frame bytes
  uint64_t manifest_bytes = 0;
  double seconds = 0;
  // Of seconds, the part after the chunks were moved: the manifest and the
  // name (push); flushing, committing and publishing (pull).
  double commit_seconds = 0;
};

// REQUIRES: ref is "name[:tag]" naming a model of the view.
Result<TransferResult> Push(const StoreView& view, const std::string& ref, RemoteTier* remote,
                            const TransferOptions& options);
Result<TransferResult> Pull(StoreWriter* writer, const std::string& ref, RemoteTier* remote,
                            const TransferOptions& options);

// What a pull does once it has the manifest: reads the manifest's chunks the
// local store lacks from `from`, checks each against its key, writes it, and
// commits the model under name as an import does (all of it or nothing).
// Pull passes the remote's packs; a benchmark passes frames held in memory to
// measure the client's share alone. again, if set, gives another frame for a
// chunk whose frame failed its key (or nullopt), checked like the first.
using FrameAgain = std::function<Result<std::optional<std::string>>(const ChunkKey&)>;
Result<TransferResult> PullChunks(StoreWriter* writer, const ModelName& name,
                                  const std::string& manifest, ChunkSource* from,
                                  const TransferOptions& options, FrameAgain again = nullptr);

}  // namespace pstore
