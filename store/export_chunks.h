// The chunk side of export, shared by safetensors and GGUF export: a
// model's tensors, chunk by chunk, read and checked through the store's
// ChunkSource (store/chunk_read.h, so a damaged chunk is named as the pager
// and verify name it), with progress reports and the caller's stop.
//
// Thread-safety: one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/chunk_read.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"

namespace pstore {

class ExportChunks {
 public:
  // view and options must outlive this; label names the model in messages.
  ExportChunks(const StoreView& view, const Manifest& m, std::string label,
               const ExportOptions& options);
  // Calls sink with each chunk of tensor t, in order; Aborted when the
  // progress callback asks to stop.
  Status Write(const ManifestTensor& t, const std::function<Status(const uint8_t*, size_t)>& sink);
  // The last progress report (every byte done).
  void Finish();

 private:
  const Manifest& m_;
  std::string label_;
  const ExportOptions& options_;
  RocksChunkSource source_;
  ChunkDecoder decoder_;
  FrameBatch batch_;
  std::vector<uint8_t> buf_;
  uint64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point last_report_;
};

}  // namespace pstore
