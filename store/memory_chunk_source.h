// MemoryChunkSource: a ChunkSource in a map in memory, for tests and as the
// reference for the conformance suite.
//
// Thread-safety: all methods may be called from many threads at once (one
// mutex).
#pragma once

#include <map>
#include <mutex>

#include "store/chunk_source.h"

namespace pstore {

class MemoryChunkSource final : public ChunkSource {
 public:
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override;
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override;
  Status Write(std::span<const ChunkFrameRef> frames) override;
  std::string Describe() const override { return "memory"; }

 private:
  std::mutex mu_;
  std::map<ChunkKey, std::string> frames_;  // GUARDED_BY(mu_)
};

}  // namespace pstore
