// Export of GGUF models: each file rebuilt byte for byte from its verbatim
// header, its padding and its tensors' chunks (store/formats/gguf). A split
// model goes into a folder, one file per split under its imported name.
#include <unistd.h>

#include <filesystem>

#include "store/export_chunks.h"
#include "store/formats/gguf.h"
#include "store/store.h"

namespace pstore {

namespace fs = std::filesystem;

Status ExportGguf(const StoreView& view, const Manifest& m, const std::string& path,
                  const ExportOptions& options) {
  ExportChunks chunks(view, m, options.model, options);

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
    return gguf::WriteFile(out, h, [&](size_t i, const gguf::ByteSink& sink) {
      return chunks.Write(m.tensors[f.tensors[i]], sink);
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
  chunks.Finish();
  return Status::OK();
}

}  // namespace pstore
