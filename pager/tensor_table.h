// A model's tensor table in the form readers use in place: names, dtypes,
// shapes, sizes, chunk keys, an index of the names, the source format and
// the metadata, as one flat region of plain data (offsets, no pointers).
//
// The creator of a segment writes it there (Serialize); a process opening
// the model checks it once (Open: a checksum of the whole region, then the
// bounds of every offset and index it will follow) and from then on reads it
// where it lies, without parsing or copying it. A process that must not rely
// on shared memory for its keys (check_shared) builds its own copy from the
// manifest it holds (FromManifest). Format, byte by byte: docs/pager.md.
//
// Thread-safety: immutable once opened; any thread may read it. A table
// opened on shared memory reads it as long as it is mapped: the owner given
// to Open (the segment) keeps the mapping.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "codec/dtype.h"
#include "common/status.h"
#include "store/manifest.h"

namespace pstore {

constexpr uint64_t kTensorTableMagic = 0x3230424154545350ull;  // "PSTTAB02"

struct TensorTableHeader {
  uint64_t magic;
  uint64_t checksum;  // XXH3-64 of every byte after this header's first 16
  uint32_t ntensors;
  uint32_t chunk_size;
  uint64_t nchunks;
  uint64_t nshape;     // u64 entries of the shapes array
  uint64_t index_cap;  // entries of the name index (a power of two)
  uint64_t names_len;  // bytes of the names, each followed by a NUL
  uint64_t meta_len;   // bytes of the metadata JSON (a NUL follows)
  uint64_t total_bytes;
  uint32_t format;     // SourceFormat
  uint32_t alignment;  // GGUF's general.alignment, 0 otherwise
};
static_assert(sizeof(TensorTableHeader) == 80);

struct TensorRecord {
  uint64_t size;         // bytes
  uint64_t first_chunk;  // into the chunk keys
  uint64_t name_off;     // into the names
  uint64_t shape_off;    // into the shapes
  uint32_t name_len;
  uint32_t ndim;
  uint32_t ggml_type;
  uint32_t chunk_len;  // the length its chunks are cut at (Manifest::ChunkLen)
  uint8_t dtype;
  uint8_t reserved[7];
};
static_assert(sizeof(TensorRecord) == 56);

class TensorTable {
 public:
  TensorTable() = default;

  // The table of m, serialized.
  static std::string Serialize(const Manifest& m);
  // Checks bytes as a table and returns a view of them; owner keeps them
  // alive for the view's lifetime. where names them in errors (a Corruption
  // that says to remove the segment).
  static Result<TensorTable> Open(std::span<const uint8_t> bytes, std::shared_ptr<const void> owner,
                                  const std::string& where);
  // A private table of m, in this process's memory.
  static Result<TensorTable> FromManifest(const Manifest& m);

  uint32_t count() const { return h_.ntensors; }
  std::string_view name(uint32_t t) const {
    return std::string_view(names_ + rec_[t].name_off, rec_[t].name_len);
  }
  const char* name_cstr(uint32_t t) const { return names_ + rec_[t].name_off; }  // NUL-ended
  DType dtype(uint32_t t) const { return DType(rec_[t].dtype); }
  std::span<const uint64_t> shape(uint32_t t) const {
    return std::span<const uint64_t>(shapes_ + rec_[t].shape_off, rec_[t].ndim);
  }
  uint64_t size(uint32_t t) const { return rec_[t].size; }
  uint32_t ggml_type(uint32_t t) const { return rec_[t].ggml_type; }
  uint64_t first_chunk(uint32_t t) const { return rec_[t].first_chunk; }
  uint64_t chunk_count() const { return h_.nchunks; }
  const ChunkKey& chunk(uint64_t i) const { return keys_[i]; }
  uint32_t chunk_size() const { return h_.chunk_size; }
  // Tensor t's chunks, as Manifest places them: chunk j holds ChunkBytes(t, j)
  // bytes from byte ChunkStart(t, j) of the tensor.
  uint64_t ChunkLen(uint32_t t) const { return rec_[t].chunk_len; }
  uint64_t ChunkCount(uint32_t t) const {
    return size(t) / ChunkLen(t) + (size(t) % ChunkLen(t) != 0);
  }
  uint64_t ChunkStart(uint32_t t, uint64_t j) const { return j * ChunkLen(t); }
  uint64_t ChunkBytes(uint32_t t, uint64_t j) const {
    const uint64_t len = ChunkLen(t), start = j * len;
    return size(t) - start < len ? size(t) - start : len;
  }
  SourceFormat format() const { return SourceFormat(h_.format); }
  uint32_t alignment() const { return h_.alignment; }
  std::string_view metadata() const { return std::string_view(meta_, h_.meta_len); }
  const char* metadata_cstr() const { return meta_; }  // NUL-ended
  uint64_t total_bytes() const { return h_.total_bytes; }
  // The index of the tensor called name (the first of equal names), or -1.
  int64_t Find(std::string_view name) const;

 private:
  Status Check(const std::function<Status(const std::string&)>& bad) const;

  std::shared_ptr<const void> owner_;  // the bytes' owner
  // The header as checked, in this process's memory: the counts and sizes
  // every bound depends on are read from here, never again from the table.
  TensorTableHeader h_{};
  bool ok_ = false;
  const TensorRecord* rec_ = nullptr;
  const ChunkKey* keys_ = nullptr;
  const uint64_t* shapes_ = nullptr;
  const uint64_t* index_ = nullptr;
  const char* names_ = nullptr;
  const char* meta_ = nullptr;
};

static_assert(sizeof(ChunkKey) == 16 && alignof(ChunkKey) == 1);

}  // namespace pstore
