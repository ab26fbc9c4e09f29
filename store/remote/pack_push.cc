// Writing packs, index entries and locations: see store/remote/pack_push.h.
#include "store/remote/pack_push.h"

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>

#include "store/remote/push_claim.h"
#include "store/remote/rados_chunk_source.h"
#include "store/remote/remote_tier.h"
#include "store/remote/test_pause.h"

namespace pstore {
namespace {

librados::bufferlist Bytes(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

// Keys grouped by index shard.
template <typename T>
std::map<std::string, std::vector<T>> ByShard(const std::vector<T>& items,
                                              const ChunkKey& (*key)(const T&)) {
  std::map<std::string, std::vector<T>> out;
  for (const T& it : items) out[IndexShard(key(it))].push_back(it);
  return out;
}

}  // namespace

Result<bool> MayHoldChunkObjects(const RemoteIo& io) {
  librados::ObjectWriteOperation op;
  op.create(true);
  op.setxattr(kLayoutXattr, Bytes("packs 1"));
  int r = io.ioctx->operate(RemoteTier::kNamesObject, &op);
  if (r == 0) return false;
  if (r != -EEXIST) return io.Error(r, "creating the names object");
  librados::bufferlist v;
  r = io.ioctx->getxattr(RemoteTier::kNamesObject, kLayoutXattr, v);
  if (r == -ENODATA) return true;
  if (r < 0) return io.Error(r, "reading the names object's layout");
  return false;
}

Result<IndexMap> LookupIndex(const RemoteIo& io, std::span<const ChunkKey> keys) {
  std::vector<ChunkKey> all(keys.begin(), keys.end());
  auto shards = ByShard<ChunkKey>(all, [](const ChunkKey& k) -> const ChunkKey& { return k; });
  std::vector<std::string> oids;
  std::vector<std::set<std::string>> wanted;
  for (auto& [oid, ks] : shards) {
    oids.push_back(oid);
    std::set<std::string> hex;
    for (const ChunkKey& k : ks) hex.insert(k.Hex());
    wanted.push_back(std::move(hex));
  }
  std::vector<std::map<std::string, librados::bufferlist>> vals(oids.size());
  std::vector<int> rvals(oids.size());
  std::vector<librados::ObjectReadOperation> ops(oids.size());
  IndexMap out;
  PSTORE_RETURN_IF_ERROR(RunAioBatch(
      io, oids.size(),
      [&](size_t i, librados::AioCompletion* c) {
        ops[i].omap_get_vals_by_keys(wanted[i], &vals[i], &rvals[i]);
        return io.ioctx->aio_operate(oids[i], c, &ops[i], nullptr);
      },
      [&](size_t i, int r) {
        if (r == -ENOENT) return Status::OK();  // no entry in this shard yet
        if (r < 0) return io.Error(r, "reading the chunk index " + oids[i]);
        for (auto& [hex, v] : vals[i]) {
          auto key = ChunkKey::FromHex(hex);
          auto loc = DecodeIndexValue(v.to_str());
          if (!key || !loc) {
            return Status::Corruption(io.where + ": the chunk index " + oids[i] + "'s entry " +
                                      hex + " is not one this pstore can read");
          }
          out.emplace(*key, *loc);
        }
        vals[i].clear();
        return Status::OK();
      }));
  return out;
}

Status SetIndexEntries(const RemoteIo& io, const IndexMap& entries, const IndexMap& replace) {
  using Entry = std::pair<ChunkKey, ChunkLocation>;
  std::vector<Entry> all(entries.begin(), entries.end());
  auto shards = ByShard<Entry>(all, [](const Entry& e) -> const ChunkKey& { return e.first; });
  // One operation per shard: every key compared with its expected old value
  // (absent compares as empty) and all set. If any compare fails (someone
  // set a key first), each key of the shard goes alone.
  struct Op {
    std::string oid;
    std::vector<Entry> entries;
  };
  std::vector<Op> ops;
  for (auto& [oid, es] : shards) ops.push_back({oid, std::move(es)});
  auto build = [&](librados::ObjectWriteOperation& w, const std::vector<Entry>& es) {
    std::map<std::string, std::pair<librados::bufferlist, int>> cmp;
    std::map<std::string, librados::bufferlist> set;
    for (const Entry& e : es) {
      auto old = replace.find(e.first);
      cmp[e.first.Hex()] = {
          old == replace.end() ? librados::bufferlist() : Bytes(EncodeIndexValue(old->second)),
          LIBRADOS_CMPXATTR_OP_EQ};
      set[e.first.Hex()] = Bytes(EncodeIndexValue(e.second));
    }
    w.create(false);
    w.omap_cmp(cmp, nullptr);
    w.omap_set(set);
  };
  std::vector<librados::ObjectWriteOperation> writes(ops.size());
  std::vector<Op> single;
  PSTORE_RETURN_IF_ERROR(RunAioBatch(
      io, ops.size(),
      [&](size_t i, librados::AioCompletion* c) {
        build(writes[i], ops[i].entries);
        return io.ioctx->aio_operate(ops[i].oid, c, &writes[i]);
      },
      [&](size_t i, int r) {
        if (r == -ECANCELED) {
          for (const Entry& e : ops[i].entries) single.push_back({ops[i].oid, {e}});
          return Status::OK();
        }
        if (r < 0) return io.Error(r, "setting entries of the chunk index " + ops[i].oid);
        return Status::OK();
      }));
  std::vector<librados::ObjectWriteOperation> singles(single.size());
  return RunAioBatch(
      io, single.size(),
      [&](size_t i, librados::AioCompletion* c) {
        build(singles[i], single[i].entries);
        return io.ioctx->aio_operate(single[i].oid, c, &singles[i]);
      },
      [&](size_t i, int r) {
        if (r == -ECANCELED) return Status::OK();  // another push's entry was first
        if (r < 0) return io.Error(r, "setting an entry of the chunk index " + single[i].oid);
        return Status::OK();
      });
}

Status PutLocationsObject(const RemoteIo& io, PushClaim* claim, const ModelDigest& digest,
                          const std::string& bytes) {
  const std::string oid = LocationsObject(digest);
  for (int attempt = 0; attempt < 3; ++attempt) {
    // A push whose claim a gc withdrew may hold locations naming packs the
    // gc has deleted since: it writes none.
    PSTORE_RETURN_IF_ERROR(claim->Renew());
    TestPause("push-locations");
    librados::ObjectWriteOperation op;
    op.create(true);
    op.write_full(Bytes(bytes));
    int r = io.ioctx->operate(oid, &op);
    if (r == 0) return Status::OK();
    if (r != -EEXIST) return io.Error(r, "writing " + oid);
    // Someone's locations are there (perhaps a published model's): they are
    // kept, retained with every object they name, unless one of those is
    // missing or they do not parse.
    PSTORE_ASSIGN_OR_RETURN(std::optional<VersionedBytes> read, ReadVersioned(io, oid));
    if (!read) continue;  // a gc deleted it meanwhile: create it again
    auto there = Locations::Parse(read->bytes, oid);
    if (there.ok()) {
      std::vector<std::string> oids{oid};
      for (const auto& [k, loc] : there->map()) {
        if (loc.own) oids.push_back(RadosChunkSource::ObjectName(k));
      }
      for (const PackId& id : there->Packs()) oids.push_back(PackObject(id));
      PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, RetainObjects(io, oids));
      if (!have[0]) continue;
      if (std::find(have.begin(), have.end(), false) == have.end()) return Status::OK();
    }
    // They name an object that is missing (written by a push whose packs a
    // gc deleted after withdrawing its claim), or are damaged: replaced by
    // ours, only if no one changed them since they were read.
    librados::ObjectWriteOperation w;
    w.assert_version(read->version);
    w.write_full(Bytes(bytes));
    r = io.ioctx->operate(oid, &w);
    if (r == -ERANGE || r == -EOVERFLOW || r == -ENOENT) continue;
    if (r < 0) return io.Error(r, "writing " + oid);
    PSTORE_ASSIGN_OR_RETURN(std::vector<bool> have, RetainObjects(io, {oid}));
    if (have[0]) return Status::OK();
  }
  return Status::Busy(io.where + ": " + oid +
                      " was deleted or changed while this push wrote it, three times; run the "
                      "push again");
}

Status PackWriter::Add(std::span<const ChunkFrameRef> frames) {
  std::vector<Pending> full;
  {
    MutexLock l(&mu_);
    for (const ChunkFrameRef& f : frames) {
      if (!open_.bytes.empty() && open_.bytes.size() + f.frame.size() > kPackBytes) {
        full.push_back(std::move(open_));
        open_ = Pending();
      }
      ChunkLocation loc;
      loc.offset = open_.bytes.size();
      loc.length = uint32_t(f.frame.size());
      open_.bytes.append(f.frame);
      open_.entries.emplace_back(f.key, loc);
    }
  }
  for (Pending& p : full) PSTORE_RETURN_IF_ERROR(Write(std::move(p)));
  return Status::OK();
}

Status PackWriter::Flush() {
  Pending p;
  {
    MutexLock l(&mu_);
    p = std::move(open_);
    open_ = Pending();
  }
  if (p.entries.empty()) return Status::OK();
  return Write(std::move(p));
}

Status PackWriter::Write(Pending p) {
  const PackId id = NewPackId();
  const std::string oid = PackObject(id);
  librados::ObjectWriteOperation op;
  op.create(true);  // exclusive: a pack is written once and never changed
  op.write_full(Bytes(p.bytes));
  int r = io_.ioctx->operate(oid, &op);
  if (r < 0) return io_.Error(r, "writing pack " + oid);
  IndexMap entries;
  for (auto& [key, loc] : p.entries) {
    loc.pack = id;
    entries.emplace(key, loc);
  }
  return SetIndexEntries(io_, entries, replace_);
}

}  // namespace pstore
