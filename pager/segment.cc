#include "pager/segment.h"

#include "pager/shm_access.h"

#include "pager/ofd_lock.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace pstore {

namespace {

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct Offsets {
  uint64_t manifest, layout, slots, states, refs, units, alloc, attach, pins, pins_stride, data, total;
};

Offsets Compute(uint64_t page, uint64_t manifest_len, uint64_t layout_len, uint32_t nslots,
                uint32_t nunits, uint32_t ntensors, uint64_t data_bytes) {
  Offsets o;
  o.manifest = RoundUp(sizeof(SegmentHeader), 64);
  o.layout = RoundUp(o.manifest + manifest_len, 64);
  o.slots = RoundUp(o.layout + layout_len, 64);
  o.states = RoundUp(o.slots + sizeof(SlotInfo) * nslots, 64);
  o.refs = RoundUp(o.states + 4ull * nslots, 64);
  o.units = RoundUp(o.refs + nslots, 64);
  o.alloc = RoundUp(o.units + sizeof(UnitInfo) * nunits, 64);
  o.attach = RoundUp(o.alloc + 4ull * nunits, 64);
  o.pins = RoundUp(o.attach + sizeof(AttachEntry) * kMaxAttach, page);
  o.pins_stride = RoundUp(std::max<uint64_t>(4ull * ntensors, 4), page);
  // The data region starts on a huge-page boundary of the file, so that
  // huge-page slots can be backed by huge pages.
  o.data = RoundUp(o.pins + o.pins_stride * kMaxAttach, kHugePage);
  o.total = o.data + data_bytes;
  return o;
}

// Whether a header describes a segment of file_size bytes as Compute lays
// it out: every offset recomputed from the sizes, so that nothing mapped or
// indexed from it can reach past the file.
bool HeaderConsistent(const SegmentHeader& h, uint64_t file_size) {
  constexpr uint64_t kMaxFile = 1ull << 48;  // sizes below this cannot overflow Compute
  if (file_size >= kMaxFile || h.page == 0 || h.page > kHugePage || (h.page & (h.page - 1)) != 0 ||
      h.unit_bytes == 0 || h.manifest_len > file_size || h.layout_len > file_size ||
      h.data_bytes > file_size || h.data_bytes % h.unit_bytes != 0 ||
      h.data_bytes / h.unit_bytes != h.nunits)
    return false;
  Offsets o = Compute(h.page, h.manifest_len, h.layout_len, h.nslots, h.nunits, h.ntensors,
                      h.data_bytes);
  return o.manifest == h.manifest_off && o.layout == h.layout_off && o.slots == h.slots_off &&
         o.states == h.states_off && o.refs == h.refs_off && o.units == h.units_off &&
         o.alloc == h.alloc_off && o.attach == h.attach_off && o.pins == h.pins_off &&
         o.pins_stride == h.pins_stride && o.data == h.data_off && o.total == h.total_bytes &&
         h.total_bytes == file_size;
}

// Maps len bytes of fd at off at an address aligned to a huge page, so that
// huge pages of the file can be mapped whole.
void* MapAligned(size_t len, int prot, int fd, off_t off) {
  size_t span = len + kHugePage;
  void* r = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return MAP_FAILED;
  uintptr_t start = reinterpret_cast<uintptr_t>(r);
  uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t(kHugePage) - 1);
  void* p = ::mmap(reinterpret_cast<void*>(aligned), len, prot, MAP_SHARED | MAP_FIXED, fd, off);
  if (p == MAP_FAILED) {
    ::munmap(r, span);
    return MAP_FAILED;
  }
  if (aligned > start) ::munmap(r, aligned - start);
  uintptr_t end = aligned + len, rend = start + span;
  if (rend > end) ::munmap(reinterpret_cast<void*>(end), rend - end);
  return p;
}

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

namespace {
struct LayoutPrefix {
  uint64_t page, unit, data_bytes;
  uint32_t nslots, nunits, npieces, ntensors;
};
static_assert(sizeof(LayoutPrefix) == 40);

// Bytes of a layout as stored (Segment::LayoutBytes).
uint64_t LayoutSize(uint64_t nslots, uint64_t nunits, uint64_t npieces, uint64_t ntensors) {
  return sizeof(LayoutPrefix) + nslots * sizeof(Slot) + nunits * sizeof(Unit) +
         npieces * sizeof(SlotPiece) + ntensors * sizeof(TensorPlace);
}

template <typename T>
void Append(std::string* out, const std::vector<T>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
template <typename T>
void Take(const char** p, size_t n, std::vector<T>* v) {
  v->resize(n);
  std::memcpy(static_cast<void*>(v->data()), *p, n * sizeof(T));
  *p += n * sizeof(T);
}
}  // namespace

Result<std::unique_ptr<Segment>> Segment::Attach(const std::string& name, const Layout& layout,
                                                 const ModelDigest& digest,
                                                 std::string_view manifest,
                                                 const std::string& store_id, const Options& opt,
                                                 std::shared_ptr<const Manifest> parsed) {
  if (!parsed) {
    auto m = Manifest::Parse(manifest, /*with_headers=*/false);
    if (!m.ok()) return m.status().WithContext("model " + digest.Hex());
    parsed = std::make_shared<const Manifest>(std::move(m).value());
  }
  std::unique_ptr<Segment> s(new Segment);
  s->name_ = name;
  int fd = ShmOpenWaitingForAccess(name, O_RDWR | O_CREAT | O_CLOEXEC, mode_t(opt.mode));
  if (fd < 0) {
    int e = errno;
    return Status::FromErrno(
        "cannot open shared memory " + name +
            (e == EACCES ? " (made before this user was given access: the store's owner runs "
                           "`pstore config --group GROUP` again, see docs/operations.md)"
                         : ""),
        e);
  }
  s->fd_.Reset(fd);
  // Serialise initialisation: whoever holds this lock creates or checks the header.
  if (!OfdLock(fd, kInitLockByte, true)) return Status::FromErrno("lock " + name, errno);
  struct Unlock {
    int fd;
    ~Unlock() { OfdUnlock(fd, kInitLockByte); }
  } unlock{fd};

  const uint64_t layout_len = LayoutSize(layout.slots.size(), layout.units.size(),
                                         layout.pieces.size(), layout.tensors.size());
  Offsets o = Compute(layout.page, manifest.size(), layout_len,
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
  // Mode and group as the store says, set explicitly: on a new segment, and
  // on one made before the store's group changed.
  PSTORE_RETURN_IF_ERROR(SetShmAccess(fd, name, opt));
  if (init) {
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, off_t(o.total)) != 0)
      return Status::FromErrno("size shared memory " + name, errno);
    int e = ::posix_fallocate(fd, 0, off_t(o.pins));
    if (e != 0) {
      ::shm_unlink(name.c_str());
      return Status::FromErrno("allocate shared memory " + name +
                                   " (is /dev/shm full? see `pstore ps`, or lower the budget)",
                               e);
    }
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
    if (::pwrite(fd, manifest.data(), manifest.size(), off_t(o.manifest)) != ssize_t(manifest.size()))
      return Status::FromErrno("write shared memory " + name, errno);
    const std::string layout_bytes = LayoutBytes(layout);
    if (::pwrite(fd, layout_bytes.data(), layout_bytes.size(), off_t(o.layout)) !=
        ssize_t(layout_bytes.size()))
      return Status::FromErrno("write shared memory " + name, errno);
    std::vector<UnitInfo> units(layout.units.size());
    for (size_t i = 0; i < units.size(); i++)
      units[i] = {layout.units[i].first_slot, layout.units[i].nslots, layout.units[i].used_bytes, 0};
    if (::pwrite(fd, units.data(), units.size() * sizeof(UnitInfo), off_t(o.units)) !=
        ssize_t(units.size() * sizeof(UnitInfo)))
      return Status::FromErrno("write shared memory " + name, errno);
    if (::pwrite(fd, &h, sizeof(h), 0) != ssize_t(sizeof(h)))
      return Status::FromErrno("write shared memory " + name, errno);
    uint32_t one = 1;  // publish: ready last
    if (::pwrite(fd, &one, 4, off_t(offsetof(SegmentHeader, ready))) != 4)
      return Status::FromErrno("write shared memory " + name, errno);
  }
  PSTORE_RETURN_IF_ERROR(s->MapAndClaim(false));
  // The caller's manifest, from the store, is the one this process uses.
  s->manifest_bytes_.assign(manifest.data(), manifest.size());
  s->manifest_ = std::move(parsed);
  return s;
}

Result<std::unique_ptr<Segment>> Segment::AttachResident(const std::string& name,
                                                         const ModelDigest& digest) {
  auto s = AttachExisting(name, &digest);
  if (!s.ok()) return Status::NotFound(s.status().message());
  // The private copy MapAndClaim took: checked once here, used from now on.
  Segment& seg = **s;
  if (Manifest::DigestOf(seg.manifest_bytes_) != digest)
    return Status::NotFound("shared memory " + name + " holds another manifest");
  auto m = Manifest::Parse(seg.manifest_bytes_, /*with_headers=*/false);
  if (!m.ok()) return Status::NotFound("shared memory " + name + ": " + m.status().message());
  seg.manifest_ = std::make_shared<const Manifest>(std::move(m).value());
  return s;
}


std::string Segment::LayoutBytes(const Layout& l) {
  LayoutPrefix pre{l.page,
                   l.unit,
                   l.data_bytes,
                   uint32_t(l.slots.size()),
                   uint32_t(l.units.size()),
                   uint32_t(l.pieces.size()),
                   uint32_t(l.tensors.size())};
  std::string out;
  out.reserve(LayoutSize(l.slots.size(), l.units.size(), l.pieces.size(), l.tensors.size()));
  out.append(reinterpret_cast<const char*>(&pre), sizeof(pre));
  Append(&out, l.slots);
  Append(&out, l.units);
  Append(&out, l.pieces);
  Append(&out, l.tensors);
  return out;
}

Result<Layout> Segment::ReadLayout(const Manifest& m) const {
  auto bad = [&](const char* what) {
    return Status::Corruption("shared memory " + name_ + ": layout " + what +
                              "; remove it with `pstore ps --gc`");
  };
  // The header as it was checked when mapped (HeaderConsistent), copied so
  // that nothing below reads a field twice.
  SegmentHeader h;
  std::memcpy(static_cast<void*>(&h), hdr_, sizeof(h));
  LayoutPrefix pre;
  if (h.layout_len < sizeof(pre) || h.layout_off > header_len_ ||
      h.layout_len > header_len_ - h.layout_off)
    return bad("truncated");
  const char* p = reinterpret_cast<const char*>(base_ + h.layout_off);
  std::memcpy(&pre, p, sizeof(pre));
  p += sizeof(pre);
  if (h.layout_len != LayoutSize(pre.nslots, pre.nunits, pre.npieces, pre.ntensors))
    return bad("of the wrong size");
  if (pre.page != h.page || pre.unit != h.unit_bytes || pre.data_bytes != h.data_bytes ||
      pre.nslots != h.nslots || pre.nunits != h.nunits || pre.ntensors != h.ntensors ||
      pre.ntensors != m.tensors.size())
    return bad("does not match the header");
  Layout l;
  l.page = pre.page;
  l.unit = pre.unit;
  l.data_bytes = pre.data_bytes;
  Take(&p, pre.nslots, &l.slots);
  Take(&p, pre.nunits, &l.units);
  Take(&p, pre.npieces, &l.pieces);
  Take(&p, pre.ntensors, &l.tensors);
  if (l.Fingerprint() != h.fingerprint) return bad("does not match its fingerprint");
  // Every index and range in bounds, so that no later use can stray; the
  // comparisons are written so that they cannot overflow.
  auto within = [](uint64_t first, uint64_t count, uint64_t size) {
    return first <= size && count <= size - first;
  };
  uint64_t prev_end = 0;
  for (size_t i = 0; i < l.slots.size(); i++) {
    const Slot& s = l.slots[i];
    const SlotInfo& si = slots_[i];
    if (s.bytes == 0 || s.offset % l.page != 0 || s.bytes % l.page != 0 || s.offset < prev_end ||
        !within(s.offset, s.bytes, l.data_bytes) || s.npieces == 0 ||
        !within(s.first_piece, s.npieces, l.pieces.size()) ||
        !within(s.first_tensor, s.ntensors, l.tensors.size()))
      return bad("has a slot out of range");
    if (si.offset != s.offset || si.bytes != s.bytes || si.first_tensor != s.first_tensor ||
        si.ntensors != s.ntensors)
      return bad("does not match the segment's slot table");
    prev_end = s.offset + s.bytes;
    for (uint32_t k = 0; k < s.npieces; k++) {
      const SlotPiece& pc = l.pieces[s.first_piece + k];
      if (uint64_t(pc.offset) + pc.len > s.bytes) return bad("has a piece out of its slot");
    }
  }
  for (size_t u = 0; u < l.units.size(); u++) {
    const Unit& un = l.units[u];
    const UnitInfo& ui = units_[u];
    if (!within(un.first_slot, un.nslots, l.slots.size()) || un.used_bytes > l.unit)
      return bad("has a unit out of range");
    if (ui.first_slot != un.first_slot || ui.nslots != un.nslots || ui.used_bytes != un.used_bytes)
      return bad("does not match the segment's unit table");
  }
  for (const SlotPiece& pc : l.pieces)
    if (pc.chunk >= m.chunks.size() || pc.tensor >= l.tensors.size())
      return bad("has a piece out of range");
  for (size_t t = 0; t < l.tensors.size(); t++) {
    const TensorPlace& tp = l.tensors[t];
    const uint64_t size = m.tensors[t].size;
    if (!within(tp.first_slot, tp.nslots, l.slots.size()) || (tp.nslots == 0) != (size == 0) ||
        !within(tp.offset, size, l.data_bytes))
      return bad("places a tensor out of range");
    if (tp.nslots == 0) continue;
    // Its slots follow each other and cover it.
    const Slot& first = l.slots[tp.first_slot];
    const Slot& last = l.slots[tp.first_slot + tp.nslots - 1];
    for (uint32_t k = 1; k < tp.nslots; k++) {
      const Slot& a = l.slots[tp.first_slot + k - 1];
      if (l.slots[tp.first_slot + k].offset != a.offset + a.bytes)
        return bad("places a tensor in slots with gaps");
    }
    if (tp.offset < first.offset || tp.offset + size > last.offset + last.bytes)
      return bad("places a tensor outside its slots");
  }
  return l;
}

Result<std::unique_ptr<Segment>> Segment::AttachExisting(const std::string& name,
                                                         const ModelDigest* digest) {
  std::unique_ptr<Segment> s(new Segment);
  s->name_ = name;
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("cannot open shared memory " + name, errno);
  s->fd_.Reset(fd);
  // The creator holds the init lock until the header is complete.
  if (!OfdLock(fd, kInitLockByte, true)) return Status::FromErrno("lock " + name, errno);
  SegmentHeader h;
  ssize_t n = ::pread(fd, &h, sizeof(h), 0);
  OfdUnlock(fd, kInitLockByte);
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
  if (::pread(fd_.get(), &h, sizeof(h), 0) != ssize_t(sizeof(h)))
    return Status::FromErrno("read " + name_, errno);
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Status::FromErrno("stat " + name_, errno);
  if (!HeaderConsistent(h, uint64_t(st.st_size)))
    return Status::Corruption("shared memory " + name_ +
                              " has an inconsistent header; remove it with `pstore ps --gc`");
  header_len_ = size_t(h.data_off);
  void* p = ::mmap(nullptr, header_len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) return Status::FromErrno("map " + name_, errno);
  base_ = static_cast<uint8_t*>(p);
  hdr_ = reinterpret_cast<SegmentHeader*>(base_);
  slots_ = reinterpret_cast<SlotInfo*>(base_ + h.slots_off);
  states_ = reinterpret_cast<std::atomic<uint32_t>*>(base_ + h.states_off);
  refs_ = base_ + h.refs_off;
  units_ = reinterpret_cast<UnitInfo*>(base_ + h.units_off);
  alloc_ = reinterpret_cast<std::atomic<uint32_t>*>(base_ + h.alloc_off);
  attach_ = reinterpret_cast<AttachEntry*>(base_ + h.attach_off);
  pins_base_ = base_ + h.pins_off;
  PSTORE_RETURN_IF_ERROR(CheckTables(h));
  // The manifest, copied once into this process's memory with the bounds of
  // the header as read above (HeaderConsistent placed them before the data
  // region; checked again here so that no header change can reach past it).
  if (h.manifest_off > header_len_ || h.manifest_len > header_len_ - h.manifest_off)
    return Status::Corruption(
        "shared memory " + name_ +
        " places its manifest out of bounds; remove it with `pstore ps --gc`");
  manifest_bytes_.assign(reinterpret_cast<const char*>(base_ + h.manifest_off),
                         size_t(h.manifest_len));
  if (h.data_bytes > 0) {
    p = MapAligned(h.data_bytes, PROT_READ, fd_.get(), off_t(h.data_off));
    if (p == MAP_FAILED) return Status::FromErrno("map " + name_, errno);
    data_ro_ = static_cast<uint8_t*>(p);
    p = MapAligned(h.data_bytes, PROT_READ | PROT_WRITE, fd_.get(), off_t(h.data_off));
    if (p == MAP_FAILED) return Status::FromErrno("map " + name_, errno);
    data_rw_ = static_cast<uint8_t*>(p);
  }
  // Claim a process-table entry: an entry whose lock we can take has no live
  // owner; if it still says "used", its owner died and we reap it first.
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    if (!OfdLock(fd_.get(), kAttachLockBase + a, false)) continue;
    if (attach_[a].used.load() && !ReapLocked(a, false)) {
      // A dead evictor: left for one holding the budget lock.
      OfdUnlock(fd_.get(), kAttachLockBase + a);
      continue;
    }
    int e = ::posix_fallocate(fd_.get(), off_t(h.pins_off + a * h.pins_stride), off_t(h.pins_stride));
    if (e != 0) {
      OfdUnlock(fd_.get(), kAttachLockBase + a);
      return Status::FromErrno("allocate shared memory " + name_, e);
    }
    AttachEntry& en = attach_[a];
    en.pid = uint32_t(::getpid());
    en.start_unix = uint64_t(::time(nullptr));
    std::string comm = ProcessComm();
    std::memset(en.comm, 0, sizeof(en.comm));
    std::memcpy(en.comm, comm.data(), std::min(comm.size(), sizeof(en.comm) - 1));
    en.evicting_unit.store(-1);
    en.used.store(1);
    me_ = a;
    ReapDead();  // whoever died before us leaves nothing held
    return Status::OK();
  }
  return Status::Busy("shared memory " + name_ + " has " + std::to_string(kMaxAttach) +
                      " attached processes already");
}

Segment::~Segment() {
  if (me_ < kMaxAttach) {
    ReapLocked(me_, true);  // our own pins and claims (we are not evicting)
    OfdUnlock(fd_.get(), kAttachLockBase + me_);
  }
  if (data_rw_) ::munmap(data_rw_, hdr_->data_bytes);
  if (data_ro_) ::munmap(data_ro_, hdr_->data_bytes);
  if (base_) ::munmap(base_, header_len_);
}

bool Segment::ReapLocked(uint32_t a, bool budget_locked) {
  const int64_t ev = attach_[a].evicting_unit.load();
  if (ev >= 0 && !budget_locked) return false;
  // Clear a's pins: punching the row zeroes it and frees its pages.
  ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              off_t(hdr_->pins_off + a * hdr_->pins_stride), off_t(hdr_->pins_stride));
  // A half-loaded slot is empty again (its unit stays allocated for the next
  // loader).
  for (uint32_t s = 0; s < hdr_->nslots; s++) {
    uint32_t w = states_[s].load();
    if (StateOf(w) == kLoading && OwnerOf(w) == a &&
        states_[s].compare_exchange_strong(w, MakeState(kEmpty, 0)))
      FutexWakeAll(&states_[s]);
  }
  // An eviction a did not commit to changed nothing: its claimed slots are
  // READY again. One it committed to cleared the unit's allocation before
  // punching: finish the punch unless a loader has allocated the unit again
  // since (allocation happens under the budget lock, which we hold), and
  // empty its slots.
  if (ev >= 0) {
    const uint32_t u = uint32_t(ev / 2);
    const bool committed = ev % 2 == 1;
    if (u < hdr_->nunits) {
      if (committed && alloc_[u].load() == 0)
        Punch(uint64_t(u) * hdr_->unit_bytes, hdr_->unit_bytes);
      for (uint32_t k = units_[u].first_slot; k < units_[u].first_slot + units_[u].nslots; k++) {
        uint32_t wk = states_[k].load();
        if (StateOf(wk) == kEvicting && OwnerOf(wk) == a &&
            states_[k].compare_exchange_strong(wk, MakeState(committed ? kEmpty : kReady, 0)))
          FutexWakeAll(&states_[k]);
      }
    }
  }
  attach_[a].evicting_unit.store(-1);
  attach_[a].used.store(0);
  return true;
}

bool Segment::ReapIfDead(uint32_t a, bool budget_locked) {
  if (a >= kMaxAttach || a == me_) return false;
  if (!OfdLock(fd_.get(), kAttachLockBase + a, false)) return false;  // alive
  bool reaped = !attach_[a].used.load() || ReapLocked(a, budget_locked);
  OfdUnlock(fd_.get(), kAttachLockBase + a);
  return reaped;
}

int Segment::ReapDead(bool budget_locked) {
  int n = 0;
  for (uint32_t a = 0; a < kMaxAttach; a++)
    if (a != me_ && attach_[a].used.load() && ReapIfDead(a, budget_locked)) n++;
  return n;
}

bool Segment::SlotPinned(uint32_t s) const {
  const SlotInfo& si = slots_[s];
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    if (!attach_[a].used.load(std::memory_order_seq_cst)) continue;
    for (uint32_t t = si.first_tensor; t < si.first_tensor + si.ntensors; t++)
      if (pin(a, t).load(std::memory_order_seq_cst) != 0) return true;
  }
  return false;
}

namespace {
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
}  // namespace

Status Segment::ReserveUnit(uint32_t u) {
  if (alloc_[u].load()) return Status::OK();
  const uint64_t off = uint64_t(u) * hdr_->unit_bytes, len = hdr_->unit_bytes;
  auto allocate = [&](uint64_t at, uint64_t n) -> Status {
    int e = ::posix_fallocate(fd_.get(), off_t(hdr_->data_off + at), off_t(n));
    if (e != 0)
      return Status::FromErrno("allocate shared memory for " + name_ +
                                   " (is /dev/shm full? lower the budget or free memory)",
                               e);
    return Status::OK();
  };
  // Back the unit by huge pages (Linux 6.1+), so every process maps it with
  // one fault per 2 MiB: with one page of each huge page allocated, a
  // collapse fills the rest with zeros in the new huge page, which is far
  // cheaper than allocating 512 small pages and copying them. Where the
  // kernel refuses, allocate and map the small pages instead.
  // On failure nothing may stay allocated: the unit is not marked, so no
  // eviction would ever free it.
  auto fail = [&](const Status& st) {
    Punch(off, len);
    return st;
  };
  for (uint64_t at = off; at < off + len; at += kHugePage)
    if (Status st = allocate(at, hdr_->page); !st.ok()) return fail(st);
  bool huge = ::madvise(data_rw_ + off, len, MADV_COLLAPSE) == 0;
  // After a collapse this only checks that nothing is left a hole.
  if (Status st = allocate(off, len); !st.ok()) return fail(st);
#ifdef MADV_POPULATE_WRITE
  if (!huge) ::madvise(data_rw_ + off, len, MADV_POPULATE_WRITE);
#endif
  alloc_[u].store(1);
  return Status::OK();
}

Status Segment::ReserveRange(uint64_t off, uint64_t len) {
  int e = ::posix_fallocate(fd_.get(), off_t(hdr_->data_off + off), off_t(len));
  if (e != 0)
    return Status::FromErrno("allocate shared memory for " + name_ +
                                 " (is /dev/shm full? lower the budget or free memory)",
                             e);
#ifdef MADV_POPULATE_WRITE
  ::madvise(data_rw_ + off, len, MADV_POPULATE_WRITE);  // one call, not a fault per page
#endif
  alloc_[off / hdr_->unit_bytes].store(1);  // something in the unit to evict
  return Status::OK();
}

void Segment::Punch(uint64_t off, uint64_t len) {
  ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(hdr_->data_off + off),
              off_t(len));
}

uint64_t Segment::ResidentBytes() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return 0;
  return uint64_t(st.st_blocks) * 512;
}

uint64_t Segment::TryEvictUnit(uint32_t u) {
  if (!alloc_[u].load()) return 0;
  const UnitInfo& ui = units_[u];
  const uint32_t first = ui.first_slot, end = ui.first_slot + ui.nslots;
  bool referenced = false;
  for (uint32_t s = first; s < end; s++) {
    uint32_t st = StateOf(states_[s].load());
    if (st == kLoading || st == kEvicting) return 0;
    if (refs_[s]) {
      refs_[s] = 0;  // second chance
      referenced = true;
    }
  }
  if (referenced) return 0;
  // Recorded first, so that if we die midway a reaper knows what we did.
  attach_[me_].evicting_unit.store(2 * int64_t(u));
  struct Done {
    AttachEntry& e;
    ~Done() { e.evicting_unit.store(-1); }
  } done{attach_[me_]};
  // Claim every READY slot (seq_cst), then look at the pins: a reader pins
  // (seq_cst) before it checks the state, so one of us sees the other.
  std::vector<uint32_t> claimed;
  claimed.reserve(end - first);  // no allocation (and so no throw) while claiming
  bool ok = true;
  for (uint32_t s = first; s < end && ok; s++) {
    uint32_t w = states_[s].load();
    if (StateOf(w) == kEmpty) continue;
    if (StateOf(w) != kReady || !states_[s].compare_exchange_strong(
                                    w, MakeState(kEvicting, me_), std::memory_order_seq_cst))
      ok = false;
    else
      claimed.push_back(s);
  }
  for (uint32_t s : claimed)
    if (ok && SlotPinned(s)) ok = false;
  // An EMPTY slot may have been claimed by a loader meanwhile: the unit is in use.
  for (uint32_t s = first; s < end && ok; s++)
    if (StateOf(states_[s].load()) == kLoading) ok = false;
  if (!ok) {
    for (uint32_t s : claimed) {
      states_[s].store(MakeState(kReady, 0));
      FutexWakeAll(&states_[s]);
    }
    return 0;
  }
  // Commit: from here a reaper finishes the job if we die.
  attach_[me_].evicting_unit.store(2 * int64_t(u) + 1);
  alloc_[u].store(0);
  uint64_t before = ResidentBytes();
  Punch(uint64_t(u) * hdr_->unit_bytes, hdr_->unit_bytes);
  uint64_t after = ResidentBytes();
  // Counted before the slots can be loaded again: a process that checks what
  // others loaded (Model's check_shared) re-checks a tensor when the count
  // moved since its last check.
  hdr_->evictions.fetch_add(claimed.size());
  for (uint32_t s : claimed) {
    states_[s].store(MakeState(kEmpty, 0));
    FutexWakeAll(&states_[s]);
  }
  uint64_t freed = before > after ? before - after : 0;
  hdr_->evicted_bytes.fetch_add(freed, std::memory_order_relaxed);
  return freed;
}

}  // namespace pstore

namespace pstore {

Result<SegmentInfo> InspectSegment(const std::string& name) {
  SegmentInfo info;
  info.name = name;
  UniqueFd fd(::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno("cannot open shared memory " + name, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + name, errno);
  info.resident_bytes = uint64_t(st.st_blocks) * 512;
  info.total_bytes = uint64_t(st.st_size);
  SegmentHeader h;
  if (::pread(fd.get(), &h, sizeof(h), 0) != ssize_t(sizeof(h)) || h.magic != kSegmentMagic ||
      h.ready.load() != 1 || h.layout_version != kLayoutVersion || h.total_bytes != info.total_bytes)
    return info;  // incomplete or foreign
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
    (void)!::pread(fd.get(), states.data(), states.size() * 4, off_t(h.states_off));
    (void)!::pread(fd.get(), slots.data(), slots.size() * sizeof(SlotInfo), off_t(h.slots_off));
  }
  for (uint32_t w : states) {
    if (StateOf(w) == kReady) info.ready_slots++;
    else if (StateOf(w) != kEmpty) info.busy_slots++;
  }
  std::vector<AttachEntry> entries(kMaxAttach);
  (void)!::pread(fd.get(), static_cast<void*>(entries.data()), kMaxAttach * sizeof(AttachEntry),
                 off_t(h.attach_off));
  std::vector<uint32_t> pins(h.ntensors);
  for (uint32_t a = 0; a < kMaxAttach; a++) {
    if (!entries[a].used.load()) continue;
    SegmentInfo::Attachment at;
    at.index = a;
    at.pid = entries[a].pid;
    at.comm = std::string(entries[a].comm, strnlen(entries[a].comm, sizeof(entries[a].comm)));
    at.start_unix = entries[a].start_unix;
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = kAttachLockBase + a;
    fl.l_len = 1;
    at.alive = ::fcntl(fd.get(), F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    // pread of a hole reads zeros without allocating memory.
    if (h.ntensors)
      (void)!::pread(fd.get(), pins.data(), pins.size() * 4, off_t(h.pins_off + a * h.pins_stride));
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
  if (::shm_unlink(name.c_str()) != 0 && errno != ENOENT)
    return Status::FromErrno("remove shared memory " + name, errno);
  return Status::OK();
}

}  // namespace pstore
