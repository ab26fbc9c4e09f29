// TensorTable: writing a model's tensor table, and checking one found in
// memory before it is read in place.
#include "pager/tensor_table.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace pstore {

namespace {

uint64_t NameHash(std::string_view s) {
  return XXH3_64bits(s.data(), s.size());
}

// Where each array of a table starts; `end` is the table's size. Callers
// keep every count under 2^40, so none of this can overflow.
struct TablePlaces {
  uint64_t records, keys, shapes, index, names, meta, end;
};

TablePlaces PlacesOf(const TensorTableHeader& h) {
  TablePlaces p;
  p.records = sizeof(TensorTableHeader);
  p.keys = p.records + uint64_t(h.ntensors) * sizeof(TensorRecord);
  p.shapes = p.keys + h.nchunks * sizeof(ChunkKey);
  p.index = p.shapes + h.nshape * 8;
  p.names = p.index + h.index_cap * 8;
  p.meta = p.names + h.names_len;
  p.end = p.meta + h.meta_len + 1;
  return p;
}

}  // namespace

std::string TensorTable::Serialize(const Manifest& m) {
  TensorTableHeader h;
  std::memset(static_cast<void*>(&h), 0, sizeof(h));
  h.magic = kTensorTableMagic;
  h.ntensors = uint32_t(m.tensors.size());
  h.chunk_size = m.chunk_size;
  h.nchunks = m.chunks.size();
  h.index_cap = 16;
  while (h.index_cap < 2 * uint64_t(m.tensors.size())) h.index_cap *= 2;  // load <= 1/2
  for (const ManifestTensor& t : m.tensors) {
    h.nshape += t.shape.size();
    h.names_len += t.name.size() + 1;
    h.total_bytes += t.size;
  }
  h.meta_len = m.metadata_json.size();
  h.format = uint32_t(m.format);
  h.alignment = m.alignment;
  const TablePlaces at = PlacesOf(h);
  std::string out(size_t(at.end), '\0');
  char* base = out.data();
  uint64_t shape_at = 0, name_at = 0;
  uint64_t* index = reinterpret_cast<uint64_t*>(base + at.index);
  const uint64_t mask = h.index_cap - 1;
  for (uint32_t i = 0; i < h.ntensors; i++) {
    const ManifestTensor& t = m.tensors[i];
    TensorRecord r;
    std::memset(static_cast<void*>(&r), 0, sizeof(r));
    r.size = t.size;
    r.first_chunk = t.first_chunk;
    r.name_off = name_at;
    r.name_len = uint32_t(t.name.size());
    r.shape_off = shape_at;
    r.ndim = uint32_t(t.shape.size());
    r.ggml_type = t.ggml_type;
    r.chunk_len = uint32_t(m.ChunkLen(t));
    r.dtype = uint8_t(t.dtype);
    std::memcpy(base + at.records + i * sizeof(r), &r, sizeof(r));
    if (!t.shape.empty())  // a scalar's empty shape has no data() to copy from
      std::memcpy(base + at.shapes + shape_at * 8, t.shape.data(), t.shape.size() * 8);
    std::memcpy(base + at.names + name_at, t.name.data(), t.name.size());
    shape_at += t.shape.size();
    name_at += t.name.size() + 1;
    // Of equal names the first is indexed.
    const uint64_t hash = NameHash(t.name);
    const uint64_t tag = hash >> 32 << 32;
    for (uint64_t k = hash & mask;; k = (k + 1) & mask) {
      const uint64_t e = index[k];
      if (e == 0) {
        index[k] = tag | (uint64_t(i) + 1);
        break;
      }
      if ((e >> 32 << 32) == tag && m.tensors[uint32_t(e) - 1].name == t.name) break;
    }
  }
  if (!m.chunks.empty())
    std::memcpy(base + at.keys, m.chunks.data(), m.chunks.size() * sizeof(ChunkKey));
  std::memcpy(base + at.meta, m.metadata_json.data(), m.metadata_json.size());
  std::memcpy(base, &h, sizeof(h));
  h.checksum = XXH3_64bits(base + 16, out.size() - 16);
  std::memcpy(base + offsetof(TensorTableHeader, checksum), &h.checksum, 8);
  return out;
}

Result<TensorTable> TensorTable::Open(std::span<const uint8_t> bytes,
                                      std::shared_ptr<const void> owner, const std::string& where) {
  auto bad = [&](const std::string& what) {
    return Status::Corruption(where + ": tensor table " + what +
                              "; remove it with `pstore ps --gc` once no process uses it");
  };
  if (bytes.size() < sizeof(TensorTableHeader) ||
      reinterpret_cast<uintptr_t>(bytes.data()) % alignof(uint64_t) != 0)
    return bad("truncated");
  TensorTable t;
  t.owner_ = std::move(owner);
  std::memcpy(static_cast<void*>(&t.h_), bytes.data(), sizeof(t.h_));
  const TensorTableHeader& h = t.h_;
  if (h.magic != kTensorTableMagic) return bad("has no magic");
  if (XXH3_64bits(bytes.data() + 16, bytes.size() - 16) != h.checksum)
    return bad("does not match its checksum");
  // Counts small enough that PlacesOf cannot overflow, then the size exact.
  constexpr uint64_t kMax = 1ull << 40;
  if (h.nchunks >= kMax || h.nshape >= kMax || h.index_cap >= kMax || h.names_len >= kMax ||
      h.meta_len >= kMax || PlacesOf(h).end != bytes.size())
    return bad("is of the wrong size");
  const TablePlaces at = PlacesOf(h);
  const char* base = reinterpret_cast<const char*>(bytes.data());
  t.rec_ = reinterpret_cast<const TensorRecord*>(base + at.records);
  t.keys_ = reinterpret_cast<const ChunkKey*>(base + at.keys);
  t.shapes_ = reinterpret_cast<const uint64_t*>(base + at.shapes);
  t.index_ = reinterpret_cast<const uint64_t*>(base + at.index);
  t.names_ = base + at.names;
  t.meta_ = base + at.meta;
  PSTORE_RETURN_IF_ERROR(t.Check(bad));
  t.ok_ = true;
  return t;
}

Status TensorTable::Check(const std::function<Status(const std::string&)>& bad) const {
  const TensorTableHeader& h = h_;
  if (h.chunk_size == 0 || h.format < 1 || h.format > 4)
    return bad("has a bad chunk size or format");
  if (h.index_cap == 0 || (h.index_cap & (h.index_cap - 1)) != 0 || h.index_cap <= h.ntensors)
    return bad("has a bad name index size");
  if (meta_[h.meta_len] != 0) return bad("has unterminated metadata");
  // Every offset and index a reader follows, in bounds; the comparisons are
  // written so that they cannot overflow.
  auto within = [](uint64_t first, uint64_t count, uint64_t size) {
    return first <= size && count <= size - first;
  };
  uint64_t total = 0;
  for (uint32_t i = 0; i < h.ntensors; i++) {
    const TensorRecord& r = rec_[i];
    if (!within(r.name_off, uint64_t(r.name_len) + 1, h.names_len) ||
        names_[r.name_off + r.name_len] != 0)
      return bad("has tensor " + std::to_string(i) + "'s name out of range");
    if (!within(r.shape_off, r.ndim, h.nshape))
      return bad("has tensor " + std::to_string(i) + "'s shape out of range");
    if (!DTypeIdValid(r.dtype)) return bad("has tensor " + std::to_string(i) + " of no dtype");
    // A chunk length as the manifest allows (store/manifest.h): the chunk
    // size, or a multiple of the page up to the chunk size or 1 MiB.
    if (r.chunk_len != h.chunk_size &&
        (r.chunk_len == 0 || r.chunk_len % Manifest::kChunkLenUnit != 0 ||
         r.chunk_len > std::max(h.chunk_size, Manifest::kMaxBlockChunkLen)))
      return bad("has tensor " + std::to_string(i) + " of a bad chunk length");
    if (!within(r.first_chunk, r.size / r.chunk_len + (r.size % r.chunk_len != 0), h.nchunks) ||
        __builtin_add_overflow(total, r.size, &total))
      return bad("has tensor " + std::to_string(i) + "'s chunks out of range");
  }
  if (total != h.total_bytes) return bad("does not add up to its model's size");
  uint64_t used = 0;
  for (uint64_t k = 0; k < h.index_cap; k++) {
    const uint64_t e = index_[k];
    if (e == 0) continue;
    if (uint32_t(e) == 0 || uint32_t(e) > h.ntensors) return bad("has a name index out of range");
    used++;
  }
  if (used > h.ntensors) return bad("has a name index out of range");
  return Status::OK();
}

Result<TensorTable> TensorTable::FromManifest(const Manifest& m) {
  auto bytes = std::make_shared<const std::string>(Serialize(m));
  std::span<const uint8_t> view(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  return Open(view, std::move(bytes), "this process's copy");
}

int64_t TensorTable::Find(std::string_view name) const {
  if (!ok_) return -1;
  const uint64_t hash = NameHash(name);
  const uint64_t tag = hash >> 32 << 32;
  const uint64_t mask = h_.index_cap - 1;
  // At most index_cap probes, whatever the memory holds now.
  uint64_t k = hash & mask;
  for (uint64_t n = 0; n < h_.index_cap; n++, k = (k + 1) & mask) {
    const uint64_t e = index_[k];
    if (e == 0) return -1;
    const uint32_t t = uint32_t(e) - 1;
    if ((e >> 32 << 32) == tag && t < h_.ntensors && this->name(t) == name) return int64_t(t);
  }
  return -1;
}

}  // namespace pstore
