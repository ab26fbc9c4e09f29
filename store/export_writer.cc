// Export's common parts: folders written whole or not at all
// (store/export_writer.h).
#include "store/export_writer.h"

#include <filesystem>

namespace pstore {

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
