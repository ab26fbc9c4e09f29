#include "store/rocks.h"

#include <rocksdb/env.h>
#include <rocksdb/table.h>

namespace pstore {
namespace {

// Discards RocksDB's info log: read-only instances must not write into a
// generation's folder, which other readers share.
class NullLogger : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char*, va_list) override {}
};

rocksdb::ColumnFamilyOptions MetaOptions() {
  rocksdb::ColumnFamilyOptions o;
  o.compression = rocksdb::kNoCompression;
  o.write_buffer_size = 16 << 20;
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

RocksDb::~RocksDb() {
  if (db_) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }
}

Result<std::unique_ptr<RocksDb>> RocksDb::OpenPrimary(const std::string& path) {
  rocksdb::DBOptions o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.atomic_flush = true;  // chunks and their records reach disk together
  o.max_background_jobs = 2;
  o.keep_log_file_num = 4;
  o.max_manifest_file_size = 16 << 20;
  o.allow_fallocate = false;  // so disk usage (compact's report, a full disk) reflects real data
  std::unique_ptr<RocksDb> r(new RocksDb);
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(o, path, Descriptors(), &r->handles_, &db);
  if (!s.ok()) return FromRocks(s, "cannot open the store's database at " + path);
  r->db_.reset(db);
  r->meta_ = r->handles_[0];
  r->chunks_ = r->handles_[1];
  return r;
}

Result<std::unique_ptr<RocksDb>> RocksDb::OpenReadOnly(const std::string& path) {
  rocksdb::DBOptions o;
  o.info_log = std::make_shared<NullLogger>();
  o.max_open_files = -1;
  std::unique_ptr<RocksDb> r(new RocksDb);
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(o, path, Descriptors(), &r->handles_, &db);
  if (!s.ok()) return FromRocks(s, "cannot open store generation " + path);
  r->db_.reset(db);
  r->meta_ = r->handles_[0];
  r->chunks_ = r->handles_[1];
  return r;
}

Status RocksDb::SetBlobGc(bool on) {
  std::unordered_map<std::string, std::string> opts = {
      {"enable_blob_garbage_collection", on ? "true" : "false"},
      {"blob_garbage_collection_age_cutoff", on ? "1.0" : "0.25"},
      {"blob_garbage_collection_force_threshold", on ? "0.0" : "1.0"},
  };
  return FromRocks(db_->SetOptions(chunks_, opts), "set blob GC options");
}

}  // namespace pstore
