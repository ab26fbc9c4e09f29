// Reading, validating and rebuilding GGUF files (llama.cpp's format), one
// file or a split model (`NAME-00001-of-0000N.gguf` ...).
//
// A GGUF file is a header (magic, version, counts), key-value metadata, one
// info record per tensor (name, dims, GGML type, offset), padding up to the
// alignment (`general.alignment`, default 32), then the data section, where
// each tensor sits at its offset. Every field is checked against the file and
// against the others before pstore trusts it: magic and version, counts that
// cannot fit in the file, string lengths, value types, nesting of arrays,
// duplicate keys and tensor names, `general.alignment` (a u32 power of two),
// rank (at most 4), element counts without overflow, offsets aligned, inside
// the data section and not overlapping. A file that fails any check gives
// kInvalidArgument (kIOError for a read failure) with a message naming the
// file, the key or tensor, and the rule broken.
//
// Tensor payloads are opaque: a tensor's extent ends where the next tensor (in
// offset order) begins, or at the end of the file. For a GGML type whose block
// layout pstore knows, the payload is the exact byte count of its elements and
// the bytes up to the next tensor are padding; for any other type (one added
// after this was written) the whole extent is the payload, so it still round
// trips. Everything that is not payload (the header up to the data section,
// and the padding between and after tensors) is kept verbatim, so export
// rebuilds the file byte for byte.
//
// Thread-safety: functions are reentrant; results are plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/block_transform.h"
#include "codec/dtype.h"
#include "common/status.h"

namespace pstore::gguf {

// Limits beyond which a file is refused as absurd.
constexpr uint32_t kMaxDims = 4;                   // GGML_MAX_DIMS
constexpr uint32_t kMaxArrayDepth = 4;             // arrays of arrays of ...
constexpr uint64_t kMaxHeaderBytes = 1ull << 30;   // metadata and tensor infos
constexpr uint64_t kMaxFillerBytes = 64ull << 20;  // padding kept in the manifest
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint32_t kDefaultAlignment = 32;

// GGUF metadata value types (the file's numbering).
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// What pstore knows of a GGML type: its name and block layout.
struct GgmlTypeInfo {
  std::string_view name;  // "Q8_0"
  uint32_t block_elems;   // elements per block
  uint32_t block_bytes;   // bytes per block
  // Quantized types: the F16 scale fields of each block (ggml's d, and m or
  // dmin), `scales` of them from byte `scale_offset`; 0 scales for types
  // without F16 scales (the element types, Q8_K's F32 scale, E8M0 ...).
  uint8_t scale_offset = 0;
  uint8_t scales = 0;
};
// nullopt for a type this build does not know (it is then stored opaquely).
std::optional<GgmlTypeInfo> GgmlType(uint32_t type);
// "Q8_0", or "type N" for an unknown one.
std::string GgmlTypeName(uint32_t type);
// The dtype a GGML type's elements have (F32, F16, BF16, I8 ... F64); U8 for
// quantized and unknown types, whose payload is opaque blocks.
DType GgmlDType(uint32_t type);
// The block layout the codec's block transform takes for a GGML type
// (codec/block_transform.h), from GgmlType; none (bytes 0) for element types,
// types without F16 scales and unknown types.
BlockLayout GgmlBlockLayout(uint32_t type);
// The length a tensor of a GGML type is cut into chunks at, in a store of
// chunks of chunk_size bytes: for a type of blocks of known size, a multiple
// of both the block and 4096 bytes (so that chunks start on blocks and on
// the pages the pager places them by): the largest such not above
// chunk_size, or the least one when that is above chunk_size but at most
// 1 MiB. 0 (cut at chunk_size) for element types, unknown types and blocks
// whose least common multiple with 4096 is over 1 MiB.
uint32_t GgmlChunkLength(uint32_t type, uint32_t chunk_size);
// "MOSTLY_Q8_0" for general.file_type's value; "" when unknown.
std::string FileTypeName(uint64_t file_type);

struct TensorEntry {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<uint64_t> dims;  // as in the file: ne[0] (the fastest-varying) first
  uint64_t offset = 0;         // within the data section
  uint64_t size = 0;           // payload bytes (see above)
};

struct FileHeader {
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  // Everything from the magic up to the data section, verbatim.
  std::string header_bytes;
  // Tensors in data order (by offset, then by size, then as listed).
  std::vector<TensorEntry> tensors;
  // The data section's bytes that are no tensor's payload, in file order
  // (padding after each tensor, then after the last one).
  std::string filler;
  uint64_t data_offset = 0;  // where the data section starts
  uint64_t data_size = 0;    // bytes from there to the end of the file
  // The metadata as one JSON object, keys in file order: numbers and strings
  // as themselves, arrays as JSON arrays (strings that are not UTF-8 have
  // their bad bytes replaced).
  std::string metadata_json;
  // Split models (split.no, split.count); 0 when the file has no such keys.
  uint64_t split_no = 0, split_count = 0;
};

// Parses and validates a GGUF file whose first bytes are `prefix` and whose
// size is file_size. `what` names the file in error messages. When the header
// runs past the prefix but not past the file, the result is an error and
// *truncated (if given) is set: read more of the file and call again (ReadFile
// does). filler is filled only when the prefix holds the whole file.
Result<FileHeader> ParseHeader(std::string_view prefix, uint64_t file_size, std::string_view what,
                               bool* truncated = nullptr);

// Opens path, reads and validates its header and layout; also reads the
// padding between tensors into FileHeader::filler.
Result<FileHeader> ReadFile(const std::string& path);

// True when the file's first bytes are the GGUF magic.
bool HasMagic(const std::string& path);

// For "dir/NAME-00002-of-00003.gguf": the paths of every split in order,
// checking that each exists. nullopt when the name is not of that form.
std::optional<std::vector<std::string>> SplitSiblings(const std::string& path);

// Receives a tensor's bytes in order, in pieces of any size.
using ByteSink = std::function<Status(const uint8_t* data, size_t n)>;

// Writes a GGUF file: header_bytes, then each tensor's payload (emit_tensor(i,
// sink) passes exactly tensors[i].size bytes) with the filler bytes between
// them where the offsets ask for them. Through a temporary file in the same
// folder, fsynced and renamed into place: a failure leaves nothing at path.
Status WriteFile(const std::string& path, const FileHeader& header,
                 const std::function<Status(size_t index, const ByteSink& sink)>& emit_tensor);

}  // namespace pstore::gguf
