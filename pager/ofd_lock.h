// One-byte OFD locks (fcntl F_OFD_SETLK): owned by an open file description,
// released by the kernel when its last descriptor closes, including when the
// process dies. They do not exclude threads sharing the descriptor.
//
// Boost.Interprocess has no equivalent: its file_lock is a whole-file POSIX
// record lock, which belongs to the process (so two attachments of one
// process would share it) and goes when any descriptor of the file in the
// process is closed.
//
// Thread-safety: the functions are reentrant; an OfdByteLock belongs to one
// thread at a time.
#pragma once

#include <fcntl.h>

#include <cerrno>

namespace pstore {

// A lock request of `type` (F_WRLCK, F_RDLCK, F_UNLCK) for byte `byte`.
inline struct flock OneByte(short type, off_t byte) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return fl;
}

// Locks byte `byte` of fd (type F_WRLCK or F_RDLCK); with wait, blocks until
// it is free.
inline bool OfdLock(int fd, off_t byte, bool wait, short type = F_WRLCK) {
  struct flock fl = OneByte(type, byte);
  for (;;) {
    if (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    return false;
  }
}

inline void OfdUnlock(int fd, off_t byte) {
  struct flock fl = OneByte(F_UNLCK, byte);
  ::fcntl(fd, F_OFD_SETLK, &fl);
}

// Whether another open file description holds a lock on byte `byte` of fd
// that would conflict with a write lock.
inline bool OfdLockedElsewhere(int fd, off_t byte) {
  struct flock fl = OneByte(F_WRLCK, byte);
  return ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

// The owner of a write lock on one byte: unlocked when it goes, unless the
// lock was handed over (Forget).
class OfdByteLock {
 public:
  OfdByteLock() = default;
  // Tries to take the lock (waiting with wait); held() says whether it did.
  OfdByteLock(int fd, off_t byte, bool wait) : fd_(fd), byte_(byte) {
    held_ = OfdLock(fd, byte, wait);
  }
  // Takes over a lock fd's open file description holds already.
  static OfdByteLock Adopt(int fd, off_t byte) {
    OfdByteLock l;
    l.fd_ = fd, l.byte_ = byte, l.held_ = true;
    return l;
  }
  ~OfdByteLock() { Unlock(); }
  OfdByteLock(OfdByteLock&& o) noexcept : fd_(o.fd_), byte_(o.byte_), held_(o.held_) {
    o.held_ = false;
  }
  OfdByteLock& operator=(OfdByteLock&& o) noexcept {
    if (this != &o) {
      Unlock();
      fd_ = o.fd_, byte_ = o.byte_, held_ = o.held_;
      o.held_ = false;
    }
    return *this;
  }
  OfdByteLock(const OfdByteLock&) = delete;
  OfdByteLock& operator=(const OfdByteLock&) = delete;

  bool held() const { return held_; }
  void Unlock() {
    if (held_) OfdUnlock(fd_, byte_);
    held_ = false;
  }
  // Lets go of the lock without unlocking it: it stays with the open file
  // description (and goes with it when the descriptor is closed).
  void Forget() { held_ = false; }

 private:
  int fd_ = -1;
  off_t byte_ = 0;
  bool held_ = false;
};

}  // namespace pstore
