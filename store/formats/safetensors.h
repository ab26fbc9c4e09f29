// Reading, validating and rebuilding safetensors files, one file or sharded
// (`model.safetensors.index.json` plus its shards).
//
// Every field of a header is checked against the file and against the others
// before pstore trusts it: header length, JSON syntax, duplicate keys, known
// dtypes, shape x dtype size == byte length (without overflow), offsets inside
// the data section, no overlaps and no gaps (the format requires the data
// section to be indexed entirely), unique non-empty names, bounded sizes. A
// file that fails any check gives kInvalidArgument (or kIOError for a read
// failure) with a message naming the file, the tensor and the rule broken.
//
// Export rebuilds a file byte for byte: the header bytes are kept verbatim
// (including padding), and the data section is the tensors in offset order.
//
// Thread-safety: functions are reentrant; results are plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "codec/dtype.h"
#include "common/env.h"
#include "common/status.h"

namespace pstore::safetensors {

// Limits beyond which a header is refused as absurd.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation
constexpr size_t kMaxTensors = 1u << 20;
constexpr size_t kMaxRank = 32;
constexpr size_t kMaxNameBytes = 4096;
constexpr size_t kMaxShards = 100000;

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offsets within the data section, as in data_offsets
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
};

struct FileHeader {
  // The 8-byte length prefix and the header bytes that follow, verbatim.
  std::string header_bytes;
  // Tensors in data order: by begin offset, then by end (so an empty tensor
  // comes before the non-empty one that starts where it does); remaining ties,
  // which only empty tensors can have, in header order. They tile the data
  // section: tensors[0].begin == 0, each begins where the previous ends, and
  // the last ends at data_size.
  std::vector<TensorEntry> tensors;
  // The `__metadata__` object as compact JSON, keys in header order ("" when
  // absent).
  std::string metadata_json;
  uint64_t data_offset = 0;  // 8 + header length: where the data section starts
  uint64_t data_size = 0;    // bytes of the data section
};

// Parses and validates the header of a safetensors file whose first bytes are
// `prefix` (at least the 8-byte length and the header it announces) and whose
// total size is file_size. `what` names the file in error messages.
Result<FileHeader> ParseHeader(std::string_view prefix, uint64_t file_size, std::string_view what);

// Opens path, reads and validates its header against the file's size.
// Files are read through env (common/env.h).
Result<FileHeader> ReadHeader(const std::string& path, Env* env = Env::Default());

// A sharded model: the index file verbatim and, per shard, its file name and
// header. Tensors named in the index must be exactly the tensors of the shards,
// each in the shard the index names.
struct ShardedModel {
  std::string index_bytes;               // model.safetensors.index.json, verbatim
  std::string index_file_name;           // normally "model.safetensors.index.json"
  std::vector<std::string> shard_names;  // plain file names, sorted (byte order)
  std::vector<FileHeader> shards;        // parallel to shard_names
};

// Reads `dir/index_file_name` and every shard it names (which must sit in the
// same directory and be plain file names: no path separators, no "..").
Result<ShardedModel> ReadSharded(
    const std::string& dir, const std::string& index_file_name = "model.safetensors.index.json",
    Env* env = Env::Default());

// Receives a tensor's bytes in order, in pieces of any size. Valid only during
// the emit_tensor call it is passed to.
using ByteSink = std::function<Status(const uint8_t* data, size_t n)>;

// Writes a safetensors file: header_bytes, then each tensor's bytes in data
// order; emit_tensor(i, sink) must pass exactly tensors[i].size() bytes to sink.
// Writes to `path` through a temporary file in the same directory that is
// fsynced and renamed into place only when everything was written, so a failed
// export (an emit error, a full disk) leaves no file at path and no temporary.
// The temporary, the rename and the fsyncs go through env.
Status WriteFile(const std::string& path, const FileHeader& header,
                 const std::function<Status(size_t index, const ByteSink& sink)>& emit_tensor,
                 Env* env = Env::Default());

}  // namespace pstore::safetensors
