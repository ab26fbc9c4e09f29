// Read-ahead of the store's blob files for bulk loads.
//
// RocksDB reads a chunk's frame from its blob file with one pread of about
// the frame's size, and never reads ahead. A bulk load that reads frames in
// file order (StoreView::LocateChunks) from a cold OS cache would still wait
// on one 100-300 KB read at a time per thread, and the kernel's own read-ahead
// does not see a sequence in preads from two threads interleaved. While a
// ReadaheadScope lives on a thread, each read that thread makes from a blob
// file of a database opened with ReadaheadEnv() keeps the kernel `window`
// bytes ahead of the run of reads moving forward through the file
// (POSIX_FADV_WILLNEED, issued from a background thread so that a busy device
// never stalls a decoder); a read outside the run starts a new run. Reads on
// threads without a scope are untouched, so lazily acquiring one tensor
// reads no more than its chunks.
//
// Thread-safety: everything here may be used from any thread.
#pragma once

#include <cstdint>

namespace rocksdb {
class Env;
}

namespace pstore {

class ReadaheadScope {
 public:
  // window: bytes to keep read ahead; 0 turns read-ahead off.
  explicit ReadaheadScope(uint64_t window);
  ~ReadaheadScope();
  ReadaheadScope(const ReadaheadScope&) = delete;
  ReadaheadScope& operator=(const ReadaheadScope&) = delete;

 private:
  uint64_t saved_;
};

// An Env whose blob files read ahead under a ReadaheadScope; otherwise the
// default Env. Lives as long as the process.
rocksdb::Env* ReadaheadEnv();

}  // namespace pstore
