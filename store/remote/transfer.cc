// Push and pull: see store/remote/transfer.h.
#include "store/remote/transfer.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "codec/chunk_codec.h"
#include "store/chunk_read.h"
#include "store/remote/push_claim.h"
#include "store/remote/test_pause.h"
#include "store/rocks_chunk_source.h"

namespace pstore {
namespace {

// A distinct chunk of a manifest and where it first occurs.
struct ModelChunk {
  ChunkKey key;
  uint32_t tensor = 0;
  uint64_t index = 0;  // within the tensor
  uint64_t raw_len = 0;
};

std::vector<ModelChunk> DistinctChunks(const Manifest& m) {
  std::vector<ModelChunk> out;
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

// Copying the chunks of `uses` that `to` lacks from `from`, checking each
// frame against its key once. Batches of options.batch chunks go to
// options.threads workers (ParallelFor), so while one worker decodes its
// batch on one core, others have their batch's lookups, reads and writes in
// flight (each source keeps its own operations in flight within a batch).
struct Copy {
  ChunkSource* from = nullptr;
  ChunkSource* to = nullptr;
  // Writes checked frames to `to`.
  std::function<Status(std::span<const ChunkFrameRef>)> write;
  // The error for a chunk `from` lacks (why == nullptr) or whose frame does
  // not match its key (*why).
  std::function<Status(const ModelChunk&, const Status* why)> fail;
  // Which of a batch's chunks `to` has already (empty: to->Contains).
  std::function<Result<std::vector<bool>>(std::span<const ChunkKey>)> have;
  // Run after each batch (may be empty).
  std::function<Status()> after_batch;
};

Status CopyMissing(const std::vector<ModelChunk>& uses, const Copy& c, const TransferOptions& o,
                   TransferResult* res, std::vector<ChunkKey>* written) {
  const size_t batch = std::max<size_t>(o.batch, 1);
  const size_t batches = (uses.size() + batch - 1) / batch;
  int threads = o.threads > 0 ? o.threads : 2 * DefaultThreads();
  std::vector<ChunkDecoder> decoders(size_t(std::max(threads, 1)));
  std::mutex mu;  // guards res and written
  std::atomic<uint64_t> done{0};
  return ParallelFor(
      batches, threads,
      [&](size_t b, int w) -> Status {
        const size_t at = b * batch, n = std::min(batch, uses.size() - at);
        std::vector<ChunkKey> keys;
        for (size_t i = 0; i < n; ++i) keys.push_back(uses[at + i].key);
        PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have,
                                c.have ? c.have(keys) : c.to->Contains(keys));
        std::vector<ChunkKey> want;
        std::vector<const ModelChunk*> want_use;
        uint64_t raw_done = 0;
        for (size_t i = 0; i < n; ++i) {
          raw_done += uses[at + i].raw_len;
          if (!have[i]) want.push_back(keys[i]), want_use.push_back(&uses[at + i]);
        }
        if (!want.empty()) {
          PSTORE_ASSIGN_OR_RETURN(auto frames, c.from->Read(want));
          std::vector<ChunkFrameRef> refs;
          std::vector<uint8_t> raw;
          uint64_t bytes = 0;
          for (size_t i = 0; i < want.size(); ++i) {
            const ModelChunk& u = *want_use[i];
            if (!frames[i]) return c.fail(u, nullptr);
            raw.resize(u.raw_len);
            Status st = decoders[size_t(w)].Decode(*frames[i], u.key, raw);
            if (!st.ok()) return c.fail(u, &st);
            refs.push_back({u.key, *frames[i], u.raw_len});
            bytes += frames[i]->size();
          }
          PSTORE_RETURN_IF_ERROR(c.write(refs));
          std::lock_guard<std::mutex> l(mu);
          if (written) written->insert(written->end(), want.begin(), want.end());
          res->moved_chunks += want.size();
          res->moved_bytes += bytes;
        }
        done += raw_done;
        return c.after_batch ? c.after_batch() : Status::OK();
      },
      &done, res->raw_bytes, o.progress);
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
  std::vector<ModelChunk> uses = DistinctChunks(m);
  res.chunks = uses.size();
  for (const ModelChunk& u : uses) res.raw_bytes += u.raw_len;
  RocksChunkSource local(view.db(), false, "the local store");
  Copy c;
  c.from = &local;
  c.to = &remote->chunks();
  c.write = [&](std::span<const ChunkFrameRef> refs) { return c.to->Write(refs); };
  c.fail = [&](const ModelChunk& u, const Status* why) {
    const std::string chunk_name = name.Ref() + ", tensor " + m.tensors[u.tensor].name +
                                   ", chunk " + std::to_string(u.index) + " (" + u.key.Hex() + ")";
    if (!why) return Status::Corruption("the local store lacks " + chunk_name);
    return Status::Corruption("not pushing a damaged chunk: " + chunk_name + ": " + why->message() +
                              " (run `pstore verify`)");
  };
  // The chunks the remote has are retained through the claim (which clears a
  // gc's marks on them), and the claim is renewed between batches. A claim is
  // used by one thread at a time.
  std::mutex claim_mu;
  c.have = [&](std::span<const ChunkKey> keys) {
    std::lock_guard<std::mutex> l(claim_mu);
    return claim->Retain(keys);
  };
  c.after_batch = [&] {
    std::lock_guard<std::mutex> l(claim_mu);
    return claim->KeepAlive();
  };
  PSTORE_RETURN_IF_ERROR(CopyMissing(uses, c, options, &res, nullptr));
  auto t1 = std::chrono::steady_clock::now();
  // 2. The manifest, once every chunk is there.
  PSTORE_RETURN_IF_ERROR(claim->PutManifest(bytes));
  // 3. The name, if it is still what we read and the claim still holds (set
  // again when it already named the model, so that a name removed meanwhile
  // is not reported as pushed).
  res.unchanged = current && *current == res.digest;
  TestPause("push-publish");
  PSTORE_RETURN_IF_ERROR(claim->Publish(name.Ref(), current));
  res.commit_seconds = Since(t1);
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

  std::vector<ModelChunk> uses = DistinctChunks(m);
  res.chunks = uses.size();
  for (const ModelChunk& u : uses) res.raw_bytes += u.raw_len;
  if (res.unchanged) {
    res.seconds = Since(t0);
    return res;
  }
  PSTORE_RETURN_IF_ERROR(writer->CheckReserve().WithContext(name.Ref() + " was not pulled"));
  RocksChunkSource local(writer->view().db(), true, "the local store");
  Copy c;
  c.from = &remote->chunks();
  c.to = &local;
  // Checked once, by CopyMissing: written without decoding again.
  c.write = [&](std::span<const ChunkFrameRef> refs) { return local.WriteChecked(refs); };
  c.fail = [&](const ModelChunk& u, const Status* why) {
    const std::string chunk_name = "model " + name.Ref() + ", tensor " + m.tensors[u.tensor].name +
                                   ", chunk " + std::to_string(u.index);
    if (!why) {
      return Status::Corruption(where + " lacks " + chunk_name + " (object " +
                                RadosChunkSource::ObjectName(u.key) +
                                "); nothing was stored (push the model again)");
    }
    return RemoteFrameMismatch(remote->chunks(), chunk_name, u.key, *why, "nothing was stored");
  };
  TransferOptions o = options;
  if (TestPauseSet("pull-written")) {
    o.threads = 1;  // one batch at a time: none in flight while paused
    c.after_batch = [] {
      TestPause("pull-written");
      return Status::OK();
    };
  }
  std::vector<ChunkKey> written;
  Status st = CopyMissing(uses, c, o, &res, &written);
  auto t1 = std::chrono::steady_clock::now();
  StoreWriter::ModelCommit mc;
  mc.manifest = *bytes;
  mc.digest = res.digest;
  mc.name = name;
  mc.force = options.force;
  mc.wrote_chunks = !written.empty();
  mc.written = written;
  mc.verb = "pulled";
  PSTORE_RETURN_IF_ERROR(writer->CommitModel(st, mc).status());
  res.commit_seconds = Since(t1);
  res.seconds = Since(t0);
  return res;
}

}  // namespace pstore
