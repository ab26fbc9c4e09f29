// info and stat: what a model and the store cost.
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "common/file_util.h"
#include "store/reserve.h"
#include "store/store.h"

namespace pstore {

Result<ModelInfo> GetModelInfo(const StoreView& view, const ModelDigest& digest) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<const Manifest> m, view.LoadManifest(digest));
  ModelInfo info;
  info.digest = digest;
  info.format = m->format;
  info.chunk_size = m->chunk_size;
  info.metadata_json = m->metadata_json;
  info.alignment = m->alignment;
  for (const auto& f : m->files) info.files.push_back(f.name);
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, view.ListNames());
  std::unordered_set<ChunkKey, ChunkKeyHasher> others;
  std::unordered_set<ModelDigest, ChunkKeyHasher> done;
  for (const auto& n : names) {
    if (n.digest == digest) {
      info.names.push_back(n.ref);
      continue;
    }
    if (!done.insert(n.digest).second) continue;
    auto om = view.LoadManifest(n.digest);
    if (!om.ok()) continue;  // verify reports it
    for (const auto& k : (*om)->chunks) others.insert(k);
  }
  std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> stored;
  auto records = view.GetChunkRecords(m->chunks);
  for (size_t i = 0; i < m->chunks.size(); i++) {
    PSTORE_RETURN_IF_ERROR(records[i].status());
    stored[m->chunks[i]] = *records[i] ? (*records[i])->stored_len : 0;
  }
  std::unordered_set<ChunkKey, ChunkKeyHasher> counted;
  for (const auto& t : m->tensors) {
    TensorInfo ti;
    ti.name = t.name;
    ti.dtype = t.dtype;
    ti.shape = t.shape;
    ti.ggml_type = t.ggml_type;
    ti.raw_bytes = t.size;
    ti.chunks = m->ChunkCount(t);
    ti.chunk_len = m->ChunkLen(t);
    for (uint64_t j = 0; j < ti.chunks; j++) {
      const ChunkKey& k = m->chunks[t.first_chunk + j];
      ti.stored_bytes += stored[k];
      if (others.count(k)) ti.shared_chunks++;
      if (counted.insert(k).second) {
        info.stored_bytes += stored[k];
        info.unique_chunks++;
        if (others.count(k)) info.shared_chunks++;
      }
    }
    info.raw_bytes += t.size;
    info.tensors.push_back(std::move(ti));
  }
  return info;
}

Result<StoreStats> GetStoreStats(const StoreView& view, const std::string& root) {
  StoreStats s;
  PSTORE_ASSIGN_OR_RETURN(std::vector<NameEntry> names, view.ListNames());
  s.names = names.size();
  std::map<ModelDigest, uint64_t> sizes;
  for (const auto& n : names) {
    auto it = sizes.find(n.digest);
    if (it == sizes.end()) {
      auto m = view.LoadManifest(n.digest);
      uint64_t b = m.ok() ? (*m)->TotalBytes() : 0;
      it = sizes.emplace(n.digest, b).first;
    }
    s.logical_bytes += it->second;
  }
  s.models = sizes.size();
  PSTORE_RETURN_IF_ERROR(view.ForEachChunkRecord([&](const ChunkKey&, const ChunkRecord& r) {
    s.chunks++;
    s.unique_bytes += r.raw_len;
    s.stored_bytes += r.stored_len;
    return Status::OK();
  }));
  s.disk_bytes = StoreDiskUsage(StorePaths{root});
  return s;
}

}  // namespace pstore
