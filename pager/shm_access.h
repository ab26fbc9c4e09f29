// Who may open a store's shared memory: the mode and group of its segments
// and its budget file, the shared-memory side of store/store_access.h.
//
// Owner only: 0600. Group mode: 0660 and the store's group; members need to
// write (pins, the process table, loads), so a member can change what other
// processes read from a segment: see docs/operations.md, "Group mode and
// trust", for what a reader that does not trust its peers can do.
//
// Thread-safety: functions are reentrant.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"
#include "pager/segment.h"

namespace pstore {

struct StoreConfig;

// The mode and group the store's configuration asks for.
Result<Segment::Options> ShmAccessFor(const StoreConfig& config);

// Gives the shared-memory object open at fd (called name) opt's mode and
// group, explicitly: a new object is owner-only (pager/shm_object.h) until
// then, and Boost has no call to change an existing object's group. An
// object of another owner is left as it is (only its owner or root may
// change it).
Status SetShmAccess(int fd, const std::string& name, const Segment::Options& opt);

// SetShmAccess on every shared-memory object of the store (its segments and
// budget file), as `pstore config --group` changes who may use them.
// Returns how many it changed; an object it may not change is an error.
Result<int> ApplyShmAccess(const std::string& store_id, const Segment::Options& opt);

}  // namespace pstore
