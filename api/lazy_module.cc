// Loading the lazy-opening module: see api/lazy_module.h.
#include "api/lazy_module.h"

#include <dlfcn.h>
#include <unistd.h>

#include <string>

#include "common/file_util.h"
#include "store/store_dir.h"

namespace pstore {

namespace {

using OpenFn = void* (*)(const char* root, char* err, size_t errlen);

// Stands for the module when it could not be loaded: opening a model the
// store lacks says why, and local models open as ever.
class UnavailableOpener final : public LazyOpener {
 public:
  explicit UnavailableOpener(Status why) : why_(std::move(why)) {}
  Result<std::optional<LazyModel>> Open(std::string_view, std::shared_ptr<ChunkSource>) override {
    return why_;
  }

 private:
  Status why_;
};

#ifndef PSTORE_MODULE_FROM_COMMAND
std::string ModuleDir() {
  Dl_info info;
  if (::dladdr(reinterpret_cast<void*>(&LoadModule), &info) == 0 || !info.dli_fname) return "";
  std::string self = info.dli_fname;
  size_t slash = self.rfind('/');
  return slash == std::string::npos ? "" : self.substr(0, slash + 1);
}
#endif

}  // namespace

std::shared_ptr<LazyOpener> LoadLazyOpener(const std::string& root) {
  auto r = LoadModule(root);
  if (r.ok()) return std::move(r).value();
  return std::make_shared<UnavailableOpener>(r.status());
}

Result<std::shared_ptr<LazyOpener>> LoadModule(const std::string& root) {
  StorePaths p{root};
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  if (c.remotes_json.empty() || c.remotes_json == "{}") return std::shared_ptr<LazyOpener>();
#ifdef PSTORE_MODULE_FROM_COMMAND
  // The pstore command, which loads it too: beside the command in the build
  // folder; once installed, in the library folder (PSTORE_MODULE_FROM_COMMAND,
  // relative to the command's folder).
  auto dir = ExecutableDir();
  if (!dir.ok()) return dir.status().WithContext("finding the lazy-opening module");
  std::string path = *dir + "libpstore-lazy.so";
  if (::access(path.c_str(), F_OK) != 0)
    path = *dir + PSTORE_MODULE_FROM_COMMAND "libpstore-lazy.so";
  const char* where = "in the library folder of pstore's installation";
#else
  const char* where = "next to libpstore";
  const std::string path = ModuleDir() + "libpstore-lazy.so";
#endif
  void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = ::dlerror();
    return Status::NotFound("the store has a remote, but opening models from it needs " + path +
                            ", which cannot be loaded: " + (e ? e : "?") + " (install it " + where +
                            "; it is built when librados is found)");
  }
  auto open = reinterpret_cast<OpenFn>(::dlsym(h, "pstore_lazy_module_open"));
  if (!open) return Status::Internal(path + " lacks pstore_lazy_module_open");
  char err[1024] = "";
  auto* holder = static_cast<std::shared_ptr<LazyOpener>*>(open(root.c_str(), err, sizeof err));
  if (!holder) return Status::IOError(std::string("the store's remote: ") + err);
  std::shared_ptr<LazyOpener> out = std::move(*holder);
  delete holder;
  return out;
}

}  // namespace pstore
