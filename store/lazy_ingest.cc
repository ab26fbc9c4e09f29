// Ingesting the lazy cache: see store/lazy_ingest.h.
#include "store/lazy_ingest.h"

#include <unordered_set>

#include "codec/chunk_codec.h"
#include "store/rocks_chunk_source.h"
#include "store/store_access.h"

namespace pstore {

namespace {

// A process writing to lazy/tmp/ finishes a file within its remote's timeout;
// anything older was left by a process that died.
constexpr std::chrono::seconds kStaleTemporary{600};
// Spooled frames written to the store per batch: what ingest holds in memory.
constexpr uint64_t kIngestBatchBytes = 64ull << 20;

struct Outcome {
  bool published = false;
  bool partial = false;
  bool skipped = false;
  uint64_t chunks = 0;
};

// One cached model: all its chunks local, or nothing done.
Result<Outcome> IngestOne(StoreWriter* w, const LazyCache& cache, const CachedName& n,
                          std::unordered_set<ChunkKey, ChunkKeyHasher>* ingested) {
  Outcome o;
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes, cache.GetManifest(n.digest));
  if (!bytes) {  // a name without its manifest: nothing to publish from it
    PSTORE_RETURN_IF_ERROR(cache.RemoveName(n.remote, n.ref));
    return o;
  }
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(n.ref));
  auto existing = w->view().GetName(name);
  if (existing.ok() && existing->digest != n.digest) {
    o.skipped = true;
    return o;
  }
  PSTORE_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(*bytes, false));
  RocksChunkSource local(w->view().db(), true, "the local store");
  std::vector<ChunkKey> keys;
  std::vector<uint64_t> lens;
  std::unordered_set<ChunkKey, ChunkKeyHasher> seen;
  for (const ManifestTensor& t : m.tensors) {
    for (uint64_t j = 0; j < m.ChunkCount(t); ++j) {
      const ChunkKey& k = m.chunks[t.first_chunk + j];
      if (seen.insert(k).second) keys.push_back(k), lens.push_back(m.ChunkBytes(t, j));
    }
  }
  PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, local.Contains(keys));
  // Nothing is written unless every chunk the store lacks is in the spool.
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!have[i] && !cache.HasFrame(keys[i])) {
      o.partial = true;
      return o;
    }
  }
  PSTORE_RETURN_IF_ERROR(w->CheckReserve().WithContext(n.ref + " was not ingested"));
  // The spooled frames, each checked against its key, go into the store in
  // batches of kIngestBatchBytes, written as import writes (without the WAL:
  // on a full disk nothing has to be replayed before they can be taken out);
  // CommitModel's flush carries them to disk with the commit.
  std::vector<ChunkKey> written;
  bool damaged = false;
  auto write_all = [&]() -> Status {
    ChunkDecoder decoder;
    std::vector<uint8_t> raw;
    std::vector<SpooledFrame> frames;
    std::vector<ChunkKey> batch;
    uint64_t bytes = 0;
    auto flush = [&]() -> Status {
      std::vector<ChunkFrameRef> refs;
      for (size_t j = 0; j < frames.size(); ++j)
        refs.push_back({batch[j], frames[j].frame, frames[j].raw_len});
      if (!refs.empty()) PSTORE_RETURN_IF_ERROR(local.WriteChecked(refs));
      written.insert(written.end(), batch.begin(), batch.end());
      frames.clear();
      batch.clear();
      bytes = 0;
      return Status::OK();
    };
    for (size_t i = 0; i < keys.size(); ++i) {
      if (have[i]) continue;
      PSTORE_ASSIGN_OR_RETURN(std::optional<SpooledFrame> f, cache.GetFrame(keys[i]));
      raw.resize(lens[i]);
      Status st = f && f->raw_len == lens[i] ? decoder.Decode(f->frame, keys[i], raw)
                                             : Status::Corruption("wrong length");
      if (!st.ok() && !st.IsCorruption()) return st;  // out of memory: the frame may be sound
      if (!st.ok()) {
        if (f) (void)cache.RemoveFrame(keys[i]);  // damaged: fetched again when needed
        damaged = true;
        return Status::Aborted("a spooled chunk of " + n.ref + " is damaged");
      }
      bytes += f->frame.size();
      batch.push_back(keys[i]);
      frames.push_back(std::move(*f));
      if (bytes >= kIngestBatchBytes) PSTORE_RETURN_IF_ERROR(flush());
    }
    return flush();
  };
  Status work = write_all();
  // Import's commit: on any failure (a damaged spooled chunk included) the
  // chunks written here are taken out again and the store is as it was.
  StoreWriter::ModelCommit mc;
  mc.manifest = *bytes;
  mc.digest = n.digest;
  mc.name = name;
  mc.wrote_chunks = !written.empty();
  mc.written = written;
  mc.verb = "ingested";
  auto committed = w->CommitModel(work, mc);
  if (damaged) {
    o.partial = true;
    return o;
  }
  if (!committed.ok())
    return committed.status().WithContext("ingesting the lazily cached " + n.ref);
  o.published = true;
  o.chunks = written.size();
  ingested->insert(keys.begin(), keys.end());
  PSTORE_RETURN_IF_ERROR(cache.RemoveName(n.remote, n.ref));
  return o;
}

}  // namespace

Result<IngestResult> IngestLazyCache(StoreWriter* w) {
  IngestResult res;
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(w->config()));
  LazyCache cache(w->paths().root, access);
  res.temporaries_removed = cache.RemoveStaleTemporaries(kStaleTemporary);
  std::unordered_set<ChunkKey, ChunkKeyHasher> ingested;
  std::unordered_set<ModelDigest, ChunkKeyHasher> still_cached;
  std::vector<ModelDigest> published;
  for (const CachedName& n : cache.ListNames()) {
    // One entry that cannot be ingested (a damaged manifest, a full disk)
    // is reported and stays cached; the others go on.
    auto one = IngestOne(w, cache, n, &ingested);
    if (!one.ok()) {
      res.failed.push_back(n.ref + ": " + one.status().ToString());
      still_cached.insert(n.digest);
      continue;
    }
    const Outcome& o = *one;
    res.chunks += o.chunks;
    if (o.published) res.published.push_back(n.ref), published.push_back(n.digest);
    if (o.partial) res.partial.push_back(n.ref), still_cached.insert(n.digest);
    if (o.skipped) res.skipped.push_back(n.ref), still_cached.insert(n.digest);
  }
  // What is now in the store leaves the spool; manifests no name needs go.
  RocksChunkSource local(w->view().db(), false, "the local store");
  std::vector<ChunkKey> spool = cache.ListSpool();
  if (!spool.empty()) {
    PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, local.Contains(spool));
    for (size_t i = 0; i < spool.size(); ++i) {
      if (have[i]) PSTORE_RETURN_IF_ERROR(cache.RemoveFrame(spool[i]));
    }
  }
  // The manifests of published models go, unless another cached name needs them.
  for (const CachedName& n : cache.ListNames()) still_cached.insert(n.digest);
  for (const ModelDigest& d : published) {
    if (!still_cached.count(d)) PSTORE_RETURN_IF_ERROR(cache.RemoveManifest(d));
  }
  return res;
}

}  // namespace pstore
