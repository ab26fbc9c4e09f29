// Export: rebuild a model's source file(s) byte for byte from its chunks.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/file_util.h"
#include "store/export_chunks.h"
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
  if (IsGguf(m.format)) {
    ExportOptions o = options;
    if (o.model.empty()) o.model = digest.Hex();
    return ExportGguf(view, m, path, o);
  }
  ExportChunks chunks(view, m, options.model.empty() ? digest.Hex() : options.model, options);

  auto write_file = [&](const std::string& out, const ManifestFile& f) -> Status {
    return safetensors::WriteFile(
        out, HeaderOf(m, f),
        [&](size_t i, const safetensors::ByteSink& sink) {
          return chunks.Write(m.tensors[f.tensors[i]], sink);
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
  chunks.Finish();
  return Status::OK();
}

}  // namespace pstore
