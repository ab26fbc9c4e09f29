// One model version's POSIX shared-memory segment, as one process sees it.
//
// Layout of the segment (all offsets from its start; docs/pager.md):
//   SegmentHeader                 magic, versions, sizes, offsets, shared counters
//   the manifest                  so a process finding the model resident needs
//                                 nothing from the store's database
//   the layout                    pager/layout.h's arrays as the creator built
//                                 them, read in place by every process
//   the tensor table              names, shapes, sizes, chunk keys and a name
//                                 index (pager/tensor_table.h), read in place
//   SlotInfo[nslots]              where each slot is and which tensors pin it
//   atomic<uint32_t>[nslots]      slot states: EMPTY, LOADING, READY, EVICTING,
//                                 with the claiming attachment in bits 2..9
//   uint8_t[nslots]               CLOCK reference bits
//   UnitInfo[nunits]              each unit's slots
//   atomic<uint32_t>[nunits]      1 while a unit's memory is allocated
//   AttachEntry[kMaxAttach]       the process table
//   uint32_t[kMaxAttach][ntensors]  pins, one page-aligned row per attachment
//   data region                   the tensors, laid out by pager/layout.h
//
// Liveness: an attachment holds an OFD write lock on byte kAttachLockBase + i
// of the segment file for as long as it lives; the kernel drops it when the
// process dies, however it dies. Anyone who can take that lock knows the
// owner is gone and reaps its pins and claims (Reap). No mutex is ever held
// across work that can die: states change by compare-and-swap, waiting is a
// futex wait with a timeout after which the owner's lock is tested.
//
// Memory: the header and each attachment's pin row are allocated with
// fallocate when created, and a unit's slots (pager/layout.h) right before the
// first of them is loaded, so a full /dev/shm is an error, never a SIGBUS. A
// unit without gaps is collapsed into huge pages where the kernel allows
// (MADV_COLLAPSE), so every process maps it with one fault per 2 MiB. Eviction takes
// a whole unit whose slots are all unpinned and punches it out of the file
// (FALLOC_FL_PUNCH_HOLE): the memory goes back to the system and the kernel
// unmaps it from every process.
//
// Thread-safety: a Segment may be used from many threads of its process; the
// shared state it points into is only changed with atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "pager/layout.h"
#include "pager/ofd_lock.h"
#include "pager/shm_object.h"
#include "pager/tensor_table.h"
#include "store/manifest.h"

namespace pstore {

constexpr uint64_t kSegmentMagic = 0x31304D4853545350ull;  // "PSTSHM01"
constexpr uint32_t kMaxAttach = 128;
constexpr off_t kAttachLockBase = off_t(1) << 40;  // lock bytes live far past EOF
constexpr off_t kInitLockByte = kAttachLockBase - 1;

enum SlotState : uint32_t { kEmpty = 0, kLoading = 1, kReady = 2, kEvicting = 3 };
inline uint32_t StateOf(uint32_t w) {
  return w & 3u;
}
inline uint32_t OwnerOf(uint32_t w) {
  return (w >> 2) & 0xffu;
}
inline uint32_t MakeState(SlotState s, uint32_t owner) {
  return uint32_t(s) | (owner << 2);
}

struct SegmentHeader {
  uint64_t magic;
  uint32_t layout_version;
  std::atomic<uint32_t> ready;  // 1 once initialised
  uint8_t digest[16];
  uint8_t store_id[16];
  uint64_t fingerprint;
  uint64_t page;
  uint32_t nslots;
  uint32_t ntensors;
  uint64_t unit_bytes;
  uint32_t nunits;
  uint32_t reserved;
  uint64_t manifest_off, manifest_len;  // the model's manifest, verbatim
  uint64_t layout_off, layout_len;      // the layout (Segment::LayoutBytes)
  uint64_t tables_off, tables_len;      // the tensor table (pager/tensor_table.h)
  uint64_t slots_off, states_off, refs_off, units_off, alloc_off, attach_off, pins_off, pins_stride;
  uint64_t data_off, data_bytes, total_bytes;
  uint64_t created_unix;
  // Shared counters, across every process using the segment.
  std::atomic<uint64_t> loads;       // slot loads completed
  std::atomic<uint64_t> load_bytes;  // raw bytes decoded into the segment
  std::atomic<uint64_t> evictions;
  std::atomic<uint64_t> evicted_bytes;
  std::atomic<uint32_t> clock_hand;  // next slot the evictor looks at
};

struct SlotInfo {
  uint64_t offset;  // in the data region
  uint32_t bytes;
  uint32_t first_tensor;
  uint32_t ntensors;
  uint32_t reserved;
};

struct UnitInfo {
  uint32_t first_slot;
  uint32_t nslots;
  uint32_t used_bytes;  // == the unit's size: no gaps (huge pages possible)
  uint32_t reserved;
};

struct AttachEntry {
  std::atomic<uint32_t> used;  // 1 while an attachment owns the entry
  uint32_t pid;
  uint64_t start_unix;
  char comm[16];
  // The unit it is evicting, or -1: 2u while it claims unit u's slots
  // (nothing changed yet), 2u + 1 once it commits to freeing the unit.
  std::atomic<int64_t> evicting_unit;
  uint8_t pad[24];
};
static_assert(sizeof(AttachEntry) == 64);
static_assert(std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<uint64_t>::is_always_lock_free);

// Waits while *word == expected, for at most timeout_ms (shared-memory futex).
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms);
void FutexWakeAll(std::atomic<uint32_t>* word);

class Segment {
 public:
  struct Options {
    uint32_t mode = 0600;  // 0660 with a group
    int gid = -1;          // chown the segment to this group when >= 0
  };

  // "/pstore-<store id>-<digest>-L<layout version>"
  static std::string NameFor(const std::string& store_id, const ModelDigest& digest);

  // Opens the segment `name`, creating and initialising it if it does not
  // exist (or a creator died before finishing) from layout, the manifest's
  // bytes and its tensor table (TensorTable::Serialize), and takes an
  // attachment (a process-table entry).
  static Result<std::unique_ptr<Segment>> Attach(const std::string& name, const Layout& layout,
                                                 const ModelDigest& digest,
                                                 std::string_view manifest, std::string_view tables,
                                                 const std::string& store_id, const Options& opt);
  // Attaches to a complete segment of the model digest, as it is: NotFound
  // when there is no such segment (or it is incomplete, or of another layout
  // or model). Nothing of the model is read or copied: ReadTables and
  // ReadLayout check its tables, which are then used in place.
  static Result<std::unique_ptr<Segment>> AttachResident(const std::string& name,
                                                         const ModelDigest& digest);
  // Attaches to an existing segment without knowing its manifest (for the
  // evictor and `pstore ps`): the layout is taken from the header.
  // With digest, only a segment of that model.
  static Result<std::unique_ptr<Segment>> AttachExisting(const std::string& name,
                                                         const ModelDigest* digest = nullptr);
  // Releases this attachment's pins and claims and frees its entry.
  ~Segment();

  const std::string& name() const { return name_; }
  SegmentHeader* header() const { return hdr_; }
  // A copy of the model's serialized manifest as the segment holds it, in
  // this process's memory (within the bounds the header had when attaching).
  // Unchecked: compare its digest before trusting it.
  std::string CopyManifest() const;
  // The segment's tensor table, checked (TensorTable::Open) and read in
  // place for as long as this Segment lives; Corruption when it fails. When
  // another user may write the segment (group mode), the table and the
  // layout are copied into this process's memory first and the copy is
  // checked and used: a member's later write can then change tensor bytes
  // (what check_shared guards) but never what this process indexes with.
  Result<TensorTable> ReadTables() const;
  // The layout the segment was created with, in place, checked with
  // CheckLayout against the tensor table m; Corruption when it does not hold.
  Result<LayoutView> ReadLayout(const TensorTable& m) const;
  bool others_write() const { return others_write_; }
  // Checks a layout against the segment's header (fingerprint, sizes), its
  // slot and unit tables, and m: every index and range in bounds.
  Status CheckLayout(const LayoutView& l, const TensorTable& m) const;
  // The layout's bytes as stored in a segment.
  static std::string LayoutBytes(const Layout& l);
  uint32_t me() const { return me_; }
  int fd() const { return ShmFd(shm_); }
  uint32_t nslots() const { return hdr_->nslots; }
  const SlotInfo& slot(uint32_t s) const { return slots_[s]; }
  std::atomic<uint32_t>& state(uint32_t s) const { return states_[s]; }
  uint8_t& ref(uint32_t s) const { return refs_[s]; }
  uint32_t nunits() const { return hdr_->nunits; }
  // The units slot s overlaps: [FirstUnit(s), LastUnit(s)].
  uint32_t FirstUnit(uint32_t s) const { return uint32_t(slots_[s].offset / hdr_->unit_bytes); }
  uint32_t LastUnit(uint32_t s) const {
    return uint32_t((slots_[s].offset + slots_[s].bytes - 1) / hdr_->unit_bytes);
  }
  bool UnitAllocated(uint32_t u) const { return alloc_[u].load() != 0; }
  // Bytes a unit holds when allocated: its slots' (the unit size when gapless).
  uint64_t UnitUsedBytes(uint32_t u) const { return units_[u].used_bytes; }
  AttachEntry& entry(uint32_t a) const { return attach_[a]; }
  std::atomic<uint32_t>& pin(uint32_t a, uint32_t tensor) const {
    return *reinterpret_cast<std::atomic<uint32_t>*>(pins_base_ + a * hdr_->pins_stride +
                                                     tensor * 4ull);
  }
  const uint8_t* data() const { return data_ro_; }  // what callers get
  uint8_t* data_rw() const { return data_rw_; }     // for loaders only

  // True if attachment a's owner is gone and it was reaped: its pins and
  // claims released. A dead owner caught evicting a unit is reaped only with
  // budget_locked (the caller holds the store's budget lock): undoing its
  // eviction touches unit allocations, which only that lock orders.
  bool ReapIfDead(uint32_t a, bool budget_locked = false);
  // Reaps every dead attachment it may. Returns how many.
  int ReapDead(bool budget_locked = false);
  // Leaves the process table as the death of the process would: the
  // liveness lock goes with the descriptor, while this attachment's pins,
  // claims and eviction stay for a reaper. Its mappings go too: nothing of
  // the Segment may be used afterwards but its destructor. For tests of
  // reaping within one process.
  void AbandonAsIfDead();
  // Is any live attachment pinning a tensor of slot s?
  bool SlotPinned(uint32_t s) const;

  bool UnitGapless(uint32_t u) const { return units_[u].used_bytes == hdr_->unit_bytes; }
  // Allocates gapless unit u's memory if it is not yet (NoSpace when /dev/shm
  // is full), as huge pages where the kernel allows. REQUIRES: the store's
  // budget lock.
  Status ReserveUnit(uint32_t u);
  // Allocates data range [off, off+len), within one unit with gaps.
  // REQUIRES: the store's budget lock.
  Status ReserveRange(uint64_t off, uint64_t len);
  // Returns the memory of data range [off, off+len) to the system.
  void Punch(uint64_t off, uint64_t len);
  // Bytes of memory the segment holds now (the file's allocated blocks).
  uint64_t ResidentBytes() const;
  // Tries to evict unit u: allocated, no slot loading, none referenced since
  // the last sweep, none pinned. Returns the bytes freed. REQUIRES: the
  // store's budget lock.
  uint64_t TryEvictUnit(uint32_t u);

 private:
  const uint8_t* TablesBytes(uint64_t off, uint64_t len, std::shared_ptr<const void>* owner) const;
  Segment() = default;
  Status MapAndClaim(bool init_only);
  // Checks the slot and unit tables against the header (their indices and
  // ranges), so that eviction and reaping cannot stray on a damaged segment.
  Status CheckTables(const SegmentHeader& h) const;
  // REQUIRES: a's liveness lock held by us. False (nothing done) when a was
  // evicting and !budget_locked.
  bool ReapLocked(uint32_t a, bool budget_locked);

  std::string name_;
  // The owners, let go of in the reverse order: the process-table entry's
  // liveness lock (after the destructor has reaped the entry), the mappings,
  // the object's descriptor.
  bip::shared_memory_object shm_;
  bip::mapped_region header_map_, data_ro_map_, data_rw_map_;
  OfdByteLock attach_lock_;
  uint8_t* base_ = nullptr;  // header mapping, read-write
  size_t header_len_ = 0;
  uint8_t* data_ro_ = nullptr;
  uint8_t* data_rw_ = nullptr;
  SegmentHeader* hdr_ = nullptr;
  SlotInfo* slots_ = nullptr;
  std::atomic<uint32_t>* states_ = nullptr;
  uint8_t* refs_ = nullptr;
  UnitInfo* units_ = nullptr;
  std::atomic<uint32_t>* alloc_ = nullptr;
  AttachEntry* attach_ = nullptr;
  uint8_t* pins_base_ = nullptr;
  uint32_t me_ = kMaxAttach;
  // Whether a process of another user (a group member) may write the
  // segment: then its tables and layout are copied before they are checked,
  // so that no later write of theirs can change what this process follows.
  bool others_write_ = false;
  // The header's fields as checked when mapping (HeaderConsistent), in this
  // process's memory: the bounds every read of the tables keeps to.
  struct Checked {
    uint64_t manifest_off, manifest_len, layout_off, layout_len, tables_off, tables_len;
    uint64_t fingerprint, page, unit, data_bytes;
    uint32_t nslots, nunits, ntensors;
  } checked_{};
};

// Lists this store's segments in /dev/shm: names starting "pstore-<store id>-".
std::vector<std::string> ListSegments(const std::string& store_id);

// What `pstore ps` shows of a segment, read without attaching to it.
struct SegmentInfo {
  std::string name;
  bool complete = false;  // initialised, of this layout version
  ModelDigest digest;
  uint64_t total_bytes = 0, data_bytes = 0, resident_bytes = 0;
  uint32_t nslots = 0, ready_slots = 0, busy_slots = 0;
  uint64_t loads = 0, load_bytes = 0, evictions = 0, evicted_bytes = 0, created_unix = 0;
  struct Attachment {
    uint32_t index = 0, pid = 0;
    bool alive = false;
    std::string comm;
    uint64_t start_unix = 0;
    uint64_t pinned_bytes = 0;  // bytes of slots holding a tensor it pins
  };
  std::vector<Attachment> attachments;
  // Of a segment not complete (another layout version's, or one being
  // made): whether a process holds its init lock or any attach lock, read
  // from the locks alone (its header may be laid out otherwise).
  bool locked = false;
  size_t live_attachments() const {
    size_t n = locked;
    for (const auto& a : attachments) n += a.alive;
    return n;
  }
};
Result<SegmentInfo> InspectSegment(const std::string& name);
// Unlinks a segment (its memory goes when the last process unmaps it).
Status RemoveSegment(const std::string& name);

}  // namespace pstore
