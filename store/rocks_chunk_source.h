// RocksChunkSource: the ChunkSource of a local store's RocksDB database,
// over the store's own read path (the `chunks` column family and the chunk
// records of docs/format.md).
//
// Reads and lookups work on any instance: the writer's (StoreWriter) or a
// reader's published generation (StoreReader). Writes need the writer's
// instance: each frame is decoded and checked against its key first (the
// store holds only checked chunks), then written with its chunk record in
// one batch, so the two reach the database together. A chunk written but not
// referenced by any manifest is removed by the next `pstore compact`;
// readers of generations see written chunks once the writer publishes a new
// generation.
//
// Two writers of one key at once may both write it (the lookup and the batch
// are not one step); both frames are checked against the key, so the chunk
// stays right, only its coding may be the later writer's.
//
// ReadFrames hands out RocksDB's pinned blocks without copying them; and
// PlanSequentialRead orders frames by blob file and offset, from one scan of
// the chunk family's index (StoreView::LocateChunks).
//
// Thread-safety: all methods may be called from many threads at once (as
// RocksDB may); the database must outlive the source.
#pragma once

#include <memory>

#include "store/chunk_source.h"

namespace pstore {

class RocksDb;
class StoreReader;

class RocksChunkSource final : public ChunkSource {
 public:
  // db: the store's database; writable only for the writer's instance.
  RocksChunkSource(RocksDb* db, bool writable, std::string name)
      : db_(db), writable_(writable), name_(std::move(name)) {}

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  // InvalidArgument on a read-only instance; Corruption, naming the chunk,
  // for a frame that does not decode to its key (nothing of the batch is
  // written then).
  Status Write(std::span<const ChunkFrameRef> frames) override;
  Status ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) override;
  Result<std::optional<ReadPlan>> PlanSequentialRead(std::span<const ChunkKey> keys) override;
  std::string Describe() const override { return name_; }

 private:
  RocksDb* db_;
  bool writable_;
  std::string name_;
};

// The chunks of a reader's generation as a read-only ChunkSource. It holds
// the generation (so the writer keeps its files) and opens its database on
// the first read (StoreReader::EnsureDb): a process whose models are all
// resident in shared memory never opens it.
std::shared_ptr<ChunkSource> GenerationChunkSource(std::shared_ptr<const StoreReader> reader);

}  // namespace pstore
