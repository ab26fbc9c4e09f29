// Remotes: the named remote chunk tiers a store pushes to and pulls from.
//
// A remote's settings live in the store's config.json, under "remotes"
// (docs/format.md): its URL ("rados:POOL"), the Ceph conf path, the client id,
// the RADOS namespace and the timeout. Credentials are never part of them:
// they stay in the Ceph conf and the keyring it names.
//
// Thread-safety: plain values and functions; the caller that changes a
// store's remotes holds its writer lock.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/remote/rados_chunk_source.h"
#include "store/store_dir.h"

namespace pstore {

struct RemoteSpec {
  std::string name;  // 1 to 64 characters of [A-Za-z0-9._-], not starting with '.' or '-'
  std::string url;   // "rados:POOL"
  std::string conf;  // Ceph conf path; "" for librados' default search
  std::string id = "admin";
  std::string ns;
  int timeout_seconds = 30;

  // The options RadosChunkSource::Open takes.
  RadosOptions ToRadosOptions() const;
};

// Checks a spec's name, URL ("rados:" and a pool name), id and timeout; a
// clear InvalidArgument error says which is wrong.
Status ValidateRemote(const RemoteSpec& r);
// The remotes of a config, in name order.
Result<std::vector<RemoteSpec>> ListRemotes(const StoreConfig& c);
// Adds r (Exists when its name is taken, unless replace) or removes a remote
// (NotFound when there is none of that name) in c.
Status AddRemote(StoreConfig* c, const RemoteSpec& r, bool replace);
Status RemoveRemote(StoreConfig* c, std::string_view name);
// The remote called name, or with an empty name the only remote (an error
// naming the choices when there are several or none).
Result<RemoteSpec> FindRemote(const StoreConfig& c, std::string_view name);

}  // namespace pstore
