// Verify: decode every chunk of every manifest, check every manifest and name,
// and name the model, tensor and chunk of whatever is wrong.
#include <rocksdb/db.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include "store/chunk_read.h"
#include "store/names_file.h"
#include "store/rocks.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"

namespace pstore {

namespace {
struct ModelUse {
  std::string model;
  std::string tensor;
  int64_t chunk;
};
}  // namespace

Result<VerifyReport> VerifyStore(const StoreView& view, int threads, const ProgressFn& progress,
                                 const WriterFileCheck* writer) {
  PSTORE_RETURN_IF_ERROR(CheckThreads(threads, "the number of verify threads"));
  VerifyReport rep;
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, view.ListNames());
  std::map<ModelDigest, std::vector<std::string>> labels;
  for (const auto& n : names) labels[n.digest].push_back(n.ref);
  PSTORE_ASSIGN_OR_RETURN(std::vector<ModelDigest> manifests, view.ListManifests());
  for (const auto& [d, refs] : labels) {
    if (std::find(manifests.begin(), manifests.end(), d) == manifests.end())
      for (const auto& r : refs)
        rep.problems.push_back({r, "", -1, "", "its manifest " + d.Hex() + " is missing", ""});
  }
  auto label_of = [&](const ModelDigest& d) {
    auto it = labels.find(d);
    if (it == labels.end()) return d.Hex() + " (unnamed)";
    std::string s;
    for (const auto& r : it->second) s += (s.empty() ? "" : ", ") + r;
    return s;
  };

  std::unordered_map<ChunkKey, std::vector<ModelUse>, ChunkKeyHasher> uses;
  std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> lengths;
  for (const auto& d : manifests) {
    rep.manifests++;
    if (labels.count(d)) rep.models++;
    auto m = view.LoadManifest(d);
    if (!m.ok()) {
      rep.problems.push_back({label_of(d), "", -1, "", m.status().ToString(), ""});
      continue;
    }
    for (const auto& t : (*m)->tensors)
      for (uint64_t j = 0; j < (*m)->ChunkCount(t); j++) {
        const ChunkKey& k = (*m)->chunks[t.first_chunk + j];
        uses[k].push_back({label_of(d), t.name, int64_t(j)});
        lengths[k] = (*m)->ChunkBytes(t, j);
      }
  }

  std::vector<ChunkKey> keys;
  keys.reserve(uses.size());
  uint64_t total = 0;
  for (const auto& [k, u] : uses) {
    keys.push_back(k);
    total += lengths[k];
  }
  std::sort(keys.begin(), keys.end());
  if (writer && writer->db && !writer->missing_blob_files.empty()) {
    // The generation still reads these chunks (its hard links keep the
    // files), but the writer cannot: name every model that uses them.
    const auto& missing_blob_files = writer->missing_blob_files;
    std::vector<StoreView::ChunkPlace> places(keys.size());
    PSTORE_RETURN_IF_ERROR(
        StoreView(writer->db.get()).LocateChunks(keys.data(), keys.size(), places.data()));
    for (size_t i = 0; i < keys.size(); i++) {
      if (std::find(missing_blob_files.begin(), missing_blob_files.end(), places[i].file) ==
          missing_blob_files.end())
        continue;
      for (const auto& u : uses[keys[i]])
        rep.problems.push_back(
            {u.model, u.tensor, u.chunk, keys[i].Hex(),
             "its blob file " + BlobFileName(places[i].file) +
                 " is missing from the store's database (db/); rm, compact and import fail "
                 "until it is back (see docs/operations.md, \"When verify reports damage\")",
             "db/" + BlobFileName(places[i].file)});
    }
  }
  // Every chunk's record, read together (one point lookup each costs a
  // table block's decompression).
  auto records = view.GetChunkRecords(keys);
  std::mutex mu;
  std::atomic<uint64_t> done{0};
  if (threads <= 0) threads = DefaultThreads();
  // Chunks are read and checked as the pager and export read them
  // (store/chunk_read.h); each problem names every use of the chunk.
  RocksChunkSource source(view.db(), /*writable=*/false, "the store");
  std::vector<ChunkDecoder> decoders(static_cast<size_t>(threads));
  std::vector<FrameBatch> batches(static_cast<size_t>(threads));
  std::vector<std::vector<uint8_t>> bufs(static_cast<size_t>(threads));
  auto report = [&](const ChunkKey& k, const std::string& err) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& u : uses[k])
      rep.problems.push_back({u.model, u.tensor, u.chunk, k.Hex(), err, ""});
  };
  Status st = ParallelFor(
      keys.size(), threads,
      [&](size_t i, int w) -> Status {
        const ChunkKey& k = keys[i];
        uint64_t len = lengths[k];
        if (!records[i].ok()) {
          report(k, records[i].status().ToString());
        } else if (const auto& rec = *records[i]; !rec) {
          report(k, "chunk record missing (compact could not account for this chunk)");
        } else if (rec->raw_len != len) {
          report(k, "chunk record gives length " + std::to_string(rec->raw_len) +
                        ", the manifest " + std::to_string(len));
        }
        bufs[size_t(w)].resize(len);
        FrameBatch& batch = batches[size_t(w)];
        Status s = source.ReadFrames(std::span<const ChunkKey>(&k, 1), &batch);
        if (s.ok()) {
          s = DecodeFrame(batch, 0, k, source, &decoders[size_t(w)], bufs[size_t(w)]);
          // A decoder out of memory has found nothing wrong with the chunk.
          if (s.code() == Status::Code::kNoMemory) return s;
        }
        if (!s.ok()) report(k, s.ToString());
        done += len;
        return Status::OK();
      },
      &done, total, progress);
  PSTORE_RETURN_IF_ERROR(st);
  if (writer && writer->db)
    for (uint64_t f : writer->missing_blob_files)
      if (std::none_of(rep.problems.begin(), rep.problems.end(), [&](const VerifyProblem& p) {
            return p.error.find(BlobFileName(f)) != std::string::npos;
          }))
        rep.problems.push_back(
            {"(no model)", "", -1, "",
             "blob file " + BlobFileName(f) + " is missing from the store's database (db/)",
             "db/" + BlobFileName(f)});
  rep.chunks_checked = keys.size();
  rep.bytes_checked = total;
  std::sort(rep.problems.begin(), rep.problems.end(), [](const auto& a, const auto& b) {
    return std::tie(a.model, a.tensor, a.chunk) < std::tie(b.model, b.tensor, b.chunk);
  });
  return rep;
}

Status VerifyNamesFile(const StoreReader& reader, VerifyReport* rep) {
  const std::string path = reader.names_file();
  auto file = ReadNamesFile(path);
  if (!file.ok()) {
    if (file.status().IsNotFound()) return Status::OK();  // a generation from before NAMES
    if (!file.status().IsCorruption()) return file.status();
    rep->problems.push_back({"", "", -1, "", file.status().message(), path});
    return Status::OK();
  }
  if (!*file) return Status::OK();  // the old form, unchecked: readers do not use it
  PSTORE_RETURN_IF_ERROR(reader.EnsureDb());
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, reader.view().ListNames());
  NameMap db;
  for (const auto& n : names) db.emplace(n.ref, n.digest);
  const NameMap& f = **file;
  auto problem = [&](const std::string& ref, const std::string& what) {
    rep->problems.push_back({ref, "", -1, "",
                             "store file " + path + " " + what +
                                 "; any writing command (such as `pstore compact`) publishes a "
                                 "new one from the database",
                             path});
  };
  for (const auto& [ref, d] : db) {
    auto it = f.find(ref);
    if (it == f.end())
      problem(ref, "does not list it (the database does)");
    else if (it->second != d)
      problem(ref, "points it at " + it->second.Hex() + ", the database at " + d.Hex());
  }
  for (const auto& [ref, d] : f)
    if (!db.count(ref)) problem(ref, "lists it, but the database does not");
  return Status::OK();
}

}  // namespace pstore

namespace pstore {
WriterFileCheck::WriterFileCheck() = default;
WriterFileCheck::~WriterFileCheck() = default;
WriterFileCheck::WriterFileCheck(WriterFileCheck&&) = default;
WriterFileCheck& WriterFileCheck::operator=(WriterFileCheck&&) = default;
}  // namespace pstore
