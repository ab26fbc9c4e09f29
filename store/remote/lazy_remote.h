// LazyRemote: the LazyOpener of a store whose config names remotes
// (docs/remote.md, "Lazy opening").
//
// The remote used is the store's only one or, with several, the one named by
// $PSTORE_REMOTE. Nothing connects until a model or chunk that the host does
// not have is asked for: a model opened before, whose chunks are all on the
// host, opens and loads without the network. Connecting and every operation
// are bounded by the remote's timeout; a failed connection is tried again by
// the next call.
//
// Thread-safety: Open and the sources it returns may be used from many
// threads at once.
#pragma once

#include <chrono>

#include <memory>
#include <string>

#include "common/mutex.h"
#include "store/lazy_cache.h"
#include "store/lazy_opener.h"
#include "store/remote/pack_layout.h"
#include "store/remote/remote_config.h"
#include "store/remote/remote_tier.h"
#include "store/store_dir.h"

namespace pstore {

class LazyRemote final : public LazyOpener, public std::enable_shared_from_this<LazyRemote> {
 public:
  // nullptr when the store has no remote.
  static Result<std::shared_ptr<LazyRemote>> ForStore(const std::string& root,
                                                      const StoreConfig& config);
  // The same, reading the store's config.json (NotFound when there is no
  // store at root).
  static Result<std::shared_ptr<LazyRemote>> ForStore(const std::string& root);

  Result<std::optional<LazyModel>> Open(std::string_view ref,
                                        std::shared_ptr<ChunkSource> local) override;

  // The remote's tier, connecting on first use.
  Result<RemoteTier*> Tier() EXCLUDES(mu_);
  std::string Describe() const;
  // Reads the locations object of model (named `model` in errors) from
  // tier: its bytes, or nullopt when there is none. A damaged object is
  // Corruption naming the model and the remedy.
  Result<std::optional<std::string>> FetchLocations(RemoteTier* tier, const std::string& model,
                                                    const ModelDigest& digest);
  // Parses locations bytes and checks their frame lengths against the
  // manifest m; Corruption naming the model and the remedy.
  Result<std::shared_ptr<const Locations>> ParseLocations(std::string_view bytes, const Manifest& m,
                                                          const std::string& model,
                                                          const ModelDigest& digest);
  // Caches locations for this remote (nullopt: the marker that there are
  // none), best effort: a failure (a full disk) is ignored.
  void KeepLocations(const ModelDigest& digest, const std::optional<std::string>& bytes) const;

 private:
  LazyRemote(const std::string& root, const StoreAccess& access) : cache_(root, access) {}

  Status choice_;  // not OK when several remotes and none chosen
  RemoteSpec spec_;
  LazyCache cache_;
  Mutex mu_;
  std::unique_ptr<RemoteTier> tier_ GUARDED_BY(mu_);
  Status failed_ GUARDED_BY(mu_);  // the last connection attempt's error, if it failed
  std::chrono::steady_clock::time_point failed_at_ GUARDED_BY(mu_);
};

}  // namespace pstore
