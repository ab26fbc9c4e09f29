// The owners of the pager's shared-memory objects and mappings, from
// Boost.Interprocess: a boost::interprocess::shared_memory_object owns an
// object's descriptor, a boost::interprocess::mapped_region owns a mapping
// (unmapped when it goes, moved with it). These functions open and map them
// with pstore's errors: Boost's exceptions stop here and come back as a
// Status naming the object and saying what to do.
//
// What Boost has no equivalent for stays a system call, each where it is
// used: OFD locks (pager/ofd_lock.h), posix_fallocate and hole punching,
// madvise (MADV_COLLAPSE, MADV_POPULATE_*), futexes, fchown/fchmod of an
// existing object (pager/shm_access.h), fstat's allocated blocks, and the
// reservation of address space that aligns a mapping to a huge page.
//
// Thread-safety: functions are reentrant; an owner belongs to one thread at
// a time (or is only read by many).
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace pstore {

namespace bip = boost::interprocess;

enum class ShmOpen {
  kReadOnly,
  kReadWrite,
  // Read-write, created if missing: owner-only (0600), until the creator
  // gives it the store's mode and group (SetShmAccess).
  kCreate,
};

// Opens the shared-memory object `name` ("/pstore-..."). Its descriptor is
// close-on-exec from the start (Boost opens with shm_open, which POSIX has
// set FD_CLOEXEC): a descriptor a child exec'd by another thread inherited
// would keep the open file description, and with it this process's OFD
// locks, alive after this process died. With wait_for_access (group mode),
// an object that exists but refuses this user (EACCES) is tried again for up
// to 2 s: its creator holds it owner-only until it sets the store's mode.
// Errors name the object; EACCES says who can fix it.
Result<bip::shared_memory_object> OpenShm(const std::string& name, ShmOpen how,
                                          bool wait_for_access = false);

// OpenShm(name, ShmOpen::kCreate, wait_for_access), then waits for a lock
// (F_WRLCK or F_RDLCK) on byte `byte` of it, held by the object's open file
// description when this returns. An object removed while the lock was
// awaited (its last user unlinked it) is let go, and the name opened again.
Result<bip::shared_memory_object> OpenShmLocked(const std::string& name, bool wait_for_access,
                                                off_t byte, short type);

// Sets the object's size (Boost's truncate).
Status ResizeShm(bip::shared_memory_object& o, uint64_t bytes, const std::string& name);

// The descriptor an owner holds, for what Boost has no call for (OFD locks,
// fallocate, pread); -1 for an empty owner.
inline int ShmFd(const bip::shared_memory_object& o) {
  return o.get_mapping_handle().handle;
}

// Bytes of memory the object holds (its allocated blocks); nullopt if there
// is no such object or it cannot be opened.
std::optional<uint64_t> ShmAllocatedBytes(const std::string& name);

// Unlinks the object; true if it did (false also when there was none).
bool RemoveShm(const std::string& name);

// A descriptor this process opened itself (a file, not shared memory), as
// Boost's MemoryMappable, so that a mapped_region can own its mapping. The
// descriptor is not owned.
class FdMappable {
 public:
  FdMappable(int fd, bip::mode_t mode) : fd_(fd), mode_(mode) {}
  bip::mapping_handle_t get_mapping_handle() const {
    return bip::ipcdetail::mapping_handle_from_file_handle(fd_);
  }
  bip::mode_t get_mode() const { return mode_; }

 private:
  int fd_;
  bip::mode_t mode_;
};

// Maps [off, off + len) of fd (read_only or read_write, shared); `name`
// names it in errors.
Result<bip::mapped_region> MapRange(int fd, bip::mode_t mode, uint64_t off, size_t len,
                                    const std::string& name);
// The same at an address that is a multiple of `align` (a power of two), so
// that huge pages of the object can be mapped whole.
Result<bip::mapped_region> MapRangeAligned(int fd, bip::mode_t mode, uint64_t off, size_t len,
                                           size_t align, const std::string& name);

inline uint8_t* Bytes(const bip::mapped_region& r) {
  return static_cast<uint8_t*>(r.get_address());
}

}  // namespace pstore
