#include "pager/budget_object.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "pager/shm_access.h"

namespace pstore {

namespace {

constexpr size_t kOwnerOffset = 64;
constexpr char kOwnerMagic[8] = {'P', 'S', 'T', 'O', 'R', 'E', 'O', 'W'};
constexpr size_t kOwnerHeader = 8 + 4 + 32;  // magic, folder length, id

bool ReadLock(int fd, off_t byte, bool wait) {
  struct flock fl = {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR && wait) continue;
    return false;
  }
}

bool WriteLockNow(int fd, off_t byte) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

bool IsHex32(const std::string& s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string BudgetObjectName(const std::string& store_id) {
  return "/pstore-" + store_id + "-budget";
}

Result<UniqueFd> OpenBudgetObject(const std::string& store_id, int mode) {
  std::string name = BudgetObjectName(store_id);
  for (int attempt = 0; attempt < 100; attempt++) {
    UniqueFd fd(ShmOpenWaitingForAccess(name, O_RDWR | O_CREAT | O_CLOEXEC, mode_t(mode)));
    if (!fd.valid()) {
      int e = errno;
      return Status::FromErrno(
          "cannot open shared memory " + name +
              (e == EACCES ? " (made before this user was given access: the store's owner runs "
                             "`pstore config --group GROUP` again, see docs/operations.md)"
                           : ""),
          e);
    }
    if (!ReadLock(fd.get(), kBudgetInUseByte, /*wait=*/true))
      return Status::FromErrno("cannot lock shared memory " + name, errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat shared memory " + name, errno);
    if (st.st_nlink == 0) continue;  // removed while we waited: open the new one
    return fd;
  }
  return Status::Busy("the shared memory object " + name + " kept being removed; try again");
}

void WriteBudgetOwner(uint8_t* page, size_t page_len, const std::string& store_id,
                      const std::string& folder) {
  if (page_len < kOwnerOffset + kOwnerHeader || store_id.size() != 32) return;
  size_t room = page_len - kOwnerOffset - kOwnerHeader;
  if (folder.size() > room) return;  // a path this long is not recorded
  uint8_t* rec = page + kOwnerOffset;
  uint32_t len = uint32_t(folder.size());
  std::string want(kOwnerMagic, 8);
  want.append(reinterpret_cast<const char*>(&len), 4);
  want += store_id;
  want += folder;
  if (std::memcmp(rec, want.data(), want.size()) == 0) return;
  // The magic last, so that a reader never takes a half-written record for
  // a whole one (and first cleared, so that it never takes a changing one).
  std::memset(rec, 0, 8);
  std::memcpy(rec + 8, want.data() + 8, want.size() - 8);
  std::memcpy(rec, kOwnerMagic, 8);
}

std::optional<std::string> ReadBudgetOwner(const std::string& store_id) {
  std::string name = BudgetObjectName(store_id);
  UniqueFd fd(::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0));
  if (!fd.valid()) return std::nullopt;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || uint64_t(st.st_size) < kOwnerOffset + kOwnerHeader)
    return std::nullopt;
  size_t len = size_t(st.st_size);
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (m == MAP_FAILED) return std::nullopt;
  const uint8_t* rec = static_cast<const uint8_t*>(m) + kOwnerOffset;
  std::optional<std::string> out;
  uint32_t flen = 0;
  std::memcpy(&flen, rec + 8, 4);
  if (std::memcmp(rec, kOwnerMagic, 8) == 0 && flen <= len - kOwnerOffset - kOwnerHeader &&
      std::string(reinterpret_cast<const char*>(rec + 12), 32) == store_id)
    out = std::string(reinterpret_cast<const char*>(rec + kOwnerHeader), flen);
  ::munmap(m, len);
  return out;
}

bool RemoveBudgetObjectIfUnused(const std::string& store_id) {
  std::string name = BudgetObjectName(store_id);
  UniqueFd fd(::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd.valid()) return false;
  // Held until the unlink: a Pager that opened the object meanwhile gets its
  // lock only after the unlink, sees it removed, and makes a new one.
  if (!WriteLockNow(fd.get(), kBudgetInUseByte)) return false;
  return ::shm_unlink(name.c_str()) == 0;
}

Result<UniqueFd> LockBudgetObjectUnused(const std::string& store_id) {
  std::string name = BudgetObjectName(store_id);
  UniqueFd fd(::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!fd.valid()) {
    int e = errno;
    if (e == ENOENT) return Status::NotFound("no shared memory object " + name);
    return Status::FromErrno("cannot open shared memory " + name, e);
  }
  if (!WriteLockNow(fd.get(), kBudgetInUseByte))
    return Status::Busy("a process has the store of " + name + " open");
  return fd;
}

bool RemoveBudgetObjectLocked(const std::string& store_id, const UniqueFd& locked) {
  if (!locked.valid()) return false;
  return ::shm_unlink(BudgetObjectName(store_id).c_str()) == 0;
}

std::vector<std::string> ListSharedMemoryStores() {
  std::set<std::string> ids;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return {};
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() < 7 + 32 + 1 || n.compare(0, 7, "pstore-") != 0 || n[7 + 32] != '-') continue;
    std::string id = n.substr(7, 32);
    if (IsHex32(id)) ids.insert(id);
  }
  ::closedir(d);
  return {ids.begin(), ids.end()};
}

}  // namespace pstore
