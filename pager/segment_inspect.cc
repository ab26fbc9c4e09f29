// What `pstore ps` sees of a segment without attaching to it, and removing
// a segment.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pager/ofd_lock.h"
#include "pager/segment.h"
#include "pager/shm_object.h"

namespace pstore {

Result<SegmentInfo> InspectSegment(const std::string& name) {
  SegmentInfo info;
  info.name = name;
  PSTORE_ASSIGN_OR_RETURN(bip::shared_memory_object obj, OpenShm(name, ShmOpen::kReadOnly));
  const int fd = ShmFd(obj);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat " + name, errno);
  info.resident_bytes = uint64_t(st.st_blocks) * 512;
  info.total_bytes = uint64_t(st.st_size);
  SegmentHeader h;
  if (::pread(fd, &h, sizeof(h), 0) != ssize_t(sizeof(h)) || h.magic != kSegmentMagic ||
      h.ready.load() != 1 || h.layout_version != kLayoutVersion ||
      h.total_bytes != info.total_bytes) {
    // Incomplete, or foreign (another pstore version's, whose processes may
    // still use it): in use while any process holds its init lock or an
    // attach lock, bytes that every layout version places alike.
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = kInitLockByte;
    fl.l_len = off_t(1 + kMaxAttach);  // kInitLockByte, then the attach locks
    info.locked = ::fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK;
    return info;
  }
  info.complete = true;
  std::memcpy(info.digest.bytes.data(), h.digest, 16);
  info.data_bytes = h.data_bytes;
  info.nslots = h.nslots;
  info.loads = h.loads.load();
  info.load_bytes = h.load_bytes.load();
  info.evictions = h.evictions.load();
  info.evicted_bytes = h.evicted_bytes.load();
  info.created_unix = h.created_unix;
  std::vector<uint32_t> states(h.nslots);
  std::vector<SlotInfo> slots(h.nslots);
  if (h.nslots) {
    (void)!::pread(fd, states.data(), states.size() * 4, off_t(h.states_off));
    (void)!::pread(fd, slots.data(), slots.size() * sizeof(SlotInfo), off_t(h.slots_off));
  }
  for (uint32_t w : states) {
    if (StateOf(w) == kReady)
      info.ready_slots++;
    else if (StateOf(w) != kEmpty)
      info.busy_slots++;
  }
  std::vector<AttachEntry> entries(kMaxAttach);
  (void)!::pread(fd, static_cast<void*>(entries.data()), kMaxAttach * sizeof(AttachEntry),
                 off_t(h.attach_off));
  std::vector<uint32_t> pins(h.ntensors);
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    if (!entries[a].used.load()) continue;
    SegmentInfo::Attachment at;
    at.index = a;
    at.pid = entries[a].pid;
    at.comm = std::string(entries[a].comm, strnlen(entries[a].comm, sizeof(entries[a].comm)));
    at.start_unix = entries[a].start_unix;
    at.alive = OfdLockedElsewhere(fd, kAttachLockBase + a);
    // pread of a hole reads zeros without allocating memory.
    if (h.ntensors)
      (void)!::pread(fd, pins.data(), pins.size() * 4, off_t(h.pins_off + a * h.pins_stride));
    for (const SlotInfo& si : slots)
      for (uint32_t t = si.first_tensor; t < si.first_tensor + si.ntensors && t < h.ntensors; t++)
        if (pins[t]) {
          at.pinned_bytes += si.bytes;
          break;
        }
    info.attachments.push_back(std::move(at));
  }
  return info;
}

Status RemoveSegment(const std::string& name) {
  if (!RemoveShm(name) && errno != ENOENT)
    return Status::FromErrno("remove shared memory " + name, errno);
  return Status::OK();
}

}  // namespace pstore
