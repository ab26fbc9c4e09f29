// Push and pull: see store/remote/transfer.h.
#include "store/remote/transfer.h"

#include <chrono>
#include <unordered_map>

#include "codec/chunk_codec.h"
#include "store/remote/push_claim.h"
#include "store/remote/test_pause.h"
#include "store/rocks_chunk_source.h"

namespace pstore {
namespace {

// A distinct chunk of a manifest and where it first occurs.
struct ChunkUse {
  ChunkKey key;
  uint32_t tensor = 0;
  uint64_t index = 0;  // within the tensor
  uint64_t raw_len = 0;
};

std::vector<ChunkUse> DistinctChunks(const Manifest& m) {
  std::vector<ChunkUse> out;
  std::unordered_map<ChunkKey, bool, ChunkKeyHasher> seen;
  for (uint32_t t = 0; t < m.tensors.size(); ++t) {
    const ManifestTensor& mt = m.tensors[t];
    uint64_t n = m.ChunkCount(mt);
    for (uint64_t j = 0; j < n; ++j) {
      const ChunkKey& k = m.chunks[mt.first_chunk + j];
      if (seen.emplace(k, true).second) out.push_back({k, t, j, m.ChunkBytes(mt, j)});
    }
  }
  return out;
}

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Status Progress(const TransferOptions& o, uint64_t done, uint64_t total) {
  if (o.progress && !o.progress(done, total)) return Status::Aborted("interrupted");
  return Status::OK();
}

}  // namespace

Result<TransferResult> Push(const StoreView& view, const std::string& ref, RemoteTier* remote,
                            const TransferOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  TransferResult res;
  PSTORE_ASSIGN_OR_RETURN(NameEntry entry, view.GetName(name));
  res.digest = entry.digest;
  PSTORE_ASSIGN_OR_RETURN(std::string bytes, view.LoadManifestBytes(res.digest));
  PSTORE_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(bytes, false));
  res.manifest_bytes = bytes.size();
  const std::string where = remote->Describe();

  // The name first: refuse early rather than after uploading.
  PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> current, remote->GetName(name.Ref()));
  if (current && *current != res.digest && !options.force) {
    return Status::Exists(where + ": " + name.Ref() + " already names another model (" +
                          current->Hex() + "); pass --force to replace it");
  }

  // A claim, so that a gc on any host keeps what this push relies on.
  PSTORE_ASSIGN_OR_RETURN(auto claim, PushClaim::Begin(remote, res.digest, bytes));

  // 1. The chunks the remote lacks (those it has are retained).
  std::vector<ChunkUse> uses = DistinctChunks(m);
  res.chunks = uses.size();
  for (const ChunkUse& u : uses) res.raw_bytes += u.raw_len;
  RocksChunkSource local(view.db(), false, "the local store");
  ChunkDecoder decoder;
  std::vector<uint8_t> raw;
  uint64_t done = 0;
  for (size_t at = 0; at < uses.size(); at += options.batch) {
    size_t n = std::min(options.batch, uses.size() - at);
    std::vector<ChunkKey> keys;
    for (size_t i = 0; i < n; ++i) keys.push_back(uses[at + i].key);
    PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, claim->Retain(keys));
    std::vector<ChunkKey> want;
    std::vector<const ChunkUse*> want_use;
    for (size_t i = 0; i < n; ++i) {
      if (!have[i]) want.push_back(keys[i]), want_use.push_back(&uses[at + i]);
    }
    if (!want.empty()) {
      PSTORE_ASSIGN_OR_RETURN(auto frames, local.Read(want));
      std::vector<ChunkFrameRef> refs;
      for (size_t i = 0; i < want.size(); ++i) {
        const ChunkUse& u = *want_use[i];
        const std::string chunk_name = name.Ref() + ", tensor " + m.tensors[u.tensor].name +
                                       ", chunk " + std::to_string(u.index) + " (" + u.key.Hex() +
                                       ")";
        if (!frames[i]) return Status::Corruption("the local store lacks " + chunk_name);
        raw.resize(u.raw_len);
        Status st = decoder.Decode(*frames[i], u.key, raw);
        if (!st.ok()) {
          return Status::Corruption("not pushing a damaged chunk: " + chunk_name + ": " +
                                    st.message() + " (run `pstore verify`)");
        }
        refs.push_back({u.key, *frames[i], u.raw_len});
        res.moved_chunks++;
        res.moved_bytes += frames[i]->size();
      }
      PSTORE_RETURN_IF_ERROR(remote->chunks().Write(refs));
    }
    for (size_t i = 0; i < n; ++i) done += uses[at + i].raw_len;
    PSTORE_RETURN_IF_ERROR(Progress(options, done, res.raw_bytes));
    PSTORE_RETURN_IF_ERROR(claim->KeepAlive());
  }
  // 2. The manifest, once every chunk is there.
  PSTORE_RETURN_IF_ERROR(claim->PutManifest(bytes));
  // 3. The name, if it is still what we read and the claim still holds (set
  // again when it already named the model, so that a name removed meanwhile
  // is not reported as pushed).
  res.unchanged = current && *current == res.digest;
  TestPause("push-publish");
  PSTORE_RETURN_IF_ERROR(claim->Publish(name.Ref(), current));
  res.seconds = Since(t0);
  return res;
}

Result<TransferResult> Pull(StoreWriter* writer, const std::string& ref, RemoteTier* remote,
                            const TransferOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  PSTORE_ASSIGN_OR_RETURN(ModelName name, ParseModelName(ref));
  const std::string where = remote->Describe();
  TransferResult res;
  PSTORE_ASSIGN_OR_RETURN(std::optional<ModelDigest> d, remote->GetName(name.Ref()));
  if (!d) {
    return Status::NotFound(where + " has no model called " + name.Ref() +
                            " (`pstore ls --remote NAME` lists what it has)");
  }
  res.digest = *d;
  PSTORE_ASSIGN_OR_RETURN(std::optional<std::string> bytes, remote->GetManifest(res.digest));
  if (!bytes) {
    return Status::Corruption(where + ": " + name.Ref() + " points at manifest " +
                              res.digest.Hex() + ", which is missing on the remote");
  }
  if (Manifest::DigestOf(*bytes) != res.digest) {
    return Status::Corruption(where + ": the manifest of " + name.Ref() + " (object " +
                              RemoteTier::ManifestObject(res.digest) +
                              ") does not match its digest; nothing was stored");
  }
  PSTORE_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(*bytes, false));
  res.manifest_bytes = bytes->size();

  // Refuse a taken local name before fetching anything.
  auto existing = writer->view().GetName(name);
  if (existing.ok() && existing->digest == res.digest) {
    res.unchanged = true;
  } else if (existing.ok() && !options.force) {
    return Status::Exists(name.Ref() + " already names another model (" + existing->digest.Hex() +
                          ") in the local store; pass --force to replace it");
  } else if (!existing.ok() && !existing.status().IsNotFound()) {
    return existing.status();
  }

  std::vector<ChunkUse> uses = DistinctChunks(m);
  res.chunks = uses.size();
  for (const ChunkUse& u : uses) res.raw_bytes += u.raw_len;
  if (res.unchanged) {
    res.seconds = Since(t0);
    return res;
  }
  PSTORE_RETURN_IF_ERROR(writer->CheckReserve().WithContext(name.Ref() + " was not pulled"));
  RocksChunkSource local(writer->view().db(), true, "the local store");
  std::vector<ChunkKey> written;
  auto fetch = [&]() -> Status {
    ChunkDecoder decoder;
    std::vector<uint8_t> raw;
    uint64_t done = 0;
    for (size_t at = 0; at < uses.size(); at += options.batch) {
      size_t n = std::min(options.batch, uses.size() - at);
      std::vector<ChunkKey> keys;
      for (size_t i = 0; i < n; ++i) keys.push_back(uses[at + i].key);
      PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, local.Contains(keys));
      std::vector<ChunkKey> want;
      std::vector<const ChunkUse*> want_use;
      for (size_t i = 0; i < n; ++i) {
        if (!have[i]) want.push_back(keys[i]), want_use.push_back(&uses[at + i]);
      }
      if (!want.empty()) {
        PSTORE_ASSIGN_OR_RETURN(auto frames, remote->chunks().Read(want));
        std::vector<ChunkFrameRef> refs;
        for (size_t i = 0; i < want.size(); ++i) {
          const ChunkUse& u = *want_use[i];
          const std::string chunk_name =
              "model " + name.Ref() + ", tensor " + m.tensors[u.tensor].name + ", chunk " +
              std::to_string(u.index) + " (object " + RadosChunkSource::ObjectName(u.key) + ")";
          if (!frames[i]) {
            return Status::Corruption(where + " lacks " + chunk_name +
                                      "; nothing was stored (push the model again)");
          }
          raw.resize(u.raw_len);
          Status st = decoder.Decode(*frames[i], u.key, raw);
          if (!st.ok()) {
            return Status::Corruption(
                where + ": " + chunk_name + " does not match its key: " + st.message() +
                "; nothing was stored (the remote copy is damaged: remove the object with "
                "`rados rm` and push the model again from a good store)");
          }
          refs.push_back({u.key, *frames[i], u.raw_len});
          res.moved_bytes += frames[i]->size();
        }
        PSTORE_RETURN_IF_ERROR(local.Write(refs));
        written.insert(written.end(), want.begin(), want.end());
        res.moved_chunks += want.size();
      }
      for (size_t i = 0; i < n; ++i) done += uses[at + i].raw_len;
      PSTORE_RETURN_IF_ERROR(Progress(options, done, res.raw_bytes));
    }
    bool unchanged = false;
    return writer->CommitManifest(*bytes, res.digest, name, options.force, &unchanged);
  };
  Status st = fetch();
  if (!st.ok()) {
    // Nothing refers to the chunks this pull wrote: take them out again.
    Status taken = writer->TakeOutChunks(written);
    if (!taken.ok()) {
      return st.WithContext("(the chunks it fetched are removed by the next `pstore compact`: " +
                            taken.message() + ")");
    }
    return st;
  }
  res.seconds = Since(t0);
  return res;
}

}  // namespace pstore
