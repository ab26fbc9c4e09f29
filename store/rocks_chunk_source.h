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
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/file_util.h"
#include "common/mutex.h"
#include "store/chunk_source.h"

namespace pstore {

class RocksDb;
class StoreReader;

class RocksChunkSource final : public ChunkSource {
 public:
  // How ReadDecoded reads chunks of kDirectReadBytes or more that sit in
  // blob files (below): through RocksDB like the others, or straight from
  // the files. A reader's generation (GenerationChunkSource, the pager's
  // source) reads from the files; export, whose reads RocksDB batches well
  // and whose process keeps nothing after it, reads through RocksDB, and so
  // does the tiered source's local part (it reads frames, ReadFrames, to
  // check them once with what it fetches).
  enum class LargeFrames { kThroughRocksDb, kFromFiles };
  // db: the store's database; writable only for the writer's instance.
  RocksChunkSource(RocksDb* db, bool writable, std::string name,
                   LargeFrames large = LargeFrames::kThroughRocksDb)
      : db_(db), writable_(writable), large_(large), name_(std::move(name)) {}

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  // InvalidArgument on a read-only instance; Corruption, naming the chunk,
  // for a frame that does not decode to its key (nothing of the batch is
  // written then).
  Status Write(std::span<const ChunkFrameRef> frames) override;
  Status ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) override;
  // As ChunkSource's. With LargeFrames::kFromFiles, chunks of
  // kDirectReadBytes or more that sit in blob files are located in the index
  // one by one (StoreView::LocateChunk) and read from their file into the
  // decoder's input_buffer (neighbours in one read), then decoded; the rest,
  // and any such chunk that cannot be read or does not match its key there,
  // are read through RocksDB in runs of at most kDecodeRunBytes of raw
  // chunks (store/chunk_source.h), each read and decoded before the next is
  // read. So a process's loader threads allocate no chunk-sized read
  // buffers of RocksDB's, which glibc would keep in their arenas, nor copy
  // each frame twice (docs/pager.md, "Memory a loader keeps").
  static constexpr uint64_t kDirectReadBytes = 32 << 10;
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
  // ReadDecoded's reads from blob files: decodes what it can into outs
  // (result's entries), and lists in rest the entries left for RocksDB.
  void ReadFromBlobFiles(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                         ChunkDecoder* decoder, DecodedChunks* result, std::vector<size_t>* rest);
  // ReadDecoded's reads through RocksDB of the entries in rest (in order),
  // into result's entries.
  Status ReadRestDecoded(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                         const std::vector<size_t>& rest, ChunkDecoder* decoder, FrameBatch* batch,
                         DecodedChunks* result);
  // Blob file `number` opened for reading, or null if the database has no
  // such file or it cannot be opened. Files are kept open (they never
  // change) up to kMaxOpenBlobFiles a source; past that, each caller gets one
  // of its own, closed after its read. The pager makes a source for each
  // model it opens, so this bounds what an application that holds many
  // models open spends of its file descriptors. The database's blob files
  // are listed once, and again for a number not in the list (a writer's
  // flushes add files), at most once per number.
  std::shared_ptr<const UniqueFd> BlobFile(uint64_t number);
  static constexpr size_t kMaxOpenBlobFiles = 4;
  RocksDb* db_;
  bool writable_;
  LargeFrames large_;
  std::string name_;
  std::atomic<uint64_t> unflushed_{0};  // bytes WriteChecked wrote since its last flush
  // When WriteChecked last asked for a flush (steady_clock ticks).
  std::atomic<int64_t> last_flush_{std::chrono::steady_clock::now().time_since_epoch().count()};
  Mutex files_mu_;
  std::unordered_map<uint64_t, std::string> blob_paths_;                // GUARDED_BY(files_mu_)
  std::unordered_set<uint64_t> unlisted_;                               // GUARDED_BY(files_mu_)
  std::unordered_map<uint64_t, std::shared_ptr<const UniqueFd>> open_;  // GUARDED_BY(files_mu_)
};

// The chunks of a reader's generation as a read-only ChunkSource. It holds
// the generation (so the writer keeps its files) and opens its database on
// the first read (StoreReader::EnsureDb): a process whose models are all
// resident in shared memory never opens it.
std::shared_ptr<ChunkSource> GenerationChunkSource(std::shared_ptr<const StoreReader> reader);

}  // namespace pstore
