#include "pager/budget_object.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "pager/ofd_lock.h"
#include "pager/shm_access.h"

namespace pstore {

namespace {

constexpr size_t kOwnerOffset = 64;
constexpr char kOwnerMagic[8] = {'P', 'S', 'T', 'O', 'R', 'E', 'O', 'W'};
constexpr size_t kOwnerHeader = 8 + 4 + 32;  // magic, folder length, id

bool IsHex32(const std::string& s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

std::string BudgetObjectName(const std::string& store_id) {
  return "/pstore-" + store_id + "-budget";
}

Result<BudgetObject> OpenBudgetObject(const std::string& store_id, const Segment::Options& opt) {
  std::string name = BudgetObjectName(store_id);
  BudgetObject b;
  // Read-locked for as long as the store is open.
  PSTORE_ASSIGN_OR_RETURN(
      b.obj_, OpenShmLocked(name, /*wait_for_access=*/opt.mode & 0060, kBudgetInUseByte, F_RDLCK));
  PSTORE_RETURN_IF_ERROR(SetShmAccess(b.fd(), name, opt));
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  int e = ::posix_fallocate(b.fd(), 0, off_t(page));
  if (e != 0) return Status::FromErrno("allocate shared memory " + name, e);
  PSTORE_ASSIGN_OR_RETURN(b.page_, MapRange(b.fd(), bip::read_write, 0, page, name));
  return b;
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
  auto obj = OpenShm(name, ShmOpen::kReadOnly);
  if (!obj.ok()) return std::nullopt;
  struct stat st;
  if (::fstat(ShmFd(*obj), &st) != 0 || uint64_t(st.st_size) < kOwnerOffset + kOwnerHeader)
    return std::nullopt;
  size_t len = size_t(st.st_size);
  auto map = MapRange(ShmFd(*obj), bip::read_only, 0, len, name);
  if (!map.ok()) return std::nullopt;
  const uint8_t* rec = Bytes(*map) + kOwnerOffset;
  std::optional<std::string> out;
  uint32_t flen = 0;
  std::memcpy(&flen, rec + 8, 4);
  if (std::memcmp(rec, kOwnerMagic, 8) == 0 && flen <= len - kOwnerOffset - kOwnerHeader &&
      std::string(reinterpret_cast<const char*>(rec + 12), 32) == store_id)
    out = std::string(reinterpret_cast<const char*>(rec + kOwnerHeader), flen);
  return out;
}

bool RemoveBudgetObjectIfUnused(const std::string& store_id) {
  std::string name = BudgetObjectName(store_id);
  auto obj = OpenShm(name, ShmOpen::kReadWrite);
  if (!obj.ok()) return false;
  // Held until the unlink: a Pager that opened the object meanwhile gets its
  // lock only after the unlink, sees it removed, and makes a new one.
  if (!OfdLock(ShmFd(*obj), kBudgetInUseByte, /*wait=*/false)) return false;
  return RemoveShm(name);
}

Result<bip::shared_memory_object> LockBudgetObjectUnused(const std::string& store_id) {
  std::string name = BudgetObjectName(store_id);
  auto obj = OpenShm(name, ShmOpen::kReadWrite);
  if (!obj.ok()) {
    if (obj.status().IsNotFound()) return Status::NotFound("no shared memory object " + name);
    return obj.status();
  }
  if (!OfdLock(ShmFd(*obj), kBudgetInUseByte, /*wait=*/false))
    return Status::Busy("a process has the store of " + name + " open");
  return obj;
}

bool RemoveBudgetObjectLocked(const std::string& store_id,
                              const bip::shared_memory_object& locked) {
  if (ShmFd(locked) < 0) return false;
  return RemoveShm(BudgetObjectName(store_id));
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
