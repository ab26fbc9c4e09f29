#include "store/rocks.h"

#include <rocksdb/env.h>
#include <rocksdb/listener.h>
#include <rocksdb/table.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "store/rocks_crc32c.h"

namespace pstore {
namespace {

// Discards RocksDB's info log: read-only instances must not write into a
// generation's folder, which other readers share.
class NullLogger : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char*, va_list) override {}
};

// The writer's info log, db/LOG (the previous session's in db/LOG.old).
// RocksDB's own file logger must not be used: after one failed write (a full
// disk) its next write trips an assertion in Debian's librocksdb, so a full
// disk aborted compactions and then every later open of the store. This one
// drops what it cannot write. It keeps warnings and errors only: RocksDB's
// informational lines (every option at each open, flush and compaction
// statistics) took about 50 KB a session, more than the metadata of all the
// models of a small store. The file is made at the first line written, so a
// session without warnings leaves no log (each file takes a disk block), and
// the warnings every checkpoint gives about nested file-deletion counters are
// left out.
class FileLogger : public rocksdb::Logger {
 public:
  explicit FileLogger(std::string path)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), path_(std::move(path)) {}
  ~FileLogger() override {
    if (file_) std::fclose(file_);
  }
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (std::strstr(format, "] File Deletions ") != nullptr) return;
    std::call_once(opened_, [this] {
      std::rename(path_.c_str(), (path_ + ".old").c_str());
      file_ = std::fopen(path_.c_str(), "we");
    });
    if (!file_) return;
    struct timeval tv;
    ::gettimeofday(&tv, nullptr);
    struct tm tm;
    ::localtime_r(&tv.tv_sec, &tm);
    char line[4096];
    int n = std::snprintf(line, sizeof(line), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld ",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                          tm.tm_sec, long(tv.tv_usec));
    va_list copy;
    va_copy(copy, ap);
    int m = std::vsnprintf(line + n, sizeof(line) - size_t(n) - 1, format, copy);
    va_end(copy);
    size_t len = std::min(sizeof(line) - 2, size_t(n) + size_t(std::max(m, 0)));
    line[len++] = '\n';
    // One fwrite per line keeps lines from different threads whole; errors
    // (ENOSPC) are ignored on purpose.
    std::fwrite(line, 1, len, file_);
    std::fflush(file_);
  }

 private:
  const std::string path_;
  std::once_flag opened_;
  FILE* file_ = nullptr;
};

// Keeps RocksDB from recovering on its own from a background error (a flush
// that found the disk full). Its recovery thread would wait for free space of
// the largest write buffer (128 MiB for the chunks) and resume whenever that
// comes, in the middle of whatever the writer does (a checkpoint); while it
// waits, the writer's own DB::Resume() is refused as busy, so releasing the
// reserve file could not help. With this listener the database stays stopped
// until the writer calls Resume() itself (store_dir.cc, before a publish).
class ManualErrorRecovery : public rocksdb::EventListener {
 public:
  const char* Name() const override { return "pstore.ManualErrorRecovery"; }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

// RocksDB opens a database's table files on max_file_opening_threads
// threads, which it starts and joins for each column family at every open,
// whatever the number of tables (16 by default: 30 threads for the two
// families). A store has a few tables per family, so most of those threads
// cost more than they save (about 5 ms of each `pstore` command on a 2-core
// machine: docs/benchmarks.md, "Opening a store"); a few are kept for the
// writer, which opens every table at once, on a cold cache or a slow disk.
constexpr int kFileOpeningThreads = 4;

// The metadata's compression: a flush writes its table at a fast level, since
// a commit's flush waits for it (docs/benchmarks.md, "The metadata flushed at
// zstd level 1"); compactions into the last non-empty level, where most of it
// stays, write it at level 9, and `compact` at kStrongMetaLevel
// (SetStrongMetaCompression). Tables stay at level 1 while they are in L0 (up
// to three before a compaction), and, in a store whose metadata has outgrown
// L1 (256 MB), in L1 until the next `compact`.
constexpr int kMetaFlushLevel = 1;
constexpr int kMetaLastLevel = 9;
constexpr int kStrongMetaLevel = 19;

rocksdb::ColumnFamilyOptions MetaOptions() {
  rocksdb::ColumnFamilyOptions o;
  o.compression = rocksdb::kZSTD;
  o.compression_opts.level = kMetaFlushLevel;
  o.bottommost_compression = rocksdb::kZSTD;
  o.bottommost_compression_opts.level = kMetaLastLevel;
  o.bottommost_compression_opts.enabled = true;
  o.write_buffer_size = 16 << 20;
  rocksdb::BlockBasedTableOptions t;
  t.block_size = 16 << 10;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

rocksdb::ColumnFamilyOptions ChunkOptions() {
  rocksdb::ColumnFamilyOptions o;
  o.compression = rocksdb::kNoCompression;
  o.bottommost_compression = rocksdb::kNoCompression;
  o.enable_blob_files = true;
  o.min_blob_size = 4096;
  o.blob_file_size = 256ull << 20;
  o.blob_compression_type = rocksdb::kNoCompression;
  o.enable_blob_garbage_collection = false;  // only during compact (SetBlobGc)
  o.write_buffer_size = 128ull << 20;
  o.max_write_buffer_number = 3;
  o.target_file_size_base = 64ull << 20;
  rocksdb::BlockBasedTableOptions t;
  t.block_size = 16 << 10;
  // No block cache for the chunks: their frames are read once into the
  // pager's segment or a file, never twice from a cache, and a cache would
  // keep in every reading process the table blocks that locating chunks in
  // the index passes over (StoreView::LocateChunk(s) read with RocksDB's
  // default options, which fill the cache).
  t.no_block_cache = true;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

std::vector<rocksdb::ColumnFamilyDescriptor> Descriptors() {
  return {{rocksdb::kDefaultColumnFamilyName, MetaOptions()}, {kChunksCf, ChunkOptions()}};
}

}  // namespace

Status FromRocks(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(context) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) return Status::NoSpace(msg);
  // RocksDB refuses a compaction whose output may not fit on the disk.
  if (s.IsCompactionTooLarge())
    return Status::NoSpace(std::string(context) + ": not enough free disk space (" + s.ToString() +
                           ")");
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Status::Busy(msg);
  if (s.IsInvalidArgument()) return Status::InvalidArgument(msg);
  if (s.IsNotSupported()) return Status::Unsupported(msg);
  return Status::IOError(msg);
}

rocksdb::ReadOptions ChunkReadOptions() {
  rocksdb::ReadOptions r;
  r.verify_checksums = false;
  r.fill_cache = false;
  return r;
}

Status ChunkReadError(const rocksdb::Status& s, const ChunkKey& key) {
  if (s.IsPathNotFound() ||
      (s.IsIOError() && s.ToString().find("No such file") != std::string::npos))
    return Status::Corruption("chunk " + key.Hex() + ": a file of the store is missing (" +
                              s.ToString() + "); run `pstore verify` to see every model affected");
  return FromRocks(s, "read chunk " + key.Hex());
}

RocksDb::~RocksDb() {
  if (db_) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }
}

Status RocksDb::Flush(std::string_view context) {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  Status s = FromRocks(db_->Flush(fo, {meta_, chunks_}), context);
  // Checked at once, while the only memtables that can wait are this
  // flush's: a later flush request would add one that is pending.
  if (!s.ok()) HasStrandedMemtables();
  return s;
}

// Memtables RocksDB never flushes again. RocksDB 7.8 (Debian 12's) leaves an
// immutable memtable marked as being flushed for good when an atomic flush
// has written its tables but finds, before installing them, a background
// error that another job set meanwhile (a compaction that found the disk
// full): it neither installs the tables nor gives the memtables back (fixed
// in RocksDB 8.7). No flush picks them again. A plain flush or a shutdown
// then returns the error (the failed flush stopped the database), but
// DB::Resume() flushes as part of the recovery and waits for them forever,
// with every background thread idle. Such memtables are told apart from
// ones a failed flush gave back by RocksDB's own counters: with no flush
// running, a memtable given back is pending a flush, a stranded one is not.
bool RocksDb::HasStrandedMemtables() {
  if (stranded_) return true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  uint64_t n = 0;
  while (db_->GetIntProperty("rocksdb.num-running-flushes", &n) && n > 0 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (auto* cf : {meta_, chunks_}) {
    uint64_t waiting = 0, pending = 0;
    if (db_->GetIntProperty(cf, "rocksdb.num-immutable-mem-table", &waiting) && waiting > 0 &&
        db_->GetIntProperty(cf, "rocksdb.mem-table-flush-pending", &pending) && pending == 0)
      stranded_ = true;
  }
  return stranded_;
}

Result<std::unique_ptr<RocksDb>> RocksDb::OpenPrimary(const std::string& path, rocksdb::Env* env) {
  // Which CRC32C RocksDB's checksums use is settled here, once, rather than
  // on the first record a background thread writes (store/rocks_crc32c.h).
  RocksCrc32cImplementation();
  rocksdb::DBOptions o;
  if (env != nullptr) o.env = env;
  o.listeners.push_back(std::make_shared<ManualErrorRecovery>());
  o.max_file_opening_threads = kFileOpeningThreads;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.atomic_flush = true;  // chunks and their records reach disk together
  o.max_background_jobs = 2;
  o.max_manifest_file_size = 16 << 20;
  o.allow_fallocate = false;  // so disk usage (compact's report, a full disk) reflects real data
  // Hand a table's or blob file's data to the disk every 8 MiB as a flush
  // writes it (sync_file_range, which does not wait), so that the sync that
  // ends the flush waits for the tail only and not for a whole 128 MiB
  // memtable's blob file: that sync is on the path of every import and pull.
  o.bytes_per_sync = 8 << 20;
  // The log's folder: RocksDB would create it only after opening the log.
  ::mkdir(path.c_str(), 0755);
  o.info_log = std::make_shared<FileLogger>(path + "/LOG");
  std::unique_ptr<RocksDb> r(new RocksDb);
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(o, path, Descriptors(), &r->handles_, &db);
  if (!s.ok()) return FromRocks(s, "cannot open the store's database at " + path);
  r->db_.reset(db);
  r->path_ = path;
  r->RemoveOldOptionsFiles();
  r->meta_ = r->handles_[0];
  r->chunks_ = r->handles_[1];
  return r;
}

Result<std::unique_ptr<RocksDb>> RocksDb::OpenReadOnly(const std::string& path) {
  RocksCrc32cImplementation();  // as in OpenPrimary
  rocksdb::DBOptions o;
  o.info_log = std::make_shared<NullLogger>();
  o.max_open_files = 256;  // tables open on first use: opening a generation stays cheap
  o.max_file_opening_threads = kFileOpeningThreads;
  // Chunks of a model sit together in blob files and loads read them in
  // order: let the kernel read ahead (RocksDB advises random access by default).
  o.advise_random_on_open = false;
  std::unique_ptr<RocksDb> r(new RocksDb);
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(o, path, Descriptors(), &r->handles_, &db);
  if (!s.ok()) return FromRocks(s, "cannot open store generation " + path);
  r->db_.reset(db);
  r->meta_ = r->handles_[0];
  r->chunks_ = r->handles_[1];
  return r;
}

void RocksDb::RemoveOldOptionsFiles() {
  const std::string& path = path_;
  if (path.empty()) return;  // a reader's instance
  std::vector<std::string> names;
  rocksdb::Env* env = db_->GetEnv();  // the database's own, as its files were written through it
  if (!env->GetChildren(path, &names).ok()) return;
  std::string newest;
  uint64_t newest_n = 0;
  std::vector<std::string> options;
  for (const auto& n : names) {
    if (n.compare(0, 8, "OPTIONS-") != 0 || n.find_first_not_of("0123456789", 8) != n.npos)
      continue;
    options.push_back(n);
    uint64_t num = std::strtoull(n.c_str() + 8, nullptr, 10);
    if (newest.empty() || num > newest_n) newest = n, newest_n = num;
  }
  for (const auto& n : options)
    if (n != newest) env->DeleteFile(path + "/" + n);  // best effort: an old file only costs space
}

Status RocksDb::SetStrongMetaCompression(bool on) {
  std::unordered_map<std::string, std::string> opts = {
      {"bottommost_compression", "kZSTD"},
      {"bottommost_compression_opts",
       "{level=" + std::to_string(on ? kStrongMetaLevel : kMetaLastLevel) + ";enabled=true}"},
  };
  return FromRocks(db_->SetOptions(meta_, opts), "set the metadata's compression options");
}

Status RocksDb::SetBlobGc(bool on, double age_cutoff) {
  std::unordered_map<std::string, std::string> opts = {
      {"enable_blob_garbage_collection", on ? "true" : "false"},
      {"blob_garbage_collection_age_cutoff", on ? std::to_string(age_cutoff) : "0.25"},
      {"blob_garbage_collection_force_threshold", on ? "0.0" : "1.0"},
  };
  return FromRocks(db_->SetOptions(chunks_, opts), "set blob GC options");
}

}  // namespace pstore
