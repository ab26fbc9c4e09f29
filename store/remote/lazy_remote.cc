// Opening models lazily from a store's remote: see store/remote/lazy_remote.h.
#include "store/remote/lazy_remote.h"

#include <chrono>
#include <cstdlib>

#include "store/model_ref.h"
#include "store/remote/pack_layout.h"
#include "store/remote/rados_chunk_source.h"
#include "store/store_access.h"
#include "store/tiered_chunk_source.h"

namespace pstore {

namespace {

// The remote's chunks of one model, connecting when first asked: by their
// locations (packs, read by range) when the model has them, else each its
// own object. Locations not known yet (nothing cached for this remote) are
// read on the first read that goes to the remote. When chunks are missing,
// l.<digest> is read once more per read: locations found stale (the pack
// was removed and a push put its chunks into a new one), or a model without
// locations pushed again into packs, are read by the new ones. Locations
// fetched here are cached best effort (a host that cannot write lazy/ still
// reads), and the marker that there are none never replaces cached ones.
class ConnectingSource final : public ChunkSource {
 public:
  // known: whether locations holds what the cache knows (nullptr: the
  // model has none); else they are read from the remote when first needed.
  ConnectingSource(std::shared_ptr<LazyRemote> remote, std::shared_ptr<const Manifest> m,
                   std::string model, ModelDigest digest, bool known,
                   std::shared_ptr<const Locations> locations)
      : remote_(std::move(remote)),
        manifest_(std::move(m)),
        model_(std::move(model)),
        digest_(digest),
        known_(known),
        locations_(std::move(locations)) {}
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(RemoteTier * t, remote_->Tier());
    auto [known, locs] = Current();
    if (!known) {
      PSTORE_ASSIGN_OR_RETURN(locs, Refetch(t));
    }
    PSTORE_ASSIGN_OR_RETURN(auto out, ReadBy(t, locs, keys));
    std::vector<ChunkKey> missing;
    std::vector<size_t> at;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!out[i]) missing.push_back(keys[i]), at.push_back(i);
    }
    if (missing.empty() || !known) return out;  // just read: nothing newer
    PSTORE_ASSIGN_OR_RETURN(std::shared_ptr<const Locations> fresh, Refetch(t));
    if (fresh == locs) return out;  // not stale: the chunks are missing
    PSTORE_ASSIGN_OR_RETURN(auto again, ReadBy(t, fresh, missing));
    for (size_t j = 0; j < missing.size(); ++j) out[at[j]] = std::move(again[j]);
    return out;
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    if (auto [known, locs] = Current(); known && !locs) {
      PSTORE_ASSIGN_OR_RETURN(RemoteTier * t, remote_->Tier());
      return t->chunks().Contains(keys);
    }
    PSTORE_ASSIGN_OR_RETURN(auto frames, Read(keys));
    std::vector<bool> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) out[i] = frames[i].has_value();
    return out;
  }
  Status Write(std::span<const ChunkFrameRef>) override {
    return Status::InvalidArgument("a lazily opened model does not write to its remote");
  }
  std::string Describe() const override { return remote_->Describe(); }
  std::string Locate(const ChunkKey& key) const override {
    return LocatedChunkSource(RemoteIo{}, Current().second, LocationsObject(digest_)).Locate(key);
  }

 private:
  Result<std::vector<std::optional<std::string>>> ReadBy(RemoteTier* t,
                                                         std::shared_ptr<const Locations> locs,
                                                         std::span<const ChunkKey> keys) const {
    if (!locs) return t->chunks().Read(keys);
    return LocatedChunkSource(t->Io(), std::move(locs), LocationsObject(digest_)).Read(keys);
  }
  // Reads l.<digest> and returns the locations to read by: the new ones if
  // there are any and they differ from those installed, else those. When
  // nothing is known yet, the marker that there are none is installed and
  // cached; it never replaces locations. Of fetches that overlap, the one
  // begun last is installed and cached: one begun earlier that ends later
  // may hold locations a push has replaced since, and returns the installed
  // ones instead. (Begun, not read: an overtaken fetch may have read newer
  // bytes; a read that then misses chunks fetches again.)
  Result<std::shared_ptr<const Locations>> Refetch(RemoteTier* t) EXCLUDES(mu_, cache_mu_) {
    uint64_t ticket;
    {
      MutexLock l(&mu_);
      ticket = ++fetches_begun_;
    }
    PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                            remote_->FetchLocations(t, model_, digest_));
    std::shared_ptr<const Locations> locs;
    if (bytes) {
      PSTORE_ASSIGN_OR_RETURN(locs, remote_->ParseLocations(*bytes, *manifest_, model_, digest_));
    }
    {
      MutexLock l(&mu_);
      if (ticket < installed_ticket_) return locations_;  // a later fetch's are in
      // None on the remote, or the same: what is known stays.
      if (known_ && (!bytes || (locations_ && locs->map() == locations_->map()))) return locations_;
      installed_ticket_ = ticket;
      known_ = true;
      locations_ = locs;
    }
    // Cached best effort, outside mu_ (it syncs files), by the fetch whose
    // locations are still the installed ones: the cache ends with them.
    MutexLock c(&cache_mu_);
    {
      MutexLock l(&mu_);
      if (installed_ticket_ != ticket) return locs;
    }
    remote_->KeepLocations(digest_, bytes);
    return locs;
  }
  std::pair<bool, std::shared_ptr<const Locations>> Current() const EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return {known_, locations_};
  }

  std::shared_ptr<LazyRemote> remote_;
  const std::shared_ptr<const Manifest> manifest_;
  const std::string model_;
  const ModelDigest digest_;
  mutable Mutex mu_;
  bool known_ GUARDED_BY(mu_);
  // nullptr: one object per chunk.
  std::shared_ptr<const Locations> locations_ GUARDED_BY(mu_);
  Mutex cache_mu_;  // one cache write at a time; taken before mu_, never inside it
  uint64_t fetches_begun_ GUARDED_BY(mu_) = 0;     // Refetch calls begun
  uint64_t installed_ticket_ GUARDED_BY(mu_) = 0;  // the one whose locations are in
};

// The source of one lazily opened model: owns the tier and what it reads.
class LazyModelSource final : public ChunkSource {
 public:
  LazyModelSource(std::shared_ptr<LazyRemote> remote, const LazyCache* cache,
                  std::shared_ptr<ChunkSource> local, std::shared_ptr<const Manifest> m,
                  std::string model, const ModelDigest& digest, bool known,
                  std::shared_ptr<const Locations> locations)
      : remote_(std::move(remote), m, model, digest, known, std::move(locations)),
        local_(std::move(local)),
        tier_(local_.get(), cache, &remote_, std::move(m), std::move(model)) {}
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    return tier_.Read(keys);
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    return tier_.Contains(keys);
  }
  Status Write(std::span<const ChunkFrameRef> frames) override { return tier_.Write(frames); }
  Status ReadDecoded(std::span<const ChunkKey> keys, std::span<const std::span<uint8_t>> outs,
                     ChunkDecoder* decoder, FrameBatch* batch, DecodedChunks* result) override {
    return tier_.ReadDecoded(keys, outs, decoder, batch, result);
  }
  std::string Describe() const override { return tier_.Describe(); }

 private:
  ConnectingSource remote_;
  std::shared_ptr<ChunkSource> local_;
  TieredChunkSource tier_;
};

}  // namespace

Result<std::shared_ptr<LazyRemote>> LazyRemote::ForStore(const std::string& root,
                                                         const StoreConfig& config) {
  PSTORE_ASSIGN_OR_RETURN(std::vector<RemoteSpec> remotes, ListRemotes(config));
  if (remotes.empty()) return std::shared_ptr<LazyRemote>();
  PSTORE_ASSIGN_OR_RETURN(StoreAccess access, AccessFor(config));
  std::shared_ptr<LazyRemote> r(new LazyRemote(root, access));
  const char* chosen = std::getenv("PSTORE_REMOTE");
  auto spec = FindRemote(config, chosen ? chosen : "");
  if (spec.ok()) {
    r->spec_ = std::move(spec).value();
  } else {
    r->choice_ = spec.status().WithContext(
        "opening a model from a remote (set PSTORE_REMOTE to the remote to use)");
  }
  return r;
}

Result<std::shared_ptr<LazyRemote>> LazyRemote::ForStore(const std::string& root) {
  StorePaths p{root};
  PSTORE_ASSIGN_OR_RETURN(StoreConfig c, ReadStoreConfig(p));
  return ForStore(root, c);
}

std::string LazyRemote::Describe() const {
  const RadosOptions o = spec_.ToRadosOptions();
  return "remote " + spec_.name + " (rados:" + o.pool + (o.ns.empty() ? "" : "/" + o.ns) + ")";
}

Result<RemoteTier*> LazyRemote::Tier() {
  PSTORE_RETURN_IF_ERROR(choice_);
  MutexLock l(&mu_);
  if (!tier_) {
    // A connection that failed is not tried again for one timeout: the
    // threads and loads waiting behind it get its error at once instead of
    // each waiting out a timeout of its own in turn.
    const auto now = std::chrono::steady_clock::now();
    if (!failed_.ok() && now - failed_at_ < std::chrono::seconds(spec_.timeout_seconds))
      return failed_;
    auto t = RemoteTier::Open(spec_.ToRadosOptions());
    if (!t.ok()) {
      failed_ = t.status().WithContext("connecting to " + Describe());
      failed_at_ = std::chrono::steady_clock::now();
      return failed_;
    }
    failed_ = Status::OK();
    tier_ = std::move(t).value();
  }
  return tier_.get();
}

Result<std::optional<std::string>> LazyRemote::FetchLocations(RemoteTier* tier,
                                                              const std::string& model,
                                                              const ModelDigest& digest) {
  auto locs = ReadLocations(tier->Io(), digest);
  if (!locs.ok()) {
    if (locs.status().IsCorruption()) {
      return DamagedLocations(locs.status(), model, "nothing was kept");
    }
    return locs.status().WithContext("model " + model + " from " + Describe());
  }
  std::optional<std::string> bytes;
  if (*locs) bytes = (*locs)->Serialize();
  return bytes;
}

Result<std::shared_ptr<const Locations>> LazyRemote::ParseLocations(std::string_view bytes,
                                                                    const Manifest& m,
                                                                    const std::string& model,
                                                                    const ModelDigest& digest) {
  const std::string what = Describe() + ": " + LocationsObject(digest);
  auto locs = Locations::Parse(bytes, what);
  Status st = locs.ok() ? CheckFrameLengths(*locs, m, what) : locs.status();
  if (!st.ok()) return DamagedLocations(st, model, "nothing was kept");
  return std::make_shared<const Locations>(std::move(locs).value());
}

void LazyRemote::KeepLocations(const ModelDigest& digest,
                               const std::optional<std::string>& bytes) const {
  // Best effort, as the spool: the read goes on with them in memory, and a
  // later open fetches them again if they were not kept.
  (void)cache_.PutLocations(spec_.name, digest, bytes);
}

namespace {

// Parses *bytes, the manifest of `full`, into lm (which keeps the bytes).
Status ParseManifest(const std::string& full, const std::string& from, LazyModel* lm,
                     std::optional<std::string>* bytes) {
  auto parsed = Manifest::Parse(**bytes, /*with_headers=*/false);
  if (!parsed.ok()) return parsed.status().WithContext("model " + full + " from " + from);
  lm->manifest = std::make_shared<const Manifest>(std::move(parsed).value());
  lm->manifest_bytes = std::move(**bytes);
  return Status::OK();
}

}  // namespace

Result<std::optional<LazyModel>> LazyRemote::Open(std::string_view ref,
                                                  std::shared_ptr<ChunkSource> local) {
  PSTORE_RETURN_IF_ERROR(choice_);
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  const std::string full = name.Ref();
  LazyModel lm;
  // The host's cache first: a model opened before needs no network.
  PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> cached, cache_.GetName(spec_.name, full));
  std::optional<std::string> bytes;
  if (cached) {
    lm.digest = *cached;
    PSTORE_ASSIGN_OR_RETURN(bytes, cache_.GetManifest(lm.digest));
  }
  // The model's chunk locations on this remote: nullopt for a model pushed
  // before packs (each chunk its own object).
  std::optional<std::string> locations;
  bool have_locations = false;
  if (bytes) {
    PSTORE_ASSIGN_OR_RETURN(LazyCache::CachedLocations c,
                            cache_.GetLocations(spec_.name, lm.digest));
    have_locations = c.kind != LazyCache::CachedLocations::kUnknown;
    if (c.kind == LazyCache::CachedLocations::kBytes) locations = std::move(c.bytes);
  }
  std::shared_ptr<const Locations> located;
  if (!bytes) {
    PSTORE_ASSIGN_OR_RETURN(RemoteTier * tier, Tier());
    if (!cached) {
      PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> d, tier->GetName(full));
      if (!d) return std::optional<LazyModel>();
      lm.digest = *d;
    }
    PSTORE_ASSIGN_OR_RETURN(bytes, tier->GetManifest(lm.digest));
    if (!bytes) {
      return Status::Corruption(Describe() + ": " + full + " points at manifest " +
                                lm.digest.Hex() + ", which is missing on the remote");
    }
    if (Manifest::DigestOf(*bytes) != lm.digest) {
      return Status::Corruption(Describe() + ": the manifest of " + full + " (object " +
                                RemoteTier::ManifestObject(lm.digest) +
                                ") does not match its digest; nothing was kept");
    }
    // The manifest and its locations are checked against each other before
    // anything is kept: a damaged l.<digest> leaves nothing in the cache.
    PSTORE_RETURN_IF_ERROR(ParseManifest(full, Describe(), &lm, &bytes));
    PSTORE_ASSIGN_OR_RETURN(locations, FetchLocations(tier, full, lm.digest));
    if (locations) {
      PSTORE_ASSIGN_OR_RETURN(located, ParseLocations(*locations, *lm.manifest, full, lm.digest));
    }
    // Its locations (or the marker that it has none) are cached, synced,
    // before the manifest, so that a cached manifest has them.
    PSTORE_RETURN_IF_ERROR(cache_.PutLocations(spec_.name, lm.digest, locations));
    PSTORE_RETURN_IF_ERROR(cache_.PutManifest(lm.digest, lm.manifest_bytes));
    PSTORE_RETURN_IF_ERROR(cache_.PutName(spec_.name, full, lm.digest));
    have_locations = true;
  } else {
    // A manifest cached without locations for this remote (by another
    // remote, or by a pstore that kept them per digest only) opens without
    // the network: they are read on the first read that goes to the remote.
    PSTORE_RETURN_IF_ERROR(ParseManifest(full, Describe(), &lm, &bytes));
    if (locations) {
      auto parsed_locs = ParseLocations(*locations, *lm.manifest, full, lm.digest);
      if (parsed_locs.ok()) {
        located = std::move(parsed_locs).value();
      } else {
        // Damaged on this host: read again when first needed, and the file
        // replaced then (removing it now only tidies, so a lazy/ that
        // cannot be written does not stop the open).
        (void)cache_.RemoveLocations(spec_.name, lm.digest);
        have_locations = false;
      }
    }
  }
  lm.source =
      std::make_shared<LazyModelSource>(shared_from_this(), &cache_, std::move(local), lm.manifest,
                                        full, lm.digest, have_locations, std::move(located));
  return std::optional<LazyModel>(std::move(lm));
}

}  // namespace pstore
