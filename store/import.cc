// Import: validate the source, cut tensors into chunks, hash, deduplicate,
// encode and write new chunks in parallel, then commit manifest and name.
#include <fcntl.h>
#include <rocksdb/db.h>
#include <sys/stat.h>
#include <time.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <unordered_map>

#include "common/coding.h"
#include "common/env.h"
#include "common/file_util.h"
#include "store/formats/gguf.h"
#include "store/formats/safetensors.h"
#include "store/keys.h"
#include "store/rocks.h"
#include "store/store.h"

namespace pstore {

namespace fs = std::filesystem;

namespace {

struct Source {
  SourceFormat format = SourceFormat::kSafetensors;
  std::string index_name;
  std::string index_bytes;
  std::vector<std::string> names;  // file names as stored in the manifest
  std::vector<std::string> paths;  // where to read them
  std::vector<safetensors::FileHeader> headers;
  std::vector<gguf::FileHeader> gguf_headers;  // GGUF sources (headers stays empty)
};

// A GGUF file, or every split of a split model, validated.
Result<Source> OpenGguf(const std::string& path) {
  Source src;
  auto splits = gguf::SplitSiblings(path);
  src.format = splits ? SourceFormat::kGgufSplit : SourceFormat::kGguf;
  src.paths = splits ? *splits : std::vector<std::string>{path};
  std::unordered_map<std::string, std::string> owner;  // tensor name -> file
  for (size_t i = 0; i < src.paths.size(); i++) {
    const std::string& p = src.paths[i];
    if (!fs::exists(p))
      return Status::NotFound("cannot import " + path + ": split " + std::to_string(i + 1) +
                              " of " + std::to_string(src.paths.size()) + ", " + p +
                              ", is missing; every split must sit in the same folder");
    PSTORE_ASSIGN_OR_RETURN(gguf::FileHeader h, gguf::ReadFile(p));
    if (splits && h.split_count != 0 && (h.split_count != src.paths.size() || h.split_no != i))
      return Status::InvalidArgument(
          "GGUF file " + p + ": its split.no " + std::to_string(h.split_no) + " and split.count " +
          std::to_string(h.split_count) + " do not match its name (split " + std::to_string(i) +
          " of " + std::to_string(src.paths.size()) + ", counting from 0)");
    for (const auto& t : h.tensors) {
      auto [it, fresh] = owner.emplace(t.name, p);
      if (!fresh)
        return Status::InvalidArgument("GGUF split model " + path + ": tensor \"" + t.name +
                                       "\" is in both " + it->second + " and " + p);
    }
    src.names.push_back(fs::path(p).filename().string());
    src.gguf_headers.push_back(std::move(h));
  }
  return src;
}

Result<Source> OpenSource(const std::string& path, Env* env) {
  Source src;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec == std::errc::too_many_symbolic_link_levels)
    return Status::InvalidArgument("cannot import " + path +
                                   ": it is a symbolic link loop; point the link at a file");
  if (ec || !fs::exists(st))
    return Status::NotFound("cannot import " + path + ": no such file or folder");
  std::string dir, index;
  if (fs::is_directory(st)) {
    if (fs::exists(fs::symlink_status(fs::path(path) / "model.safetensors.index.json", ec))) {
      dir = path;
      index = "model.safetensors.index.json";
    } else {
      std::vector<std::string> found;
      for (auto& e : fs::directory_iterator(path, ec))
        if (e.path().extension() == ".safetensors") found.push_back(e.path().string());
      if (found.empty())
        return Status::InvalidArgument("cannot import " + path +
                                       ": the folder holds no .safetensors file");
      if (found.size() > 1)
        return Status::InvalidArgument(
            "cannot import " + path +
            ": the folder holds several .safetensors files and no model.safetensors.index.json; "
            "import the files one by one or add an index");
      src.paths.push_back(found[0]);
    }
  } else if (fs::path(path).extension() == ".json") {
    dir = fs::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    index = fs::path(path).filename().string();
  } else if (fs::path(path).extension() == ".gguf" || gguf::HasMagic(path)) {
    return OpenGguf(path);
  } else {
    src.paths.push_back(path);
  }
  if (!index.empty()) {
    PSTORE_ASSIGN_OR_RETURN(safetensors::ShardedModel sm,
                            safetensors::ReadSharded(dir, index, env));
    src.format = SourceFormat::kSafetensorsSharded;
    src.index_name = sm.index_file_name;
    src.index_bytes = std::move(sm.index_bytes);
    for (size_t i = 0; i < sm.shard_names.size(); i++) {
      src.paths.push_back((fs::path(dir) / sm.shard_names[i]).string());
      src.names.push_back(sm.shard_names[i]);
    }
    src.headers = std::move(sm.shards);
    return src;
  }
  PSTORE_ASSIGN_OR_RETURN(safetensors::FileHeader h, safetensors::ReadHeader(src.paths[0], env));
  src.headers.push_back(std::move(h));
  src.names.push_back(fs::path(src.paths[0]).filename().string());
  return src;
}

struct Item {
  uint32_t file;
  uint64_t offset;  // absolute, in the source file
  uint32_t len;
  uint64_t chunk;  // index into Manifest::chunks
  ChunkType type;  // what the encoder is told of the chunk
};

struct Worker {
  explicit Worker(const EncodeOptions& o) : encoder(o) {}
  ChunkEncoder encoder;
  ChunkDecoder decoder;
  std::vector<uint8_t> raw, other;
  std::string frame;
  // Chunks encoded and not yet written: written together once they are
  // kWriteBatchBytes, so that the workers do not queue on RocksDB's write
  // path once per chunk.
  rocksdb::WriteBatch batch;
  std::vector<ChunkKey> batch_new;  // of them, keys the store did not have
  uint64_t batch_chunks = 0, batch_raw = 0, batch_stored = 0;
};
constexpr size_t kWriteBatchBytes = 4 << 20;

}  // namespace

Status StoreWriter::CheckImportSource(const std::string& source) {
  return OpenSource(source, Env::Default()).status();
}

Result<ImportResult> StoreWriter::Import(const std::string& source, const ModelName& name,
                                         const ImportOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  ImportResult res;
  PSTORE_RETURN_IF_ERROR(CheckThreads(options.threads, "the number of import threads"));
  // Refuse early, before any byte is written, what would fail at commit.
  auto existing = view_->GetName(name);
  if (!existing.ok() && !existing.status().IsNotFound()) return existing.status();
  PSTORE_ASSIGN_OR_RETURN(Source src, OpenSource(source, paths_.env));
  PSTORE_RETURN_IF_ERROR(CheckReserve().WithContext(name.Ref() + " was not imported"));

  Manifest m;
  m.format = src.format;
  m.chunk_size = config_.chunk_size;
  m.index_name = src.index_name;
  m.index_bytes = src.index_bytes;
  if (src.format == SourceFormat::kSafetensors) m.metadata_json = src.headers[0].metadata_json;
  std::vector<Item> items;
  for (uint32_t f = 0; f < src.headers.size(); f++) {
    const auto& h = src.headers[f];
    ManifestFile mf;
    mf.name = src.names[f];
    mf.header_bytes = h.header_bytes;
    mf.data_size = h.data_size;
    for (const auto& e : h.tensors) {
      ManifestTensor t;
      t.name = e.name;
      t.dtype = e.dtype;
      t.shape = e.shape;
      t.file = f;
      t.offset = e.begin;
      t.size = e.size();
      t.first_chunk = m.chunks.size();
      uint64_t n = m.ChunkCount(t);
      for (uint64_t j = 0; j < n; j++) {
        items.push_back({f, h.data_offset + t.offset + m.ChunkStart(t, j),
                         uint32_t(m.ChunkBytes(t, j)), m.chunks.size(), ChunkType{t.dtype, {}}});
        m.chunks.emplace_back();
      }
      mf.tensors.push_back(uint32_t(m.tensors.size()));
      m.tensors.push_back(std::move(t));
      res.raw_bytes += e.size();
    }
    m.files.push_back(std::move(mf));
  }
  if (!src.gguf_headers.empty()) m.metadata_json = src.gguf_headers[0].metadata_json;
  for (uint32_t f = 0; f < src.gguf_headers.size(); f++) {
    const auto& h = src.gguf_headers[f];
    m.alignment = std::max(m.alignment, h.alignment);
    ManifestFile mf;
    mf.name = src.names[f];
    mf.header_bytes = h.header_bytes;
    mf.data_size = h.data_size;
    mf.filler = h.filler;
    for (const auto& e : h.tensors) {
      ManifestTensor t;
      t.name = e.name;
      t.ggml_type = e.ggml_type;
      t.dtype = gguf::GgmlDType(e.ggml_type);
      const BlockLayout layout = gguf::GgmlBlockLayout(e.ggml_type);
      t.shape.assign(e.dims.rbegin(), e.dims.rend());  // outermost first, as safetensors
      t.file = f;
      t.offset = e.offset;
      t.size = e.size;
      t.first_chunk = m.chunks.size();
      // Block types: chunks cut on block (and page) boundaries.
      t.chunk_len = gguf::GgmlChunkLength(e.ggml_type, m.chunk_size);
      uint64_t n = m.ChunkCount(t);
      for (uint64_t j = 0; j < n; j++) {
        // Quantized blocks: the codec is told the layout and where in a
        // block the chunk starts (0 but for chunks of a type whose blocks
        // the chunks could not follow).
        ChunkType type{t.dtype, {layout, 0}};
        if (layout.bytes) type.block.phase = uint32_t(m.ChunkStart(t, j) % layout.bytes);
        items.push_back({f, h.data_offset + t.offset + m.ChunkStart(t, j),
                         uint32_t(m.ChunkBytes(t, j)), m.chunks.size(), type});
        m.chunks.emplace_back();
      }
      mf.tensors.push_back(uint32_t(m.tensors.size()));
      m.tensors.push_back(std::move(t));
      res.raw_bytes += e.size;
    }
    m.files.push_back(std::move(mf));
  }
  res.tensors = m.tensors.size();
  res.chunks = m.chunks.size();

  // If the name already points at a different model, refuse now unless forced.
  // (Whether the models differ is known for certain only after hashing.)
  std::vector<std::unique_ptr<RandomAccessFile>> files;
  for (const auto& p : src.paths) {
    PSTORE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f, paths_.env->OpenForRead(p));
    f->HintSequential();
    files.push_back(std::move(f));
  }

  EncodeOptions eo;
  eo.profile = options.profile.value_or(config_.profile);
  eo.zstd_level = config_.zstd_level;
  int threads = options.threads > 0 ? options.threads : DefaultThreads();
  threads = int(std::min<size_t>(size_t(threads), std::max<size_t>(items.size(), 1)));
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; i++) workers.push_back(std::make_unique<Worker>(eo));

  std::mutex mu;  // guards seen, written and the counters below
  std::unordered_map<ChunkKey, size_t, ChunkKeyHasher> seen;  // key -> first item
  std::vector<ChunkKey> written;
  std::atomic<uint64_t> done{0};
  rocksdb::WriteOptions nowal;
  nowal.disableWAL = true;

  // Writes a worker's pending chunks; once written, they count as this
  // import's (and are taken out again if it fails).
  auto write_batch = [&](Worker* W) -> Status {
    if (W->batch_chunks == 0) return Status::OK();
    Status ws = FromRocks(db_->db()->Write(nowal, &W->batch), "write chunks");
    if (ws.ok()) {
      std::lock_guard<std::mutex> l(mu);
      written.insert(written.end(), W->batch_new.begin(), W->batch_new.end());
      res.new_chunks += W->batch_chunks;
      res.new_raw_bytes += W->batch_raw;
      res.new_stored_bytes += W->batch_stored;
    }
    W->batch.Clear();
    W->batch_new.clear();
    W->batch_chunks = W->batch_raw = W->batch_stored = 0;
    return ws;
  };
  auto read_item = [&](const Item& it, std::vector<uint8_t>* buf) {
    buf->resize(it.len);
    return files[it.file]->Read(it.offset, it.len, buf->data());
  };
  auto collision = [&](const ChunkKey& k) {
    return Status::Corruption("two different chunks share the key " + k.Hex() +
                              " (an XXH3-128 collision, or a file crafted to collide); the import "
                              "was refused and nothing was changed");
  };

  Status st = ParallelFor(
      items.size(), threads,
      [&](size_t i, int w) -> Status {
        Worker& W = *workers[size_t(w)];
        const Item& it = items[i];
        PSTORE_RETURN_IF_ERROR(read_item(it, &W.raw));
        ChunkKey key = HashBytes(W.raw.data(), W.raw.size());
        m.chunks[it.chunk] = key;
        size_t first;
        bool repeat;
        {
          std::lock_guard<std::mutex> l(mu);
          auto [pos, inserted] = seen.emplace(key, i);
          first = pos->second;
          repeat = !inserted;
        }
        if (repeat) {
          // The same bytes again within this model: compare, then reuse.
          PSTORE_RETURN_IF_ERROR(read_item(items[first], &W.other));
          if (W.other != W.raw) return collision(key);
          done += it.len;
          return Status::OK();
        }
        PSTORE_ASSIGN_OR_RETURN(std::optional<ChunkRecord> rec, view_->GetChunkRecord(key));
        if (rec) {
          W.other.resize(W.raw.size());
          Status rs = rec->raw_len == W.raw.size()
                          ? view_->ReadChunk(key, &W.decoder, W.other)
                          : Status::Corruption("chunk record length differs");
          if (rs.ok()) {
            if (W.other != W.raw) return collision(key);
            done += it.len;
            return Status::OK();
          }
          if (!rs.IsCorruption()) return rs;
          // The stored copy is damaged: write this good one over it.
        }
        const FrameDescription desc = W.encoder.Encode(W.raw, it.type, &W.frame);
        ChunkRecord r;
        r.raw_len = W.raw.size();
        r.stored_len = W.frame.size();
        r.frame_version = desc.version;
        r.transform = uint8_t(desc.transform);
        W.batch.Put(db_->chunks(), rocksdb::Slice(key.view().data(), 16), W.frame);
        W.batch.Put(db_->meta(), keys::ChunkRecord(key), r.Encode());
        if (!rec) W.batch_new.push_back(key);
        W.batch_chunks++;
        W.batch_raw += r.raw_len;
        W.batch_stored += r.stored_len;
        done += it.len;
        return W.batch.GetDataSize() >= kWriteBatchBytes ? write_batch(&W) : Status::OK();
      },
      &done, res.raw_bytes, options.progress);
  for (auto& w : workers)
    if (st.ok()) st = write_batch(w.get());  // after a failure: nothing more to write

  // Commit (store/commit_manifest.cc): manifest and name written after the
  // chunks, and one atomic flush takes what is not on disk yet to disk
  // together; on failure, take out what this import wrote.
  std::string bytes;
  if (st.ok()) {
    bytes = m.Serialize();
    res.digest = Manifest::DigestOf(bytes);
  }
  ModelCommit c;
  c.manifest = bytes;
  c.digest = res.digest;
  c.name = name;
  c.force = options.force;
  c.wrote_chunks = res.new_chunks > 0;
  c.written = written;
  c.verb = "imported";
  PSTORE_ASSIGN_OR_RETURN(CommitOutcome out, CommitModel(st, c));
  res.unchanged = out.unchanged;
  res.replaced = out.replaced;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace pstore
