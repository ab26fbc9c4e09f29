// Export: rebuild a model's source file(s) byte for byte from its chunks.
#include <filesystem>

#include "common/file_util.h"
#include "store/export_chunks.h"
#include "store/export_writer.h"
#include "store/formats/safetensors.h"
#include "store/store.h"

namespace pstore {

Status ExportModel(const StoreView& view, const ModelDigest& digest, const std::string& path,
                   const ExportOptions& options) {
  PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<const Manifest> mp, view.LoadManifest(digest));
  const Manifest& m = *mp;
  if (IsGguf(m.format)) {
    ExportOptions o = options;
    if (o.model.empty()) o.model = digest.Hex();
    return ExportGguf(view, m, path, o);
  }
  ExportChunks chunks(view, m, options.model.empty() ? digest.Hex() : options.model, options);
  auto write_file = [&](const std::string& out, const ManifestFile& f) -> Status {
    auto header = HeaderFromManifest<safetensors::FileHeader>(
        m, f, [](const ManifestTensor& t, safetensors::TensorEntry* e) {
          e->dtype = t.dtype;
          e->shape = t.shape;
          e->begin = t.offset;
          e->end = t.offset + t.size;
        });
    return safetensors::WriteFile(
        out, header,
        [&](size_t i, const safetensors::ByteSink& sink) {
          return chunks.Write(m.tensors[f.tensors[i]], sink);
        },
        options.env);
  };

  if (m.format == SourceFormat::kSafetensors) {
    PSTORE_RETURN_IF_ERROR(write_file(path, m.files[0]));
  } else {
    PSTORE_RETURN_IF_ERROR(WriteModelFolder(options.env, path, m.files, write_file, [&] {
      std::string index = (std::filesystem::path(path) / m.index_name).string();
      return WriteFileAtomic(options.env, index, m.index_bytes, 0644);
    }));
  }
  chunks.Finish();
  return Status::OK();
}

}  // namespace pstore
