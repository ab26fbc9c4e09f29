// Remote garbage collection: see store/remote/remote_gc.h.
#include "store/remote/remote_gc.h"

#include <cerrno>
#include <chrono>
#include <exception>
#include <random>
#include <unordered_set>

#include "store/remote/push_claim.h"
#include "store/remote/rados_io.h"

namespace pstore {
namespace {

enum class Kind { kChunk, kManifest, kClaimObject };

struct Candidate {
  std::string oid;
  Kind kind;
  uint64_t size = 0;
  bool gone = false;  // deleted by someone else meanwhile
  bool keep = false;  // needed after all (step 3)
};

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

librados::bufferlist Bytes(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
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

  // Every object the names and the claims need.
  Result<std::unordered_set<std::string>> Needed(const std::map<std::string, ModelDigest>& names,
                                                 const std::vector<ClaimRecord>& claims) {
    std::unordered_set<std::string> need;
    auto add_chunks = [&](const std::vector<ChunkKey>& keys) {
      for (const ChunkKey& k : keys) need.insert(RadosChunkSource::ObjectName(k));
    };
    for (const auto& [ref, d] : names) {
      const std::string oid = RemoteTier::ManifestObject(d);
      if (!need.insert(oid).second) continue;
      PSTORE_ASSIGN_OR_RETURN(const std::vector<ChunkKey>* keys, ChunksOf(d, oid));
      if (!keys) {
        return Status::Corruption(io_.where + ": " + ref + " points at manifest " + d.Hex() +
                                  ", which is missing, so which chunks it needs is unknown; "
                                  "nothing was deleted (push the model again, or remove the "
                                  "name with `pstore rm --remote`)");
      }
      add_chunks(*keys);
    }
    for (const ClaimRecord& c : claims) {
      need.insert(RemoteTier::ManifestObject(c.digest));
      need.insert(c.Object());
      // A claim whose manifest copy is not there yet has relied on nothing.
      PSTORE_ASSIGN_OR_RETURN(const std::vector<ChunkKey>* keys, ChunksOf(c.digest, c.Object()));
      if (keys) add_chunks(*keys);
    }
    return need;
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
    PSTORE_ASSIGN_OR_RETURN(auto names, remote_->ListNames());
    res_.names = names.size();
    PSTORE_ASSIGN_OR_RETURN(auto need, Needed(names, live));
    for (const std::string& oid : need) res_.referenced_chunks += oid.starts_with("c.");

    PSTORE_RETURN_IF_ERROR(Progress("listing", 0, 0));
    try {
      for (auto it = io_.ioctx->nobjects_begin(); it != io_.ioctx->nobjects_end(); ++it) {
        const std::string& oid = it->get_oid();
        res_.objects++;
        if (res_.objects % 1024 == 0) PSTORE_RETURN_IF_ERROR(Progress("listing", res_.objects, 0));
        std::optional<Kind> kind;
        if (oid.size() == 34 && oid.starts_with("c.") && ChunkKey::FromHex(oid.substr(2))) {
          kind = Kind::kChunk;
          res_.chunk_objects++;
        } else if (oid.size() == 34 && oid.starts_with("m.") &&
                   ModelDigest::FromHex(oid.substr(2))) {
          kind = Kind::kManifest;
        } else if (oid.size() == 34 && oid.starts_with(kClaimObjectPrefix)) {
          kind = Kind::kClaimObject;
        } else if (oid != RemoteTier::kNamesObject) {
          res_.other_objects++;
        }
        if (kind && !need.count(oid)) candidates_.push_back({oid, *kind});
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
          (c.kind == Kind::kChunk      ? res_.dead_chunks
           : c.kind == Kind::kManifest ? res_.dead_manifests
                                       : res_.dead_claim_objects)++;
          res_.dead_bytes += c.size;
          return Status::OK();
        }));
    return Status::OK();
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

  // Step 3: every claim now on the remote counts, however old.
  Status Check() {
    PSTORE_RETURN_IF_ERROR(Progress("checking", 0, 0));
    PSTORE_ASSIGN_OR_RETURN(std::vector<ClaimRecord> claims, ReadClaims(io_));
    PSTORE_ASSIGN_OR_RETURN(auto names, remote_->ListNames());
    PSTORE_ASSIGN_OR_RETURN(auto need, Needed(names, claims));
    for (Candidate& c : candidates_) c.keep = need.count(c.oid) > 0;
    return Status::OK();
  }

  // Step 4.
  Status Sweep() {
    PSTORE_RETURN_IF_ERROR(ForEach(
        "deleting", [](const Candidate& c) { return !c.keep; },
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
          (c.kind == Kind::kChunk      ? res_.deleted_chunks
           : c.kind == Kind::kManifest ? res_.deleted_manifests
                                       : res_.deleted_claim_objects)++;
          res_.deleted_bytes += c.size;
          return Status::OK();
        }));
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

  RemoteTier* remote_;
  RemoteIo io_;
  GcOptions options_;
  std::string token_;
  GcResult res_;
  std::map<ModelDigest, std::vector<ChunkKey>> chunks_of_;
  std::vector<Candidate> candidates_;
};

}  // namespace

Result<GcResult> CollectRemoteGarbage(RemoteTier* remote, const GcOptions& options) {
  Collector c(remote, options);
  return c.Run();
}

}  // namespace pstore
