// Export's common parts: tensors streamed chunk by chunk, folders written
// whole or not at all (store/export_writer.h).
#include "store/export_writer.h"

#include <filesystem>

namespace pstore {

TensorStreamer::TensorStreamer(const StoreView& view, const Manifest& m,
                               const ExportOptions& options)
    : view_(view),
      m_(m),
      options_(options),
      total_(m.TotalBytes()),
      last_report_(std::chrono::steady_clock::now()),
      buf_(m.chunk_size) {}

Status TensorStreamer::Stream(const ManifestTensor& t, const Sink& sink) {
  for (uint64_t j = 0; j < m_.ChunkCount(t); j++) {
    std::span<uint8_t> out(buf_.data(), size_t(m_.ChunkBytes(t, j)));
    Status s = view_.ReadChunk(m_.chunks[t.first_chunk + j], &decoder_, out);
    if (!s.ok()) return s.WithContext("tensor " + t.name + " chunk " + std::to_string(j));
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

void TensorStreamer::Finish() {
  if (options_.progress) options_.progress(total_, total_);
}

Status WriteModelFolder(
    Env* env, const std::string& path, const std::vector<ManifestFile>& files,
    const std::function<Status(const std::string& out, const ManifestFile& f)>& write_file,
    const std::function<Status()>& finish) {
  bool created = !env->Exists(path);
  PSTORE_RETURN_IF_ERROR(env->CreateDirs(path));
  std::vector<std::string> written;
  auto fail = [&](const Status& s) {
    for (const auto& w : written) (void)env->Remove(w);
    if (created) (void)env->RemoveDir(path);
    return s;
  };
  for (const auto& f : files) {
    std::string out = (std::filesystem::path(path) / f.name).string();
    Status s = write_file(out, f);
    if (!s.ok()) return fail(s);
    written.push_back(out);
  }
  if (finish) {
    Status s = finish();
    if (!s.ok()) return fail(s);
  }
  return Status::OK();
}

}  // namespace pstore
