// Export of GGUF models: each file rebuilt byte for byte from its verbatim
// header, its padding and its tensors' chunks (store/formats/gguf). A split
// model goes into a folder, one file per split under its imported name.
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "store/formats/gguf.h"
#include "store/store.h"

namespace pstore {

namespace fs = std::filesystem;

Status ExportGguf(const StoreView& view, const Manifest& m, const std::string& path,
                  const ExportOptions& options) {
  uint64_t total = m.TotalBytes();
  uint64_t done = 0;
  auto last_report = std::chrono::steady_clock::now();
  ChunkDecoder decoder;
  std::vector<uint8_t> buf(m.chunk_size);

  auto write_file = [&](const std::string& out, const ManifestFile& f) -> Status {
    gguf::FileHeader h;
    h.header_bytes = f.header_bytes;
    h.data_offset = f.header_bytes.size();
    h.data_size = f.data_size;
    h.filler = f.filler;
    for (uint32_t i : f.tensors) {
      const ManifestTensor& t = m.tensors[i];
      gguf::TensorEntry e;
      e.name = t.name;
      e.ggml_type = t.ggml_type;
      e.offset = t.offset;
      e.size = t.size;
      h.tensors.push_back(std::move(e));
    }
    return gguf::WriteFile(out, h, [&](size_t i, const gguf::ByteSink& sink) -> Status {
      const ManifestTensor& t = m.tensors[f.tensors[i]];
      for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
        std::span<uint8_t> out_span(buf.data(), size_t(m.ChunkBytes(t, j)));
        Status s = view.ReadChunk(m.chunks[t.first_chunk + j], &decoder, out_span);
        if (!s.ok()) return s.WithContext("tensor " + t.name + " chunk " + std::to_string(j));
        PSTORE_RETURN_IF_ERROR(sink(out_span.data(), out_span.size()));
        done += out_span.size();
        if (options.progress &&
            std::chrono::steady_clock::now() - last_report > std::chrono::milliseconds(100)) {
          last_report = std::chrono::steady_clock::now();
          if (!options.progress(done, total))
            return Status::Aborted("export stopped at the caller's request");
        }
      }
      return Status::OK();
    });
  };

  if (m.format == SourceFormat::kGguf) {
    PSTORE_RETURN_IF_ERROR(write_file(path, m.files[0]));
  } else {
    std::error_code ec;
    bool created = !fs::exists(path);
    fs::create_directories(path, ec);
    if (ec) return Status::IOError("cannot create folder " + path + ": " + ec.message());
    std::vector<std::string> written;
    for (const auto& f : m.files) {
      std::string out = (fs::path(path) / f.name).string();
      Status s = write_file(out, f);
      if (!s.ok()) {
        for (const auto& w : written) ::unlink(w.c_str());
        if (created) ::rmdir(path.c_str());
        return s;
      }
      written.push_back(out);
    }
  }
  if (options.progress) options.progress(total, total);
  return Status::OK();
}

}  // namespace pstore
