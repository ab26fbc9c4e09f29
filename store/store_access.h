// Who may open a store: the permissions and group of its folder and files.
//
// Owner only (no group in config.json): folders 0700, files 0600. Group mode
// (`pstore config --group G`): folders 02750 (set-group-ID, so files created
// in them later belong to G too) and files 0640, all of group G, so that
// members read the store but cannot change it. Modes are always set
// explicitly (never left to the umask). The shared-memory side of the same
// rule is pager/shm_access.h. docs/operations.md, "Group mode and trust".
//
// Thread-safety: functions are reentrant; the writer calls them while it
// holds the writer lock.
#pragma once

#include <sys/types.h>
#include <string>

#include "common/status.h"

namespace pstore {

struct StoreConfig;

struct StoreAccess {
  mode_t dir_mode = 0700;
  mode_t file_mode = 0600;
  gid_t gid = gid_t(-1);  // the group's id; -1: owner only (group left alone)
  bool group() const { return gid != gid_t(-1); }
};

// The access the store's configuration asks for. A group is a name or a
// numeric id; InvalidArgument naming it when no such group exists.
Result<StoreAccess> AccessFor(const StoreConfig& config);

// Sets mode and group of path and, with recursive and path a folder, of
// everything below it (symbolic links are left alone). The first failure is
// returned, naming the file and saying what to do.
Status ApplyAccess(const std::string& path, const StoreAccess& access, bool recursive = true);

// ApplyAccess on the store's folder itself and on what pstore keeps in it
// (ID, config.json, LOCK, CURRENT, RESERVE, db/, gen/), leaving alone anything else
// someone put there.
Status ApplyStoreAccess(const std::string& root, const StoreAccess& access);

}  // namespace pstore
