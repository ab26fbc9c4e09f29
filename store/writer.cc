#include <rocksdb/db.h>
#include <time.h>

#include <algorithm>
#include <unordered_set>

#include "common/coding.h"
#include "common/file_util.h"
#include "store/keys.h"
#include "store/names_file.h"
#include "store/reserve.h"
#include "store/rocks.h"
#include "store/store.h"
#include "store/store_access.h"

namespace pstore {

namespace {

Status FullDiskStatus(const Status& s) {
  return s.WithContext(
      "the disk holding the store is full: remove models with `pstore rm` and run `pstore "
      "compact` (they use space set aside for this), or free space on the disk");
}

// The error of a publish after a change (a tag, a removal) was committed:
// the change stays in the database, and the next writer command publishes it
// (a writer that opens the store publishes what is newer than the current
// generation).
Status UnpublishedChange(const Status& s, const std::string& what) {
  if (s.ok()) return s;
  Status r = s.WithContext(what +
                           " is recorded in the store, but readers see it only after the next "
                           "writer command that succeeds (such as `pstore compact`)");
  return r.IsNoSpace() ? FullDiskStatus(r) : r;
}

}  // namespace

StoreReader::~StoreReader() = default;

Result<std::unique_ptr<StoreReader>> StoreReader::Open(const std::string& root, bool lazy_db) {
  std::unique_ptr<StoreReader> r(new StoreReader);
  r->paths_.root = root;
  PSTORE_ASSIGN_OR_RETURN(r->store_id_, ReadStoreId(r->paths_));
  PSTORE_ASSIGN_OR_RETURN(r->config_, ReadStoreConfig(r->paths_));
  PSTORE_ASSIGN_OR_RETURN(GenerationLock lock, GenerationLock::AcquireCurrent(r->paths_));
  r->lock_ = std::make_unique<GenerationLock>(std::move(lock));
  if (!lazy_db) PSTORE_RETURN_IF_ERROR(r->EnsureDb());
  return r;
}

Status StoreReader::EnsureDb() const {
  std::lock_guard<std::mutex> l(db_mu_);
  if (view_) return Status::OK();
  PSTORE_ASSIGN_OR_RETURN(db_, RocksDb::OpenReadOnly(paths_.gen(lock_->number())));
  view_ = std::make_unique<StoreView>(db_.get());
  return Status::OK();
}

Result<std::optional<ModelDigest>> StoreReader::ResolveName(std::string_view ref) const {
  if (ref.find(':') == std::string_view::npos && LooksLikeDigest(ref))
    return std::optional<ModelDigest>();  // could be a digest: the database decides
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  std::lock_guard<std::mutex> l(db_mu_);
  if (!names_read_) {
    // A file of the old form (no checksum) or none at all: the database
    // answers. A damaged one is an error, never a guess.
    auto names = ReadNamesFile(names_file());
    if (!names.ok() && !names.status().IsNotFound()) return names.status();
    names_read_ = true;
    if (names.ok()) names_ = std::move(names).value();
  }
  if (!names_) return std::optional<ModelDigest>();
  auto it = names_->find(name.Ref());
  if (it == names_->end())
    return Status::NotFound("no model named " + name.Ref() + " in the store");
  return std::optional<ModelDigest>(it->second);
}

StoreWriter::~StoreWriter() {
  // RocksDB leaves OPTIONS-*.dbtmp behind when it cannot finish an options
  // file (a full disk); it never needs them.
  view_.reset();
  db_.reset();
  if (lock_) RemoveDbTempFiles(paths_);
}

Result<std::unique_ptr<StoreWriter>> StoreWriter::Open(const std::string& root, bool wait,
                                                       const StoreConfig& init,
                                                       bool may_use_reserve, Env* env) {
  std::unique_ptr<StoreWriter> w(new StoreWriter);
  w->paths_.root = root;
  w->paths_.env = env;
  PSTORE_ASSIGN_OR_RETURN(WriterLock lock, WriterLock::Acquire(root, wait));
  w->lock_ = std::make_unique<WriterLock>(std::move(lock));
  PSTORE_RETURN_IF_ERROR(InitStoreDir(w->paths_, init));
  PSTORE_ASSIGN_OR_RETURN(w->config_, ReadStoreConfig(w->paths_));
  RemoveDbTempFiles(w->paths_);
  if (may_use_reserve && FreeDiskBytes(root) < 2 * kReserveBytes) ReleaseReserve(w->paths_);
  auto db = RocksDb::OpenPrimary(w->paths_.db());
  if (!db.ok() && db.status().IsNoSpace() && may_use_reserve && ReleaseReserve(w->paths_)) {
    RemoveDbTempFiles(w->paths_);
    db = RocksDb::OpenPrimary(w->paths_.db());
  }
  RemoveDbTempFiles(w->paths_);
  if (!db.ok()) {
    if (db.status().IsNoSpace()) return FullDiskStatus(db.status());
    return db.status();
  }
  w->db_ = std::move(db).value();
  w->view_ = std::make_unique<StoreView>(w->db_.get());
  if (!may_use_reserve) RestoreReserve(w->paths_);
  // A writer that died between committing a change and publishing it left
  // the database ahead of the newest generation: publish it now, or readers
  // would not see the committed change until some later command published.
  PSTORE_ASSIGN_OR_RETURN(uint64_t current, ReadCurrentGeneration(w->paths_));
  bool behind = current == 0;
  if (!behind) {
    auto seq = ReadGenerationSequence(w->paths_, current);
    behind = !seq.ok() || *seq != w->db_->db()->GetLatestSequenceNumber();
    // A NAMES file without a checksum (an older pstore wrote it) or a
    // damaged one is replaced, so that readers can use it again.
    auto names = ReadNamesFile(w->paths_.gen(current) + "/NAMES");
    behind = behind || !names.ok() || !*names;
  }
  if (behind) {
    Status ps = w->Publish();
    // A database with stranded memtables is stopped for good: the command
    // goes on with a new instance, which also lets the publish be retried.
    if (w->db_->stranded()) PSTORE_RETURN_IF_ERROR(w->Reopen(false));
    if (ps.IsNoSpace() && may_use_reserve && ReleaseReserve(w->paths_)) ps = w->Publish();
    if (ps.IsNoSpace()) return FullDiskStatus(ps);
    PSTORE_RETURN_IF_ERROR(ps);
    if (w->db_->stranded()) PSTORE_RETURN_IF_ERROR(w->Reopen(false));
  }
  return w;
}

Status StoreWriter::CheckReserve() {
  if (RestoreReserve(paths_)) return Status::OK();
  return Status::NoSpace(
      "the disk holding the store has too little free space to set aside the space that `pstore "
      "rm` and `pstore compact` need on a full disk (STORE/RESERVE, " +
      std::to_string(kReserveBytes >> 20) +
      " MiB, needs twice that free): nothing was written; remove models with `pstore rm` and run "
      "`pstore compact`, or free space on the disk");
}

Status StoreWriter::Publish() {
  PSTORE_ASSIGN_OR_RETURN(std::string names, NamesText());
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(config_));
  PSTORE_ASSIGN_OR_RETURN(uint64_t n, PublishGeneration(paths_, db_.get(), names, access));
  (void)n;
  auto removed = RemoveUnusedGenerations(paths_);
  return removed.ok() ? Status::OK() : removed.status();
}

Result<std::string> StoreWriter::NamesText() const {
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, view_->ListNames());
  NameMap map;
  for (const auto& n : names) map.emplace(n.ref, n.digest);
  return EncodeNamesFile(map);
}

Status StoreWriter::SetConfig(const StoreConfig& c) {
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(c));
  PSTORE_RETURN_IF_ERROR(WriteStoreConfig(paths_, c));
  config_ = c;
  // Every folder and file of the store, existing ones included.
  return ApplyStoreAccess(paths_.root, access);
}

namespace {

std::string NameValue(const ModelDigest& d) {
  std::string v(d.view());
  PutVarint(&v, uint64_t(::time(nullptr)));
  return v;
}

rocksdb::WriteOptions SyncWrite() {
  rocksdb::WriteOptions w;
  w.sync = true;
  return w;
}

}  // namespace

Status StoreWriter::TakeOut(const std::function<void(rocksdb::WriteBatch*)>& make_undo,
                            bool reclaim) {
  rocksdb::WriteBatch undo;
  make_undo(&undo);
  Status s = FromRocks(db_->db()->Write(SyncWrite(), &undo), "take out the import's chunks");
  if (!s.ok()) {
    // After a failed write (a full disk) RocksDB refuses further writes:
    // reopen it, with the reserve's space to write in.
    reclaim = true;
    PSTORE_RETURN_IF_ERROR(Reopen(true));
    rocksdb::WriteBatch again;
    make_undo(&again);
    PSTORE_RETURN_IF_ERROR(
        FromRocks(db_->db()->Write(SyncWrite(), &again), "take out the import's chunks"));
  }
  if (reclaim) {
    // The import's chunks sit in blob files of their own: once their keys
    // are compacted away, RocksDB deletes those files whole.
    PSTORE_RETURN_IF_ERROR(db_->Flush("flush after taking out the import's chunks"));
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    co.exclusive_manual_compaction = true;
    PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->CompactRange(co, db_->chunks(), nullptr, nullptr),
                                     "compact after taking out the import's chunks"));
    RestoreReserve(paths_);
  }
  return Status::OK();
}

Status StoreWriter::Reopen(bool release_reserve) {
  view_.reset();
  db_.reset();
  if (release_reserve) ReleaseReserve(paths_);
  RemoveDbTempFiles(paths_);
  PSTORE_ASSIGN_OR_RETURN(db_, RocksDb::OpenPrimary(paths_.db()));
  view_ = std::make_unique<StoreView>(db_.get());
  return Status::OK();
}

Status StoreWriter::Remove(const ModelName& name) {
  PSTORE_RETURN_IF_ERROR(view_->GetName(name).status());
  rocksdb::WriteBatch b;
  b.Delete(db_->meta(), keys::Name(name.Ref()));
  PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->Write(SyncWrite(), &b), "remove " + name.Ref()));
  return UnpublishedChange(Publish(), "the removal of " + name.Ref());
}

Status StoreWriter::Tag(std::string_view src, const ModelName& name, bool force) {
  PSTORE_ASSIGN_OR_RETURN(ModelDigest digest, view_->Resolve(src));
  PSTORE_RETURN_IF_ERROR(view_->LoadManifest(digest).status());
  auto existing = view_->GetName(name);
  if (existing.ok()) {
    if (existing->digest == digest) return Status::OK();
    if (!force)
      return Status::Exists(name.Ref() + " already names model " + existing->digest.Hex() +
                            "; pass --force to move it");
  } else if (!existing.status().IsNotFound()) {
    return existing.status();
  }
  rocksdb::WriteBatch b;
  b.Put(db_->meta(), keys::Name(name.Ref()), NameValue(digest));
  PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->Write(SyncWrite(), &b), "tag " + name.Ref()));
  return UnpublishedChange(Publish(), "the tag " + name.Ref());
}

Result<CompactResult> StoreWriter::Compact(const ProgressFn& progress) {
  CompactResult res;
  res.disk_before = StoreDiskUsage(paths_);
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, view_->ListNames());
  std::unordered_set<ModelDigest, ChunkKeyHasher> referenced;
  for (const auto& n : names) referenced.insert(n.digest);

  // Mark: every chunk of every named model. A named model whose manifest
  // cannot be read stops the compaction: its chunks cannot be told apart.
  std::unordered_set<ChunkKey, ChunkKeyHasher> live;
  PSTORE_ASSIGN_OR_RETURN(std::vector<ModelDigest> manifests, view_->ListManifests());
  rocksdb::WriteBatch dead;
  for (const auto& d : manifests) {
    if (!referenced.count(d)) {
      dead.Delete(db_->meta(), keys::Manifest(d));
      res.manifests_removed++;
      continue;
    }
    auto m = view_->LoadManifest(d);
    if (!m.ok())
      return m.status().WithContext("compact stopped (run `pstore verify`): cannot read model " +
                                    d.Hex());
    for (const auto& k : (*m)->chunks) live.insert(k);
  }
  for (const auto& d : referenced)
    if (std::find(manifests.begin(), manifests.end(), d) == manifests.end())
      return Status::Corruption("compact stopped (run `pstore verify`): a name refers to model " +
                                d.Hex() + ", which is missing");

  // Sweep: chunk records not marked, with their chunks.
  PSTORE_RETURN_IF_ERROR(view_->ForEachChunkRecord([&](const ChunkKey& k, const ChunkRecord& r) {
    if (live.count(k)) return Status::OK();
    dead.Delete(db_->chunks(), rocksdb::Slice(k.view().data(), 16));
    dead.Delete(db_->meta(), keys::ChunkRecord(k));
    res.chunks_removed++;
    res.stored_bytes_removed += r.stored_len;
    return Status::OK();
  }));
  PSTORE_RETURN_IF_ERROR(FromRocks(db_->db()->Write(SyncWrite(), &dead), "delete dead chunks"));
  if (progress) progress(1, 3);

  // Reclaim the space in two steps. First a full compaction with blob GC off:
  // it drops the dead chunks' keys, so RocksDB counts their blobs as garbage
  // and deletes every blob file that holds nothing else (the chunks of a
  // removed model, or of a failed or killed import, sit in blob files of
  // their own) without rewriting anything. Only if blob files remain that mix
  // dead and live chunks, a second compaction with GC on for the oldest blob
  // files up to the newest such one rewrites their live chunks (which needs
  // that much free disk) and drops them. Rewriting every blob file on every
  // compact would need free space the size of the whole store: on a full
  // disk, removing a model and compacting could then never free anything.
  PSTORE_RETURN_IF_ERROR(db_->Flush("flush before compaction"));
  rocksdb::CompactRangeOptions co;
  co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  co.exclusive_manual_compaction = true;
  PSTORE_RETURN_IF_ERROR(
      FromRocks(db_->db()->CompactRange(co, db_->chunks(), nullptr, nullptr), "compact chunks"));
  rocksdb::ColumnFamilyMetaData md;
  db_->db()->GetColumnFamilyMetaData(db_->chunks(), &md);
  std::sort(md.blob_files.begin(), md.blob_files.end(),
            [](const auto& a, const auto& b) { return a.blob_file_number < b.blob_file_number; });
  size_t mixed = 0;  // 1 + the index of the newest blob file holding garbage
  for (size_t i = 0; i < md.blob_files.size(); i++)
    if (md.blob_files[i].garbage_blob_count > 0) mixed = i + 1;
  if (mixed > 0) {
    // GC takes the oldest floor(cutoff * count) blob files.
    double cutoff = std::min(1.0, (double(mixed) + 0.5) / double(md.blob_files.size()));
    PSTORE_RETURN_IF_ERROR(db_->SetBlobGc(true, cutoff));
    Status cs = FromRocks(db_->db()->CompactRange(co, db_->chunks(), nullptr, nullptr),
                          "rewrite blob files");
    Status gs = db_->SetBlobGc(false);
    if (cs.IsNoSpace())
      cs = cs.WithContext(
          "compact removed the unused chunks, but blob files that mix them with live chunks "
          "must be rewritten to free their space, and the disk lacks room for that; free some "
          "space and run compact again");
    PSTORE_RETURN_IF_ERROR(cs);
    PSTORE_RETURN_IF_ERROR(gs);
  }
  // The metadata is rewritten into one last level here, and kept until the
  // next compact: it gets zstd's strongest level.
  PSTORE_RETURN_IF_ERROR(db_->SetStrongMetaCompression(true));
  Status ms =
      FromRocks(db_->db()->CompactRange(co, db_->meta(), nullptr, nullptr), "compact metadata");
  Status ss = db_->SetStrongMetaCompression(false);
  PSTORE_RETURN_IF_ERROR(ms);
  PSTORE_RETURN_IF_ERROR(ss);
  if (progress) progress(2, 3);

  PSTORE_ASSIGN_OR_RETURN(std::string names_text, NamesText());
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(config_));
  PSTORE_ASSIGN_OR_RETURN(uint64_t n, PublishGeneration(paths_, db_.get(), names_text, access));
  (void)n;
  PSTORE_ASSIGN_OR_RETURN(res.generations_removed, RemoveUnusedGenerations(paths_));
  res.generations_in_use = int(ListGenerations(paths_).size()) - 1;
  RestoreReserve(paths_);
  res.disk_after = StoreDiskUsage(paths_);
  if (progress) progress(3, 3);
  return res;
}

}  // namespace pstore
