// Shared-memory objects and mappings through Boost.Interprocess
// (pager/shm_object.h).
#include "pager/shm_object.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <cerrno>

#include "pager/ofd_lock.h"

namespace pstore {

namespace {

Status FromBoost(const std::string& what, const bip::interprocess_exception& e) {
  if (e.get_native_error() != 0) return Status::FromErrno(what, e.get_native_error());
  return Status::IOError(what + ": " + e.what());
}

// One attempt; EACCES and the rest come back as the exception's errno.
bip::shared_memory_object OpenOnce(const std::string& name, ShmOpen how) {
  switch (how) {
    case ShmOpen::kReadOnly:
      return bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_only);
    case ShmOpen::kReadWrite:
      return bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
    case ShmOpen::kCreate:
      break;
  }
  bip::permissions owner_only(0600);
  return bip::shared_memory_object(bip::open_or_create, name.c_str(), bip::read_write, owner_only);
}

}  // namespace

Result<bip::shared_memory_object> OpenShm(const std::string& name, ShmOpen how,
                                          bool wait_for_access) {
  constexpr int kWaitMs = 2000, kStepMs = 5;
  for (int waited = 0;; waited += kStepMs) {
    try {
      return OpenOnce(name, how);
    } catch (const bip::interprocess_exception& e) {
      const int err = e.get_native_error();
      if (err == EACCES && wait_for_access && waited < kWaitMs) {
        ::usleep(kStepMs * 1000);
        continue;
      }
      if (err == EACCES)
        return Status::FromErrno(
            "cannot open shared memory " + name +
                " (made before this user was given access: the store's owner runs "
                "`pstore config --group GROUP` again, see docs/operations.md)",
            err);
      return FromBoost("cannot open shared memory " + name, e);
    }
  }
}

Result<bip::shared_memory_object> OpenShmLocked(const std::string& name, bool wait_for_access,
                                                off_t byte, short type) {
  for (int attempt = 0; attempt < 100; attempt++) {
    PSTORE_ASSIGN_OR_RETURN(bip::shared_memory_object o,
                            OpenShm(name, ShmOpen::kCreate, wait_for_access));
    if (!OfdLock(ShmFd(o), byte, /*wait=*/true, type))
      return Status::FromErrno("cannot lock shared memory " + name, errno);
    struct stat st;
    if (::fstat(ShmFd(o), &st) != 0) return Status::FromErrno("stat shared memory " + name, errno);
    if (st.st_nlink != 0) return o;
    // Removed while we waited: the lock goes with the object's descriptor.
  }
  return Status::Busy("shared memory " + name + " kept being removed; try again");
}

Status ResizeShm(bip::shared_memory_object& o, uint64_t bytes, const std::string& name) {
  try {
    o.truncate(bip::offset_t(bytes));
    return Status::OK();
  } catch (const bip::interprocess_exception& e) {
    return FromBoost("size shared memory " + name, e);
  }
}

std::optional<uint64_t> ShmAllocatedBytes(const std::string& name) {
  auto o = OpenShm(name, ShmOpen::kReadOnly);
  struct stat st;
  if (!o.ok() || ::fstat(ShmFd(*o), &st) != 0) return std::nullopt;
  return uint64_t(st.st_blocks) * 512;
}

bool RemoveShm(const std::string& name) {
  return bip::shared_memory_object::remove(name.c_str());
}

Result<bip::mapped_region> MapRange(int fd, bip::mode_t mode, uint64_t off, size_t len,
                                    const std::string& name) {
  // (Boost takes a length of 0 for "to the end of the object".)
  if (len == 0) return Status::InvalidArgument("cannot map " + name + ": nothing to map");
  try {
    return bip::mapped_region(FdMappable(fd, mode), mode, bip::offset_t(off), len);
  } catch (const bip::interprocess_exception& e) {
    return FromBoost("cannot map " + name, e);
  }
}

Result<bip::mapped_region> MapRangeAligned(int fd, bip::mode_t mode, uint64_t off, size_t len,
                                           size_t align, const std::string& name) {
  // Reserve len + align bytes of address space, keep the aligned len bytes
  // within and map over them (MAP_FIXED replaces the reservation there).
  if (len == 0) return Status::InvalidArgument("cannot map " + name + ": nothing to map");
  const size_t span = len + align;
  void* r = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return Status::FromErrno("cannot map " + name, errno);
  const uintptr_t start = reinterpret_cast<uintptr_t>(r), rend = start + span;
  const uintptr_t aligned = (start + align - 1) & ~(uintptr_t(align) - 1), end = aligned + len;
  if (aligned > start) ::munmap(r, aligned - start);
  if (rend > end) ::munmap(reinterpret_cast<void*>(end), rend - end);
  void* at = reinterpret_cast<void*>(aligned);
  try {
    return bip::mapped_region(FdMappable(fd, mode), mode, bip::offset_t(off), len, at, MAP_FIXED);
  } catch (const bip::interprocess_exception& e) {
    ::munmap(at, len);  // the rest of the reservation
    return FromBoost("cannot map " + name, e);
  }
}

}  // namespace pstore
