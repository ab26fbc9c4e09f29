// ChunkSource: where chunk frames come from and go to, by key.
//
// A chunk is immutable and named by the XXH3-128 of its raw bytes, so a
// source is a key-value map with three operations on batches: read frames,
// ask which keys exist, write frames. A missing key is a result (an empty
// optional, or false), never an error: errors are for a source that cannot
// answer (I/O, an unreachable cluster, a timeout).
//
// A source stores and returns frames as given: it does not decode them or
// check them against their keys. Callers that hand frames on check them
// (codec/chunk_codec.h); the conformance suite (tests/chunk_source_test.cc)
// states what every implementation guarantees.
//
// Implementations: MemoryChunkSource (store/memory_chunk_source.h, for
// tests), RocksChunkSource (store/rocks_chunk_source.h, the local store) and
// RadosChunkSource (store/remote/rados_chunk_source.h).
//
// Thread-safety: every implementation may be called from many threads at
// once.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

// A frame to write: a view that owns nothing; it must stay valid for the
// duration of the Write call. raw_len is the chunk's raw length (frames of
// the current version do not hold it; the manifest does).
struct ChunkFrameRef {
  ChunkKey key;
  std::string_view frame;
  uint64_t raw_len = 0;
};

class ChunkSource {
 public:
  virtual ~ChunkSource() = default;

  // The frames of `keys`, in the same order: result[i] is the frame stored
  // under keys[i], or nullopt if there is none. Keys may repeat.
  virtual Result<std::vector<std::optional<std::string>>> Read(std::span<const ChunkKey> keys) = 0;

  // result[i] is true iff a frame is stored under keys[i].
  virtual Result<std::vector<bool>> Contains(std::span<const ChunkKey> keys) = 0;

  // Stores each frame under its key. Chunks are immutable: writing a key
  // that is already stored keeps the stored frame and is not an error. When
  // Write returns OK, every frame is stored; after an error, any subset of
  // them may be, each one whole.
  virtual Status Write(std::span<const ChunkFrameRef> frames) = 0;

  // Names the source in messages, e.g. "rados:pool/namespace".
  virtual std::string Describe() const = 0;
};

}  // namespace pstore
