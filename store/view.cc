#include <rocksdb/db.h>
#include <rocksdb/metadata.h>
#include <rocksdb/utilities/debug.h>

#include <algorithm>
#include <thread>
#include <unordered_map>

#include "common/coding.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {

std::string ChunkRecord::Encode() const {
  std::string v;
  PutVarint(&v, raw_len);
  PutVarint(&v, stored_len);
  v.push_back(char(frame_version));
  v.push_back(char(transform));
  return v;
}

std::optional<ChunkRecord> ChunkRecord::Decode(std::string_view v) {
  Reader r(v);
  ChunkRecord c;
  if (!r.GetVarint(&c.raw_len) || !r.GetVarint(&c.stored_len) || !r.GetU8(&c.frame_version) ||
      !r.GetU8(&c.transform) || !r.empty())
    return std::nullopt;
  return c;
}

namespace {

Result<NameEntry> DecodeName(std::string_view key, std::string_view value) {
  NameEntry e;
  e.ref = std::string(key.substr(1));
  Reader r(value);
  std::string_view d;
  if (!r.GetBytes(16, &d) || !r.GetVarint(&e.tagged_unix))
    return Status::Corruption("name record for " + e.ref + " is malformed");
  e.digest = *ChunkKey::FromBytes(d);
  return e;
}

std::string_view View(const rocksdb::Slice& s) {
  return std::string_view(s.data(), s.size());
}

}  // namespace

Result<std::vector<NameEntry>> StoreView::ListNames() const {
  std::vector<NameEntry> out;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  std::string end = keys::PrefixEnd(keys::kName);
  for (it->Seek(std::string(1, keys::kName)); it->Valid() && it->key().compare(end) < 0;
       it->Next()) {
    PSTORE_ASSIGN_OR_RETURN(NameEntry e, DecodeName(View(it->key()), View(it->value())));
    out.push_back(std::move(e));
  }
  PSTORE_RETURN_IF_ERROR(FromRocks(it->status(), "list names"));
  return out;
}

Result<NameEntry> StoreView::GetName(const ModelName& name) const {
  std::string key = keys::Name(name.Ref());
  std::string value;
  rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), db_->meta(), key, &value);
  if (s.IsNotFound()) return Status::NotFound("no model named " + name.Ref() + " in the store");
  PSTORE_RETURN_IF_ERROR(FromRocks(s, "read name " + name.Ref()));
  return DecodeName(key, value);
}

Result<std::vector<ModelDigest>> StoreView::ListManifests() const {
  std::vector<ModelDigest> out;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  std::string end = keys::PrefixEnd(keys::kManifest);
  for (it->Seek(std::string(1, keys::kManifest)); it->Valid() && it->key().compare(end) < 0;
       it->Next()) {
    auto d = ChunkKey::FromBytes(View(it->key()).substr(1));
    if (!d) return Status::Corruption("malformed manifest key in the store");
    out.push_back(*d);
  }
  PSTORE_RETURN_IF_ERROR(FromRocks(it->status(), "list manifests"));
  return out;
}

Result<ModelDigest> StoreView::Resolve(std::string_view ref) const {
  if (ref.find(':') == std::string_view::npos && LooksLikeDigest(ref)) {
    // A digest or a prefix of one; a name of the same spelling comes second.
    PSTORE_ASSIGN_OR_RETURN(std::vector<ModelDigest> all, ListManifests());
    std::vector<ModelDigest> hits;
    for (const auto& d : all)
      if (d.Hex().compare(0, ref.size(), ref) == 0) hits.push_back(d);
    if (hits.size() == 1) return hits[0];
    if (hits.size() > 1)
      return Status::InvalidArgument("digest prefix " + std::string(ref) +
                                     " matches several models; give more digits");
  }
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  PSTORE_ASSIGN_OR_RETURN(NameEntry e, GetName(name));
  return e.digest;
}

Result<std::string> StoreView::LoadManifestBytes(const ModelDigest& digest) const {
  std::string v;
  rocksdb::Status s =
      db_->db()->Get(rocksdb::ReadOptions(), db_->meta(), keys::Manifest(digest), &v);
  if (s.IsNotFound()) return Status::NotFound("no model with digest " + digest.Hex());
  PSTORE_RETURN_IF_ERROR(FromRocks(s, "read manifest " + digest.Hex()));
  if (Manifest::DigestOf(v) != digest)
    return Status::Corruption("manifest " + digest.Hex() + " does not match its digest");
  return v;
}

Result<std::shared_ptr<const Manifest>> StoreView::LoadManifest(const ModelDigest& digest) const {
  PSTORE_ASSIGN_OR_RETURN(std::string bytes, LoadManifestBytes(digest));
  auto m = Manifest::Parse(bytes);
  if (!m.ok()) return m.status().WithContext("model " + digest.Hex());
  return std::shared_ptr<const Manifest>(new Manifest(std::move(m).value()));
}

namespace {

// A chunk's record as RocksDB's lookup s found it (value v): none if
// missing, else decoded, with errors that name the chunk.
Result<std::optional<ChunkRecord>> ChunkRecordOf(const ChunkKey& key, const rocksdb::Status& s,
                                                 std::string_view v) {
  if (s.IsNotFound()) return std::optional<ChunkRecord>();
  PSTORE_RETURN_IF_ERROR(FromRocks(s, "read chunk record " + key.Hex()));
  auto r = ChunkRecord::Decode(v);
  if (!r) return Status::Corruption("chunk record " + key.Hex() + " is malformed");
  return std::optional<ChunkRecord>(*r);
}

}  // namespace

Result<std::optional<ChunkRecord>> StoreView::GetChunkRecord(const ChunkKey& key) const {
  std::string v;
  rocksdb::Status s =
      db_->db()->Get(rocksdb::ReadOptions(), db_->meta(), keys::ChunkRecord(key), &v);
  return ChunkRecordOf(key, s, v);
}

std::vector<Result<std::optional<ChunkRecord>>> StoreView::GetChunkRecords(
    std::span<const ChunkKey> keys) const {
  std::vector<Result<std::optional<ChunkRecord>>> out(keys.size(), std::optional<ChunkRecord>());
  std::vector<std::pair<std::string, size_t>> sorted;  // (record key, index in keys)
  sorted.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); i++) sorted.emplace_back(keys::ChunkRecord(keys[i]), i);
  std::sort(sorted.begin(), sorted.end());
  constexpr size_t kBatch = 4096;
  std::vector<rocksdb::Slice> ks;
  std::vector<rocksdb::PinnableSlice> vals(std::min(kBatch, sorted.size()));
  std::vector<rocksdb::Status> rs(vals.size());
  for (size_t b = 0; b < sorted.size(); b += kBatch) {
    const size_t n = std::min(kBatch, sorted.size() - b);
    ks.clear();
    for (size_t i = 0; i < n; i++) ks.emplace_back(sorted[b + i].first);
    for (size_t i = 0; i < n; i++) vals[i].Reset();
    db_->db()->MultiGet(rocksdb::ReadOptions(), db_->meta(), n, ks.data(), vals.data(), rs.data(),
                        /*sorted_input=*/true);
    for (size_t i = 0; i < n; i++) {
      const size_t at = sorted[b + i].second;
      out[at] = ChunkRecordOf(keys[at], rs[i], rs[i].ok() ? View(vals[i]) : std::string_view());
    }
  }
  return out;
}

Status StoreView::ForEachChunkRecord(
    const std::function<Status(const ChunkKey&, const ChunkRecord&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  std::string end = keys::PrefixEnd(keys::kChunkRecord);
  for (it->Seek(std::string(1, keys::kChunkRecord)); it->Valid() && it->key().compare(end) < 0;
       it->Next()) {
    auto key = ChunkKey::FromBytes(View(it->key()).substr(1));
    auto rec = ChunkRecord::Decode(View(it->value()));
    if (!key || !rec) return Status::Corruption("malformed chunk record in the store");
    PSTORE_RETURN_IF_ERROR(fn(*key, *rec));
  }
  return FromRocks(it->status(), "list chunk records");
}

Status StoreView::ReadFrame(const ChunkKey& key, rocksdb::PinnableSlice* frame) const {
  rocksdb::Status s = db_->db()->Get(ChunkReadOptions(), db_->chunks(),
                                     rocksdb::Slice(key.view().data(), 16), frame);
  if (s.IsNotFound())
    return Status::Corruption("chunk " + key.Hex() + " is missing from the store");
  return ChunkReadError(s, key);
}

Status StoreView::ReadChunk(const ChunkKey& key, ChunkDecoder* decoder,
                            std::span<uint8_t> out) const {
  rocksdb::PinnableSlice frame;
  PSTORE_RETURN_IF_ERROR(ReadFrame(key, &frame));
  return decoder->Decode(View(frame), key, out);
}

namespace {

// The place of the newest entry of a chunk family's key among its versions
// (newest first): a frame kept in the table (type 1, kTypeValue) or a blob
// index (type 17, kTypeBlobIndex: type byte 1 (a plain blob), then varint
// file number, offset and size, and a compression byte, 0 for none). Other
// entries (a deletion, a blob with a TTL, a compressed blob, whose bytes in
// the file are not the frame) leave the place unknown.
StoreView::ChunkPlace PlaceOf(const rocksdb::KeyVersion& kv) {
  using ChunkPlace = StoreView::ChunkPlace;
  constexpr int kTypeValue = 1, kTypeBlobIndex = 17;
  ChunkPlace p;
  if (kv.type == kTypeValue) {
    p.file = ChunkPlace::kInline;
  } else if (kv.type == kTypeBlobIndex && !kv.value.empty() && kv.value[0] == 1) {
    Reader r(std::string_view(kv.value).substr(1));
    uint64_t file, offset, size;
    uint8_t compression;
    if (r.GetVarint(&file) && r.GetVarint(&offset) && r.GetVarint(&size) && r.GetU8(&compression) &&
        compression == 0 && file != ChunkPlace::kInline && file != ChunkPlace::kUnknown)
      p = {file, offset, size};
  }
  return p;
}

}  // namespace

Status StoreView::LocateChunk(const ChunkKey& key, ChunkPlace* place) const {
  *place = ChunkPlace{};
  try {
    std::vector<rocksdb::KeyVersion> versions;
    const rocksdb::Slice k(key.view().data(), key.view().size());
    // Versions come newest first; the first is the one a read would see.
    rocksdb::Status s = rocksdb::GetAllKeyVersions(db_->db(), db_->chunks(), k, k, 1, &versions);
    if (!s.ok()) return FromRocks(s, "locate chunk " + key.Hex());
    if (!versions.empty() && versions[0].user_key == key.view()) *place = PlaceOf(versions[0]);
    return Status::OK();
  } catch (const std::bad_alloc&) {
    return Status::NoMemory("out of memory while locating chunk " + key.Hex());
  }
}

Status StoreView::LocateChunks(const ChunkKey* keys, size_t n, ChunkPlace* places) const {
  std::unordered_map<ChunkKey, size_t, ChunkKeyHasher> want;  // key -> its first index
  std::vector<std::pair<size_t, size_t>> repeats;             // (index, first index)
  want.reserve(n);
  for (size_t i = 0; i < n; i++) {
    places[i] = ChunkPlace{};
    auto [it, fresh] = want.emplace(keys[i], i);
    if (!fresh) repeats.push_back({i, it->second});
  }
  // Every entry of the chunk family with its raw value (PlaceOf); entries
  // come newest first for each key. Keys are hashes, so the key space splits
  // into even halves, scanned on two threads.
  auto scan = [&](std::string_view begin, std::string_view end) -> Status {
    try {
      std::vector<rocksdb::KeyVersion> all;
      rocksdb::Status s = rocksdb::GetAllKeyVersions(
          db_->db(), db_->chunks(), rocksdb::Slice(begin.data(), begin.size()),
          rocksdb::Slice(end.data(), end.size()), SIZE_MAX, &all);
      if (!s.ok()) return FromRocks(s, "list chunk places");
      std::string_view last;
      for (const rocksdb::KeyVersion& kv : all) {
        if (kv.user_key.size() != 16 || kv.user_key == last) continue;  // only the newest
        last = kv.user_key;
        auto key = ChunkKey::FromBytes(kv.user_key);
        auto it = want.find(*key);
        if (it == want.end()) continue;
        places[it->second] = PlaceOf(kv);
      }
      return Status::OK();
    } catch (const std::bad_alloc&) {
      return Status::NoMemory("out of memory while listing chunk places");
    } catch (...) {
      return Status::Internal("listing chunk places failed");
    }
  };
  // The low half ends at 7f ff .. ff (inclusive), the high half starts at 80.
  std::string low_end(16, '\xff');
  low_end[0] = '\x7f';
  Status high, low;
  std::thread t;
  try {
    t = std::thread([&] { high = scan(std::string_view("\x80", 1), {}); });
  } catch (...) {
    high = scan(std::string_view("\x80", 1), {});  // no thread to be had: here
  }
  low = scan({}, low_end);  // does not throw, so t is always joined
  if (t.joinable()) t.join();
  PSTORE_RETURN_IF_ERROR(low);
  PSTORE_RETURN_IF_ERROR(high);
  for (auto [i, first] : repeats) places[i] = places[first];
  return Status::OK();
}

std::unordered_map<uint64_t, std::string> StoreView::BlobFilePaths() const {
  rocksdb::ColumnFamilyMetaData md;
  db_->db()->GetColumnFamilyMetaData(db_->chunks(), &md);
  std::unordered_map<uint64_t, std::string> paths;
  for (const auto& b : md.blob_files) {
    std::string path = b.blob_file_path;
    if (!path.empty() && path.back() != '/' &&
        (b.blob_file_name.empty() || b.blob_file_name[0] != '/'))
      path += '/';
    paths[b.blob_file_number] = path + b.blob_file_name;
  }
  return paths;
}

uint64_t StoreView::EstimateChunkCount() const {
  uint64_t v = 0;
  if (!db_->db()->GetIntProperty(db_->chunks(), "rocksdb.estimate-num-keys", &v)) return 0;
  return v;
}

}  // namespace pstore
