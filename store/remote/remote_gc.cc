// Remote garbage collection: see store/remote/remote_gc.h.
#include "store/remote/remote_gc.h"

#include <cerrno>
#include <chrono>
#include <exception>
#include <memory>
#include <random>
#include <set>
#include <unordered_set>

#include "store/remote/pack_layout.h"
#include "store/remote/pack_push.h"
#include "store/remote/push_claim.h"
#include "store/remote/rados_io.h"
#include "store/remote/test_pause.h"

namespace pstore {
namespace {

enum class Kind { kChunk, kManifest, kClaimObject, kPack, kLocations };

struct Candidate {
  std::string oid;
  Kind kind;
  uint64_t size = 0;
  bool gone = false;  // deleted by someone else meanwhile
  bool keep = false;  // needed after all (step 3)
};

// Index entries to remove from one shard, with the values they were read with.
struct Drop {
  std::string shard;
  std::map<std::string, librados::bufferlist> keys;
};

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// True if oid is prefix followed by 32 lowercase hex digits, as pstore names
// its objects; anything else in the namespace is someone else's.
bool Named(std::string_view oid, std::string_view prefix) {
  if (oid.size() != prefix.size() + 32 || !oid.starts_with(prefix)) return false;
  const std::string_view hex = oid.substr(prefix.size());
  auto key = ChunkKey::FromHex(hex);
  return key && key->Hex() == hex;
}

librados::bufferlist Bytes(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

// The result's counter of objects of kind k found dead or (deleted) deleted.
uint64_t* Count(GcResult* r, Kind k, bool deleted) {
  switch (k) {
    case Kind::kChunk:
      return deleted ? &r->deleted_chunks : &r->dead_chunks;
    case Kind::kManifest:
      return deleted ? &r->deleted_manifests : &r->dead_manifests;
    case Kind::kClaimObject:
      return deleted ? &r->deleted_claim_objects : &r->dead_claim_objects;
    case Kind::kPack:
      return deleted ? &r->deleted_packs : &r->dead_packs;
    case Kind::kLocations:
      return deleted ? &r->deleted_locations : &r->dead_locations;
  }
  return nullptr;
}

// One run (see the header for its steps).
class Collector {
 public:
  Collector(RemoteTier* remote, const GcOptions& options)
      : remote_(remote), io_(remote->Io()), options_(options) {
    std::random_device rd;
    token_ =
        "gc " + std::to_string(NowSeconds()) + " " + std::to_string(rd()) + std::to_string(rd());
  }

  Result<GcResult> Run() {
    auto t0 = std::chrono::steady_clock::now();
    PSTORE_RETURN_IF_ERROR(Find());
    if (!options_.dry_run) {
      TestPause("gc-marking");
      PSTORE_RETURN_IF_ERROR(Mark());
      PSTORE_RETURN_IF_ERROR(Check());
      PSTORE_RETURN_IF_ERROR(Sweep());
    }
    res_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res_;
  }

 private:
  Status Progress(const char* step, uint64_t done, uint64_t total) {
    if (options_.progress && !options_.progress(step, done, total)) {
      return Status::Aborted("interrupted during " + std::string(step) +
                             "; nothing needed was deleted (run it again to finish)");
    }
    return Status::OK();
  }

  // The chunk keys of a manifest (an m.<digest> or p.<id> object), checked
  // against its digest. nullopt if the object does not exist.
  Result<const std::vector<ChunkKey>*> ChunksOf(const ModelDigest& d, const std::string& oid) {
    if (auto it = chunks_of_.find(d); it != chunks_of_.end()) return &it->second;
    librados::bufferlist bl;
    int rv = 0;
    librados::ObjectReadOperation op;
    op.read(0, 0, &bl, &rv);
    int r = io_.ioctx->operate(oid, &op, nullptr);
    if (r == -ENOENT) return static_cast<const std::vector<ChunkKey>*>(nullptr);
    if (r < 0) return io_.Error(r, "reading " + oid);
    std::string bytes = bl.to_str();
    if (Manifest::DigestOf(bytes) != d) {
      return Status::Corruption(io_.where + ": object " + oid + " does not hold manifest " +
                                d.Hex() + "; nothing was deleted");
    }
    auto m = Manifest::Parse(bytes, false);
    if (!m.ok()) return m.status().WithContext(io_.where + ": object " + oid);
    return &chunks_of_.emplace(d, std::move(m->chunks)).first->second;
  }

  // A manifest's chunks: their own objects (remotes written before packs),
  // its locations object and the packs it names, and, for a push that has
  // not written its locations yet (`through_index`), the packs the chunk
  // index maps its keys to.
  // `model` names it in errors (a name, or a push's digest).
  Status AddChunksOf(const ModelDigest& d, const std::vector<ChunkKey>& keys, bool through_index,
                     const std::string& model) {
    if (!counted_.insert(d).second) return Status::OK();
    for (const ChunkKey& k : keys) need_.insert(RadosChunkSource::ObjectName(k));
    need_.insert(LocationsObject(d));
    auto read = ReadLocations(io_, d);
    if (!read.ok() && read.status().IsCorruption()) {
      return DamagedLocations(read.status(), model,
                              "gc stopped and nothing was deleted, since which packs the model "
                              "needs is unknown; run gc again after the push");
    }
    PSTORE_ASSIGN_OR_RETURN(std::optional<Locations> locs, std::move(read));
    if (locs) {
      for (const auto& [k, loc] : locs->map()) {
        if (!loc.own) NeedRange(loc);
      }
      for (const PackId& id : locs->Packs()) packs_of_[d].push_back(PackObject(id));
    }
    if (through_index) {
      PSTORE_ASSIGN_OR_RETURN(IndexMap indexed, LookupIndex(io_, keys));
      for (const auto& [k, loc] : indexed) NeedRange(loc);
    }
    return Status::OK();
  }

  void NeedRange(const ChunkLocation& loc) {
    need_.insert(PackObject(loc.pack));
    live_ranges_[loc.pack].emplace(loc.offset, loc.length);
  }

  // What the claims need: their claim objects, the manifests they will
  // publish, and the chunks of their manifest copies (p.<id>). A push that
  // has published removes its copy right after: the claim then counts by its
  // published manifest (m.<digest>). A claim with neither has relied on
  // nothing yet: what it retains from now on loses any gc mark.
  Status AddClaims(const std::vector<ClaimRecord>& claims) {
    for (const ClaimRecord& c : claims) {
      const std::string published = RemoteTier::ManifestObject(c.digest);
      need_.insert(published);
      need_.insert(LocationsObject(c.digest));
      need_.insert(c.Object());
      PSTORE_ASSIGN_OR_RETURN(const std::vector<ChunkKey>* keys, ChunksOf(c.digest, c.Object()));
      if (!keys) {
        PSTORE_ASSIGN_OR_RETURN(keys, ChunksOf(c.digest, published));
      }
      if (keys) {
        PSTORE_RETURN_IF_ERROR(
            AddChunksOf(c.digest, *keys, true, "being pushed " + c.digest.Hex()));
      }
    }
    return Status::OK();
  }

  // What the names need: their manifests and those manifests' chunks.
  Status AddNames(const std::map<std::string, ModelDigest>& names) {
    for (const auto& [ref, d] : names) {
      const std::string oid = RemoteTier::ManifestObject(d);
      need_.insert(oid);
      if (counted_.count(d)) continue;
      PSTORE_ASSIGN_OR_RETURN(const std::vector<ChunkKey>* keys, ChunksOf(d, oid));
      if (!keys) {
        // Removed (`rm --remote`) and collected by another gc since the names
        // were read? Then it needs nothing any more.
        PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> now, remote_->GetName(ref));
        if (!now || *now != d) continue;
        return Status::Corruption(io_.where + ": " + ref + " points at manifest " + d.Hex() +
                                  ", which is missing, so which chunks it needs is unknown; "
                                  "nothing was deleted (push the model again, or remove the "
                                  "name with `pstore rm --remote`)");
      }
      PSTORE_RETURN_IF_ERROR(AddChunksOf(d, *keys, false, ref));
    }
    return Status::OK();
  }

  // Withdraws a claim unless it changed since it was read. True if withdrawn.
  Result<bool> Withdraw(const ClaimRecord& c) {
    librados::ObjectWriteOperation op;
    op.cmpxattr(c.Xattr().c_str(), LIBRADOS_CMPXATTR_OP_EQ, Bytes(c.value));
    op.rmxattr(c.Xattr().c_str());
    int r = io_.ioctx->operate(RemoteTier::kNamesObject, &op);
    if (r == -ECANCELED || r == -ENODATA || r == -ENOENT) return false;
    if (r < 0) return io_.Error(r, "withdrawing push claim " + c.id);
    return true;
  }

  // Step 1.
  Status Find() {
    PSTORE_ASSIGN_OR_RETURN(std::vector<ClaimRecord> claims, ReadClaims(io_));
    std::vector<ClaimRecord> live;
    const int64_t now = NowSeconds();
    for (const ClaimRecord& c : claims) {
      GcClaim g{c.id, c.host, c.digest.Hex(), c.pid, now - c.renewed, false};
      if (g.age_seconds > options_.grace_seconds) {
        if (options_.dry_run) {
          g.withdrawn = true;
        } else {
          PSTORE_ASSIGN_OR_RETURN(g.withdrawn, Withdraw(c));
        }
      }
      if (!g.withdrawn) live.push_back(c);
      res_.claims.push_back(g);
    }
    PSTORE_RETURN_IF_ERROR(AddClaims(live));
    PSTORE_ASSIGN_OR_RETURN(auto names, remote_->ListNames());
    res_.names = names.size();
    TestPause("gc-find-names");
    PSTORE_RETURN_IF_ERROR(AddNames(names));
    for (const std::string& oid : need_) res_.referenced_chunks += oid.starts_with("c.");

    PSTORE_RETURN_IF_ERROR(Progress("listing", 0, 0));
    try {
      for (auto it = io_.ioctx->nobjects_begin(); it != io_.ioctx->nobjects_end(); ++it) {
        const std::string& oid = it->get_oid();
        res_.objects++;
        if (res_.objects % 1024 == 0) PSTORE_RETURN_IF_ERROR(Progress("listing", res_.objects, 0));
        std::optional<Kind> kind;
        if (Named(oid, "c.")) {
          kind = Kind::kChunk;
          res_.chunk_objects++;
        } else if (Named(oid, "m.")) {
          kind = Kind::kManifest;
        } else if (Named(oid, kClaimObjectPrefix)) {
          kind = Kind::kClaimObject;
        } else if (Named(oid, "k.")) {
          kind = Kind::kPack;
          res_.pack_objects++;
          listed_packs_.insert(oid);
          if (need_.count(oid)) live_packs_.push_back(oid);
        } else if (Named(oid, "l.")) {
          kind = Kind::kLocations;
        } else if (IsIndexShard(oid)) {
          res_.index_objects++;
        } else if (oid != RemoteTier::kNamesObject) {
          res_.other_objects++;
        }
        if (kind && !need_.count(oid)) candidates_.push_back({oid, *kind});
      }
    } catch (const std::exception& e) {
      return Status::IOError(io_.where + ": listing the objects: " + e.what() +
                             " (check that the cluster is up and reachable, or raise the "
                             "timeout (--timeout))");
    }
    // Their sizes, for the report.
    std::vector<uint64_t> sizes(candidates_.size());
    std::vector<time_t> mtimes(candidates_.size());
    PSTORE_RETURN_IF_ERROR(RunAioBatch(
        io_, candidates_.size(),
        [&](size_t i, librados::AioCompletion* c) {
          return io_.ioctx->aio_stat(candidates_[i].oid, c, &sizes[i], &mtimes[i]);
        },
        [&](size_t i, int r) {
          Candidate& c = candidates_[i];
          if (r == -ENOENT) {
            c.gone = true;
            return Status::OK();
          }
          if (r < 0) return io_.Error(r, "looking up " + c.oid);
          c.size = sizes[i];
          ++*Count(&res_, c.kind, false);
          res_.dead_bytes += c.size;
          return Status::OK();
        }));
    PSTORE_RETURN_IF_ERROR(FindMissingPacks(names));
    return CountDeadBytesOfLivePacks();
  }

  // The names whose locations name a pack the listing did not see and that
  // a look-up does not find either (res_.names_missing_packs).
  Status FindMissingPacks(const std::map<std::string, ModelDigest>& names) {
    std::set<std::string> unlisted;
    for (const auto& [ref, d] : names) {
      for (const std::string& oid : packs_of_[d]) {
        if (!listed_packs_.count(oid)) unlisted.insert(oid);
      }
    }
    std::vector<std::string> oids(unlisted.begin(), unlisted.end());
    std::set<std::string> missing;
    std::vector<uint64_t> sizes(oids.size());
    std::vector<time_t> mtimes(oids.size());
    PSTORE_RETURN_IF_ERROR(RunAioBatch(
        io_, oids.size(),
        [&](size_t i, librados::AioCompletion* c) {
          return io_.ioctx->aio_stat(oids[i], c, &sizes[i], &mtimes[i]);
        },
        [&](size_t i, int r) {
          if (r == -ENOENT) missing.insert(oids[i]);
          if (r < 0 && r != -ENOENT) return io_.Error(r, "looking up " + oids[i]);
          return Status::OK();
        }));
    if (missing.empty()) return Status::OK();
    for (const auto& [ref, d] : names) {
      for (const std::string& oid : packs_of_[d]) {
        if (missing.count(oid)) res_.names_missing_packs[ref].push_back(oid);
      }
    }
    return Status::OK();
  }

  // Packs partly dead are kept whole (not rewritten): report the bytes no
  // named manifest or push uses.
  Status CountDeadBytesOfLivePacks() {
    std::vector<uint64_t> sizes(live_packs_.size());
    std::vector<time_t> mtimes(live_packs_.size());
    return RunAioBatch(
        io_, live_packs_.size(),
        [&](size_t i, librados::AioCompletion* c) {
          return io_.ioctx->aio_stat(live_packs_[i], c, &sizes[i], &mtimes[i]);
        },
        [&](size_t i, int r) {
          if (r == -ENOENT) return Status::OK();
          if (r < 0) return io_.Error(r, "looking up " + live_packs_[i]);
          uint64_t used = 0;
          auto id = PackId::FromHex(std::string_view(live_packs_[i]).substr(2));
          for (const auto& [offset, length] : live_ranges_[*id]) used += length;
          if (used < sizes[i]) {
            res_.live_packs_dead_bytes += sizes[i] - used;
            res_.partly_dead_packs++;
          }
          return Status::OK();
        });
  }

  static bool IsIndexShard(std::string_view oid) {
    if (oid.size() != 4 || !oid.starts_with("i.")) return false;
    auto hex = [](char ch) { return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'); };
    return hex(oid[2]) && hex(oid[3]);
  }

  // Runs one write operation per live candidate; finish(c, r) judges it.
  Status ForEach(const char* step, const std::function<bool(const Candidate&)>& which,
                 const std::function<void(librados::ObjectWriteOperation&)>& build,
                 const std::function<Status(Candidate&, int)>& finish) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (!candidates_[i].gone && which(candidates_[i])) idx.push_back(i);
    }
    std::vector<librados::ObjectWriteOperation> ops(idx.size());
    uint64_t done = 0;
    PSTORE_RETURN_IF_ERROR(Progress(step, 0, idx.size()));
    return RunAioBatch(
        io_, idx.size(),
        [&](size_t j, librados::AioCompletion* c) {
          build(ops[j]);
          return io_.ioctx->aio_operate(candidates_[idx[j]].oid, c, &ops[j]);
        },
        [&](size_t j, int r) {
          PSTORE_RETURN_IF_ERROR(finish(candidates_[idx[j]], r));
          if (++done % 256 == 0 || done == idx.size()) return Progress(step, done, idx.size());
          return Status::OK();
        });
  }

  // Step 2.
  Status Mark() {
    return ForEach(
        "marking", [](const Candidate&) { return true; },
        [&](librados::ObjectWriteOperation& op) {
          op.assert_exists();
          op.setxattr(kGcMarkXattr, Bytes(token_));
        },
        [&](Candidate& c, int r) {
          if (r == -ENOENT) {
            c.gone = true;
            return Status::OK();
          }
          if (r < 0) return io_.Error(r, "marking " + c.oid);
          return Status::OK();
        });
  }

  // Step 3: every claim now on the remote counts, however old. The claims
  // and what they rely on are read before the names: a push that publishes
  // in between is then seen either by its claim or by its name (its
  // published manifest is up before its claim goes); one that claims after
  // the claims were read retains only after the marks were set, and so
  // clears them.
  Status Check() {
    PSTORE_RETURN_IF_ERROR(Progress("checking", 0, 0));
    need_.clear();
    counted_.clear();
    packs_of_.clear();
    live_ranges_.clear();
    PSTORE_ASSIGN_OR_RETURN(std::vector<ClaimRecord> claims, ReadClaims(io_));
    TestPause("gc-claims");
    PSTORE_RETURN_IF_ERROR(AddClaims(claims));
    PSTORE_ASSIGN_OR_RETURN(auto names, remote_->ListNames());
    TestPause("gc-names");
    PSTORE_RETURN_IF_ERROR(AddNames(names));
    for (Candidate& c : candidates_) c.keep = need_.count(c.oid) > 0;
    return Status::OK();
  }

  // Step 4. Names' objects (locations, manifests, claims' manifest
  // copies) go before packs and chunk objects: a gc stopped in between
  // leaves no locations naming a pack it deleted.
  Status Sweep() {
    auto sweep = [&](bool data) {
      return ForEach(
          "deleting",
          [data](const Candidate& c) {
            return !c.keep && (c.kind == Kind::kPack || c.kind == Kind::kChunk) == data;
          },
          [&](librados::ObjectWriteOperation& op) {
            op.cmpxattr(kGcMarkXattr, LIBRADOS_CMPXATTR_OP_EQ, Bytes(token_));
            op.remove();
          },
          [&](Candidate& c, int r) {
            if (r == -ENOENT) return Status::OK();  // another gc was first
            if (r == -ECANCELED || r == -ENODATA) {
              res_.kept++;  // a push retained it after it was marked
              return Status::OK();
            }
            if (r < 0) return io_.Error(r, "deleting " + c.oid);
            ++*Count(&res_, c.kind, true);
            res_.deleted_bytes += c.size;
            if (c.kind == Kind::kPack) deleted_packs_.insert(*PackId::FromHex(c.oid.substr(2)));
            return Status::OK();
          });
    };
    PSTORE_RETURN_IF_ERROR(sweep(false));
    TestPause("gc-sweeping");
    PSTORE_RETURN_IF_ERROR(sweep(true));
    TestPause("gc-swept");
    PSTORE_RETURN_IF_ERROR(RemoveDeadIndexEntries());
    // Those needed after all lose their mark again (only tidiness: a push
    // clears it too, and the next gc sets its own).
    return ForEach(
        "unmarking", [](const Candidate& c) { return c.keep; },
        [&](librados::ObjectWriteOperation& op) {
          op.cmpxattr(kGcMarkXattr, LIBRADOS_CMPXATTR_OP_EQ, Bytes(token_));
          op.rmxattr(kGcMarkXattr);
        },
        [&](Candidate& c, int r) {
          res_.kept++;
          if (r < 0 && r != -ENOENT && r != -ECANCELED && r != -ENODATA) {
            return io_.Error(r, "unmarking " + c.oid);
          }
          return Status::OK();
        });
  }

  // Step 4's end: the index entries that name a missing pack go (one this
  // run deleted, or one neither listed nor found now: deleted by an earlier
  // gc stopped before this step, or removed by hand), each compared with
  // the value read, so an entry a push replaced meanwhile stays.
  Status RemoveDeadIndexEntries() {
    PSTORE_RETURN_IF_ERROR(Progress("cleaning the index", 0, 0));
    std::vector<std::string> shards;
    std::vector<std::map<std::string, librados::bufferlist>> entries;
    std::unordered_set<PackId, ChunkKeyHasher> unlisted;
    PSTORE_ASSIGN_OR_RETURN(auto index, ReadIndex());
    for (int b = 0; b < 256; ++b) {
      const std::string oid = IndexShardObject(b);
      auto& all = index[size_t(b)];
      for (auto& [hex, v] : all) {
        auto loc = DecodeIndexValue(v.to_str());
        if (loc && !deleted_packs_.count(loc->pack) &&
            !listed_packs_.count(PackObject(loc->pack))) {
          unlisted.insert(loc->pack);
        }
      }
      if (all.empty()) continue;
      shards.push_back(oid);
      entries.push_back(std::move(all));
    }
    // Packs written after the listing exist; the others are missing.
    std::vector<PackId> ids(unlisted.begin(), unlisted.end());
    std::unordered_set<PackId, ChunkKeyHasher> missing(deleted_packs_);
    std::vector<uint64_t> sizes(ids.size());
    std::vector<time_t> mtimes(ids.size());
    PSTORE_RETURN_IF_ERROR(RunAioBatch(
        io_, ids.size(),
        [&](size_t i, librados::AioCompletion* c) {
          return io_.ioctx->aio_stat(PackObject(ids[i]), c, &sizes[i], &mtimes[i]);
        },
        [&](size_t i, int r) {
          if (r == -ENOENT) missing.insert(ids[i]);
          if (r < 0 && r != -ENOENT) return io_.Error(r, "looking up " + PackObject(ids[i]));
          return Status::OK();
        }));
    std::vector<Drop> drops;
    for (size_t i = 0; i < shards.size(); ++i) {
      Drop d{shards[i], {}};
      for (auto& [hex, v] : entries[i]) {
        auto loc = DecodeIndexValue(v.to_str());
        if (loc && missing.count(loc->pack)) d.keys.emplace(hex, std::move(v));
      }
      if (!d.keys.empty()) drops.push_back(std::move(d));
    }
    // One operation per shard, every key compared; if one was replaced
    // meanwhile, each key of that shard goes alone.
    std::vector<Drop> single;
    PSTORE_RETURN_IF_ERROR(RemoveIndexKeys(drops, &single));
    return RemoveIndexKeys(single, nullptr);
  }

  static std::string IndexShardObject(int b) {
    char oid[8];
    std::snprintf(oid, sizeof(oid), "i.%02x", b);
    return oid;
  }

  // Every entry of the 256 index shards: the first page of each shard read
  // with the others in flight, then the rest of a shard that has more.
  Result<std::vector<std::map<std::string, librados::bufferlist>>> ReadIndex() {
    constexpr size_t kShards = 256, kPage = 4096;
    std::vector<std::map<std::string, librados::bufferlist>> out(kShards);
    std::unique_ptr<bool[]> more(new bool[kShards]());
    std::vector<int> rv(kShards);
    std::vector<librados::ObjectReadOperation> ops(kShards);
    PSTORE_RETURN_IF_ERROR(RunAioBatch(
        io_, kShards,
        [&](size_t b, librados::AioCompletion* c) {
          ops[b].omap_get_vals2("", kPage, &out[b], &more[b], &rv[b]);
          return io_.ioctx->aio_operate(IndexShardObject(int(b)), c, &ops[b], nullptr);
        },
        [&](size_t b, int r) {
          if (r == 0) r = rv[b];
          if (r == -ENOENT) return Status::OK();
          if (r < 0) return io_.Error(r, "reading the chunk index " + IndexShardObject(int(b)));
          return Status::OK();
        }));
    for (size_t b = 0; b < kShards; ++b) {
      if (!more[b] || out[b].empty()) continue;
      const std::string oid = IndexShardObject(int(b));
      PSTORE_ASSIGN_OR_RETURN(
          auto rest, ReadAllOmap(io_, oid, "the chunk index " + oid, out[b].rbegin()->first));
      out[b].merge(rest);
    }
    return out;
  }

  // Removes each drop's keys where they still hold the values read; drops
  // whose compare failed go to retry one key each (if retry is set).
  Status RemoveIndexKeys(const std::vector<Drop>& drops, std::vector<Drop>* retry) {
    std::vector<librados::ObjectWriteOperation> ops(drops.size());
    return RunAioBatch(
        io_, drops.size(),
        [&](size_t i, librados::AioCompletion* c) {
          std::map<std::string, std::pair<librados::bufferlist, int>> cmp;
          std::set<std::string> keys;
          for (auto& [hex, v] : drops[i].keys) {
            cmp[hex] = {v, LIBRADOS_CMPXATTR_OP_EQ};
            keys.insert(hex);
          }
          ops[i].omap_cmp(cmp, nullptr);
          ops[i].omap_rm_keys(keys);
          return io_.ioctx->aio_operate(drops[i].shard, c, &ops[i]);
        },
        [&](size_t i, int r) {
          if (r == -ECANCELED && retry) {
            for (auto& [hex, v] : drops[i].keys) retry->push_back({drops[i].shard, {{hex, v}}});
            return Status::OK();
          }
          if (r == -ECANCELED || r == -ENOENT) return Status::OK();
          if (r < 0) return io_.Error(r, "removing entries of " + drops[i].shard);
          res_.index_entries_removed += drops[i].keys.size();
          return Status::OK();
        });
  }

  RemoteTier* remote_;
  RemoteIo io_;
  GcOptions options_;
  std::string token_;
  GcResult res_;
  std::map<ModelDigest, std::vector<ChunkKey>> chunks_of_;
  std::unordered_set<std::string> need_;  // objects the claims and names need
  std::set<ModelDigest> counted_;         // manifests whose chunks are in need_
  // The packs each counted manifest's locations name.
  std::map<ModelDigest, std::vector<std::string>> packs_of_;
  std::vector<Candidate> candidates_;
  // Byte ranges of packs that the manifests counted use (for the dead bytes
  // of packs kept whole), the live packs listed, and the packs deleted.
  std::unordered_map<PackId, std::set<std::pair<uint64_t, uint32_t>>, ChunkKeyHasher> live_ranges_;
  std::vector<std::string> live_packs_;
  std::unordered_set<std::string> listed_packs_;
  std::unordered_set<PackId, ChunkKeyHasher> deleted_packs_;
};

}  // namespace

Result<GcResult> CollectRemoteGarbage(RemoteTier* remote, const GcOptions& options) {
  Collector c(remote, options);
  return c.Run();
}

}  // namespace pstore
