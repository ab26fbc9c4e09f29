// Export of GGUF models: each file rebuilt byte for byte from its verbatim
// header, its padding and its tensors' chunks (store/formats/gguf). A split
// model goes into a folder, one file per split under its imported name.
#include "store/export_chunks.h"
#include "store/export_writer.h"
#include "store/formats/gguf.h"
#include "store/store.h"

namespace pstore {

Status ExportGguf(const StoreView& view, const Manifest& m, const std::string& path,
                  const ExportOptions& options) {
  ExportChunks chunks(view, m, options.model, options);
  auto write_file = [&](const std::string& out, const ManifestFile& f) -> Status {
    auto h = HeaderFromManifest<gguf::FileHeader>(
        m, f, [](const ManifestTensor& t, gguf::TensorEntry* e) {
          e->ggml_type = t.ggml_type;
          e->offset = t.offset;
          e->size = t.size;
        });
    h.filler = f.filler;
    return gguf::WriteFile(out, h, [&](size_t i, const gguf::ByteSink& sink) {
      return chunks.Write(m.tensors[f.tensors[i]], sink);
    });
  };

  if (m.format == SourceFormat::kGguf) {
    PSTORE_RETURN_IF_ERROR(write_file(path, m.files[0]));
  } else {
    PSTORE_RETURN_IF_ERROR(WriteModelFolder(options.env, path, m.files, write_file, nullptr));
  }
  chunks.Finish();
  return Status::OK();
}

}  // namespace pstore
