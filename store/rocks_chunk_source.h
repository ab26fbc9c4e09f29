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

#include <atomic>
#include <chrono>
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
  // As ChunkSource's, in runs of at most kDecodeRunBytes of raw chunks
  // (store/chunk_source.h), each read and decoded before the next is read.
  Status ReadDecoded(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                     ChunkDecoder* decoder, FrameBatch* batch, DecodedChunks* result) override;
  Result<std::optional<ReadPlan>> PlanSequentialRead(std::span<const ChunkKey> keys) override;
  // Write for a caller that has decoded each frame and checked it against its
  // key already (a pull, which checks every fetched chunk once, on many
  // threads): the same records, without decoding again, and written as an
  // import writes, without the WAL (so that on a full disk no log has to be
  // replayed before what was written can be taken out again). Every
  // kFlushBytes of such writes, or every kFlushInterval if they come slower,
  // a flush of both families (atomic: frames with their records) is started
  // in the background, so a caller that is killed keeps all but what it
  // wrote in its last moments, and its final flush has little left to do.
  // Nor are the chunks looked up again: the caller, which holds the store's
  // writer, has found that the store lacks them.
  // REQUIRES: each frame decodes to its key and raw_len; the store lacks
  // each key; anything that refers to the chunks reaches disk in the same
  // atomic flush as they or a later one (StoreWriter::CommitModel writes
  // the manifest after them and flushes).
  Status WriteChecked(std::span<const ChunkFrameRef> frames);
  // Starts a flush of both families in the background, as WriteChecked does
  // every kFlushBytes or kFlushInterval.
  void StartFlush();
  // For a test's pause point: the number of table files of the chunks
  // family, once any flush in progress or pending has ended (so a flush
  // WriteChecked asked for shows as a new table once it is installed; at
  // most a minute's wait, and none after a background error).
  uint64_t SettledChunkTables() const;
  static constexpr uint64_t kFlushBytes = 64ull << 20;
  static constexpr std::chrono::milliseconds kFlushInterval{100};
  std::string Describe() const override { return name_; }

 private:
  Status Put(std::span<const ChunkFrameRef> frames, bool check);
  RocksDb* db_;
  bool writable_;
  std::string name_;
  std::atomic<uint64_t> unflushed_{0};  // bytes WriteChecked wrote since its last flush
  // When WriteChecked last asked for a flush (steady_clock ticks).
  std::atomic<int64_t> last_flush_{std::chrono::steady_clock::now().time_since_epoch().count()};
};

// The chunks of a reader's generation as a read-only ChunkSource. It holds
// the generation (so the writer keeps its files) and opens its database on
// the first read (StoreReader::EnsureDb): a process whose models are all
// resident in shared memory never opens it.
std::shared_ptr<ChunkSource> GenerationChunkSource(std::shared_ptr<const StoreReader> reader);

}  // namespace pstore
