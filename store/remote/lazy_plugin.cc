// libpstore-lazy: the lazy opener of a store's remote as a module that
// libpstore loads (dlopen) only for a store that has a remote, so that the
// processes of stores without one never load librados and its libraries
// (several megabytes of memory per process). See api/lazy_module.h.
//
// It exports one function, pstore_lazy_module_open (store/remote/
// lazy_plugin.map), which libpstore calls with the store's folder. The module
// is built from the same sources as libpstore, so the C++ objects it hands
// over have the same layout on both sides.
//
// Thread-safety: pstore_lazy_module_open may be called from many threads.
#include <cstdio>
#include <memory>

#include "store/remote/lazy_remote.h"

// Returns a new std::shared_ptr<pstore::LazyOpener> (the caller deletes it;
// it holds null when the store has no remote), or null with a message in err.
extern "C" __attribute__((visibility("default"))) void* pstore_lazy_module_open(const char* root,
                                                                                char* err,
                                                                                size_t errlen) {
  try {
    auto r = pstore::LazyRemote::ForStore(root);
    if (!r.ok()) {
      std::snprintf(err, errlen, "%s", r.status().ToString().c_str());
      return nullptr;
    }
    return new std::shared_ptr<pstore::LazyOpener>(std::move(r).value());
  } catch (const std::exception& e) {
    std::snprintf(err, errlen, "%s", e.what());
    return nullptr;
  }
}
