// Segment: naming, creating and attaching to a segment, mapping it, and
// leaving it; the futex helpers.
#include "pager/segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pager/ofd_lock.h"
#include "pager/segment_format.h"
#include "pager/shm_access.h"
#include "pager/shm_object.h"

namespace pstore {

namespace {

std::string ProcessComm() {
  char buf[32] = {};
  int fd = ::open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
    ::close(fd);
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
  }
  return buf;
}

}  // namespace

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms) {
  struct timespec ts;
  ts.tv_sec = timeout_ms / 1000;
  ts.tv_nsec = long(timeout_ms % 1000) * 1000000L;
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr,
            0);
}

std::string Segment::NameFor(const std::string& store_id, const ModelDigest& digest) {
  return "/pstore-" + store_id + "-" + digest.Hex() + "-L" + std::to_string(kLayoutVersion);
}

std::vector<std::string> ListSegments(const std::string& store_id) {
  std::vector<std::string> out;
  std::string prefix = "pstore-" + store_id + "-";
  DIR* d = ::opendir("/dev/shm");
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.compare(0, prefix.size(), prefix) == 0 && n.size() > prefix.size() + 32 &&
        n.find("-L", prefix.size()) != std::string::npos)
      out.push_back("/" + n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::unique_ptr<Segment>> Segment::Attach(const std::string& name, const Layout& layout,
                                                 const ModelDigest& digest,
                                                 std::string_view manifest, std::string_view tables,
                                                 const std::string& store_id, const Options& opt) {
  std::unique_ptr<Segment> s(new Segment);
  s->name_ = name;
  // Serialise initialisation: whoever holds this lock creates or checks the
  // header.
  PSTORE_ASSIGN_OR_RETURN(
      s->shm_, OpenShmLocked(name, /*wait_for_access=*/opt.mode & 0060, kInitLockByte, F_WRLCK));
  OfdByteLock init_lock = OfdByteLock::Adopt(s->fd(), kInitLockByte);
  const int fd = s->fd();

  const uint64_t layout_len = LayoutSize(layout.slots.size(), layout.units.size(),
                                         layout.pieces.size(), layout.tensors.size());
  SegmentOffsets o = ComputeOffsets(layout.page, manifest.size(), layout_len, tables.size(),
                                    uint32_t(layout.slots.size()), uint32_t(layout.units.size()),
                                    uint32_t(layout.tensors.size()), layout.data_bytes);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat " + name, errno);
  bool init = uint64_t(st.st_size) < sizeof(SegmentHeader);
  if (!init) {
    SegmentHeader h;
    if (::pread(fd, &h, sizeof(h), 0) != ssize_t(sizeof(h)))
      return Status::FromErrno("read " + name, errno);
    if (h.magic != kSegmentMagic || h.ready.load() != 1) {
      init = true;  // a creator died half-way: start over
    } else if (h.layout_version != kLayoutVersion || h.fingerprint != layout.Fingerprint() ||
               std::memcmp(h.digest, digest.bytes.data(), 16) != 0 || h.total_bytes != o.total ||
               uint64_t(st.st_size) != o.total) {
      return Status::Corruption("shared memory " + name +
                                " does not match its model; remove it with `pstore ps --gc`");
    }
  }
  // A creation that fails leaves no object behind (nobody attached to it:
  // it is not ready). A process waiting for the init lock meanwhile finds it
  // removed and opens the name again.
  struct RemoveUnlessDone {
    const std::string& name;
    bool armed;
    ~RemoveUnlessDone() {
      if (armed) RemoveShm(name);
    }
  } remove{name, init};
  // Mode and group as the store says, set explicitly: on a new segment, and
  // on one made before the store's group changed.
  PSTORE_RETURN_IF_ERROR(SetShmAccess(fd, name, opt));
  if (init) {
    PSTORE_RETURN_IF_ERROR(ResizeShm(s->shm_, 0, name));
    PSTORE_RETURN_IF_ERROR(ResizeShm(s->shm_, o.total, name));
    int e = ::posix_fallocate(fd, 0, off_t(o.pins));
    if (e != 0)
      return Status::FromErrno("allocate shared memory " + name +
                                   " (is /dev/shm full? see `pstore ps`, or lower the budget)",
                               e);
    SegmentHeader h;
    std::memset(static_cast<void*>(&h), 0, sizeof(h));
    h.magic = kSegmentMagic;
    h.layout_version = kLayoutVersion;
    std::memcpy(h.digest, digest.bytes.data(), 16);
    for (size_t i = 0; i < 16 && 2 * i + 1 < store_id.size(); i++)
      h.store_id[i] = uint8_t(std::stoi(store_id.substr(2 * i, 2), nullptr, 16));
    h.fingerprint = layout.Fingerprint();
    h.page = layout.page;
    h.nslots = uint32_t(layout.slots.size());
    h.ntensors = uint32_t(layout.tensors.size());
    h.manifest_off = o.manifest;
    h.manifest_len = manifest.size();
    h.layout_off = o.layout;
    h.layout_len = layout_len;
    h.tables_off = o.tables;
    h.tables_len = tables.size();
    h.unit_bytes = layout.unit;
    h.nunits = uint32_t(layout.units.size());
    h.slots_off = o.slots;
    h.states_off = o.states;
    h.refs_off = o.refs;
    h.units_off = o.units;
    h.alloc_off = o.alloc;
    h.attach_off = o.attach;
    h.pins_off = o.pins;
    h.pins_stride = o.pins_stride;
    h.data_off = o.data;
    h.data_bytes = layout.data_bytes;
    h.total_bytes = o.total;
    h.created_unix = uint64_t(::time(nullptr));
    std::vector<SlotInfo> infos(layout.slots.size());
    for (size_t i = 0; i < infos.size(); i++) {
      const Slot& sl = layout.slots[i];
      infos[i] = {sl.offset, sl.bytes, sl.first_tensor, sl.ntensors, 0};
    }
    if (::pwrite(fd, infos.data(), infos.size() * sizeof(SlotInfo), off_t(o.slots)) !=
        ssize_t(infos.size() * sizeof(SlotInfo)))
      return Status::FromErrno("write shared memory " + name, errno);
    if (::pwrite(fd, manifest.data(), manifest.size(), off_t(o.manifest)) !=
        ssize_t(manifest.size()))
      return Status::FromErrno("write shared memory " + name, errno);
    if (::pwrite(fd, tables.data(), tables.size(), off_t(o.tables)) != ssize_t(tables.size()))
      return Status::FromErrno("write shared memory " + name, errno);
    const std::string layout_bytes = LayoutBytes(layout);
    if (::pwrite(fd, layout_bytes.data(), layout_bytes.size(), off_t(o.layout)) !=
        ssize_t(layout_bytes.size()))
      return Status::FromErrno("write shared memory " + name, errno);
    std::vector<UnitInfo> units(layout.units.size());
    for (size_t i = 0; i < units.size(); i++)
      units[i] = {layout.units[i].first_slot, layout.units[i].nslots, layout.units[i].used_bytes,
                  0};
    if (::pwrite(fd, units.data(), units.size() * sizeof(UnitInfo), off_t(o.units)) !=
        ssize_t(units.size() * sizeof(UnitInfo)))
      return Status::FromErrno("write shared memory " + name, errno);
    if (::pwrite(fd, &h, sizeof(h), 0) != ssize_t(sizeof(h)))
      return Status::FromErrno("write shared memory " + name, errno);
    uint32_t one = 1;  // publish: ready last
    if (::pwrite(fd, &one, 4, off_t(offsetof(SegmentHeader, ready))) != 4)
      return Status::FromErrno("write shared memory " + name, errno);
    remove.armed = false;
  }
  PSTORE_RETURN_IF_ERROR(s->MapAndClaim(false));
  return s;
}

Result<std::unique_ptr<Segment>> Segment::AttachResident(const std::string& name,
                                                         const ModelDigest& digest) {
  auto s = AttachExisting(name, &digest);
  if (!s.ok()) return Status::NotFound(s.status().message());
  return s;
}

Result<std::unique_ptr<Segment>> Segment::AttachExisting(const std::string& name,
                                                         const ModelDigest* digest) {
  std::unique_ptr<Segment> s(new Segment);
  s->name_ = name;
  PSTORE_ASSIGN_OR_RETURN(s->shm_, OpenShm(name, ShmOpen::kReadWrite));
  SegmentHeader h;
  ssize_t n;
  {
    // The creator holds the init lock until the header is complete.
    OfdByteLock init(s->fd(), kInitLockByte, /*wait=*/true);
    if (!init.held()) return Status::FromErrno("lock " + name, errno);
    n = ::pread(s->fd(), &h, sizeof(h), 0);
  }
  if (n != ssize_t(sizeof(h)) || h.magic != kSegmentMagic || h.ready.load() != 1 ||
      h.layout_version != kLayoutVersion)
    return Status::Corruption("shared memory " + name + " is not a complete pstore segment");
  if (digest && std::memcmp(h.digest, digest->bytes.data(), 16) != 0)
    return Status::Corruption("shared memory " + name + " is of another model");
  // MapAndClaim checks the header's sizes and offsets before mapping.
  PSTORE_RETURN_IF_ERROR(s->MapAndClaim(false));
  return s;
}

Status Segment::CheckTables(const SegmentHeader& h) const {
  // Every slot within the data region and every index within its table, so
  // that eviction and reaping, which index by them, cannot stray.
  for (uint32_t i = 0; i < h.nslots; i++) {
    const SlotInfo& si = slots_[i];
    if (si.bytes == 0 || si.offset > h.data_bytes || si.bytes > h.data_bytes - si.offset ||
        si.first_tensor > h.ntensors || si.ntensors > h.ntensors - si.first_tensor)
      return Status::Corruption("shared memory " + name_ + " has a slot out of range");
  }
  for (uint32_t u = 0; u < h.nunits; u++) {
    const UnitInfo& ui = units_[u];
    if (ui.first_slot > h.nslots || ui.nslots > h.nslots - ui.first_slot ||
        ui.used_bytes > h.unit_bytes)
      return Status::Corruption("shared memory " + name_ + " has a unit out of range");
  }
  return Status::OK();
}

Status Segment::MapAndClaim(bool) {
  SegmentHeader h;
  if (::pread(fd(), &h, sizeof(h), 0) != ssize_t(sizeof(h)))
    return Status::FromErrno("read " + name_, errno);
  struct stat st;
  if (::fstat(fd(), &st) != 0) return Status::FromErrno("stat " + name_, errno);
  others_write_ = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 || st.st_uid != ::geteuid();
  if (!HeaderConsistent(h, uint64_t(st.st_size)))
    return Status::Corruption("shared memory " + name_ +
                              " has an inconsistent header; remove it with `pstore ps --gc`");
  header_len_ = size_t(h.data_off);
  PSTORE_ASSIGN_OR_RETURN(header_map_, MapRange(fd(), bip::read_write, 0, header_len_, name_));
  base_ = Bytes(header_map_);
  hdr_ = reinterpret_cast<SegmentHeader*>(base_);
  slots_ = reinterpret_cast<SlotInfo*>(base_ + h.slots_off);
  states_ = reinterpret_cast<std::atomic<uint32_t>*>(base_ + h.states_off);
  refs_ = base_ + h.refs_off;
  units_ = reinterpret_cast<UnitInfo*>(base_ + h.units_off);
  alloc_ = reinterpret_cast<std::atomic<uint32_t>*>(base_ + h.alloc_off);
  attach_ = reinterpret_cast<AttachEntry*>(base_ + h.attach_off);
  pins_base_ = base_ + h.pins_off;
  PSTORE_RETURN_IF_ERROR(CheckTables(h));
  // HeaderConsistent placed the manifest, layout and tensor table before the
  // data region; what is read of them keeps to these bounds.
  checked_ = {h.manifest_off, h.manifest_len, h.layout_off, h.layout_len, h.tables_off,
              h.tables_len,   h.fingerprint,  h.page,       h.unit_bytes, h.data_bytes,
              h.nslots,       h.nunits,       h.ntensors};
  if (h.data_bytes > 0) {
    // At huge-page boundaries, so that huge pages of the file map whole.
    PSTORE_ASSIGN_OR_RETURN(data_ro_map_, MapRangeAligned(fd(), bip::read_only, h.data_off,
                                                          h.data_bytes, kHugePage, name_));
    data_ro_ = Bytes(data_ro_map_);
    PSTORE_ASSIGN_OR_RETURN(data_rw_map_, MapRangeAligned(fd(), bip::read_write, h.data_off,
                                                          h.data_bytes, kHugePage, name_));
    data_rw_ = Bytes(data_rw_map_);
  }
  // Claim a process-table entry: an entry whose lock we can take has no live
  // owner; if it still says "used", its owner died and we reap it first.
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    // Unlocked again on every way out but taking the entry.
    OfdByteLock liveness(fd(), kAttachLockBase + a, /*wait=*/false);
    if (!liveness.held()) continue;
    // A dead evictor is left for one holding the budget lock.
    if (attach_[a].used.load() && !ReapLocked(a, false)) continue;
    int e = ::posix_fallocate(fd(), off_t(h.pins_off + a * h.pins_stride), off_t(h.pins_stride));
    if (e != 0) return Status::FromErrno("allocate shared memory " + name_, e);
    AttachEntry& en = attach_[a];
    en.pid = uint32_t(::getpid());
    en.start_unix = uint64_t(::time(nullptr));
    std::string comm = ProcessComm();
    std::memset(en.comm, 0, sizeof(en.comm));
    std::memcpy(en.comm, comm.data(), std::min(comm.size(), sizeof(en.comm) - 1));
    en.evicting_unit.store(-1);
    en.used.store(1);
    me_ = a;
    attach_lock_ = std::move(liveness);
    ReapDead();  // whoever died before us leaves nothing held
    return Status::OK();
  }
  return Status::Busy("shared memory " + name_ + " has " + std::to_string(kMaxAttach) +
                      " attached processes already");
}

Segment::~Segment() {
  // Our own pins and claims (we are not evicting); then the members let go
  // of the entry's lock, unmap and close.
  if (me_ < kMaxAttach) ReapLocked(me_, true);
}

}  // namespace pstore
