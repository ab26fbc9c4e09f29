// RocksChunkSource: see store/rocks_chunk_source.h.
#include "store/rocks_chunk_source.h"

#include <rocksdb/write_batch.h>

#include <chrono>

#include "codec/chunk_codec.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {
namespace {

rocksdb::Slice KeySlice(const ChunkKey& k) {
  return rocksdb::Slice(k.view().data(), 16);
}

}  // namespace

Result<std::vector<std::optional<std::string>>> RocksChunkSource::Read(
    std::span<const ChunkKey> keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  if (keys.empty()) return out;
  std::vector<rocksdb::Slice> ks(keys.size());
  std::vector<rocksdb::PinnableSlice> vals(keys.size());
  std::vector<rocksdb::Status> rs(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) ks[i] = KeySlice(keys[i]);
  db_->db()->MultiGet(ChunkReadOptions(), db_->chunks(), keys.size(), ks.data(), vals.data(),
                      rs.data());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (rs[i].IsNotFound()) continue;  // missing: a result
    PSTORE_RETURN_IF_ERROR(FromRocks(rs[i], name_ + ": read chunk " + keys[i].Hex()));
    out[i] = vals[i].ToString();
  }
  return out;
}

Result<std::vector<bool>> RocksChunkSource::Contains(std::span<const ChunkKey> keys) {
  std::vector<bool> out(keys.size());
  StoreView view(db_);
  for (size_t i = 0; i < keys.size(); ++i) {
    auto rec = view.GetChunkRecord(keys[i]);
    if (!rec.ok()) return rec.status().WithContext(name_);
    out[i] = rec->has_value();
  }
  return out;
}

Status RocksChunkSource::Write(std::span<const ChunkFrameRef> frames) {
  return Put(frames, true);
}

Status RocksChunkSource::WriteChecked(std::span<const ChunkFrameRef> frames) {
  return Put(frames, false);
}

Status RocksChunkSource::Put(std::span<const ChunkFrameRef> frames, bool check) {
  if (!writable_) {
    return Status::InvalidArgument(name_ +
                                   ": chunks are written through the store's writer "
                                   "(this is a reader's generation)");
  }
  PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, [&]() -> Result<std::vector<bool>> {
    std::vector<ChunkKey> keys;
    keys.reserve(frames.size());
    for (const ChunkFrameRef& f : frames) keys.push_back(f.key);
    return Contains(keys);
  }());
  ChunkDecoder decoder;
  std::vector<uint8_t> raw;
  rocksdb::WriteBatch batch;
  for (size_t i = 0; i < frames.size(); ++i) {
    if (have[i]) continue;  // chunks are immutable: keep the stored one
    const ChunkFrameRef& f = frames[i];
    raw.resize(check ? f.raw_len : 0);
    Status st = check ? decoder.Decode(f.frame, f.key, raw) : Status::OK();
    if (!st.ok()) {
      return Status::Corruption(name_ + ": refusing chunk " + f.key.Hex() +
                                ", whose frame does not decode to its key: " + st.message());
    }
    // The same record as an import writes (store/import.cc).
    ChunkRecord r;
    r.raw_len = f.raw_len;
    r.stored_len = f.frame.size();
    r.frame_version = f.frame.empty() ? 0 : uint8_t(f.frame[0]);
    r.transform = f.frame.size() < 2 ? 0 : uint8_t(f.frame[1]);
    batch.Put(db_->chunks(), KeySlice(f.key), rocksdb::Slice(f.frame.data(), f.frame.size()));
    batch.Put(db_->meta(), keys::ChunkRecord(f.key), r.Encode());
  }
  if (batch.Count() == 0) return Status::OK();
  if (check) {
    // One batch with the WAL: frames and records are recovered together.
    return FromRocks(db_->db()->Write(rocksdb::WriteOptions(), &batch), name_ + ": write chunks");
  }
  // Without the WAL, as import writes; the store flushes both families
  // atomically, so a frame and its record reach disk together.
  rocksdb::WriteOptions nowal;
  nowal.disableWAL = true;
  PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->Write(nowal, &batch), name_ + ": write chunks"));
  // A flush every kFlushBytes, or every kFlushInterval when writes come
  // slower; one writing thread (the one that moves last_flush_) asks for it.
  const uint64_t n = unflushed_.fetch_add(batch.GetDataSize()) + batch.GetDataSize();
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  int64_t last = last_flush_.load();
  const auto interval =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(kFlushInterval);
  if (n < kFlushBytes && now - last < interval.count()) return Status::OK();
  if (!last_flush_.compare_exchange_strong(last, now)) return Status::OK();
  unflushed_ = 0;
  rocksdb::FlushOptions fo;
  fo.wait = false;
  // The batch is written whatever the flush request does: a flush that
  // cannot be started or fails shows in the next write or in the caller's
  // own flush before its commit.
  (void)db_->db()->Flush(fo, {db_->meta(), db_->chunks()});
  return Status::OK();
}

}  // namespace pstore
