// Mode and group of a store's shared memory (pager/shm_access.h).
#include "pager/shm_access.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "pager/shm_object.h"
#include "store/store_access.h"
#include "store/store_dir.h"

namespace pstore {

Result<Segment::Options> ShmAccessFor(const StoreConfig& config) {
  PSTORE_ASSIGN_OR_RETURN(StoreAccess a, AccessFor(config));
  Segment::Options o;
  if (a.group()) {
    o.gid = int(a.gid);
    o.mode = 0660;
  }
  return o;
}

namespace {

// 1 if changed, 0 if it already was right, -1 (errno set) if it could not.
int SetAccess(int fd, const Segment::Options& opt) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return -1;
  bool gid_ok = opt.gid < 0 || st.st_gid == gid_t(opt.gid);
  if ((st.st_mode & 07777) == opt.mode && gid_ok) return 0;
  if (!gid_ok && ::fchown(fd, uid_t(-1), gid_t(opt.gid)) != 0) return -1;
  if (::fchmod(fd, opt.mode) != 0) return -1;
  return 1;
}

}  // namespace

Status SetShmAccess(int fd, const std::string& name, const Segment::Options& opt) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat shared memory " + name, errno);
  if (st.st_uid != ::geteuid() && ::geteuid() != 0) return Status::OK();  // not ours to change
  if (SetAccess(fd, opt) < 0)
    return Status::FromErrno("cannot set the mode and group of shared memory " + name, errno);
  return Status::OK();
}

Result<int> ApplyShmAccess(const std::string& store_id, const Segment::Options& opt) {
  std::vector<std::string> names = ListSegments(store_id);
  names.push_back("/pstore-" + store_id + "-budget");
  int changed = 0;
  for (const auto& name : names) {
    auto obj = OpenShm(name, ShmOpen::kReadOnly);
    if (!obj.ok()) {
      if (obj.status().IsNotFound()) continue;
      return obj.status();
    }
    int r = SetAccess(ShmFd(*obj), opt);
    if (r < 0)
      return Status::FromErrno("cannot set the mode and group of shared memory " + name +
                                   " (run the command as its owner or as root)",
                               errno);
    changed += r;
  }
  return changed;
}

}  // namespace pstore
