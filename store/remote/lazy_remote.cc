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
// own object. Locations found stale (a chunk missing from the pack they name:
// the pack was removed and a push put its chunks into a new one) are read
// from the remote again, once per read, and cached anew.
class ConnectingSource final : public ChunkSource {
 public:
  ConnectingSource(std::shared_ptr<LazyRemote> remote, std::string model, ModelDigest digest,
                   std::shared_ptr<const Locations> locations)
      : remote_(std::move(remote)),
        model_(std::move(model)),
        digest_(digest),
        locations_(std::move(locations)) {}
  Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) override {
    PSTORE_ASSIGN_OR_RETURN(RemoteTier * t, remote_->Tier());
    std::shared_ptr<const Locations> locs = Current();
    if (!locs) return t->chunks().Read(keys);
    PSTORE_ASSIGN_OR_RETURN(auto out, Located(t, locs).Read(keys));
    std::vector<ChunkKey> missing;
    std::vector<size_t> at;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!out[i]) missing.push_back(keys[i]), at.push_back(i);
    }
    if (missing.empty()) return out;
    // Read and cached anew (checked, with the model's name in any error).
    PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                            remote_->FetchLocations(t, model_, digest_));
    if (!bytes) return out;
    PSTORE_ASSIGN_OR_RETURN(Locations fresh, Locations::Parse(*bytes, LocationsObject(digest_)));
    if (fresh.map() == locs->map()) return out;  // not stale: the chunks are missing
    locs = std::make_shared<const Locations>(std::move(fresh));
    {
      MutexLock l(&mu_);
      locations_ = locs;
    }
    PSTORE_ASSIGN_OR_RETURN(auto again, Located(t, locs).Read(missing));
    for (size_t j = 0; j < missing.size(); ++j) out[at[j]] = std::move(again[j]);
    return out;
  }
  Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) override {
    if (!Current()) {
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
    return LocatedChunkSource(RemoteIo{}, Current(), LocationsObject(digest_)).Locate(key);
  }

 private:
  LocatedChunkSource Located(RemoteTier* t, std::shared_ptr<const Locations> locs) const {
    return LocatedChunkSource(t->Io(), std::move(locs), LocationsObject(digest_));
  }
  std::shared_ptr<const Locations> Current() const EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return locations_;
  }

  std::shared_ptr<LazyRemote> remote_;
  const std::string model_;
  const ModelDigest digest_;
  mutable Mutex mu_;
  // nullptr: one object per chunk.
  std::shared_ptr<const Locations> locations_ GUARDED_BY(mu_);
};

// The source of one lazily opened model: owns the tier and what it reads.
class LazyModelSource final : public ChunkSource {
 public:
  LazyModelSource(std::shared_ptr<LazyRemote> remote, const LazyCache* cache,
                  std::shared_ptr<ChunkSource> local, std::shared_ptr<const Manifest> m,
                  std::string model, const ModelDigest& digest,
                  std::shared_ptr<const Locations> locations)
      : remote_(std::move(remote), model, digest, std::move(locations)),
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
  PSTORE_RETURN_IF_ERROR(cache_.PutLocations(spec_.name, digest, bytes));
  return bytes;
}

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
    if (c.kind == LazyCache::CachedLocations::kBytes &&
        !Locations::Parse(c.bytes, cache_.LocationsPath(spec_.name, lm.digest)).ok()) {
      // Damaged on this host: dropped and fetched again below.
      PSTORE_RETURN_IF_ERROR(cache_.RemoveLocations(spec_.name, lm.digest));
      c.kind = LazyCache::CachedLocations::kUnknown;
    }
    have_locations = c.kind != LazyCache::CachedLocations::kUnknown;
    if (c.kind == LazyCache::CachedLocations::kBytes) locations = std::move(c.bytes);
  }
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
    // Its locations (or the marker that it has none) are cached, synced,
    // before the manifest.
    PSTORE_ASSIGN_OR_RETURN(locations, FetchLocations(tier, full, lm.digest));
    have_locations = true;
    PSTORE_RETURN_IF_ERROR(cache_.PutManifest(lm.digest, *bytes));
    PSTORE_RETURN_IF_ERROR(cache_.PutName(spec_.name, full, lm.digest));
  }
  if (!have_locations) {
    // A manifest cached without locations for this remote (by another
    // remote, or by a pstore that kept them per digest only): fetched now.
    PSTORE_ASSIGN_OR_RETURN(RemoteTier * tier, Tier());
    PSTORE_ASSIGN_OR_RETURN(locations, FetchLocations(tier, full, lm.digest));
  }
  auto parsed = Manifest::Parse(*bytes, /*with_headers=*/false);
  if (!parsed.ok()) return parsed.status().WithContext("model " + full + " from " + Describe());
  lm.manifest = std::make_shared<const Manifest>(std::move(parsed).value());
  lm.manifest_bytes = std::move(*bytes);
  std::shared_ptr<const Locations> located;
  if (locations) {
    auto parsed_locs = Locations::Parse(*locations, LocationsObject(lm.digest));
    if (!parsed_locs.ok()) {
      return DamagedLocations(parsed_locs.status().WithContext(Describe()), full,
                              "nothing was kept");
    }
    located = std::make_shared<const Locations>(std::move(parsed_locs).value());
  }
  lm.source = std::make_shared<LazyModelSource>(shared_from_this(), &cache_, std::move(local),
                                                lm.manifest, full, lm.digest, std::move(located));
  return std::optional<LazyModel>(std::move(lm));
}

}  // namespace pstore
