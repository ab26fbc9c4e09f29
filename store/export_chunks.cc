// ExportChunks: see store/export_chunks.h.
#include "store/export_chunks.h"

namespace pstore {

ExportChunks::ExportChunks(const StoreView& view, const Manifest& m, std::string label,
                           const ExportOptions& options)
    : m_(m),
      label_(std::move(label)),
      options_(options),
      source_(view.db(), /*writable=*/false, "the store"),
      buf_(m.MaxChunkLen()),
      total_(m.TotalBytes()),
      last_report_(std::chrono::steady_clock::now()) {}

Status ExportChunks::Write(const ManifestTensor& t,
                           const std::function<Status(const uint8_t*, size_t)>& sink) {
  for (uint64_t j = 0; j < m_.ChunkCount(t); j++) {
    std::span<uint8_t> out(buf_.data(), size_t(m_.ChunkBytes(t, j)));
    PSTORE_RETURN_IF_ERROR(ReadChunk(source_, m_.chunks[t.first_chunk + j],
                                     ChunkUse{label_, t.name, j}, &decoder_, &batch_, out));
    PSTORE_RETURN_IF_ERROR(sink(out.data(), out.size()));
    done_ += out.size();
    if (options_.progress &&
        std::chrono::steady_clock::now() - last_report_ > std::chrono::milliseconds(100)) {
      last_report_ = std::chrono::steady_clock::now();
      if (!options_.progress(done_, total_))
        return Status::Aborted("export stopped at the caller's request");
    }
  }
  return Status::OK();
}

void ExportChunks::Finish() {
  if (options_.progress) options_.progress(total_, total_);
}

}  // namespace pstore
