// The warmer of a bulk prefetch: it reads the blob-file ranges the loaders
// are about to read into the OS cache, a few batches ahead of them, from a
// thread of its own, without copying them (docs/pager.md, "Cold loads"). A
// hint: the loaders read through RocksDB whether it kept up or not.
//
// Thread-safety: fds and batches are filled before the warmer thread starts
// and not changed after; Started and Finished may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/file_util.h"

namespace pstore {

struct Warmer {
  static constexpr size_t kAhead = 4;  // batches
  struct Range {
    uint32_t file;  // into fds
    uint64_t begin, end;
  };
  std::vector<UniqueFd> fds;
  std::vector<std::vector<Range>> batches;  // in the order the loaders take them
  // The warmer thread's loop: batch after batch, at most kAhead ahead of
  // the loaders; nothing if the frames are mostly in the OS cache already.
  void Run(const std::shared_ptr<Warmer>& self);
  // A loader starts or finishes a batch.
  void Started();
  void Finished();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t started_ = 0, finished_ = 0;
};

}  // namespace pstore
