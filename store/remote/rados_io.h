// Internal to store/remote/: what the code that works on RADOS objects
// directly (RemoteTier, RadosChunkSource, push claims, remote gc) shares:
// the handle of a connected pool and namespace, errors that name the remote
// and say what to do on a timeout, and batches of asynchronous operations
// with a bound on those in flight.
//
// Thread-safety: RemoteIo is a view of an IoCtx, which librados lets many
// threads use at once; RunAioBatch runs on the calling thread.
#pragma once

#include <rados/librados.hpp>

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"

namespace pstore {

// An IOError for librados error r (a negative errno) on `what`, naming the
// remote `where`; a timeout says to check the cluster or raise the timeout.
Status RadosError(const std::string& where, int timeout_seconds, int r, const std::string& what);

// A connected pool and namespace. The IoCtx belongs to the RemoteTier (or
// chunk source) that handed out the view and lives as long as it.
struct RemoteIo {
  librados::IoCtx* ioctx = nullptr;
  std::string where;  // "rados:POOL/NS", for messages
  int timeout_seconds = 30;
  int max_in_flight = 64;

  Status Error(int r, const std::string& what) const {
    return RadosError(where, timeout_seconds, r, what);
  }
};

// Runs n operations, at most max_in_flight at once: start(i, completion)
// starts operation i and returns librados' result; finish(i, return value)
// judges it. Stops starting new operations after the first error, but waits
// for every started one before returning that error.
Status RunAioBatch(const RemoteIo& io, size_t n,
                   const std::function<int(size_t, librados::AioCompletion*)>& start,
                   const std::function<Status(size_t, int)>& finish);

// Every omap entry of oid (after the key `after`, if given), read in pages;
// empty if the object does not exist. `what` names the object in errors.
Result<std::map<std::string, librados::bufferlist>> ReadAllOmap(const RemoteIo& io,
                                                                const std::string& oid,
                                                                const std::string& what,
                                                                std::string after = "");

// An object's bytes and the version they were read at (for a later write
// guarded by assert_version); nullopt if the object does not exist.
struct VersionedBytes {
  std::string bytes;
  uint64_t version = 0;
};
Result<std::optional<VersionedBytes>> ReadVersioned(const RemoteIo& io, const std::string& oid);

}  // namespace pstore
