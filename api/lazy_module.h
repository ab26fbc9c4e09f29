// Loading the lazy opener of a store's remote (store/remote/lazy_plugin.cc)
// into libpstore, only for a store whose config names a remote: the module
// brings librados, which processes of other stores should not carry.
//
// The module is looked for next to libpstore itself (the build folder, or the
// library folder it is installed to). The pstore command loads it too
// (tools/pager_commands.cc): it looks beside the command, then in the library
// folder of the installation.
//
// Thread-safety: reentrant; the module, once loaded, stays loaded.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "store/lazy_opener.h"

namespace pstore {

// The store's lazy opener: null when the store has no remote. When the module
// cannot be loaded (or the config read), an opener whose every Open fails
// saying why.
std::shared_ptr<LazyOpener> LoadLazyOpener(const std::string& root);
// The same, with the module's failure as an error.
Result<std::shared_ptr<LazyOpener>> LoadModule(const std::string& root);

}  // namespace pstore
