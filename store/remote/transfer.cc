// Push and pull: see store/remote/transfer.h.
#include "store/remote/transfer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "codec/chunk_codec.h"
#include "store/chunk_read.h"
#include "store/remote/pack_layout.h"
#include "store/remote/pack_push.h"
#include "store/remote/push_claim.h"
#include "store/remote/rados_io.h"
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

// Chunks per batch of a pull from packs: a batch's chunks of one pack are
// one operation, so a larger batch means fewer operations per byte; capped
// by bytes, since every worker holds its batch's frames in memory.
constexpr size_t kPackedPullBatch = 256;

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
  // Another frame for a chunk whose frame failed its key, or nullopt (may
  // be empty). The frame is checked like the first.
  FrameAgain again;
  // Names a chunk in messages (needed with again).
  std::function<std::string(const ModelChunk&)> name;
};

// Where each batch of uses starts (and, last, uses.size()): every `batch`
// chunks, or sooner once a batch holds byte_cap raw bytes.
std::vector<size_t> BatchStarts(const std::vector<ModelChunk>& uses, size_t batch,
                                uint64_t byte_cap) {
  std::vector<size_t> starts{0};
  uint64_t bytes = 0;
  for (size_t i = 0; i < uses.size(); ++i) {
    if (i > starts.back() &&
        (i - starts.back() == batch || (byte_cap && bytes + uses[i].raw_len > byte_cap))) {
      starts.push_back(i);
      bytes = 0;
    }
    bytes += uses[i].raw_len;
  }
  if (starts.back() != uses.size()) starts.push_back(uses.size());
  return starts;
}

Status CopyMissing(const std::vector<ModelChunk>& uses, const Copy& c, const TransferOptions& o,
                   TransferResult* res, std::vector<ChunkKey>* written) {
  // Batches of at most o.batch chunks and o.batch_bytes raw bytes (a chunk
  // larger than that is a batch of its own): what a worker holds at once is
  // bounded by bytes, whatever the chunk size.
  const std::vector<size_t> starts = BatchStarts(uses, std::max<size_t>(o.batch, 1), o.batch_bytes);
  const size_t batches = starts.size() - 1;
  int threads = o.threads > 0 ? o.threads : 2 * DefaultThreads();
  std::vector<ChunkDecoder> decoders(size_t(std::max(threads, 1)));
  // Each worker decodes into one buffer of its own, reused chunk after chunk.
  std::vector<std::vector<uint8_t>> raws(decoders.size());
  std::mutex mu;  // guards res and written
  std::atomic<uint64_t> done{0};
  return ParallelFor(
      batches, threads,
      [&](size_t b, int w) -> Status {
        const size_t at = starts[b], n = starts[b + 1] - at;
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
          std::vector<uint8_t>& raw = raws[size_t(w)];
          uint64_t bytes = 0;
          for (size_t i = 0; i < want.size(); ++i) {
            const ModelChunk& u = *want_use[i];
            if (!frames[i]) return c.fail(u, nullptr);
            raw.resize(u.raw_len);
            Status st = decoders[size_t(w)].Decode(*frames[i], u.key, raw);
            // Out of memory is not damage: the frame may be sound.
            if (!st.ok() && !st.IsCorruption())
              return st.WithContext("checking chunk " + u.key.Hex());
            if (!st.ok() && c.again) {
              // The chunk's name and the first frame's failure stay in the
              // error, whatever becomes of the second read.
              Result<std::optional<std::string>> other = c.again(u.key);
              if (!other.ok() && other.status().IsCorruption()) {
                // The chunk index itself is damaged: damage, as before.
                const Status both = Status::Corruption(
                    st.message() + "; reading it again where the chunk index says failed: " +
                    other.status().message());
                return c.fail(u, &both);
              }
              if (!other.ok()) {
                // Whether the copy the index names is sound is not known (a
                // timeout, an unreachable OSD): the second read's own error,
                // after the chunk and the first frame's failure.
                const std::string object = c.from->Locate(u.key);
                return other.status().WithContext(
                    c.from->Describe() + ": " + c.name(u) +
                    (object.empty() ? "" : " (object " + object + ")") +
                    " does not match its key: " + st.message() +
                    "; reading it again where the chunk index says failed, so whether the "
                    "remote's copy is damaged is not known (nothing was stored; run the pull "
                    "again)");
              }
              if (*other) {
                Status again = decoders[size_t(w)].Decode(**other, u.key, raw);
                if (!again.ok() && !again.IsCorruption())
                  return again.WithContext("checking chunk " + u.key.Hex());
                if (again.ok()) {
                  frames[i] = std::move(*other);
                  st = Status::OK();
                } else {
                  st = Status::Corruption(
                      st.message() +
                      "; the copy the chunk index names fails its key too: " + again.message());
                }
              }
            }
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

  // Whether the remote may hold chunk objects of an older pstore, which a
  // push then reuses (asked before the claim, which creates the names
  // object).
  const RemoteIo io = remote->Io();
  PSTORE_ASSIGN_OR_RETURN(bool legacy, MayHoldChunkObjects(io));
  // A claim, so that a gc on any host keeps what this push relies on.
  PSTORE_ASSIGN_OR_RETURN(auto claim, PushClaim::Begin(remote, res.digest, bytes));

  // 1. The chunks the remote lacks: those the index lacks and, on a remote
  // an older pstore wrote, that have no object of their own (those it has
  // are retained now).
  std::vector<ModelChunk> uses = DistinctChunks(m);
  res.chunks = uses.size();
  std::vector<ChunkKey> keys;
  for (const ModelChunk& u : uses) res.raw_bytes += u.raw_len, keys.push_back(u.key);
  PSTORE_ASSIGN_OR_RETURN(IndexMap indexed, LookupIndex(io, keys));
  std::unordered_set<ChunkKey, ChunkKeyHasher> own;  // chunk objects c.<key> relied on
  if (legacy) {
    std::vector<ChunkKey> lacking;
    for (const ChunkKey& k : keys) {
      if (!indexed.count(k)) lacking.push_back(k);
    }
    PSTORE_ASSIGN_OR_RETURN(std::vector<bool> present, claim->Retain(lacking));
    for (size_t i = 0; i < lacking.size(); ++i) {
      if (present[i]) own.insert(lacking[i]);
    }
  }
  RocksChunkSource local(view.db(), false, "the local store");
  Copy c;
  c.from = &local;
  c.to = &remote->chunks();
  c.fail = [&](const ModelChunk& u, const Status* why) {
    const std::string chunk_name = name.Ref() + ", tensor " + m.tensors[u.tensor].name +
                                   ", chunk " + std::to_string(u.index) + " (" + u.key.Hex() + ")";
    if (!why) return Status::Corruption("the local store lacks " + chunk_name);
    return Status::Corruption("not pushing a damaged chunk: " + chunk_name + ": " + why->message() +
                              " (run `pstore verify`)");
  };
  c.have = [&](std::span<const ChunkKey> batch) -> Result<std::vector<bool>> {
    std::vector<bool> out(batch.size());
    for (size_t i = 0; i < batch.size(); ++i)
      out[i] = indexed.count(batch[i]) || own.count(batch[i]);
    return out;
  };
  // The claim is renewed between batches; it is used by one thread at a time.
  std::mutex claim_mu;
  c.after_batch = [&] {
    std::lock_guard<std::mutex> l(claim_mu);
    return claim->KeepAlive();
  };
  {
    PackWriter packs(io);
    c.write = [&](std::span<const ChunkFrameRef> refs) { return packs.Add(refs); };
    PSTORE_RETURN_IF_ERROR(CopyMissing(uses, c, options, &res, nullptr));
    PSTORE_RETURN_IF_ERROR(packs.Flush());
  }

  // 2. Retain: where the index now says each chunk is (this push's entries,
  // or another's that were first), and every pack named there, its gc mark
  // cleared. Chunks whose pack was found missing (a gc deleted it) go into
  // a new pack, their entries replaced, and are retained again.
  Locations locs;
  std::vector<ChunkKey> packed;  // the chunks the index places (not the old remote's own objects)
  for (const ChunkKey& k : keys) {
    if (!own.count(k)) packed.push_back(k);
  }
  for (int round = 0;; ++round) {
    PSTORE_ASSIGN_OR_RETURN(IndexMap now, LookupIndex(io, packed));
    std::vector<PackId> ids;
    {
      std::unordered_set<PackId, ChunkKeyHasher> seen;
      for (const auto& [k, loc] : now) {
        if (seen.insert(loc.pack).second) ids.push_back(loc.pack);
      }
    }
    std::vector<std::string> oids;
    for (const PackId& id : ids) oids.push_back(PackObject(id));
    PSTORE_ASSIGN_OR_RETURN(std::vector<bool> present, RetainObjects(io, oids));
    std::unordered_set<PackId, ChunkKeyHasher> gone;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!present[i]) gone.insert(ids[i]);
    }
    IndexMap replace;
    std::vector<ModelChunk> again;
    for (const ModelChunk& u : uses) {
      if (own.count(u.key)) continue;
      auto it = now.find(u.key);
      if (it == now.end() || gone.count(it->second.pack)) {
        if (it != now.end()) replace.emplace(u.key, it->second);
        again.push_back(u);
      }
    }
    if (again.empty()) {
      for (const auto& [k, loc] : now) locs.Set(k, loc);
      for (const ChunkKey& k : own) locs.Set(k, ChunkLocation{true, {}, 0, 0});
      break;
    }
    if (round == 3) {
      return Status::Busy(where +
                          ": packs this push relies on kept being deleted by a "
                          "`remote gc` while it ran; run the push again");
    }
    PackWriter packs(io, replace);
    Copy again_copy = c;
    again_copy.have = [](std::span<const ChunkKey> batch) -> Result<std::vector<bool>> {
      return std::vector<bool>(batch.size(), false);
    };
    again_copy.write = [&](std::span<const ChunkFrameRef> refs) { return packs.Add(refs); };
    PSTORE_RETURN_IF_ERROR(CopyMissing(again, again_copy, options, &res, nullptr));
    PSTORE_RETURN_IF_ERROR(packs.Flush());
  }
  // 3. The locations, then the manifest, then the name.
  PSTORE_RETURN_IF_ERROR(PutLocationsObject(io, claim.get(), res.digest, locs.Serialize()));
  auto t1 = std::chrono::steady_clock::now();
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

  if (res.unchanged) {
    for (const ModelChunk& u : DistinctChunks(m)) ++res.chunks, res.raw_bytes += u.raw_len;
    res.seconds = Since(t0);
    return res;
  }
  // Where the chunks are: packs (read by range, one operation per pack a
  // batch touches) or, for a model pushed before packs, one object each.
  auto read_locs = ReadLocations(remote->Io(), res.digest);
  if (!read_locs.ok() && read_locs.status().IsCorruption()) {
    return DamagedLocations(read_locs.status(), name.Ref(), "nothing was stored");
  }
  PSTORE_ASSIGN_OR_RETURN(std::optional<Locations> locs, std::move(read_locs));
  if (locs) {
    // Each frame read is then bounded by its chunk's raw length, and a
    // batch's ranges by the batch's raw bytes (o.batch_bytes).
    Status lengths = CheckFrameLengths(*locs, m, where + ": " + LocationsObject(res.digest));
    if (!lengths.ok()) return DamagedLocations(lengths, name.Ref(), "nothing was stored");
  }
  std::unique_ptr<LocatedChunkSource> located;
  TransferOptions o = options;
  if (locs) {
    located = std::make_unique<LocatedChunkSource>(
        remote->Io(), std::make_shared<const Locations>(std::move(*locs)),
        LocationsObject(res.digest));
    o.batch = std::max<size_t>(o.batch, kPackedPullBatch);
  }
  ChunkSource* from = located ? static_cast<ChunkSource*>(located.get()) : &remote->chunks();
  FrameAgain again;
  if (located) {
    // A frame of a damaged pack: once more from where the index says, if
    // elsewhere (a good copy pushed since).
    again = [&](const ChunkKey& key) -> Result<std::optional<std::string>> {
      PSTORE_ASSIGN_OR_RETURN(auto frames, located->ReadElsewhere(std::span(&key, 1)));
      return std::move(frames[0]);
    };
  }
  PSTORE_ASSIGN_OR_RETURN(TransferResult stored,
                          PullChunks(writer, name, *bytes, from, o, std::move(again)));
  stored.seconds = Since(t0);
  return stored;
}

Result<TransferResult> PullChunks(StoreWriter* writer, const ModelName& name,
                                  const std::string& manifest, ChunkSource* from,
                                  const TransferOptions& options, FrameAgain again) {
  auto t0 = std::chrono::steady_clock::now();
  const std::string where = from->Describe();
  PSTORE_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(manifest, false));
  TransferResult res;
  res.digest = Manifest::DigestOf(manifest);
  res.manifest_bytes = manifest.size();
  std::vector<ModelChunk> uses = DistinctChunks(m);
  res.chunks = uses.size();
  for (const ModelChunk& u : uses) res.raw_bytes += u.raw_len;
  PSTORE_RETURN_IF_ERROR(writer->CheckReserve().WithContext(name.Ref() + " was not pulled"));
  RocksChunkSource local(writer->view().db(), true, "the local store");
  TransferOptions o = options;
  Copy c;
  c.from = from;
  c.to = &local;
  // Checked once, by CopyMissing: written without decoding again.
  c.write = [&](std::span<const ChunkFrameRef> refs) { return local.WriteChecked(refs); };
  c.again = std::move(again);
  c.name = [&](const ModelChunk& u) {
    return "model " + name.Ref() + ", tensor " + m.tensors[u.tensor].name + ", chunk " +
           std::to_string(u.index);
  };
  c.fail = [&](const ModelChunk& u, const Status* why) {
    const std::string chunk_name = c.name(u);
    if (!why) {
      return Status::Corruption(where + " lacks " + chunk_name + " (object " + from->Locate(u.key) +
                                "); nothing was stored (push the model again)");
    }
    return RemoteFrameMismatch(*from, chunk_name, u.key, *why, "nothing was stored");
  };
  if (TestPauseSet("pull-written")) {
    o.threads = 1;  // one batch at a time: none in flight while paused
    c.after_batch = [] {
      TestPause("pull-written");
      return Status::OK();
    };
  } else if (TestPauseSet("pull-kept")) {
    // Pauses at the first batch after which a flush of this pull's chunks
    // is installed: a kill there leaves part of the model kept. Batches of
    // 4 MiB, and a flush asked for after the first, so that the pause comes
    // before the last batch of any model of more than one batch.
    o.threads = 1;
    o.batch_bytes = std::min<uint64_t>(o.batch_bytes, 4ull << 20);
    c.after_batch = [&local, start = local.SettledChunkTables(), kept = false,
                     first = true]() mutable {
      if (first) local.StartFlush();
      first = false;
      if (!kept && local.SettledChunkTables() > start) {
        kept = true;
        TestPause("pull-kept");
      }
      return Status::OK();
    };
  }
  std::vector<ChunkKey> written;
  Status st = CopyMissing(uses, c, o, &res, &written);
  auto t1 = std::chrono::steady_clock::now();
  StoreWriter::ModelCommit mc;
  mc.manifest = manifest;
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
