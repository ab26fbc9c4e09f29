// Export: rebuild a model's source file(s) byte for byte from its chunks.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/file_util.h"
#include "store/formats/safetensors.h"
#include "store/store.h"

namespace pstore {

namespace fs = std::filesystem;

namespace {

safetensors::FileHeader HeaderOf(const Manifest& m, const ManifestFile& f) {
  safetensors::FileHeader h;
  h.header_bytes = f.header_bytes;
  h.data_size = f.data_size;
  h.data_offset = f.header_bytes.size();
  for (uint32_t i : f.tensors) {
    const ManifestTensor& t = m.tensors[i];
    safetensors::TensorEntry e;
    e.name = t.name;
    e.dtype = t.dtype;
    e.shape = t.shape;
    e.begin = t.offset;
    e.end = t.offset + t.size;
    h.tensors.push_back(std::move(e));
  }
  return h;
}

}  // namespace

Status ExportModel(const StoreView& view, const ModelDigest& digest, const std::string& path,
                   const ExportOptions& options) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<const Manifest> mp, view.LoadManifest(digest));
  const Manifest& m = *mp;
  if (IsGguf(m.format)) return ExportGguf(view, m, path, options);
  uint64_t total = m.TotalBytes();
  uint64_t done = 0;
  auto last_report = std::chrono::steady_clock::now();
  ChunkDecoder decoder;
  std::vector<uint8_t> buf(m.chunk_size);

  auto write_file = [&](const std::string& out, const ManifestFile& f) -> Status {
    return safetensors::WriteFile(
        out, HeaderOf(m, f),
        [&](size_t i, const safetensors::ByteSink& sink) -> Status {
          const ManifestTensor& t = m.tensors[f.tensors[i]];
          for (uint64_t j = 0; j < m.ChunkCount(t); j++) {
            const ChunkKey& key = m.chunks[t.first_chunk + j];
            std::span<uint8_t> out_span(buf.data(), size_t(m.ChunkBytes(t, j)));
            Status s = view.ReadChunk(key, &decoder, out_span);
            if (!s.ok())
              return s.WithContext("tensor " + t.name + " chunk " + std::to_string(j));
            PSTORE_RETURN_IF_ERROR(sink(out_span.data(), out_span.size()));
            done += out_span.size();
            if (options.progress && std::chrono::steady_clock::now() - last_report >
                                        std::chrono::milliseconds(100)) {
              last_report = std::chrono::steady_clock::now();
              if (!options.progress(done, total))
                return Status::Aborted("export stopped at the caller's request");
            }
          }
          return Status::OK();
        },
        options.env);
  };

  if (m.format == SourceFormat::kSafetensors) {
    PSTORE_RETURN_IF_ERROR(write_file(path, m.files[0]));
  } else {
    bool created = !options.env->Exists(path);
    PSTORE_RETURN_IF_ERROR(options.env->CreateDirs(path));
    std::vector<std::string> written;
    auto fail = [&](const Status& s) {
      for (const auto& w : written) (void)options.env->Remove(w);
      if (created) (void)options.env->RemoveDir(path);
      return s;
    };
    for (const auto& f : m.files) {
      std::string out = (fs::path(path) / f.name).string();
      Status s = write_file(out, f);
      if (!s.ok()) return fail(s);
      written.push_back(out);
    }
    std::string index = (fs::path(path) / m.index_name).string();
    Status s = WriteFileAtomic(options.env, index, m.index_bytes, 0644);
    if (!s.ok()) return fail(s);
  }
  if (options.progress) options.progress(total, total);
  return Status::OK();
}

}  // namespace pstore
