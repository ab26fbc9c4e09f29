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
// (store/chunk_read.h names the model, tensor and chunk of one that fails);
// the conformance suite (tests/chunk_source_test.cc) states what every
// implementation guarantees.
//
// Readers that load many frames (the pager, export, verify) use ReadFrames,
// which fills a reusable FrameBatch: a local store hands out its cache's
// pinned blocks there without copying them. Readers that decode what they
// read (the pager, export) use ReadDecoded, which a source that checks
// frames itself implements with one decode per frame. A source whose frames sit in
// files may also plan a bulk read in file order (PlanSequentialRead), with
// the files a warmer may read ahead; others answer nullopt.
//
// Implementations: MemoryChunkSource (store/memory_chunk_source.h, for
// tests), RocksChunkSource (store/rocks_chunk_source.h, the local store) and
// RadosChunkSource (store/remote/rados_chunk_source.h).
//
// Thread-safety: every implementation may be called from many threads at
// once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/hash.h"
#include "common/status.h"

namespace pstore {

class ChunkDecoder;

// A frame to write: a view that owns nothing; it must stay valid for the
// duration of the Write call. raw_len is the chunk's raw length (frames of
// the current version do not hold it; the manifest does).
struct ChunkFrameRef {
  ChunkKey key;
  std::string_view frame;
  uint64_t raw_len = 0;
};

// Frames read by ChunkSource::ReadFrames: entry i is keys[i]'s. An entry is
// found (frame(i) holds its bytes), missing (found(i) false, status(i) OK:
// the source has no such key), or failed (status(i) says why).
//
// Lifetime: frame(i) is a view; it stays valid until the next ReadFrames
// into this batch, Reset, or the batch's destruction. What keeps it alive
// (pinned blocks of a local store, or the batch's own copies) belongs to the
// batch, and is reused by the next read into it. A batch must not outlive
// the source that last filled it (a local store's pins refer to its
// database).
//
// Thread-safety: one thread at a time per batch.
class FrameBatch {
 public:
  FrameBatch();
  ~FrameBatch();
  FrameBatch(const FrameBatch&) = delete;
  FrameBatch& operator=(const FrameBatch&) = delete;

  size_t size() const { return frames_.size(); }
  bool found(size_t i) const { return found_[i] != 0; }
  std::string_view frame(size_t i) const { return frames_[i]; }
  const Status& status(size_t i) const { return statuses_[i]; }

  // For implementations of ChunkSource ----------------------------------
  // Makes the batch n missing entries (dropping what it held before).
  void Reset(size_t n);
  // Entry i found: bytes kept alive by this batch's pins() (zero-copy).
  void SetPinned(size_t i, std::string_view bytes) {
    frames_[i] = bytes;
    found_[i] = 1;
  }
  // Entry i found: bytes owned by the batch from here on.
  void SetOwned(size_t i, std::string bytes);
  // Entry i failed.
  void SetError(size_t i, Status st) { statuses_[i] = std::move(st); }
  // Whatever keeps pinned frames alive, of the source's own type. It is kept
  // across Reset (the source may reuse it) and destroyed with the batch.
  struct Pins {
    virtual ~Pins() = default;
  };
  std::unique_ptr<Pins>& pins() { return pins_; }

 private:
  std::vector<std::string_view> frames_;
  std::vector<uint8_t> found_;
  std::vector<Status> statuses_;
  std::vector<std::string> owned_;  // by entry, for SetOwned
  std::unique_ptr<Pins> pins_;
};

// What ChunkSource::ReadDecoded did with each entry: status[i] is entry i's
// outcome (as DecodeFrame in store/chunk_read.h gives it: a missing chunk is
// Corruption naming the source), frame_bytes[i] the size of the frame it
// decoded (0 if none). Whatever ReadDecoded returns, it leaves one entry per
// key, nothing of an earlier read: after an error return every entry's
// status is that error and its frame_bytes 0 (what was decoded into outs
// before the error is not reported, and outs hold unspecified bytes).
struct DecodedChunks {
  std::vector<Status> status;
  std::vector<uint64_t> frame_bytes;

  // n entries, each OK with no frame: where a read starts from.
  void Reset(size_t n) {
    status.assign(n, Status::OK());
    frame_bytes.assign(n, 0);
  }
  // n entries, each st: the result of a read that could not answer. Returns st.
  Status Fail(size_t n, const Status& st) {
    status.assign(n, st);
    frame_bytes.assign(n, 0);
    return st;
  }
};

// Readers that decode what they read from a local store through RocksDB
// (ReadDecoded of the local store, except the chunks a reader's generation
// reads from its blob files itself, and of the tiered source) read and
// decode in runs of at most kDecodeRunBytes of raw chunks, each run read and
// decoded before the next is read: RocksDB allocates its read buffers (a blob file's frames
// together, the table blocks, the pinned values) per call, from the malloc
// arena of the calling thread, and a loader thread's arena keeps what it
// grew to (docs/pager.md, "Memory a loader keeps"). A run holds at least one
// chunk, so a chunk larger than kDecodeRunBytes is a run of its own.
constexpr uint64_t kDecodeRunBytes = 128 << 10;
// The end of the run of outs (by their sizes) that starts at begin.
// REQUIRES: begin < outs.size().
size_t DecodeRunEnd(std::span<const std::span<uint8_t>> outs, size_t begin);

// A plan for reading many frames in the order they sit in the source's
// files (docs/pager.md, "Cold loads"), and the warmer's map of those files.
// A hint only: reads still go through ReadFrames, and their bytes are
// checked against their keys whatever the plan said.
struct ReadPlan {
  struct Place {
    static constexpr uint32_t kNoFile = UINT32_MAX;
    uint32_t file = kNoFile;  // index into files; kNoFile: not in a file of
                              // its own (kept in an index, or not found)
    uint64_t offset = 0;      // of the frame in that file
    uint64_t size = 0;        // of the frame
  };
  std::vector<std::string> files;  // paths a warmer may open and read ahead
  std::vector<Place> places;       // places[i] is keys[i]'s
  std::vector<uint32_t> order;     // indexes into keys, in file order
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

  // Fills batch with the frames of keys (zero-copy where the source can).
  // An error return means the source could not answer at all; a key it
  // cannot read is that entry's status. The default copies what Read gives.
  virtual Status ReadFrames(std::span<const ChunkKey> keys, FrameBatch* batch);

  // Reads keys and decodes each frame into outs[i] (exactly its chunk's raw
  // length), checking it against its key; result says how each entry went.
  // An error return means the source could not answer at all (or, for a
  // source that checks what it fetches, that a fetched frame was wrong);
  // result is then that error for every entry (DecodedChunks). batch is
  // scratch. The default is ReadFrames, then DecodeFrame per entry;
  // a source that must check frames itself before keeping them (the tiered
  // source) overrides it so that each frame is decoded once, into outs.
  virtual Status ReadDecoded(std::span<const ChunkKey> keys,
                             std::span<const std::span<uint8_t>> outs, ChunkDecoder* decoder,
                             FrameBatch* batch, DecodedChunks* result);

  // Where the frames of keys sit, to read them in file order with a warmer
  // ahead; nullopt when the source has no such order or finding it is not
  // worth it (for a local store: keys fewer than an eighth of its chunks, as
  // finding it scans the whole chunk index). The default: nullopt.
  virtual Result<std::optional<ReadPlan>> PlanSequentialRead(std::span<const ChunkKey> keys);

  // Names the source in messages, e.g. "rados:pool/namespace".
  virtual std::string Describe() const = 0;

  // Where the source keeps key's frame, for messages (a remote's object
  // name), or "" if the key says it all. The default: "".
  virtual std::string Locate(const ChunkKey& /*key*/) const { return std::string(); }
};

}  // namespace pstore
