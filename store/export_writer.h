// What export writes with, whatever the model's format: each tensor's chunks
// in order, read through the store's view (so decoded and checked against
// their keys), with progress reports; and a folder of files for a model of
// several files that is removed again when any of them cannot be written.
//
// Thread-safety: a TensorStreamer is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store/store.h"

namespace pstore {

class TensorStreamer {
 public:
  using Sink = std::function<Status(const uint8_t* data, size_t n)>;

  // `view`, `m` and `options` must outlive the streamer.
  TensorStreamer(const StoreView& view, const Manifest& m, const ExportOptions& options);

  // Hands tensor t's bytes to `sink`, one chunk at a time. An unreadable or
  // corrupt chunk is an error naming the tensor and chunk; the progress
  // callback (called at most every 100 ms) stops it with Aborted.
  Status Stream(const ManifestTensor& t, const Sink& sink);
  // The last progress report: all done.
  void Finish();

 private:
  const StoreView& view_;
  const Manifest& m_;
  const ExportOptions& options_;
  const uint64_t total_;
  uint64_t done_ = 0;
  std::chrono::steady_clock::time_point last_report_;
  ChunkDecoder decoder_;
  std::vector<uint8_t> buf_;
};

// A format's file header rebuilt from the manifest: the header bytes kept
// verbatim, where the data starts and its size, and one entry per tensor of
// the file, named, with `fill(tensor, &entry)` setting the format's own
// fields (type, shape, place).
template <class Header, class Fill>
Header HeaderFromManifest(const Manifest& m, const ManifestFile& f, const Fill& fill) {
  Header h;
  h.header_bytes = f.header_bytes;
  h.data_offset = f.header_bytes.size();
  h.data_size = f.data_size;
  for (uint32_t i : f.tensors) {
    h.tensors.emplace_back();
    h.tensors.back().name = m.tensors[i].name;
    fill(m.tensors[i], &h.tensors.back());
  }
  return h;
}

// Writes the files of a model of several files into the folder `path`
// (created when missing) with `write_file(file path, file)`, then runs
// `finish` (may be empty). On any error it removes the files it wrote, and the
// folder when it made it, and returns the error.
Status WriteModelFolder(
    Env* env, const std::string& path, const std::vector<ManifestFile>& files,
    const std::function<Status(const std::string& out, const ManifestFile& f)>& write_file,
    const std::function<Status()>& finish);

}  // namespace pstore
