// Manifests: everything pstore knows of one model version.
//
// A manifest lists the model's tensors (name, dtype, shape, where they sat in
// the source file, byte length, chunk keys), the source files' headers
// verbatim so that export rebuilds them byte for byte, and the chunk size the
// tensors were cut with. Its digest, the XXH3-128 of its serialized bytes,
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
  // types (docs/format.md).
  static constexpr uint8_t kVersion = 1;
  static constexpr uint8_t kVersionGguf = 2;

  SourceFormat format = SourceFormat::kSafetensors;
  uint32_t chunk_size = 0;
  std::string index_name;     // sharded only
  std::string index_bytes;    // sharded only: the index file verbatim
  std::string metadata_json;  // safetensors __metadata__, or GGUF's key-values as JSON
  uint32_t alignment = 0;     // GGUF only: general.alignment (payloads need this alignment)
  std::vector<ManifestFile> files;
  std::vector<ManifestTensor> tensors;
  std::vector<ChunkKey> chunks;

  uint64_t ChunkCount(const ManifestTensor& t) const {
    return (t.size + chunk_size - 1) / chunk_size;
  }
  // Raw bytes of chunk j (0-based) of tensor t.
  uint64_t ChunkBytes(const ManifestTensor& t, uint64_t j) const {
    uint64_t start = j * chunk_size;
    return t.size - start < chunk_size ? t.size - start : chunk_size;
  }
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
