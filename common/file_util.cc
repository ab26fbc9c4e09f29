#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>

#include "common/env.h"

namespace pstore {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<std::string> ReadFileToString(const std::string& path) {
  return ReadFileToString(Env::Default(), path);
}

namespace {

const char* FileKind(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a folder";
  return "not a regular file";
}

Status NotRegular(const std::string& path, mode_t m) {
  return Status::InvalidArgument(path + " is " + FileKind(m) +
                                 ", not a regular file; only regular files can be imported");
}

}  // namespace

Result<UniqueFd> OpenRegularFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ELOOP)
      return Status::InvalidArgument(path + " is a symbolic link loop (" + std::strerror(ELOOP) +
                                     "); point the link at a file");
    return Status::FromErrno("cannot open " + path, errno);
  }
  if (!S_ISREG(st.st_mode)) return NotRegular(path, st.st_mode);
  // O_NONBLOCK: should the path be swapped for a FIFO after the stat, the
  // open still returns at once, and the fstat below refuses it.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ELOOP)
      return Status::InvalidArgument(path + " is a symbolic link loop (" + std::strerror(ELOOP) +
                                     "); point the link at a file");
    return Status::FromErrno("cannot open " + path, errno);
  }
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("cannot stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return NotRegular(path, st.st_mode);
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

Status PreadFull(int fd, void* buf, size_t n, uint64_t offset, std::string_view what) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off_t(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(std::string("read ") + std::string(what), errno);
    }
    if (r == 0) return Status::IOError(std::string(what) + ": unexpected end of file");
    p += r;
    n -= size_t(r);
    offset += uint64_t(r);
  }
  return Status::OK();
}

Status WriteFull(int fd, const void* data, size_t n, std::string_view what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t r = ::write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(std::string("write ") + std::string(what), errno);
    }
    p += r;
    n -= size_t(r);
  }
  return Status::OK();
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno("cannot open directory " + dir, errno);
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync " + dir, errno);
  return Status::OK();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, int mode) {
  return WriteFileAtomic(Env::Default(), path, data, mode);
}

Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return Status::IOError("cannot remove " + path + ": " + ec.message());
  return Status::OK();
}

uint64_t DiskUsage(const std::string& dir) {
  std::set<std::pair<dev_t, ino_t>> seen;
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (!seen.insert({st.st_dev, st.st_ino}).second) continue;
    total += uint64_t(st.st_blocks) * 512;
  }
  return total;
}

Result<std::string> ExecutableDir() {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n < 0) return Status::IOError(std::string("reading /proc/self/exe: ") + std::strerror(errno));
  if (n == 0 || size_t(n) >= sizeof self - 1)
    return Status::IOError("reading /proc/self/exe: empty or too long a path");
  const std::string path(self, size_t(n));
  if (path.empty() || path[0] != '/')
    return Status::IOError("/proc/self/exe is not an absolute path: " + path);
  return path.substr(0, path.rfind('/') + 1);
}

}  // namespace pstore
