// Packs, the chunk index and locations: see store/remote/pack_layout.h.
#include "store/remote/pack_layout.h"

#include "store/remote/pack_push.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>

#include "codec/chunk_codec.h"
#include "common/coding.h"
#include "store/remote/rados_chunk_source.h"
#include "store/store_dir.h"

namespace pstore {
namespace {

constexpr char kLocationsMagic[8] = {'p', 's', 't', 'l', 'o', 'c', '1', '\n'};
constexpr uint32_t kOwnObject = 0xffffffffu;
constexpr size_t kEntryBytes = 16 + 4 + 8 + 4;
// Ranges of one pack closer than this are read as one (the bytes between are
// read and dropped: cheaper than another extent).
constexpr uint64_t kCoalesceGap = 64 * 1024;
// No frame is longer (chunks are at most a few MiB; the OSD refuses reads
// of 2 GiB).
constexpr uint32_t kMaxFrameBytes = 1u << 30;

}  // namespace

std::string IndexShard(const ChunkKey& key) {
  return "i." + key.Hex().substr(0, 2);
}

PackId NewPackId() {
  std::random_device rd;
  PackId id;
  for (size_t i = 0; i < id.bytes.size(); i += 4) {
    uint32_t v = rd();
    std::memcpy(&id.bytes[i], &v, 4);
  }
  return id;
}

std::string EncodeIndexValue(const ChunkLocation& loc) {
  std::string out(loc.pack.view());
  PutFixed64(&out, loc.offset);
  PutFixed32(&out, loc.length);
  return out;
}

std::optional<ChunkLocation> DecodeIndexValue(std::string_view value) {
  if (value.size() != 28) return std::nullopt;
  ChunkLocation loc;
  loc.pack = *PackId::FromBytes(value.substr(0, 16));
  const auto* p = reinterpret_cast<const uint8_t*>(value.data());
  loc.offset = LoadLE64(p + 16);
  loc.length = LoadLE32(p + 24);
  return loc;
}

std::vector<PackId> Locations::Packs() const {
  std::unordered_map<PackId, bool, ChunkKeyHasher> seen;
  std::vector<PackId> out;
  for (const auto& [k, loc] : map_) {
    if (!loc.own && seen.emplace(loc.pack, true).second) out.push_back(loc.pack);
  }
  return out;
}

std::string Locations::Serialize() const {
  std::vector<const std::pair<const ChunkKey, ChunkLocation>*> entries;
  for (const auto& e : map_) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(),
            [](const auto* a, const auto* b) { return a->first.bytes < b->first.bytes; });
  std::map<PackId, uint32_t> packs;
  for (const auto* e : entries) {
    if (!e->second.own) packs.emplace(e->second.pack, 0);
  }
  std::string out(kLocationsMagic, sizeof(kLocationsMagic));
  PutFixed32(&out, uint32_t(packs.size()));
  uint32_t n = 0;
  for (auto& [id, index] : packs) {
    index = n++;
    out.append(id.view());
  }
  PutFixed32(&out, uint32_t(entries.size()));
  for (const auto* e : entries) {
    out.append(e->first.view());
    PutFixed32(&out, e->second.own ? kOwnObject : packs[e->second.pack]);
    PutFixed64(&out, e->second.offset);
    PutFixed32(&out, e->second.length);
  }
  ChunkKey check = HashBytes(out.data(), out.size());
  out.append(check.view());
  return out;
}

Result<Locations> Locations::Parse(std::string_view bytes, const std::string& what) {
  auto bad = [&](const char* why) {
    return Status::Corruption(what + " is not a locations object this pstore can read (" + why +
                              ")");
  };
  if (bytes.size() < sizeof(kLocationsMagic) + 8 + 16) return bad("too short");
  if (std::memcmp(bytes.data(), kLocationsMagic, sizeof(kLocationsMagic)) != 0) {
    return bad("wrong magic");
  }
  const std::string_view body = bytes.substr(0, bytes.size() - 16);
  if (HashBytes(body.data(), body.size()).view() != bytes.substr(body.size())) {
    return bad("its check digest does not match: damaged");
  }
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  size_t at = sizeof(kLocationsMagic);
  const uint32_t npacks = LoadLE32(p + at);
  at += 4;
  if (uint64_t(npacks) * 16 + 4 > body.size() - at) return bad("pack count");
  std::vector<PackId> packs(npacks);
  for (uint32_t i = 0; i < npacks; ++i, at += 16) {
    packs[i] = *PackId::FromBytes(body.substr(at, 16));
  }
  const uint32_t n = LoadLE32(p + at);
  at += 4;
  if (uint64_t(n) * kEntryBytes != body.size() - at) return bad("entry count");
  Locations out;
  for (uint32_t i = 0; i < n; ++i, at += kEntryBytes) {
    ChunkLocation loc;
    const uint32_t pack = LoadLE32(p + at + 16);
    if (pack == kOwnObject) {
      loc.own = true;
    } else if (pack < npacks) {
      loc.pack = packs[pack];
    } else {
      return bad("pack index out of range");
    }
    loc.offset = LoadLE64(p + at + 20);
    loc.length = LoadLE32(p + at + 28);
    // A length no frame has would fail the read of the whole pack (the OSD
    // refuses reads of 2 GiB and more) instead of giving one chunk's error.
    if (!loc.own &&
        (loc.length == 0 || loc.length > kMaxFrameBytes || loc.offset > UINT64_MAX - loc.length)) {
      return Status::Corruption(what + " is not a locations object this pstore can read (chunk " +
                                ChunkKey::FromBytes(body.substr(at, 16))->Hex() + " at bytes " +
                                std::to_string(loc.offset) + "+" + std::to_string(loc.length) +
                                " of a pack: no frame has that length)");
    }
    out.Set(*ChunkKey::FromBytes(body.substr(at, 16)), loc);
  }
  return out;
}

Status CheckFrameLengths(const Locations& locations, const Manifest& m, const std::string& what) {
  for (const ManifestTensor& t : m.tensors) {
    const uint64_t n = m.ChunkCount(t);
    for (uint64_t j = 0; j < n; ++j) {
      const ChunkKey& key = m.chunks[t.first_chunk + j];
      const ChunkLocation* loc = locations.Find(key);
      const uint64_t raw = m.ChunkBytes(t, j);
      if (!loc || loc->own || loc->length <= MaxFrameBytes(raw)) continue;
      return Status::Corruption(
          what + " gives tensor " + t.name + ", chunk " + std::to_string(j) + " (" + key.Hex() +
          ") a frame of " + std::to_string(loc->length) + " bytes (" + PackObject(loc->pack) +
          " bytes " + std::to_string(loc->offset) + "-" +
          std::to_string(loc->offset + loc->length) + "), longer than any frame of its " +
          std::to_string(raw) + " bytes");
    }
  }
  return Status::OK();
}

Result<std::optional<Locations>> ReadLocations(const RemoteIo& io, const ModelDigest& digest) {
  const std::string oid = LocationsObject(digest);
  PSTORE_ASSIGN_OR_RETURN(std::optional<VersionedBytes> v, ReadVersioned(io, oid));
  if (!v) return std::optional<Locations>();
  PSTORE_ASSIGN_OR_RETURN(Locations locs, Locations::Parse(v->bytes, io.where + ": " + oid));
  return std::optional<Locations>(std::move(locs));
}

Status DamagedLocations(const Status& st, const std::string& model, std::string_view outcome) {
  return Status::Corruption("model " + model + ": " + st.message() + "; " + std::string(outcome) +
                            " (push the model again from a host whose store has it: `pstore "
                            "push` replaces damaged locations)");
}

std::string LocatedChunkSource::Locate(const ChunkKey& key) const {
  const ChunkLocation* loc = locations_ ? locations_->Find(key) : nullptr;
  if (locations_ && !loc) return "none: " + locations_object_ + " does not list it";
  if (!loc || loc->own) return RadosChunkSource::ObjectName(key);
  return PackObject(loc->pack) + " bytes " + std::to_string(loc->offset) + "-" +
         std::to_string(loc->offset + loc->length);
}

Result<std::vector<std::optional<std::string>>> LocatedChunkSource::Read(
    std::span<const ChunkKey> keys) {
  PSTORE_ASSIGN_OR_RETURN(auto out, ReadAt(keys, locations_.get()));
  // A chunk whose pack is missing (removed, its chunks pushed again into
  // another by a push of some model): read once from where the chunk index
  // says it is now, if that is elsewhere. Frames are checked by the caller.
  std::vector<ChunkKey> lost;
  std::vector<size_t> lost_at;
  for (size_t i = 0; i < keys.size(); ++i) {
    const ChunkLocation* loc = locations_ ? locations_->Find(keys[i]) : nullptr;
    if (!out[i] && locations_ && (!loc || !loc->own)) lost.push_back(keys[i]), lost_at.push_back(i);
  }
  if (lost.empty()) return out;
  PSTORE_ASSIGN_OR_RETURN(auto found, ReadElsewhere(lost));
  for (size_t j = 0; j < lost.size(); ++j) {
    if (found[j]) out[lost_at[j]] = std::move(found[j]);
  }
  return out;
}

Result<std::vector<std::optional<std::string>>> LocatedChunkSource::ReadElsewhere(
    std::span<const ChunkKey> keys) {
  std::vector<std::optional<std::string>> out(keys.size());
  std::vector<ChunkKey> packed;
  if (!locations_) return out;
  for (const ChunkKey& k : keys) {
    const ChunkLocation* loc = locations_->Find(k);
    if (!loc || !loc->own) packed.push_back(k);
  }
  if (packed.empty()) return out;
  PSTORE_ASSIGN_OR_RETURN(IndexMap now, LookupIndex(io_, packed));
  Locations moved;
  std::vector<ChunkKey> again;
  std::vector<size_t> again_at;
  for (size_t i = 0; i < keys.size(); ++i) {
    const ChunkLocation* loc = locations_->Find(keys[i]);
    auto it = now.find(keys[i]);
    if ((loc && loc->own) || it == now.end() || (loc && it->second == *loc)) continue;
    if (it->second.length > MaxFrameBytes(kMaxChunkSize)) continue;  // no frame: not read
    moved.Set(keys[i], it->second);
    again.push_back(keys[i]);
    again_at.push_back(i);
  }
  if (again.empty()) return out;
  PSTORE_ASSIGN_OR_RETURN(auto found, ReadAt(again, &moved));
  for (size_t j = 0; j < again.size(); ++j) out[again_at[j]] = std::move(found[j]);
  return out;
}

Result<std::vector<std::optional<std::string>>> LocatedChunkSource::ReadAt(
    std::span<const ChunkKey> keys, const Locations* locations) {
  // One read operation per pack (its chunks' ranges coalesced) and per own
  // object.
  struct Range {
    uint64_t offset = 0, length = 0;
    std::vector<size_t> chunks;  // indexes into keys
    librados::bufferlist bl;
    int rv = 0;
  };
  struct Op {
    std::string oid;
    std::vector<Range> ranges;
  };
  std::vector<Op> ops;
  std::unordered_map<PackId, std::vector<size_t>, ChunkKeyHasher> by_pack;
  std::vector<PackId> pack_order;
  for (size_t i = 0; i < keys.size(); ++i) {
    const ChunkLocation* loc = locations ? locations->Find(keys[i]) : nullptr;
    if (locations && !loc) continue;  // not listed: missing here (Read asks the index)
    if (!loc || loc->own) {
      Op op{RadosChunkSource::ObjectName(keys[i]), {}};
      op.ranges.push_back({0, 0, {i}, {}, 0});
      ops.push_back(std::move(op));
      continue;
    }
    auto [it, fresh] = by_pack.try_emplace(loc->pack);
    if (fresh) pack_order.push_back(loc->pack);
    it->second.push_back(i);
  }
  for (const PackId& id : pack_order) {
    std::vector<size_t>& idx = by_pack[id];
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
      return locations->Find(keys[a])->offset < locations->Find(keys[b])->offset;
    });
    Op op{PackObject(id), {}};
    for (size_t i : idx) {
      const ChunkLocation& loc = *locations->Find(keys[i]);
      if (!op.ranges.empty()) {
        Range& last = op.ranges.back();
        const uint64_t end = last.offset + last.length;
        if (loc.offset <= end + kCoalesceGap) {
          last.length = std::max(end, loc.offset + loc.length) - last.offset;
          last.chunks.push_back(i);
          continue;
        }
      }
      op.ranges.push_back({loc.offset, loc.length, {i}, {}, 0});
    }
    ops.push_back(std::move(op));
  }
  std::vector<librados::ObjectReadOperation> reads(ops.size());
  std::vector<std::optional<std::string>> out(keys.size());
  PSTORE_RETURN_IF_ERROR(RunAioBatch(
      io_, ops.size(),
      [&](size_t j, librados::AioCompletion* c) {
        for (Range& r : ops[j].ranges) reads[j].read(r.offset, r.length, &r.bl, &r.rv);
        return io_.ioctx->aio_operate(ops[j].oid, c, &reads[j], nullptr);
      },
      [&](size_t j, int r) {
        if (r == -ENOENT) return Status::OK();  // missing: a result
        if (r < 0) {
          std::string what = "reading " + ops[j].oid;
          for (size_t k = 0; k < ops[j].ranges.size() && k < 4; ++k) {
            const Range& range = ops[j].ranges[k];
            if (range.length == 0) break;  // an object read whole
            what += (k ? ", " : " bytes ") + std::to_string(range.offset) + "-" +
                    std::to_string(range.offset + range.length);
          }
          if (ops[j].ranges.size() > 4) what += ", ...";
          return io_.Error(r, what);
        }
        // Each frame is copied once, straight out of librados' buffers.
        for (Range& range : ops[j].ranges) {
          const uint64_t got = range.bl.length();
          for (size_t i : range.chunks) {
            const ChunkLocation* loc = locations ? locations->Find(keys[i]) : nullptr;
            uint64_t from = 0, len = got;
            if (loc && !loc->own) {
              // A short pack gives a short (and so failing) frame.
              from = std::min<uint64_t>(loc->offset - range.offset, got);
              len = std::min<uint64_t>(loc->length, got - from);
            }
            std::string frame;
            frame.reserve(len);
            range.bl.begin(unsigned(from)).copy(unsigned(len), frame);
            out[i] = std::move(frame);
          }
          range.bl.clear();
        }
        return Status::OK();
      }));
  return out;
}

Result<std::vector<bool>> LocatedChunkSource::Contains(std::span<const ChunkKey> keys) {
  PSTORE_ASSIGN_OR_RETURN(auto frames, Read(keys));
  std::vector<bool> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) out[i] = frames[i].has_value();
  return out;
}

Status LocatedChunkSource::Write(std::span<const ChunkFrameRef>) {
  return Status::InvalidArgument(io_.where + ": chunks are written to packs by push only");
}

}  // namespace pstore
