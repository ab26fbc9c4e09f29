// One-byte OFD locks (fcntl F_OFD_SETLK): owned by an open file description,
// released by the kernel when its last descriptor closes, including when the
// process dies. They do not exclude threads sharing the descriptor.
#pragma once

#include <fcntl.h>

#include <cerrno>

namespace pstore {

// Write-locks byte `byte` of fd; with wait, blocks until it is free.
inline bool OfdLock(int fd, off_t byte, bool wait) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    return false;
  }
}

inline void OfdUnlock(int fd, off_t byte) {
  struct flock fl = {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  ::fcntl(fd, F_OFD_SETLK, &fl);
}

}  // namespace pstore
