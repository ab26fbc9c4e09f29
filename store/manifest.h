// Manifests: everything pstore knows of one model version.
//
// A manifest lists the model's tensors (name, dtype, shape, where they sat in
// the source file, byte length, chunk keys), the source files' headers
// verbatim so that export rebuilds them byte for byte, and the chunk size the
// tensors were cut with (a GGUF tensor of a block type may have its own chunk
// length: ChunkLen). Its digest, the XXH3-128 of its serialized bytes,
// names the model version everywhere (store keys, shared memory). Layout:
// docs/format.md.
//
// Thread-safety: a Manifest is a value; share it as shared_ptr<const Manifest>.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "codec/dtype.h"
#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

using ModelDigest = ChunkKey;

enum class SourceFormat : uint8_t {
  kSafetensors = 1,         // one .safetensors file
  kSafetensorsSharded = 2,  // model.safetensors.index.json and shards
  kGguf = 3,                // one .gguf file
  kGgufSplit = 4,           // a split GGUF model: NAME-0000i-of-0000N.gguf
};

inline bool IsGguf(SourceFormat f) {
  return f == SourceFormat::kGguf || f == SourceFormat::kGgufSplit;
}
// "safetensors", "safetensors-sharded", "gguf", "gguf-split".
inline const char* SourceFormatName(SourceFormat f) {
  switch (f) {
    case SourceFormat::kSafetensors:
      return "safetensors";
    case SourceFormat::kSafetensorsSharded:
      return "safetensors-sharded";
    case SourceFormat::kGguf:
      return "gguf";
    case SourceFormat::kGgufSplit:
      return "gguf-split";
  }
  return "unknown";
}

struct ManifestTensor {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<uint64_t> shape;
  uint32_t file = 0;         // index into Manifest::files
  uint64_t offset = 0;       // begin offset in that file's data section
  uint64_t size = 0;         // bytes
  uint64_t first_chunk = 0;  // index into Manifest::chunks
  uint32_t ggml_type = 0;    // GGUF only: the tensor's GGML type (any value)
  // GGUF only: the length its chunks are cut at (a multiple of its blocks and
  // of 4096 bytes, docs/format.md); 0 for the manifest's chunk_size.
  uint32_t chunk_len = 0;
};

struct ManifestFile {
  std::string name;          // file name as imported (e.g. "model-00001-of-00002.safetensors")
  std::string header_bytes;  // length prefix and header, verbatim
  uint64_t data_size = 0;
  std::vector<uint32_t> tensors;  // indices into Manifest::tensors, in data order
  // GGUF only: the data section's bytes that are no tensor's payload (the
  // padding after each tensor, in file order), verbatim.
  std::string filler;
};

struct Manifest {
  // Version 1: safetensors sources (written as before, so their digests do
  // not change). Version 2: GGUF sources, with alignment, filler and GGML
  // types; version 3 adds each tensor's chunk length (docs/format.md).
  static constexpr uint8_t kVersion = 1;
  static constexpr uint8_t kVersionGguf = 2;
  static constexpr uint8_t kVersionGgufChunks = 3;
  // Bounds of a tensor's own chunk length: a multiple of the page, at most
  // the chunk size or this, whichever is larger.
  static constexpr uint32_t kChunkLenUnit = 4096;
  static constexpr uint32_t kMaxBlockChunkLen = 1u << 20;

  SourceFormat format = SourceFormat::kSafetensors;
  // The version the manifest was parsed from (0: made here); Serialize
  // writes a GGUF manifest as version 3 when a tensor has its own chunk
  // length or this says 3, else as version 2 (as stores made before version
  // 3 hold them, and as older pstores read them).
  uint8_t version = 0;
  uint32_t chunk_size = 0;
  std::string index_name;     // sharded only
  std::string index_bytes;    // sharded only: the index file verbatim
  std::string metadata_json;  // safetensors __metadata__, or GGUF's key-values as JSON
  uint32_t alignment = 0;     // GGUF only: general.alignment (payloads need this alignment)
  std::vector<ManifestFile> files;
  std::vector<ManifestTensor> tensors;
  std::vector<ChunkKey> chunks;

  // Where tensor t's chunks lie: chunk j (0-based) holds ChunkBytes(t, j)
  // bytes from byte ChunkStart(t, j) of the tensor. Every reader and writer
  // of chunks places them with these.
  uint64_t ChunkLen(const ManifestTensor& t) const {
    return t.chunk_len ? t.chunk_len : chunk_size;
  }
  uint64_t ChunkCount(const ManifestTensor& t) const {
    const uint64_t len = ChunkLen(t);
    return t.size / len + (t.size % len != 0);
  }
  uint64_t ChunkStart(const ManifestTensor& t, uint64_t j) const { return j * ChunkLen(t); }
  uint64_t ChunkBytes(const ManifestTensor& t, uint64_t j) const {
    const uint64_t len = ChunkLen(t), start = j * len;
    return t.size - start < len ? t.size - start : len;
  }
  // The longest chunk of any tensor (the buffer a chunk needs).
  uint64_t MaxChunkLen() const;
  uint64_t TotalBytes() const;

  std::string Serialize() const;
  // Parses bytes written by Serialize, checking every count and index against
  // the bytes and each other; a corrupt manifest is a Corruption error. With
  // with_headers false the source files' headers and the sharded index are
  // checked but not kept (ManifestFile::header_bytes and index_bytes stay
  // empty): readers of tensors need neither, and a model of many tensors
  // opens faster.
  static Result<Manifest> Parse(std::string_view bytes, bool with_headers = true);
  static ModelDigest DigestOf(std::string_view serialized) {
    return HashBytes(serialized.data(), serialized.size());
  }
};

}  // namespace pstore
