// pstore's use of RocksDB: column families, options, and opening a database
// as the writer (primary) or as a reader of a published generation.
//
// Column families:
//   "chunks"   key: 16-byte chunk key; value: chunk frame. Values of 4 KiB or
//              more live in integrated blob files so compactions do not
//              rewrite them; RocksDB compression is off (frames are coded).
//   "default"  metadata: manifests, names, per-chunk records (store/keys.h).
//
// Thread-safety: a RocksDb may be used from many threads at once, as
// rocksdb::DB may.
#pragma once

#include <rocksdb/db.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

constexpr char kChunksCf[] = "chunks";

struct BackgroundErrors;

// A RocksDB instance with pstore's two column families.
class RocksDb {
 public:
  ~RocksDb();
  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;

  // The writer's instance, created if missing. RocksDB does not recover from
  // a background error (a full disk) by itself: the writer calls
  // db()->Resume(). env: RocksDB's files go through it (tests put one that
  // injects faults here); nullptr is RocksDB's default.
  static Result<std::unique_ptr<RocksDb>> OpenPrimary(const std::string& path,
                                                      rocksdb::Env* env = nullptr);
  // A read-only instance of a published generation; writes nothing to path.
  static Result<std::unique_ptr<RocksDb>> OpenReadOnly(const std::string& path);

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  rocksdb::ColumnFamilyHandle* chunks() const { return chunks_; }

  // Turns RocksDB's blob garbage collection on (the oldest age_cutoff
  // fraction of blob files eligible) or back off; compact uses it to rewrite
  // blob files that hold dead chunks.
  Status SetBlobGc(bool on, double age_cutoff = 1.0);

  // Makes compactions into the metadata's last level use zstd level 19, or
  // (off) the level of every other metadata table again. compact turns it on
  // around its compaction of the metadata, whose output is kept until the
  // next compact; automatic compactions also write the last level (L1 in a
  // small store), and level 19 would cost them about 20 times the CPU.
  Status SetStrongMetaCompression(bool on);

  // Runs call, a RocksDB call that may wait for a flush (Flush, Resume,
  // CompactRange, a checkpoint that flushes), and converts its status with
  // context as FromRocks does. RocksDB 7.8 can stop flushing for good (rocks.cc,
  // "Flushes that never end"); the call would then wait forever. When nothing
  // has flushed or compacted for kStallSeconds while memtables wait, the
  // instance's background work is stopped, which makes the call return; the
  // status says what happened (NoSpace when a full disk set it off), and this
  // and every later Run of the instance fail. Drop the instance: the next open
  // recovers everything committed from the write-ahead log.
  Status Run(std::string_view context, const std::function<rocksdb::Status()>& call);
  static constexpr int kStallSeconds = 5;
  // Flushes both column families at once and waits, through Run.
  Status Flush(std::string_view context);

  // Deletes every OPTIONS file of the writer's database but the newest.
  // RocksDB writes one at each open and each SetOptions (about 11 KB each)
  // and keeps the previous one too, but it never reads them: pstore passes
  // its options to every open. REQUIRES: the writer's instance.
  void RemoveOldOptionsFiles();

 private:
  RocksDb() = default;
  // call() under the watchdog of Run; sets stalled_ if it had to stop.
  rocksdb::Status Guarded(const std::function<rocksdb::Status()>& call);
  // Whether a flush runs, or a compaction without new background errors
  // since there were errors_before, or no memtable waits to be flushed.
  bool MakingProgress(uint64_t errors_before) const;
  uint64_t BackgroundErrorCount() const;
  Status StalledStatus(std::string_view context) const;

  std::string path_;
  std::shared_ptr<BackgroundErrors> errors_;  // the writer's only
  std::atomic<bool> stalled_{false};
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* chunks_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

// Converts a RocksDB status, prefixing `context`.
Status FromRocks(const rocksdb::Status& s, std::string_view context);

// Read options for chunk reads: RocksDB's own block and blob checksums are
// skipped because every decoded chunk is checked against its XXH3-128 key,
// which covers the same bytes end to end (and costs far less).
rocksdb::ReadOptions ChunkReadOptions();

// The error of a chunk read that failed (not NotFound): a chunk whose file
// is gone is damage to the store (Corruption, saying to run verify), not an
// I/O error.
Status ChunkReadError(const rocksdb::Status& s, const ChunkKey& key);

}  // namespace pstore
