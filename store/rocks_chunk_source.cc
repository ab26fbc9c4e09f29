// RocksChunkSource: see store/rocks_chunk_source.h.
#include "store/rocks_chunk_source.h"

#include <errno.h>
#include <fcntl.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "codec/chunk_codec.h"
#include "codec/frame.h"
#include "common/file_util.h"
#include "store/chunk_read.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {
namespace {

rocksdb::Slice KeySlice(const ChunkKey& k) {
  return rocksdb::Slice(k.view().data(), 16);
}

// A write batch's bytes per chunk besides its frame: the two keys, the chunk
// record and RocksDB's tags and lengths (a little more than they take).
constexpr size_t kRecordOverhead = 128;

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
  auto recs = StoreView(db_).GetChunkRecords(keys);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!recs[i].ok()) return recs[i].status().WithContext(name_);
    out[i] = recs[i]->has_value();
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
  // WriteChecked's callers have looked the chunks up already.
  std::vector<bool> have(frames.size(), false);
  if (check) {
    std::vector<ChunkKey> keys;
    keys.reserve(frames.size());
    for (const ChunkFrameRef& f : frames) keys.push_back(f.key);
    PSTORE_ASSIGN_OR_RETURN(have, Contains(keys));
  }
  ChunkDecoder decoder;
  std::vector<uint8_t> raw;
  // The batch's buffer sized once: grown by doubling, it would copy every
  // frame again on its way to the 32 MiB of a pull's batch.
  size_t reserve = 0;
  for (const ChunkFrameRef& f : frames) reserve += f.frame.size() + kRecordOverhead;
  rocksdb::WriteBatch batch(reserve);
  for (size_t i = 0; i < frames.size(); ++i) {
    if (have[i]) continue;  // chunks are immutable: keep the stored one
    const ChunkFrameRef& f = frames[i];
    raw.resize(check ? f.raw_len : 0);
    Status st = check ? decoder.Decode(f.frame, f.key, raw) : Status::OK();
    if (!st.ok() && !st.IsCorruption())  // out of memory: the frame may be sound
      return st.WithContext(name_ + ": checking chunk " + f.key.Hex());
    if (!st.ok()) {
      return Status::Corruption(name_ + ": refusing chunk " + f.key.Hex() +
                                ", whose frame does not decode to its key: " + st.message());
    }
    // The same record as an import writes (store/import.cc).
    Result<FrameDescription> desc = DescribeFrame(f.frame);
    if (!desc.ok()) {
      return Status::Corruption(name_ + ": refusing chunk " + f.key.Hex() +
                                ", whose frame header is unreadable: " + desc.status().message());
    }
    ChunkRecord r;
    r.raw_len = f.raw_len;
    r.stored_len = f.frame.size();
    r.frame_version = desc->version;
    r.transform = uint8_t(desc->transform);
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
  StartFlush();
  return Status::OK();
}

void RocksChunkSource::StartFlush() {
  rocksdb::FlushOptions fo;
  fo.wait = false;
  // What was written stays written whatever the flush request does: a flush
  // that cannot be started or fails shows in the next write or in the
  // caller's own flush before its commit.
  (void)db_->db()->Flush(fo, {db_->meta(), db_->chunks()});
}

uint64_t RocksChunkSource::SettledChunkTables() const {
  rocksdb::DB* db = db_->db();
  // A flush that failed stays pending: then the count is what it is.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    uint64_t running = 0, pending = 0, errors = 0;
    db->GetIntProperty(db_->chunks(), rocksdb::DB::Properties::kNumRunningFlushes, &running);
    db->GetIntProperty(db_->chunks(), rocksdb::DB::Properties::kMemTableFlushPending, &pending);
    db->GetIntProperty(rocksdb::DB::Properties::kBackgroundErrors, &errors);
    if ((running == 0 && pending == 0) || errors > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  uint64_t tables = 0;
  for (int level = 0; level < db->NumberLevels(db_->chunks()); ++level) {
    std::string n;
    if (db->GetProperty(db_->chunks(),
                        rocksdb::DB::Properties::kNumFilesAtLevelPrefix + std::to_string(level),
                        &n)) {
      tables += std::strtoull(n.c_str(), nullptr, 10);
    }
  }
  return tables;
}

}  // namespace pstore

namespace pstore {
namespace {

// RocksDB's pinned values of one batch, reused by the next read into it.
// The values are never moved: a moved PinnableSlice that was pinned keeps no
// buffer of its own, and RocksDB writes through that buffer on the next read.
struct RocksPins final : FrameBatch::Pins {
  std::unique_ptr<rocksdb::PinnableSlice[]> values;
  size_t capacity = 0;
  std::vector<rocksdb::Slice> keys;
  std::vector<rocksdb::Status> statuses;
};

}  // namespace

Status RocksChunkSource::ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) {
  const size_t n = keys.size();
  batch->Reset(n);
  if (n == 0) return Status::OK();
  auto* pins = dynamic_cast<RocksPins*>(batch->pins().get());
  if (!pins) {
    batch->pins() = std::make_unique<RocksPins>();
    pins = static_cast<RocksPins*>(batch->pins().get());
  }
  if (pins->capacity < n) {
    pins->values.reset();  // unpins the old ones first
    pins->capacity = std::max<size_t>(n, 64);
    pins->values.reset(new rocksdb::PinnableSlice[pins->capacity]);
  }
  pins->keys.resize(n);
  pins->statuses.resize(n);
  for (size_t i = 0; i < n; i++) {
    pins->values[i].Reset();
    pins->keys[i] = KeySlice(keys[i]);
  }
  // One lookup per table block for all the keys, not one per key.
  db_->db()->MultiGet(ChunkReadOptions(), db_->chunks(), n, pins->keys.data(), pins->values.get(),
                      pins->statuses.data());
  for (size_t i = 0; i < n; i++) {
    const rocksdb::Status& s = pins->statuses[i];
    if (s.ok())
      batch->SetPinned(i, std::string_view(pins->values[i].data(), pins->values[i].size()));
    else if (!s.IsNotFound())
      batch->SetError(i, ChunkReadError(s, keys[i]));
  }
  return Status::OK();
}

Status RocksChunkSource::ReadDecoded(std::span<const ChunkKey> keys,
                                     std::span<const std::span<uint8_t>> outs,
                                     ChunkDecoder* decoder, FrameBatch* batch,
                                     DecodedChunks* result) {
  const size_t n = keys.size();
  result->Reset(n);
  std::vector<size_t> rest;  // entries left for RocksDB
  bool all_through_rocks = large_ != LargeFrames::kFromFiles;
  if (!all_through_rocks) {
    try {
      ReadFromBlobFiles(keys, outs, decoder, result, &rest);
    } catch (const std::bad_alloc&) {
      all_through_rocks = true;  // RocksDB then says what it can
    }
  }
  Status st;
  if (all_through_rocks || rest.size() == n) {
    result->Reset(n);
    st = ReadDecodedInRuns(*this, keys, outs, decoder, batch, result, nullptr);
  } else if (!rest.empty()) {
    std::sort(rest.begin(), rest.end());
    st = ReadRestDecoded(keys, outs, rest, decoder, batch, result);
  }
  return st.ok() ? st : result->Fail(n, st);
}

Status RocksChunkSource::ReadRestDecoded(std::span<const ChunkKey> keys,
                                         std::span<const std::span<uint8_t>> outs,
                                         const std::vector<size_t>& rest, ChunkDecoder* decoder,
                                         FrameBatch* batch, DecodedChunks* result) {
  try {
    std::vector<ChunkKey> rest_keys;
    std::vector<std::span<uint8_t>> rest_outs;
    rest_keys.reserve(rest.size());
    rest_outs.reserve(rest.size());
    for (size_t i : rest) {
      rest_keys.push_back(keys[i]);
      rest_outs.push_back(outs[i]);
    }
    DecodedChunks got;
    got.Reset(rest.size());
    PSTORE_RETURN_IF_ERROR(
        ReadDecodedInRuns(*this, rest_keys, rest_outs, decoder, batch, &got, nullptr));
    for (size_t j = 0; j < rest.size(); j++) {
      result->status[rest[j]] = std::move(got.status[j]);
      result->frame_bytes[rest[j]] = got.frame_bytes[j];
    }
    return Status::OK();
  } catch (const std::bad_alloc&) {
    return Status::NoMemory(name_ + ": out of memory while reading chunks");
  }
}

std::shared_ptr<const UniqueFd> RocksChunkSource::BlobFile(uint64_t number) {
  MutexLock l(&files_mu_);
  if (auto it = open_.find(number); it != open_.end()) return it->second;
  auto path = blob_paths_.find(number);
  if (path == blob_paths_.end() && unlisted_.insert(number).second) {
    blob_paths_ = StoreView(db_).BlobFilePaths();
    path = blob_paths_.find(number);
  }
  if (path == blob_paths_.end()) return nullptr;
  auto fd = std::make_shared<const UniqueFd>(::open(path->second.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd->valid()) return nullptr;
  if (open_.size() < kMaxOpenBlobFiles) open_.emplace(number, fd);
  return fd;
}

namespace {

// Located frames of one blob file at most this far apart are read together,
// up to kMaxReadBytes a read (a frame larger than that is read alone).
constexpr uint64_t kReadGapBytes = 64 << 10;
constexpr uint64_t kMaxReadBytes = 1 << 20;

// Reads [offset, offset + n) of fd into buf, whole; false if it cannot (an
// I/O error, or the file ends before).
bool ReadWhole(int fd, uint64_t offset, size_t n, uint8_t* buf) {
  while (n > 0) {
    const ssize_t got = ::pread(fd, buf, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    buf += got;
    offset += uint64_t(got);
    n -= size_t(got);
  }
  return true;
}

}  // namespace

void RocksChunkSource::ReadFromBlobFiles(std::span<const ChunkKey> keys,
                                         std::span<const std::span<uint8_t>> outs,
                                         ChunkDecoder* decoder, DecodedChunks* result,
                                         std::vector<size_t>* rest) {
  struct Located {
    size_t entry;
    uint64_t file, offset, size;
  };
  std::vector<Located> located;
  StoreView view(db_);
  for (size_t i = 0; i < keys.size(); i++) {
    StoreView::ChunkPlace p;
    if (outs[i].size() >= kDirectReadBytes && view.LocateChunk(keys[i], &p).ok() &&
        p.file != StoreView::ChunkPlace::kInline && p.file != StoreView::ChunkPlace::kUnknown &&
        p.size > 0 && p.size <= MaxFrameBytes(outs[i].size()) && p.offset <= UINT64_MAX - p.size)
      located.push_back({i, p.file, p.offset, p.size});
    else
      rest->push_back(i);
  }
  std::sort(located.begin(), located.end(), [](const Located& a, const Located& b) {
    return a.file != b.file ? a.file < b.file : a.offset < b.offset;
  });
  std::shared_ptr<const UniqueFd> fd;
  uint64_t fd_file = StoreView::ChunkPlace::kUnknown;
  PageVector<uint8_t>& buf = decoder->input_buffer();
  for (size_t a = 0; a < located.size();) {
    // A run: frames of one file, neighbours close together, one read.
    uint64_t begin = located[a].offset, end = begin + located[a].size;
    size_t b = a + 1;
    while (b < located.size() && located[b].file == located[a].file &&
           located[b].offset <= end + kReadGapBytes &&
           located[b].offset + located[b].size - begin <= kMaxReadBytes) {
      end = std::max(end, located[b].offset + located[b].size);
      b++;
    }
    if (fd_file != located[a].file) {
      fd_file = located[a].file;
      fd = BlobFile(fd_file);
    }
    // The buffer only grows (its new bytes are zeroed once), and goes with
    // the decoder's other scratch when the pager trims.
    const size_t n = size_t(end - begin);
    if (buf.size() < n) buf.resize(n);
    // A run that cannot be read whole (a file cut short) is read frame by
    // frame, so that one bad frame does not take its neighbours with it.
    const bool whole = fd != nullptr && ReadWhole(fd->get(), begin, n, buf.data());
    for (size_t k = a; k < b; k++) {
      const Located& l = located[k];
      uint8_t* at = buf.data() + (l.offset - begin);
      // A frame that cannot be read, or does not match its key here, is read
      // through RocksDB, whose answer (and message) counts.
      const bool read =
          whole || (fd != nullptr && ReadWhole(fd->get(), l.offset, size_t(l.size), at));
      const std::string_view frame(reinterpret_cast<const char*>(at), size_t(l.size));
      if (read && decoder->Decode(frame, keys[l.entry], outs[l.entry]).ok())
        result->frame_bytes[l.entry] = l.size;
      else
        rest->push_back(l.entry);
    }
    a = b;
  }
}

Result<std::optional<ReadPlan>> RocksChunkSource::PlanSequentialRead(
    std::span<const ChunkKey> keys) {
  StoreView view(db_);
  // Locating scans the store's whole chunk index: worth it for a good share
  // of the store's chunks only.
  if (keys.empty() || keys.size() * 8 < view.EstimateChunkCount()) return std::optional<ReadPlan>();
  std::vector<StoreView::ChunkPlace> places(keys.size());
  PSTORE_RETURN_IF_ERROR(view.LocateChunks(keys.data(), keys.size(), places.data()));
  ReadPlan plan;
  plan.order.resize(keys.size());
  for (uint32_t i = 0; i < plan.order.size(); i++) plan.order[i] = i;
  std::stable_sort(plan.order.begin(), plan.order.end(),
                   [&](uint32_t a, uint32_t b) { return places[a] < places[b]; });
  // Blob files by number, as indexes into plan.files.
  std::unordered_map<uint64_t, std::string> paths = view.BlobFilePaths();
  std::unordered_map<uint64_t, uint32_t> file_index;
  plan.places.resize(keys.size());
  for (size_t i = 0; i < keys.size(); i++) {
    const StoreView::ChunkPlace& p = places[i];
    if (p.file == StoreView::ChunkPlace::kInline || p.file == StoreView::ChunkPlace::kUnknown ||
        p.size == 0)
      continue;
    auto path = paths.find(p.file);
    if (path == paths.end()) continue;
    auto [at, fresh] = file_index.emplace(p.file, uint32_t(plan.files.size()));
    if (fresh) plan.files.push_back(path->second);
    plan.places[i] = {at->second, p.offset, p.size};
  }
  return std::optional<ReadPlan>(std::move(plan));
}

namespace {

class GenerationSource final : public ChunkSource {
 public:
  explicit GenerationSource(std::shared_ptr<const StoreReader> reader)
      : reader_(std::move(reader)),
        name_("the store at " + reader_->root() + " (generation " +
              std::to_string(reader_->generation()) + ")") {}

  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(RocksChunkSource * s, Local());
    return s->Read(keys);
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(RocksChunkSource * s, Local());
    return s->Contains(keys);
  }
  Status Write(std::span<const ChunkFrameRef>) override {
    return Status::InvalidArgument(name_ +
                                   ": chunks are written through the store's writer "
                                   "(this is a reader's generation)");
  }
  Status ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch) override {
    PSTORE_ASSIGN_OR_RETURN(RocksChunkSource * s, Local());
    return s->ReadFrames(keys, batch);
  }
  Status ReadDecoded(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                     ChunkDecoder* decoder, FrameBatch* batch, DecodedChunks* result) override {
    Result<RocksChunkSource*> s = Local();
    if (!s.ok()) return result->Fail(keys.size(), s.status());
    return (*s)->ReadDecoded(keys, outs, decoder, batch, result);
  }
  Result<std::optional<ReadPlan>> PlanSequentialRead(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(RocksChunkSource * s, Local());
    return s->PlanSequentialRead(keys);
  }
  std::string Describe() const override { return name_; }

 private:
  Result<RocksChunkSource*> Local() {
    PSTORE_RETURN_IF_ERROR(reader_->EnsureDb());
    std::call_once(local_once_, [&] {
      local_ = std::make_unique<RocksChunkSource>(reader_->view().db(), false, name_,
                                                  RocksChunkSource::LargeFrames::kFromFiles);
    });
    return local_.get();
  }

  std::shared_ptr<const StoreReader> reader_;
  std::string name_;
  std::once_flag local_once_;
  std::unique_ptr<RocksChunkSource> local_;
};

}  // namespace

std::shared_ptr<ChunkSource> GenerationChunkSource(std::shared_ptr<const StoreReader> reader) {
  return std::make_shared<GenerationSource>(std::move(reader));
}

}  // namespace pstore
