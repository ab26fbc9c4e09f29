// The chunk store: models as manifests of content-addressed chunks in RocksDB.
//
// StoreView reads a database: names, manifests, chunk records and chunks.
// StoreReader is a view of the newest published generation, held so that the
// writer cannot delete it: export, verify, info, stat and inference processes
// use it, and keep working while a writer imports, removes or compacts.
// StoreWriter is the one writer (an exclusive lock refuses a second one with a
// clear message): import, rm, tag, compact. Every change it commits ends with
// a new generation that later readers open.
//
// Commit protocol (docs/format.md): an import writes each new chunk and its
// record without the WAL, then the manifest and the name, also without the
// WAL, then flushes both column families atomically. RocksDB installs atomic
// flushes in order, so the one holding the name comes with or after every
// chunk's. A crash before it leaves only unreferenced chunks, which compact
// removes; after it, the whole model. No model is ever visible and incomplete.
//
// Thread-safety: a StoreView and a StoreReader may be used from many threads at
// once. A StoreWriter's methods must not run concurrently with each other.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "codec/chunk_codec.h"
#include "common/status.h"
#include "store/manifest.h"
#include "store/model_ref.h"
#include "store/names_file.h"
#include "store/parallel.h"
#include "store/store_dir.h"

namespace rocksdb {
class PinnableSlice;
class WriteBatch;
}  // namespace rocksdb

namespace pstore {

class RocksDb;

struct NameEntry {
  std::string ref;  // "name:tag"
  ModelDigest digest;
  uint64_t tagged_unix = 0;
};

struct ChunkRecord {
  uint64_t raw_len = 0;
  uint64_t stored_len = 0;
  uint8_t frame_version = 0;
  uint8_t transform = 0;

  std::string Encode() const;
  static std::optional<ChunkRecord> Decode(std::string_view v);
};

class StoreView {
 public:
  // db must outlive the view.
  explicit StoreView(RocksDb* db) : db_(db) {}

  Result<std::vector<NameEntry>> ListNames() const;
  // NotFound when the name is not in the store.
  Result<NameEntry> GetName(const ModelName& name) const;
  // "name:tag", "name" (tag latest) or a digest / unique digest prefix.
  Result<ModelDigest> Resolve(std::string_view ref) const;
  // Reads and parses a manifest, checking its digest.
  Result<std::shared_ptr<const Manifest>> LoadManifest(const ModelDigest& digest) const;
  // The manifest's bytes, checked against its digest.
  Result<std::string> LoadManifestBytes(const ModelDigest& digest) const;
  // Every manifest's digest (referenced by a name or not).
  Result<std::vector<ModelDigest>> ListManifests() const;

  Result<std::optional<ChunkRecord>> GetChunkRecord(const ChunkKey& key) const;
  // The records of keys, each as GetChunkRecord gives it (result[i] is
  // keys[i]'s, so one unreadable record fails its own entry only), read in
  // key order with RocksDB's MultiGet, which reads each table block once for
  // the keys in it: for many chunks, far cheaper than one GetChunkRecord each.
  std::vector<Result<std::optional<ChunkRecord>>> GetChunkRecords(
      std::span<const ChunkKey> keys) const;
  // fn(key, record) for every chunk record, in key order.
  Status ForEachChunkRecord(
      const std::function<Status(const ChunkKey&, const ChunkRecord&)>& fn) const;
  // The chunk's frame, pinned in RocksDB's memory where possible.
  Status ReadFrame(const ChunkKey& key, rocksdb::PinnableSlice* frame) const;
  // Reads, decodes and checks a chunk into out (exactly its raw length).
  Status ReadChunk(const ChunkKey& key, ChunkDecoder* decoder, std::span<uint8_t> out) const;

  // Where chunks' frames sit on disk, so that a bulk load can read them in
  // file order (docs/pager.md, "Cold loads"). One pass over the chunk
  // family's index (not the frames): worth it only when the keys are a good
  // share of the store's chunks. places[i] is keys[i]'s: kInline for a frame
  // kept in the index itself, kUnknown for a key not found. A hint only:
  // reads still go through ChunkSource::ReadFrames, and are checked.
  // (RocksChunkSource::PlanSequentialRead turns this into a ReadPlan.)
  struct ChunkPlace {
    static constexpr uint64_t kInline = 0, kUnknown = UINT64_MAX;
    uint64_t file = kUnknown;  // blob file number
    uint64_t offset = 0;       // of the frame in that file
    uint64_t size = 0;         // of the frame (blob files only)
    bool operator<(const ChunkPlace& o) const {
      return file != o.file ? file < o.file : offset < o.offset;
    }
  };
  Status LocateChunks(const ChunkKey* keys, size_t n, ChunkPlace* places) const;
  // One chunk's place, found in the index alone (a few microseconds, without
  // reading its frame): for reads of a few chunks straight from their blob
  // files (RocksChunkSource::ReadDecoded).
  Status LocateChunk(const ChunkKey& key, ChunkPlace* place) const;
  // RocksDB's estimate of the number of chunks in the store.
  uint64_t EstimateChunkCount() const;
  // The path of each blob file of the chunk family, by file number.
  std::unordered_map<uint64_t, std::string> BlobFilePaths() const;

  RocksDb* db() const { return db_; }

 private:
  RocksDb* db_;
};

class StoreReader {
 public:
  ~StoreReader();
  // Opens the newest generation of the store at root. With lazy_db, the
  // database is opened by the first EnsureDb() (inference processes that find
  // their model resident in shared memory never need it).
  static Result<std::unique_ptr<StoreReader>> Open(const std::string& root, bool lazy_db = false);

  // Opens the generation's database if it is not open yet.
  Status EnsureDb() const;
  // REQUIRES: the database is open (always so without lazy_db).
  const StoreView& view() const { return *view_; }
  // Resolves "name:tag" (or "name") from the generation's NAMES file; nullopt
  // when that file cannot answer (a digest, or a generation without NAMES or
  // with one of the old form, without a checksum): then use view().Resolve.
  // NotFound when the name is not in the store; Corruption naming the file
  // when it is damaged.
  Result<std::optional<ModelDigest>> ResolveName(std::string_view ref) const;
  const std::string& root() const { return paths_.root; }
  const std::string& store_id() const { return store_id_; }
  const StoreConfig& config() const { return config_; }
  uint64_t generation() const { return lock_->number(); }
  // The generation's NAMES file (store/names_file.h).
  std::string names_file() const { return paths_.gen(lock_->number()) + "/NAMES"; }

 private:
  StoreReader() = default;
  StorePaths paths_;
  std::string store_id_;
  StoreConfig config_;
  std::unique_ptr<GenerationLock> lock_;
  mutable std::mutex db_mu_;
  mutable std::unique_ptr<RocksDb> db_;
  mutable std::unique_ptr<StoreView> view_;
  mutable bool names_read_ = false;
  mutable std::optional<NameMap> names_;
};

struct ImportOptions {
  bool force = false;              // replace an existing name:tag pointing elsewhere
  std::optional<Profile> profile;  // default: the store's
  int threads = 0;                 // 0: one per core
  ProgressFn progress;             // bytes of tensor data done / total
};

struct ImportResult {
  ModelDigest digest;
  bool unchanged = false;  // the name already pointed at this exact model
  bool replaced = false;   // the name pointed at another model before
  uint64_t tensors = 0;
  uint64_t raw_bytes = 0;  // tensor bytes in the source
  uint64_t chunks = 0;
  uint64_t new_chunks = 0;  // chunks the store did not hold before
  uint64_t new_raw_bytes = 0;
  uint64_t new_stored_bytes = 0;  // what the new chunks take (frames)
  double seconds = 0;
};

struct CompactResult {
  uint64_t manifests_removed = 0;
  uint64_t chunks_removed = 0;
  uint64_t stored_bytes_removed = 0;  // frame bytes of removed chunks
  uint64_t disk_before = 0;
  uint64_t disk_after = 0;
  int generations_removed = 0;
  int generations_in_use = 0;  // old generations kept because readers hold them
};

class StoreWriter {
 public:
  ~StoreWriter();
  // Takes the writer lock (waiting for it with wait), creating the store with
  // `init` settings if it does not exist. With may_use_reserve (rm,
  // compact), the disk space set aside in STORE/RESERVE is released when the
  // disk is nearly full, so that they work on a full disk (store/reserve.h).
  // Without it, the reserve is set aside again if the disk has room.
  // The store's own files and the model files it imports are accessed
  // through env (RocksDB's are not).
  static Result<std::unique_ptr<StoreWriter>> Open(const std::string& root, bool wait,
                                                   const StoreConfig& init = StoreConfig{},
                                                   bool may_use_reserve = false,
                                                   Env* env = Env::Default());

  const StoreView& view() const { return *view_; }
  const StoreConfig& config() const { return config_; }
  const StorePaths& paths() const { return paths_; }

  // Checks a source as Import does before it writes anything (every header,
  // and that each file is a regular file), without a store: callers that
  // would create a store for the import check first, so that a bad source
  // leaves no store behind.
  static Status CheckImportSource(const std::string& source);
  // Imports a safetensors file, a sharded model's folder or its index file.
  Result<ImportResult> Import(const std::string& source, const ModelName& name,
                              const ImportOptions& options);
  // Removes a name; the model's chunks go at the next compact if nothing else
  // refers to them.
  Status Remove(const ModelName& name);
  // Points name at the model src refers to.
  Status Tag(std::string_view src, const ModelName& name, bool force);
  // Remove and Tag commit their change, then publish it: when the publish
  // fails (a full disk) the error says the change is recorded, and readers
  // see it after the next writer command that succeeds.
  // Removes unreferenced manifests and chunks, reclaims their disk space,
  // and drops generations no reader holds.
  Result<CompactResult> Compact(const ProgressFn& progress = nullptr);
  Status SetConfig(const StoreConfig& c);

  // Commits a model whose chunks are in the store: the end of Import and of
  // a pull (store/commit_manifest.cc). `work` is how writing the chunks went;
  // if it failed, nothing is committed. Otherwise: the manifest and the name
  // are written without the WAL, after the chunks, and one atomic flush takes
  // chunks, records, manifest and name to disk; then a new generation is
  // published.
  // Whatever fails (work, the commit, or publishing for want of disk space),
  // the chunks in `written` are taken out and a commit is undone, so the
  // store is as it was; on a full disk the error is NoSpace and says what to
  // do. Exists when the name points at another model and !force.
  // REQUIRES: every chunk of the manifest is in the store when work is OK;
  // no manifest refers to the chunks in `written`.
  struct ModelCommit {
    std::string_view manifest;  // the manifest's bytes
    ModelDigest digest;         // Manifest::DigestOf(manifest)
    ModelName name;
    bool force = false;
    bool wrote_chunks = false;           // chunks were written: flush them first
    std::span<const ChunkKey> written;   // the chunks new to the store
    std::string_view verb = "imported";  // in messages: "<name> was not <verb>"
  };
  struct CommitOutcome {
    bool unchanged = false;  // the name already pointed at this model
    bool replaced = false;   // the name pointed at another model before
  };
  Result<CommitOutcome> CommitModel(Status work, const ModelCommit& c);
  // Sets the reserve aside again if it is gone; NoSpace if the disk has too
  // little room for it. Import and pull call it before they write a chunk, so
  // that they never fill a disk on which rm and compact could not then run.
  Status CheckReserve();

 private:
  StoreWriter() = default;
  Status Publish();
  // Takes out what a failed import wrote (the batch make_undo builds),
  // reopening the database with the reserve released if it refuses writes
  // (a full disk), then compacts so that the space goes back to the disk.
  Status TakeOut(const std::function<void(rocksdb::WriteBatch*)>& make_undo, bool reclaim);
  // Drops the database instance and opens a new one, which recovers every
  // committed change (a commit's flushed tables; the WAL of changes written
  // with it: tag, rm, a take-out): after a failed write or flush
  // RocksDB refuses writes, and one that stranded memtables (store/rocks.h)
  // cannot be resumed. With release_reserve, the reserve's space is given
  // back to the disk first. On failure the writer has no database left.
  Status Reopen(bool release_reserve);
  Result<std::string> NamesText() const;
  StorePaths paths_;
  StoreConfig config_;
  std::unique_ptr<WriterLock> lock_;
  std::unique_ptr<RocksDb> db_;
  std::unique_ptr<StoreView> view_;
};

// --- operations over a view ---------------------------------------------------

struct ExportOptions {
  int threads = 0;  // threads decoding ahead of the writer; 0: one per core
  ProgressFn progress;
  Env* env = Env::Default();  // what the files are written through
  std::string model;          // names the model in messages ("name:tag"); "": its digest
};
// Writes the model back as it was imported: one file at path, or for a sharded
// model the index and shards into the folder path (created if needed). Every
// chunk is checked; on any error no file is left behind. A damaged chunk is
// Corruption naming model, tensor and chunk (store/chunk_read.h).
Status ExportModel(const StoreView& view, const ModelDigest& digest, const std::string& path,
                   const ExportOptions& options);
// ExportModel's part for GGUF models (store/export_gguf.cc): one file at path,
// or a split model's files into the folder path.
Status ExportGguf(const StoreView& view, const Manifest& m, const std::string& path,
                  const ExportOptions& options);

struct VerifyProblem {
  std::string model;   // name:tag (or digest when no name refers to it)
  std::string tensor;  // "" when the problem is not a tensor's
  int64_t chunk = -1;  // chunk index within the tensor, or -1
  std::string chunk_key;
  std::string error;
  std::string file;  // a store file at fault (e.g. a generation's NAMES), or ""
};
struct VerifyReport {
  uint64_t models = 0;
  uint64_t manifests = 0;
  uint64_t chunks_checked = 0;
  uint64_t bytes_checked = 0;
  std::vector<VerifyProblem> problems;
  bool ok() const { return problems.empty(); }
};
// The writer's database checked for blob files it lists but lacks
// (store/writer_files.cc).
struct WriterFileCheck {
  WriterFileCheck();
  ~WriterFileCheck();
  WriterFileCheck(WriterFileCheck&&);
  WriterFileCheck& operator=(WriterFileCheck&&);
  std::vector<uint64_t> missing_blob_files;
  std::unique_ptr<RocksDb> db;  // db/, opened read-only, when some are missing
  bool db_checked = false;      // whether db/ was checked at all
  std::string not_checked;      // why not, when it was not
};
// Unchecked (db_checked false, with the reason) when a writer holds the lock
// (it may be changing db/ as it should), or when this user may not read db/
// (a group member: RocksDB makes db/'s files with the writer's umask).
Result<WriterFileCheck> CheckWriterFiles(const StorePaths& p);
// "000123.blob": the name of blob file number n in a RocksDB folder.
std::string BlobFileName(uint64_t number);

// writer: when given, every chunk whose blob file in the writer's database is
// among writer->missing_blob_files is a problem of every model that uses it.
Result<VerifyReport> VerifyStore(const StoreView& view, int threads, const ProgressFn& progress,
                                 const WriterFileCheck* writer = nullptr);
// Checks the reader's generation's NAMES file (its checksum, and every line
// against the database's names) and adds what is wrong to rep.
Status VerifyNamesFile(const StoreReader& reader, VerifyReport* rep);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;  // frames of its chunks
  uint64_t chunks = 0;
  uint64_t chunk_len = 0;      // the length its chunks are cut at (the last may be shorter)
  uint64_t shared_chunks = 0;  // chunks other models use too
  uint32_t ggml_type = 0;      // GGUF models only
};
struct ModelInfo {
  ModelDigest digest;
  std::vector<std::string> names;  // every name:tag pointing at it
  SourceFormat format;
  uint32_t chunk_size = 0;
  std::vector<std::string> files;
  std::string metadata_json;
  uint32_t alignment = 0;  // GGUF models only: general.alignment
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  uint64_t unique_chunks = 0;
  uint64_t shared_chunks = 0;
  std::vector<TensorInfo> tensors;
};
Result<ModelInfo> GetModelInfo(const StoreView& view, const ModelDigest& digest);

struct StoreStats {
  uint64_t names = 0;
  uint64_t models = 0;         // distinct manifests referenced by names
  uint64_t logical_bytes = 0;  // tensor bytes of every name, as if stored separately
  uint64_t unique_bytes = 0;   // raw bytes of distinct chunks
  uint64_t stored_bytes = 0;   // frame bytes of distinct chunks
  uint64_t chunks = 0;
  uint64_t disk_bytes = 0;  // the store's folder on disk (hard links counted once),
                            // without the space set aside in RESERVE
  double dedup_ratio() const { return unique_bytes ? double(logical_bytes) / unique_bytes : 1; }
  double compression_ratio() const {
    return unique_bytes ? double(stored_bytes) / unique_bytes : 1;
  }
};
Result<StoreStats> GetStoreStats(const StoreView& view, const std::string& root);

}  // namespace pstore
