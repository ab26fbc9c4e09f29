// Permissions and group of a store's folder and files (store/store_access.h).
#include "store/store_access.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "store/store_dir.h"

namespace pstore {

namespace fs = std::filesystem;

Result<StoreAccess> AccessFor(const StoreConfig& config) {
  StoreAccess a;
  if (config.group.empty()) return a;
  const std::string& g = config.group;
  if (struct group* gr = ::getgrnam(g.c_str())) {
    a.gid = gr->gr_gid;
  } else if (g.find_first_not_of("0123456789") == std::string::npos && g.size() < 10) {
    a.gid = gid_t(std::strtoul(g.c_str(), nullptr, 10));
  } else {
    return Status::InvalidArgument("the store's group '" + g +
                                   "' does not exist; create it (groupadd) or name another with "
                                   "`pstore config --group`");
  }
  a.dir_mode = 02750;
  a.file_mode = 0640;
  return a;
}

namespace {

Status ApplyOne(const std::string& path, const struct stat& st, const StoreAccess& a) {
  if (S_ISLNK(st.st_mode)) return Status::OK();
  mode_t want = S_ISDIR(st.st_mode) ? a.dir_mode : a.file_mode;
  auto fail = [&](const char* what, int err) {
    return Status::FromErrno(std::string("cannot ") + what + " " + path +
                                 " (run the command as the store's owner, or as root)",
                             err);
  };
  // The group first: chown may clear the set-group-ID bit.
  bool chowned = false;
  if (a.group() && st.st_gid != a.gid) {
    if (::lchown(path.c_str(), uid_t(-1), a.gid) != 0) return fail("change the group of", errno);
    chowned = true;
  }
  if ((chowned || (st.st_mode & 07777) != want) && ::chmod(path.c_str(), want) != 0)
    return fail("change the mode of", errno);
  return Status::OK();
}

}  // namespace

Status ApplyAccess(const std::string& path, const StoreAccess& access, bool recursive) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  PSTORE_RETURN_IF_ERROR(ApplyOne(path, st, access));
  if (!recursive || !S_ISDIR(st.st_mode)) return Status::OK();
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::string p = it->path().string();
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // gone meanwhile (a .tmp renamed)
      return Status::FromErrno("stat " + p, errno);
    }
    PSTORE_RETURN_IF_ERROR(ApplyOne(p, st, access));
  }
  if (ec) return Status::IOError("cannot list " + path + ": " + ec.message());
  return Status::OK();
}

Status ApplyStoreAccess(const std::string& root, const StoreAccess& access) {
  PSTORE_RETURN_IF_ERROR(ApplyAccess(root, access, /*recursive=*/false));
  for (const char* name : {"ID", "config.json", "LOCK", "CURRENT", "RESERVE", "db", "gen"}) {
    std::string p = root + "/" + name;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;
      return Status::FromErrno("stat " + p, errno);
    }
    PSTORE_RETURN_IF_ERROR(ApplyAccess(p, access));
  }
  return Status::OK();
}

}  // namespace pstore
