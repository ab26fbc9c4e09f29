#include "store/reserve.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/file_util.h"

namespace pstore {

std::string ReservePath(const StorePaths& p) {
  return p.root + "/RESERVE";
}

uint64_t FreeDiskBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return UINT64_MAX;
  return uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
}

bool RestoreReserve(const StorePaths& p) {
  std::string path = ReservePath(p);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && uint64_t(st.st_blocks) * 512 >= kReserveBytes) return true;
  if (FreeDiskBytes(p.root) < 2 * kReserveBytes) return false;
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return false;
  // posix_fallocate allocates the blocks (file systems without fallocate get
  // them written by glibc), so the space is truly taken.
  if (::posix_fallocate(fd.get(), 0, off_t(kReserveBytes)) != 0 || ::fsync(fd.get()) != 0 ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return false;
  }
  (void)FsyncDir(p.root);
  return true;
}

bool ReleaseReserve(const StorePaths& p) {
  ::unlink((ReservePath(p) + ".tmp").c_str());
  return ::unlink(ReservePath(p).c_str()) == 0;
}

uint64_t StoreDiskUsage(const StorePaths& p) {
  uint64_t total = DiskUsage(p.root);
  struct stat st;
  if (::stat(ReservePath(p).c_str(), &st) == 0 && uint64_t(st.st_blocks) * 512 <= total)
    total -= uint64_t(st.st_blocks) * 512;
  return total;
}

void RemoveDbTempFiles(const StorePaths& p) {
  std::string db = p.db();
  DIR* d = ::opendir(db.c_str());
  if (!d) return;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.compare(0, 8, "OPTIONS-") == 0 && n.size() > 6 &&
        n.compare(n.size() - 6, 6, ".dbtmp") == 0)
      ::unlink((db + "/" + n).c_str());
  }
  ::closedir(d);
}

}  // namespace pstore
