// MemoryChunkSource: see store/memory_chunk_source.h.
#include "store/memory_chunk_source.h"

namespace pstore {

Result<std::vector<std::optional<std::string>>> MemoryChunkSource::Read(
    std::span<const ChunkKey> keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = frames_.find(keys[i]);
    if (it != frames_.end()) out[i] = it->second;
  }
  return out;
}

Result<std::vector<bool>> MemoryChunkSource::Contains(std::span<const ChunkKey> keys) {
  std::vector<bool> out(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) out[i] = frames_.count(keys[i]) != 0;
  return out;
}

Status MemoryChunkSource::Write(std::span<const ChunkFrameRef> frames) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ChunkFrameRef& f : frames) frames_.try_emplace(f.key, std::string(f.frame));
  return Status::OK();
}

}  // namespace pstore
