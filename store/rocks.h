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
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

constexpr char kChunksCf[] = "chunks";

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
  // (off) level 9 again, as at open (flushes use level 1 either way).
  // compact turns it on around its compaction of the metadata, whose output
  // is kept until the next compact; automatic compactions also write the
  // last level (L1 in a small store), and level 19 would cost them about 20
  // times the CPU.
  Status SetStrongMetaCompression(bool on);

  // Flushes both column families at once and waits. A flush that fails is
  // checked at once for memtables RocksDB will never flush again (rocks.cc,
  // "Memtables RocksDB never flushes again"): then stranded() is true for
  // good, DB::Resume() must not be called (it would wait for them forever),
  // and the database stays stopped; a new instance recovers every committed
  // change (what was flushed, and what was written with the WAL); a model
  // whose commit flush failed is not committed.
  Status Flush(std::string_view context);
  bool stranded() const { return stranded_; }

  // Deletes every OPTIONS file of the writer's database but the newest.
  // RocksDB writes one at each open and each SetOptions (about 11 KB each)
  // and keeps the previous one too, but it never reads them: pstore passes
  // its options to every open. REQUIRES: the writer's instance.
  void RemoveOldOptionsFiles();

 private:
  RocksDb() = default;
  // Sets stranded_ if RocksDB holds memtables no flush will pick again; waits
  // first for a failed flush to end (RocksDB pauses a second after one).
  bool HasStrandedMemtables();

  std::string path_;
  std::atomic<bool> stranded_{false};
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
