// Small POSIX file helpers with Status results. RAII owner for descriptors.
//
// Thread-safety: functions are reentrant; a UniqueFd is owned by one thread at a time.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pstore {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// ReadFileToString and WriteFileAtomic through Env::Default(); code that may
// run under a test's Env (store/, store/formats/) uses the versions in
// common/env.h that take the Env.
Result<std::string> ReadFileToString(const std::string& path);
// Opens path read-only for the contents of a model file. Anything that is not
// a regular file once symbolic links are followed (a FIFO, a device, a socket,
// a folder) is refused with InvalidArgument naming it, before it is opened:
// opening or reading a FIFO can block forever. A symbolic link loop is
// InvalidArgument too, a missing file NotFound. The open never blocks.
Result<UniqueFd> OpenRegularFile(const std::string& path);
// Reads exactly n bytes at offset, retrying short reads; error on EOF.
Status PreadFull(int fd, void* buf, size_t n, uint64_t offset, std::string_view what);
// Writes all of data, retrying short writes.
Status WriteFull(int fd, const void* data, size_t n, std::string_view what);
// Writes data to path via a temporary file, fsync and rename, then fsyncs the
// directory: after a crash the file holds either its old or its new contents.
Status WriteFileAtomic(const std::string& path, std::string_view data, int mode = 0600);
Status FsyncDir(const std::string& dir);
// Removes a file tree; a missing path is not an error.
Status RemoveTree(const std::string& path);
// Sum of the sizes of the regular files under dir, counting each inode once
// (hard-linked files in several generations count once).
uint64_t DiskUsage(const std::string& dir);
// The folder of the running executable (/proc/self/exe), with a trailing
// slash; an error if it cannot be read (never a relative path).
Result<std::string> ExecutableDir();

}  // namespace pstore
