// The chunk side of export, shared by safetensors and GGUF export: a
// model's tensors, chunk by chunk, read and checked through the store's
// ChunkSource (store/chunk_read.h, so a damaged chunk is named as the pager
// and verify name it), with progress reports and the caller's stop.
//
// Reading ahead: the writers ask for the tensors of each file in turn, in
// the order the manifest lists them (files in order, each file's tensors in
// order). Reader threads decode the chunks in that order ahead of the
// writer, a window of up to kWindowBytes of raw chunks at a time, in a few
// buffers reused from window to window, so that decoding runs on every core
// while the writer writes. A chunk's error is returned when the writer
// reaches that chunk, after every chunk before it was written, so an export
// fails on the first bad chunk in file order, named as before (and an error
// of the writer's own, a full disk, is reported as such). A writer that asks out of that order is
// served one chunk at a time from then on (the readers are stopped).
//
// Thread-safety: one thread at a time calls the public members; the reader
// threads are this object's own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/chunk_read.h"
#include "store/rocks_chunk_source.h"
#include "store/store.h"

namespace pstore {

class ExportChunks {
 public:
  // A window of raw chunks decoded at once by one reader (a chunk larger
  // than this is a window of its own).
  static constexpr uint64_t kWindowBytes = 4 << 20;
  // The most reader threads (each holds a window's buffer).
  static constexpr int kMaxReaders = 16;

  // view and m must outlive this; label names the model in messages.
  // Starts options.threads reader threads (0: one per core; at most
  // kMaxReaders); when none can be started, chunks are read one at a time
  // on the caller's thread.
  ExportChunks(const StoreView& view, const Manifest& m, std::string label,
               const ExportOptions& options);
  // Stops the readers (waiting for the window each is decoding).
  ~ExportChunks();
  ExportChunks(const ExportChunks&) = delete;
  ExportChunks& operator=(const ExportChunks&) = delete;

  // Calls sink with each chunk of tensor t (an element of the manifest's
  // tensors), in order; Aborted when the progress callback asks to stop.
  Status Write(const ManifestTensor& t, const std::function<Status(const uint8_t*, size_t)>& sink);
  // The last progress report (every byte done).
  void Finish();

  // Chunks served from the readers' windows, and one at a time (for tests).
  uint64_t chunks_read_ahead() const { return read_ahead_; }
  uint64_t chunks_read_alone() const { return read_alone_; }

 private:
  struct Step {  // a chunk, in the order the writers ask for them
    size_t tensor = 0;
    uint64_t chunk = 0;   // within the tensor
    uint64_t offset = 0;  // of its bytes in its window's buffer
  };
  struct Slot {  // a window's buffer
    std::vector<uint8_t> bytes;
    size_t window = SIZE_MAX;    // the window it holds, once ready
    Status status;               // that window's outcome: an error at
    size_t bad_step = SIZE_MAX;  // this step (the chunks before it are good)
  };

  ChunkUse Use(const Step& s) const;
  void Plan();
  void StartReaders(int threads);
  void StopReaders();
  void ReaderLoop();
  Status DecodeWindow(size_t w, Slot* slot, ChunkDecoder* decoder, FrameBatch* batch,
                      std::vector<ChunkKey>* keys, std::vector<std::span<uint8_t>>* outs,
                      DecodedChunks* result, size_t* bad);
  // The next step's bytes from its window, waiting for its reader; *end is
  // where the good steps that follow it in the buffer end. The window's
  // error when the next step is the one that failed.
  Result<const uint8_t*> Ahead(size_t* end);
  Status Alone(const ManifestTensor& t, uint64_t j, std::span<uint8_t> out);
  Status Report(uint64_t bytes);

  const Manifest& m_;
  std::string label_;
  const ExportOptions options_;
  RocksChunkSource source_;
  // The one-at-a-time path's scratch.
  ChunkDecoder decoder_;
  FrameBatch batch_;
  std::vector<uint8_t> buf_;

  std::vector<Step> steps_;
  std::vector<size_t> windows_;  // windows_[w]: window w's first step; then steps_.size()
  uint64_t window_bytes_ = 0;    // the largest window's

  // The writer's position (writer thread only).
  size_t cursor_ = 0;      // the next step it should ask for
  size_t window_ = 0;      // the window holding it
  bool in_order_ = false;  // false: every chunk read alone
  uint64_t read_ahead_ = 0, read_alone_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_: the next window a reader takes, the windows the writer
  // is done with, and the slots (window w in slots_[w % slots_.size()]; a
  // reader takes window w once the writer is done with window w - slots).
  size_t next_window_ = 0;
  size_t consumed_ = 0;
  bool stop_ = false;
  std::vector<Slot> slots_;
  std::vector<std::thread> readers_;

  uint64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point last_report_;
};

}  // namespace pstore
